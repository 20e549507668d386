/* ctl_status.c — xpimportctl status, history and show: reading the state
 * directory (job states, run records, reject reports), never writing it. */
#include "ctl_common.h"

#include <csv.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "state.h"
#include "util.h"

#define CTL_REJECT_ROWS 10             /* first rejected rows shown by show */
#define CTL_REJECT_VALUE_CHARS 40      /* value shown in the table */
#define CTL_REJECT_JSON_CHARS 200      /* value in --json */
#define CTL_REJECT_READ_MAX (4u << 20) /* bytes of a reject report read for them */
#define CTL_MAX_RUN_FILES 100000       /* run records listed per job directory */

/* ---- status ------------------------------------------------------------- */

static json_t *schedule_json(const struct cfg_job *job)
{
	char every[32];

	if (job->schedule.cron)
		return json_pack("{sn ss ss}", "every", "cron", job->schedule.cron, "timezone",
		                 job->schedule.timezone ? job->schedule.timezone : "UTC");
	ctl_format_duration(job->schedule.every_ms, every, sizeof(every));
	return json_pack("{ss sn ss}", "every", every, "cron", "timezone",
	                 job->schedule.timezone ? job->schedule.timezone : "UTC");
}

/* The job's status document (the --json element; the table is made from it). */
static json_t *job_status(struct ctl *c, const struct cfg_job *job, const json_t *djobs)
{
	json_t *state = ctl_read_job_state(c, job->name);
	json_t *djob = json_object_get(djobs, job->name);
	json_t *out = json_pack("{ss sb ss ss* so}", "name", job->name, "enabled", job->enabled,
	                        "project", job->project_name, "site", job->source.site_name,
	                        "schedule", schedule_json(job));
	if (!out) {
		json_decref(state);
		return NULL;
	}
	json_t *next = json_object_get(djob, "next_due");
	json_object_set_new(out, "next_run", json_is_string(next) ? json_copy(next) : json_null());
	json_t *running = json_object_get(djob, "running");
	json_object_set_new(out, "running",
	                    json_is_string(running) ? json_copy(running) : json_null());
	json_t *last = json_object_get(state, "last_run");
	json_object_set_new(out, "last_run",
	                    json_is_object(last) ? json_deep_copy(last) : json_null());
	json_t *waiting = json_object_get(state, "waiting");
	json_object_set_new(out, "waiting",
	                    json_is_array(waiting) ? json_deep_copy(waiting) : json_array());
	json_t *paused = json_object_get(state, "paused");
	if (json_is_object(paused)) {
		char since[40] = "";
		json_t *p = json_deep_copy(paused);
		json_t *s = json_object_get(paused, "since");
		if (json_is_integer(s)) {
			util_format_time(json_integer_value(s), since, sizeof(since));
			json_object_set_new(p, "since", json_string(since));
		}
		json_object_set_new(out, "paused", p);
	} else {
		json_object_set_new(out, "paused", json_null());
	}
	if (!state)
		json_object_set_new(out, "state_error", json_string("job state unreadable"));
	json_decref(state);
	return out;
}

