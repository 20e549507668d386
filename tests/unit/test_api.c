/* test_api.c — the API client's pure parts: Retry-After, backoff with full
 * jitter, the response envelope; plus the request checks that need no
 * network (https only, body shape, closing with nothing in flight). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api.h"

/* "Wed, 21 Oct 2015 07:28:00 GMT" */
#define DATE_2015_S INT64_C(1445412480)

static void retry_after_seconds(void **state)
{
	assert_int_equal(api_parse_retry_after("2", 0), 2000);
	assert_int_equal(api_parse_retry_after("0", 123), 0);
	assert_int_equal(api_parse_retry_after("  120\t", 0), 120000);
	assert_int_equal(api_parse_retry_after("007", 0), 7000);
}

static void retry_after_http_date(void **state)
{
	int64_t now = DATE_2015_S * 1000;

	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now), 10000);
	/* 500 ms before the date: the remainder, not a whole second. */
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now + 500), 9500);
	/* RFC 850 and asctime forms */
	assert_int_equal(api_parse_retry_after("Wednesday, 21-Oct-15 07:28:05 GMT", now), 5000);
	assert_int_equal(api_parse_retry_after("Wed Oct 21 07:28:03 2015", now), 3000);
	/* a date in the past: go now */
	assert_int_equal(api_parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), 0);
}

static void retry_after_garbage(void **state)
{
	assert_int_equal(api_parse_retry_after(NULL, 0), -1);
	assert_int_equal(api_parse_retry_after("", 0), -1);
	assert_int_equal(api_parse_retry_after("   ", 0), -1);
	assert_int_equal(api_parse_retry_after("soon", 0), -1);
	assert_int_equal(api_parse_retry_after("1.5", 0), -1);
	assert_int_equal(api_parse_retry_after("2 s", 0), -1);
	assert_int_equal(api_parse_retry_after("0x10", 0), -1);
	assert_int_equal(api_parse_retry_after("+5", 0), -1);
	assert_int_equal(api_parse_retry_after("Wed, 99 Foo 2015 07:28:00 GMT", 0), -1);
}

static void retry_after_negative(void **state)
{
	assert_int_equal(api_parse_retry_after("-1", 0), -1);
	assert_int_equal(api_parse_retry_after("-120", 0), -1);
}

