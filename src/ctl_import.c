/* ctl_import.c — xpimportctl import (the UI's "Upload") and create-profile
 * (the UI's "Create User Profile"). Both go through the same pipeline and
 * API client as the daemon. import runs here when the state directory is
 * free and is handed to the daemon when it holds the lock, so that only one
 * process ever writes a job's ledger and state. */
#include "ctl_common.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "api.h"
#include "control.h"
#include "ledger.h"
#include "log.h"
#include "pipeline.h"
#include "run.h"
#include "state.h"
#include "util.h"

#define CTL_MAX_ATTRS 256
#define CTL_TASK_POLL_MS 1000
#define CTL_TASK_WAIT_MAX_MS 120000

static void api_closed(void *ud)
{
	(void)ud;
}

/* ---- import ------------------------------------------------------------ */

struct import_run {
	bool done;
	enum run_outcome outcome;
	char id[32];
	char summary[256];
};

static void import_done(struct run *run, enum run_outcome outcome, void *ud)
{
	struct import_run *ir = ud;

	ir->done = true;
	ir->outcome = outcome;
	util_strlcpy(ir->id, run_id(run), sizeof(ir->id));
	util_strlcpy(ir->summary, run_summary(run), sizeof(ir->summary));
	run_free(run);
}

static const char *outcome_name(enum run_outcome o)
{
	return o == RUN_SUCCEEDED ? "succeeded" : o == RUN_PARTIAL ? "partial" : "failed";
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* The error of a recorded run, for the one-line failure message. */
static void recorded_error(const struct ctl *c, const char *job, const char *id, char *buf,
                           size_t size)
{
	char *path = state_path(c->state_dir, "runs/%s/%s.json", job, id);
	json_t *rec = NULL;

	buf[0] = '\0';
	if (path && state_read_json(path, &rec) == 0) {
		const char *e = ctl_jstr(rec, "error");
		if (!*e) {
			size_t i;
			json_t *f;
			json_array_foreach(json_object_get(rec, "files"), i,
			                   f) if (*ctl_jstr(f, "error"))
			{
				e = ctl_jstr(f, "error");
				break;
			}
		}
		ctl_sanitize(e, 400, buf, size);
	}
	json_decref(rec);
	free(path);
}

/* Run the upload on our own loop. dry_run: state_dir is a scratch
 * directory, no ledger, no job state. */
static int import_here(struct ctl *c, const struct cfg_job *job, const char *file,
                       const char *state_dir, struct ledger *ledger, json_t *job_state,
                       struct import_run *ir)
{
	uv_loop_t loop;
	struct api_client *api = NULL;
	struct run *run = NULL;
	int r;

	uv_loop_init(&loop);
	r = api_client_new(&loop, &api);
	if (r < 0) {
		ctl_err("cannot initialise the HTTP client: %s", strerror(-r));
		uv_loop_close(&loop);
		return CTL_EXIT_FAILED;
	}
	struct run_env env = {
	    .loop = &loop,
	    .api = api,
	    .state_dir = state_dir,
	    .ledger = ledger,
	    .job_state = job_state,
	    .dry_run = c->dry_run,
	    .upload_path = file,
	    .progress = isatty(STDERR_FILENO) && !c->quiet,
	    .keep_runs = c->cfg->state.keep_runs,
	    .keep_runs_age_ms = c->cfg->state.keep_runs_age_ms,
	};
	r = run_start(job, &env, TRIGGER_UPLOAD, import_done, ir, &run);
	if (r < 0) {
		ctl_err("cannot start the import: %s", strerror(-r));
		api_client_close(api, api_closed, NULL);
		uv_run(&loop, UV_RUN_DEFAULT);
		uv_loop_close(&loop);
		return CTL_EXIT_FAILED;
	}
	/* run_start may have finished already (e.g. the apptoken is unreadable);
	 * its done callback then runs on the loop. */
	while (!ir->done && uv_run(&loop, UV_RUN_ONCE))
		;
	api_client_close(api, api_closed, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		ctl_err("internal error: handles left open after the import");
	if (!ir->done) {
		ctl_err("internal error: the import never finished");
		return CTL_EXIT_FAILED;
	}
	return CTL_EXIT_OK;
}

static int import_report(struct ctl *c, const char *job, const struct import_run *ir,
                         const char *error)
{
	if (c->json) {
		json_t *doc = json_pack("{ss ss ss ss sb}", "job", job, "run_id", ir->id, "outcome",
		                        outcome_name(ir->outcome), "summary", ir->summary,
		                        "dry_run", c->dry_run);
		json_object_set_new(doc, "error",
		                    error && *error ? json_string(error) : json_null());
		ctl_print_json(doc);
		json_decref(doc);
	} else {
		printf("%s: run %s %s\n", job, ir->id, ir->summary);
	}
	if (ir->outcome == RUN_SUCCEEDED)
		return CTL_EXIT_OK;
	if (c->dry_run)
		ctl_err("the dry run of %s failed%s%s", job, error && *error ? ": " : "",
		        error ? error : "");
	else
		ctl_err("the import %s %s%s%s; details: 'xpimportctl show %s'", ir->id,
		        outcome_name(ir->outcome), error && *error ? ": " : "", error ? error : "",
		        ir->id);
	return CTL_EXIT_FAILED;
}

/* A file the ledger already settled is skipped by the run layer without a
 * word; say so before starting. */
static int import_precheck(struct ctl *c, const struct cfg_job *job, const struct ledger *l,
                           const char *path, const struct stat *st)
{
	for (size_t i = 0; l && i < ledger_count(l); i++) {
		const struct ledger_file *f = ledger_at(l, i);
		if (strcmp(f->site, "upload") != 0 || strcmp(f->path, path) != 0 ||
		    f->size != (uint64_t)st->st_size || f->mtime != (int64_t)st->st_mtime)
			continue;
		if (f->state == LF_IMPORTED) {
			ctl_err(
			    "%s was already imported by run %s; 'xpimportctl forget %s %s' lets it "
			    "be imported again",
			    path, f->run_id, job->name, path);
			return CTL_EXIT_FAILED;
		}
		if (f->state == LF_FAILED) {
			ctl_err("%s failed in run %s (%s) and is not retried unchanged; fix the "
			        "file, or "
			        "'xpimportctl forget %s %s' to try it again as it is",
			        path, f->run_id, f->error ? f->error : "see the run", job->name,
			        path);
			return CTL_EXIT_FAILED;
		}
	}
	return CTL_EXIT_OK;
}

static int import_via_daemon(struct ctl *c, const struct cfg_job *job, const char *path, int fd)
{
	json_t *resp = NULL;
	json_t *req = json_pack("{ss ss ss sb}", "cmd", "import", "job", job->name, "path", path,
	                        "dry_run", 0);
	int r = ctl_locked_daemon_request(c, req, fd, -1, &resp);
	json_decref(req);
	if (r != 0)
		return r;
	if (!json_is_true(json_object_get(resp, "ok"))) {
		int ex = ctl_daemon_refused(resp);
		json_decref(resp);
		return ex;
	}
	struct import_run ir = {.done = true};
	const char *o = ctl_jstr(resp, "outcome");
	ir.outcome = strcmp(o, "succeeded") == 0 ? RUN_SUCCEEDED
	             : strcmp(o, "partial") == 0 ? RUN_PARTIAL
	                                         : RUN_FAILED;
	util_strlcpy(ir.id, ctl_jstr(resp, "run_id"), sizeof(ir.id));
	util_strlcpy(ir.summary, ctl_jstr(resp, "summary"), sizeof(ir.summary));
	char error[600];
	ctl_sanitize(ctl_jstr(resp, "error"), 400, error, sizeof(error));
	if (!*error && ir.outcome != RUN_SUCCEEDED)
		recorded_error(c, job->name, ir.id, error, sizeof(error));
	int ex = import_report(c, job->name, &ir, error);
	json_decref(resp);
	return ex;
}

static int import_dry_run(struct ctl *c, const struct cfg_job *job, const char *path)
{
	char scratch[] = "/tmp/xpimportctl-dry-run.XXXXXX";
	const char *tmp = getenv("TMPDIR");
	char dir[4096];
	struct import_run ir = {0};

	/* Staging goes to a scratch directory: a dry run leaves no trace in
	 * the state directory and needs no lock. */
	if (tmp && *tmp && strlen(tmp) < sizeof(dir) - 40)
		snprintf(dir, sizeof(dir), "%s/xpimportctl-dry-run.XXXXXX", tmp);
	else
		snprintf(dir, sizeof(dir), "%s", scratch);
	if (!mkdtemp(dir)) {
		ctl_err("cannot create a scratch directory %s: %s", dir, strerror(errno));
		return CTL_EXIT_FAILED;
	}
	int ex = state_init(dir) < 0 ? CTL_EXIT_FAILED : CTL_EXIT_OK;
	if (ex == CTL_EXIT_OK)
		ex = import_here(c, job, path, dir, NULL, NULL, &ir);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	if (ex != CTL_EXIT_OK)
		return ex;
	return import_report(c, job->name, &ir, ir.outcome == RUN_SUCCEEDED ? NULL : "see above");
}

int ctl_cmd_import(struct ctl *c)
{
	const struct cfg_job *job;
	char path[PATH_MAX];
	struct stat st;
	struct ledger *ledger = NULL;
	json_t *job_state = NULL;
	int ex, fd = -1, lock_fd = -1;

	if (!c->job) {
		ctl_err("import needs --job JOB: the job whose mapping and rules apply");
		return CTL_EXIT_USAGE;
	}
	ex = ctl_load_config(c);
	if (ex != CTL_EXIT_OK)
		return ex;
	job = ctl_find_job(c, c->job, &ex);
	if (!job)
		return ex;
	if (!realpath(c->argv[0], path)) {
		ctl_err("cannot import %s: %s", c->argv[0], strerror(errno));
		return errno == ENOENT ? CTL_EXIT_NOT_FOUND : CTL_EXIT_FAILED;
	}
	/* Opened now, as the caller: passed to the daemon, which may not be
	 * allowed to open the operator's file by name. */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ctl_err("cannot import %s: %s", path,
		        fd < 0 ? strerror(errno) : "not a regular file");
		if (fd >= 0)
			close(fd);
		return CTL_EXIT_FAILED;
	}
	if (c->dry_run) {
		close(fd);
		return import_dry_run(c, job, path);
	}
	ex = ctl_state_open(c, &lock_fd);
	if (ex != CTL_EXIT_OK)
		goto out;
	char lerr[600] = "";
	bool torn = false;
	int r = ledger_open(c->state_dir, job->name, &ledger, &torn, lerr, sizeof(lerr));
	if (r < 0) {
		ctl_err("%s", lerr[0] ? lerr : strerror(-r));
		ex = CTL_EXIT_FAILED;
		goto out;
	}
	ex = import_precheck(c, job, ledger, path, &st);
	if (ex != CTL_EXIT_OK)
		goto out;
	if (lock_fd < 0) {
		ledger_free(ledger);
		ledger = NULL;
		ex = import_via_daemon(c, job, path, fd);
		goto out;
	}
	job_state = ctl_read_job_state(c, job->name);
	if (!job_state) {
		ex = CTL_EXIT_FAILED;
		goto out;
	}
	const json_t *paused = json_object_get(job_state, "paused");
	if (paused) {
		ctl_err(
		    "job %s is paused since the API refused its apptoken (%s); fix the apptoken, "
		    "then 'xpimportctl resume %s'",
		    job->name, ctl_jstr(paused, "reason"), job->name);
		ex = CTL_EXIT_FAILED;
		goto out;
	}
	struct import_run ir = {0};
	ex = import_here(c, job, path, c->state_dir, ledger, job_state, &ir);
	if (ex == CTL_EXIT_OK) {
		char error[600] = "";
		if (ir.outcome != RUN_SUCCEEDED)
			recorded_error(c, job->name, ir.id, error, sizeof(error));
		ex = import_report(c, job->name, &ir, error);
	}
out:
	ledger_free(ledger);
	json_decref(job_state);
	state_unlock(lock_fd);
	if (fd >= 0)
		close(fd);
	return ex;
}

/* ---- create-profile --------------------------------------------------- */

struct profile_post {
	uv_loop_t *loop;
	struct api_client *api;
	const struct cfg_project *project;
	const char *apptoken;
	uv_timer_t timer;
	bool done;
	int64_t deadline_ms;
	/* results */
	enum api_outcome outcome;
	int http_status, attempts;
	char *task_id, *task_status, *message, *errors_json;
	bool task_finished;
	char error[256];
};

static void profile_poll(struct profile_post *pp);

static void profile_take(struct profile_post *pp, const struct api_result *res, bool task)
{
	if (!task) {
		pp->outcome = res->outcome;
		pp->http_status = res->http_status;
		pp->attempts = res->attempts;
		pp->task_id = res->task_id ? strdup(res->task_id) : NULL;
		pp->message = res->message ? strdup(res->message) : NULL;
		pp->errors_json = res->errors_json ? strdup(res->errors_json) : NULL;
		util_strlcpy(pp->error, res->error, sizeof(pp->error));
		return;
	}
	if (res->task_status) {
		free(pp->task_status);
		pp->task_status = strdup(res->task_status);
	}
	pp->task_finished = res->task_finished;
}

static void profile_timer_cb(uv_timer_t *t)
{
	profile_poll(t->data);
}

static void profile_task_done(void *ud, const struct api_result *res)
{
	struct profile_post *pp = ud;

	if (res->outcome == API_OK || res->outcome == API_ACCEPTED)
		profile_take(pp, res, true);
	if (pp->task_finished || res->outcome != API_OK || util_mono_ms() >= pp->deadline_ms) {
		pp->done = true;
		return;
	}
	uv_timer_start(&pp->timer, profile_timer_cb, CTL_TASK_POLL_MS, 0);
}

static void profile_poll(struct profile_post *pp)
{
	static const struct api_callbacks cbs = {.done = profile_task_done};
	struct api_request *req;

	if (api_task_info(pp->api, pp->project, pp->apptoken, pp->task_id, &cbs, pp, &req) < 0)
		pp->done = true;
}

static void profile_posted(void *ud, const struct api_result *res)
{
	struct profile_post *pp = ud;

	profile_take(pp, res, false);
	if (res->outcome == API_ACCEPTED && pp->task_id && pp->project->confirm_tasks) {
		int64_t wait = pp->project->task_timeout_ms;
		if (wait <= 0 || wait > CTL_TASK_WAIT_MAX_MS)
			wait = CTL_TASK_WAIT_MAX_MS;
		pp->deadline_ms = util_mono_ms() + wait;
		profile_poll(pp);
		return;
	}
	pp->done = true;
}

/* Post body; fills pp. 0 or negative errno (nothing sent). */
static int profile_send(struct profile_post *pp, const struct strbuf *body)
{
	static const struct api_callbacks cbs = {.done = profile_posted};
	uv_loop_t loop;
	struct api_request *req;
	int r;

	uv_loop_init(&loop);
	pp->loop = &loop;
	r = api_client_new(&loop, &pp->api);
	if (r < 0) {
		uv_loop_close(&loop);
		return r;
	}
	uv_timer_init(&loop, &pp->timer);
	pp->timer.data = pp;
	r = api_import_profile(pp->api, pp->project, pp->apptoken, body->data, body->len, &cbs, pp,
	                       &req);
	while (r == 0 && !pp->done && uv_run(&loop, UV_RUN_ONCE))
		;
	uv_timer_stop(&pp->timer);
	uv_close((uv_handle_t *)&pp->timer, NULL);
	api_client_close(pp->api, api_closed, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return r;
}

/* The manual run's record: the shape of every run record, one file entry. */
static json_t *profile_record(const char *id, const struct cfg_project *p, int64_t started,
                              const json_t *sent, const struct profile_post *pp, bool ok,
                              const char *error)
{
	char s[40], f[40];
	util_format_time(started, s, sizeof(s));
	util_format_time(util_now_ms(), f, sizeof(f));
	json_t *cols = json_array();
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)(uintptr_t)sent, k, v)
	    json_array_append_new(cols, json_string(k));
	json_t *batch = json_pack("{sI sI si si}", "index", (json_int_t)0, "rows", (json_int_t)1,
	                          "status", pp->http_status, "attempts", pp->attempts);
	if (pp->task_id)
		json_object_set_new(batch, "task_id", json_string(pp->task_id));
	if (pp->task_status)
		json_object_set_new(batch, "task_status", json_string(pp->task_status));
	if (pp->message)
		json_object_set_new(batch, "message", json_string(pp->message));
	if (pp->errors_json)
		json_object_set_new(batch, "errors", json_loads(pp->errors_json, 0, NULL));
	json_t *file = json_pack(
	    "{ss sn sI sI sn sI sI sI sI sI sI sI so s[] s[] sn ss so so}", "name",
	    "create-profile", "path", "size", (json_int_t)0, "mtime", (json_int_t)-1, "sha256",
	    "rows_read", (json_int_t)1, "rows_valid", (json_int_t)1, "rows_rejected", (json_int_t)0,
	    "rows_posted", (json_int_t)(ok ? 1 : 0), "duplicates", (json_int_t)0, "batches_total",
	    (json_int_t)1, "batches_resumed", (json_int_t)0, "columns", cols, "columns_ignored",
	    "first_rejects", "reject_report", "outcome", ok ? "imported" : "failed", "error",
	    error ? json_string(error) : json_null(), "batches", json_pack("[o]", batch));
	return json_pack("{ss ss ss ss sn sb ss ss ss so s{sI sI sI sI sI sI sI sI} s[] s[o]}",
	                 "run_id", id, "job", CTL_MANUAL_JOB, "trigger", "manual", "project",
	                 p->name, "site", "dry_run", 0, "started", s, "finished", f, "outcome",
	                 ok ? "succeeded" : "failed", "error",
	                 error ? json_string(error) : json_null(), "counts", "files", (json_int_t)1,
	                 "files_imported", (json_int_t)(ok ? 1 : 0), "files_failed",
	                 (json_int_t)(ok ? 0 : 1), "files_skipped", (json_int_t)0, "rows_read",
	                 (json_int_t)1, "rows_valid", (json_int_t)1, "rows_rejected", (json_int_t)0,
	                 "rows_posted", (json_int_t)(ok ? 1 : 0), "waiting", "files", file);
}

