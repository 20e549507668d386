/* test_control.c — the control socket: a real server on a libuv loop in a
 * thread, the blocking client of xpimportctl against it. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "control.h"
#include "util.h"

enum mode { MODE_ECHO, MODE_DELAY, MODE_HOLD, MODE_FD };

struct srv {
	uv_loop_t loop;
	uv_async_t stop;
	uv_timer_t delay;
	struct control_server *cs;
	pthread_t thread;
	char dir[64];
	char path[128];
	enum mode mode;
	int calls;
	struct control_reply *held;
	int held_rc;
	int loop_close_rc;
};

static void delay_cb(uv_timer_t *t)
{
	struct srv *s = t->data;
	struct control_reply *r = s->held;
	s->held = NULL;
	control_reply_send(r, json_pack("{sb ss}", "ok", 1, "answer", "late"));
}

static void handler(void *ud, const json_t *req, struct control_reply *reply)
{
	struct srv *s = ud;
	const char *cmd = json_string_value(json_object_get(req, "cmd"));

	s->calls++;
	switch (s->mode) {
	case MODE_ECHO:
		control_reply_send(reply, json_pack("{sb ss si}", "ok", 1, "cmd", cmd, "uid",
		                                    (int)control_reply_peer_uid(reply)));
		break;
	case MODE_DELAY:
		s->held = reply;
		uv_timer_start(&s->delay, delay_cb, 200, 0);
		break;
	case MODE_HOLD:
		s->held = reply;
		break;
	case MODE_FD: {
		int fd = control_reply_take_fd(reply);
		char buf[128] = "";
		ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
		if (fd >= 0)
			close(fd);
		if (n < 0)
			control_reply_error(reply, "invalid", "no fd (%d)", fd);
		else
			control_reply_send(reply,
			                   json_pack("{sb ss#}", "ok", 1, "content", buf, (int)n));
		break;
	}
	}
}

static void stop_cb(uv_async_t *a)
{
	struct srv *s = a->data;
	control_server_close(s->cs);
	if (s->held) {
		/* The server is closed: the answer is dropped, the reply freed. */
		s->held_rc = control_reply_send(s->held, json_pack("{sb}", "ok", 1));
		s->held = NULL;
	}
	uv_close((uv_handle_t *)&s->stop, NULL);
	uv_close((uv_handle_t *)&s->delay, NULL);
}

static void *loop_thread(void *arg)
{
	struct srv *s = arg;
	uv_run(&s->loop, UV_RUN_DEFAULT);
	s->loop_close_rc = uv_loop_close(&s->loop);
	return NULL;
}

static struct srv *srv_start(enum mode mode)
{
	struct srv *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	strcpy(s->dir, "/tmp/test_control.XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	snprintf(s->path, sizeof(s->path), "%s/run/control.sock", s->dir);
	s->mode = mode;
	s->held_rc = 1;
	assert_int_equal(uv_loop_init(&s->loop), 0);
	uv_async_init(&s->loop, &s->stop, stop_cb);
	s->stop.data = s;
	uv_timer_init(&s->loop, &s->delay);
	s->delay.data = s;
	assert_int_equal(control_server_start(&s->loop, s->path, handler, s, &s->cs), 0);
	assert_int_equal(pthread_create(&s->thread, NULL, loop_thread, s), 0);
	return s;
}

static void srv_stop(struct srv *s)
{
	char run[128];
	uv_async_send(&s->stop);
	pthread_join(s->thread, NULL);
	assert_int_equal(s->loop_close_rc, 0);       /* every handle was closed */
	assert_int_equal(access(s->path, F_OK), -1); /* the socket file is gone */
	snprintf(run, sizeof(run), "%s/run", s->dir);
	rmdir(run);
	rmdir(s->dir);
	free(s);
}

static json_t *request(const char *path, const char *cmd, int timeout_ms, int *rc, char *err,
                       size_t errlen)
{
	json_t *req = json_pack("{ss}", "cmd", cmd), *resp = NULL;
	*rc = control_request(path, req, timeout_ms, &resp, err, errlen);
	json_decref(req);
	return resp;
}

/* Raw bytes in, the answer line out (for requests the client would not send). */
static char *raw_exchange(const char *path, const char *data, size_t len)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	static char buf[4096];
	size_t got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	strcpy(sun.sun_path, path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n <= 0)
			break; /* the server may stop reading once it has answered */
		data += n;
		len -= (size_t)n;
	}
	for (;;) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	close(fd);
	return buf;
}

