/* ctl_common.h — xpimportctl, the operator's tool: shared context and helpers of
 * the command files (ctl_status.c: status/history/show; ctl_import.c:
 * import/create-profile; ctl_admin.c: run/trust/forget/resume). */
#ifndef XP_CTL_COMMON_H
#define XP_CTL_COMMON_H
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "config.h"

/* Exit statuses (xpimportctl(1)). */
enum {
	CTL_EXIT_OK = 0,
	CTL_EXIT_FAILED = 1, /* the operation failed: run failed, validation, API refused */
	CTL_EXIT_USAGE = 2,
	CTL_EXIT_CONFIG = 3,      /* configuration invalid */
	CTL_EXIT_UNREACHABLE = 4, /* daemon not reachable / state directory locked */
	CTL_EXIT_NOT_FOUND = 5,   /* no such job, run, site, project or file */
};

#define CTL_DEFAULT_CONFIG "/etc/xpimportd/xpimportd.yaml"
#define CTL_DEFAULT_STATE "/var/lib/xpimportd"
#define CTL_STATUS_TIMEOUT_MS 5000
#define CTL_MANUAL_JOB "_manual" /* STATE/runs/_manual: create-profile records */

struct ctl {
	const char *config_path;
	const char *state_dir;
	const char *runtime_dir; /* NULL: $RUNTIME_DIRECTORY, else /run/xpimportd */
	char socket_path[PATH_MAX];
	bool json;
	/* command options */
	bool wait, dry_run, quiet, yes;
	const char *job;     /* --job */
	const char *project; /* --project */
	int country_code;    /* --country-code, 0 = not given */
	uint64_t limit;      /* --limit, default 20 */
	int argc;            /* positional arguments of the command */
	char **argv;
	struct cfg *cfg; /* loaded by ctl_load_config() */
};

/* One line on stderr: "xpimportctl: MESSAGE". */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Load the configuration into c->cfg; on errors print each one and a hint
 * and return CTL_EXIT_CONFIG, else CTL_EXIT_OK. */
int ctl_load_config(struct ctl *c);
/* The job or CTL_EXIT_NOT_FOUND after saying so (config must be loaded). */
const struct cfg_job *ctl_find_job(struct ctl *c, const char *name, int *exit_code);

/* Who the operator is: $SUDO_USER, else the login name, else "uid N". */
const char *ctl_who(void);

/* As root on a state directory owned by another user (the service's),
 * become that user before writing, so that the daemon can read and rewrite
 * what we write. CTL_EXIT_OK or an exit status after saying why. */
int ctl_become_state_owner(struct ctl *c);

/* Prepare the state directory for writing (as its owner, state_init) and
 * try its lock: CTL_EXIT_OK with *lock_fd >= 0 when we hold it, or with
 * *lock_fd == -1 when the daemon (or another import) holds it; another exit
 * status after saying why. */
int ctl_state_open(struct ctl *c, int *lock_fd);
/* Print a state directory problem (rc from state_*) and return its status. */
int ctl_state_error(const struct ctl *c, int rc, const char *what);
/* Job state STATE/jobs/JOB.json (an empty object if absent). NULL after
 * saying why (unreadable). */
json_t *ctl_read_job_state(const struct ctl *c, const char *job);

/* Ask the daemon. 0 with *resp; or the negative errno of control_request
 * with err filled. */
int ctl_daemon_request(struct ctl *c, json_t *req, int send_fd, int timeout_ms, json_t **resp,
                       char *err, size_t errlen);
/* ctl_daemon_request() for a state directory the daemon has locked: on a
 * transport error it says who holds the lock and returns CTL_EXIT_UNREACHABLE;
 * 0 with *resp otherwise. */
int ctl_locked_daemon_request(struct ctl *c, json_t *req, int send_fd, int timeout_ms,
			      json_t **resp);
/* Say that the daemon could not be asked (err from ctl_daemon_request);
 * hint ends the "not running" message (e.g. " or use ...", may be ""). */
void ctl_err_daemon(const struct ctl *c, int rc, const char *err, const char *hint);
/* Exit status for a daemon {"ok":false} answer (prints its error). */
int ctl_daemon_refused(const json_t *resp);

/* JSON helpers: "" / 0 for absent members. */
const char *ctl_jstr(const json_t *obj, const char *key);
int64_t ctl_jint(const json_t *obj, const char *key);
/* Print doc as pretty JSON on stdout (sorted keys, 2 spaces), newline. */
void ctl_print_json(const json_t *doc);

/* A left-aligned text table. */
struct ctl_table {
	size_t n_cols;
	size_t n_rows;
	char **cells; /* n_rows * n_cols, owned */
};
void ctl_table_init(struct ctl_table *t, size_t n_cols);
/* Add one row of n_cols strings (copied; NULL shows as "-"). */
void ctl_table_add(struct ctl_table *t, ...);
void ctl_table_print(const struct ctl_table *t, FILE *out, const char *indent);
void ctl_table_free(struct ctl_table *t);

/* "15m", "2h", "1d", "30s", "250ms" for a duration. */
void ctl_format_duration(int64_t ms, char *buf, size_t size);
/* Value for display: control characters as '?', cut to max_chars code
 * points with "..." when longer. */
void ctl_sanitize(const char *s, size_t max_chars, char *buf, size_t size);
/* A run id as written by state_new_run_id: [0-9A-Za-z-], at most 31 bytes. */
bool ctl_valid_run_id(const char *id);
/* A job name usable in a path: no '/', not "." or "..", not empty. */
bool ctl_valid_name(const char *name);

/* Commands. Each returns an exit status. */
int ctl_cmd_status(struct ctl *c);
int ctl_cmd_history(struct ctl *c);
int ctl_cmd_show(struct ctl *c);
int ctl_cmd_import(struct ctl *c);
int ctl_cmd_create_profile(struct ctl *c);
int ctl_cmd_run(struct ctl *c);
int ctl_cmd_trust(struct ctl *c);
int ctl_cmd_forget(struct ctl *c);
int ctl_cmd_resume(struct ctl *c);
#endif
