/* api_probe.c — a development driver for src/api.c: posts one body N times
 * (or asks for one task N times) with up to K requests in flight, prints
 * every retry and result with timings, and checks that every request's done
 * ran exactly once and that the loop closes cleanly.
 *
 *   api_probe --url https://127.0.0.1:PORT --ca ca.pem --token-file tok
 *             (--body FILE | --task ID) [-n N] [-k IN_FLIGHT]
 *             [--attempts A] [--backoff MS] [--max-backoff MS]
 *             [--connect-timeout MS] [--timeout MS] [--close-after MS] [--quiet]
 *
 * Build: gcc $(CFLAGS) -o tests/api_probe tests/api_probe.c src/api.o src/util.o $(PKG_LIBS)
 * Exit status: 0 if every done ran once and uv_loop_close() returned 0. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "api.h"
#include "util.h"

#define PROBE_MAX_REQUESTS 1000000
#define PROBE_MAX_BODY (256u * 1024 * 1024)

struct probe {
	uv_loop_t loop;
	struct api_client *client;
	struct cfg_project project;
	char *token;
	size_t token_len;
	char *body;
	size_t body_len;
	const char *task_id;
	unsigned n, in_flight, started, finished;
	unsigned *done_calls;        /* per request */
	int64_t *start_ms;
	struct api_request **reqs;
	unsigned outcomes[API_CANCELLED + 1];
	bool quiet;
	bool closing;
	bool closed;
	int64_t t0;
	uv_timer_t close_timer;
	int64_t close_after_ms;
};

struct probe_slot {
	struct probe *pr;
	unsigned index;
};

static struct probe_slot *slots;

static const char *outcome_name(enum api_outcome o)
{
	switch (o) {
	case API_OK: return "OK";
	case API_ACCEPTED: return "ACCEPTED";
	case API_REJECTED: return "REJECTED";
	case API_AUTH_FAILED: return "AUTH_FAILED";
	case API_GAVE_UP: return "GAVE_UP";
	case API_CANCELLED: return "CANCELLED";
	}
	return "?";
}

static int64_t since(const struct probe *pr)
{
	return util_mono_ms() - pr->t0;
}

static void start_next(struct probe *pr);

static void on_retry(void *ud, int attempt, int status, int64_t delay_ms, const char *reason)
{
	struct probe_slot *s = ud;

	printf("#%u retry t=%" PRId64 "ms after_attempt=%d status=%d delay_ms=%" PRId64 " reason=%s\n",
	       s->index, since(s->pr), attempt, status, delay_ms, reason);
}

static void on_done(void *ud, const struct api_result *res)
{
	struct probe_slot *s = ud;
	struct probe *pr = s->pr;

	pr->done_calls[s->index]++;
	pr->reqs[s->index] = NULL;
	pr->finished++;
	if ((unsigned)res->outcome <= API_CANCELLED)
		pr->outcomes[res->outcome]++;
	if (!pr->quiet || res->outcome != API_OK)
		printf("#%u done t=%" PRId64 "ms outcome=%s status=%d attempts=%d task_id=%s "
		       "task_status=%s finished=%d ms=%" PRId64 " message=%s errors=%s error=%s%s%s\n",
		       s->index, since(pr), outcome_name(res->outcome), res->http_status, res->attempts,
		       res->task_id ? res->task_id : "-", res->task_status ? res->task_status : "-",
		       res->task_finished, util_mono_ms() - pr->start_ms[s->index],
		       res->message ? res->message : "-", res->errors_json ? res->errors_json : "-",
		       res->error[0] ? res->error : "-", res->body_excerpt ? " excerpt=" : "",
		       res->body_excerpt ? res->body_excerpt : "");
	if (!pr->closing)
		start_next(pr);
}

static void on_closed(void *ud)
{
	struct probe *pr = ud;

	pr->closed = true;
}

static void close_client(struct probe *pr)
{
	if (pr->closing)
		return;
	pr->closing = true;
	api_client_close(pr->client, on_closed, pr);
	if (pr->close_after_ms > 0)
		uv_close((uv_handle_t *)&pr->close_timer, NULL);
}