static void print_status(const json_t *doc)
{
	const json_t *d = json_object_get(doc, "daemon");
	const json_t *jobs = json_object_get(doc, "jobs");
	struct ctl_table t;
	size_t i;
	json_t *j;

	if (json_is_true(json_object_get(d, "running")))
		printf("daemon: running (pid %" PRId64 ", %s)\n", ctl_jint(d, "pid"),
		       ctl_jstr(d, "socket"));
	else
		printf("daemon: %s\n", ctl_jstr(d, "error"));
	if (json_array_size(jobs) == 0) {
		printf("no jobs configured\n");
		return;
	}
	printf("\n");
	ctl_table_init(&t, 8);
	ctl_table_add(&t, "JOB", "ENABLED", "SCHEDULE", "NEXT RUN", "LAST RUN", "OUTCOME",
	              "WAITING", "PAUSED");
	json_array_foreach(jobs, i, j)
	{
		char sched[200], waiting[16], next[80];
		const json_t *s = json_object_get(j, "schedule");
		const json_t *last = json_object_get(j, "last_run");
		if (json_is_string(json_object_get(s, "cron")))
			snprintf(sched, sizeof(sched), "cron '%s' %s", ctl_jstr(s, "cron"),
			         ctl_jstr(s, "timezone"));
		else
			snprintf(sched, sizeof(sched), "every %s", ctl_jstr(s, "every"));
		snprintf(waiting, sizeof(waiting), "%zu",
		         json_array_size(json_object_get(j, "waiting")));
		if (json_is_string(json_object_get(j, "running")))
			snprintf(next, sizeof(next), "running now");
		else
			snprintf(next, sizeof(next), "%s", ctl_jstr(j, "next_run"));
		ctl_table_add(&t, ctl_jstr(j, "name"),
		              json_is_true(json_object_get(j, "enabled")) ? "yes" : "no", sched,
		              next, ctl_jstr(last, "finished"), ctl_jstr(last, "outcome"), waiting,
		              json_is_object(json_object_get(j, "paused")) ? "yes" : "no");
	}
	ctl_table_print(&t, stdout, NULL);
	ctl_table_free(&t);

	/* The why of each line: waiting files, pauses, failures. */
	bool header = false;
	json_array_foreach(jobs, i, j)
	{
		const char *name = ctl_jstr(j, "name");
		const json_t *last = json_object_get(j, "last_run");
		const json_t *paused = json_object_get(j, "paused");
		size_t k;
		json_t *w;
		char buf[600];
		if (!header &&
		    (json_array_size(json_object_get(j, "waiting")) || json_is_object(paused) ||
		     *ctl_jstr(last, "error") || json_is_string(json_object_get(j, "running")))) {
			printf("\n");
			header = true;
		}
		if (json_is_string(json_object_get(j, "running")))
			printf("%s: run %s in progress\n", name, ctl_jstr(j, "running"));
		if (json_is_object(paused))
			printf("%s: paused since %s: %s (HTTP %" PRId64 "); fix the apptoken, then "
			       "'xpimportctl resume %s'\n",
			       name, ctl_jstr(paused, "since"), ctl_jstr(paused, "reason"),
			       ctl_jint(paused, "http_status"), name);
		if (*ctl_jstr(last, "error")) {
			ctl_sanitize(ctl_jstr(last, "error"), 300, buf, sizeof(buf));
			printf("%s: last run %s %s: %s; see 'xpimportctl show %s'\n", name,
			       ctl_jstr(last, "run_id"), ctl_jstr(last, "outcome"), buf,
			       ctl_jstr(last, "run_id"));
		}
		json_array_foreach(json_object_get(j, "waiting"), k, w)
		{
			ctl_sanitize(ctl_jstr(w, "reason"), 200, buf, sizeof(buf));
			printf("%s: waiting: %s: %s\n", name, ctl_jstr(w, "path"), buf);
		}
	}
}

int ctl_cmd_status(struct ctl *c)
{
	int ex = ctl_load_config(c);
	json_t *resp = NULL, *jobs;
	char err[512] = "";

	if (ex != CTL_EXIT_OK)
		return ex;
	json_t *req = json_pack("{ss}", "cmd", "status");
	int r = ctl_daemon_request(c, req, -1, CTL_STATUS_TIMEOUT_MS, &resp, err, sizeof(err));
	json_decref(req);
	json_t *daemon = json_pack("{sb ss}", "running", 0, "socket", c->socket_path);
	if (r == 0 && json_is_true(json_object_get(resp, "ok"))) {
		json_object_set_new(daemon, "running", json_true());
		json_object_set(daemon, "pid", json_object_get(resp, "pid"));
		json_object_set_new(daemon, "error", json_null());
	} else {
		char msg[600];
		if (r == -ENOENT || r == -ECONNREFUSED)
			snprintf(msg, sizeof(msg), "not running (%s)", err);
		else if (r < 0)
			snprintf(msg, sizeof(msg), "unknown (%s)", err);
		else
			snprintf(msg, sizeof(msg), "unknown (%s)", ctl_jstr(resp, "error"));
		json_object_set_new(daemon, "pid", json_null());
		json_object_set_new(daemon, "error", json_string(msg));
	}
	json_t *djobs = json_object_get(resp, "jobs");
	json_t *doc = json_pack("{so s[]}", "daemon", daemon, "jobs");
	jobs = json_object_get(doc, "jobs");
	for (size_t i = 0; i < c->cfg->n_jobs; i++) {
		json_t *js = job_status(c, &c->cfg->jobs[i], djobs);
		if (js)
			json_array_append_new(jobs, js);
	}
	if (c->json)
		ctl_print_json(doc);
	else
		print_status(doc);
	json_decref(doc);
	json_decref(resp);
	return CTL_EXIT_OK;
}

