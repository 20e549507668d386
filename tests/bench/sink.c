/* sink.c — a minimal fast HTTPS (or HTTP) sink for the benchmarks: one
 * thread per connection, TCP_NODELAY, HTTP/1.1 keep-alive with
 * Content-Length bodies (read and discarded), "Expect: 100-continue"
 * answered, and every request answered 200 with the import API's envelope
 * {"code":200,"success":true,"message":"ok"} (info/task: a complete task).
 *
 *   sink [--no-tls | --cert CERT --key KEY] [--port N] [--port-file FILE]
 *
 * --port 0 (the default) takes an ephemeral port; --port-file receives it
 * once the socket listens. On SIGTERM or SIGINT it prints
 *   sink requests=N body_bytes=M connections=C errors=E
 * to stdout and exits 0. Not a product file: no limits beyond the header
 * size (64 KiB), bodies up to 1 GiB.
 *
 * Build: gcc -O2 -pthread -o sink sink.c -lssl -lcrypto */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define SINK_HDR_MAX (64 * 1024)
#define SINK_BUF (256 * 1024)
#define SINK_BODY_MAX (1024LL * 1024 * 1024)

static SSL_CTX *ctx;                 /* NULL: plain HTTP */
static atomic_ullong n_requests, n_body_bytes, n_conns, n_errors;

struct conn {
	int fd;
	SSL *ssl;
	char buf[SINK_BUF];
	size_t have;                 /* bytes in buf */
};

static ssize_t conn_read(struct conn *c, char *p, size_t n)
{
	if (!c->ssl) {
		ssize_t r;
		do
			r = read(c->fd, p, n);
		while (r < 0 && errno == EINTR);
		return r;
	}
	int r = SSL_read(c->ssl, p, n > (size_t)INT32_MAX ? INT32_MAX : (int)n);
	if (r > 0)
		return r;
	int e = SSL_get_error(c->ssl, r);
	return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
}

static int conn_write(struct conn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w;
		if (c->ssl) {
			int r = SSL_write(c->ssl, p, (int)n);
			if (r <= 0)
				return -1;
			w = r;
		} else {
			w = write(c->fd, p, n);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The value of header NAME in the header block [h, h+len), or NULL. */
static const char *header_value(const char *h, size_t len, const char *name, size_t *vlen)
{
	size_t nl = strlen(name);
	const char *end = h + len;
	const char *line = memchr(h, '\n', len); /* skip the request line */

	while (line && line + 1 < end) {
		line++;
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		if (!eol)
			break;
		if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
			const char *v = line + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			const char *ve = eol;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
				ve--;
			*vlen = (size_t)(ve - v);
			return v;
		}
		line = eol;
	}
	return NULL;
}

static bool value_is(const char *v, size_t vlen, const char *what)
{
	return v && vlen == strlen(what) && strncasecmp(v, what, vlen) == 0;
}

/* One request; 1 to keep the connection, 0 to close it. */
static int serve_one(struct conn *c)
{
	char *hend;

	for (;;) {
		hend = c->have >= 4 ? memmem(c->buf, c->have, "\r\n\r\n", 4) : NULL;
		if (hend)
			break;
		if (c->have >= SINK_HDR_MAX)
			return 0;
		ssize_t r = conn_read(c, c->buf + c->have, SINK_BUF - c->have);
		if (r <= 0)
			return 0;
		c->have += (size_t)r;
	}
	size_t hlen = (size_t)(hend - c->buf) + 4, vlen = 0;
	const char *v;
	long long clen = 0;
	bool keep = true, task = memmem(c->buf, hlen, "/info/task", 10) != NULL;

	if ((v = header_value(c->buf, hlen, "Transfer-Encoding", &vlen)))
		return 0; /* not supported: the clients measured send Content-Length */
	if ((v = header_value(c->buf, hlen, "Content-Length", &vlen))) {
		char num[24];
		if (vlen == 0 || vlen >= sizeof(num))
			return 0;
		memcpy(num, v, vlen);
		num[vlen] = '\0';
		char *e;
		clen = strtoll(num, &e, 10);
		if (*e || clen < 0 || clen > SINK_BODY_MAX)
			return 0;
	}
	if ((v = header_value(c->buf, hlen, "Connection", &vlen)) && value_is(v, vlen, "close"))
		keep = false;
	if ((v = header_value(c->buf, hlen, "Expect", &vlen)) && value_is(v, vlen, "100-continue")) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		if (conn_write(c, cont, sizeof(cont) - 1) < 0)
			return 0;
	}
	/* the body: what is already buffered, then read and discard the rest */
	size_t extra = c->have - hlen;
	long long left = clen;
	if ((long long)extra >= left) {
		size_t rest = extra - (size_t)left;
		memmove(c->buf, c->buf + hlen + (size_t)left, rest);
		c->have = rest;
		left = 0;
	} else {
		left -= (long long)extra;
		c->have = 0;
	}
	while (left > 0) {
		ssize_t r = conn_read(c, c->buf, SINK_BUF);
		if (r <= 0)
			return 0;
		if (r > left) {
			/* pipelined bytes of the next request */
			size_t rest = (size_t)(r - left);
			memmove(c->buf, c->buf + left, rest);
			c->have = rest;
			left = 0;
		} else {
			left -= r;
		}
	}
	atomic_fetch_add(&n_requests, 1);
	atomic_fetch_add(&n_body_bytes, (unsigned long long)clen);

	static const char ok[] = "{\"code\":200,\"success\":true,\"message\":\"ok\"}";
	static const char done[] =
		"{\"code\":200,\"success\":true,\"message\":\"ok\",\"model\":{\"id\":\"t1\","
		"\"identifier\":\"profile_import\",\"status\":\"complete\",\"create_time\":1,"
		"\"finish_time\":2,\"message\":\"ok\"}}";
	const char *body = task ? done : ok;
	char resp[512];
	int n = snprintf(resp, sizeof(resp),
			 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n%s\r\n%s",
			 strlen(body), keep ? "" : "Connection: close\r\n", body);
	if (conn_write(c, resp, (size_t)n) < 0)
		return 0;
	return keep;
}

