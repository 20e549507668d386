/* sftp_probe — drive src/sftp.c by hand or from tests, one command per run.
 *
 *   sftp_probe [options] HOST PORT USER KEY KNOWN_HOSTS COMMAND [ARGS]
 *
 * KEY is a private key file or "-" (then --password-file); KNOWN_HOSTS a
 * file or "-" (then --pin). Several commands separated by "+" run on one
 * connection, each printing its result ("ok" or "error: ..."). Commands:
 *   probe                     show the host key (no verification, no auth)
 *   connect                   connect and authenticate only
 *   list DIR [recursive]      one line per entry: TYPE SIZE MTIME PATH
 *   stat PATH
 *   fetch REMOTE LOCAL SIZE   prints sha256, bytes, seconds, MB/s, peak RSS
 *   mkdir DIR | rename A B | rm PATH | put LOCAL REMOTE
 * Options: --pin SHA256:... (repeatable), --passphrase-file F,
 *   --password-file F, --site NAME, --connect-timeout MS, --auth-timeout MS,
 *   --stall-timeout MS, --keepalive S.
 * Errors print "error: KIND errno=N: MESSAGE" (and the host key offered)
 * and exit 1; usage errors exit 2.
 *
 * Build: gcc $(make -s print-ALL_CFLAGS) -o tests/sftp_probe tests/sftp_probe.c \
 *        src/sftp.o src/util.o $(make -s print-PKG_LIBS) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "sftp.h"
#include "util.h"

static const char *kind_name(enum sftp_err_kind kind)
{
	switch (kind) {
	case SFTP_ERR_NONE:
		return "NONE";
	case SFTP_ERR_CONNECT:
		return "CONNECT";
	case SFTP_ERR_TIMEOUT:
		return "TIMEOUT";
	case SFTP_ERR_HOSTKEY_UNKNOWN:
		return "HOSTKEY_UNKNOWN";
	case SFTP_ERR_HOSTKEY_CHANGED:
		return "HOSTKEY_CHANGED";
	case SFTP_ERR_HOSTKEY_TYPE:
		return "HOSTKEY_TYPE";
	case SFTP_ERR_AUTH:
		return "AUTH";
	case SFTP_ERR_CONFIG:
		return "CONFIG";
	case SFTP_ERR_NOT_FOUND:
		return "NOT_FOUND";
	case SFTP_ERR_IO:
		return "IO";
	}
	return "?";
}

static int fail(int rc, const struct sftp_error *err)
{
	printf("error: %s errno=%d: %s\n", kind_name(err->kind), -rc, err->message);
	if (err->fingerprint[0])
		printf("offered: %s %s\n", err->key_type, err->fingerprint);
	return 1;
}

static int usage(void)
{
	fprintf(stderr,
	        "usage: sftp_probe [options] HOST PORT USER KEY|- KNOWN_HOSTS|- COMMAND [ARGS]\n");
	return 2;
}

static int parse_num(const char *s, uint64_t max, int64_t *out)
{
	uint64_t v;

	if (util_parse_uint(s, 0, max, &v) < 0) {
		fprintf(stderr, "sftp_probe: bad number '%s'\n", s);
		return -1;
	}
	*out = (int64_t)v;
	return 0;
}

static double now_s(void)
{
	return (double)util_mono_ms() / 1000.0;
}

/* One command on an open connection: 0 ok, 1 failed (printed), 2 usage. */
static int run(struct sftp_conn *c, const char *cmd, int argc, char **argv)
{
	struct sftp_error err;
	int64_t num;
	int rc;

	if (strcmp(cmd, "connect") == 0) {
		printf("connected\n");
		return 0;
	} else if (strcmp(cmd, "list") == 0 && argc >= 1) {
		struct sftp_listing l;

		rc =
		    sftp_list(c, argv[0], argc >= 2 && strcmp(argv[1], "recursive") == 0, &l, &err);
		for (size_t k = 0; rc == 0 && k < l.n; k++) {
			const struct sftp_entry *e = &l.entries[k];

			printf("%c %llu %lld %s\n",
			       e->is_regular ? 'f'
			       : e->is_dir   ? 'd'
			                     : 'o',
			       (unsigned long long)e->size,
			       e->has_mtime ? (long long)e->mtime : -1LL, e->path);
		}
		if (rc == 0)
			printf("entries %zu\n", l.n);
		sftp_listing_free(&l);
	} else if (strcmp(cmd, "stat") == 0 && argc >= 1) {
		struct sftp_entry e;

		rc = sftp_stat(c, argv[0], &e, &err);
		if (rc == 0)
			printf("%c %llu %lld %s name=%s\n",
			       e.is_regular ? 'f'
			       : e.is_dir   ? 'd'
			                    : 'o',
			       (unsigned long long)e.size, e.has_mtime ? (long long)e.mtime : -1LL,
			       e.path, e.name);
		sftp_entry_free(&e);
	} else if (strcmp(cmd, "fetch") == 0 && argc >= 3) {
		char hex[65];
		struct rusage ru;
		double t0;

		if (parse_num(argv[2], UINT64_MAX >> 1, &num) < 0)
			return 2;
		t0 = now_s();
		rc = sftp_fetch(c, argv[0], (uint64_t)num, argv[1], hex, &err);
		if (rc == 0) {
			double dt = now_s() - t0;

			getrusage(RUSAGE_SELF, &ru);
			printf("sha256 %s\nbytes %lld\nseconds %.3f\nMB/s %.1f\npeak_rss_kb %ld\n",
			       hex, (long long)num, dt, dt > 0 ? (double)num / 1e6 / dt : 0.0,
			       ru.ru_maxrss);
		}
	} else if (strcmp(cmd, "mkdir") == 0 && argc >= 1) {
		rc = sftp_mkdir_p(c, argv[0], &err);
	} else if (strcmp(cmd, "rename") == 0 && argc >= 2) {
		rc = sftp_rename(c, argv[0], argv[1], &err);
	} else if (strcmp(cmd, "rm") == 0 && argc >= 1) {
		rc = sftp_unlink(c, argv[0], &err);
	} else if (strcmp(cmd, "put") == 0 && argc >= 2) {
		rc = sftp_upload(c, argv[0], argv[1], &err);
	} else {
		return 2;
	}
	if (rc < 0)
		return fail(rc, &err);
	printf("ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	static char default_site_name[] = "probe-site";
	struct cfg_site site = {
	    .name = default_site_name,
	    .connect_timeout_ms = 10000,
	    .auth_timeout_ms = 10000,
	    .stall_timeout_ms = 20000,
	    .keepalive_seconds = 30,
	};
	char *pins[16];
	struct sftp_error err;
	struct sftp_conn *c = NULL;
	int64_t num;
	int i = 1, rc, status = 0;
	const char *cmd;

	site.host_key_sha256 = pins;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!val)
			return usage();
		if (strcmp(opt, "--pin") == 0 && site.n_host_key_sha256 < 16)
			pins[site.n_host_key_sha256++] = val;
		else if (strcmp(opt, "--passphrase-file") == 0)
			site.passphrase_file = val;
		else if (strcmp(opt, "--password-file") == 0)
			site.password_file = val;
		else if (strcmp(opt, "--site") == 0)
			site.name = val;
		else if (strcmp(opt, "--connect-timeout") == 0 &&
		         parse_num(val, 3600000, &num) == 0)
			site.connect_timeout_ms = num;
		else if (strcmp(opt, "--auth-timeout") == 0 && parse_num(val, 3600000, &num) == 0)
			site.auth_timeout_ms = num;
		else if (strcmp(opt, "--stall-timeout") == 0 && parse_num(val, 3600000, &num) == 0)
			site.stall_timeout_ms = num;
		else if (strcmp(opt, "--keepalive") == 0 && parse_num(val, 3600, &num) == 0)
			site.keepalive_seconds = (int)num;
		else
			return usage();
	}
	if (argc - i < 6)
		return usage();
	site.host = argv[i];
	if (parse_num(argv[i + 1], 65535, &num) < 0)
		return 2;
	site.port = (int)num;
	site.user = argv[i + 2];
	site.private_key_file = strcmp(argv[i + 3], "-") ? argv[i + 3] : NULL;
	site.known_hosts_file = strcmp(argv[i + 4], "-") ? argv[i + 4] : NULL;
	cmd = argv[i + 5];
	argv += i + 6;
	argc -= i + 6;

	if ((rc = sftp_global_init()) < 0) {
		fprintf(stderr, "sftp_probe: libssh2 init failed: %s\n", strerror(-rc));
		return 1;
	}
	if (strcmp(cmd, "probe") == 0) {
		char type[32], fp[128], *line = NULL;

		rc = sftp_probe_host_key(&site, type, sizeof(type), fp, sizeof(fp), &line, &err);
		if (rc < 0)
			return fail(rc, &err);
		printf("type %s\nfingerprint %s\nknown_hosts %s\n", type, fp, line);
		free(line);
		return 0;
	}
	rc = sftp_connect(&site, &c, &err);
	if (rc < 0)
		return fail(rc, &err);
	/* COMMAND [ARGS] [+ COMMAND [ARGS]]...: all on this one connection */
	for (int start = -1, k = 0; k <= argc; k++) {
		int r;

		if (k < argc && strcmp(argv[k], "+") != 0)
			continue;
		r = run(c, start < 0 ? cmd : argv[start], k - start - 1, argv + start + 1);
		if (r == 2) {
			sftp_close(c);
			return usage();
		}
		if (r)
			status = 1;
		start = k + 1;
		if (k < argc && start >= argc) {
			sftp_close(c);
			return usage();
		}
	}
	sftp_close(c);
	sftp_global_cleanup();
	return status;
}