/* ---- run records ----------------------------------------------------------- */

struct run_ref {
	char job[256];
	char id[32];
};

static int cmp_run_desc(const void *a, const void *b)
{
	const struct run_ref *x = a, *y = b;
	int r = strcmp(y->id, x->id);
	return r ? r : strcmp(x->job, y->job);
}

/* Collect run ids of one job directory into *refs. */
static int list_job_runs(const char *dir, const char *job, struct run_ref **refs, size_t *n,
                         size_t *cap)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t here = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d)) && here < CTL_MAX_RUN_FILES) {
		size_t len = strlen(e->d_name);
		if (e->d_name[0] == '.' || len < 6 || len - 5 >= sizeof((*refs)->id) ||
		    strcmp(e->d_name + len - 5, ".json") != 0)
			continue;
		if (*n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 64;
			struct run_ref *g = realloc(*refs, ncap * sizeof(*g));
			if (!g) {
				closedir(d);
				return -ENOMEM;
			}
			*refs = g;
			*cap = ncap;
		}
		util_strlcpy((*refs)[*n].job, job, sizeof((*refs)[*n].job));
		memcpy((*refs)[*n].id, e->d_name, len - 5);
		(*refs)[*n].id[len - 5] = '\0';
		(*n)++;
		here++;
	}
	closedir(d);
	return 0;
}

static json_t *read_run(const struct ctl *c, const char *job, const char *id, char *err,
                        size_t errlen)
{
	char *path = state_path(c->state_dir, "runs/%s/%s.json", job, id);
	json_t *doc = NULL;

	if (!path)
		return NULL;
	int r = state_read_json_err(path, &doc, err, errlen);
	if (r < 0 && r != -EBADMSG)
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
	free(path);
	if (r == 0 && !json_is_object(doc)) {
		json_decref(doc);
		snprintf(err, errlen, "run record %s/%s is not a JSON object", job, id);
		return NULL;
	}
	return r == 0 ? doc : NULL;
}

