/* control.c — the control socket (see control.h). The server drives plain
 * non-blocking sockets with uv_poll_t so that it can read SO_PEERCRED and
 * receive a file descriptor (SCM_RIGHTS) along with a request. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

#define CONTROL_MAX_PEER_GROUPS 256

/* ---- paths ------------------------------------------------------------- */

int control_socket_path(const char *runtime_dir, char *out, size_t len)
{
	char first[4096];
	struct sockaddr_un sun;

	if (!runtime_dir || !*runtime_dir) {
		const char *env = getenv("RUNTIME_DIRECTORY");
		runtime_dir = CONTROL_DEFAULT_RUNTIME_DIR;
		if (env && *env) {
			/* systemd lists several directories separated by ':'. */
			size_t n = strcspn(env, ":");
			if (n > 0 && n < sizeof(first)) {
				memcpy(first, env, n);
				first[n] = '\0';
				runtime_dir = first;
			}
		}
	}
	int n = snprintf(out, len, "%s/%s", runtime_dir, CONTROL_SOCKET_NAME);
	if (n < 0 || (size_t)n >= len || (size_t)n >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	return 0;
}

bool control_peer_allowed(uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups,
                          uid_t self_uid, gid_t sock_gid)
{
	if (uid == 0 || uid == self_uid || gid == sock_gid)
		return true;
	for (size_t i = 0; i < n_groups; i++)
		if (groups[i] == sock_gid)
			return true;
	return false;
}

/* ---- server ------------------------------------------------------------ */

enum conn_state { CONN_READING, CONN_HANDLING, CONN_WRITING, CONN_CLOSING };

struct control_conn {
	struct control_server *srv;
	struct control_conn *next;
	uv_poll_t poll;
	int fd;
	enum conn_state state;
	int64_t since_ms; /* entered READING or WRITING */
	char *in;
	size_t in_len;
	char *out;
	size_t out_len, out_off;
	int passed_fd;
	struct ucred cred;
	struct control_reply *reply;
};

struct control_reply {
	struct control_conn *conn; /* NULL once the connection is gone */
	int fd;                    /* passed by the client, -1 if none */
	uid_t uid;
	pid_t pid;
};

struct control_server {
	uv_loop_t *loop;
	uv_poll_t poll;
	uv_timer_t sweep;
	int fd;
	char *path;
	dev_t dev;
	ino_t ino;
	gid_t sock_gid;
	uid_t self_uid;
	control_handler_fn handler;
	void *ud;
	struct control_conn *conns;
	size_t n_conns;
	int open_handles;
	bool closing;
};

static void conn_close(struct control_conn *c);

static void server_maybe_free(struct control_server *s)
{
	if (s->closing && s->open_handles == 0) {
		free(s->path);
		free(s);
	}
}

static void conn_closed(uv_handle_t *h)
{
	struct control_conn *c = h->data;
	struct control_server *s = c->srv;

	close(c->fd);
	if (c->passed_fd >= 0)
		close(c->passed_fd);
	for (struct control_conn **pp = &s->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	s->n_conns--;
	free(c->in);
	free(c->out);
	free(c);
	s->open_handles--;
	server_maybe_free(s);
}

static void conn_close(struct control_conn *c)
{
	if (c->state == CONN_CLOSING)
		return;
	c->state = CONN_CLOSING;
	if (c->reply) {
		c->reply->conn = NULL; /* the handler still owns it */
		c->reply = NULL;
	}
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, conn_closed);
}

static void conn_on_event(uv_poll_t *p, int status, int events);

static void conn_write_some(struct control_conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return; /* wait for UV_WRITABLE */
			conn_close(c);
			return;
		}
		c->out_off += (size_t)n;
	}
	shutdown(c->fd, SHUT_WR);
	conn_close(c);
}