static void retry_after_huge(void **state)
{
	const int64_t year_ms = INT64_C(366) * 86400 * 1000;

	/* Valid but absurd: clamped to a year (the caller clamps further to
	 * retry.max_backoff). */
	assert_int_equal(api_parse_retry_after("999999999", 0), year_ms);
	assert_int_equal(api_parse_retry_after("99999999999999999999999999", 0), year_ms);
	assert_int_equal(api_parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", 0), year_ms);
	/* longer than any header value we accept */
	char big[200];
	memset(big, '9', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(api_parse_retry_after(big, 0), -1);
}

static void backoff_bounds(void **state)
{
	for (int attempt = -2; attempt <= 70; attempt++) {
		for (int i = 0; i < 200; i++) {
			int64_t d = api_backoff_ms(attempt, 1000, 300000);
			assert_true(d >= 0);
			assert_true(d <= 300000);
			int64_t ceiling = 1000;
			for (int k = 1; k < attempt && ceiling < 300000; k++)
				ceiling *= 2;
			assert_true(d <= (ceiling < 300000 ? ceiling : 300000));
		}
	}
	/* huge base and cap do not overflow */
	for (int i = 0; i < 100; i++) {
		int64_t d = api_backoff_ms(200, INT64_MAX / 4, INT64_MAX);
		assert_true(d >= 0);
	}
	assert_int_equal(api_backoff_ms(3, 0, 1000), 0);
	assert_int_equal(api_backoff_ms(3, 100, 0), 0);
	assert_int_equal(api_backoff_ms(3, -5, -5), 0);
}

static void backoff_grows(void **state)
{
	int64_t max1 = 0, max4 = 0, max20 = 0;
	int above_first_ceiling = 0;

	for (int i = 0; i < 2000; i++) {
		int64_t d1 = api_backoff_ms(1, 100, 10000);
		int64_t d4 = api_backoff_ms(4, 100, 10000);
		int64_t d20 = api_backoff_ms(20, 100, 10000);
		max1 = d1 > max1 ? d1 : max1;
		max4 = d4 > max4 ? d4 : max4;
		max20 = d20 > max20 ? d20 : max20;
		if (d4 > 400)
			above_first_ceiling++;
	}
	assert_true(max1 <= 100);
	assert_true(max4 <= 800);
	assert_true(max4 > 400);  /* P(no sample above 400) = 2^-2000 */
	assert_true(above_first_ceiling > 500);
	assert_true(max20 <= 10000);
	assert_true(max20 > 9000); /* the cap is reached, not exceeded */
}

static void decode(const char *body, struct api_result *res, int expect_rc)
{
	memset(res, 0, sizeof(*res));
	assert_int_equal(api_decode_envelope(body, strlen(body), res), expect_rc);
}

static void envelope_200(void **state)
{
	struct api_result res;

	decode("{\"code\":200,\"success\":true,\"message\":\"Profiles imported\"}", &res, 0);
	assert_string_equal(res.message, "Profiles imported");
	assert_null(res.errors_json);
	assert_null(res.task_id);
	assert_null(res.task_status);
	assert_false(res.task_finished);
	api_result_clear(&res);
	assert_null(res.message);

	/* tolerant: nothing at all, wrong types */
	decode("{}", &res, 0);
	assert_null(res.message);
	api_result_clear(&res);
	decode("{\"message\":42,\"model\":\"x\",\"data\":7,\"errors\":null}", &res, 0);
	assert_null(res.message);
	assert_null(res.task_id);
	assert_null(res.errors_json);
	api_result_clear(&res);
}

static void envelope_202_task_ids(void **state)
{
	struct api_result res;

	decode("{\"code\":202,\"success\":true,\"message\":\"queued\",\"model\":{\"id\":\"t-17\"}}", &res, 0);
	assert_string_equal(res.task_id, "t-17");
	assert_string_equal(res.message, "queued");
	api_result_clear(&res);

	decode("{\"code\":202,\"data\":{\"task_id\":\"d-5\"},\"task_id\":\"top\",\"id\":\"id\"}", &res, 0);
	assert_string_equal(res.task_id, "d-5");
	api_result_clear(&res);

	decode("{\"code\":202,\"data\":[{\"task_id\":\"arr-1\"}]}", &res, 0);
	assert_string_equal(res.task_id, "arr-1");
	api_result_clear(&res);

	decode("{\"code\":202,\"task_id\":\"top-9\",\"id\":\"id-2\"}", &res, 0);
	assert_string_equal(res.task_id, "top-9");
	api_result_clear(&res);

	decode("{\"code\":202,\"id\":123456789012}", &res, 0);
	assert_string_equal(res.task_id, "123456789012");
	api_result_clear(&res);

	decode("{\"code\":202,\"model\":{\"id\":77}}", &res, 0);
	assert_string_equal(res.task_id, "77");
	api_result_clear(&res);

	/* model.id empty or of the wrong type: the next place is tried */
	decode("{\"code\":202,\"model\":{\"id\":\"\"},\"task_id\":\"fallback\"}", &res, 0);
	assert_string_equal(res.task_id, "fallback");
	api_result_clear(&res);
	decode("{\"code\":202,\"model\":{\"id\":[1]},\"id\":5}", &res, 0);
	assert_string_equal(res.task_id, "5");
	api_result_clear(&res);

	/* none at all */
	decode("{\"code\":202,\"success\":true,\"message\":\"ok\"}", &res, 0);
	assert_null(res.task_id);
	api_result_clear(&res);
}

static void envelope_400_errors(void **state)
{
	struct api_result res;

	decode("{\"code\":400,\"success\":false,\"message\":\"Invalid request\","
	       "\"errors\":[\"row 3: email_subscription is required\", \"row 9: bad\"]}",
	       &res, 0);
	assert_string_equal(res.message, "Invalid request");
	assert_string_equal(res.errors_json,
			    "[\"row 3: email_subscription is required\",\"row 9: bad\"]");
	api_result_clear(&res);

	decode("{\"code\":400,\"message\":\"Invalid\",\"errors\":[{\"row\":3,\"field\":\"mobile_number\","
	       "\"error\":\"must not start with +\"},\"plain\"]}",
	       &res, 0);
	assert_string_equal(res.errors_json,
			    "[{\"row\":3,\"field\":\"mobile_number\",\"error\":\"must not start with +\"},"
			    "\"plain\"]");
	api_result_clear(&res);

	/* errors as a single object or string: still verbatim */
	decode("{\"code\":400,\"errors\":{\"b\":1,\"a\":\"\\u00e9\"}}", &res, 0);
	assert_string_equal(res.errors_json, "{\"b\":1,\"a\":\"\xc3\xa9\"}");
	api_result_clear(&res);
	decode("{\"code\":401,\"message\":\"Authentication failed\",\"errors\":\"token\"}", &res, 0);
	assert_string_equal(res.errors_json, "\"token\"");
	assert_string_equal(res.message, "Authentication failed");
	api_result_clear(&res);
}

static void envelope_task_info(void **state)
{
	struct api_result res;

	decode("{\"code\":200,\"success\":true,\"model\":{\"id\":\"t1\",\"identifier\":\"profile_import\","
	       "\"status\":\"running\",\"create_time\":1700000000,\"finish_time\":null,\"message\":\"\"}}",
	       &res, 0);
	assert_string_equal(res.task_status, "running");
	assert_false(res.task_finished);
	assert_string_equal(res.task_id, "t1");
	api_result_clear(&res);

	decode("{\"code\":200,\"model\":{\"id\":\"t1\",\"status\":\"queued\"}}", &res, 0);
	assert_string_equal(res.task_status, "queued");
	assert_false(res.task_finished);
	api_result_clear(&res);

	/* finish_time set decides, whatever the status says */
	decode("{\"code\":200,\"model\":{\"id\":\"t1\",\"status\":\"running\",\"finish_time\":1700000100}}",
	       &res, 0);
	assert_true(res.task_finished);
	api_result_clear(&res);

	decode("{\"code\":200,\"model\":{\"id\":\"t1\",\"status\":\"complete\",\"finish_time\":null}}", &res, 0);
	assert_string_equal(res.task_status, "complete");
	assert_true(res.task_finished);
	api_result_clear(&res);

	decode("{\"code\":200,\"model\":{\"status\":\"failed\",\"message\":\"bad rows\"}}", &res, 0);
	assert_string_equal(res.task_status, "failed");
	assert_true(res.task_finished);
	api_result_clear(&res);

	/* no model: not finished, no status */
	decode("{\"code\":200,\"finish_time\":5}", &res, 0);
	assert_null(res.task_status);
	assert_false(res.task_finished);
	api_result_clear(&res);
}

static void envelope_invalid(void **state)
{
	struct api_result res;

	decode("<html>502 Bad Gateway</html>", &res, -EBADMSG);
	api_result_clear(&res);
	decode("", &res, -EBADMSG);
	decode("[1,2]", &res, -EBADMSG);
	decode("\"just a string\"", &res, -EBADMSG);
	decode("{\"code\":200,", &res, -EBADMSG);
	decode("{\"a\":1} trailing", &res, -EBADMSG);
	memset(&res, 0, sizeof(res));
	assert_int_equal(api_decode_envelope(NULL, 0, &res), -EBADMSG);
	/* the length is honoured: a valid prefix of a longer buffer */
	const char *two = "{\"message\":\"one\"}{\"message\":\"two\"}";
	assert_int_equal(api_decode_envelope(two, 17, &res), 0);
	assert_string_equal(res.message, "one");
	api_result_clear(&res);
	api_result_clear(NULL);
}

/* ---- request checks that need no server ---- */

/* cfg_project holds char *, not const char * */
static char name_main[] = "main";
static char url_http[] = "http://127.0.0.1:1";
static char url_ftp[] = "ftp://127.0.0.1/";
static char url_bogus[] = "HTTPS-ish://x";
static char url_query[] = "https://127.0.0.1:1/?a=b";
static char url_port1[] = "https://127.0.0.1:1";
static char url_discard[] = "https://127.0.0.1:9";
static char url_discard_slash[] = "https://127.0.0.1:9/";

static int done_calls;

static void count_done(void *ud, const struct api_result *res)
{
	done_calls++;
}

static void note_closed(void *ud)
{
	*(int *)ud += 1;
}

static void request_refusals(void **state)
{
	uv_loop_t loop;
	struct api_client *c = NULL;
	struct api_request *r = (struct api_request *)&loop; /* must be reset to NULL */
	struct api_callbacks cbs = {.done = count_done};
	struct cfg_project p = {.name = name_main, .url = url_http,
				.retry = {.max_attempts = 1, .initial_backoff_ms = 1, .max_backoff_ms = 1}};
	const char *body = "{\"columns\":[\"user_id\"],\"rows\":[[\"a\"]]}";
	int closed = 0;

	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(api_client_new(&loop, &c), 0);

	assert_int_equal(api_import_profile(c, &p, "tok", body, strlen(body), &cbs, NULL, &r), -EINVAL);
	assert_null(r);
	p.url = url_ftp;
	assert_int_equal(api_import_profile(c, &p, "tok", body, strlen(body), &cbs, NULL, &r), -EINVAL);
	p.url = url_bogus;
	assert_int_equal(api_import_profile(c, &p, "tok", body, strlen(body), &cbs, NULL, &r), -EINVAL);
	p.url = url_query;
	assert_int_equal(api_import_profile(c, &p, "tok", body, strlen(body), &cbs, NULL, &r), -EINVAL);
	p.url = url_port1;
	/* not a JSON object */
	assert_int_equal(api_import_profile(c, &p, "tok", "[1]", 3, &cbs, NULL, &r), -EINVAL);
	assert_int_equal(api_import_profile(c, &p, "tok", "{", 1, &cbs, NULL, &r), -EINVAL);
	/* empty or non-UTF-8 token, bad task ids */
	assert_int_equal(api_import_profile(c, &p, "", body, strlen(body), &cbs, NULL, &r), -EINVAL);
	assert_int_equal(api_import_profile(c, &p, "\xff\xfe", body, strlen(body), &cbs, NULL, &r), -EINVAL);
	assert_int_equal(api_task_info(c, &p, "tok", "", &cbs, NULL, &r), -EINVAL);
	assert_int_equal(api_task_info(c, &p, "tok", NULL, &cbs, NULL, &r), -EINVAL);
	assert_int_equal(done_calls, 0);

	api_client_close(c, note_closed, &closed);
	assert_int_equal(closed, 0); /* only after the close callbacks */
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(closed, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* A request to a port nobody listens on, cancelled by close while it is
 * being attempted or waiting: done exactly once, CANCELLED, and the loop
 * closes. */
static struct api_client *closing_client;
static enum api_outcome last_outcome;
static char last_error[256];
static int retries_seen;

static void record_done(void *ud, const struct api_result *res)
{
	done_calls++;
	last_outcome = res->outcome;
	strcpy(last_error, res->error);
}

static void close_on_retry(void *ud, int attempt, int status, int64_t delay, const char *reason)
{
	retries_seen++;
	assert_int_equal(attempt, 1);
	assert_int_equal(status, 0);
	assert_true(delay >= 0 && delay <= 50);
	assert_non_null(strstr(reason, "network error: "));
	api_client_close(closing_client, NULL, NULL);
}

static void close_cancels(void **state)
{
	uv_loop_t loop;
	struct api_request *r = NULL;
	struct api_callbacks cbs = {.done = record_done, .on_retry = close_on_retry};
	/* 127.0.0.1:9 (discard) is closed on test machines: connection refused */
	struct cfg_project p = {.name = name_main, .url = url_discard,
				.connect_timeout_ms = 2000, .request_timeout_ms = 5000,
				.retry = {.max_attempts = 5, .initial_backoff_ms = 50, .max_backoff_ms = 50}};
	const char *body = "{\"columns\":[\"user_id\"],\"rows\":[[\"a\"]]}";

	done_calls = 0;
	retries_seen = 0;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(api_client_new(&loop, &closing_client), 0);
	assert_int_equal(api_import_profile(closing_client, &p, "tok", body, strlen(body), &cbs, NULL, &r), 0);
	assert_non_null(r);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(retries_seen, 1);
	assert_int_equal(done_calls, 1);
	assert_int_equal(last_outcome, API_CANCELLED);
	assert_string_equal(last_error, "cancelled");
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void gives_up_after_max_attempts(void **state)
{
	uv_loop_t loop;
	struct api_client *c = NULL;
	struct api_callbacks cbs = {.done = record_done};
	struct cfg_project p = {.name = name_main, .url = url_discard_slash,
				.connect_timeout_ms = 2000, .request_timeout_ms = 5000,
				.retry = {.max_attempts = 3, .initial_backoff_ms = 1, .max_backoff_ms = 5}};
	int closed = 0;

	done_calls = 0;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(api_client_new(&loop, &c), 0);
	assert_int_equal(api_task_info(c, &p, "tok", "t-1", &cbs, NULL, NULL), 0);
	/* the client's own timer keeps the loop alive until close */
	while (done_calls == 0)
		uv_run(&loop, UV_RUN_ONCE);
	assert_int_equal(last_outcome, API_GAVE_UP);
	assert_non_null(strstr(last_error, "network error: "));
	api_client_close(c, note_closed, &closed);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(closed, 1);
	assert_int_equal(done_calls, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* api_request_cancel: done runs synchronously, once, with API_CANCELLED;
 * a closing client refuses new requests. */
static void cancel_one(void **state)
{
	uv_loop_t loop;
	struct api_client *c = NULL;
	struct api_request *r = NULL;
	struct api_callbacks cbs = {.done = record_done};
	struct cfg_project p = {.name = name_main, .url = url_discard,
				.connect_timeout_ms = 2000, .request_timeout_ms = 5000,
				.retry = {.max_attempts = 5, .initial_backoff_ms = 60000, .max_backoff_ms = 60000}};
	const char *body = "{\"columns\":[\"user_id\"],\"rows\":[[\"a\"]]}";
	int closed = 0;

	done_calls = 0;
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(api_client_new(&loop, &c), 0);
	assert_int_equal(api_import_profile(c, &p, "tok", body, strlen(body), &cbs, NULL, &r), 0);
	assert_non_null(r);
	api_request_cancel(r);
	assert_int_equal(done_calls, 1);
	assert_int_equal(last_outcome, API_CANCELLED);
	assert_string_equal(last_error, "cancelled");
	api_request_cancel(NULL);

	api_client_close(c, note_closed, &closed);
	assert_int_equal(api_import_profile(c, &p, "tok", body, strlen(body), &cbs, NULL, &r), -ECANCELED);
	assert_null(r);
	assert_int_equal(api_task_info(c, &p, "tok", "t", &cbs, NULL, &r), -ECANCELED);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(closed, 1);
	assert_int_equal(done_calls, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(retry_after_seconds),
		cmocka_unit_test(retry_after_http_date),
		cmocka_unit_test(retry_after_garbage),
		cmocka_unit_test(retry_after_negative),
		cmocka_unit_test(retry_after_huge),
		cmocka_unit_test(backoff_bounds),
		cmocka_unit_test(backoff_grows),
		cmocka_unit_test(envelope_200),
		cmocka_unit_test(envelope_202_task_ids),
		cmocka_unit_test(envelope_400_errors),
		cmocka_unit_test(envelope_task_info),
		cmocka_unit_test(envelope_invalid),
		cmocka_unit_test(request_refusals),
		cmocka_unit_test(close_cancels),
		cmocka_unit_test(gives_up_after_max_attempts),
		cmocka_unit_test(cancel_one),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