static void start_next(struct probe *pr)
{
	while (pr->started < pr->n && pr->started - pr->finished < pr->in_flight) {
		struct probe_slot *s = &slots[pr->started];
		struct api_callbacks cbs = {.done = on_done, .on_retry = on_retry};
		int rc;

		s->pr = pr;
		s->index = pr->started;
		pr->start_ms[s->index] = util_mono_ms();
		if (pr->task_id)
			rc = api_task_info(pr->client, &pr->project, pr->token, pr->task_id, &cbs, s,
					   &pr->reqs[s->index]);
		else
			rc = api_import_profile(pr->client, &pr->project, pr->token, pr->body,
						pr->body_len, &cbs, s, &pr->reqs[s->index]);
		pr->started++;
		if (rc < 0) {
			printf("#%u start failed: %s\n", s->index, strerror(-rc));
			pr->finished++;
			pr->done_calls[s->index]++; /* counted as reported */
		}
	}
	if (pr->finished == pr->n)
		close_client(pr);
}

static void on_close_timer(uv_timer_t *t)
{
	struct probe *pr = t->data;

	printf("closing the client at t=%" PRId64 "ms with %u requests outstanding\n", since(pr),
	       pr->started - pr->finished);
	close_client(pr);
}

static int read_file(const char *path, char **out, size_t *out_len)
{
	FILE *f = fopen(path, "rb");
	struct strbuf sb = {0};
	char chunk[65536];
	size_t n;
	int rc = 0;

	if (!f)
		return -errno;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (sb.len + n > PROBE_MAX_BODY) {
			rc = -EFBIG;
			break;
		}
		rc = strbuf_append(&sb, chunk, n);
		if (rc < 0)
			break;
	}
	if (rc == 0 && ferror(f))
		rc = -EIO;
	fclose(f);
	if (rc < 0) {
		strbuf_free(&sb);
		return rc;
	}
	*out = sb.data;
	*out_len = sb.len;
	return 0;
}

static int parse_num(const char *opt, const char *value, uint64_t max, uint64_t *out)
{
	int rc = value ? util_parse_uint(value, 0, max, out) : -EINVAL;

	if (rc < 0)
		fprintf(stderr, "api_probe: %s: bad value '%s'\n", opt, value ? value : "");
	return rc;
}

static void usage(void)
{
	fprintf(stderr, "usage: api_probe --url URL [--ca FILE] --token-file FILE (--body FILE | --task ID)\n"
			"                 [-n N] [-k IN_FLIGHT] [--attempts A] [--backoff MS] [--max-backoff MS]\n"
			"                 [--connect-timeout MS] [--timeout MS] [--close-after MS] [--quiet]\n");
}