static void test_roundtrip(void **state)
{
	struct srv *s = srv_start(MODE_ECHO);
	struct stat st;
	char err[256];
	int rc;

	assert_int_equal(stat(s->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0660);
	json_t *resp = request(s->path, "status", 2000, &rc, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_true(json_is_true(json_object_get(resp, "ok")));
	assert_string_equal(json_string_value(json_object_get(resp, "cmd")), "status");
	assert_int_equal(json_integer_value(json_object_get(resp, "uid")), (json_int_t)geteuid());
	json_decref(resp);
	/* one request per connection, many connections */
	for (int i = 0; i < 20; i++) {
		resp = request(s->path, "status", 2000, &rc, err, sizeof(err));
		assert_int_equal(rc, 0);
		json_decref(resp);
	}
	assert_int_equal(s->calls, 21);
	srv_stop(s);
}

static void test_async_reply(void **state)
{
	struct srv *s = srv_start(MODE_DELAY);
	char err[256];
	int rc;
	int64_t t0 = util_mono_ms();

	json_t *resp = request(s->path, "run", 5000, &rc, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_true(util_mono_ms() - t0 >= 190);
	assert_string_equal(json_string_value(json_object_get(resp, "answer")), "late");
	json_decref(resp);
	srv_stop(s);
}

static void test_bad_requests(void **state)
{
	struct srv *s = srv_start(MODE_ECHO);

	const char *a = raw_exchange(s->path, "not json\n", 9);
	assert_non_null(strstr(a, "\"ok\":false"));
	assert_non_null(strstr(a, "\"code\":\"invalid\""));
	assert_non_null(strstr(a, "bad request: "));
	a = raw_exchange(s->path, "{\"job\":\"x\"}\n", 12);
	assert_non_null(strstr(a, "bad request: not a JSON object with a string \\\"cmd\\\""));
	a = raw_exchange(s->path, "[1,2]\n", 6);
	assert_non_null(strstr(a, "not a JSON object"));
	a = raw_exchange(s->path, "{\"cmd\":\"a\",\"cmd\":\"b\"}\n", 22);
	assert_non_null(strstr(a, "\"ok\":false")); /* duplicate keys refused */
	/* A hang-up before the newline: no answer, no handler call. */
	a = raw_exchange(s->path, "{\"cmd\":\"status\"}", 16);
	assert_string_equal(a, "");
	size_t big = 70000;
	char *junk = malloc(big);
	memset(junk, 'x', big);
	a = raw_exchange(s->path, junk, big);
	free(junk);
	assert_non_null(strstr(a, "bad request: longer than 64 KiB"));
	assert_int_equal(s->calls, 0);
	srv_stop(s);
}

static void test_timeout_then_late_reply(void **state)
{
	struct srv *s = srv_start(MODE_HOLD);
	char err[256];
	int rc;

	json_t *resp = request(s->path, "run", 300, &rc, err, sizeof(err));
	assert_int_equal(rc, -ETIMEDOUT);
	assert_null(resp);
	assert_non_null(strstr(err, "no answer from the daemon on "));
	assert_non_null(strstr(err, "within 1 s"));
	srv_stop(s); /* closes the server, then sends the held reply */
}

static void test_held_reply_after_close(void **state)
{
	/* srv_stop checked the loop closed; here check what send said. */
	struct srv *s = srv_start(MODE_HOLD);
	char err[256];
	int rc;

	json_t *resp = request(s->path, "run", 200, &rc, err, sizeof(err));
	assert_int_equal(rc, -ETIMEDOUT);
	json_decref(resp);
	uv_async_send(&s->stop);
	pthread_join(s->thread, NULL);
	assert_int_equal(s->held_rc, -EPIPE);
	assert_int_equal(s->loop_close_rc, 0);
	s->thread = 0;
	char run[128];
	snprintf(run, sizeof(run), "%s/run", s->dir);
	rmdir(run);
	rmdir(s->dir);
	free(s);
}

static void test_fd_passing(void **state)
{
	struct srv *s = srv_start(MODE_FD);
	char file[128], err[256];
	json_t *resp = NULL;

	snprintf(file, sizeof(file), "%s/upload.csv", s->dir);
	FILE *f = fopen(file, "w");
	fputs("user_id\nu1\n", f);
	fclose(f);
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	json_t *req = json_pack("{ss}", "cmd", "import");
	assert_int_equal(control_request_fd(s->path, req, fd, 2000, &resp, err, sizeof(err)), 0);
	assert_string_equal(json_string_value(json_object_get(resp, "content")), "user_id\nu1\n");
	json_decref(resp);
	/* without an fd the handler sees -1 */
	assert_int_equal(control_request(s->path, req, 2000, &resp, err, sizeof(err)), 0);
	assert_string_equal(json_string_value(json_object_get(resp, "error")), "no fd (-1)");
	assert_string_equal(json_string_value(json_object_get(resp, "code")), "invalid");
	json_decref(resp);
	json_decref(req);
	close(fd);
	unlink(file);
	srv_stop(s);
}

static void test_no_daemon(void **state)
{
	char dir[] = "/tmp/test_control_nd.XXXXXX", path[128], err[256];
	int rc;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/control.sock", dir);
	json_t *resp = request(path, "status", 1000, &rc, err, sizeof(err));
	assert_int_equal(rc, -ENOENT);
	assert_null(resp);
	char want[200];
	snprintf(want, sizeof(want), "no socket at %s", path);
	assert_string_equal(err, want);

	/* A socket file nobody listens on (a daemon that was killed). */
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	strcpy(sun.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	resp = request(path, "status", 1000, &rc, err, sizeof(err));
	assert_int_equal(rc, -ECONNREFUSED);
	snprintf(want, sizeof(want), "nothing listens on %s (a stale socket)", path);
	assert_string_equal(err, want);

	/* The daemon replaces such a stale socket when it starts... */
	uv_loop_t loop;
	struct control_server *cs = NULL;
	uv_loop_init(&loop);
	assert_int_equal(control_server_start(&loop, path, handler, NULL, &cs), 0);
	control_server_close(cs);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(access(path, F_OK), -1);
	/* ...but never a file that is not a socket. */
	FILE *f = fopen(path, "w");
	fclose(f);
	uv_loop_init(&loop);
	assert_int_equal(control_server_start(&loop, path, handler, NULL, &cs), -EADDRINUSE);
	assert_null(cs);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
	rmdir(dir);
}

static void test_peer_refused(void **state)
{
	if (geteuid() != 0) {
		skip();
		return;
	}
	struct srv *s = srv_start(MODE_ECHO);
	char run[128];
	/* Open the socket and its directories to everyone, so that only the
	 * SO_PEERCRED check stands between "nobody" and the daemon. */
	snprintf(run, sizeof(run), "%s/run", s->dir);
	chmod(s->dir, 0755);
	chmod(run, 0755);
	chmod(s->path, 0666);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[256];
		json_t *resp = NULL, *req = json_pack("{ss}", "cmd", "status");
		if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		if (control_request(s->path, req, 5000, &resp, err, sizeof(err)) < 0) {
			fprintf(stderr, "child: %s\n", err);
			_exit(11);
		}
		if (json_is_true(json_object_get(resp, "ok")))
			_exit(12);
		if (strcmp(json_string_value(json_object_get(resp, "code")), "refused") != 0)
			_exit(13);
		if (!strstr(json_string_value(json_object_get(resp, "error")),
		            "permission denied: uid 65534 is not root"))
			_exit(14);
		_exit(0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(s->calls, 0);
	srv_stop(s);
}

static void test_peer_allowed(void **state)
{
	gid_t groups[] = {27, 118};
	assert_true(control_peer_allowed(0, 0, NULL, 0, 999, 998));         /* root */
	assert_true(control_peer_allowed(999, 5, NULL, 0, 999, 998));       /* the daemon's user */
	assert_true(control_peer_allowed(1000, 998, NULL, 0, 999, 998));    /* primary group */
	assert_true(control_peer_allowed(1000, 1000, groups, 2, 999, 118)); /* supplementary */
	assert_false(control_peer_allowed(1000, 1000, groups, 2, 999, 998));
	assert_false(control_peer_allowed(65534, 65534, NULL, 0, 999, 998));
}

static void test_socket_path(void **state)
{
	char out[128];
	char longdir[200];

	assert_int_equal(control_socket_path("/tmp/x", out, sizeof(out)), 0);
	assert_string_equal(out, "/tmp/x/control.sock");
	setenv("RUNTIME_DIRECTORY", "/run/a:/run/b", 1);
	assert_int_equal(control_socket_path(NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "/run/a/control.sock");
	assert_int_equal(control_socket_path("", out, sizeof(out)), 0);
	assert_string_equal(out, "/run/a/control.sock");
	unsetenv("RUNTIME_DIRECTORY");
	assert_int_equal(control_socket_path(NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "/run/xpimportd/control.sock");
	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	assert_int_equal(control_socket_path(longdir, out, sizeof(out)), -ENAMETOOLONG);
}

static void test_job_state_edits(void **state)
{
	json_t *js = json_pack("{s{ss si si}}", "paused", "reason", "authentication failed",
	                       "since", 5, "http_status", 401);
	/* 2026-12-03T18:20:00Z */
	int64_t t = 1796322000000;

	assert_int_equal(control_job_resume(js, "alice", t), 1);
	assert_null(json_object_get(js, "paused"));
	json_t *h = json_object_get(js, "history");
	assert_int_equal(json_array_size(h), 1);
	json_t *e = json_array_get(h, 0);
	assert_string_equal(json_string_value(json_object_get(e, "action")), "resume");
	assert_string_equal(json_string_value(json_object_get(e, "who")), "alice");
	char when[40];
	util_format_time(t, when, sizeof(when));
	assert_string_equal(json_string_value(json_object_get(e, "when")), when);
	assert_null(json_object_get(e, "file"));
	assert_int_equal(control_job_resume(js, "alice", t), 0); /* not paused: nothing added */
	assert_int_equal(json_array_size(h), 1);

	assert_int_equal(control_job_history_add(js, "forget", "bob", "/in/a.csv", t), 0);
	e = json_array_get(h, 1);
	assert_string_equal(json_string_value(json_object_get(e, "file")), "/in/a.csv");
	for (int i = 0; i < CONTROL_HISTORY_MAX + 50; i++)
		assert_int_equal(control_job_history_add(js, "forget", "bob", "x", t + i), 0);
	assert_int_equal(json_array_size(h), CONTROL_HISTORY_MAX);
	/* the newest are kept */
	util_format_time(t + CONTROL_HISTORY_MAX + 49, when, sizeof(when));
	e = json_array_get(h, CONTROL_HISTORY_MAX - 1);
	assert_string_equal(json_string_value(json_object_get(e, "when")), when);
	json_decref(js);

	json_t *arr = json_array();
	assert_int_equal(control_job_history_add(arr, "forget", "bob", NULL, t), -EINVAL);
	assert_int_equal(control_job_resume(arr, "bob", t), -EINVAL);
	json_decref(arr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_async_reply),
	    cmocka_unit_test(test_bad_requests),
	    cmocka_unit_test(test_timeout_then_late_reply),
	    cmocka_unit_test(test_held_reply_after_close),
	    cmocka_unit_test(test_fd_passing),
	    cmocka_unit_test(test_no_daemon),
	    cmocka_unit_test(test_peer_refused),
	    cmocka_unit_test(test_peer_allowed),
	    cmocka_unit_test(test_socket_path),
	    cmocka_unit_test(test_job_state_edits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
