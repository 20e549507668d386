/* api.c — the Xtremepush import API client. One CURLM per client, driven by
 * the libuv loop the way curl's docs/examples/multi-uv.c does it: curl tells
 * us which sockets to watch (one uv_poll_t each) and when to call it back
 * (one uv_timer_t); we answer with curl_multi_socket_action().
 *
 * A request owns one easy handle for all its attempts; the connections
 * themselves live in the multi's connection cache, so consecutive batches
 * reuse them (and the share handle keeps TLS sessions and DNS between
 * easy handles). Every struct embedding a uv handle is freed only in that
 * handle's close callback; api_client_close() cancels and closes all of it
 * and calls `closed` after the last close callback.
 *
 * This module does not log: results and errors go to the caller. The
 * apptoken exists only inside the request body, which is wiped on free. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "api.h"
#include "util.h"

#ifndef XP_VERSION
#define XP_VERSION "unknown"
#endif

#define API_USER_AGENT "xpimportd/" XP_VERSION
#define API_PATH_IMPORT "/api/external/import/profile"
#define API_PATH_TASK "/api/external/info/task"
#define API_MAX_TOKEN_BYTES 4096
#define API_MAX_TASK_ID_BYTES 256
#define API_MAX_URL_BYTES 2048
/* Retry-After beyond a year is nonsense; the caller clamps to max_backoff. */
#define API_RETRY_AFTER_MAX_S (366LL * 86400)
/* Idle connections kept in the multi's cache (max_in_flight is at most 32
 * per project, and a client may serve several projects). */
#define API_MAX_CACHED_CONNECTIONS 64L
/* Larger upload chunks: batches are megabytes and the default 64 KiB costs
 * many more write/poll round trips per request. */
#ifndef API_UPLOAD_BUFFER_BYTES
#define API_UPLOAD_BUFFER_BYTES (512L * 1024)
#endif

enum api_kind { API_KIND_IMPORT, API_KIND_TASK };

/* What a failed transfer means for the request. */
enum api_failure {
	API_FAIL_RETRY,   /* network error, timeout: try again after a backoff */
	API_FAIL_TLS,     /* the server could not be verified: retrying cannot help */
	API_FAIL_FATAL,   /* our own setup is wrong (bad option, no memory) */
};

struct api_socket {
	uv_poll_t poll;
	curl_socket_t fd;
	struct api_client *client;
	struct api_socket *prev, *next;
};

struct api_client {
	uv_loop_t *loop;
	CURLM *multi;
	CURLSH *share;
	struct curl_slist *headers;
	uv_timer_t timer;              /* curl's timeout */
	struct api_request *requests;  /* started, done not yet called */
	struct api_socket *sockets;    /* open uv_poll_t handles */
	unsigned open_handles;         /* uv handles whose close cb has not run */
	bool curl_initialised;
	bool closing;
	void (*closed)(void *ud);
	void *closed_ud;
};

struct api_request {
	uv_timer_t retry_timer;        /* the wait between attempts */
	struct api_client *client;
	struct api_request *prev, *next;
	enum api_kind kind;
	CURL *easy;
	bool in_multi;
	bool finished;                 /* done called (or being called) */
	char *url;
	char *ca_file;
	char host[256];                /* for error messages */
	char *body;                    /* holds the apptoken: wiped on free */
	size_t body_len;
	struct strbuf response;
	int write_error;               /* -EFBIG (over the cap) or -ENOMEM */
	char errbuf[CURL_ERROR_SIZE];
	struct cfg_retry retry;
	int64_t connect_timeout_ms;
	int64_t request_timeout_ms;
	struct api_callbacks cbs;
	void *ud;
	struct api_result res;
};

/* ---- foreign error codes: one conversion function each (style.md 7) ---- */

/* CURLcode -> negative errno, and what the failure means for a request. */
static int api_curl_errno(CURLcode code, enum api_failure *failure)
{
	enum api_failure f = API_FAIL_RETRY;
	int err;

	switch (code) {
	case CURLE_OK:
		err = 0;
		break;
	case CURLE_OUT_OF_MEMORY:
		err = -ENOMEM;
		f = API_FAIL_FATAL;
		break;
	case CURLE_OPERATION_TIMEDOUT:
		err = -ETIMEDOUT;
		break;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		err = -EHOSTUNREACH;
		break;
	case CURLE_COULDNT_CONNECT:
		err = -ECONNREFUSED;
		break;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_WEIRD_SERVER_REPLY:
		err = -ECONNRESET;
		break;
	case CURLE_WRITE_ERROR:        /* our write callback refused the body */
	case CURLE_FILESIZE_EXCEEDED:  /* Content-Length above the cap */
		err = -EFBIG;
		break;
	/* CURLE_SSL_CACERT is an alias of CURLE_PEER_FAILED_VERIFICATION. */
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		err = -EPROTO;
		f = API_FAIL_TLS;
		break;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_UNKNOWN_OPTION:
	case CURLE_NOT_BUILT_IN:
	case CURLE_FAILED_INIT:
		err = -EINVAL;
		f = API_FAIL_FATAL;
		break;
	default:
		err = -EIO;
		break;
	}
	if (failure)
		*failure = f;
	return err;
}