/* Queue response (reference taken) and start writing it. */
static int conn_respond(struct control_conn *c, json_t *response)
{
	char *text = response ? json_dumps(response, JSON_COMPACT) : NULL;
	json_decref(response);
	if (!text) {
		static const char fallback[] = "{\"ok\":false,\"error\":\"internal error\"}";
		text = strdup(fallback);
		if (!text) {
			conn_close(c);
			return -ENOMEM;
		}
	}
	size_t n = strlen(text);
	char *out = realloc(text, n + 2);
	if (!out) {
		free(text);
		conn_close(c);
		return -ENOMEM;
	}
	out[n] = '\n';
	out[n + 1] = '\0';
	c->out = out;
	c->out_len = n + 1;
	c->out_off = 0;
	c->state = CONN_WRITING;
	c->since_ms = util_mono_ms();
	conn_write_some(c);
	if (c->state == CONN_WRITING)
		uv_poll_start(&c->poll, UV_WRITABLE, conn_on_event);
	return 0;
}

static json_t *error_response(const char *code, const char *msg)
{
	json_t *r = json_pack("{sb ss}", "ok", 0, "error", msg);
	if (r && code)
		json_object_set_new(r, "code", json_string(code));
	return r;
}

static void conn_dispatch(struct control_conn *c, size_t line_len)
{
	json_error_t jerr;
	json_t *req = json_loadb(c->in, line_len, JSON_REJECT_DUPLICATES, &jerr);
	char msg[300];

	uv_poll_stop(&c->poll);
	c->state = CONN_HANDLING;
	if (!req || !json_is_object(req) || !json_is_string(json_object_get(req, "cmd"))) {
		snprintf(msg, sizeof(msg), "bad request: %s",
		         req ? "not a JSON object with a string \"cmd\"" : jerr.text);
		json_decref(req);
		conn_respond(c, error_response("invalid", msg));
		return;
	}
	struct control_reply *reply = calloc(1, sizeof(*reply));
	if (!reply) {
		json_decref(req);
		conn_respond(c, NULL);
		return;
	}
	reply->conn = c;
	reply->fd = c->passed_fd;
	c->passed_fd = -1;
	reply->uid = c->cred.uid;
	reply->pid = c->cred.pid;
	c->reply = reply;
	c->srv->handler(c->srv->ud, req, reply);
	json_decref(req);
}

static void conn_read(struct control_conn *c)
{
	for (;;) {
		char cbuf[CMSG_SPACE(4 * sizeof(int))];
		size_t room = CONTROL_MAX_REQUEST - c->in_len;
		if (room == 0) {
			conn_respond(c,
			             error_response("invalid", "bad request: longer than 64 KiB"));
			return;
		}
		struct iovec iov = {c->in + c->in_len, room};
		struct msghdr mh = {.msg_iov = &iov,
		                    .msg_iovlen = 1,
		                    .msg_control = cbuf,
		                    .msg_controllen = sizeof(cbuf)};
		ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_close(c);
			return;
		}
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < nfd; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				if (c->passed_fd < 0)
					c->passed_fd = fd; /* one fd per request; others closed */
				else
					close(fd);
			}
		}
		if (n == 0) {
			conn_close(c); /* hung up before a full line */
			return;
		}
		char *nl = memchr(c->in + c->in_len, '\n', (size_t)n);
		c->in_len += (size_t)n;
		if (nl) {
			conn_dispatch(c, (size_t)(nl - c->in));
			return;
		}
	}
}

static void conn_on_event(uv_poll_t *p, int status, int events)
{
	struct control_conn *c = p->data;

	if (status < 0) {
		conn_close(c);
		return;
	}
	if (c->state == CONN_READING && (events & UV_READABLE))
		conn_read(c);
	else if (c->state == CONN_WRITING && (events & UV_WRITABLE))
		conn_write_some(c);
}

static bool peer_allowed(const struct control_server *s, int fd, struct ucred *cred)
{
	socklen_t len = sizeof(*cred);
	gid_t groups[CONTROL_MAX_PEER_GROUPS];
	size_t n_groups = 0;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
		return false;
#ifdef SO_PEERGROUPS
	socklen_t glen = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0)
		n_groups = glen / sizeof(gid_t);
