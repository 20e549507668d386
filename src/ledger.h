/* ledger.h — the per-job append-only ledger of each file's progress.
 * Each record is one line "CRC32HEX SP JSON LF"; appended with write() +
 * fdatasync(). On open a torn last record (no LF, bad CRC or bad JSON on the
 * last line) is dropped (truncated away) and reported through *torn; any bad
 * record before the last one is corruption: -EBADMSG with the line number.
 * A file is known by site, path, size, mtime and SHA-256 (its identity).
 *
 * Records (one JSON object each, "ev" first; CRC = zlib crc32 of the JSON
 * bytes as 8 lowercase hex digits; a line is at most 64 KiB, the file 1 GiB):
 *   {"ev":"fetched","t":MS,"run":ID,"site":S,"path":P,"size":N,"mtime":N,"sha256":HEX}
 *   "seen" (sha256 optional), "validated" (+rows_valid, rows_rejected,
 *   n_batches, batch_size), "batch" (+index, http_status, task_id optional),
 *   "imported", "failed" (+error; sha256 optional: a file can fail before it
 *   is fetched), "after" (+action), {"ev":"forget","t":MS,"path":P,"who":W}.
 * Replay and append apply the same rules: fetched (re)starts an identity
 * (fresh only if it was forgotten; a re-fetch after a crash keeps its
 * accepted batches); validated needs a fetched file and may not change the
 * batch layout once batches were accepted; batch k needs k < n_batches and
 * may come in any order (batches_accepted is the contiguous prefix);
 * imported needs every batch accepted; after needs imported or failed.
 * A record that breaks these rules, an unknown event or a missing field is
 * -EBADMSG on open (never "torn": its checksum was right).
 * Appends and replays take flock(LOCK_EX) on the file, so xpimportctl and
 * the daemon can share one ledger. Not thread-safe: one thread per ledger.
 * Each appender blocks for a write() and an fdatasync(). */
#ifndef XP_LEDGER_H
#define XP_LEDGER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ledger_fstate {
	LF_SEEN,        /* listed */
	LF_FETCHED,     /* staged with sha256 */
	LF_VALIDATED,   /* counts and n_batches known */
	LF_POSTING,     /* at least one batch accepted */
	LF_IMPORTED,    /* every batch accepted (and tasks confirmed) */
	LF_FAILED,      /* validation or API rejected it; not retried for this identity */
	LF_FORGOTTEN,   /* operator said: import again */
};

struct ledger_key {
	const char *site;       /* "upload" for xpimportctl import */
	const char *path;
	uint64_t size;
	int64_t mtime;
	const char *sha256;     /* hex; may be NULL before fetch: lookups and
				 * appenders then mean the most recently
				 * changed identity with that site, path, size
				 * and mtime (a new sha-less one for failed) */
};

/* What the ledger knows of one file identity (latest state). */
struct ledger_file {
	char *site;
	char *path;
	uint64_t size;
	int64_t mtime;
	char sha256[65];
	enum ledger_fstate state;
	char run_id[32];        /* run that last touched it */
	size_t n_batches;
	size_t batch_size;
	size_t batches_accepted; /* contiguous prefix: batches 0..n-1 accepted */
	uint64_t rows_valid;
	uint64_t rows_rejected;
	bool after_done;        /* after-action completed */
	char *error;            /* LF_FAILED reason */
	int64_t updated_ms;     /* "t" of the last record about it */
};

struct ledger;

/* Open (create) STATE/ledger/JOB.log and replay it. *torn is set when a torn
 * tail was dropped; err then says "FILE:LINE: dropped a torn last record
 * (REASON, N bytes)" for the log (return 0). On -EBADMSG, err is
 * "FILE:LINE: corrupt ledger record (checksum mismatch); refusing to guess:
 * move the file aside to start over" (or "invalid ledger record (...)").
 * -EFBIG if over 1 GiB. */
int ledger_open(const char *state_dir, const char *job, struct ledger **out, bool *torn,
		char *err, size_t errlen);
void ledger_free(struct ledger *l);

/* Read records other processes (xpimportctl forget) appended since; same
 * errors as ledger_open. Appenders do this by themselves first. */
int ledger_sync(struct ledger *l, bool *torn, char *err, size_t errlen);
/* What the last failed appender call ran into ("" if it succeeded), e.g.
 * "STATE/ledger/JOB.log: cannot record batch of /in/a.csv: No space left on device". */
const char *ledger_last_error(const struct ledger *l);

/* Appenders: each writes one record and updates the in-memory view.
 * 0 or negative errno (ENOSPC, EIO ...): then nothing is recorded in memory
 * and no partial record stays in the file. A record that does not fit the
 * rules above: -ENOENT (unknown identity) / -EINVAL (wrong state).
 * Strings must be UTF-8 (-EILSEQ); failed's reason is cut at 4 KiB. */
int ledger_seen(struct ledger *l, const char *run_id, const struct ledger_key *k);
int ledger_fetched(struct ledger *l, const char *run_id, const struct ledger_key *k);
int ledger_validated(struct ledger *l, const char *run_id, const struct ledger_key *k,
		     uint64_t rows_valid, uint64_t rows_rejected, size_t n_batches, size_t batch_size);
int ledger_batch_accepted(struct ledger *l, const char *run_id, const struct ledger_key *k,
			  size_t index, int http_status, const char *task_id);
int ledger_imported(struct ledger *l, const char *run_id, const struct ledger_key *k);
int ledger_failed(struct ledger *l, const char *run_id, const struct ledger_key *k, const char *why);
int ledger_after_done(struct ledger *l, const char *run_id, const struct ledger_key *k,
		      const char *action);
/* Forget every identity with this path (any site) so it can be imported
 * again; -ENOENT (nothing written) if the ledger has no file of that path. */
int ledger_forget(struct ledger *l, const char *path, const char *who);

/* Lookups (NULL if none). The pointers stay valid (and up to date) until
 * ledger_free(). */
const struct ledger_file *ledger_get(const struct ledger *l, const struct ledger_key *k);
/* An imported file with this sha256 under another path (duplicate content). */
const struct ledger_file *ledger_find_sha(const struct ledger *l, const char *sha256,
					  const char *other_than_path);
/* Iterate all known file identities (order of first appearance). */
size_t ledger_count(const struct ledger *l);
const struct ledger_file *ledger_at(const struct ledger *l, size_t i);
const char *ledger_fstate_name(enum ledger_fstate s);
/* The task id recorded for batch index of f (202 answers), NULL if none;
 * kept until the file is imported (for confirm_tasks after a restart). */
const char *ledger_task_id(const struct ledger_file *f, size_t index);
/* Whether batch index of f was accepted (also past the contiguous prefix). */
bool ledger_batch_is_accepted(const struct ledger_file *f, size_t index);
#endif