int ctl_cmd_history(struct ctl *c)
{
	const char *job = c->argc > 0 ? c->argv[0] : NULL;
	struct run_ref *refs = NULL;
	size_t n = 0, cap = 0;
	int r, ex = CTL_EXIT_OK;

	if (job && !ctl_valid_name(job)) {
		ctl_err("'%s' is not a job name", job);
		return CTL_EXIT_USAGE;
	}
	char *runs = state_path(c->state_dir, "runs");
	if (!runs)
		return CTL_EXIT_FAILED;
	if (job) {
		char *dir = state_path(c->state_dir, "runs/%s", job);
		r = dir ? list_job_runs(dir, job, &refs, &n, &cap) : -ENOMEM;
		free(dir);
		if (r == -ENOENT) {
			/* A configured job that never ran has an empty history. */
			struct cfg_errors errs = {0};
			struct cfg *cfg = NULL;
			bool known = strcmp(job, CTL_MANUAL_JOB) == 0 ||
			             (config_load(c->config_path, &cfg, &errs) == 0 &&
			              cfg_find_job(cfg, job));
			cfg_errors_free(&errs);
			cfg_free(cfg);
			if (!known) {
				ctl_err("no job named '%s' (not in %s and no runs in %s)", job,
				        c->config_path, runs);
				free(runs);
				return CTL_EXIT_NOT_FOUND;
			}
			r = 0;
		}
	} else {
		DIR *d = opendir(runs);
		struct dirent *e;
		r = d ? 0 : -errno;
		while (d && (e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			char *dir = state_path(c->state_dir, "runs/%s", e->d_name);
			int rr = dir ? list_job_runs(dir, e->d_name, &refs, &n, &cap) : -ENOMEM;
			free(dir);
			if (rr < 0 && rr != -ENOTDIR) {
				r = rr;
				break;
			}
		}
		if (d)
			closedir(d);
		if (r == -ENOENT)
			r = 0; /* nothing ran yet */
	}
	if (r < 0) {
		ex = ctl_state_error(c, r, "cannot list the runs");
		free(runs);
		free(refs);
		return ex;
	}
	free(runs);
	if (n > 1)
		qsort(refs, n, sizeof(*refs), cmp_run_desc);
	if (n > c->limit)
		n = c->limit;

	json_t *out = json_array();
	for (size_t i = 0; i < n; i++) {
		char err[600] = "";
		json_t *rec = read_run(c, refs[i].job, refs[i].id, err, sizeof(err));
		if (!rec) {
			ctl_err("skipping an unreadable run record: %s", err);
			continue;
		}
		json_t *row = json_object();
		static const char *const keys[] = {"run_id",  "job",     "trigger", "project",
		                                   "site",    "dry_run", "started", "finished",
		                                   "outcome", "error",   "counts"};
		for (size_t k = 0; k < XP_ARRAY_SIZE(keys); k++) {
			json_t *v = json_object_get(rec, keys[k]);
			json_object_set_new(row, keys[k], v ? json_deep_copy(v) : json_null());
		}
		json_array_append_new(out, row);
		json_decref(rec);
	}
	free(refs);
	if (c->json) {
		json_t *doc = json_pack("{so}", "runs", out);
		ctl_print_json(doc);
		json_decref(doc);
		return CTL_EXIT_OK;
	}
	if (json_array_size(out) == 0) {
		printf(job ? "no runs of %s yet\n" : "no runs yet\n", job);
		json_decref(out);
		return CTL_EXIT_OK;
	}
	struct ctl_table t;
	size_t i;
	json_t *row;
	ctl_table_init(&t, 8);
	ctl_table_add(&t, "RUN ID", "JOB", "TRIGGER", "STARTED", "OUTCOME", "FILES", "ROWS POSTED",
	              "REJECTED");
	json_array_foreach(out, i, row)
	{
		const json_t *k = json_object_get(row, "counts");
		char files[64], posted[32], rejected[32];
		snprintf(files, sizeof(files), "%" PRId64 "/%" PRId64,
		         ctl_jint(k, "files_imported"), ctl_jint(k, "files"));
		snprintf(posted, sizeof(posted), "%" PRId64, ctl_jint(k, "rows_posted"));
		snprintf(rejected, sizeof(rejected), "%" PRId64, ctl_jint(k, "rows_rejected"));
		ctl_table_add(&t, ctl_jstr(row, "run_id"), ctl_jstr(row, "job"),
		              ctl_jstr(row, "trigger"), ctl_jstr(row, "started"),
		              ctl_jstr(row, "outcome"), files, posted, rejected);
	}
	ctl_table_print(&t, stdout, NULL);
	ctl_table_free(&t);
	json_decref(out);
	return CTL_EXIT_OK;
}

/* ---- show: the reject report's first rows -------------------------------- */

struct reject_reader {
	size_t col; /* field index in the current row */
	size_t row; /* rows completed, header included */
	int idx[4]; /* field index of line, column, rule, value */
	char *cur[4];
	json_t *rows;
	size_t max_chars;
	bool done;
};

static const char *const reject_cols[4] = {"line", "column", "rule", "value"};

static void rr_field(void *s, size_t len, void *data)
{
	struct reject_reader *rr = data;
	const char *text = s ? s : "";

	if (rr->done)
		return;
	if (rr->row == 0) {
		for (int k = 0; k < 4; k++)
			if (strcmp(text, reject_cols[k]) == 0)
				rr->idx[k] = (int)rr->col;
	} else {
		for (int k = 0; k < 4; k++)
			if (rr->idx[k] == (int)rr->col) {
				free(rr->cur[k]);
				rr->cur[k] = strndup(text, len);
			}
	}
	rr->col++;
}

static void rr_row(int ch, void *data)
{
	struct reject_reader *rr = data;
	char value[4 * CTL_REJECT_JSON_CHARS + 8];
	uint64_t line = 0;

	if (rr->done)
		return;
	if (rr->row > 0) {
		ctl_sanitize(rr->cur[3] ? rr->cur[3] : "", rr->max_chars, value, sizeof(value));
		util_parse_uint(rr->cur[0] ? rr->cur[0] : "", 0, UINT64_MAX, &line);
		json_array_append_new(rr->rows,
		                      json_pack("{sI ss ss ss}", "line", (json_int_t)line, "column",
		                                rr->cur[1] ? rr->cur[1] : "", "rule",
		                                rr->cur[2] ? rr->cur[2] : "", "value", value));
		if (json_array_size(rr->rows) >= CTL_REJECT_ROWS)
			rr->done = true;
	}
	for (int k = 0; k < 4; k++) {
		free(rr->cur[k]);
		rr->cur[k] = NULL;
	}
	rr->col = 0;
	rr->row++;
}

/* The first rejected rows of a report: a JSON array, or NULL with err. */
static json_t *read_rejects(const char *path, size_t max_chars, char *err, size_t errlen)
{
	struct reject_reader rr = {.idx = {0, 1, 2, 3}, .max_chars = max_chars};
	struct csv_parser p;
	char buf[65536];
	size_t total = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0) {
		snprintf(err, errlen, "cannot read the reject report: %s%s", strerror(errno),
		         errno == EACCES ? " (run as root)" : "");
		return NULL;
	}
	if (csv_init(&p, CSV_APPEND_NULL) != 0) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rr.rows = json_array();
	while (!rr.done && total < CTL_REJECT_READ_MAX) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		total += (size_t)n;
		if (csv_parse(&p, buf, (size_t)n, rr_field, rr_row, &rr) != (size_t)n)
			break;
	}
	if (!rr.done)
		csv_fini(&p, rr_field, rr_row, &rr);
	csv_free(&p);
	close(fd);
	for (int k = 0; k < 4; k++)
		free(rr.cur[k]);
	return rr.rows;
}

