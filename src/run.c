/* run.c — one run of one job (see run.h for the state machine). */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "log.h"
#include "pipeline.h"
#include "select.h"
#include "sftp.h"
#include "state.h"
#include "util.h"

enum run_state {
	RS_INIT,
	RS_CONNECT,
	RS_SELECT,
	RS_FETCH,
	RS_VALIDATE,
	RS_POST,
	RS_CONFIRM,
	RS_RECORD,
	RS_AFTER,
	RS_CLOSE,
	RS_DONE,
};

static const char *const state_names[] = {
	[RS_INIT] = "init",     [RS_CONNECT] = "connect", [RS_SELECT] = "select",
	[RS_FETCH] = "fetch",   [RS_VALIDATE] = "validate", [RS_POST] = "post",
	[RS_CONFIRM] = "confirm", [RS_RECORD] = "record", [RS_AFTER] = "after",
	[RS_CLOSE] = "close",   [RS_DONE] = "done",
};

enum work_op { OP_CONNECT_LIST, OP_FETCH, OP_VALIDATE, OP_PRODUCE, OP_AFTER, OP_CLOSE };

enum file_outcome { FO_PENDING, FO_IMPORTED, FO_FAILED, FO_SKIPPED, FO_INTERRUPTED, FO_DRY_RUN };
static const char *const file_outcome_names[] = {
	[FO_PENDING] = "pending",   [FO_IMPORTED] = "imported", [FO_FAILED] = "failed",
	[FO_SKIPPED] = "skipped",   [FO_INTERRUPTED] = "interrupted", [FO_DRY_RUN] = "dry-run",
};

struct run;

struct batch_slot {
	struct run *run;
	size_t index;
	size_t rows;
	struct api_request *req;
};

struct run_file {
	struct sftp_entry e;          /* owned copy of the listing entry */
	char stage[PATH_MAX];
	char sha[65];
	char known_sha[65];           /* from the ledger when resuming */
	char reject_path[PATH_MAX];
	struct pipe_summary sum;
	struct pipe_batcher *batcher;
	bool resuming;                /* the ledger already knows this identity in progress */
	bool after_only;              /* imported earlier; only the after-action is pending */
	size_t first_batch;           /* batches already accepted before this run */
	unsigned char *accepted_before; /* per batch: accepted by an earlier run */
	size_t n_accepted;            /* accepted in this run */
	uint64_t rows_posted;
	bool eof, stop_sending, rejected, producing;
	int in_flight;
	struct strbuf produced;
	size_t produced_rows, produced_index;
	int produce_rc;
	char **task_ids;
	size_t n_tasks, task_pos;
	int task_polls;
	enum file_outcome outcome;
	char error[600];
	json_t *rec;
	json_t *batches;
};

struct run {
	const struct cfg_job *job;
	struct run_env env;
	enum run_trigger trigger;
	char id[32];
	enum run_state state;
	run_done_cb done;
	void *ud;

	uv_work_t work;
	enum work_op op;
	bool work_busy;
	int work_rc;
	struct sftp_error serr;
	struct sftp_conn *conn;
	struct sftp_listing listing;
	struct select_result sel;

	struct run_file *files;
	size_t n_files, cur;

	char *apptoken;
	size_t apptoken_len;

	json_t *rec;
	char *record_path;
	bool failed, stopping, auth_paused;
	char error[600];
	uint64_t rows_read, rows_valid, rows_rejected, rows_posted;
	size_t files_imported, files_failed, files_skipped;
	char summary[256];

	uv_timer_t task_timer;
	int64_t task_deadline_ms;
	int64_t started_ms;
	int64_t mono_start_ms;
	int64_t progress_ms;
};

static void next_file(struct run *run);
static void finish_file(struct run *run);
static void run_close(struct run *run);
static void fill_batches(struct run *run);
static void start_after(struct run *run, bool success);

const char *run_trigger_name(enum run_trigger t)
{
	static const char *const names[] = {
		[TRIGGER_SCHEDULE] = "schedule", [TRIGGER_RUN_NOW] = "run-now",
		[TRIGGER_ONCE] = "once",         [TRIGGER_UPLOAD] = "upload",
		[TRIGGER_MANUAL] = "manual",
	};
	return names[t];
}

const char *run_id(const struct run *run)
{
	return run->id;
}

const char *run_state_name(const struct run *run)
{
	return state_names[run->state];
}

bool run_auth_paused(const struct run *run)
{
	return run->auth_paused;
}

static const char *site_name(const struct run *run)
{
	if (run->env.upload_path)
		return "upload";
	return run->job->source.site_name ? run->job->source.site_name : "";
}

