/* xpimportd — keeps an Xtremepush project's user profiles in sync with CSV
 * files dropped on SFTP servers. Foreground only (systemd Type=notify). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config.h"
#include "daemon.h"
#include "log.h"

#define DEFAULT_CONFIG "/etc/xpimportd/xpimportd.yaml"
#define DEFAULT_STATE "/var/lib/xpimportd"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: xpimportd [OPTIONS]\n"
		"Import CSV files from SFTP sites into Xtremepush user profiles.\n"
		"\n"
		"  -c, --config FILE      configuration (default " DEFAULT_CONFIG ")\n"
		"  -n, --check-config     validate the configuration and every job, print each\n"
		"                         error as FILE:LINE:COL: message, then exit\n"
		"      --once             run the jobs once now, wait, exit 0 only if every run\n"
		"                         succeeded (default: run as a service on the schedules)\n"
		"      --job NAME         with --once: run only this job (repeatable)\n"
		"      --dry-run          with --once: connect, list, fetch, parse, map and validate,\n"
		"                         print what would be posted; post, move and record nothing\n"
		"  -S, --state-dir DIR    state directory (default $STATE_DIRECTORY, else\n"
		"                         " DEFAULT_STATE ")\n"
		"  -v, --verbose          debug messages\n"
		"      --version          print the version\n"
		"  -h, --help             this help\n"
		"\n"
		"Signals: SIGHUP reloads the configuration (a bad one is rejected and the old one\n"
		"keeps running); SIGTERM finishes the batches in flight and exits.\n"
		"Exit status: 0 success, 1 a run failed (--once), 2 usage, 3 configuration\n"
		"invalid, 4 state directory locked by another instance, 5 state unusable.\n"
		"See xpimportd(8), xpimportd.yaml(5) and xpimportctl(1).\n");
}

static int check_config(const char *path)
{
	struct cfg *cfg = NULL;
	struct cfg_errors errs = {0};
	int r = config_load(path, &cfg, &errs);

	for (size_t i = 0; i < errs.n; i++)
		printf("%s\n", errs.msgs[i]);
	if (r < 0 && errs.n == 0)
		printf("%s: %s\n", path, strerror(-r));
	if (r == 0)
		printf("configuration OK: %zu project%s, %zu site%s, %zu job%s\n", cfg->n_projects,
		       cfg->n_projects == 1 ? "" : "s", cfg->n_sites, cfg->n_sites == 1 ? "" : "s",
		       cfg->n_jobs, cfg->n_jobs == 1 ? "" : "s");
	else
		printf("configuration invalid: %zu error%s\n", errs.n ? errs.n : 1,
		       errs.n > 1 ? "s" : "");
	cfg_errors_free(&errs);
	cfg_free(cfg);
	return r == 0 ? XP_EXIT_OK : XP_EXIT_CONFIG;
}

int main(int argc, char **argv)
{
	enum { OPT_ONCE = 256, OPT_JOB, OPT_DRY_RUN, OPT_VERSION };
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"check-config", no_argument, NULL, 'n'},
		{"once", no_argument, NULL, OPT_ONCE},
		{"job", required_argument, NULL, OPT_JOB},
		{"dry-run", no_argument, NULL, OPT_DRY_RUN},
		{"state-dir", required_argument, NULL, 'S'},
		{"verbose", no_argument, NULL, 'v'},
		{"version", no_argument, NULL, OPT_VERSION},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct daemon_opts opts = {.config_path = DEFAULT_CONFIG};
	const char **jobs = calloc((size_t)argc + 1, sizeof(*jobs));
	bool check = false;
	int c, r;

	if (!jobs)
		return XP_EXIT_STATE;
	opts.jobs = jobs;
	opts.state_dir = getenv("STATE_DIRECTORY");
	if (opts.state_dir && strchr(opts.state_dir, ':'))
		opts.state_dir = NULL; /* several directories: not ours to guess */
	if (!opts.state_dir || !*opts.state_dir)
		opts.state_dir = DEFAULT_STATE;

	while ((c = getopt_long(argc, argv, "c:nS:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			opts.config_path = optarg;
			break;
		case 'n':
			check = true;
			break;
		case OPT_ONCE:
			opts.once = true;
			break;
		case OPT_JOB:
			jobs[opts.n_jobs++] = optarg;
			break;
		case OPT_DRY_RUN:
			opts.dry_run = true;
			break;
		case 'S':
			opts.state_dir = optarg;
			break;
		case 'v':
			opts.verbose++;
			break;
		case OPT_VERSION:
			printf("xpimportd %s\n", XP_VERSION);
			free(jobs);
			return XP_EXIT_OK;
		case 'h':
			usage(stdout);
			free(jobs);
			return XP_EXIT_OK;
		default:
			usage(stderr);
			free(jobs);
			return XP_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "xpimportd: unexpected argument '%s'\n", argv[optind]);
		free(jobs);
		return XP_EXIT_USAGE;
	}
	if ((opts.dry_run || opts.n_jobs) && !opts.once) {
		fprintf(stderr, "xpimportd: --dry-run and --job need --once\n");
		free(jobs);
		return XP_EXIT_USAGE;
	}
	log_init("xpimportd", opts.verbose);
	if (check) {
		r = check_config(opts.config_path);
		free(jobs);
		return r;
	}
	r = daemon_main(&opts);
	free(jobs);
	/* Joins libuv's worker threads, so their per-thread state (OpenSSL's) is freed. */
	uv_library_shutdown();
	return r;
}
