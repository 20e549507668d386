/* api.h — the Xtremepush import API client: one CURLM driven by the libuv
 * loop (curl_multi_socket_action with uv_poll_t and a uv_timer_t, as curl's
 * docs/examples/multi-uv.c). All callbacks run on the loop thread.
 * Retries (network errors, timeouts, 408, 429, 5xx) with capped exponential
 * backoff and full jitter, honouring Retry-After, happen inside the request;
 * the caller sees one final result and an on_retry notification per retry.
 * The apptoken is spliced into the body here and never logged or kept in
 * results. */
#ifndef XP_API_H
#define XP_API_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "config.h"

enum api_outcome {
	API_OK,           /* 200 */
	API_ACCEPTED,     /* 202: task_id set (or NULL and body_excerpt logged) */
	API_REJECTED,     /* 400 / other 4xx: message + errors_json */
	API_AUTH_FAILED,  /* 401 / 403: pause the job */
	API_GAVE_UP,      /* retryable failures until max_attempts */
	API_CANCELLED,
};

struct api_result {
	enum api_outcome outcome;
	int http_status;        /* last HTTP status, 0 if none */
	int attempts;
	char *task_id;          /* 202 */
	char *message;          /* envelope "message" */
	char *errors_json;      /* envelope "errors" as compact JSON, verbatim */
	char error[256];        /* transport error (curl), for API_GAVE_UP */
	/* info/task */
	char *task_status;      /* "queued", "running", "complete", "failed" */
	bool task_finished;
	/* Added: the first API_BODY_EXCERPT_BYTES of the response body when it
	 * could not be decoded, or a 202 carried no task id (responses carry
	 * no secrets). NULL otherwise. */
	char *body_excerpt;
};

/* Response bodies larger than this fail the attempt (retried). */
#define API_MAX_RESPONSE_BYTES (1024 * 1024)
#define API_BODY_EXCERPT_BYTES 512

struct api_client;
struct api_request;

/* done is called exactly once per started request, API_CANCELLED included
 * (then synchronously from api_request_cancel() or api_client_close()).
 * The api_request pointer is invalid once done has returned. */
struct api_callbacks {
	/* Final result; res is valid only during the call. */
	void (*done)(void *ud, const struct api_result *res);
	/* Optional: a retry is scheduled after delay_ms (reason: "HTTP 503", "timeout"...).
	 * attempt is the number (from 1) of the attempt that just failed; the
	 * next one is attempt + 1. */
	void (*on_retry)(void *ud, int attempt, int http_status, int64_t delay_ms, const char *reason);
};

int api_client_new(uv_loop_t *loop, struct api_client **out);
/* Cancels outstanding requests (their done is called with API_CANCELLED),
 * closes the handles; closed(ud) runs once everything is closed. */
void api_client_close(struct api_client *c, void (*closed)(void *ud), void *ud);

/* POST {base}/api/external/import/profile. body is a pipeline body
 * ({"columns":...,"rows":...}); copied. The project's url, ca_file, retry
 * and timeouts are copied too, so p need not outlive the request.
 * -EINVAL: url not https, body not a JSON object, empty or non-UTF-8 token;
 * -ECANCELED: the client is closing; -ENOMEM. */
int api_import_profile(struct api_client *c, const struct cfg_project *p, const char *apptoken,
		       const char *body, size_t len, const struct api_callbacks *cbs, void *ud,
		       struct api_request **out);
/* POST info/task once (retries as above); result has task_status/finished. */
int api_task_info(struct api_client *c, const struct cfg_project *p, const char *apptoken,
		  const char *task_id, const struct api_callbacks *cbs, void *ud,
		  struct api_request **out);
void api_request_cancel(struct api_request *r);

/* Pure helpers, exported for tests. */
/* Retry-After: delta-seconds or an HTTP-date; ms from now, or -1 if invalid. */
int64_t api_parse_retry_after(const char *value, int64_t now_ms);
/* Full jitter: random in [0, min(cap, base * 2^(attempt-1))]. */
int64_t api_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms);
/* Decode an envelope into res (message, errors_json, task id from model.id,
 * data.task_id, task_id, id; task status). 0 or -EBADMSG. */
int api_decode_envelope(const char *body, size_t len, struct api_result *res);
void api_result_clear(struct api_result *res);
#endif
