/* daemon.c — the job/daemon layer on one libuv loop. */
#include "daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <jansson.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include "api.h"
#include "config.h"
#include "control.h"
#include "ledger.h"
#include "log.h"
#include "run.h"
#include "schedule.h"
#include "sftp.h"
#include "state.h"
#include "util.h"

struct daemon;

/* Configurations stay alive while a run started under them is active. */
struct cfg_ref {
	struct cfg *cfg;
	int users;
	struct cfg_ref *next;
};

struct job_rt {
	struct daemon *d;
	const struct cfg_job *job;
	struct cfg_ref *cref;
	struct ledger *ledger;
	json_t *state;            /* STATE/jobs/JOB.json */
	struct run *run;
	uv_timer_t timer;
	bool timer_open;
	bool queued;              /* waiting for a max_parallel_jobs slot */
	bool retired;             /* removed or replaced by a reload */
	int64_t next_due_ms;      /* realtime */
	struct cron_expr cron;
	bool has_cron;
	struct control_waiter *waiters; /* xpimportctl run --wait: answered in run_done */
	struct run *upload;       /* xpimportctl import handed to us */
	struct control_reply *upload_reply;
	char *upload_path;
	int upload_fd;            /* the operator's file, passed over the socket */
	struct job_rt *next;
};

struct control_waiter {
	struct control_reply *reply;
	struct control_waiter *next;
};

struct daemon {
	uv_loop_t loop;
	const struct daemon_opts *opts;
	char *state_dir;
	int lock_fd;
	struct cfg_ref *crefs;
	struct cfg_ref *current;
	struct api_client *api;
	struct job_rt *jobs;
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t watchdog;
	bool watchdog_on;
	int running;
	int runs_failed;
	int runs_total;
	bool stopping;
	bool notify;
	bool sftp_ready;          /* sftp_global_init() done */
	struct control_server *ctl;
};

static void maybe_start_queued(struct daemon *d);
static void schedule_job(struct job_rt *jr, bool at_start);
static void daemon_shutdown(struct daemon *d);

/* ---- sd_notify ---------------------------------------------------------- */

static void notify_status(struct daemon *d)
{
	size_t n = 0, failing = 0, paused = 0;
	int64_t next = 0;
	char nexts[40] = "none";

	if (!d->notify)
		return;
	for (struct job_rt *jr = d->jobs; jr; jr = jr->next) {
		if (jr->retired)
			continue;
		n++;
		const char *o = json_string_value(json_object_get(json_object_get(jr->state, "last_run"), "outcome"));
		if (o && strcmp(o, "succeeded") != 0)
			failing++;
		if (json_object_get(jr->state, "paused"))
			paused++;
		if (jr->next_due_ms && (!next || jr->next_due_ms < next))
			next = jr->next_due_ms;
	}
	if (next)
		util_format_time(next, nexts, sizeof(nexts));
	sd_notifyf(0, "STATUS=%zu jobs, %d running, %zu failing, %zu paused; next run %s", n,
		   d->running, failing, paused, nexts);
}

static void watchdog_cb(uv_timer_t *t)
{
	/* Sent from the loop itself: if the loop stalls, the pings stop. */
	sd_notify(0, "WATCHDOG=1");
}

/* ---- config refs ---------------------------------------------------------- */

static struct cfg_ref *cref_add(struct daemon *d, struct cfg *cfg)
{
	struct cfg_ref *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->cfg = cfg;
	c->next = d->crefs;
	d->crefs = c;
	return c;
}

static void cref_gc(struct daemon *d)
{
	struct cfg_ref **pp = &d->crefs;
	while (*pp) {
		struct cfg_ref *c = *pp;
		if (c != d->current && c->users == 0) {
			*pp = c->next;
			cfg_free(c->cfg);
			free(c);
		} else {
			pp = &c->next;
		}
	}
}

/* ---- jobs ----------------------------------------------------------------- */

static void job_timer_closed(uv_handle_t *h)
{
	struct job_rt *jr = h->data;
	ledger_free(jr->ledger);
	json_decref(jr->state);
	free(jr);
}

