/* daemon.h — the job/daemon layer: the loop, the jobs and their schedules,
 * signals, sd_notify, reload. xpimportd.c parses the command line and calls
 * daemon_main(). */
#ifndef XP_DAEMON_H
#define XP_DAEMON_H
#include <stdbool.h>
#include <stddef.h>

/* Exit statuses (xpimportd(8)). */
enum {
	XP_EXIT_OK = 0,
	XP_EXIT_RUN_FAILED = 1,   /* --once: a run failed */
	XP_EXIT_USAGE = 2,
	XP_EXIT_CONFIG = 3,       /* configuration invalid */
	XP_EXIT_LOCKED = 4,       /* another instance holds the state directory */
	XP_EXIT_STATE = 5,        /* state directory unusable or ledger corrupt */
};

struct daemon_opts {
	const char *config_path;
	const char *state_dir;
	bool once;
	bool dry_run;
	const char *const *jobs; /* --job names, NULL-terminated; NULL = all */
	size_t n_jobs;
	int verbose;
};

int daemon_main(const struct daemon_opts *opts);
#endif