static int api_curlm_errno(CURLMcode code)
{
	switch (code) {
	case CURLM_OK:
		return 0;
	case CURLM_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLM_BAD_HANDLE:
	case CURLM_BAD_EASY_HANDLE:
	case CURLM_ADDED_ALREADY:
	case CURLM_UNKNOWN_OPTION:
	case CURLM_BAD_FUNCTION_ARGUMENT:
		return -EINVAL;
	default:
		return -EIO;
	}
}

static int api_curlsh_errno(CURLSHcode code)
{
	switch (code) {
	case CURLSHE_OK:
		return 0;
	case CURLSHE_NOMEM:
		return -ENOMEM;
	default:
		return -EINVAL;
	}
}

static int api_curlu_errno(CURLUcode code)
{
	switch (code) {
	case CURLUE_OK:
		return 0;
	case CURLUE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EINVAL;
	}
}

/* ---- pure helpers ---- */

/* xorshift64*: jitter needs spread, not secrecy. Seeded once per process. */
static uint64_t api_random(void)
{
	static uint64_t state;
	uint64_t x;

	if (state == 0) {
		uint64_t seed = 0;
		if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
			       ((uint64_t)getpid() << 40);
		}
		state = seed | 1;
	}
	x = state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	state = x;
	return x * UINT64_C(0x2545F4914F6CDD1D);
}

int64_t api_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms)
{
	int64_t ceiling;

	if (base_ms <= 0 || cap_ms <= 0)
		return 0;
	if (attempt < 1)
		attempt = 1;
	ceiling = base_ms;
	for (int i = 1; i < attempt && ceiling < cap_ms; i++)
		ceiling = ceiling > INT64_MAX / 2 ? INT64_MAX : ceiling * 2;
	if (ceiling > cap_ms)
		ceiling = cap_ms;
	return (int64_t)(api_random() % ((uint64_t)ceiling + 1));
}

int64_t api_parse_retry_after(const char *value, int64_t now_ms)
{
	char buf[64];
	size_t len;
	time_t when;
	int64_t ms;

	if (!value)
		return -1;
	while (*value == ' ' || *value == '\t')
		value++;
	len = strlen(value);
	while (len > 0 && strchr(" \t\r\n", value[len - 1]))
		len--;
	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, value, len);
	buf[len] = '\0';

	if (strspn(buf, "0123456789") == len) {
		uint64_t seconds;
		/* All digits: anything util_parse_uint refuses is out of range. */
		if (util_parse_uint(buf, 0, (uint64_t)API_RETRY_AFTER_MAX_S, &seconds) < 0)
			seconds = (uint64_t)API_RETRY_AFTER_MAX_S;
		return (int64_t)seconds * 1000;
	}
	/* Every HTTP-date form (IMF-fixdate, RFC 850, asctime) starts with the
	 * day name; curl_getdate() alone would take "1.5" or "-3" for a date. */
	if (!((buf[0] >= 'A' && buf[0] <= 'Z') || (buf[0] >= 'a' && buf[0] <= 'z')))
		return -1;
	when = curl_getdate(buf, NULL);
	if (when == (time_t)-1)
		return -1;
	if ((int64_t)when > INT64_MAX / 1000 - API_RETRY_AFTER_MAX_S)
		return API_RETRY_AFTER_MAX_S * 1000;
	ms = (int64_t)when * 1000 - now_ms;
	if (ms < 0)
		ms = 0;
	if (ms > API_RETRY_AFTER_MAX_S * 1000)
		ms = API_RETRY_AFTER_MAX_S * 1000;
	return ms;
}

static int api_set_string(char **dst, const char *src, size_t len)
{
	char *copy = strndup(src, len);

	if (!copy)
		return -ENOMEM;
	free(*dst);
	*dst = copy;
	return 0;
}