/* {"attr": value, ...} of the one row in a pipeline body. */
static json_t *body_values(const struct strbuf *body)
{
	json_t *doc = json_loadb(body->data, body->len, 0, NULL);
	json_t *cols = json_object_get(doc, "columns");
	json_t *row = json_array_get(json_object_get(doc, "rows"), 0);
	json_t *out = json_object();
	size_t i;
	json_t *col;

	json_array_foreach(cols, i, col)
	    json_object_set(out, json_string_value(col), json_array_get(row, i));
	json_decref(doc);
	return out;
}

static void print_value(const char *name, const json_t *v)
{
	char *s = json_is_string(v) ? strdup(json_string_value(v)) : json_dumps(v, JSON_ENCODE_ANY);
	char buf[800];
	ctl_sanitize(s ? s : "", 200, buf, sizeof(buf));
	printf("  %-22s %s\n", name, buf);
	free(s);
}

static int profile_outcome(const struct cfg_project *p, const struct profile_post *pp, char *error,
                           size_t size)
{
	switch (pp->outcome) {
	case API_OK:
	case API_ACCEPTED:
		if (pp->task_status && strcmp(pp->task_status, "failed") == 0) {
			snprintf(error, size, "the API's import task %s failed", pp->task_id);
			return -1;
		}
		return 0;
	case API_REJECTED:
		snprintf(error, size, "the API refused the profile (HTTP %d): %s%s%s",
		         pp->http_status, pp->message ? pp->message : "",
		         pp->errors_json ? " " : "", pp->errors_json ? pp->errors_json : "");
		return -1;
	case API_AUTH_FAILED:
		snprintf(error, size,
		         "the API refused the apptoken of project '%s' (HTTP %d); check %s",
		         p->name, pp->http_status, p->apptoken_file);
		return -1;
	case API_GAVE_UP:
		snprintf(error, size, "the API did not accept the profile after %d attempts: %s",
		         pp->attempts,
		         pp->error[0] ? pp->error : (pp->message ? pp->message : "server error"));
		return -1;
	case API_CANCELLED:
		snprintf(error, size, "cancelled");
		return -1;
	}
	return -1;
}