static void job_rt_free(struct job_rt *jr)
{
	if (jr->timer_open) {
		jr->timer_open = false;
		uv_close((uv_handle_t *)&jr->timer, job_timer_closed);
	} else {
		job_timer_closed((uv_handle_t *)&jr->timer);
	}
}

static void unlink_job(struct daemon *d, struct job_rt *jr)
{
	for (struct job_rt **pp = &d->jobs; *pp; pp = &(*pp)->next) {
		if (*pp == jr) {
			*pp = jr->next;
			return;
		}
	}
}


/* ---- control socket (xpimportctl) ------------------------------------------ */

static const char *outcome_str(enum run_outcome o)
{
	return o == RUN_SUCCEEDED ? "succeeded" : o == RUN_PARTIAL ? "partial" : "failed";
}

static json_t *run_answer(struct job_rt *jr, struct run *run, enum run_outcome outcome)
{
	const char *err = json_string_value(
		json_object_get(json_object_get(jr->state, "last_run"), "error"));
	return json_pack("{sb ss ss ss ss?}", "ok", 1, "run_id", run_id(run), "outcome",
			 outcome_str(outcome), "summary", run_summary(run), "error", err);
}

static void ctl_answer_waiters(struct job_rt *jr, struct run *run, enum run_outcome outcome)
{
	while (jr->waiters) {
		struct control_waiter *w = jr->waiters;
		jr->waiters = w->next;
		control_reply_send(w->reply, run_answer(jr, run, outcome));
		free(w);
	}
}

static int save_state(struct job_rt *jr)
{
	return state_save_job_state(jr->d->state_dir, jr->job->name, jr->state);
}

static void run_done(struct run *run, enum run_outcome outcome, void *ud)
{
	struct job_rt *jr = ud;
	struct daemon *d = jr->d;

	d->running--;
	d->runs_total++;
	if (outcome != RUN_SUCCEEDED)
		d->runs_failed++;
	if (d->opts->once)
		printf("%s: run %s %s\n", jr->job->name, run_id(run), run_summary(run));
	fflush(stdout);
	ctl_answer_waiters(jr, run, outcome);
	run_free(run);
	jr->run = NULL;
	jr->cref->users--;
	if (jr->retired) {
		unlink_job(d, jr);
		job_rt_free(jr);
	}
	cref_gc(d);
	notify_status(d);
	if (d->opts->once) {
		maybe_start_queued(d);
		if (d->running == 0) {
			bool any_queued = false;
			for (struct job_rt *j = d->jobs; j; j = j->next)
				any_queued |= j->queued;
			if (!any_queued)
				daemon_shutdown(d);
		}
		return;
	}
	if (d->stopping) {
		if (d->running == 0)
			daemon_shutdown(d);
		return;
	}
	maybe_start_queued(d);
}

/* The TLS and SSH libraries are set up at the first run, not at start: a
 * daemon waiting for its schedules leaves their pages untouched (idle RSS). */
static int daemon_clients(struct daemon *d)
{
	if (d->api)
		return 0;
	if (d->stopping)
		return -ECANCELED;
	if (!d->sftp_ready) {
		int r = sftp_global_init();
		if (r < 0) {
			log_msg(LOG_CRIT, "cannot initialise libssh2: %s", strerror(-r));
			return r;
		}
		d->sftp_ready = true;
	}
	int r = api_client_new(&d->loop, &d->api);
	if (r < 0)
		log_msg(LOG_CRIT, "cannot initialise the HTTP client: %s", strerror(-r));
	return r;
}