/* A task id as found: a non-empty string without NUL, or an integer. */
static int api_take_id(json_t *value, char **dst, bool *found)
{
	char num[32];

	*found = false;
	if (json_is_string(value)) {
		size_t len = json_string_length(value);
		const char *s = json_string_value(value);
		if (len == 0 || len > API_MAX_TASK_ID_BYTES || strlen(s) != len)
			return 0;
		*found = true;
		return api_set_string(dst, s, len);
	}
	if (json_is_integer(value)) {
		int n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
		*found = true;
		return api_set_string(dst, num, (size_t)n);
	}
	return 0;
}

static bool api_time_is_set(json_t *value)
{
	if (!value || json_is_null(value) || json_is_false(value))
		return false;
	if (json_is_integer(value))
		return json_integer_value(value) != 0;
	if (json_is_string(value))
		return json_string_length(value) > 0;
	return true;
}

int api_decode_envelope(const char *body, size_t len, struct api_result *res)
{
	json_error_t jerr;
	json_t *root, *message, *errors, *model, *data, *status;
	json_t *candidates[4];
	int rc = 0;

	if (!body)
		return -EBADMSG;
	root = json_loadb(body, len, 0, &jerr);
	if (!root)
		return -EBADMSG;
	if (!json_is_object(root)) {
		json_decref(root);
		return -EBADMSG;
	}

	message = json_object_get(root, "message");
	if (json_is_string(message))
		rc = api_set_string(&res->message, json_string_value(message),
				    strlen(json_string_value(message)));

	errors = json_object_get(root, "errors");
	if (rc == 0 && errors && !json_is_null(errors)) {
		/* jansson allocates with malloc unless json_set_alloc_funcs(),
		 * which this program never calls: free() is right. */
		char *dump = json_dumps(errors, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
		if (!dump) {
			rc = -ENOMEM;
		} else {
			free(res->errors_json);
			res->errors_json = dump;
		}
	}

	model = json_object_get(root, "model");
	data = json_object_get(root, "data");
	if (json_is_array(data))
		data = json_array_get(data, 0);
	candidates[0] = json_object_get(model, "id");
	candidates[1] = json_object_get(data, "task_id");
	candidates[2] = json_object_get(root, "task_id");
	candidates[3] = json_object_get(root, "id");
	for (size_t i = 0; rc == 0 && i < XP_ARRAY_SIZE(candidates); i++) {
		bool found;
		rc = api_take_id(candidates[i], &res->task_id, &found);
		if (found)
			break;
	}

	status = json_object_get(model, "status");
	if (rc == 0 && json_is_string(status)) {
		const char *s = json_string_value(status);
		rc = api_set_string(&res->task_status, s, strlen(s));
		if (strcmp(s, "complete") == 0 || strcmp(s, "failed") == 0)
			res->task_finished = true;
	}
	if (api_time_is_set(json_object_get(model, "finish_time")))
		res->task_finished = true;

	json_decref(root);
	return rc;
}

/* The decoded, per-attempt part of a result. */
static void api_result_reset_response(struct api_result *res)
{
	free(res->task_id);
	free(res->message);
	free(res->errors_json);
	free(res->task_status);
	free(res->body_excerpt);
	res->task_id = res->message = res->errors_json = res->task_status = NULL;
	res->body_excerpt = NULL;
	res->task_finished = false;
	res->http_status = 0;
	res->error[0] = '\0';
}

void api_result_clear(struct api_result *res)
{
	if (!res)
		return;
	api_result_reset_response(res);
	res->outcome = API_OK;
	res->attempts = 0;
}

/* ---- building a request ---- */

/* JSON string escaping into a buffer of at least 6 * len bytes. */
static size_t api_escape_into(char *dst, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\') {
			dst[o++] = '\\';
			dst[o++] = (char)ch;
		} else if (ch < 0x20) {
			dst[o++] = '\\';
			dst[o++] = 'u';
			dst[o++] = '0';
			dst[o++] = '0';
			dst[o++] = hex[ch >> 4];
			dst[o++] = hex[ch & 15];
		} else {
			dst[o++] = (char)ch;
		}
	}
	return o;
}

static bool api_is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* {"apptoken":"TOKEN",<rest of the object>} in one allocation, so that no
 * copy of the token is left behind by a realloc. For a task, rest is NULL
 * and the id is added as a string. */