static void *serve(void *arg)
{
	struct conn *c = arg;

	if (ctx) {
		c->ssl = SSL_new(ctx);
		if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_accept(c->ssl) != 1) {
			atomic_fetch_add(&n_errors, 1);
			goto out;
		}
	}
	while (serve_one(c) == 1)
		;
	if (c->ssl)
		SSL_shutdown(c->ssl);
out:
	SSL_free(c->ssl);
	close(c->fd);
	free(c);
	return NULL;
}

static void *signal_thread(void *arg)
{
	sigset_t *set = arg;
	int sig;

	sigwait(set, &sig);
	printf("sink requests=%llu body_bytes=%llu connections=%llu errors=%llu\n",
	       (unsigned long long)n_requests, (unsigned long long)n_body_bytes,
	       (unsigned long long)n_conns, (unsigned long long)n_errors);
	fflush(stdout);
	_exit(0);
}

static int usage(void)
{
	fprintf(stderr, "usage: sink [--no-tls | --cert CERT --key KEY] [--port N] [--port-file FILE]\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *cert = NULL, *key = NULL, *port_file = NULL;
	bool tls = true;
	int port = 0;
	static sigset_t set;
	pthread_t st;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--no-tls") == 0)
			tls = false;
		else if (i + 1 < argc && strcmp(argv[i], "--cert") == 0)
			cert = argv[++i];
		else if (i + 1 < argc && strcmp(argv[i], "--key") == 0)
			key = argv[++i];
		else if (i + 1 < argc && strcmp(argv[i], "--port") == 0)
			port = atoi(argv[++i]);
		else if (i + 1 < argc && strcmp(argv[i], "--port-file") == 0)
			port_file = argv[++i];
		else
			return usage();
	}
	if (tls && (!cert || !key))
		return usage();
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pthread_create(&st, NULL, signal_thread, &set) != 0)
		return 1;

	if (tls) {
		ctx = SSL_CTX_new(TLS_server_method());
		if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
			ERR_print_errors_fp(stderr);
			return 1;
		}
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	}
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 128) < 0) {
		perror("sink: listen");
		return 1;
	}
	socklen_t alen = sizeof(a);
	getsockname(ls, (struct sockaddr *)&a, &alen);
	if (port_file) {
		char tmp[4096];
		snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
		FILE *f = fopen(tmp, "w");
		if (!f || fprintf(f, "%d\n", ntohs(a.sin_port)) < 0 || fclose(f) != 0 ||
		    rename(tmp, port_file) != 0) {
			perror("sink: port file");
			return 1;
		}
	} else {
		printf("port %d\n", ntohs(a.sin_port));
		fflush(stdout);
	}
	for (;;) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("sink: accept");
			return 1;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct conn *c = calloc(1, sizeof(*c));
		pthread_t t;
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		atomic_fetch_add(&n_conns, 1);
		if (pthread_create(&t, NULL, serve, c) != 0) {
			close(fd);
			free(c);
			continue;
		}
		pthread_detach(t);
	}
}