static int start_job(struct job_rt *jr, enum run_trigger trigger)
{
	struct daemon *d = jr->d;
	int rc = daemon_clients(d);
	if (rc < 0)
		return rc;
	struct run_env env = {
		.loop = &d->loop,
		.api = d->api,
		.state_dir = d->state_dir,
		.ledger = jr->ledger,
		.job_state = jr->state,
		.dry_run = d->opts->dry_run,
		.keep_runs = jr->cref->cfg->state.keep_runs,
		.keep_runs_age_ms = jr->cref->cfg->state.keep_runs_age_ms,
	};
	const json_t *paused = json_object_get(jr->state, "paused");

	if (paused && !d->opts->dry_run) {
		/* "Until the configuration changes": a replaced apptoken file resumes. */
		const char *was = json_string_value(json_object_get(paused, "apptoken_stamp"));
		char now[96];
		util_file_stamp(jr->job->project->apptoken_file, now, sizeof(now));
		if (was && strcmp(was, now) != 0) {
			log_msg(LOG_NOTICE, "%s: the apptoken file of project '%s' changed; resuming the "
				"job paused after an authentication failure",
				jr->job->name, jr->job->project_name);
			control_job_resume(jr->state, "configuration change", util_now_ms());
			save_state(jr);
			paused = NULL;
		}
	}
	if (paused && !d->opts->dry_run) {
		log_msg(LOG_WARNING,
			"%s: paused since authentication failed (%s); not run. Fix the apptoken, then "
			"'xpimportctl resume %s'",
			jr->job->name, json_string_value(json_object_get(paused, "reason")), jr->job->name);
		return -EPERM;
	}
	jr->cref->users++;
	d->running++;
	int r = run_start(jr->job, &env, trigger, run_done, jr, &jr->run);
	if (r < 0) {
		jr->cref->users--;
		d->running--;
		log_msg(LOG_ERR, "%s: cannot start a run: %s", jr->job->name, strerror(-r));
		return r;
	}
	notify_status(d);
	return 0;
}

static void request_run(struct job_rt *jr, enum run_trigger trigger)
{
	struct daemon *d = jr->d;

	if (jr->run) {
		log_msg(LOG_NOTICE, "%s: a run is still active (%s); this one is coalesced into it",
			jr->job->name, run_id(jr->run));
		return;
	}
	if (d->running >= d->current->cfg->max_parallel_jobs) {
		if (!jr->queued)
			log_msg(LOG_INFO, "%s: due, waiting for a free slot (max_parallel_jobs %d)",
				jr->job->name, d->current->cfg->max_parallel_jobs);
		jr->queued = true;
		return;
	}
	jr->queued = false;
	if (start_job(jr, trigger) < 0 && d->opts->once) {
		d->runs_failed++;
	}
}


static void upload_done(struct run *run, enum run_outcome outcome, void *ud)
{
	struct job_rt *jr = ud;
	struct daemon *d = jr->d;

	d->running--;
	if (jr->upload_reply)
		control_reply_send(jr->upload_reply, run_answer(jr, run, outcome));
	jr->upload_reply = NULL;
	run_free(run);
	jr->upload = NULL;
	if (jr->upload_fd >= 0)
		close(jr->upload_fd);
	jr->upload_fd = -1;
	free(jr->upload_path);
	jr->upload_path = NULL;
	jr->cref->users--;
	if (d->stopping && d->running == 0)
		daemon_shutdown(d);
}

static struct job_rt *ctl_job(struct daemon *d, const json_t *req)
{
	const char *name = json_string_value(json_object_get(req, "job"));
	for (struct job_rt *jr = d->jobs; name && jr; jr = jr->next)
		if (!jr->retired && strcmp(jr->job->name, name) == 0)
			return jr;
	return NULL;
}

