/* ctl_admin.c — xpimportctl run, trust, forget and resume: the commands
 * that act (on the daemon, a known_hosts file, the ledger, a job state). */
#include "ctl_common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "ledger.h"
#include "sftp.h"
#include "state.h"
#include "util.h"

#define CTL_KNOWN_HOSTS_MAX (1u << 20)

/* ---- run ------------------------------------------------------------------ */

int ctl_cmd_run(struct ctl *c)
{
	const char *name = c->argv[0];
	char err[600];
	json_t *resp = NULL;
	int ex = ctl_load_config(c);

	if (ex != CTL_EXIT_OK)
		return ex;
	if (!ctl_find_job(c, name, &ex))
		return ex;
	json_t *req = json_pack("{ss ss sb}", "cmd", "run", "job", name, "wait", c->wait);
	int r = ctl_daemon_request(c, req, -1, c->wait ? -1 : CTL_STATUS_TIMEOUT_MS, &resp, err,
	                           sizeof(err));
	json_decref(req);
	if (r < 0) {
		char hint[300];
		snprintf(hint, sizeof(hint),
		         ", or run the job once without it: 'xpimportd --once --job %s'", name);
		ctl_err_daemon(c, r, err, hint);
		return CTL_EXIT_UNREACHABLE;
	}
	if (!json_is_true(json_object_get(resp, "ok"))) {
		ex = ctl_daemon_refused(resp);
		json_decref(resp);
		return ex;
	}
	const char *outcome = ctl_jstr(resp, "outcome");
	if (c->json) {
		ctl_print_json(resp);
	} else if (!c->wait) {
		printf("%s: run %s %s\n", name, ctl_jstr(resp, "run_id"),
		       json_is_true(json_object_get(resp, "coalesced")) ? "already in progress"
		                                                        : "started");
	} else {
		printf("%s: run %s %s\n", name, ctl_jstr(resp, "run_id"),
		       *ctl_jstr(resp, "summary") ? ctl_jstr(resp, "summary") : outcome);
	}
	ex = CTL_EXIT_OK;
	if (c->wait && strcmp(outcome, "succeeded") != 0) {
		char e[600];
		ctl_sanitize(ctl_jstr(resp, "error"), 400, e, sizeof(e));
		ctl_err("run %s %s%s%s; details: 'xpimportctl show %s'", ctl_jstr(resp, "run_id"),
		        *outcome ? outcome : "failed", *e ? ": " : "", e, ctl_jstr(resp, "run_id"));
		ex = CTL_EXIT_FAILED;
	}
	json_decref(resp);
	return ex;
}

/* ---- trust ---------------------------------------------------------------- */

/* What known_hosts already says about our line's host name and key:
 * 2 = this very key, 1 = another key of the same type, 0 = nothing. */
static int known_hosts_has(const char *data, const char *line)
{
	char name[300], type[64], key[8192];
	int best = 0;

	if (sscanf(line, "%299s %63s %8191s", name, type, key) != 3)
		return 0;
	for (const char *p = data; p && *p;) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char buf[10000], hosts[4096], t[64], k[8192];
		if (len < sizeof(buf)) {
			memcpy(buf, p, len);
			buf[len] = '\0';
			if (buf[0] != '#' && buf[0] != '@' &&
			    sscanf(buf, "%4095s %63s %8191s", hosts, t, k) == 3) {
				bool host_match = false;
				for (char *save = NULL, *h = strtok_r(hosts, ",", &save); h;
				     h = strtok_r(NULL, ",", &save))
					host_match |= strcmp(h, name) == 0;
				if (host_match && strcmp(k, key) == 0)
					return 2;
				if (host_match && strcmp(t, type) == 0)
					best = 1;
			}
		}
		p = end ? end + 1 : NULL;
	}
	return best;
}

static int read_small(const char *path, char **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	*out = NULL;
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size > (off_t)CTL_KNOWN_HOSTS_MAX) {
		close(fd);
		return -EFBIG;
	}
	char *buf = malloc((size_t)st.st_size + 1);
	ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
	close(fd);
	if (n < 0) {
		free(buf);
		return -EIO;
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

static int append_line(const char *path, const char *line, const char *existing)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	struct stat st;
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) == 0 && st.st_size == 0)
		(void)fchmod(fd, 0644); /* new file: 0644 whatever the umask */
	size_t el = existing ? strlen(existing) : 0;
	char *text = NULL;
	if (asprintf(&text, "%s%s\n", el && existing[el - 1] != '\n' ? "\n" : "", line) < 0) {
		close(fd);
		return -ENOMEM;
	}
	size_t len = strlen(text);
	if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0)
		r = errno ? -errno : -EIO;
	free(text);
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