int main(int argc, char **argv)
{
	struct probe pr = {0};
	const char *token_file = NULL, *body_file = NULL;
	uint64_t v;
	int rc, status = 0;
	unsigned bad = 0;

	pr.n = 1;
	pr.in_flight = 1;
	pr.project.name = argv[0];
	pr.project.max_in_flight = 4;
	pr.project.retry.max_attempts = 6;
	pr.project.retry.initial_backoff_ms = 1000;
	pr.project.retry.max_backoff_ms = 300000;
	pr.project.connect_timeout_ms = 30000;
	pr.project.request_timeout_ms = 300000;

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(opt, "--quiet") == 0) {
			pr.quiet = true;
			continue;
		}
		if (!val) {
			usage();
			return 2;
		}
		i++;
		if (strcmp(opt, "--url") == 0)
			pr.project.url = argv[i];
		else if (strcmp(opt, "--ca") == 0)
			pr.project.ca_file = argv[i];
		else if (strcmp(opt, "--token-file") == 0)
			token_file = val;
		else if (strcmp(opt, "--body") == 0)
			body_file = val;
		else if (strcmp(opt, "--task") == 0)
			pr.task_id = val;
		else if (strcmp(opt, "-n") == 0 && parse_num(opt, val, PROBE_MAX_REQUESTS, &v) == 0 && v > 0)
			pr.n = (unsigned)v;
		else if (strcmp(opt, "-k") == 0 && parse_num(opt, val, 1024, &v) == 0 && v > 0)
			pr.in_flight = (unsigned)v, pr.project.max_in_flight = (int)v;
		else if (strcmp(opt, "--attempts") == 0 && parse_num(opt, val, 100, &v) == 0)
			pr.project.retry.max_attempts = (int)v;
		else if (strcmp(opt, "--backoff") == 0 && parse_num(opt, val, 86400000, &v) == 0)
			pr.project.retry.initial_backoff_ms = (int64_t)v;
		else if (strcmp(opt, "--max-backoff") == 0 && parse_num(opt, val, 86400000, &v) == 0)
			pr.project.retry.max_backoff_ms = (int64_t)v;
		else if (strcmp(opt, "--connect-timeout") == 0 && parse_num(opt, val, 86400000, &v) == 0)
			pr.project.connect_timeout_ms = (int64_t)v;
		else if (strcmp(opt, "--timeout") == 0 && parse_num(opt, val, 86400000, &v) == 0)
			pr.project.request_timeout_ms = (int64_t)v;
		else if (strcmp(opt, "--close-after") == 0 && parse_num(opt, val, 86400000, &v) == 0)
			pr.close_after_ms = (int64_t)v;
		else {
			usage();
			return 2;
		}
	}
	if (!pr.project.url || !token_file || (!body_file == !pr.task_id)) {
		usage();
		return 2;
	}
	rc = util_read_secret(token_file, 4096, &pr.token, &pr.token_len);
	if (rc < 0) {
		fprintf(stderr, "api_probe: %s: %s\n", token_file, strerror(-rc));
		return 1;
	}
	if (body_file) {
		rc = read_file(body_file, &pr.body, &pr.body_len);
		if (rc < 0) {
			fprintf(stderr, "api_probe: %s: %s\n", body_file, strerror(-rc));
			util_free_secret(pr.token, pr.token_len);
			return 1;
		}
	}
	slots = calloc(pr.n, sizeof(*slots));
	pr.done_calls = calloc(pr.n, sizeof(*pr.done_calls));
	pr.start_ms = calloc(pr.n, sizeof(*pr.start_ms));
	pr.reqs = calloc(pr.n, sizeof(*pr.reqs));
	if (!slots || !pr.done_calls || !pr.start_ms || !pr.reqs) {
		fprintf(stderr, "api_probe: out of memory\n");
		return 1;
	}

	if (uv_loop_init(&pr.loop) < 0 || api_client_new(&pr.loop, &pr.client) < 0) {
		fprintf(stderr, "api_probe: cannot set up the loop or the client\n");
		return 1;
	}
	pr.t0 = util_mono_ms();
	if (pr.close_after_ms > 0) {
		uv_timer_init(&pr.loop, &pr.close_timer);
		pr.close_timer.data = &pr;
		uv_timer_start(&pr.close_timer, on_close_timer, (uint64_t)pr.close_after_ms, 0);
	}
	start_next(&pr);
	uv_run(&pr.loop, UV_RUN_DEFAULT);
	int64_t elapsed = since(&pr);

	for (unsigned i = 0; i < pr.n; i++)
		if (i < pr.started && pr.done_calls[i] != 1)
			bad++;
	rc = uv_loop_close(&pr.loop);
	printf("summary: n=%u started=%u ok=%u accepted=%u rejected=%u auth_failed=%u gave_up=%u "
	       "cancelled=%u done_not_once=%u closed=%d elapsed_ms=%" PRId64 " req_per_s=%.1f "
	       "body_bytes=%zu MB_per_s=%.1f uv_loop_close=%d\n",
	       pr.n, pr.started, pr.outcomes[API_OK], pr.outcomes[API_ACCEPTED],
	       pr.outcomes[API_REJECTED], pr.outcomes[API_AUTH_FAILED], pr.outcomes[API_GAVE_UP],
	       pr.outcomes[API_CANCELLED], bad, pr.closed, elapsed,
	       elapsed > 0 ? pr.finished * 1000.0 / (double)elapsed : 0.0, pr.body_len,
	       elapsed > 0 ? (double)pr.body_len * pr.finished / 1048576.0 * 1000.0 / (double)elapsed : 0.0,
	       rc);
	if (bad || rc != 0 || !pr.closed)
		status = 1;
	util_free_secret(pr.token, pr.token_len);
	free(pr.body);
	free(slots);
	free(pr.done_calls);
	free(pr.start_ms);
	free(pr.reqs);
	return status;
}