#endif
	return control_peer_allowed(cred->uid, cred->gid, groups, n_groups, s->self_uid,
	                            s->sock_gid);
}

static void server_on_accept(uv_poll_t *p, int status, int events)
{
	struct control_server *s = p->data;

	if (status < 0 || s->closing)
		return;
	for (;;) {
		int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return; /* EAGAIN, or EMFILE and friends: try on the next event */
		}
		if (s->n_conns >= CONTROL_MAX_CONNECTIONS) {
			close(fd);
			continue;
		}
		struct control_conn *c = calloc(1, sizeof(*c));
		if (c)
			c->in = malloc(CONTROL_MAX_REQUEST);
		if (!c || !c->in || uv_poll_init(s->loop, &c->poll, fd) < 0) {
			if (c)
				free(c->in);
			free(c);
			close(fd);
			continue;
		}
		c->srv = s;
		c->fd = fd;
		c->passed_fd = -1;
		c->poll.data = c;
		c->since_ms = util_mono_ms();
		c->next = s->conns;
		s->conns = c;
		s->n_conns++;
		s->open_handles++;
		if (!peer_allowed(s, fd, &c->cred)) {
			char msg[200];
			snprintf(
			    msg, sizeof(msg),
			    "permission denied: uid %u is not root, the daemon's user or a member "
			    "of the socket's group (gid %u)",
			    (unsigned)c->cred.uid, (unsigned)s->sock_gid);
			c->state = CONN_HANDLING;
			conn_respond(c, error_response("refused", msg));
			continue;
		}
		c->state = CONN_READING;
		uv_poll_start(&c->poll, UV_READABLE, conn_on_event);
	}
}

/* Requests must arrive promptly: a client that connects and says nothing
 * would otherwise hold a connection slot forever. */
static void server_sweep(uv_timer_t *t)
{
	struct control_server *s = t->data;
	int64_t now = util_mono_ms();

	for (struct control_conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if ((c->state == CONN_READING || c->state == CONN_WRITING) &&
		    now - c->since_ms > CONTROL_READ_TIMEOUT_MS)
			conn_close(c); /* silent, or never reads its answer */
	}
}

static void server_handle_closed(uv_handle_t *h)
{
	struct control_server *s = h->data;
	s->open_handles--;
	server_maybe_free(s);
}

static void listener_closed(uv_handle_t *h)
{
	struct control_server *s = h->data;
	struct stat st;

	/* Remove the socket file only if it is still the one we bound. */
	if (lstat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
		unlink(s->path);
	close(s->fd);
	server_handle_closed(h);
}

/* Bind to a temporary name, set the mode, then rename into place: the
 * socket never exists at its public path with a looser mode. */
static int bind_socket(const char *path, int *fd_out, struct stat *st_out)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char tmp[sizeof(sun.sun_path)];
	struct stat st;
	int r;

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode))
		return -EADDRINUSE;
	const char *slash = strrchr(path, '/');
	if (slash && slash != path) {
		char dir[sizeof(sun.sun_path)];
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return -errno;
	}
	r = snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
	if (r < 0 || (size_t)r >= sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(tmp);
	memcpy(sun.sun_path, tmp, strlen(tmp) + 1);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (chmod(tmp, 0660) < 0 || listen(fd, 16) < 0 || rename(tmp, path) < 0 ||
	    lstat(path, st_out) < 0) {
		r = -errno;
		unlink(tmp);
		close(fd);
		return r;
	}
	*fd_out = fd;
	return 0;
}