/* One journal event of this run; file may be NULL; extra "KEY=value" fields. */
static void run_log(const struct run *run, int prio, const char *msg_id, const struct run_file *f,
		    const char *extra1, const char *extra2, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

static void run_log(const struct run *run, int prio, const char *msg_id, const struct run_file *f,
		    const char *extra1, const char *extra2, const char *fmt, ...)
{
	char job[300], rid[64], site[300], file[PATH_MAX + 8], msg[1600];
	const char *fields[8];
	size_t n = 0;
	va_list ap;

	snprintf(job, sizeof(job), "JOB=%s", run->job->name);
	snprintf(rid, sizeof(rid), "RUN_ID=%s", run->id);
	snprintf(site, sizeof(site), "SITE=%s", site_name(run));
	fields[n++] = job;
	fields[n++] = rid;
	fields[n++] = site;
	if (f) {
		snprintf(file, sizeof(file), "FILE=%s", f->e.path);
		fields[n++] = file;
	}
	if (extra1)
		fields[n++] = extra1;
	if (extra2)
		fields[n++] = extra2;
	fields[n] = NULL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (f)
		log_event(prio, msg_id, fields, "%s: %s: %s", run->job->name, f->e.name, msg);
	else
		log_event(prio, msg_id, fields, "%s: %s", run->job->name, msg);
}

static void run_set_state(struct run *run, enum run_state next)
{
	if (run->state == next)
		return;
	log_msg(LOG_DEBUG, "%s: run %s: %s -> %s", run->job->name, run->id,
		state_names[run->state], state_names[next]);
	run->state = next;
}

static void run_fail(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void run_fail(struct run *run, const char *fmt, ...)
{
	va_list ap;

	if (run->failed && run->error[0])
		return; /* keep the first cause */
	run->failed = true;
	va_start(ap, fmt);
	vsnprintf(run->error, sizeof(run->error), fmt, ap);
	va_end(ap);
}

/* ---- the run record ---------------------------------------------------- */

static json_t *jstr_or_null(const char *s)
{
	return s && *s ? json_string(s) : json_null();
}

static json_t *strv_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static void file_record_update(struct run *run, struct run_file *f)
{
	json_t *r = f->rec;
	json_t *rejects = json_array();

	json_object_set_new(r, "rows_read", json_integer((json_int_t)f->sum.rows_read));
	json_object_set_new(r, "rows_valid", json_integer((json_int_t)f->sum.rows_valid));
	json_object_set_new(r, "rows_rejected", json_integer((json_int_t)f->sum.rows_rejected));
	json_object_set_new(r, "rows_posted", json_integer((json_int_t)f->rows_posted));
	json_object_set_new(r, "duplicates", json_integer((json_int_t)f->sum.duplicates));
	json_object_set_new(r, "batches_total", json_integer((json_int_t)f->sum.n_batches));
	json_object_set_new(r, "batches_resumed", json_integer((json_int_t)f->first_batch));
	json_object_set_new(r, "sha256", jstr_or_null(f->sha));
	json_object_set_new(r, "columns", strv_json(f->sum.columns_sent, f->sum.n_columns_sent));
	json_object_set_new(r, "columns_ignored",
			    strv_json(f->sum.columns_ignored, f->sum.n_columns_ignored));
	/* First rejected rows: line, column and rule only — the values (personal
	 * data) stay in the reject report. */
	for (size_t i = 0; rejects && i < f->sum.n_first_rejects; i++) {
		const struct pipe_reject *rj = &f->sum.first_rejects[i];
		json_array_append_new(rejects, json_pack("{sI ss ss}", "line", (json_int_t)rj->line,
							 "column", rj->column, "rule", rj->rule));
	}
	json_object_set_new(r, "first_rejects", rejects);
	struct stat st;
	json_object_set_new(r, "reject_report",
			    f->reject_path[0] && stat(f->reject_path, &st) == 0
				    ? json_string(f->reject_path)
				    : json_null());
	json_object_set_new(r, "outcome", json_string(file_outcome_names[f->outcome]));
	json_object_set_new(r, "error", jstr_or_null(f->error));
}

static int record_write(struct run *run, const char *outcome)
{
	char started[40], now[40];

	if (run->env.dry_run)
		return 0;
	util_format_time(run->started_ms, started, sizeof(started));
	util_format_time(util_now_ms(), now, sizeof(now));
	json_object_set_new(run->rec, "started", json_string(started));
	json_object_set_new(run->rec, "finished",
			    strcmp(outcome, "running") == 0 ? json_null() : json_string(now));
	json_object_set_new(run->rec, "outcome", json_string(outcome));
	json_object_set_new(run->rec, "error", jstr_or_null(run->error));
	json_object_set_new(run->rec, "counts",
			    json_pack("{sI sI sI sI sI sI sI sI}", "files", (json_int_t)run->n_files,
				      "files_imported", (json_int_t)run->files_imported,
				      "files_failed", (json_int_t)run->files_failed,
				      "files_skipped", (json_int_t)run->files_skipped,
				      "rows_read", (json_int_t)run->rows_read,
				      "rows_valid", (json_int_t)run->rows_valid,
				      "rows_rejected", (json_int_t)run->rows_rejected,
				      "rows_posted", (json_int_t)run->rows_posted));
	for (size_t i = 0; i < run->n_files; i++)
		if (run->files[i].rec)
			file_record_update(run, &run->files[i]);
	int r = state_write_json(run->record_path, run->rec);
	if (r < 0)
		run_log(run, LOG_ERR, NULL, NULL, NULL, NULL, "cannot write run record %s: %s",
			run->record_path, strerror(-r));
	return r;
}

static int save_job_state(struct run *run)
{
	if (run->env.dry_run || !run->env.job_state)
		return 0;
	int r = state_save_job_state(run->env.state_dir, run->job->name, run->env.job_state);
	if (r < 0)
		run_log(run, LOG_ERR, NULL, NULL, NULL, NULL, "cannot write the job state of %s: %s",
			run->job->name, strerror(-r));
	return r;
}

/* ---- worker ops ------------------------------------------------------- */

static int sha256_file(const char *path, char hex[65])
{
	unsigned char buf[256 * 1024], md[32];
	unsigned int mdlen = 0;
	int r = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (fd < 0 || !ctx) {
		r = fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
out:
	EVP_MD_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	return r;
}

static int copy_local_stage(const char *src, int src_fd, const char *dst, char sha[65])
{
	char buf[256 * 1024];
	int r = 0, in = src_fd >= 0 ? dup(src_fd) : open(src, O_RDONLY | O_CLOEXEC);
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (in < 0 || out < 0) {
		r = -errno;
		goto done;
	}
	for (off_t pos = 0;;) {
		ssize_t n = pread(in, buf, sizeof(buf), pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto done;
		}
		if (n == 0)
			break;
		pos += n;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(out, buf + off, (size_t)(n - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				r = -errno;
				goto done;
			}
			off += w;
		}
	}
	if (fsync(out) < 0)
		r = -errno;
done:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	if (r < 0)
		unlink(dst);
	else
		r = sha256_file(dst, sha);
	return r;
}

static void spool_path_of(const struct run_file *f, char *out, size_t size)
{
	snprintf(out, size, "%s.spool", f->stage);
}

/* Staged copy and spool go together. */
static void unstage(const struct run_file *f)
{
	char spool[PATH_MAX + 8];

	spool_path_of(f, spool, sizeof(spool));
	unlink(f->stage);
	unlink(spool);
}

static int op_fetch(struct run *run, struct run_file *f)
{
	char part[PATH_MAX + 8];

	snprintf(part, sizeof(part), "%s.part", f->stage);
	/* A staged copy from an earlier (crashed) run is reused only if its
	 * content is what the ledger recorded. */
	if (f->known_sha[0] && access(f->stage, F_OK) == 0) {
		char sha[65];
		if (sha256_file(f->stage, sha) == 0 && strcmp(sha, f->known_sha) == 0) {
			memcpy(f->sha, sha, sizeof(sha));
			return 0;
		}
	}
	unlink(part);
	unstage(f);
	int r;
	if (run->env.upload_path) {
		r = copy_local_stage(run->env.upload_path,
				     run->env.upload_fd_set ? run->env.upload_fd : -1, part, f->sha);
		if (r < 0)
			snprintf(run->serr.message, sizeof(run->serr.message), "cannot read %s: %s",
				 run->env.upload_path, strerror(-r));
	} else {
		r = sftp_fetch(run->conn, f->e.path, f->e.size, part, f->sha, &run->serr);
	}
	if (r < 0)
		return r;
	if (rename(part, f->stage) < 0) {
		r = -errno;
		unlink(part);
		snprintf(run->serr.message, sizeof(run->serr.message), "cannot stage %s: %s",
			 f->stage, strerror(-r));
		return r;
	}
	char *dir = strdup(f->stage);
	if (dir) {
		char *slash = strrchr(dir, '/');
		if (slash)
			*slash = '\0';
		state_fsync_dir(dir);
		free(dir);
	}
	return 0;
}

/* The spool holds the request bodies pass 1 encoded, so the file is parsed once;
 * a damaged or missing spool falls back to parsing the staged file again. */
static int op_validate(struct run *run, struct run_file *f)
{
	char spool[PATH_MAX + 8];

	spool_path_of(f, spool, sizeof(spool));
	int r = pipeline_validate_spool(run->job, f->stage, f->e.name,
					run->env.dry_run ? NULL : f->reject_path,
					run->env.dry_run ? NULL : spool, &f->sum);
	if (r < 0 || f->sum.file_error || f->sum.over_budget || run->env.dry_run)
		return r;
	r = pipeline_spool_open(spool, f->sum.n_batches, &f->batcher);
	if (r == -EBADMSG || r == -ENOENT)
		r = pipeline_batcher_open(run->job, f->stage, f->e.name, &f->batcher);
	return r;
}


static int op_produce(struct run *run, struct run_file *f)
{
	for (;;) {
		int r = pipeline_batcher_next(f->batcher, &f->produced, &f->produced_rows,
					      &f->produced_index);
		if (r <= 0)
			return r;
		if (!f->accepted_before || f->produced_index >= f->sum.n_batches ||
		    !f->accepted_before[f->produced_index])
			return 1;
	}
}

/* A move target: strftime tokens, relative to the job's path. */
static int after_dest_dir(const struct run *run, const struct cfg_after *a, char *out, size_t len)
{
	char expanded[PATH_MAX];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	/* The folder is the job's own setting: strftime tokens are the feature. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	size_t n = strftime(expanded, sizeof(expanded), a->to, &tm);
#pragma GCC diagnostic pop
	if (n == 0)
		return -ENAMETOOLONG;
	if (expanded[0] == '/')
		snprintf(out, len, "%s", expanded);
	else
		snprintf(out, len, "%s/%s", run->job->source.path, expanded);
	return 0;
}

static int op_after(struct run *run, struct run_file *f)
{
	bool success = f->outcome == FO_IMPORTED;
	const struct cfg_after *a = success ? &run->job->source.after_import
					    : &run->job->source.after_failure;
	char dir[PATH_MAX], dest[PATH_MAX + 64];
	int r = 0;

	if (a->action == AFTER_DELETE) {
		r = sftp_unlink(run->conn, f->e.path, &run->serr);
		if (r == 0 && run->job->source.done_marker) {
			char marker[PATH_MAX + 64];
			struct sftp_error ignored;
			snprintf(marker, sizeof(marker), "%s%s", f->e.path, run->job->source.done_marker);
			sftp_unlink(run->conn, marker, &ignored);
		}
		return r;
	}
	if (a->action == AFTER_LEAVE) {
		dir[0] = '\0';
	} else {
		r = after_dest_dir(run, a, dir, sizeof(dir));
		if (r < 0)
			return r;
		r = sftp_mkdir_p(run->conn, dir, &run->serr);
		if (r < 0)
			return r;
		/* A name clash gets a suffix, never an overwrite. */
		for (int i = 0; i < 1000; i++) {
			if (i == 0)
				snprintf(dest, sizeof(dest), "%s/%s", dir, f->e.name);
			else
				snprintf(dest, sizeof(dest), "%s/%s.%d", dir, f->e.name, i);
			r = sftp_rename(run->conn, f->e.path, dest, &run->serr);
			if (r != -EEXIST)
				break;
		}
		if (r < 0)
			return r;
		if (run->job->source.done_marker) {
			char marker[PATH_MAX + 64], mdest[PATH_MAX + 128];
			struct sftp_error ignored;
			snprintf(marker, sizeof(marker), "%s%s", f->e.path, run->job->source.done_marker);
			snprintf(mdest, sizeof(mdest), "%s%s", dest, run->job->source.done_marker);
			sftp_rename(run->conn, marker, mdest, &ignored);
		}
	}
	if (!success && a->upload_rejects && f->reject_path[0] && access(f->reject_path, R_OK) == 0) {
		char remote[PATH_MAX + 64];
		if (dir[0])
			snprintf(remote, sizeof(remote), "%s/%s.rejects.csv", dir, f->e.name);
		else
			snprintf(remote, sizeof(remote), "%s.rejects.csv", f->e.path);
		r = sftp_upload(run->conn, f->reject_path, remote, &run->serr);
	}
	return r;
}

static void work_cb(uv_work_t *req)
{
	struct run *run = req->data;
	struct run_file *f = run->cur < run->n_files ? &run->files[run->cur] : NULL;

	memset(&run->serr, 0, sizeof(run->serr));
	switch (run->op) {
	case OP_CONNECT_LIST:
		run->work_rc = sftp_connect(run->job->source.site, &run->conn, &run->serr);
		if (run->work_rc == 0)
			run->work_rc = sftp_list(run->conn, run->job->source.path,
						 run->job->source.recursive, &run->listing, &run->serr);
		break;
	case OP_FETCH:
		run->work_rc = op_fetch(run, f);
		break;
	case OP_VALIDATE:
		run->work_rc = op_validate(run, f);
		break;
	case OP_PRODUCE:
		f->produce_rc = op_produce(run, f);
		break;
	case OP_AFTER:
		run->work_rc = op_after(run, f);
		break;
	case OP_CLOSE:
		sftp_close(run->conn);
		run->conn = NULL;
		run->work_rc = 0;
		break;
	}
}

static void after_work_cb(uv_work_t *req, int status);

static void queue_op(struct run *run, enum work_op op)
{
	run->op = op;
	run->work_busy = true;
	run->work.data = run;
	int r = uv_queue_work(run->env.loop, &run->work, work_cb, after_work_cb);
	if (r < 0) {
		/* Cannot happen with a live loop; fail loudly rather than hang. */
		run->work_busy = false;
		run_fail(run, "internal error: cannot queue work: %s", uv_strerror(r));
		run_set_state(run, RS_DONE);
	}
}

/* ---- connect and select ------------------------------------------------ */

static void file_init(struct run *run, struct run_file *f, const struct sftp_entry *e, size_t idx)
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	char h[17];

	memset(f, 0, sizeof(*f));
	f->e = *e;
	f->e.path = strdup(e->path);
	f->e.name = strdup(e->name);
	/* Stage name: a hash of the remote path keeps names short and unique. */
	EVP_Digest(e->path, strlen(e->path), md, &mdlen, EVP_sha256(), NULL);
	for (int i = 0; i < 8; i++)
		snprintf(h + 2 * i, 3, "%02x", md[i]);
	snprintf(f->stage, sizeof(f->stage), "%s/stage/%s/%s", run->env.state_dir, run->job->name, h);
	snprintf(f->reject_path, sizeof(f->reject_path), "%s/runs/%s/%s.%zu.rejects.csv",
		 run->env.state_dir, run->job->name, run->id, idx + 1);
	f->rec = json_pack("{ss ss sI sI}", "name", e->name, "path", e->path, "size",
			   (json_int_t)e->size, "mtime", (json_int_t)(e->has_mtime ? e->mtime : -1));
	f->batches = json_array();
	json_object_set(f->rec, "batches", f->batches);
}

/* The ledger's latest knowledge of this listed file (site, path, size, mtime;
 * without a SHA-256 the ledger answers with the most recent such identity). */
static const struct ledger_file *ledger_lookup(const struct run *run, const struct sftp_entry *e)
{
	struct ledger_key k = {
		.site = site_name(run),
		.path = e->path,
		.size = e->size,
		.mtime = e->has_mtime ? e->mtime : -1,
	};
	return run->env.ledger ? ledger_get(run->env.ledger, &k) : NULL;
}

static void ledger_key_of(const struct run *run, const struct run_file *f, struct ledger_key *k)
{
	k->site = site_name(run);
	k->path = f->e.path;
	k->size = f->e.size;
	k->mtime = f->e.has_mtime ? f->e.mtime : -1;
	k->sha256 = f->sha[0] ? f->sha : NULL;
}

static void add_files(struct run *run, const struct sftp_entry *take, size_t n)
{
	run->files = calloc(n ? n : 1, sizeof(*run->files));
	if (!run->files) {
		run_fail(run, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct ledger_file *lf = ledger_lookup(run, &take[i]);
		if (lf && lf->state == LF_FAILED) {
			log_msg(LOG_DEBUG, "%s: %s: failed before (%s); not retried", run->job->name,
				take[i].path, lf->error ? lf->error : "");
			continue;
		}
		if (lf && lf->state == LF_IMPORTED &&
		    (lf->after_done || run->job->source.after_import.action == AFTER_LEAVE))
			continue; /* imported once; the ledger prevents a second import */
		struct run_file *f = &run->files[run->n_files];
		file_init(run, f, &take[i], run->n_files);
		if (lf && lf->state == LF_IMPORTED) {
			f->after_only = true;
			f->outcome = FO_IMPORTED;
			memcpy(f->sha, lf->sha256, sizeof(f->sha));
		} else if (lf && (lf->state == LF_FETCHED || lf->state == LF_VALIDATED ||
				  lf->state == LF_POSTING)) {
			f->resuming = true;
			memcpy(f->known_sha, lf->sha256, sizeof(f->known_sha));
		}
		if (f->rec)
			json_array_append(json_object_get(run->rec, "files"), f->rec);
		run->n_files++;
	}
}

static void after_connect(struct run *run)
{
	if (run->work_rc < 0) {
		const char *msg_id = XP_MSG_RUN_FAILED;
		char fp[200] = "";
		if (run->serr.kind == SFTP_ERR_HOSTKEY_UNKNOWN || run->serr.kind == SFTP_ERR_HOSTKEY_CHANGED ||
		    run->serr.kind == SFTP_ERR_HOSTKEY_TYPE) {
			msg_id = XP_MSG_HOSTKEY_REFUSED;
			snprintf(fp, sizeof(fp), "FINGERPRINT=%s", run->serr.fingerprint);
		} else if (run->serr.kind == SFTP_ERR_AUTH) {
			msg_id = XP_MSG_AUTH_FAILED;
		}
		run_log(run, LOG_ERR, msg_id, NULL, fp[0] ? fp : NULL, NULL, "%s",
			run->serr.message[0] ? run->serr.message : strerror(-run->work_rc));
		run_fail(run, "%s", run->serr.message[0] ? run->serr.message : strerror(-run->work_rc));
		run_close(run);
		return;
	}
	run_set_state(run, RS_SELECT);
	const json_t *prev = run->env.job_state ? json_object_get(run->env.job_state, "sightings") : NULL;
	int r = select_files(run->job, &run->listing, prev, util_now_ms(), &run->sel);
	if (r < 0) {
		run_fail(run, "selecting files: %s", strerror(-r));
		run_close(run);
		return;
	}
	if (run->sel.no_mtime)
		run_log(run, LOG_WARNING, NULL, NULL, NULL, NULL,
			"the server reports no modification times; completeness is judged by size "
			"stability only");
	json_t *waiting = json_array();
	for (size_t i = 0; i < run->sel.n_waiting; i++) {
		char fld[PATH_MAX + 8];
		snprintf(fld, sizeof(fld), "FILE=%s", run->sel.waiting[i].path);
		run_log(run, LOG_INFO, XP_MSG_FILE_WAITING, NULL, fld, NULL, "%s: %s",
			run->sel.waiting[i].path, run->sel.waiting[i].reason);
		json_array_append_new(waiting, json_pack("{ss ss}", "path", run->sel.waiting[i].path,
							 "reason", run->sel.waiting[i].reason));
	}
	if (run->env.job_state && !run->env.dry_run) {
		json_object_set(run->env.job_state, "sightings", run->sel.sightings);
		json_object_set(run->env.job_state, "waiting", waiting);
		save_job_state(run);
	}
	json_object_set_new(run->rec, "waiting", waiting);
	add_files(run, run->sel.take, run->sel.n_take);
	if (run->n_files == 0)
		log_msg(LOG_INFO, "%s: no new complete files in %s", run->job->name,
			run->job->source.path);
	record_write(run, "running");
	next_file(run);
}

/* ---- per file ------------------------------------------------------------ */

static void file_fail(struct run *run, struct run_file *f, const char *msg_id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void file_fail(struct run *run, struct run_file *f, const char *msg_id, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->error, sizeof(f->error), fmt, ap);
	va_end(ap);
	f->outcome = FO_FAILED;
	run->files_failed++;
	unstage(f); /* not retried for this identity: keep no copy */
	run_fail(run, "%s: %s", f->e.name, f->error);
	run_log(run, LOG_ERR, msg_id, f, NULL, NULL, "%s", f->error);
	if (!run->env.dry_run && run->env.ledger) {
		struct ledger_key k;
		ledger_key_of(run, f, &k);
		int r = ledger_failed(run->env.ledger, run->id, &k, f->error);
		if (r < 0)
			run_log(run, LOG_ERR, NULL, f, NULL, NULL, "cannot record the failure in the ledger: %s",
				strerror(-r));
	}
}

/* A transient problem (network, API unavailable, disk): the file is left
 * unfinished in the ledger and the next run resumes it. */
static void file_interrupt(struct run *run, struct run_file *f, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void file_interrupt(struct run *run, struct run_file *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->error, sizeof(f->error), fmt, ap);
	va_end(ap);
	f->outcome = FO_INTERRUPTED;
	run_fail(run, "%s: %s", f->e.name, f->error);
	run_log(run, LOG_ERR, XP_MSG_RUN_FAILED, f, NULL, NULL, "%s", f->error);
}

static void next_file(struct run *run)
{
	if (run->stopping || run->failed) {
		/* A run stops at the first file it could not finish: files of a job are
		 * imported in order, one at a time. */
		if (run->stopping && !run->failed)
			run_fail(run, "stopped before finishing");
		run_close(run);
		return;
	}
	if (run->cur >= run->n_files) {
		run_close(run);
		return;
	}
	struct run_file *f = &run->files[run->cur];
	if (f->after_only) {
		start_after(run, true);
		return;
	}
	run_set_state(run, RS_FETCH);
	queue_op(run, OP_FETCH);
}

/* The same path with the same content (a re-upload with a new mtime) is the
 * same file: never imported twice. */
static const struct ledger_file *imported_same_content(const struct run *run,
						       const struct run_file *f)
{
	for (size_t i = 0; i < ledger_count(run->env.ledger); i++) {
		const struct ledger_file *lf = ledger_at(run->env.ledger, i);
		if (lf->state == LF_IMPORTED && strcmp(lf->sha256, f->sha) == 0 &&
		    strcmp(lf->path, f->e.path) == 0 && strcmp(lf->site, site_name(run)) == 0)
			return lf;
	}
	return NULL;
}

static void after_fetch(struct run *run)
{
	struct run_file *f = &run->files[run->cur];
	struct ledger_key k;

	if (run->work_rc < 0) {
		file_interrupt(run, f, "fetch failed: %s",
			       run->serr.message[0] ? run->serr.message : strerror(-run->work_rc));
		next_file(run);
		return;
	}
	ledger_key_of(run, f, &k);
	if (!run->env.dry_run && run->env.ledger) {
		const struct ledger_file *same = ledger_get(run->env.ledger, &k);
		if (!same || same->state != LF_IMPORTED)
			same = imported_same_content(run, f);
		if (same && same->state == LF_IMPORTED) {
			unstage(f);
			f->outcome = FO_SKIPPED;
			run->files_skipped++;
			snprintf(f->error, sizeof(f->error), "already imported (run %s)", same->run_id);
			run_log(run, LOG_INFO, XP_MSG_FILE_SKIPPED, f, NULL, NULL, "%s", f->error);
			run->cur++;
			next_file(run);
			return;
		}
		const struct ledger_file *dup = ledger_find_sha(run->env.ledger, f->sha, f->e.path);
		if (dup && run->job->source.skip_duplicate_content) {
			unstage(f);
			f->outcome = FO_SKIPPED;
			run->files_skipped++;
			snprintf(f->error, sizeof(f->error),
				 "duplicate content: same SHA-256 as %s, imported in run %s", dup->path,
				 dup->run_id);
			run_log(run, LOG_WARNING, XP_MSG_FILE_SKIPPED, f, "REASON=duplicate-content", NULL,
				"%s", f->error);
			int r = ledger_failed(run->env.ledger, run->id, &k, f->error);
			if (r < 0)
				run_log(run, LOG_ERR, NULL, f, NULL, NULL, "cannot write the ledger: %s",
					strerror(-r));
			run->cur++;
			next_file(run);
			return;
		}
		if (!f->resuming || strcmp(f->known_sha, f->sha) != 0) {
			f->first_batch = 0;
			int r = ledger_fetched(run->env.ledger, run->id, &k);
			if (r < 0) {
				file_interrupt(run, f, "cannot write the ledger: %s", strerror(-r));
				next_file(run);
				return;
			}
		}
	}
	run_set_state(run, RS_VALIDATE);
	if (run->env.progress)
		fprintf(stderr, "%s: validating %.1f MB...\n", f->e.name, (double)f->e.size / 1e6);
	queue_op(run, OP_VALIDATE);
}

static void print_dry_run(struct run *run, struct run_file *f)
{
	printf("%s: %s (%" PRIu64 " bytes, sha256 %s)\n", run->job->name, f->e.path, f->e.size, f->sha);
	printf("  rows read %" PRIu64 ", valid %" PRIu64 ", rejected %" PRIu64 ", duplicates %" PRIu64
	       ", batches %zu\n",
	       f->sum.rows_read, f->sum.rows_valid, f->sum.rows_rejected, f->sum.duplicates,
	       f->sum.n_batches);
	printf("  columns sent:");
	for (size_t i = 0; i < f->sum.n_columns_sent; i++)
		printf(" %s", f->sum.columns_sent[i]);
	printf("\n  columns not imported:");
	for (size_t i = 0; i < f->sum.n_columns_ignored; i++)
		printf(" %s", f->sum.columns_ignored[i]);
	if (f->sum.n_columns_ignored == 0)
		printf(" (none)");
	printf("\n");
	if (f->sum.file_error)
		printf("  file error: %s\n", f->sum.error);
	if (f->sum.over_budget)
		printf("  over the error budget: nothing of this file would be posted\n");
	if (f->sum.first_rows_json)
		printf("  first rows: %s\n", f->sum.first_rows_json);
	for (size_t i = 0; i < f->sum.n_first_rejects; i++)
		printf("  rejected: line %" PRIu64 ": %s\n", f->sum.first_rejects[i].line,
		       f->sum.first_rejects[i].message);
	printf("  dry run: nothing posted, nothing moved, nothing recorded\n");
	fflush(stdout);
}

static void after_validate(struct run *run)
{
	struct run_file *f = &run->files[run->cur];
	struct ledger_key k;
	char counts[96];

	run->rows_read += f->sum.rows_read;
	run->rows_valid += f->sum.rows_valid;
	run->rows_rejected += f->sum.rows_rejected;
	if (run->work_rc < 0) {
		file_interrupt(run, f, "cannot read the staged file: %s",
			       f->sum.error[0] ? f->sum.error : strerror(-run->work_rc));
		next_file(run);
		return;
	}
	if (run->env.dry_run) {
		print_dry_run(run, f);
		unstage(f); /* a dry run keeps no copy of the partner's data */
		f->outcome = FO_DRY_RUN;
		if (f->sum.file_error || f->sum.over_budget)
			run_fail(run, "%s: %s", f->e.name,
				 f->sum.file_error ? f->sum.error : "over the error budget");
		run->cur++;
		next_file(run);
		return;
	}
	if (f->sum.n_columns_ignored > 0) {
		struct strbuf sb = {0};
		for (size_t i = 0; i < f->sum.n_columns_ignored; i++)
			strbuf_printf(&sb, "%s'%s'", i ? ", " : "", f->sum.columns_ignored[i]);
		run_log(run, LOG_NOTICE, NULL, f, NULL, NULL,
			"columns not imported (no attribute of that name; map them in mapping.columns "
			"or mark them skip): %s",
			strbuf_cstr(&sb));
		strbuf_free(&sb);
	}
	snprintf(counts, sizeof(counts), "ROWS_REJECTED=%" PRIu64, f->sum.rows_rejected);
	if (f->sum.rows_rejected > 0 && f->sum.n_first_rejects > 0) {
		const struct pipe_reject *rj = &f->sum.first_rejects[0];
		run_log(run, LOG_WARNING, XP_MSG_FILE_REJECTED, f, counts, NULL,
			"%" PRIu64 " rows rejected; first at line %" PRIu64 ", column '%s' (%s); "
			"see the reject report %s",
			f->sum.rows_rejected, rj->line, rj->column, rj->rule, f->reject_path);
	}
	if (f->sum.file_error) {
		file_fail(run, f, XP_MSG_FILE_REJECTED, "%s", f->sum.error);
		start_after(run, false);
		return;
	}
	if (f->sum.over_budget) {
		file_fail(run, f, XP_MSG_FILE_REJECTED,
			  "%" PRIu64 " of %" PRIu64 " rows are invalid, over the error budget; nothing "
			  "of this file was posted",
			  f->sum.rows_rejected, f->sum.rows_read);
		start_after(run, false);
		return;
	}
	ledger_key_of(run, f, &k);
	const struct ledger_file *lf = ledger_get(run->env.ledger, &k);
	if (!lf || lf->state == LF_FETCHED || lf->state == LF_FORGOTTEN) {
		int r = ledger_validated(run->env.ledger, run->id, &k, f->sum.rows_valid,
					 f->sum.rows_rejected, f->sum.n_batches, run->job->batch.size);
		if (r < 0) {
			file_interrupt(run, f, "cannot write the ledger: %s", strerror(-r));
			next_file(run);
			return;
		}
	}
	/* Crash resume: batches an earlier run got accepted are not sent again
	 * (with max_in_flight > 1 they need not be a prefix); their task ids are
	 * still confirmed. */
	f->first_batch = 0;
	lf = ledger_get(run->env.ledger, &k);
	if (lf && lf->n_batches == f->sum.n_batches && f->sum.n_batches > 0 &&
	    (lf->state == LF_VALIDATED || lf->state == LF_POSTING)) {
		f->accepted_before = calloc(f->sum.n_batches, 1);
		for (size_t i = 0; f->accepted_before && i < f->sum.n_batches; i++) {
			if (!ledger_batch_is_accepted(lf, i))
				continue;
			f->accepted_before[i] = 1;
			f->first_batch++;
			const char *tid = ledger_task_id(lf, i);
			char **t = tid ? realloc(f->task_ids, (f->n_tasks + 1) * sizeof(*t)) : NULL;
			if (t) {
				f->task_ids = t;
				t[f->n_tasks++] = strdup(tid);
			}
		}
	}
	if (f->sum.duplicates > 0)
		run_log(run, LOG_NOTICE, NULL, f, NULL, NULL,
			"%" PRIu64 " repeated user_id%s: batches are posted one at a time so that the "
			"last row of each profile wins",
			f->sum.duplicates, f->sum.duplicates == 1 ? "" : "s");
	if (f->first_batch > 0)
		run_log(run, LOG_NOTICE, NULL, f, NULL, NULL,
			"resuming after an interrupted run: %zu of %zu batches were already accepted",
			f->first_batch, f->sum.n_batches);
	run_set_state(run, RS_POST);
	if (f->first_batch >= f->sum.n_batches)
		f->eof = true;
	fill_batches(run);
	if (f->eof && f->in_flight == 0 && !f->producing)
		finish_file(run);
}

/* ---- posting ------------------------------------------------------------- */

/* xpimportctl import on a terminal: rows, MB/s, elapsed and ETA on stderr. */
static void progress(struct run *run, struct run_file *f)
{
	if (!run->env.progress)
		return;
	int64_t now = util_mono_ms();
	bool last = f->in_flight == 0 && (f->eof || f->stop_sending);
	if (now - run->progress_ms < 250 && !last)
		return;
	run->progress_ms = now;
	size_t done = f->first_batch + f->n_accepted;
	double frac = f->sum.n_batches ? (double)done / (double)f->sum.n_batches : 1.0;
	double elapsed = (double)(now - run->mono_start_ms) / 1000.0;
	double mb = (double)f->e.size * frac / 1e6;
	double eta = frac > 0 ? elapsed * (1.0 - frac) / frac : 0;
	fprintf(stderr,
		"\r%s: %" PRIu64 "/%" PRIu64 " rows, batch %zu/%zu, %.1f MB/s, elapsed %.0fs, ETA %.0fs   ",
		f->e.name, f->rows_posted, f->sum.rows_valid, done, f->sum.n_batches,
		elapsed > 0 ? mb / elapsed : 0.0, elapsed, eta);
	if (last)
		fputc('\n', stderr);
}

static void on_retry(void *ud, int attempt, int http_status, int64_t delay_ms, const char *reason)
{
	struct batch_slot *slot = ud;
	struct run *run = slot->run;
	struct run_file *f = &run->files[run->cur];
	char st[32], at[32];

	snprintf(st, sizeof(st), "HTTP_STATUS=%d", http_status);
	snprintf(at, sizeof(at), "ATTEMPT=%d", attempt);
	run_log(run, LOG_WARNING, XP_MSG_BATCH_RETRIED, f, st, at,
		"batch %zu: %s; retrying in %.1fs (attempt %d)", slot->index + 1, reason,
		(double)delay_ms / 1000.0, attempt + 1);
}

static void on_batch_done(void *ud, const struct api_result *res)
{
	struct batch_slot *slot = ud;
	struct run *run = slot->run;
	struct run_file *f = &run->files[run->cur];
	char st[32];

	f->in_flight--;
	snprintf(st, sizeof(st), "HTTP_STATUS=%d", res->http_status);
	json_t *b = json_pack("{sI sI si si}", "index", (json_int_t)slot->index, "rows",
			      (json_int_t)slot->rows, "status", res->http_status, "attempts",
			      res->attempts);
	switch (res->outcome) {
	case API_OK:
	case API_ACCEPTED: {
		struct ledger_key k;
		ledger_key_of(run, f, &k);
		int r = ledger_batch_accepted(run->env.ledger, run->id, &k, slot->index,
					      res->http_status, res->task_id);
		if (res->task_id) {
			json_object_set_new(b, "task_id", json_string(res->task_id));
			char **t = realloc(f->task_ids, (f->n_tasks + 1) * sizeof(*t));
			if (t) {
				f->task_ids = t;
				t[f->n_tasks++] = strdup(res->task_id);
			}
		}
		f->n_accepted++;
		f->rows_posted += slot->rows;
		run->rows_posted += slot->rows;
		if (r < 0) {
			f->stop_sending = true;
			file_interrupt(run, f, "cannot record batch %zu in the ledger: %s", slot->index + 1,
				       strerror(-r));
		}
		break;
	}
	case API_REJECTED:
		f->stop_sending = true;
		if (!f->rejected) {
			f->rejected = true;
			snprintf(f->error, sizeof(f->error), "batch %zu rejected by the API (HTTP %d): %s%s%s",
				 slot->index + 1, res->http_status, res->message ? res->message : "",
				 res->errors_json ? " " : "", res->errors_json ? res->errors_json : "");
		}
		json_object_set_new(b, "message", jstr_or_null(res->message));
		json_object_set_new(b, "errors", res->errors_json ? json_loads(res->errors_json, 0, NULL)
								  : json_null());
		break;
	case API_AUTH_FAILED:
		f->stop_sending = true;
		if (!run->auth_paused) {
			run->auth_paused = true;
			run_log(run, LOG_ERR, XP_MSG_API_AUTH_FAILED, f, st, NULL,
				"the API refused the apptoken of project '%s' (HTTP %d); the job is paused "
				"until the configuration changes or 'xpimportctl resume %s'",
				run->job->project_name, res->http_status, run->job->name);
			if (run->env.job_state) {
				char stamp[96];
				util_file_stamp(run->job->project->apptoken_file, stamp, sizeof(stamp));
				json_object_set_new(run->env.job_state, "paused",
						    json_pack("{ss sI si ss}", "reason", "authentication failed",
							      "since", (json_int_t)util_now_ms(), "http_status",
							      res->http_status, "apptoken_stamp", stamp));
				save_job_state(run);
			}
		}
		if (!f->error[0])
			snprintf(f->error, sizeof(f->error), "authentication failed (HTTP %d)",
				 res->http_status);
		break;
	case API_GAVE_UP:
		f->stop_sending = true;
		if (!f->error[0])
			snprintf(f->error, sizeof(f->error), "batch %zu not accepted after %d attempt%s: %s",
				 slot->index + 1, res->attempts, res->attempts == 1 ? "" : "s",
				 res->error[0] ? res->error : (res->message ? res->message : "server error"));
		break;
	case API_CANCELLED:
		f->stop_sending = true;
		if (!f->error[0])
			snprintf(f->error, sizeof(f->error), "stopped while batch %zu was in flight",
				 slot->index + 1);
		break;
	}
	json_array_append_new(f->batches, b);
	free(slot);
	progress(run, f);
	if (!f->stop_sending)
		fill_batches(run);
	if (f->in_flight == 0 && !f->producing && (f->eof || f->stop_sending))
		finish_file(run);
}

static void after_produce(struct run *run)
{
	struct run_file *f = &run->files[run->cur];

	f->producing = false;
	if (f->produce_rc < 0) {
		f->stop_sending = true;
		snprintf(f->error, sizeof(f->error), "reading the staged file for batch %zu: %s",
			 f->produced_index + 1, strerror(-f->produce_rc));
	} else if (f->produce_rc == 0) {
		f->eof = true;
	} else if (!f->stop_sending && !run->stopping) {
		struct batch_slot *slot = calloc(1, sizeof(*slot));
		static const struct api_callbacks cbs = {.done = on_batch_done, .on_retry = on_retry};
		int r = slot ? 0 : -ENOMEM;
		if (slot) {
			slot->run = run;
			slot->index = f->produced_index;
			slot->rows = f->produced_rows;
			f->in_flight++;
			r = api_import_profile(run->env.api, run->job->project, run->apptoken,
					       f->produced.data, f->produced.len, &cbs, slot, &slot->req);
			if (r < 0) {
				f->in_flight--;
				free(slot);
			}
		}
		if (r < 0) {
			f->stop_sending = true;
			snprintf(f->error, sizeof(f->error), "cannot post batch %zu: %s",
				 f->produced_index + 1, strerror(-r));
		}
	}
	if (run->stopping)
		f->stop_sending = true;
	if (!f->stop_sending)
		fill_batches(run);
	if (f->in_flight == 0 && !f->producing && (f->eof || f->stop_sending))
		finish_file(run);
}

static void fill_batches(struct run *run)
{
	struct run_file *f = &run->files[run->cur];
	int max = run->job->project->max_in_flight > 0 ? run->job->project->max_in_flight : 1;
	/* A file that repeats a user_id is posted one batch at a time, so that
	 * the later row reaches the API after the earlier one and wins. */
	if (f->sum.duplicates > 0)
		max = 1;

	if (run->stopping)
		f->stop_sending = true;
	if (f->producing || f->eof || f->stop_sending || f->in_flight >= max || run->work_busy)
		return;
	f->producing = true;
	queue_op(run, OP_PRODUCE);
}

/* ---- confirm tasks, record, after-action ---------------------------------- */

static void poll_next_task(struct run *run);

static void task_timer_cb(uv_timer_t *t)
{
	poll_next_task(t->data);
}

static void on_task_done(void *ud, const struct api_result *res)
{
	struct run *run = ud;
	struct run_file *f = &run->files[run->cur];
	const char *tid = f->task_ids[f->task_pos];

	if (res->outcome == API_OK && res->task_finished) {
		if (res->task_status && strcmp(res->task_status, "failed") == 0) {
			f->rejected = true;
			snprintf(f->error, sizeof(f->error), "import task %s failed: %s", tid,
				 res->message ? res->message : "no message");
		}
		json_t *b;
		size_t i;
		json_array_foreach(f->batches, i, b) {
			const char *bt = json_string_value(json_object_get(b, "task_id"));
			if (bt && strcmp(bt, tid) == 0)
				json_object_set_new(b, "task_status", jstr_or_null(res->task_status));
		}
		f->task_pos++;
		f->task_polls = 0;
		poll_next_task(run);
		return;
	}
	if (res->outcome == API_CANCELLED || run->stopping) {
		file_interrupt(run, f, "stopped while confirming import tasks");
		finish_file(run);
		return;
	}
	if (res->outcome == API_AUTH_FAILED || res->outcome == API_REJECTED || res->outcome == API_GAVE_UP) {
		snprintf(f->error, sizeof(f->error), "cannot confirm import task %s: HTTP %d %s", tid,
			 res->http_status, res->message ? res->message : res->error);
		f->task_pos = f->n_tasks; /* give up confirming; recorded below */
		f->rejected = false;
		run_fail(run, "%s: %s", f->e.name, f->error);
		poll_next_task(run);
		return;
	}
	if (util_mono_ms() > run->task_deadline_ms) {
		snprintf(f->error, sizeof(f->error), "import task %s not finished within %" PRId64 "s", tid,
			 run->job->project->task_timeout_ms / 1000);
		run_fail(run, "%s: %s", f->e.name, f->error);
		f->task_pos = f->n_tasks;
		poll_next_task(run);
		return;
	}
	int64_t delay = 250LL << (f->task_polls < 6 ? f->task_polls : 6);
	if (delay > 10000)
		delay = 10000;
	f->task_polls++;
	uv_timer_start(&run->task_timer, task_timer_cb, (uint64_t)delay, 0);
}

static void poll_next_task(struct run *run)
{
	struct run_file *f = &run->files[run->cur];
	static const struct api_callbacks cbs = {.done = on_task_done};

	if (f->task_pos >= f->n_tasks || run->stopping) {
		if (f->rejected) {
			char why[sizeof(f->error)];
			memcpy(why, f->error, sizeof(why));
			file_fail(run, f, XP_MSG_FILE_REJECTED, "%s", why);
			start_after(run, false);
			return;
		}
		run_set_state(run, RS_RECORD);
		finish_file(run);
		return;
	}
	int r = api_task_info(run->env.api, run->job->project, run->apptoken, f->task_ids[f->task_pos],
			      &cbs, run, NULL);
	if (r < 0) {
		file_interrupt(run, f, "cannot poll import task: %s", strerror(-r));
		finish_file(run);
	}
}

/* Called when no batch is in flight any more (or confirmation ended). */
static void finish_file(struct run *run)
{
	struct run_file *f = &run->files[run->cur];
	struct ledger_key k;

	if (f->outcome == FO_INTERRUPTED || f->outcome == FO_FAILED) {
		record_write(run, "running");
		run->cur++;
		next_file(run);
		return;
	}
	if (f->rejected) {
		char why[sizeof(f->error)];
		memcpy(why, f->error, sizeof(why));
		file_fail(run, f, XP_MSG_BATCH_REJECTED, "%s", why);
		start_after(run, false);
		return;
	}
	size_t done = f->first_batch + f->n_accepted;
	if (done < f->sum.n_batches || (f->stop_sending && !f->eof && done < f->sum.n_batches)) {
		char why[sizeof(f->error)];
		util_strlcpy(why, f->error[0] ? f->error : "stopped before every batch was accepted",
			     sizeof(why));
		file_interrupt(run, f, "%s", why);
		record_write(run, "running");
		run->cur++;
		next_file(run);
		return;
	}
	if (run->state == RS_POST && f->n_tasks > 0 && run->job->project->confirm_tasks) {
		run_set_state(run, RS_CONFIRM);
		run->task_deadline_ms = util_mono_ms() + run->job->project->task_timeout_ms;
		poll_next_task(run);
		return;
	}
	run_set_state(run, RS_RECORD);
	ledger_key_of(run, f, &k);
	int r = ledger_imported(run->env.ledger, run->id, &k);
	if (r < 0) {
		file_interrupt(run, f, "cannot record the import in the ledger: %s", strerror(-r));
		record_write(run, "running");
		run->cur++;
		next_file(run);
		return;
	}
	f->outcome = FO_IMPORTED;
	run->files_imported++;
	char rows[64];
	snprintf(rows, sizeof(rows), "ROWS_IMPORTED=%" PRIu64, f->sum.rows_valid);
	run_log(run, LOG_INFO, XP_MSG_FILE_IMPORTED, f, rows, NULL,
		"imported %" PRIu64 " rows (%" PRIu64 " rejected) in %zu batch%s", f->sum.rows_valid,
		f->sum.rows_rejected, f->sum.n_batches, f->sum.n_batches == 1 ? "" : "es");
	unstage(f);
	record_write(run, "running");
	start_after(run, true);
}

static void start_after(struct run *run, bool success)
{
	struct run_file *f = &run->files[run->cur];
	const struct cfg_after *a = success ? &run->job->source.after_import
					    : &run->job->source.after_failure;

	if (run->env.upload_path || run->env.dry_run || !run->conn ||
	    (a->action == AFTER_LEAVE && !(!success && a->upload_rejects))) {
		if (success && !run->env.dry_run && run->env.ledger && a->action == AFTER_LEAVE) {
			struct ledger_key k;
			ledger_key_of(run, f, &k);
			ledger_after_done(run->env.ledger, run->id, &k, "leave");
		}
		record_write(run, "running");
		run->cur++;
		next_file(run);
		return;
	}
	run_set_state(run, RS_AFTER);
	queue_op(run, OP_AFTER);
}

static void after_after(struct run *run)
{
	struct run_file *f = &run->files[run->cur];
	bool success = f->outcome == FO_IMPORTED;
	const struct cfg_after *a = success ? &run->job->source.after_import
					    : &run->job->source.after_failure;
	static const char *const names[] = {"leave", "delete", "move"};

	if (run->work_rc < 0) {
		run_log(run, LOG_WARNING, NULL, f, NULL, NULL,
			"after-action '%s' failed: %s (the ledger still prevents a second import)",
			names[a->action], run->serr.message[0] ? run->serr.message : strerror(-run->work_rc));
	} else if (success) {
		struct ledger_key k;
		ledger_key_of(run, f, &k);
		ledger_after_done(run->env.ledger, run->id, &k, names[a->action]);
		log_msg(LOG_INFO, "%s: %s: after-action '%s' done", run->job->name, f->e.name,
			names[a->action]);
	}
	record_write(run, "running");
	run->cur++;
	next_file(run);
}

/* ---- close and finish ----------------------------------------------------- */

static void timer_closed(uv_handle_t *h)
{
	struct run *run = h->data;
	enum run_outcome outcome = run->failed ? (run->files_imported ? RUN_PARTIAL : RUN_FAILED)
					       : RUN_SUCCEEDED;
	if (run->done)
		run->done(run, outcome, run->ud);
}

static void run_finish(struct run *run)
{
	const char *outcome = run->failed ? (run->files_imported ? "partial" : "failed") : "succeeded";
	char rows[64], files[64];

	run_set_state(run, RS_DONE);
	/* A run whose record cannot be written did not succeed as far as the
	 * operator can tell (the ledger still knows what was imported). */
	if (record_write(run, outcome) < 0 && !run->failed) {
		run_fail(run, "cannot write the run record %s", run->record_path);
		outcome = run->files_imported ? "partial" : "failed";
		record_write(run, outcome); /* may work once the space is back; best effort */
	}
	snprintf(run->summary, sizeof(run->summary),
		 "%s: %zu file%s imported, %zu failed, %zu skipped; %" PRIu64 " rows read, %" PRIu64
		 " posted, %" PRIu64 " rejected",
		 outcome, run->files_imported, run->files_imported == 1 ? "" : "s", run->files_failed,
		 run->files_skipped, run->rows_read, run->rows_posted, run->rows_rejected);
	if (run->env.job_state && !run->env.dry_run) {
		char fin[40];
		util_format_time(util_now_ms(), fin, sizeof(fin));
		json_object_set_new(run->env.job_state, "last_run",
				    json_pack("{ss ss ss ss*}", "run_id", run->id, "outcome", outcome,
					      "finished", fin, "error", run->error[0] ? run->error : NULL));
		save_job_state(run);
	}
	snprintf(rows, sizeof(rows), "ROWS_POSTED=%" PRIu64, run->rows_posted);
	snprintf(files, sizeof(files), "FILES_IMPORTED=%zu", run->files_imported);
	if (run->failed)
		run_log(run, LOG_ERR, XP_MSG_RUN_FAILED, NULL, rows, files, "run %s %s: %s (%s)", run->id,
			outcome, run->error, run->summary);
	else
		run_log(run, LOG_INFO, XP_MSG_RUN_FINISHED, NULL, rows, files, "run %s %s", run->id,
			run->summary);
	if (run->env.state_dir && !run->env.dry_run)
		state_prune_runs(run->env.state_dir, run->job->name,
				 run->env.keep_runs > 0 ? run->env.keep_runs : 100,
				 run->env.keep_runs_age_ms);
	uv_close((uv_handle_t *)&run->task_timer, timer_closed);
}

static void run_close(struct run *run)
{
	run_set_state(run, RS_CLOSE);
	if (run->conn) {
		queue_op(run, OP_CLOSE);
		return;
	}
	run_finish(run);
}

static void after_work_cb(uv_work_t *req, int status)
{
	struct run *run = req->data;

	run->work_busy = false;
	if (status == UV_ECANCELED)
		run->work_rc = -ECANCELED;
	switch (run->op) {
	case OP_CONNECT_LIST:
		after_connect(run);
		break;
	case OP_FETCH:
		after_fetch(run);
		break;
	case OP_VALIDATE:
		after_validate(run);
		break;
	case OP_PRODUCE:
		after_produce(run);
		break;
	case OP_AFTER:
		after_after(run);
		break;
	case OP_CLOSE:
		run_finish(run);
		break;
	}
}

/* ---- public --------------------------------------------------------------- */

int run_start(const struct cfg_job *job, const struct run_env *env, enum run_trigger trigger,
	      run_done_cb done, void *ud, struct run **out)
{
	struct run *run = calloc(1, sizeof(*run));
	int r;

	if (!run)
		return -ENOMEM;
	run->job = job;
	run->env = *env;
	run->trigger = trigger;
	run->done = done;
	run->ud = ud;
	run->started_ms = util_now_ms();
	run->mono_start_ms = util_mono_ms();
	state_new_run_id(run->id);
	uv_timer_init(env->loop, &run->task_timer);
	run->task_timer.data = run;
	run->rec = json_pack("{ss ss ss ss ss sb s[]}", "run_id", run->id, "job", job->name, "trigger",
			     run_trigger_name(trigger), "project", job->project_name, "site",
			     env->upload_path ? "upload" : job->source.site_name, "dry_run",
			     env->dry_run, "files");
	if (!run->rec) {
		r = -ENOMEM;
		goto fail;
	}
	if (!env->dry_run) {
		char *dir = state_path(env->state_dir, "runs/%s", job->name);
		char *stage = state_path(env->state_dir, "stage/%s", job->name);
		run->record_path = state_path(env->state_dir, "runs/%s/%s.json", job->name, run->id);
		if (!dir || !stage || !run->record_path) {
			free(dir);
			free(stage);
			r = -ENOMEM;
			goto fail;
		}
		state_mkdir_p(dir, 0700);
		state_mkdir_p(stage, 0700);
		free(dir);
		free(stage);
		r = util_read_secret(job->project->apptoken_file, 4096, &run->apptoken, &run->apptoken_len);
		if (r < 0) {
			run_fail(run, "cannot read apptoken_file %s: %s", job->project->apptoken_file,
				 r == -EPERM ? "readable by group or others (chmod 600 it)" : strerror(-r));
		}
	} else {
		char *stage = state_path(env->state_dir, "stage/%s", job->name);
		if (stage) {
			state_mkdir_p(stage, 0700);
			free(stage);
		}
	}
	char trig[48];
	snprintf(trig, sizeof(trig), "TRIGGER=%s", run_trigger_name(trigger));
	run_log(run, LOG_INFO, XP_MSG_RUN_STARTED, NULL, trig, NULL, "run %s started (%s%s)", run->id,
		run_trigger_name(trigger), env->dry_run ? ", dry run" : "");
	*out = run;
	if (run->failed) {
		run_log(run, LOG_ERR, XP_MSG_RUN_FAILED, NULL, NULL, NULL, "%s", run->error);
		run_finish(run);
		return 0;
	}
	if (env->upload_path) {
		struct stat st;
		if ((env->upload_fd_set ? fstat(env->upload_fd, &st) : stat(env->upload_path, &st)) < 0) {
			run_fail(run, "cannot read %s: %s", env->upload_path, strerror(errno));
			run_finish(run);
			return 0;
		}
		const char *base = strrchr(env->upload_path, '/');
		struct sftp_entry e = {
			.path = (char *)(uintptr_t)env->upload_path,
			.name = (char *)(uintptr_t)(base ? base + 1 : env->upload_path),
			.size = (uint64_t)st.st_size,
			.mtime = st.st_mtime,
			.has_mtime = true,
			.is_regular = true,
		};
		add_files(run, &e, 1);
		record_write(run, "running");
		next_file(run);
		return 0;
	}
	run_set_state(run, RS_CONNECT);
	queue_op(run, OP_CONNECT_LIST);
	return 0;
fail:
	json_decref(run->rec);
	free(run->record_path);
	uv_close((uv_handle_t *)&run->task_timer, (uv_close_cb)free);
	return r;
}

void run_stop(struct run *run)
{
	if (!run || run->stopping)
		return;
	run->stopping = true;
	if (run->cur < run->n_files)
		run->files[run->cur].stop_sending = true;
	if (run->state == RS_CONFIRM && uv_is_active((uv_handle_t *)&run->task_timer)) {
		uv_timer_stop(&run->task_timer);
		struct run_file *f = &run->files[run->cur];
		file_interrupt(run, f, "stopped while confirming import tasks");
		finish_file(run);
	}
}

const char *run_summary(const struct run *run)
{
	return run->summary;
}

void run_free(struct run *run)
{
	if (!run)
		return;
	for (size_t i = 0; i < run->n_files; i++) {
		struct run_file *f = &run->files[i];
		free(f->e.path);
		free(f->e.name);
		pipe_summary_free(&f->sum);
		pipeline_batcher_free(f->batcher);
		strbuf_free(&f->produced);
		for (size_t t = 0; t < f->n_tasks; t++)
			free(f->task_ids[t]);
		free(f->task_ids);
		free(f->accepted_before);
		json_decref(f->rec);
		json_decref(f->batches);
	}
	free(run->files);
	sftp_listing_free(&run->listing);
	select_result_free(&run->sel);
	util_free_secret(run->apptoken, run->apptoken_len);
	json_decref(run->rec);
	free(run->record_path);
	free(run);
}