static void on_control(void *ud, const json_t *req, struct control_reply *reply)
{
	struct daemon *d = ud;
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	const char *who = json_string_value(json_object_get(req, "who"));

	if (strcmp(cmd, "status") == 0) {
		json_t *jobs = json_object();
		for (struct job_rt *jr = d->jobs; jr; jr = jr->next) {
			char next[40] = "";
			if (jr->retired)
				continue;
			if (jr->next_due_ms && jr->job->enabled)
				util_format_time(jr->next_due_ms, next, sizeof(next));
			json_object_set_new(jobs, jr->job->name,
					    json_pack("{ss? ss? sb}", "next_due", next[0] ? next : NULL,
						      "running", jr->run ? run_id(jr->run) : NULL,
						      "queued", jr->queued));
		}
		control_reply_send(reply, json_pack("{sb sI ss so}", "ok", 1, "pid", (json_int_t)getpid(),
						    "version", XP_VERSION, "jobs", jobs));
		return;
	}
	if (d->stopping) {
		control_reply_error(reply, "busy", "the daemon is stopping; try again when it runs");
		return;
	}
	struct job_rt *jr = ctl_job(d, req);
	if (!jr) {
		control_reply_error(reply, "not_found",
				    "the daemon has no job named '%s'; after adding one, reload it "
				    "with 'systemctl reload xpimportd'",
				    json_string_value(json_object_get(req, "job")) ?: "");
		return;
	}
	const json_t *paused = json_object_get(jr->state, "paused");
	if (strcmp(cmd, "run") == 0) {
		bool coalesced = jr->run != NULL;
		if (!jr->run && paused) {
			control_reply_error(reply, "paused",
					    "job %s is paused since the API refused its apptoken; fix it, "
					    "then 'xpimportctl resume %s'",
					    jr->job->name, jr->job->name);
			return;
		}
		if (!jr->run && !jr->upload)
			start_job(jr, TRIGGER_RUN_NOW);
		if (!jr->run) {
			control_reply_error(reply, "busy", "job %s could not be started now; see "
					    "'journalctl -u xpimportd JOB=%s'", jr->job->name, jr->job->name);
			return;
		}
		if (!json_is_true(json_object_get(req, "wait"))) {
			control_reply_send(reply, json_pack("{sb ss sb}", "ok", 1, "run_id",
							    run_id(jr->run), "coalesced", coalesced));
			return;
		}
		struct control_waiter *w = calloc(1, sizeof(*w));
		if (!w) {
			control_reply_error(reply, NULL, "out of memory");
			return;
		}
		w->reply = reply;
		w->next = jr->waiters;
		jr->waiters = w;
		return;
	}
	if (strcmp(cmd, "resume") == 0) {
		int r = control_job_resume(jr->state, who, util_now_ms());
		if (r == 1 && save_state(jr) < 0) {
			control_reply_error(reply, NULL, "cannot save the job state of %s", jr->job->name);
			return;
		}
		if (r == 1)
			log_msg(LOG_NOTICE, "%s: resumed by %s", jr->job->name, who ? who : "?");
		control_reply_send(reply, json_pack("{sb sb}", "ok", 1, "was_paused", r == 1));
		return;
	}
	if (strcmp(cmd, "forget") == 0) {
		const char *path = json_string_value(json_object_get(req, "path"));
		int r = path ? ledger_forget(jr->ledger, path, who ? who : "?") : -EINVAL;
		if (r == -ENOENT) {
			control_reply_error(reply, "not_found", "job %s has no record of %s",
					    jr->job->name, path);
			return;
		}
		if (r < 0 || control_job_history_add(jr->state, "forget", who, path, util_now_ms()) < 0 ||
		    save_state(jr) < 0) {
			control_reply_error(reply, NULL, "cannot record the forget: %s",
					    ledger_last_error(jr->ledger));
			return;
		}
		control_reply_send(reply, json_pack("{sb}", "ok", 1));
		return;
	}
	if (strcmp(cmd, "import") == 0) {
		const char *path = json_string_value(json_object_get(req, "path"));
		int fd = control_reply_take_fd(reply);
		if (!path || path[0] != '/' || fd < 0) {
			if (fd >= 0)
				close(fd);
			control_reply_error(reply, "invalid",
					    "import needs an absolute \"path\" and the open file");
			return;
		}
		if (jr->run || jr->upload) {
			close(fd);
			control_reply_error(reply, "busy", "job %s is running (%s); try again when it "
					    "finished", jr->job->name, jr->run ? run_id(jr->run) : "an import");
			return;
		}
		if (paused) {
			close(fd);
			control_reply_error(reply, "paused", "job %s is paused since the API refused its "
					    "apptoken; fix it, then 'xpimportctl resume %s'",
					    jr->job->name, jr->job->name);
			return;
		}
		if (daemon_clients(d) < 0) {
			close(fd);
			control_reply_error(reply, NULL, "the daemon cannot set up its HTTP or SSH "
					    "client; see 'journalctl -u xpimportd'");
			return;
		}
		jr->upload_path = strdup(path);
		struct run_env env = {
			.loop = &d->loop, .api = d->api, .state_dir = d->state_dir,
			.ledger = jr->ledger, .job_state = jr->state, .upload_path = jr->upload_path,
			.upload_fd_set = true, .upload_fd = fd,
			.keep_runs = jr->cref->cfg->state.keep_runs,
			.keep_runs_age_ms = jr->cref->cfg->state.keep_runs_age_ms,
		};
		jr->upload_reply = reply;
		jr->upload_fd = fd;
		jr->cref->users++;
		d->running++;
		int r = run_start(jr->job, &env, TRIGGER_UPLOAD, upload_done, jr, &jr->upload);
		if (r < 0) {
			jr->cref->users--;
			d->running--;
			jr->upload_reply = NULL;
			free(jr->upload_path);
			jr->upload_path = NULL;
			close(fd);
			jr->upload_fd = -1;
			control_reply_error(reply, NULL, "cannot start the import: %s", strerror(-r));
		}
		return;
	}
	control_reply_error(reply, "invalid", "unknown command '%s'", cmd);
}