int control_server_start(uv_loop_t *loop, const char *socket_path, control_handler_fn handler,
                         void *ud, struct control_server **out)
{
	struct control_server *s = calloc(1, sizeof(*s));
	struct stat st;
	int r;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->path = strdup(socket_path);
	if (!s->path) {
		free(s);
		return -ENOMEM;
	}
	r = bind_socket(socket_path, &s->fd, &st);
	if (r < 0) {
		free(s->path);
		free(s);
		return r;
	}
	s->loop = loop;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->sock_gid = st.st_gid;
	s->self_uid = geteuid();
	s->handler = handler;
	s->ud = ud;
	r = uv_poll_init(loop, &s->poll, s->fd);
	if (r < 0) {
		unlink(socket_path);
		close(s->fd);
		free(s->path);
		free(s);
		return r;
	}
	s->poll.data = s;
	s->open_handles++;
	uv_timer_init(loop, &s->sweep);
	s->sweep.data = s;
	s->open_handles++;
	uv_timer_start(&s->sweep, server_sweep, 1000, 1000);
	uv_unref((uv_handle_t *)&s->sweep);
	uv_poll_start(&s->poll, UV_READABLE, server_on_accept);
	*out = s;
	return 0;
}

void control_server_close(struct control_server *s)
{
	if (!s || s->closing)
		return;
	s->closing = true;
	for (struct control_conn *c = s->conns; c; c = c->next)
		conn_close(c);
	uv_poll_stop(&s->poll);
	uv_close((uv_handle_t *)&s->poll, listener_closed);
	uv_timer_stop(&s->sweep);
	uv_close((uv_handle_t *)&s->sweep, server_handle_closed);
}

int control_reply_send(struct control_reply *reply, json_t *response)
{
	struct control_conn *c = reply->conn;
	int r = -EPIPE;

	if (reply->fd >= 0)
		close(reply->fd);
	if (c && c->state == CONN_HANDLING) {
		c->reply = NULL;
		r = conn_respond(c, response);
	} else {
		json_decref(response);
	}
	free(reply);
	return r;
}

int control_reply_error(struct control_reply *reply, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return control_reply_send(reply, error_response(code, msg));
}

int control_reply_take_fd(struct control_reply *reply)
{
	int fd = reply->fd;
	reply->fd = -1;
	return fd;
}

uid_t control_reply_peer_uid(const struct control_reply *reply)
{
	return reply->uid;
}

pid_t control_reply_peer_pid(const struct control_reply *reply)
{
	return reply->pid;
}

/* ---- client ------------------------------------------------------------ */