static int api_build_body(const char *token, const char *task_id, const char *object,
			  size_t object_len, char **out, size_t *out_len)
{
	static const char head[] = "{\"apptoken\":\"";
	static const char id_key[] = "\",\"id\":\"";
	size_t token_len = strlen(token), id_len = task_id ? strlen(task_id) : 0;
	const char *rest = NULL;
	size_t rest_len = 0, cap, o = 0;
	bool comma = false;
	char *buf;

	if (token_len == 0 || token_len > API_MAX_TOKEN_BYTES || !util_utf8_valid(token, token_len))
		return -EINVAL;
	if (task_id) {
		if (id_len == 0 || id_len > API_MAX_TASK_ID_BYTES || !util_utf8_valid(task_id, id_len))
			return -EINVAL;
	} else {
		size_t start = 0, end = object_len;
		while (start < end && api_is_space(object[start]))
			start++;
		while (end > start && api_is_space(object[end - 1]))
			end--;
		if (end - start < 2 || object[start] != '{' || object[end - 1] != '}')
			return -EINVAL;
		rest = object + start + 1;
		rest_len = end - start - 1;
		for (size_t i = 0; i < rest_len; i++) {
			if (!api_is_space(rest[i])) {
				comma = rest[i] != '}';
				break;
			}
		}
	}

	cap = sizeof(head) + 6 * token_len + sizeof(id_key) + 6 * id_len + 4 + rest_len;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, head, sizeof(head) - 1);
	o = sizeof(head) - 1;
	o += api_escape_into(buf + o, token, token_len);
	if (task_id) {
		memcpy(buf + o, id_key, sizeof(id_key) - 1);
		o += sizeof(id_key) - 1;
		o += api_escape_into(buf + o, task_id, id_len);
		buf[o++] = '"';
		buf[o++] = '}';
	} else {
		buf[o++] = '"';
		if (comma)
			buf[o++] = ',';
		memcpy(buf + o, rest, rest_len);
		o += rest_len;
	}
	buf[o] = '\0';
	*out = buf;
	*out_len = o;
	return 0;
}

/* https://host[:port][/prefix] + path; the host is kept for messages. */
static int api_build_url(const char *base, const char *path, char **url, char *host, size_t host_size)
{
	CURLU *u = NULL;
	char *scheme = NULL, *h = NULL;
	size_t base_len;
	int rc;

	if (!base || strncasecmp(base, "https://", 8) != 0 || strpbrk(base, "?# \t\r\n"))
		return -EINVAL;
	base_len = strlen(base);
	while (base_len > 8 && base[base_len - 1] == '/')
		base_len--;
	if (base_len + strlen(path) >= API_MAX_URL_BYTES)
		return -EINVAL;
	if (asprintf(url, "%.*s%s", (int)base_len, base, path) < 0) {
		*url = NULL;
		return -ENOMEM;
	}
	u = curl_url();
	if (!u) {
		rc = -ENOMEM;
		goto out;
	}
	rc = api_curlu_errno(curl_url_set(u, CURLUPART_URL, *url, 0));
	if (rc == 0)
		rc = api_curlu_errno(curl_url_get(u, CURLUPART_SCHEME, &scheme, 0));
	if (rc == 0 && strcmp(scheme, "https") != 0)
		rc = -EINVAL;
	if (rc == 0)
		rc = api_curlu_errno(curl_url_get(u, CURLUPART_HOST, &h, 0));
	if (rc == 0)
		util_strlcpy(host, h, host_size);
out:
	curl_free(h);
	curl_free(scheme);
	curl_url_cleanup(u);
	if (rc < 0) {
		free(*url);
		*url = NULL;
	}
	return rc;
}

static size_t api_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct api_request *r = userdata;
	size_t n = size * nmemb;

	if (n > API_MAX_RESPONSE_BYTES - r->response.len) {
		r->write_error = -EFBIG;
		return 0;
	}
	if (strbuf_append(&r->response, ptr, n) < 0) {
		r->write_error = -ENOMEM;
		return 0;
	}
	return n;
}

static long api_clamp_long(int64_t v)
{
	if (v < 0)
		return 0;
	return v > LONG_MAX ? LONG_MAX : (long)v;
}