static void maybe_start_queued(struct daemon *d)
{
	for (struct job_rt *jr = d->jobs; jr && !d->stopping; jr = jr->next)
		if (jr->queued && !jr->retired && d->running < d->current->cfg->max_parallel_jobs)
			request_run(jr, d->opts->once ? TRIGGER_ONCE : TRIGGER_SCHEDULE);
}

static void job_timer_cb(uv_timer_t *t)
{
	struct job_rt *jr = t->data;
	request_run(jr, TRIGGER_SCHEDULE);
	schedule_job(jr, false);
}

static int64_t jitter_ms(int64_t max)
{
	uint64_t r = 0;
	if (max <= 0 || getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return 0;
	return (int64_t)(r % (uint64_t)(max + 1));
}

static void schedule_job(struct job_rt *jr, bool at_start)
{
	const struct cfg_job *job = jr->job;
	int64_t now = util_now_ms(), due;

	if (!job->enabled || jr->retired)
		return;
	if (at_start && job->schedule.run_at_start) {
		due = now;
	} else if (jr->has_cron) {
		int64_t s = cron_next(&jr->cron, job->schedule.timezone, now / 1000);
		if (s < 0) {
			log_msg(LOG_WARNING, "%s: the cron expression never matches; job not scheduled",
				job->name);
			return;
		}
		due = s * 1000;
	} else {
		due = now + job->schedule.every_ms;
	}
	due += jitter_ms(job->schedule.jitter_ms);
	jr->next_due_ms = due;
	uv_timer_start(&jr->timer, job_timer_cb, (uint64_t)(due > now ? due - now : 0), 0);
}

/* Open the job's ledger and state; returns NULL and logs on failure. */
static struct job_rt *job_rt_new(struct daemon *d, const struct cfg_job *job, struct cfg_ref *cref,
				 int *err)
{
	struct job_rt *jr = calloc(1, sizeof(*jr));
	char errbuf[512] = "";
	bool torn = false;
	int r;

	if (!jr) {
		*err = -ENOMEM;
		return NULL;
	}
	jr->d = d;
	jr->job = job;
	jr->cref = cref;
	jr->upload_fd = -1;
	r = ledger_open(d->state_dir, job->name, &jr->ledger, &torn, errbuf, sizeof(errbuf));
	if (r < 0) {
		log_msg(LOG_CRIT, "%s: %s", job->name, errbuf[0] ? errbuf : strerror(-r));
		free(jr);
		*err = r;
		return NULL;
	}
	if (torn)
		log_msg(LOG_WARNING,
			"%s: %s — a crash while writing it; the file it described will be resumed",
			job->name, errbuf);
	char *path = state_path(d->state_dir, "jobs/%s.json", job->name);
	if (path) {
		r = state_read_json(path, &jr->state);
		if (r == -EBADMSG)
			log_msg(LOG_WARNING, "%s: job state %s is not valid JSON; starting afresh",
				job->name, path);
		free(path);
	}
	if (!jr->state || !json_is_object(jr->state)) {
		json_decref(jr->state);
		jr->state = json_object();
	}
	if (job->schedule.cron) {
		char cerr[200];
		if (cron_parse(job->schedule.cron, &jr->cron, cerr, sizeof(cerr)) == 0)
			jr->has_cron = true;
	}
	uv_timer_init(&d->loop, &jr->timer);
	jr->timer.data = jr;
	jr->timer_open = true;
	*err = 0;
	return jr;
}

static bool job_selected(const struct daemon *d, const char *name)
{
	if (d->opts->n_jobs == 0)
		return true;
	for (size_t i = 0; i < d->opts->n_jobs; i++)
		if (strcmp(d->opts->jobs[i], name) == 0)
			return true;
	return false;
}

static int build_jobs(struct daemon *d, struct cfg_ref *cref, struct job_rt **out)
{
	struct job_rt *head = NULL, **tail = &head;

	for (size_t i = 0; i < cref->cfg->n_jobs; i++) {
		const struct cfg_job *job = &cref->cfg->jobs[i];
		int err = 0;
		if (!job_selected(d, job->name))
			continue;
		/* A job that is running keeps its runtime (and ledger) across a reload. */
		struct job_rt *jr = NULL;
		for (struct job_rt *old = d->jobs; old; old = old->next)
			if (!old->retired && old->run && strcmp(old->job->name, job->name) == 0)
				jr = old;
		if (jr)
			continue;
		jr = job_rt_new(d, job, cref, &err);
		if (!jr) {
			while (head) {
				struct job_rt *n = head->next;
				job_rt_free(head);
				head = n;
			}
			return err;
		}
		*tail = jr;
		tail = &jr->next;
	}
	*out = head;
	return 0;
}

static void log_config_errors(const struct cfg_errors *errs, const char *msg_id)
{
	for (size_t i = 0; i < errs->n; i++)
		log_event(LOG_ERR, msg_id, NULL, "%s", errs->msgs[i]);
}

static void reload(struct daemon *d)
{
	struct cfg *cfg = NULL;
	struct cfg_errors errs = {0};
	struct job_rt *fresh = NULL;

	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, (uint64_t)util_mono_ms() * 1000);
	int r = config_load(d->opts->config_path, &cfg, &errs);
	if (r < 0) {
		log_config_errors(&errs, XP_MSG_CONFIG_REJECTED);
		log_event(LOG_ERR, XP_MSG_CONFIG_REJECTED, NULL,
			  "configuration reload rejected (%zu error%s); still running the previous one",
			  errs.n, errs.n == 1 ? "" : "s");
		cfg_errors_free(&errs);
		cfg_free(cfg);
		sd_notify(0, "READY=1");
		notify_status(d);
		return;
	}
	struct cfg_ref *cref = cref_add(d, cfg);
	if (!cref || build_jobs(d, cref, &fresh) < 0) {
		log_event(LOG_ERR, XP_MSG_CONFIG_REJECTED, NULL,
			  "configuration reload failed while opening job state; still running the previous one");
		if (cref) {
			cref->users = 0;
		} else {
			cfg_free(cfg);
		}
		cref_gc(d);
		sd_notify(0, "READY=1");
		return;
	}
	/* Retire the old runtimes; running ones finish under their old definition. */
	for (struct job_rt *jr = d->jobs, *next; jr; jr = next) {
		next = jr->next;
		if (jr->run) {
			jr->retired = true;
			uv_timer_stop(&jr->timer);
			continue;
		}
		unlink_job(d, jr);
		job_rt_free(jr);
	}
	struct job_rt **tail = &d->jobs;
	while (*tail)
		tail = &(*tail)->next;
	*tail = fresh;
	d->current = cref;
	cref_gc(d);
	for (struct job_rt *jr = fresh; jr; jr = jr->next)
		schedule_job(jr, false);
	log_event(LOG_NOTICE, XP_MSG_CONFIG_RELOADED, NULL, "configuration reloaded: %zu jobs",
		  cfg->n_jobs);
	sd_notify(0, "READY=1");
	notify_status(d);
}