/* ---- show ------------------------------------------------------------------ */

/* Find runs/JOB/RUN_ID.json; the job name into job. 0, -ENOENT, other. */
static int find_run(const struct ctl *c, const char *id, char *job, size_t joblen)
{
	char *runs = state_path(c->state_dir, "runs");
	DIR *d = runs ? opendir(runs) : NULL;
	struct dirent *e;
	int r = d ? -ENOENT : (runs ? -errno : -ENOMEM);

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char *path = state_path(c->state_dir, "runs/%s/%s.json", e->d_name, id);
		if (path && access(path, F_OK) == 0) {
			util_strlcpy(job, e->d_name, joblen);
			r = 0;
			free(path);
			break;
		}
		free(path);
	}
	if (d)
		closedir(d);
	free(runs);
	return r;
}

static void print_counts(const json_t *k)
{
	printf("files     %" PRId64 " (%" PRId64 " imported, %" PRId64 " failed, %" PRId64
	       " skipped)\n",
	       ctl_jint(k, "files"), ctl_jint(k, "files_imported"), ctl_jint(k, "files_failed"),
	       ctl_jint(k, "files_skipped"));
	printf("rows      %" PRId64 " read, %" PRId64 " valid, %" PRId64 " rejected, %" PRId64
	       " posted\n",
	       ctl_jint(k, "rows_read"), ctl_jint(k, "rows_valid"), ctl_jint(k, "rows_rejected"),
	       ctl_jint(k, "rows_posted"));
}

static void print_strv(const char *label, const json_t *arr)
{
	size_t i;
	json_t *v;

	printf("  %s", label);
	if (json_array_size(arr) == 0)
		printf(" (none)");
	json_array_foreach(arr, i, v) printf("%s%s", i ? ", " : " ", json_string_value(v));
	printf("\n");
}