int ctl_cmd_trust(struct ctl *c)
{
	const char *name = c->argv[0];
	char type[64] = "", fp[128] = "", *line = NULL, *existing = NULL;
	struct sftp_error serr;
	int ex = ctl_load_config(c);

	if (ex != CTL_EXIT_OK)
		return ex;
	const struct cfg_site *site = cfg_find_site(c->cfg, name);
	if (!site) {
		ctl_err("no site named '%s' in %s", name, c->config_path);
		return CTL_EXIT_NOT_FOUND;
	}
	sftp_global_init();
	int r = sftp_probe_host_key(site, type, sizeof(type), fp, sizeof(fp), &line, &serr);
	sftp_global_cleanup();
	if (r < 0) {
		ctl_err("cannot reach site %s (%s port %d): %s", name, site->host, site->port,
		        serr.message[0] ? serr.message : strerror(-r));
		return CTL_EXIT_FAILED;
	}
	if (c->json) {
		json_t *doc = json_pack("{ss ss si ss ss ss}", "site", name, "host", site->host,
		                        "port", site->port, "key_type", type, "fingerprint", fp,
		                        "known_hosts_line", line);
		json_object_set_new(doc, "known_hosts_file",
		                    site->known_hosts_file ? json_string(site->known_hosts_file)
		                                           : json_null());
		ctl_print_json(doc);
		json_decref(doc);
	} else {
		printf("site %s (%s port %d) offers this %s host key:\n  %s\n", name, site->host,
		       site->port, type, fp);
	}
	if (!site->known_hosts_file) {
		ctl_err(
		    "site %s has no known_hosts_file; pin the key instead with host_key_sha256: "
		    "[\"%s\"] in the site's entry of %s",
		    name, fp, c->config_path);
		ex = CTL_EXIT_FAILED;
		goto out;
	}
	r = read_small(site->known_hosts_file, &existing);
	if (r < 0 && r != -ENOENT) {
		ctl_err("cannot read %s: %s", site->known_hosts_file, strerror(-r));
		ex = CTL_EXIT_FAILED;
		goto out;
	}
	int has = existing ? known_hosts_has(existing, line) : 0;
	if (has == 2) {
		if (!c->json)
			printf("%s already trusts it; nothing to do\n", site->known_hosts_file);
		ex = CTL_EXIT_OK;
		goto out;
	}
	if (has == 1)
		fprintf(
		    stderr,
		    "xpimportctl: WARNING: %s holds a different %s key for this server: its key "
		    "changed. Trust the new one only if the partner confirmed the change; the old "
		    "line stays (remove it with ssh-keygen -R '%.*s' -f %s)\n",
		    site->known_hosts_file, type, (int)strcspn(line, " "), line,
		    site->known_hosts_file);
	if (!c->yes) {
		if (!isatty(STDIN_FILENO)) {
			ctl_err(
			    "not confirmed: compare the fingerprint with the partner's, then run "
			    "'xpimportctl trust %s --yes'",
			    name);
			ex = CTL_EXIT_USAGE;
			goto out;
		}
		char answer[16] = "";
		fprintf(stderr, "Add it to %s? [y/N] ", site->known_hosts_file);
		fflush(stderr);
		if (!fgets(answer, sizeof(answer), stdin) ||
		    (answer[0] != 'y' && answer[0] != 'Y')) {
			ctl_err("not trusted; nothing changed");
			ex = CTL_EXIT_FAILED;
			goto out;
		}
	}
	r = append_line(site->known_hosts_file, line, existing);
	if (r < 0) {
		ctl_err("cannot append to %s: %s", site->known_hosts_file, strerror(-r));
		ex = CTL_EXIT_FAILED;
		goto out;
	}
	if (!c->json)
		printf("added to %s:\n  %s\n", site->known_hosts_file, line);
	ex = CTL_EXIT_OK;
out:
	free(existing);
	free(line);
	return ex;
}

/* ---- forget ----------------------------------------------------------------- */

/* The ledger path FILE means: itself, its absolute local path (uploads), or
 * a unique ledger path with that base name. CTL_EXIT_OK with out filled. */
static int resolve_ledger_path(const struct ledger *l, const char *job, const char *file, char *out,
                               size_t size)
{
	char abs[PATH_MAX] = "";
	const char *match = NULL;

	if (!realpath(file, abs))
		abs[0] = '\0';
	for (size_t i = 0; i < ledger_count(l) && !match; i++) {
		const char *p = ledger_at(l, i)->path;
		if (strcmp(p, file) == 0 || (abs[0] && strcmp(p, abs) == 0))
			match = p;
	}
	for (size_t i = 0; i < ledger_count(l) && !match && !strchr(file, '/'); i++) {
		const char *p = ledger_at(l, i)->path;
		const char *base = strrchr(p, '/');
		if (strcmp(base ? base + 1 : p, file) != 0)
			continue;
		for (size_t k = i + 1; k < ledger_count(l); k++) {
			const char *q = ledger_at(l, k)->path;
			const char *qb = strrchr(q, '/');
			if (strcmp(q, p) != 0 && strcmp(qb ? qb + 1 : q, file) == 0) {
				ctl_err(
				    "several files of job %s are named %s (%s, %s ...); give the "
				    "full path",
				    job, file, p, q);
				return CTL_EXIT_USAGE;
			}
		}
		match = p;
	}
	if (!match) {
		ctl_err(
		    "job %s has no record of %s; 'xpimportctl history %s' shows what it imported",
		    job, file, job);
		return CTL_EXIT_NOT_FOUND;
	}
	util_strlcpy(out, match, size);
	return CTL_EXIT_OK;
}