static int api_easy_setup(struct api_request *r)
{
	struct api_client *c = r->client;
	CURL *e = curl_easy_init();
	CURLcode rc = CURLE_OK;

	if (!e)
		return -ENOMEM;
	r->easy = e;
#define API_SET(opt, val)                                    \
	do {                                                 \
		if (rc == CURLE_OK)                          \
			rc = curl_easy_setopt(e, opt, val);  \
	} while (0)
	API_SET(CURLOPT_URL, r->url);
	API_SET(CURLOPT_PROTOCOLS_STR, "https");
	API_SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
	API_SET(CURLOPT_FOLLOWLOCATION, 0L);
	API_SET(CURLOPT_SSL_VERIFYPEER, 1L);
	API_SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (r->ca_file)
		API_SET(CURLOPT_CAINFO, r->ca_file);
	API_SET(CURLOPT_NOSIGNAL, 1L);
	API_SET(CURLOPT_USERAGENT, API_USER_AGENT);
	API_SET(CURLOPT_HTTPHEADER, c->headers);
	/* One connection per batch in flight, no HTTP/2 flow-control window
	 * between megabyte bodies and the server. */
	API_SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	API_SET(CURLOPT_POST, 1L);
	API_SET(CURLOPT_POSTFIELDS, r->body);
	API_SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
	API_SET(CURLOPT_UPLOAD_BUFFERSIZE, API_UPLOAD_BUFFER_BYTES);
	API_SET(CURLOPT_CONNECTTIMEOUT_MS, api_clamp_long(r->connect_timeout_ms));
	API_SET(CURLOPT_TIMEOUT_MS, api_clamp_long(r->request_timeout_ms));
	API_SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)API_MAX_RESPONSE_BYTES);
	API_SET(CURLOPT_WRITEFUNCTION, api_write_cb);
	API_SET(CURLOPT_WRITEDATA, r);
	API_SET(CURLOPT_ERRORBUFFER, r->errbuf);
	API_SET(CURLOPT_PRIVATE, r);
	API_SET(CURLOPT_SHARE, c->share);
	API_SET(CURLOPT_TCP_KEEPALIVE, 1L);
#undef API_SET
	return api_curl_errno(rc, NULL);
}

/* ---- the uv side: sockets and curl's timer ---- */

static void api_handle_closed(struct api_client *c)
{
	void (*closed)(void *ud);
	void *ud;

	c->open_handles--;
	if (!c->closing || c->open_handles > 0)
		return;
	closed = c->closed;
	ud = c->closed_ud;
	if (c->curl_initialised)
		curl_global_cleanup();
	free(c);
	if (closed)
		closed(ud);
}

static void api_socket_close_cb(uv_handle_t *h)
{
	struct api_socket *sk = h->data;
	struct api_client *c = sk->client;

	free(sk);
	api_handle_closed(c);
}

static void api_socket_close(struct api_socket *sk)
{
	struct api_client *c = sk->client;

	if (sk->prev)
		sk->prev->next = sk->next;
	else
		c->sockets = sk->next;
	if (sk->next)
		sk->next->prev = sk->prev;
	sk->prev = sk->next = NULL;
	uv_poll_stop(&sk->poll);
	uv_close((uv_handle_t *)&sk->poll, api_socket_close_cb);
}

static void api_attempt_done(struct api_request *r, CURLcode result);

static void api_check_multi_info(struct api_client *c)
{
	CURLMsg *msg;
	int pending;

	/* done callbacks may close the client: c->multi then becomes NULL,
	 * while c itself lives until the close callbacks have run. */
	while (c->multi && (msg = curl_multi_info_read(c->multi, &pending))) {
		char *priv = NULL;
		struct api_request *r;
		CURLcode result;

		if (msg->msg != CURLMSG_DONE)
			continue;
		result = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
		r = (struct api_request *)(void *)priv;
		curl_multi_remove_handle(c->multi, r->easy);
		r->in_multi = false;
		api_attempt_done(r, result);
	}
}

static void api_poll_cb(uv_poll_t *h, int status, int events)
{
	struct api_socket *sk = h->data;
	struct api_client *c = sk->client;
	int flags = 0, running;

	if (!c->multi)
		return;
	if (status < 0) {
		flags = CURL_CSELECT_ERR;
	} else {
		if (events & UV_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events & UV_WRITABLE)
			flags |= CURL_CSELECT_OUT;
	}
	curl_multi_socket_action(c->multi, sk->fd, flags, &running);
	api_check_multi_info(c);
}

static void api_timeout_cb(uv_timer_t *h)
{
	struct api_client *c = h->data;
	int running;

	if (!c->multi)
		return;
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	api_check_multi_info(c);
}

static int api_curl_socket_cb(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
	struct api_client *c = userp;
	struct api_socket *sk = socketp;
	int events = 0;

	if (action == CURL_POLL_REMOVE) {
		if (sk) {
			/* During curl_multi_cleanup() the multi is being torn
			 * down: no calls back into it. */
			if (!c->closing)
				curl_multi_assign(c->multi, fd, NULL);
			api_socket_close(sk);
		}
		return 0;
	}
	if (!sk) {
		sk = calloc(1, sizeof(*sk));
		if (!sk)
			return -1;
		if (uv_poll_init_socket(c->loop, &sk->poll, fd) < 0) {
			free(sk);
			return -1;
		}
		sk->fd = fd;
		sk->client = c;
		sk->poll.data = sk;
		sk->next = c->sockets;
		if (c->sockets)
			c->sockets->prev = sk;
		c->sockets = sk;
		c->open_handles++;
		curl_multi_assign(c->multi, fd, sk);
	}
	if (action & CURL_POLL_IN)
		events |= UV_READABLE;
	if (action & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&sk->poll, events, api_poll_cb);
	return 0;
}