static void print_batches(const json_t *batches)
{
	struct ctl_table t;
	size_t i;
	json_t *b;

	if (json_array_size(batches) == 0)
		return;
	ctl_table_init(&t, 7);
	ctl_table_add(&t, "BATCH", "ROWS", "HTTP", "ATTEMPTS", "TASK", "TASK STATUS", "MESSAGE");
	json_array_foreach(batches, i, b)
	{
		char idx[24], rows[24], st[24], att[24], msg[400] = "";
		snprintf(idx, sizeof(idx), "%" PRId64, ctl_jint(b, "index") + 1);
		snprintf(rows, sizeof(rows), "%" PRId64, ctl_jint(b, "rows"));
		snprintf(st, sizeof(st), "%" PRId64, ctl_jint(b, "status"));
		snprintf(att, sizeof(att), "%" PRId64, ctl_jint(b, "attempts"));
		const json_t *errs = json_object_get(b, "errors");
		char *ej = errs && !json_is_null(errs) ? json_dumps(errs, JSON_COMPACT) : NULL;
		char joined[1200];
		snprintf(joined, sizeof(joined), "%s%s%s", ctl_jstr(b, "message"),
		         ej && *ctl_jstr(b, "message") ? " " : "", ej ? ej : "");
		ctl_sanitize(joined, 120, msg, sizeof(msg));
		free(ej);
		ctl_table_add(&t, idx, rows, st, att, ctl_jstr(b, "task_id"),
		              ctl_jstr(b, "task_status"), msg);
	}
	ctl_table_print(&t, stdout, "    ");
	ctl_table_free(&t);
}

static void print_rejects(const json_t *rows)
{
	struct ctl_table t;
	size_t i;
	json_t *r;

	ctl_table_init(&t, 4);
	ctl_table_add(&t, "LINE", "COLUMN", "RULE", "VALUE");
	json_array_foreach(rows, i, r)
	{
		char line[24], value[4 * CTL_REJECT_VALUE_CHARS + 8], col[200];
		snprintf(line, sizeof(line), "%" PRId64, ctl_jint(r, "line"));
		ctl_sanitize(ctl_jstr(r, "value"), CTL_REJECT_VALUE_CHARS, value, sizeof(value));
		ctl_sanitize(ctl_jstr(r, "column"), 40, col, sizeof(col));
		ctl_table_add(&t, line, col, ctl_jstr(r, "rule"), value);
	}
	ctl_table_print(&t, stdout, "    ");
	ctl_table_free(&t);
}