static int write_job_state(const struct ctl *c, const char *job, const json_t *js)
{
	int r = state_save_job_state(c->state_dir, job, js);
	if (r < 0)
		ctl_err("cannot write the job state of %s in %s: %s", job, c->state_dir, strerror(-r));
	return r;
}

/* Ask the daemon to make a job-state edit (it holds the state). */
static int edit_via_daemon(struct ctl *c, json_t *req, json_t **resp)
{
	int r = ctl_locked_daemon_request(c, req, -1, CTL_STATUS_TIMEOUT_MS, resp);
	json_decref(req);
	if (r != 0)
		return r;
	if (!json_is_true(json_object_get(*resp, "ok"))) {
		int ex = ctl_daemon_refused(*resp);
		json_decref(*resp);
		*resp = NULL;
		return ex;
	}
	return CTL_EXIT_OK;
}

int ctl_cmd_forget(struct ctl *c)
{
	const char *name = c->argv[0], *file = c->argv[1];
	struct ledger *l = NULL;
	json_t *js = NULL, *resp = NULL;
	char path[PATH_MAX], lerr[600] = "";
	bool torn = false;
	int lock_fd = -1, ex = ctl_load_config(c);

	if (ex != CTL_EXIT_OK)
		return ex;
	if (!ctl_find_job(c, name, &ex))
		return ex;
	ex = ctl_state_open(c, &lock_fd);
	if (ex != CTL_EXIT_OK)
		return ex;
	int r = ledger_open(c->state_dir, name, &l, &torn, lerr, sizeof(lerr));
	if (r < 0) {
		ctl_err("%s", lerr[0] ? lerr : strerror(-r));
		ex = CTL_EXIT_FAILED;
		goto out;
	}
	ex = resolve_ledger_path(l, name, file, path, sizeof(path));
	if (ex != CTL_EXIT_OK)
		goto out;
	const char *who = ctl_who();
	if (lock_fd < 0) {
		ex = edit_via_daemon(c,
		                     json_pack("{ss ss ss ss}", "cmd", "forget", "job", name,
		                               "path", path, "who", who),
		                     &resp);
		if (ex != CTL_EXIT_OK)
			goto out;
	} else {
		js = ctl_read_job_state(c, name);
		if (!js) {
			ex = CTL_EXIT_FAILED;
			goto out;
		}
		r = ledger_forget(l, path, who);
		if (r < 0) {
			ctl_err("cannot record the forget in the ledger: %s",
			        ledger_last_error(l)[0] ? ledger_last_error(l) : strerror(-r));
			ex = CTL_EXIT_FAILED;
			goto out;
		}
		if (control_job_history_add(js, "forget", who, path, util_now_ms()) < 0 ||
		    write_job_state(c, name, js) < 0) {
			ex = CTL_EXIT_FAILED;
			goto out;
		}
	}
	printf("%s: forgot %s; it is imported again when it is next seen (or with 'xpimportctl "
	       "import --job %s FILE')\n",
	       name, path, name);
	ex = CTL_EXIT_OK;
out:
	json_decref(resp);
	json_decref(js);
	ledger_free(l);
	state_unlock(lock_fd);
	return ex;
}

/* ---- resume ----------------------------------------------------------------- */

int ctl_cmd_resume(struct ctl *c)
{
	const char *name = c->argv[0];
	json_t *js = NULL, *resp = NULL;
	int lock_fd = -1, ex = ctl_load_config(c);
	bool was_paused;

	if (ex != CTL_EXIT_OK)
		return ex;
	if (!ctl_find_job(c, name, &ex))
		return ex;
	ex = ctl_state_open(c, &lock_fd);
	if (ex != CTL_EXIT_OK)
		return ex;
	const char *who = ctl_who();
	if (lock_fd < 0) {
		ex = edit_via_daemon(
		    c, json_pack("{ss ss ss}", "cmd", "resume", "job", name, "who", who), &resp);
		if (ex != CTL_EXIT_OK)
			goto out;
		was_paused = json_is_true(json_object_get(resp, "was_paused"));
	} else {
		js = ctl_read_job_state(c, name);
		if (!js) {
			ex = CTL_EXIT_FAILED;
			goto out;
		}
		int r = control_job_resume(js, who, util_now_ms());
		if (r < 0 || (r == 1 && write_job_state(c, name, js) < 0)) {
			ex = CTL_EXIT_FAILED;
			goto out;
		}
		was_paused = r == 1;
	}
	if (was_paused)
		printf("%s: resumed; it runs on its schedule again ('xpimportctl run %s' to run it "
		       "now)\n",
		       name, name);
	else
		printf("%s: was not paused; nothing to do\n", name);
	ex = CTL_EXIT_OK;
out:
	json_decref(resp);
	json_decref(js);
	state_unlock(lock_fd);
	return ex;
}