static int api_curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct api_client *c = userp;

	if (timeout_ms < 0)
		uv_timer_stop(&c->timer);
	else /* 0 means "as soon as possible", but not from inside this callback
	      * nor in a loop of zero timers that would starve the polling. */
		uv_timer_start(&c->timer, api_timeout_cb, timeout_ms == 0 ? 1 : (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- the client ---- */

static void api_client_timer_close_cb(uv_handle_t *h)
{
	api_handle_closed(h->data);
}

/* Everything but the uv timer; for a half-built client too. */
static void api_client_free_curl(struct api_client *c)
{
	if (c->multi)
		curl_multi_cleanup(c->multi);
	c->multi = NULL;
	if (c->share)
		curl_share_cleanup(c->share);
	c->share = NULL;
	curl_slist_free_all(c->headers);
	c->headers = NULL;
}

int api_client_new(uv_loop_t *loop, struct api_client **out)
{
	static const char *const headers[] = {
		"Content-Type: application/json",
		"Accept: application/json",
		/* libcurl would add "Expect: 100-continue" to large POSTs and
		 * wait up to a second for a server that ignores it. */
		"Expect:",
	};
	struct api_client *c;
	int rc;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->loop = loop;
	rc = api_curl_errno(curl_global_init(CURL_GLOBAL_DEFAULT), NULL);
	if (rc < 0)
		goto fail;
	c->curl_initialised = true;
	for (size_t i = 0; i < XP_ARRAY_SIZE(headers); i++) {
		struct curl_slist *l = curl_slist_append(c->headers, headers[i]);
		if (!l) {
			rc = -ENOMEM;
			goto fail;
		}
		c->headers = l;
	}
	c->share = curl_share_init();
	c->multi = curl_multi_init();
	if (!c->share || !c->multi) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = api_curlsh_errno(curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION));
	if (rc == 0)
		rc = api_curlsh_errno(curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS));
	if (rc == 0)
		rc = api_curlm_errno(curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, api_curl_socket_cb));
	if (rc == 0)
		rc = api_curlm_errno(curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c));
	if (rc == 0)
		rc = api_curlm_errno(curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, api_curl_timer_cb));
	if (rc == 0)
		rc = api_curlm_errno(curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c));
	if (rc == 0)
		rc = api_curlm_errno(curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, API_MAX_CACHED_CONNECTIONS));
	if (rc < 0)
		goto fail;
	rc = uv_timer_init(loop, &c->timer);
	if (rc < 0)
		goto fail;
	c->timer.data = c;
	c->open_handles = 1;
	*out = c;
	return 0;
fail:
	api_client_free_curl(c);
	if (c->curl_initialised)
		curl_global_cleanup();
	free(c);
	return rc;
}

/* ---- requests ---- */

static void api_request_close_cb(uv_handle_t *h)
{
	struct api_request *r = h->data;
	struct api_client *c = r->client;

	api_result_clear(&r->res);
	strbuf_free(&r->response);
	free(r->url);
	free(r->ca_file);
	free(r);
	api_handle_closed(c);
}

static void api_wipe_body(struct api_request *r)
{
	if (r->body) {
		explicit_bzero(r->body, r->body_len);
		free(r->body);
	}
	r->body = NULL;
	r->body_len = 0;
}

/* The single exit of a request: done once, then the handle closes. */
static void api_finish(struct api_request *r, enum api_outcome outcome)
{
	struct api_client *c = r->client;

	if (r->finished)
		return;
	r->finished = true;
	if (r->prev)
		r->prev->next = r->next;
	else
		c->requests = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
	uv_timer_stop(&r->retry_timer);
	if (r->easy) {
		if (r->in_multi && c->multi)
			curl_multi_remove_handle(c->multi, r->easy);
		r->in_multi = false;
		/* Before the share handle goes away in api_client_close(). */
		curl_easy_cleanup(r->easy);
		r->easy = NULL;
	}
	api_wipe_body(r);
	r->res.outcome = outcome;
	if (outcome != API_OK && outcome != API_ACCEPTED && r->res.error[0] == '\0')
		util_strlcpy(r->res.error, outcome == API_CANCELLED ? "cancelled" : "failed",
			     sizeof(r->res.error));
	if (r->cbs.done)
		r->cbs.done(r->ud, &r->res);
	uv_close((uv_handle_t *)&r->retry_timer, api_request_close_cb);
}

