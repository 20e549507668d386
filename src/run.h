/* run.h — one run of one job: the data path of style.md point 2, as a state
 * machine on the libuv loop:
 *   CONNECT (connect + list, worker) -> SELECT (loop) -> for each file:
 *   FETCH (worker) -> VALIDATE (worker) -> POST (batches produced on a worker,
 *   posted by the API client on the loop) -> CONFIRM (info/task) -> RECORD
 *   (ledger, run record) -> AFTER (remote move/delete, worker) -> next file
 *   -> CLOSE (worker) -> DONE.
 * run_set_state() is the only place the state changes, and logs old -> new.
 * Blocking steps run on the thread pool one at a time per run; their results
 * are applied in the after-work callback on the loop thread. */
#ifndef XP_RUN_H
#define XP_RUN_H
#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "api.h"
#include "config.h"
#include "ledger.h"

enum run_trigger { TRIGGER_SCHEDULE, TRIGGER_RUN_NOW, TRIGGER_ONCE, TRIGGER_UPLOAD, TRIGGER_MANUAL };
const char *run_trigger_name(enum run_trigger t);

enum run_outcome { RUN_SUCCEEDED, RUN_FAILED, RUN_PARTIAL };

/* What a run needs from the job/daemon layer. The job runtime owns these. */
struct run_env {
	uv_loop_t *loop;
	struct api_client *api;
	const char *state_dir;
	struct ledger *ledger;   /* the job's ledger (not for dry runs) */
	json_t *job_state;       /* the job's state document, updated and saved by the run */
	bool dry_run;
	/* xpimportctl import: a local file instead of the SFTP source. */
	const char *upload_path;
	/* ...read from this open descriptor when upload_fd_set (the daemon gets
	 * the operator's file over the control socket; upload_path is its name). */
	bool upload_fd_set;
	int upload_fd;
	bool progress;           /* print progress to stderr (terminal) */
	int keep_runs;           /* state.keep_runs (0 = 100) */
	int64_t keep_runs_age_ms; /* state.keep_runs_age (0 = no age limit) */
};

struct run;
typedef void (*run_done_cb)(struct run *run, enum run_outcome outcome, void *ud);

/* Start a run of job (which must stay valid until done). */
int run_start(const struct cfg_job *job, const struct run_env *env, enum run_trigger trigger,
	      run_done_cb done, void *ud, struct run **out);
/* Ask the run to stop at the next safe point: no new batch is sent, the
 * batches in flight finish (or are cancelled at shutdown) and are recorded. */
void run_stop(struct run *run);
void run_free(struct run *run);
const char *run_id(const struct run *run);
const char *run_state_name(const struct run *run);
/* One-line summary for --once / logs: "2 files, 3 rows imported, 1 rejected". */
const char *run_summary(const struct run *run);
bool run_auth_paused(const struct run *run);
#endif
