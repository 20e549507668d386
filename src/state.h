/* state.h — the state directory: layout, the single-instance lock, atomic
 * writes, per-job state and retention. Layout (xpimportd(8)):
 *   STATE/lock                       flock()ed by the daemon / xpimportctl import
 *   STATE/ledger/JOB.log             append-only ledger (ledger.h)
 *   STATE/jobs/JOB.json              job state: sightings, paused, last run
 *   STATE/runs/JOB/RUN_ID.json       run records
 *   STATE/runs/JOB/RUN_ID.N.rejects.csv  reject report of file N of the run
 *   STATE/stage/JOB/                 staged downloads
 * Files 0600, directories 0700. */
#ifndef XP_STATE_H
#define XP_STATE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* Create STATE and its subdirectories (0700, whatever the umask) and tighten
 * existing ones to 0700. -EPERM if STATE or a subdirectory is not owned by
 * the effective user or is writable by group or others (refused, not
 * repaired: someone else may have written there); -ENOTDIR if one is not a
 * directory. */
int state_init(const char *state_dir);

/* Take the lock: 0, -EWOULDBLOCK if another process holds it (blocking=false),
 * other negative errno. *fd_out is kept open for the process lifetime. */
int state_lock(const char *state_dir, bool blocking, int *fd_out);
void state_unlock(int fd);
/* The pid the current holder wrote into STATE/lock (for the "already
 * running" message): 0, -ENOENT, -ENODATA if it wrote none. */
int state_lock_holder(const char *state_dir, long *pid_out);

/* temp file ".NAME.tmp.PID.RANDOM" O_EXCL|O_CLOEXEC 0600 in the same
 * directory, write, fsync, rename, fsync the directory. On any error the temp
 * file is removed and the negative errno (ENOSPC, EIO, ENOENT...) returned;
 * the old content of path is then untouched (unless only the final fsync of
 * the directory failed). */
int state_write_atomic(const char *path, const void *data, size_t len);
/* The same for a JSON document (compact, sorted keys, trailing newline). */
int state_write_json(const char *path, const json_t *doc);
/* The job state document STATE/jobs/JOB.json, written atomically. */
int state_save_job_state(const char *state_dir, const char *job, const json_t *doc);

/* Load a JSON document; -ENOENT if absent, -EBADMSG if not JSON. New ref. */
int state_read_json(const char *path, json_t **out);
/* The same, with "PATH:LINE:COL: message" in err on -EBADMSG; -EFBIG over
 * 64 MiB. */
int state_read_json_err(const char *path, json_t **out, char *err, size_t errlen);
int state_fsync_dir(const char *dir);
/* mkdir -p; the directories it creates get exactly mode (umask-independent),
 * existing ones are left as they are. */
int state_mkdir_p(const char *dir, unsigned mode);

/* malloc'd paths under the state directory (NULL on ENOMEM). */
char *state_path(const char *state_dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A new run id: UTC time + random suffix, "20261203T182000Z-3fa9c1".
 * Strictly increasing within a process (two ids of the same second differ
 * and sort in call order). */
void state_new_run_id(char out[32]);

/* Retention: keep at most keep_runs records per job (<= 0: no count limit)
 * and none older than max_age_ms (0 = no age limit; the age is the time in
 * the run id, else the file's mtime); removes their companions RUN_ID.*
 * (reject reports) too. A job without runs/JOB is not an error. */
int state_prune_runs(const char *state_dir, const char *job, int keep_runs, int64_t max_age_ms);
#endif