static int api_start_attempt(struct api_request *r)
{
	struct api_client *c = r->client;
	int rc;

	strbuf_reset(&r->response);
	r->write_error = 0;
	r->errbuf[0] = '\0';
	r->res.attempts++;
	rc = api_curlm_errno(curl_multi_add_handle(c->multi, r->easy));
	if (rc == 0)
		r->in_multi = true;
	return rc;
}

static void api_retry_timer_cb(uv_timer_t *h)
{
	struct api_request *r = h->data;
	int rc = api_start_attempt(r);

	if (rc < 0) {
		snprintf(r->res.error, sizeof(r->res.error), "cannot start attempt %d: %s",
			 r->res.attempts, strerror(-rc));
		api_finish(r, API_GAVE_UP);
	}
}

/* reason has been put in r->res.error already. */
static void api_retry_or_give_up(struct api_request *r, int64_t retry_after_ms)
{
	int max_attempts = r->retry.max_attempts < 1 ? 1 : r->retry.max_attempts;
	int64_t cap = r->retry.max_backoff_ms < 0 ? 0 : r->retry.max_backoff_ms;
	int64_t delay;

	if (r->res.attempts >= max_attempts) {
		api_finish(r, API_GAVE_UP);
		return;
	}
	delay = api_backoff_ms(r->res.attempts, r->retry.initial_backoff_ms, cap);
	/* Retry-After means "not before": the later of the two, within the cap. */
	if (retry_after_ms >= 0) {
		if (retry_after_ms > cap)
			retry_after_ms = cap;
		if (retry_after_ms > delay)
			delay = retry_after_ms;
	}
	if (r->cbs.on_retry)
		r->cbs.on_retry(r->ud, r->res.attempts, r->res.http_status, delay, r->res.error);
	if (r->finished) /* on_retry cancelled it */
		return;
	/* The loop's clock is from the start of this iteration: refresh it so
	 * the wait is counted from now, not from before this response. */
	uv_update_time(r->client->loop);
	uv_timer_start(&r->retry_timer, api_retry_timer_cb, (uint64_t)delay, 0);
}

static void api_set_excerpt(struct api_request *r)
{
	size_t n = r->response.len < API_BODY_EXCERPT_BYTES ? r->response.len : API_BODY_EXCERPT_BYTES;

	if (n > 0 && !r->res.body_excerpt)
		api_set_string(&r->res.body_excerpt, r->response.data, n);
}

static int64_t api_retry_after(struct api_request *r)
{
	struct curl_header *h = NULL;

	if (curl_easy_header(r->easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h)
		return -1;
	return api_parse_retry_after(h->value, util_now_ms());
}

/* "HTTP 400: message" (message from the envelope, when there is one). */
static void api_describe_status(struct api_request *r, const char *prefix)
{
	struct api_result *res = &r->res;

	snprintf(res->error, sizeof(res->error), "%sHTTP %d%s%s", prefix, res->http_status,
		 res->message ? ": " : "", res->message ? res->message : "");
}

static void api_attempt_done(struct api_request *r, CURLcode result)
{
	struct api_result *res = &r->res;
	enum api_failure failure;
	long status = 0;
	int err;

	api_result_reset_response(res);
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	res->http_status = (int)status;

	if (result != CURLE_OK) {
		const char *detail = r->errbuf[0] ? r->errbuf : curl_easy_strerror(result);
		err = api_curl_errno(result, &failure);
		if (r->write_error == -ENOMEM) {
			util_strlcpy(res->error, "out of memory reading the response", sizeof(res->error));
		} else if (err == -EFBIG) {
			snprintf(res->error, sizeof(res->error),
				 "response body larger than %d bytes (HTTP %d)", API_MAX_RESPONSE_BYTES,
				 res->http_status);
		} else if (failure == API_FAIL_TLS) {
			snprintf(res->error, sizeof(res->error), "TLS verification failed for %s: %s",
				 r->host, detail);
			api_finish(r, API_GAVE_UP);
			return;
		} else if (failure == API_FAIL_FATAL) {
			snprintf(res->error, sizeof(res->error), "request to %s failed: %s", r->host,
				 detail);
			api_finish(r, API_GAVE_UP);
			return;
		} else {
			snprintf(res->error, sizeof(res->error), "%s: %s",
				 err == -ETIMEDOUT ? "timeout" : "network error", detail);
		}
		api_retry_or_give_up(r, -1);
		return;
	}

	if (r->response.len > 0 &&
	    api_decode_envelope(r->response.data, r->response.len, res) == -EBADMSG)
		api_set_excerpt(r);

	if (status == 202) {
		if (!res->task_id)
			api_set_excerpt(r);
		api_finish(r, API_ACCEPTED);
	} else if (status >= 200 && status < 300) {
		api_finish(r, API_OK);
	} else if (status == 401 || status == 403) {
		api_describe_status(r, "authentication failed: ");
		api_finish(r, API_AUTH_FAILED);
	} else if (status == 408 || status == 429 || status >= 500) {
		api_describe_status(r, "");
		api_retry_or_give_up(r, api_retry_after(r));
	} else if (status >= 300 && status < 400) {
		char *location = NULL;
		curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_URL, &location);
		snprintf(res->error, sizeof(res->error), "HTTP %d: redirect to %s not followed",
			 res->http_status, location ? location : "(no location)");
		api_finish(r, API_REJECTED);
	} else {
		api_describe_status(r, "");
		api_finish(r, API_REJECTED);
	}
}