/* ---- shutdown ------------------------------------------------------------ */

static void api_closed(void *ud)
{
	(void)ud;
}

/* Everything should be closed by now; a handle left open is a bug: say so. */
static void close_walk(uv_handle_t *h, void *arg)
{
	int *left = arg;
	if (uv_is_closing(h))
		return;
	(*left)++;
	log_msg(LOG_ERR, "internal error: a %s handle was left open at exit",
		uv_handle_type_name(uv_handle_get_type(h)));
	uv_close(h, NULL);
}

static void daemon_shutdown(struct daemon *d)
{
	control_server_close(d->ctl);
	d->ctl = NULL;
	for (struct job_rt *jr = d->jobs, *next; jr; jr = next) {
		next = jr->next;
		job_rt_free(jr);
	}
	d->jobs = NULL;
	if (d->api) {
		api_client_close(d->api, api_closed, d);
		d->api = NULL;
	}
	uv_close((uv_handle_t *)&d->sig_term, NULL);
	uv_close((uv_handle_t *)&d->sig_int, NULL);
	uv_close((uv_handle_t *)&d->sig_hup, NULL);
	if (d->watchdog_on)
		uv_close((uv_handle_t *)&d->watchdog, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;

	if (signum == SIGHUP) {
		if (!d->opts->once)
			reload(d);
		return;
	}
	if (d->stopping) {
		log_msg(LOG_WARNING, "second stop signal: cancelling the batches in flight");
		if (d->api) {
			api_client_close(d->api, api_closed, d);
			d->api = NULL;
		}
		return;
	}
	d->stopping = true;
	sd_notify(0, "STOPPING=1");
	log_event(LOG_NOTICE, XP_MSG_DAEMON_STOPPING, NULL,
		  "stopping: %d run%s active; batches in flight are finished and recorded", d->running,
		  d->running == 1 ? "" : "s");
	for (struct job_rt *jr = d->jobs; jr; jr = jr->next) {
		jr->queued = false;
		if (jr->timer_open)
			uv_timer_stop(&jr->timer);
		if (jr->run)
			run_stop(jr->run);
	}
	if (d->running == 0)
		daemon_shutdown(d);
}

int daemon_main(const struct daemon_opts *opts)
{
	struct daemon d = {.opts = opts, .lock_fd = -1};
	struct cfg *cfg = NULL;
	struct cfg_errors errs = {0};
	int r, exit_code = XP_EXIT_OK;

	d.notify = getenv("NOTIFY_SOCKET") != NULL;
	r = config_load(opts->config_path, &cfg, &errs);
	if (r < 0) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.msgs[i]);
		if (errs.n == 0)
			fprintf(stderr, "%s: %s\n", opts->config_path, strerror(-r));
		fprintf(stderr, "configuration invalid: %zu error%s\n", errs.n, errs.n == 1 ? "" : "s");
		cfg_errors_free(&errs);
		cfg_free(cfg);
		return XP_EXIT_CONFIG;
	}
	for (size_t i = 0; i < opts->n_jobs; i++) {
		if (!cfg_find_job(cfg, opts->jobs[i])) {
			fprintf(stderr, "xpimportd: no job named '%s' in %s\n", opts->jobs[i],
				cfg->jobs_directory);
			cfg_free(cfg);
			return XP_EXIT_USAGE;
		}
	}
	d.state_dir = strdup(opts->state_dir);
	r = state_init(d.state_dir);
	if (r < 0) {
		log_msg(LOG_CRIT, "state directory %s is unusable: %s", d.state_dir, strerror(-r));
		exit_code = XP_EXIT_STATE;
		goto out_cfg;
	}
	r = state_lock(d.state_dir, false, &d.lock_fd);
	if (r == -EWOULDBLOCK) {
		log_msg(LOG_CRIT,
			"another xpimportd (or 'xpimportctl import') holds the state directory %s; "
			"exiting without changing anything",
			d.state_dir);
		exit_code = XP_EXIT_LOCKED;
		goto out_cfg;
	} else if (r < 0) {
		log_msg(LOG_CRIT, "cannot lock the state directory %s: %s", d.state_dir, strerror(-r));
		exit_code = XP_EXIT_STATE;
		goto out_cfg;
	}
	uv_loop_init(&d.loop);
	d.current = cref_add(&d, cfg);
	cfg = NULL;
	r = build_jobs(&d, d.current, &d.jobs);
	if (r < 0) {
		exit_code = XP_EXIT_STATE;
		goto out_run;
	}
	uv_signal_init(&d.loop, &d.sig_term);
	uv_signal_init(&d.loop, &d.sig_int);
	uv_signal_init(&d.loop, &d.sig_hup);
	d.sig_term.data = d.sig_int.data = d.sig_hup.data = &d;
	uv_signal_start(&d.sig_term, on_signal, SIGTERM);
	uv_signal_start(&d.sig_int, on_signal, SIGINT);
	uv_signal_start(&d.sig_hup, on_signal, SIGHUP);

	if (opts->once) {
		bool any = false;
		for (struct job_rt *jr = d.jobs; jr; jr = jr->next) {
			if (!jr->job->enabled && opts->n_jobs == 0)
				continue;
			any = true;
			jr->queued = true;
		}
		if (!any) {
			log_msg(LOG_WARNING, "no enabled jobs to run");
			daemon_shutdown(&d);
		} else {
			maybe_start_queued(&d);
			if (d.running == 0) {
				bool q = false;
				for (struct job_rt *jr = d.jobs; jr; jr = jr->next)
					q |= jr->queued;
				if (!q)
					daemon_shutdown(&d);
			}
		}
	} else {
		uint64_t wd_usec = 0;
		for (struct job_rt *jr = d.jobs; jr; jr = jr->next)
			schedule_job(jr, true);
		if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
			uv_timer_init(&d.loop, &d.watchdog);
			d.watchdog_on = true;
			uv_timer_start(&d.watchdog, watchdog_cb, wd_usec / 2000, wd_usec / 2000);
			uv_unref((uv_handle_t *)&d.watchdog);
		}
		char sock[256];
		if (control_socket_path(NULL, sock, sizeof(sock)) == 0) {
			r = control_server_start(&d.loop, sock, on_control, &d, &d.ctl);
			if (r < 0)
				log_msg(LOG_WARNING, "no control socket %s: %s; 'xpimportctl run' and "
					"'status' cannot reach this daemon", sock, strerror(-r));
		}
		log_event(LOG_INFO, XP_MSG_DAEMON_STARTED, NULL, "xpimportd %s started: %zu jobs, state %s",
			  XP_VERSION, d.current->cfg->n_jobs, d.state_dir);
		sd_notify(0, "READY=1");
		notify_status(&d);
	}
	uv_run(&d.loop, UV_RUN_DEFAULT);
	if (opts->once && d.runs_failed > 0)
		exit_code = XP_EXIT_RUN_FAILED;
out_run:;
	/* Everything must have been closed; uv_loop_close() returning 0 proves it. */
	int left = 0;
	uv_walk(&d.loop, close_walk, &left);
	uv_run(&d.loop, UV_RUN_DEFAULT);
	r = uv_loop_close(&d.loop);
	if (r != 0)
		log_msg(LOG_ERR, "internal error: handles left open at exit (%s)", uv_strerror(r));
	while (d.crefs) {
		struct cfg_ref *c = d.crefs;
		d.crefs = c->next;
		cfg_free(c->cfg);
		free(c);
	}
	if (d.sftp_ready)
		sftp_global_cleanup();
	state_unlock(d.lock_fd);
	free(d.state_dir);
	return exit_code;
out_cfg:
	if (d.lock_fd >= 0)
		state_unlock(d.lock_fd);
	cfg_free(cfg);
	free(d.state_dir);
	return exit_code;
}