static int client_send(int fd, const char *data, size_t len, int send_fd)
{
	bool fd_sent = send_fd < 0;

	while (len > 0) {
		struct iovec iov = {(void *)(uintptr_t)data, len};
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		if (!fd_sent) {
			memset(cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof(cbuf);
			struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &send_fd, sizeof(int));
		}
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		fd_sent = true;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read until "\n"; the line is in sb (without the newline). */
static int client_recv(int fd, int timeout_ms, struct strbuf *sb)
{
	int64_t deadline = timeout_ms >= 0 ? util_mono_ms() + timeout_ms : -1;
	char buf[65536];

	for (;;) {
		int wait = -1;
		if (deadline >= 0) {
			int64_t left = deadline - util_mono_ms();
			if (left <= 0)
				return -ETIMEDOUT;
			wait = left > 1000000 ? 1000000 : (int)left;
		}
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int pr = poll(&pfd, 1, wait);
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pr == 0)
			continue; /* the deadline check above ends it */
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		char *nl = memchr(buf, '\n', (size_t)n);
		size_t take = nl ? (size_t)(nl - buf) : (size_t)n;
		if (sb->len + take > CONTROL_MAX_RESPONSE)
			return -EBADMSG;
		if (strbuf_append(sb, buf, take) < 0)
			return -ENOMEM;
		if (nl)
			return 0;
	}
}

int control_request_fd(const char *socket_path, const json_t *req, int send_fd, int timeout_ms,
                       json_t **resp, char *err, size_t errlen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct strbuf sb = {0};
	char *text = NULL;
	int fd = -1, r;

	*resp = NULL;
	if (errlen)
		err[0] = '\0';
	if (strlen(socket_path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "socket path %s is too long", socket_path);
		return -ENAMETOOLONG;
	}
	memcpy(sun.sun_path, socket_path, strlen(socket_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create a socket: %s", strerror(-r));
		return r;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		r = -errno;
		if (r == -ENOENT)
			snprintf(err, errlen, "no socket at %s", socket_path);
		else if (r == -ECONNREFUSED)
			snprintf(err, errlen, "nothing listens on %s (a stale socket)",
			         socket_path);
		else if (r == -EACCES || r == -EPERM)
			snprintf(err, errlen, "permission denied on %s", socket_path);
		else
			snprintf(err, errlen, "cannot connect to %s: %s", socket_path,
			         strerror(-r));
		if (r == -EPERM)
			r = -EACCES;
		goto out;
	}
	text = json_dumps(req, JSON_COMPACT);
	if (!text || strlen(text) >= CONTROL_MAX_REQUEST) {
		r = text ? -E2BIG : -ENOMEM;
		snprintf(err, errlen, "cannot encode the request: %s", strerror(-r));
		goto out;
	}
	size_t n = strlen(text);
	text[n] = '\n'; /* json_dumps' NUL becomes the newline; length n + 1 */
	r = client_send(fd, text, n + 1, send_fd);
	if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
		snprintf(err, errlen, "cannot send the request to %s: %s", socket_path,
		         strerror(-r));
		goto out;
	}
	/* Even when the daemon hung up while we were sending, it may have
	 * answered first (a refused peer): read what it said. */
	r = client_recv(fd, timeout_ms, &sb);
	if (r == -ETIMEDOUT) {
		snprintf(err, errlen, "no answer from the daemon on %s within %d s", socket_path,
		         (timeout_ms + 999) / 1000);
		goto out;
	} else if (r == -ECONNRESET) {
		snprintf(err, errlen, "the daemon closed %s without answering", socket_path);
		goto out;
	} else if (r == -EBADMSG) {
		snprintf(err, errlen, "the daemon's answer on %s is longer than %d bytes",
		         socket_path, CONTROL_MAX_RESPONSE);
		goto out;
	} else if (r < 0) {
		snprintf(err, errlen, "reading the answer on %s: %s", socket_path, strerror(-r));
		goto out;
	}
	json_error_t jerr;
	json_t *doc = json_loadb(sb.data ? sb.data : "", sb.len, 0, &jerr);
	if (!doc || !json_is_object(doc)) {
		json_decref(doc);
		snprintf(err, errlen, "the daemon's answer on %s is not a JSON object",
		         socket_path);
		r = -EBADMSG;
		goto out;
	}
	*resp = doc;
	r = 0;
out:
	free(text);
	strbuf_free(&sb);
	if (fd >= 0)
		close(fd);
	return r;
}

int control_request(const char *socket_path, const json_t *req, int timeout_ms, json_t **resp,
                    char *err, size_t errlen)
{
	return control_request_fd(socket_path, req, -1, timeout_ms, resp, err, errlen);
}

/* ---- job-state edits ---------------------------------------------------- */

int control_job_history_add(json_t *job_state, const char *action, const char *who,
                            const char *file, int64_t now_ms)
{
	char when[40];

	if (!json_is_object(job_state))
		return -EINVAL;
	json_t *hist = json_object_get(job_state, "history");
	if (!json_is_array(hist)) {
		hist = json_array();
		if (!hist || json_object_set_new(job_state, "history", hist) < 0)
			return -ENOMEM;
	}
	util_format_time(now_ms, when, sizeof(when));
	json_t *e =
	    json_pack("{ss ss ss}", "action", action, "who", who ? who : "unknown", "when", when);
	if (!e)
		return -ENOMEM;
	if (file)
		json_object_set_new(e, "file", json_string(file));
	if (json_array_append_new(hist, e) < 0)
		return -ENOMEM;
	while (json_array_size(hist) > CONTROL_HISTORY_MAX)
		json_array_remove(hist, 0);
	return 0;
}

int control_job_resume(json_t *job_state, const char *who, int64_t now_ms)
{
	if (!json_is_object(job_state))
		return -EINVAL;
	if (!json_object_get(job_state, "paused"))
		return 0;
	json_object_del(job_state, "paused");
	int r = control_job_history_add(job_state, "resume", who, NULL, now_ms);
	return r < 0 ? r : 1;
}