static void print_run(const json_t *rec)
{
	size_t i;
	json_t *f;
	char buf[1200];

	printf("run       %s\n", ctl_jstr(rec, "run_id"));
	printf("job       %s (project %s, site %s)\n", ctl_jstr(rec, "job"),
	       ctl_jstr(rec, "project"), *ctl_jstr(rec, "site") ? ctl_jstr(rec, "site") : "-");
	printf("trigger   %s%s\n", ctl_jstr(rec, "trigger"),
	       json_is_true(json_object_get(rec, "dry_run")) ? " (dry run)" : "");
	printf("started   %s\n", ctl_jstr(rec, "started"));
	printf("finished  %s\n", *ctl_jstr(rec, "finished") ? ctl_jstr(rec, "finished") : "-");
	printf("outcome   %s\n", ctl_jstr(rec, "outcome"));
	if (*ctl_jstr(rec, "error")) {
		ctl_sanitize(ctl_jstr(rec, "error"), 600, buf, sizeof(buf));
		printf("error     %s\n", buf);
	}
	print_counts(json_object_get(rec, "counts"));
	json_array_foreach(json_object_get(rec, "waiting"), i, f)
	{
		ctl_sanitize(ctl_jstr(f, "reason"), 200, buf, sizeof(buf));
		printf("waiting   %s: %s\n", ctl_jstr(f, "path"), buf);
	}
	json_array_foreach(json_object_get(rec, "files"), i, f)
	{
		printf("\nfile %zu: %s\n", i + 1, ctl_jstr(f, "name"));
		if (*ctl_jstr(f, "path")) {
			char mtime[40] = "-";
			if (ctl_jint(f, "mtime") >= 0)
				util_format_time(ctl_jint(f, "mtime") * 1000, mtime, sizeof(mtime));
			printf("  path %s, %" PRId64 " bytes, modified %s\n", ctl_jstr(f, "path"),
			       ctl_jint(f, "size"), mtime);
		}
		if (*ctl_jstr(f, "sha256"))
			printf("  sha256 %s\n", ctl_jstr(f, "sha256"));
		printf("  outcome %s\n", ctl_jstr(f, "outcome"));
		if (*ctl_jstr(f, "error")) {
			ctl_sanitize(ctl_jstr(f, "error"), 600, buf, sizeof(buf));
			printf("  error %s\n", buf);
		}
		printf("  rows %" PRId64 " read, %" PRId64 " valid, %" PRId64 " rejected, %" PRId64
		       " posted, %" PRId64 " duplicate user_ids\n",
		       ctl_jint(f, "rows_read"), ctl_jint(f, "rows_valid"),
		       ctl_jint(f, "rows_rejected"), ctl_jint(f, "rows_posted"),
		       ctl_jint(f, "duplicates"));
		print_strv("columns sent:", json_object_get(f, "columns"));
		print_strv("columns not imported:", json_object_get(f, "columns_ignored"));
		printf("  batches %" PRId64 " (%" PRId64 " accepted before this run)\n",
		       ctl_jint(f, "batches_total"), ctl_jint(f, "batches_resumed"));
		print_batches(json_object_get(f, "batches"));
		const json_t *rows = json_object_get(f, "rejected_rows");
		if (*ctl_jstr(f, "reject_report")) {
			printf("  reject report %s\n", ctl_jstr(f, "reject_report"));
			if (json_is_array(rows) && json_array_size(rows)) {
				printf("  first rejected rows:\n");
				print_rejects(rows);
			} else if (*ctl_jstr(f, "rejected_rows_error")) {
				printf("  (%s)\n", ctl_jstr(f, "rejected_rows_error"));
			}
		} else if (json_array_size(json_object_get(f, "first_rejects"))) {
			/* No report (dry run, or it was removed): line, column, rule only. */
			size_t k;
			json_t *rj;
			printf("  first rejected rows:\n");
			json_array_foreach(json_object_get(f, "first_rejects"), k, rj)
			    printf("    line %" PRId64 ": %s (%s)\n", ctl_jint(rj, "line"),
			           ctl_jstr(rj, "column"), ctl_jstr(rj, "rule"));
		}
	}
}

int ctl_cmd_show(struct ctl *c)
{
	const char *id = c->argv[0];
	char job[256], err[600] = "";

	if (!ctl_valid_run_id(id)) {
		ctl_err(
		    "'%s' is not a run id (like 20261203T182000Z-3fa9c1); 'xpimportctl history' "
		    "lists them",
		    id);
		return CTL_EXIT_USAGE;
	}
	int r = find_run(c, id, job, sizeof(job));
	if (r == -ENOENT) {
		ctl_err("no run %s in %s/runs; 'xpimportctl history' lists the runs", id,
		        c->state_dir);
		return CTL_EXIT_NOT_FOUND;
	} else if (r < 0) {
		return ctl_state_error(c, r, "cannot look for the run");
	}
	json_t *rec = read_run(c, job, id, err, sizeof(err));
	if (!rec) {
		ctl_err("cannot read run %s: %s", id, err);
		return CTL_EXIT_FAILED;
	}
	size_t i;
	json_t *f;
	json_array_foreach(json_object_get(rec, "files"), i, f)
	{
		const char *report = ctl_jstr(f, "reject_report");
		if (!*report)
			continue;
		json_t *rows = read_rejects(
		    report, c->json ? CTL_REJECT_JSON_CHARS : 4 * CTL_REJECT_VALUE_CHARS, err,
		    sizeof(err));
		json_object_set_new(f, "rejected_rows", rows ? rows : json_null());
		if (!rows)
			json_object_set_new(f, "rejected_rows_error", json_string(err));
	}
	if (c->json)
		ctl_print_json(rec);
	else
		print_run(rec);
	json_decref(rec);
	return CTL_EXIT_OK;
}