static int api_request_start(struct api_client *c, const struct cfg_project *p, enum api_kind kind,
			     const char *apptoken, const char *task_id, const char *body, size_t len,
			     const struct api_callbacks *cbs, void *ud, struct api_request **out)
{
	struct api_request *r;
	int rc;

	if (out)
		*out = NULL;
	if (!c || !p || !apptoken || !cbs || (kind == API_KIND_IMPORT && !body))
		return -EINVAL;
	if (c->closing)
		return -ECANCELED;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->client = c;
	r->kind = kind;
	r->cbs = *cbs;
	r->ud = ud;
	r->retry = p->retry;
	r->connect_timeout_ms = p->connect_timeout_ms;
	r->request_timeout_ms = p->request_timeout_ms;
	rc = api_build_url(p->url, kind == API_KIND_IMPORT ? API_PATH_IMPORT : API_PATH_TASK, &r->url,
			   r->host, sizeof(r->host));
	if (rc < 0)
		goto fail;
	if (p->ca_file) {
		r->ca_file = strdup(p->ca_file);
		if (!r->ca_file) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	rc = api_build_body(apptoken, task_id, body, len, &r->body, &r->body_len);
	if (rc < 0)
		goto fail;
	rc = api_easy_setup(r);
	if (rc < 0)
		goto fail;
	rc = uv_timer_init(c->loop, &r->retry_timer);
	if (rc < 0)
		goto fail;
	r->retry_timer.data = r;
	c->open_handles++;
	r->next = c->requests;
	if (c->requests)
		c->requests->prev = r;
	c->requests = r;
	rc = api_start_attempt(r);
	if (rc < 0) {
		/* Nothing was reported yet: undo without calling done. */
		r->cbs.done = NULL;
		api_finish(r, API_GAVE_UP);
		return rc;
	}
	if (out)
		*out = r;
	return 0;
fail:
	if (r->easy)
		curl_easy_cleanup(r->easy);
	api_wipe_body(r);
	free(r->url);
	free(r->ca_file);
	free(r);
	return rc;
}

int api_import_profile(struct api_client *c, const struct cfg_project *p, const char *apptoken,
		       const char *body, size_t len, const struct api_callbacks *cbs, void *ud,
		       struct api_request **out)
{
	return api_request_start(c, p, API_KIND_IMPORT, apptoken, NULL, body, len, cbs, ud, out);
}

int api_task_info(struct api_client *c, const struct cfg_project *p, const char *apptoken,
		  const char *task_id, const struct api_callbacks *cbs, void *ud,
		  struct api_request **out)
{
	if (!task_id)
		return -EINVAL;
	return api_request_start(c, p, API_KIND_TASK, apptoken, task_id, NULL, 0, cbs, ud, out);
}

void api_request_cancel(struct api_request *r)
{
	if (!r || r->finished)
		return;
	util_strlcpy(r->res.error, "cancelled", sizeof(r->res.error));
	api_finish(r, API_CANCELLED);
}

void api_client_close(struct api_client *c, void (*closed)(void *ud), void *ud)
{
	if (!c || c->closing)
		return;
	c->closing = true;
	c->closed = closed;
	c->closed_ud = ud;
	/* done callbacks may cancel other requests: always take the head. */
	while (c->requests)
		api_request_cancel(c->requests);
	/* Closes the cached connections; curl may call the socket callback
	 * with CURL_POLL_REMOVE for them, or not: the list catches the rest. */
	api_client_free_curl(c);
	while (c->sockets)
		api_socket_close(c->sockets);
	uv_close((uv_handle_t *)&c->timer, api_client_timer_close_cb);
}