int ctl_cmd_create_profile(struct ctl *c)
{
	const char *attrs[CTL_MAX_ATTRS], *values[CTL_MAX_ATTRS];
	char *copies[CTL_MAX_ATTRS];
	size_t n = 0;
	struct strbuf body = {0};
	char err[600] = "", *token = NULL;
	size_t token_len = 0;
	json_t *sent = NULL;
	int ex, lock_unused = -1;

	if (!c->project) {
		ctl_err("create-profile needs --project NAME");
		return CTL_EXIT_USAGE;
	}
	if (c->argc > CTL_MAX_ATTRS) {
		ctl_err("at most %d attributes", CTL_MAX_ATTRS);
		return CTL_EXIT_USAGE;
	}
	for (int i = 0; i < c->argc; i++) {
		const char *eq = strchr(c->argv[i], '=');
		if (!eq || eq == c->argv[i]) {
			ctl_err("'%s' is not ATTR=VALUE (e.g. user_id=u123 email=a@example.com)",
			        c->argv[i]);
			for (size_t k = 0; k < n; k++)
				free(copies[k]);
			return CTL_EXIT_USAGE;
		}
		copies[n] = strndup(c->argv[i], (size_t)(eq - c->argv[i]));
		attrs[n] = copies[n];
		values[n] = eq + 1;
		n++;
	}
	ex = ctl_load_config(c);
	if (ex != CTL_EXIT_OK)
		goto out;
	const struct cfg_project *p = cfg_find_project(c->cfg, c->project);
	if (!p) {
		ctl_err("no project named '%s' in %s", c->project, c->config_path);
		ex = CTL_EXIT_NOT_FOUND;
		goto out;
	}
	int r = pipeline_single(p, c->country_code, attrs, values, n, &body, err, sizeof(err));
	if (r < 0) {
		ctl_err("%s", r == -EINVAL ? err : strerror(-r));
		ex = r == -EINVAL ? CTL_EXIT_FAILED : CTL_EXIT_FAILED;
		goto out;
	}
	sent = body_values(&body);
	/* the record goes to the state directory; no lock needed for a new file */
	ex = ctl_state_open(c, &lock_unused);
	state_unlock(lock_unused);
	if (ex != CTL_EXIT_OK)
		goto out;
	r = util_read_secret(p->apptoken_file, 4096, &token, &token_len);
	if (r < 0) {
		ctl_err("cannot read apptoken_file %s: %s", p->apptoken_file,
		        r == -EPERM ? "readable by group or others (chmod 600 it)" : strerror(-r));
		ex = CTL_EXIT_FAILED;
		goto out;
	}
	char id[32];
	int64_t started = util_now_ms();
	state_new_run_id(id);
	struct profile_post pp = {.project = p, .apptoken = token};
	r = profile_send(&pp, &body);
	util_free_secret(token, token_len);
	token = NULL;
	if (r < 0) {
		ctl_err("cannot post the profile: %s", strerror(-r));
		ex = CTL_EXIT_FAILED;
		goto out_pp;
	}
	char error[1200] = "";
	bool ok = profile_outcome(p, &pp, error, sizeof(error)) == 0;
	json_t *rec = profile_record(id, p, started, sent, &pp, ok, ok ? NULL : error);
	char *dir = state_path(c->state_dir, "runs/%s", CTL_MANUAL_JOB);
	char *path = state_path(c->state_dir, "runs/%s/%s.json", CTL_MANUAL_JOB, id);
	r = dir && path ? state_mkdir_p(dir, 0700) : -ENOMEM;
	if (r == 0)
		r = state_write_json(path, rec);
	if (r < 0)
		ctl_err("the profile was %s, but its record %s could not be written: %s",
		        ok ? "sent" : "refused", path ? path : "", strerror(-r));
	else
		state_prune_runs(c->state_dir, CTL_MANUAL_JOB, c->cfg->state.keep_runs,
		                 c->cfg->state.keep_runs_age_ms);
	free(dir);
	free(path);
	json_decref(rec);
	if (c->json) {
		json_t *doc = json_pack("{ss ss sO sb si}", "run_id", id, "project", p->name,
		                        "sent", sent, "ok", ok, "http_status", pp.http_status);
		json_object_set_new(doc, "task_id",
		                    pp.task_id ? json_string(pp.task_id) : json_null());
		json_object_set_new(doc, "task_status",
		                    pp.task_status ? json_string(pp.task_status) : json_null());
		json_object_set_new(doc, "message",
		                    pp.message ? json_string(pp.message) : json_null());
		json_object_set_new(doc, "error", ok ? json_null() : json_string(error));
		ctl_print_json(doc);
		json_decref(doc);
	} else {
		const char *k;
		json_t *v;
		printf("sent to project %s:\n", p->name);
		json_object_foreach(sent, k, v) print_value(k, v);
		if (ok) {
			printf("the API accepted it (HTTP %d", pp.http_status);
			if (pp.task_id)
				printf(", task %s%s%s", pp.task_id, pp.task_status ? ": " : "",
				       pp.task_status ? pp.task_status : "");
			printf(")%s%s\n", pp.message ? ": " : "", pp.message ? pp.message : "");
		}
		printf("recorded as run %s ('xpimportctl show %s')\n", id, id);
	}
	if (!ok)
		ctl_err("%s", error);
	ex = ok ? CTL_EXIT_OK : CTL_EXIT_FAILED;
out_pp:
	free(pp.task_id);
	free(pp.task_status);
	free(pp.message);
	free(pp.errors_json);
out:
	util_free_secret(token, token_len);
	json_decref(sent);
	strbuf_free(&body);
	for (size_t k = 0; k < n; k++)
		free(copies[k]);
	return ex;
}
