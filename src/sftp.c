/* sftp.c — the SFTP source: connect, verify the host key, authenticate,
 * list, stat, fetch, rename, unlink, mkdir -p, upload (libssh2 1.10).
 *
 * Why whole blocking steps on the libuv thread pool and not a non-blocking
 * state machine on uv_poll_t (as curl's lib/vssh/libssh2.c does):
 *  - The loop stays free either way: the daemon calls each sftp_* function
 *    from uv_queue_work() and applies the result in the after-work callback,
 *    so signals, the watchdog and other jobs are served while a 1 GB file
 *    downloads. One connection is only ever used by one worker at a time.
 *  - The code stays linear: "connect, check the key, authenticate, open,
 *    read until EOF, fsync, close" reads top to bottom, with one cleanup
 *    label per function, instead of ~40 states re-entered on every socket
 *    event (curl's SSH_* states). Linear code is what we can review for the
 *    security-relevant ordering (no authentication before the host key is
 *    accepted) and test directly, without a loop, from tests/sftp_probe.c.
 *  - Concurrency is bounded for free: the pool has UV_THREADPOOL_SIZE
 *    threads (4 by default), so at most that many SFTP steps run at once,
 *    matching max_parallel_jobs' default.
 *  The cost is a thread per in-flight step, which at 4 is nothing.
 *
 * "Blocking" is implemented here, not by libssh2's blocking mode: the session
 * is non-blocking and wait_socket() polls the socket until a deadline. That
 * is because libssh2 1.10's own blocking wait (_libssh2_wait_socket) bounds
 * a whole API call rather than a stall, and, once keepalives are configured,
 * fails with LIBSSH2_ERROR_TIMEOUT whenever the socket is quiet for one
 * keepalive interval. Our deadlines:
 *  - TCP connect: non-blocking connect() + poll(), connect_timeout_ms for
 *    all addresses together;
 *  - handshake, host key check, authentication and the SFTP subsystem:
 *    auth_timeout_ms in total;
 *  - every later operation: stall_timeout_ms, pushed back whenever file data
 *    or a directory entry arrives, so "no bytes for that long" is the limit
 *    and a large file that keeps moving never times out. Keepalives
 *    (keepalive_seconds) are sent while we wait. A server that answers
 *    keepalives but sends no data still times out: its replies are not
 *    progress. Name resolution (getaddrinfo) is bounded only by the
 *    resolver's own timeouts.
 *
 * libssh2 1.10 lacks rsa-sha2-256/512 signatures, so RSA client keys are
 * refused up front with an explanation; host keys are negotiated ed25519 /
 * ECDSA first, preferring the types known_hosts has for the host.
 *
 * This module does not log: errors come back as struct sftp_error. */
#include "sftp.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libssh2.h>
#include <libssh2_sftp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "util.h"

#ifndef SFTP_READ_CHUNK
#define SFTP_READ_CHUNK (256 * 1024) /* per libssh2_sftp_read: libssh2 keeps 4x this in flight */
#endif
#define SFTP_MAX_LIST_ENTRIES 200000 /* one listing, recursion included */
#define SFTP_MAX_LIST_DEPTH 32
#define SFTP_MAX_PATH 4096
#define SFTP_MAX_KNOWN_HOSTS (4 * 1024 * 1024)
#define SFTP_MAX_KNOWN_HOSTS_LINE 16384
#define SFTP_MAX_PRIVATE_KEY (64 * 1024)
#define SFTP_MAX_PASSWORD 4096
#define SFTP_CLOSE_TIMEOUT_MS 5000

/* Host key algorithms libssh2 1.10 can verify, in our order of preference. */
static const struct {
	const char *name;
	int knownhost_key; /* LIBSSH2_KNOWNHOST_KEY_* */
	int hostkey_type;  /* LIBSSH2_HOSTKEY_TYPE_* */
} key_types[] = {
    {"ssh-ed25519", LIBSSH2_KNOWNHOST_KEY_ED25519, LIBSSH2_HOSTKEY_TYPE_ED25519},
    {"ecdsa-sha2-nistp256", LIBSSH2_KNOWNHOST_KEY_ECDSA_256, LIBSSH2_HOSTKEY_TYPE_ECDSA_256},
    {"ecdsa-sha2-nistp384", LIBSSH2_KNOWNHOST_KEY_ECDSA_384, LIBSSH2_HOSTKEY_TYPE_ECDSA_384},
    {"ecdsa-sha2-nistp521", LIBSSH2_KNOWNHOST_KEY_ECDSA_521, LIBSSH2_HOSTKEY_TYPE_ECDSA_521},
    {"ssh-rsa", LIBSSH2_KNOWNHOST_KEY_SSHRSA, LIBSSH2_HOSTKEY_TYPE_RSA},
    {"ssh-dss", LIBSSH2_KNOWNHOST_KEY_SSHDSS, LIBSSH2_HOSTKEY_TYPE_DSS},
};

struct sftp_conn {
	char *site_name;
	char *host;
	int port;
	char *user;
	int64_t stall_timeout_ms;
	int keepalive_seconds;
	int fd;
	LIBSSH2_SESSION *session;
	LIBSSH2_SFTP *sftp;
	int64_t deadline_ms;         /* monotonic; wait_socket() fails after it */
	int64_t deadline_span;       /* what the deadline was set to, for messages */
	bool timed_out;              /* the last failure was our deadline */
	bool broken;                 /* a timeout or socket error: no graceful close */
	const char *kbdint_password; /* only during keyboard-interactive auth */
	union alloc_hdr *allocs;     /* every live libssh2 allocation of this session */
};

/* ------------------------------------------------------------------ */
/* Pure helpers (exported for tests)                                   */

int sftp_fingerprint_sha256(const unsigned char *blob, size_t len, char *out, size_t out_len)
{
	unsigned char digest[32];
	unsigned int digest_len = 0;
	char b64[48];
	int n;

	if (EVP_Digest(blob, len, digest, &digest_len, EVP_sha256(), NULL) != 1 || digest_len != 32)
		return -EIO;
	n = EVP_EncodeBlock((unsigned char *)b64, digest, 32);
	while (n > 0 && b64[n - 1] == '=')
		n--;
	b64[n] = '\0';
	if ((size_t)snprintf(out, out_len, "SHA256:%s", b64) >= out_len)
		return -ENOSPC;
	return 0;
}

bool sftp_pin_matches(const char *fingerprint, char *const *pins, size_t n_pins)
{
	size_t fp_len = strlen(fingerprint);

	for (size_t i = 0; i < n_pins; i++) {
		const char *pin = pins[i];
		size_t pin_len = pin ? strlen(pin) : 0;

		while (pin_len > 0 && pin[pin_len - 1] == '=')
			pin_len--;
		if (pin_len == fp_len && pin_len > 7 && memcmp(pin, fingerprint, fp_len) == 0)
			return true;
	}
	return false;
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Read an SSH "string" at *pos; false if it runs past len. */
static bool get_string(const unsigned char *buf, size_t len, size_t *pos, const unsigned char **s,
                       size_t *s_len)
{
	uint32_t n;

	if (len - *pos < 4)
		return false;
	n = get_u32(buf + *pos);
	if (len - *pos - 4 < n)
		return false;
	*s = buf + *pos + 4;
	*s_len = n;
	*pos += 4 + (size_t)n;
	return true;
}

int sftp_blob_key_type(const unsigned char *blob, size_t len, char *out, size_t out_len)
{
	const unsigned char *name;
	size_t name_len, pos = 0;

	if (!get_string(blob, len, &pos, &name, &name_len) || name_len == 0 || name_len > 64)
		return -EINVAL;
	for (size_t i = 0; i < name_len; i++)
		if (name[i] <= ' ' || name[i] > '~')
			return -EINVAL;
	if (name_len >= out_len)
		return -ENOSPC;
	memcpy(out, name, name_len);
	out[name_len] = '\0';
	return 0;
}

static char *base64_encode(const unsigned char *data, size_t len)
{
	char *out;

	if (len > (size_t)INT32_MAX / 2)
		return NULL;
	out = malloc((len + 2) / 3 * 4 + 1);
	if (out)
		EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* "host:port" for messages, "[v6]:port" if host has a colon. */
static void format_hostport(char *buf, size_t size, const char *host, int port)
{
	if (strchr(host, ':'))
		snprintf(buf, size, "[%s]:%d", host, port);
	else
		snprintf(buf, size, "%s:%d", host, port);
}

/* The name known_hosts uses for host:port (OpenSSH: plain for port 22). */
static void known_hosts_name(char *buf, size_t size, const char *host, int port)
{
	if (port == 22)
		snprintf(buf, size, "%s", host);
	else
		snprintf(buf, size, "[%s]:%d", host, port);
}

char *sftp_known_hosts_line(const char *host, int port, const unsigned char *blob, size_t len)
{
	char type[65], name[300];
	char *b64, *line = NULL;

	if (sftp_blob_key_type(blob, len, type, sizeof(type)) < 0 || strlen(host) > 255)
		return NULL;
	b64 = base64_encode(blob, len);
	if (!b64)
		return NULL;
	known_hosts_name(name, sizeof(name), host, port);
	if (asprintf(&line, "%s %s %s", name, type, b64) < 0)
		line = NULL;
	free(b64);
	return line;
}

static const char *memmem_str(const char *hay, size_t hay_len, const char *needle)
{
	return memmem(hay, hay_len, needle, strlen(needle));
}

/* Key type of an "openssh-key-v1" container: its public key is stored in
 * clear even when the private part is encrypted. */
static int openssh_key_type(const char *body, size_t body_len, char *out, size_t out_len)
{
	static const char magic[] = "openssh-key-v1";
	EVP_ENCODE_CTX *ctx;
	unsigned char *raw;
	int n1 = 0, n2 = 0, rc = -EINVAL;
	const unsigned char *s;
	size_t s_len, pos, raw_len;

	if (body_len > INT32_MAX)
		return -EINVAL;
	raw = malloc(body_len / 4 * 3 + 4);
	ctx = EVP_ENCODE_CTX_new();
	if (!raw || !ctx) {
		rc = -ENOMEM;
		goto out;
	}
	EVP_DecodeInit(ctx);
	if (EVP_DecodeUpdate(ctx, raw, &n1, (const unsigned char *)body, (int)body_len) < 0 ||
	    EVP_DecodeFinal(ctx, raw + n1, &n2) < 0)
		goto out;
	raw_len = (size_t)n1 + (size_t)n2;
	if (raw_len < sizeof(magic) || memcmp(raw, magic, sizeof(magic)) != 0)
		goto out;
	pos = sizeof(magic);
	/* ciphername, kdfname, kdfoptions, then the key count and first key */
	for (int i = 0; i < 3; i++)
		if (!get_string(raw, raw_len, &pos, &s, &s_len))
			goto out;
	if (raw_len - pos < 4 || get_u32(raw + pos) < 1)
		goto out;
	pos += 4;
	if (!get_string(raw, raw_len, &pos, &s, &s_len))
		goto out;
	rc = sftp_blob_key_type(s, s_len, out, out_len);
out:
	EVP_ENCODE_CTX_free(ctx);
	if (raw) {
		OPENSSL_cleanse(raw, body_len / 4 * 3 + 4);
		free(raw);
	}
	return rc;
}

static int copy_type(const char *type, char *out, size_t out_len)
{
	return util_strlcpy(out, type, out_len) >= out_len ? -ENOSPC : 0;
}

int sftp_private_key_type(const char *data, size_t len, char *out, size_t out_len)
{
	const char *begin = memmem_str(data, len, "-----BEGIN ");
	const char *label, *label_end, *body, *end;
	size_t label_len;

	if (!begin)
		return -EINVAL;
	label = begin + strlen("-----BEGIN ");
	label_end = memmem_str(label, len - (size_t)(label - data), "-----");
	if (!label_end)
		return -EINVAL;
	label_len = (size_t)(label_end - label);
	body = label_end + 5;
#define LABEL_IS(s) (label_len == strlen(s) && memcmp(label, s, label_len) == 0)
	if (LABEL_IS("OPENSSH PRIVATE KEY")) {
		end = memmem_str(body, len - (size_t)(body - data), "-----END ");
		if (!end)
			return -EINVAL;
		return openssh_key_type(body, (size_t)(end - body), out, out_len);
	}
	if (LABEL_IS("RSA PRIVATE KEY"))
		return copy_type("ssh-rsa", out, out_len);
	if (LABEL_IS("DSA PRIVATE KEY"))
		return copy_type("ssh-dss", out, out_len);
	if (LABEL_IS("EC PRIVATE KEY"))
		return copy_type("ecdsa", out, out_len);
	if (LABEL_IS("ENCRYPTED PRIVATE KEY"))
		return -ENOENT;
	if (LABEL_IS("PRIVATE KEY")) {
		/* unencrypted PKCS#8: let OpenSSL say what it holds. The empty
		 * passphrase keeps OpenSSL from ever prompting on a terminal. */
		static char no_passphrase[] = "";
		BIO *bio = BIO_new_mem_buf(begin, (int)(len - (size_t)(begin - data)));
		EVP_PKEY *pkey =
		    bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, no_passphrase) : NULL;
		int id = pkey ? EVP_PKEY_get_base_id(pkey) : EVP_PKEY_NONE;
		int rc = -ENOENT;

		if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS)
			rc = copy_type("ssh-rsa", out, out_len);
		else if (id == EVP_PKEY_EC)
			rc = copy_type("ecdsa", out, out_len);
		else if (id == EVP_PKEY_ED25519)
			rc = copy_type("ssh-ed25519", out, out_len);
		else if (id == EVP_PKEY_DSA)
			rc = copy_type("ssh-dss", out, out_len);
		EVP_PKEY_free(pkey);
		BIO_free(bio);
		return rc;
	}
#undef LABEL_IS
	return -EINVAL;
}

const char *sftp_status_text(unsigned long status)
{
	static const char *const text[] = {
	    [LIBSSH2_FX_OK] = "success",
	    [LIBSSH2_FX_EOF] = "end of file",
	    [LIBSSH2_FX_NO_SUCH_FILE] = "no such file",
	    [LIBSSH2_FX_PERMISSION_DENIED] = "permission denied",
	    [LIBSSH2_FX_FAILURE] = "failure",
	    [LIBSSH2_FX_BAD_MESSAGE] = "bad message",
	    [LIBSSH2_FX_NO_CONNECTION] = "no connection",
	    [LIBSSH2_FX_CONNECTION_LOST] = "connection lost",
	    [LIBSSH2_FX_OP_UNSUPPORTED] = "operation not supported by the server",
	    [LIBSSH2_FX_INVALID_HANDLE] = "invalid handle",
	    [LIBSSH2_FX_NO_SUCH_PATH] = "no such path",
	    [LIBSSH2_FX_FILE_ALREADY_EXISTS] = "file already exists",
	    [LIBSSH2_FX_WRITE_PROTECT] = "write protected",
	    [LIBSSH2_FX_NO_MEDIA] = "no media",
	    [LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM] = "no space left on the server's file system",
	    [LIBSSH2_FX_QUOTA_EXCEEDED] = "quota exceeded",
	    [LIBSSH2_FX_UNKNOWN_PRINCIPAL] = "unknown principal",
	    [LIBSSH2_FX_LOCK_CONFLICT] = "lock conflict",
	    [LIBSSH2_FX_DIR_NOT_EMPTY] = "directory not empty",
	    [LIBSSH2_FX_NOT_A_DIRECTORY] = "not a directory",
	    [LIBSSH2_FX_INVALID_FILENAME] = "invalid file name",
	    [LIBSSH2_FX_LINK_LOOP] = "too many symbolic links",
	};

	if (status < XP_ARRAY_SIZE(text) && text[status])
		return text[status];
	return "unknown SFTP error";
}

static int from_sftp_status(unsigned long status, enum sftp_err_kind *kind)
{
	*kind = SFTP_ERR_IO;
	switch (status) {
	case LIBSSH2_FX_OK:
		*kind = SFTP_ERR_NONE;
		return 0;
	case LIBSSH2_FX_EOF:
		return -ENODATA;
	case LIBSSH2_FX_NO_SUCH_FILE:
	case LIBSSH2_FX_NO_SUCH_PATH:
		*kind = SFTP_ERR_NOT_FOUND;
		return -ENOENT;
	case LIBSSH2_FX_PERMISSION_DENIED:
	case LIBSSH2_FX_WRITE_PROTECT:
		return -EACCES;
	case LIBSSH2_FX_FILE_ALREADY_EXISTS:
		return -EEXIST;
	case LIBSSH2_FX_NO_CONNECTION:
	case LIBSSH2_FX_CONNECTION_LOST:
		*kind = SFTP_ERR_CONNECT;
		return -ECONNRESET;
	case LIBSSH2_FX_OP_UNSUPPORTED:
		return -EOPNOTSUPP;
	case LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM:
		return -ENOSPC;
	case LIBSSH2_FX_QUOTA_EXCEEDED:
		return -EDQUOT;
	case LIBSSH2_FX_LOCK_CONFLICT:
		return -EBUSY;
	case LIBSSH2_FX_DIR_NOT_EMPTY:
		return -ENOTEMPTY;
	case LIBSSH2_FX_NOT_A_DIRECTORY:
		return -ENOTDIR;
	case LIBSSH2_FX_INVALID_FILENAME:
		return -EINVAL;
	case LIBSSH2_FX_LINK_LOOP:
		return -ELOOP;
	case LIBSSH2_FX_BAD_MESSAGE:
	case LIBSSH2_FX_INVALID_HANDLE:
		return -EPROTO;
	default: /* FX_FAILURE and the rest */
		return -EIO;
	}
}

int sftp_error_from_libssh2(int rc, unsigned long sftp_status, enum sftp_err_kind *kind)
{
	*kind = SFTP_ERR_IO;
	switch (rc) {
	case LIBSSH2_ERROR_NONE:
		*kind = SFTP_ERR_NONE;
		return 0;
	case LIBSSH2_ERROR_SFTP_PROTOCOL:
		return from_sftp_status(sftp_status, kind);
	case LIBSSH2_ERROR_EAGAIN:
		return -EAGAIN;
	case LIBSSH2_ERROR_TIMEOUT:
	case LIBSSH2_ERROR_SOCKET_TIMEOUT:
		*kind = SFTP_ERR_TIMEOUT;
		return -ETIMEDOUT;
	case LIBSSH2_ERROR_SOCKET_NONE:
	case LIBSSH2_ERROR_BANNER_RECV:
	case LIBSSH2_ERROR_BANNER_SEND:
	case LIBSSH2_ERROR_SOCKET_SEND:
	case LIBSSH2_ERROR_SOCKET_RECV:
	case LIBSSH2_ERROR_SOCKET_DISCONNECT:
	case LIBSSH2_ERROR_BAD_SOCKET:
	case LIBSSH2_ERROR_CHANNEL_CLOSED:
	case LIBSSH2_ERROR_CHANNEL_EOF_SENT:
		*kind = SFTP_ERR_CONNECT;
		return -ECONNRESET;
	case LIBSSH2_ERROR_KEX_FAILURE:
	case LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE:
	case LIBSSH2_ERROR_METHOD_NONE:
	case LIBSSH2_ERROR_HOSTKEY_INIT:
	case LIBSSH2_ERROR_HOSTKEY_SIGN:
	case LIBSSH2_ERROR_INVALID_MAC:
	case LIBSSH2_ERROR_DECRYPT:
	case LIBSSH2_ERROR_ENCRYPT:
	case LIBSSH2_ERROR_PROTO:
	case LIBSSH2_ERROR_COMPRESS:
	case LIBSSH2_ERROR_ZLIB:
		*kind = SFTP_ERR_CONNECT;
		return -EPROTO;
	case LIBSSH2_ERROR_AUTHENTICATION_FAILED: /* also PUBLICKEY_UNRECOGNIZED */
	case LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED:
	case LIBSSH2_ERROR_PASSWORD_EXPIRED:
		*kind = SFTP_ERR_AUTH;
		return -EACCES;
	case LIBSSH2_ERROR_FILE:
	case LIBSSH2_ERROR_KEYFILE_AUTH_FAILED:
		*kind = SFTP_ERR_CONFIG;
		return -EINVAL;
	case LIBSSH2_ERROR_ALLOC:
		return -ENOMEM;
	case LIBSSH2_ERROR_METHOD_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	case LIBSSH2_ERROR_KNOWN_HOSTS:
		*kind = SFTP_ERR_CONFIG;
		return -EINVAL;
	case LIBSSH2_ERROR_CHANNEL_FAILURE:
	case LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED:
	case LIBSSH2_ERROR_REQUEST_DENIED:
		return -EPERM;
	case LIBSSH2_ERROR_BUFFER_TOO_SMALL:
		return -ENAMETOOLONG;
	default:
		return -EIO;
	}
}

void sftp_hostkey_error(struct sftp_error *err, enum sftp_err_kind kind, bool revoked,
                        const char *site_name, const char *host, int port, const char *key_type,
                        const char *fingerprint, const char *known_hosts_file)
{
	char hp[300];

	format_hostport(hp, sizeof(hp), host, port);
	err->kind = kind;
	util_strlcpy(err->key_type, key_type, sizeof(err->key_type));
	util_strlcpy(err->fingerprint, fingerprint, sizeof(err->fingerprint));
	if (revoked) {
		snprintf(err->message, sizeof(err->message),
		         "host key for %s (%s %s) is marked @revoked in %s; this may be an attack "
		         "(someone intercepting the connection); do not connect until the "
		         "server's administrator confirms its current key",
		         hp, key_type, fingerprint, known_hosts_file);
	} else if (kind == SFTP_ERR_HOSTKEY_CHANGED) {
		snprintf(err->message, sizeof(err->message),
		         "host key for %s has CHANGED (now %s %s) and does not match %s; this "
		         "may be an attack (someone intercepting the connection); verify the new "
		         "key out of band, remove the old entry, then run 'xpimportctl trust %s'",
		         hp, key_type, fingerprint, known_hosts_file, site_name);
	} else if (kind == SFTP_ERR_HOSTKEY_TYPE) {
		snprintf(err->message, sizeof(err->message),
		         "host key for %s is of type %s (%s), but %s has only keys of other types "
		         "for this host; verify it out of band, then run 'xpimportctl trust %s'",
		         hp, key_type, fingerprint, known_hosts_file, site_name);
	} else if (known_hosts_file) {
		snprintf(err->message, sizeof(err->message),
		         "host key for %s is not known (%s %s); verify it out of band, then run "
		         "'xpimportctl trust %s'",
		         hp, key_type, fingerprint, site_name);
	} else {
		snprintf(err->message, sizeof(err->message),
		         "host key for %s (%s %s) matches none of site '%s' host_key_sha256 pins; "
		         "verify it out of band, then add it to host_key_sha256 or run "
		         "'xpimportctl trust %s'",
		         hp, key_type, fingerprint, site_name, site_name);
	}
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */

static void clear_error(struct sftp_error *err)
{
	memset(err, 0, sizeof(*err));
}

__attribute__((format(printf, 4, 5))) static int
set_error(struct sftp_error *err, enum sftp_err_kind kind, int rc, const char *fmt, ...)
{
	va_list ap;

	err->kind = kind;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	/* Names and method lists come from the server: no control
	 * characters into the journal. */
	for (char *p = err->message; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return rc;
}

/* After a timeout or a lost connection libssh2's state is undefined: every
 * later operation fails at once until the caller reconnects. */
static int check_usable(struct sftp_conn *c, struct sftp_error *err)
{
	char hp[300];

	clear_error(err);
	if (!c->broken)
		return 0;
	format_hostport(hp, sizeof(hp), c->host, c->port);
	return set_error(err, SFTP_ERR_CONNECT, -ENOTCONN,
	                 "the connection to %s was lost earlier; reconnect first", hp);
}

/* A libssh2 failure `lrc` (SFTP status `status` for
 * LIBSSH2_ERROR_SFTP_PROTOCOL) while doing `fmt` (a verb phrase such as
 * "list '/in'"): convert it in sftp_error_from_libssh2(), fill err with a
 * sentence and return the negative errno. */
__attribute__((format(printf, 5, 0))) static int vconn_fail(struct sftp_conn *c,
                                                            struct sftp_error *err, int lrc,
                                                            unsigned long status, const char *fmt,
                                                            va_list ap)
{
	char what[SFTP_MAX_PATH + 64], reason[256], hp[300];
	enum sftp_err_kind kind;
	int rc;

	rc = sftp_error_from_libssh2(lrc, status, &kind);
	if (rc == 0) { /* never report success as an error */
		rc = -EIO;
		kind = SFTP_ERR_IO;
	}
	vsnprintf(what, sizeof(what), fmt, ap);
	if (lrc == LIBSSH2_ERROR_TIMEOUT && c->timed_out) {
		snprintf(reason, sizeof(reason), "no response for %g s",
		         (double)c->deadline_span / 1000.0);
	} else if (lrc == LIBSSH2_ERROR_SFTP_PROTOCOL) {
		snprintf(reason, sizeof(reason), "%s (SFTP status %lu)", sftp_status_text(status),
		         status);
	} else {
		char *msg = NULL;

		const char *text;

		if (c->session)
			libssh2_session_last_error(c->session, &msg, NULL, 0);
		text = msg && *msg ? msg : "libssh2 error";
		if (rc == -ECONNRESET)
			snprintf(reason, sizeof(reason), "the connection was lost (%s)", text);
		else
			snprintf(reason, sizeof(reason), "%s", text);
	}
	if (kind == SFTP_ERR_TIMEOUT || kind == SFTP_ERR_CONNECT)
		c->broken = true;
	format_hostport(hp, sizeof(hp), c->host, c->port);
	return set_error(err, kind, rc, "cannot %s on %s: %s", what, hp, reason);
}

__attribute__((format(printf, 4, 5))) static int
conn_fail(struct sftp_conn *c, struct sftp_error *err, int lrc, const char *fmt, ...)
{
	unsigned long status = 0;
	va_list ap;
	int rc;

	if (lrc == LIBSSH2_ERROR_SFTP_PROTOCOL && c->sftp)
		status = libssh2_sftp_last_error(c->sftp);
	va_start(ap, fmt);
	rc = vconn_fail(c, err, lrc, status, fmt, ap);
	va_end(ap);
	return rc;
}

__attribute__((format(printf, 5, 6))) static int conn_fail_status(struct sftp_conn *c,
                                                                  struct sftp_error *err, int lrc,
                                                                  unsigned long status,
                                                                  const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vconn_fail(c, err, lrc, status, fmt, ap);
	va_end(ap);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Waiting                                                             */

static void set_deadline(struct sftp_conn *c, int64_t span_ms)
{
	c->deadline_span = span_ms;
	c->deadline_ms = util_mono_ms() + span_ms;
	c->timed_out = false;
}

/* Progress was made: push the stall deadline back. */
static void progress(struct sftp_conn *c)
{
	c->deadline_ms = util_mono_ms() + c->deadline_span;
}

/* libssh2 said EAGAIN: wait for the socket in the direction it needs, up to
 * the deadline, sending keepalives meanwhile. 0 to retry the call, or a
 * libssh2 error code (LIBSSH2_ERROR_TIMEOUT past the deadline). */
static int wait_socket(struct sftp_conn *c)
{
	int64_t now = util_mono_ms();
	int64_t timeout = c->deadline_ms - now;
	struct pollfd pfd = {.fd = c->fd};
	int dirs, r;

	if (timeout <= 0) {
		c->timed_out = true;
		return LIBSSH2_ERROR_TIMEOUT;
	}
	dirs = libssh2_session_block_directions(c->session);
	if (c->keepalive_seconds > 0 && !(dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)) {
		/* Not with a packet half sent: libssh2 must finish that first. */
		int next = 0;

		if (libssh2_keepalive_send(c->session, &next) != 0 || next <= 0)
			next = c->keepalive_seconds;
		if ((int64_t)next * 1000 < timeout)
			timeout = (int64_t)next * 1000;
	}
	if (dirs & LIBSSH2_SESSION_BLOCK_INBOUND)
		pfd.events |= POLLIN;
	if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		pfd.events |= POLLOUT;
	if (!pfd.events) {
		/* libssh2 reports no direction: retry soon rather than sleep */
		pfd.events = POLLIN;
		if (timeout > 10)
			timeout = 10;
	}
	r = poll(&pfd, 1, (int)timeout);
	if (r < 0 && errno != EINTR)
		return LIBSSH2_ERROR_SOCKET_NONE;
	return 0;
}

/* Call an int-returning libssh2 function until it stops saying EAGAIN. */
#define RETRY(c, rc, call)                                                                         \
	do {                                                                                       \
		while (((rc) = (call)) == LIBSSH2_ERROR_EAGAIN && ((rc) = wait_socket(c)) == 0)    \
			;                                                                          \
	} while (0)

/* The same for a pointer-returning one; on NULL, rc is the libssh2 error. */
#define RETRY_PTR(c, ptr, rc, call)                                                                \
	do {                                                                                       \
		(rc) = 0;                                                                          \
		while (!((ptr) = (call))) {                                                        \
			(rc) = libssh2_session_last_errno((c)->session);                           \
			if ((rc) != LIBSSH2_ERROR_EAGAIN || ((rc) = wait_socket(c)) != 0)          \
				break;                                                             \
		}                                                                                  \
		if (!(ptr) && (rc) == 0)                                                           \
			(rc) = LIBSSH2_ERROR_SOCKET_NONE;                                          \
	} while (0)

/* ------------------------------------------------------------------ */
/* Connection setup                                                    */

static int global_init_rc = -EIO;

static void global_init_once(void)
{
	if (!libssh2_version(0x010a00))
		global_init_rc = -ENOTSUP; /* linked against something older than 1.10 */
	else
		global_init_rc = libssh2_init(0) == 0 ? 0 : -EIO;
}

int sftp_global_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, global_init_once);
	return global_init_rc;
}

void sftp_global_cleanup(void)
{
	if (global_init_rc == 0)
		libssh2_exit();
}

/* ------------------------------------------------------------------ */
/* Connection                                                          */

/* libssh2 allocates through these, so that (1) everything it allocated for
 * a session is freed in sftp_close() even where libssh2 1.10 leaks (an SFTP
 * handle whose close cannot be sent on a dead connection is never freed,
 * with its queued read-ahead), and (2) its memory (passwords, decrypted
 * data) is wiped when freed. */
union alloc_hdr {
	struct {
		union alloc_hdr *prev, *next;
		size_t size;
	} link;
	max_align_t align;
};

static void alloc_link(struct sftp_conn *c, union alloc_hdr *h)
{
	h->link.prev = NULL;
	h->link.next = c->allocs;
	if (c->allocs)
		c->allocs->link.prev = h;
	c->allocs = h;
}

static void alloc_unlink(struct sftp_conn *c, union alloc_hdr *h)
{
	if (h->link.prev)
		h->link.prev->link.next = h->link.next;
	else
		c->allocs = h->link.next;
	if (h->link.next)
		h->link.next->link.prev = h->link.prev;
}

static LIBSSH2_ALLOC_FUNC(ssh_alloc)
{
	struct sftp_conn *c = *abstract;
	union alloc_hdr *h;

	if (count > SIZE_MAX - sizeof(*h) || !(h = malloc(sizeof(*h) + count)))
		return NULL;
	h->link.size = count;
	alloc_link(c, h);
	return h + 1;
}

static void ssh_free_block(struct sftp_conn *c, union alloc_hdr *h)
{
	alloc_unlink(c, h);
	explicit_bzero(h + 1, h->link.size);
	free(h);
}

static LIBSSH2_FREE_FUNC(ssh_free)
{
	if (ptr)
		ssh_free_block(*abstract, (union alloc_hdr *)ptr - 1);
}

static LIBSSH2_REALLOC_FUNC(ssh_realloc)
{
	union alloc_hdr *old, *h;
	void *p;

	if (!ptr)
		return ssh_alloc(count, abstract);
	old = (union alloc_hdr *)ptr - 1;
	if (count <= old->link.size)
		return ptr;
	/* not realloc(): the old block must be wiped before it is released */
	if (!(p = ssh_alloc(count, abstract)))
		return NULL;
	h = (union alloc_hdr *)p - 1;
	memcpy(p, ptr, old->link.size);
	ssh_free_block(*abstract, old);
	return h + 1;
}

static void ssh_free_all(struct sftp_conn *c)
{
	while (c->allocs)
		ssh_free_block(c, c->allocs);
}

static void conn_free(struct sftp_conn *c)
{
	if (!c)
		return;
	ssh_free_all(c); /* after libssh2_session_free(): what libssh2 leaked */
	if (c->fd >= 0)
		close(c->fd);
	free(c->site_name);
	free(c->host);
	free(c->user);
	free(c);
}

static struct sftp_conn *conn_new(const struct cfg_site *site)
{
	struct sftp_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = -1;
	c->port = site->port > 0 ? site->port : 22;
	c->stall_timeout_ms = site->stall_timeout_ms > 0 ? site->stall_timeout_ms : 120000;
	c->keepalive_seconds = site->keepalive_seconds > 0 ? site->keepalive_seconds : 0;
	c->site_name = strdup(site->name ? site->name : "?");
	c->host = strdup(site->host ? site->host : "");
	c->user = strdup(site->user ? site->user : "");
	if (!c->site_name || !c->host || !c->user) {
		conn_free(c);
		return NULL;
	}
	return c;
}

/* Non-blocking connect to each address in turn, timeout_ms for them all. */
static int tcp_connect(struct sftp_conn *c, int64_t timeout_ms, struct sftp_error *err)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int64_t deadline = util_mono_ms() + timeout_ms;
	char port_str[12], hp[300];
	int gai, last_errno = ECONNREFUSED, one = 1;
	bool timed_out = false;

	format_hostport(hp, sizeof(hp), c->host, c->port);
	snprintf(port_str, sizeof(port_str), "%d", c->port);
	gai = getaddrinfo(c->host, port_str, &hints, &res);
	if (gai != 0)
		return set_error(err, SFTP_ERR_CONNECT, -EHOSTUNREACH,
		                 "cannot resolve host '%s': %s", c->host,
		                 gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
	for (struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int64_t left;

		if (fd < 0) {
			last_errno = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			c->fd = fd;
			break;
		}
		if (errno != EINPROGRESS) {
			last_errno = errno;
			close(fd);
			continue;
		}
		for (;;) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			int r;

			left = deadline - util_mono_ms();
			if (left <= 0) {
				timed_out = true;
				break;
			}
			r = poll(&pfd, 1, (int)left);
			if (r < 0 && errno == EINTR)
				continue;
			if (r > 0) {
				int so_error = 0;
				socklen_t len = sizeof(so_error);

				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0)
					so_error = errno;
				if (so_error == 0)
					c->fd = fd;
				else
					last_errno = so_error;
			} else if (r < 0) {
				last_errno = errno;
			} else {
				timed_out = true;
			}
			break;
		}
		if (c->fd != fd)
			close(fd);
		if (timed_out)
			break;
	}
	freeaddrinfo(res);
	if (c->fd < 0 && timed_out)
		return set_error(err, SFTP_ERR_TIMEOUT, -ETIMEDOUT,
		                 "connecting to %s timed out after %lld ms", hp,
		                 (long long)timeout_ms);
	if (c->fd < 0)
		return set_error(err, SFTP_ERR_CONNECT, -last_errno, "cannot connect to %s: %s", hp,
		                 strerror(last_errno));
	/* SFTP read requests are small packets sent while data is in flight;
	 * Nagle would hold them back for an ACK. */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

static int session_new(struct sftp_conn *c, struct sftp_error *err)
{
	c->session = libssh2_session_init_ex(ssh_alloc, ssh_free, ssh_realloc, c);
	if (!c->session)
		return set_error(err, SFTP_ERR_IO, -ENOMEM,
		                 "cannot create an SSH session: out of memory");
	libssh2_session_set_blocking(c->session, 0);
	return 0;
}

static int handshake(struct sftp_conn *c, const char *hostkey_prefs, struct sftp_error *err)
{
	int rc;

	/* An error here means none of the names is supported: keep libssh2's
	 * default order rather than fail. */
	(void)libssh2_session_method_pref(c->session, LIBSSH2_METHOD_HOSTKEY, hostkey_prefs);
	RETRY(c, rc, libssh2_session_handshake(c->session, c->fd));
	if (rc)
		return conn_fail(c, err, rc, "complete the SSH handshake");
	return 0;
}

/* The server's host key: blob, type name and fingerprint. */
struct host_key {
	const unsigned char *blob; /* owned by the session */
	size_t len;
	int type; /* LIBSSH2_HOSTKEY_TYPE_* */
	char type_name[32];
	char fingerprint[64];
};

static int get_host_key(struct sftp_conn *c, struct host_key *hk, struct sftp_error *err)
{
	hk->blob = (const unsigned char *)libssh2_session_hostkey(c->session, &hk->len, &hk->type);
	if (!hk->blob)
		return conn_fail(c, err, LIBSSH2_ERROR_HOSTKEY_INIT, "get the server's host key");
	if (sftp_blob_key_type(hk->blob, hk->len, hk->type_name, sizeof(hk->type_name)) < 0 ||
	    sftp_fingerprint_sha256(hk->blob, hk->len, hk->fingerprint, sizeof(hk->fingerprint)) <
	        0)
		return conn_fail(c, err, LIBSSH2_ERROR_PROTO, "read the server's host key");
	return 0;
}

/* known_hosts as loaded: libssh2's list plus the @revoked keys, which
 * libssh2 does not understand. */
struct known_hosts {
	LIBSSH2_KNOWNHOSTS *kh;
	char **revoked; /* base64 key blobs */
	size_t n_revoked;
	bool present[XP_ARRAY_SIZE(key_types)]; /* key types listed for our host */
	bool any_present;
};

static void known_hosts_free(struct known_hosts *k)
{
	if (k->kh)
		libssh2_knownhost_free(k->kh);
	for (size_t i = 0; i < k->n_revoked; i++)
		free(k->revoked[i]);
	free(k->revoked);
	memset(k, 0, sizeof(*k));
}

/* Split the next whitespace-separated field off *p. */
static char *next_field(char **p)
{
	char *s = *p, *start;

	while (*s == ' ' || *s == '\t')
		s++;
	if (!*s)
		return NULL;
	start = s;
	while (*s && *s != ' ' && *s != '\t')
		s++;
	if (*s)
		*s++ = '\0';
	*p = s;
	return start;
}

/* One known_hosts line. Lines libssh2 cannot parse (key types it does not
 * know, @cert-authority) cannot match a key it negotiated, so they are
 * skipped rather than failing the whole file. Comments after the key are
 * dropped before libssh2 sees the line, as it would compare them as part
 * of the key. Patterns (*, ?, !) are not supported: they never match. */
static int known_hosts_line(struct known_hosts *k, char *line)
{
	char *p = line, *marker = NULL, *hosts, *type, *key, buf[SFTP_MAX_KNOWN_HOSTS_LINE + 8];

	while (*p == ' ' || *p == '\t')
		p++;
	if (!*p || *p == '#')
		return 0;
	if (*p == '@')
		marker = next_field(&p);
	hosts = next_field(&p);
	type = next_field(&p);
	key = next_field(&p);
	if (!hosts || !type || !key)
		return 0;
	if (marker && strcmp(marker, "@revoked") == 0) {
		char **grown = realloc(k->revoked, (k->n_revoked + 1) * sizeof(*grown));
		char *dup = strdup(key);

		if (!grown || !dup) {
			free(dup);
			if (grown)
				k->revoked = grown;
			return -ENOMEM;
		}
		k->revoked = grown;
		k->revoked[k->n_revoked++] = dup;
		return 0;
	}
	if (marker)
		return 0;
	snprintf(buf, sizeof(buf), "%s %s %s", hosts, type, key);
	(void)libssh2_knownhost_readline(k->kh, buf, strlen(buf), LIBSSH2_KNOWNHOST_FILE_OPENSSH);
	return 0;
}

static int known_hosts_load(struct sftp_conn *c, const char *path, struct known_hosts *k,
                            struct sftp_error *err)
{
	char name[300], *line = NULL;
	size_t cap = 0, total = 0;
	ssize_t n;
	int rc = 0;
	FILE *f;

	k->kh = libssh2_knownhost_init(c->session);
	if (!k->kh)
		return set_error(err, SFTP_ERR_IO, -ENOMEM, "cannot load %s: out of memory", path);
	f = fopen(path, "re");
	if (!f && errno != ENOENT) /* a missing file is an empty one: the key is unknown */
		return set_error(err, SFTP_ERR_CONFIG, -errno,
		                 "cannot read known_hosts file %s: %s", path, strerror(errno));
	while (f && (n = getline(&line, &cap, f)) >= 0) {
		total += (size_t)n;
		if (total > SFTP_MAX_KNOWN_HOSTS) {
			rc = set_error(err, SFTP_ERR_CONFIG, -EFBIG,
			               "known_hosts file %s is larger than %d bytes", path,
			               SFTP_MAX_KNOWN_HOSTS);
			goto out;
		}
		if (n > SFTP_MAX_KNOWN_HOSTS_LINE)
			continue;
		line[strcspn(line, "\r\n")] = '\0';
		if (known_hosts_line(k, line) < 0) {
			rc = set_error(err, SFTP_ERR_IO, -ENOMEM, "cannot load %s: out of memory",
			               path);
			goto out;
		}
	}
	if (f && ferror(f)) {
		rc = set_error(err, SFTP_ERR_CONFIG, -EIO, "cannot read known_hosts file %s: %s",
		               path, strerror(errno));
		goto out;
	}
	/* Which key types are listed for this host: a key that cannot match
	 * ("-") matches the host name, and then libssh2 reports a mismatch. */
	known_hosts_name(name, sizeof(name), c->host, c->port);
	for (size_t i = 0; i < XP_ARRAY_SIZE(key_types); i++) {
		int r = libssh2_knownhost_checkp(k->kh, name, -1, "-", 1,
		                                 LIBSSH2_KNOWNHOST_TYPE_PLAIN |
		                                     LIBSSH2_KNOWNHOST_KEYENC_BASE64 |
		                                     key_types[i].knownhost_key,
		                                 NULL);
		k->present[i] = r == LIBSSH2_KNOWNHOST_CHECK_MISMATCH;
		k->any_present |= k->present[i];
	}
out:
	free(line);
	if (f)
		fclose(f);
	return rc;
}

/* Host key algorithms to offer: the types known_hosts lists for the host
 * first (so a host with several keys is checked against the one we have),
 * then ed25519, ECDSA, RSA. DSA only if known_hosts has it. */
static void hostkey_prefs(const struct known_hosts *k, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < XP_ARRAY_SIZE(key_types); i++) {
			bool known = k && k->present[i];

			if ((pass == 0) != known)
				continue;
			if (pass == 1 && key_types[i].hostkey_type == LIBSSH2_HOSTKEY_TYPE_DSS)
				continue;
			len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? "," : "",
			                        key_types[i].name);
			if (len >= size)
				return;
		}
	}
}

/* Accept the host key or refuse it, before anything is authenticated. */
static int verify_host_key(struct sftp_conn *c, const struct cfg_site *site,
                           const struct known_hosts *k, struct sftp_error *err)
{
	enum sftp_err_kind kind = SFTP_ERR_HOSTKEY_UNKNOWN;
	struct host_key hk;
	char *b64;
	bool ok = false;
	int rc;

	if ((rc = get_host_key(c, &hk, err)) < 0)
		return rc;
	b64 = base64_encode(hk.blob, hk.len);
	if (!b64)
		return set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
	for (size_t i = 0; k->kh && i < k->n_revoked; i++) {
		if (strcmp(k->revoked[i], b64) == 0) {
			free(b64);
			sftp_hostkey_error(err, SFTP_ERR_HOSTKEY_CHANGED, true, c->site_name,
			                   c->host, c->port, hk.type_name, hk.fingerprint,
			                   site->known_hosts_file);
			return -EKEYREVOKED;
		}
	}
	if (site->n_host_key_sha256 > 0 &&
	    sftp_pin_matches(hk.fingerprint, site->host_key_sha256, site->n_host_key_sha256))
		ok = true;
	if (!ok && k->kh) {
		struct libssh2_knownhost *entry = NULL;
		int key_bit = LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
		char name[300];
		int r;

		for (size_t i = 0; i < XP_ARRAY_SIZE(key_types); i++)
			if (key_types[i].hostkey_type == hk.type)
				key_bit = key_types[i].knownhost_key;
		/* "[host]:port" looked up as a name of its own: libssh2's port
		 * argument would also accept the plain-host entry, which
		 * OpenSSH only uses for port 22. */
		known_hosts_name(name, sizeof(name), c->host, c->port);
		r = libssh2_knownhost_checkp(k->kh, name, -1, b64, strlen(b64),
		                             LIBSSH2_KNOWNHOST_TYPE_PLAIN |
		                                 LIBSSH2_KNOWNHOST_KEYENC_BASE64 | key_bit,
		                             &entry);
		if (r == LIBSSH2_KNOWNHOST_CHECK_MATCH)
			ok = true;
		else if (r == LIBSSH2_KNOWNHOST_CHECK_MISMATCH && entry &&
		         (entry->typemask & LIBSSH2_KNOWNHOST_KEY_MASK) == key_bit)
			kind = SFTP_ERR_HOSTKEY_CHANGED;
		else if (k->any_present)
			kind = SFTP_ERR_HOSTKEY_TYPE;
	}
	free(b64);
	if (ok)
		return 0;
	sftp_hostkey_error(err, kind, false, c->site_name, c->host, c->port, hk.type_name,
	                   hk.fingerprint, k->kh ? site->known_hosts_file : NULL);
	return kind == SFTP_ERR_HOSTKEY_CHANGED ? -EKEYREJECTED : -ENOKEY;
}

/* ------------------------------------------------------------------ */
/* Authentication                                                      */

struct secrets {
	char *key;
	size_t key_len;
	char *passphrase;
	size_t passphrase_len;
	char *password;
	size_t password_len;
};

static void secrets_free(struct secrets *s)
{
	if (s->key)
		util_free_secret(s->key, s->key_len);
	if (s->passphrase)
		util_free_secret(s->passphrase, s->passphrase_len);
	if (s->password)
		util_free_secret(s->password, s->password_len);
	memset(s, 0, sizeof(*s));
}

static int read_secret(const char *path, size_t max, char **out, size_t *len,
                       struct sftp_error *err)
{
	int rc = util_read_secret(path, max, out, len);

	if (rc == -EPERM)
		return set_error(err, SFTP_ERR_CONFIG, rc,
		                 "refusing secret file %s: it is readable or writable by group or "
		                 "others (chmod 600 %s)",
		                 path, path);
	if (rc == -EFBIG)
		return set_error(err, SFTP_ERR_CONFIG, rc,
		                 "secret file %s is too large (more than %zu bytes)", path, max);
	if (rc == -EINVAL)
		return set_error(err, SFTP_ERR_CONFIG, rc, "secret file %s is not a regular file",
		                 path);
	if (rc < 0)
		return set_error(err, SFTP_ERR_CONFIG, rc, "cannot read secret file %s: %s", path,
		                 strerror(-rc));
	return 0;
}

static int secrets_load(const struct cfg_site *site, struct secrets *s, struct sftp_error *err)
{
	char type[32];
	int rc;

	if (site->private_key_file) {
		rc = read_secret(site->private_key_file, SFTP_MAX_PRIVATE_KEY, &s->key, &s->key_len,
		                 err);
		if (rc < 0)
			return rc;
		rc = sftp_private_key_type(s->key, s->key_len, type, sizeof(type));
		if (rc == -EINVAL)
			return set_error(
			    err, SFTP_ERR_CONFIG, rc,
			    "%s does not hold a private key (expected an OpenSSH or PEM "
			    "private key file)",
			    site->private_key_file);
		if (rc == 0 && (strcmp(type, "ssh-rsa") == 0 || strcmp(type, "ssh-dss") == 0))
			return set_error(
			    err, SFTP_ERR_CONFIG, -EOPNOTSUPP,
			    "private key %s is an %s key, which xpimportd cannot use: "
			    "its libssh2 (1.10) signs RSA keys only with SHA-1 (ssh-rsa), "
			    "which current servers refuse; use an ed25519 or ECDSA key "
			    "(ssh-keygen -t ed25519)",
			    site->private_key_file, strcmp(type, "ssh-rsa") == 0 ? "RSA" : "DSA");
		if (site->passphrase_file) {
			rc = read_secret(site->passphrase_file, SFTP_MAX_PASSWORD, &s->passphrase,
			                 &s->passphrase_len, err);
			if (rc < 0)
				return rc;
		}
	} else if (site->password_file) {
		rc = read_secret(site->password_file, SFTP_MAX_PASSWORD, &s->password,
		                 &s->password_len, err);
		if (rc < 0)
			return rc;
	} else {
		return set_error(err, SFTP_ERR_CONFIG, -EINVAL,
		                 "site '%s' has neither private_key_file nor password_file",
		                 site->name ? site->name : "?");
	}
	return 0;
}

static bool method_offered(const char *list, const char *method)
{
	size_t len = strlen(method);

	for (const char *p = list; p && *p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n == len && memcmp(p, method, len) == 0)
			return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

static LIBSSH2_USERAUTH_KBDINT_RESPONSE_FUNC(kbdint_response)
{
	struct sftp_conn *c = *abstract;

	(void)name;
	(void)name_len;
	(void)instruction;
	(void)instruction_len;
	(void)prompts;
	/* Every prompt gets the password (servers ask "Password: " once).
	 * libssh2 frees (and so wipes) the copies with ssh_free(). */
	for (int i = 0; i < num_prompts; i++) {
		size_t len = c->kbdint_password ? strlen(c->kbdint_password) : 0;

		responses[i].text = c->kbdint_password ? ssh_alloc(len + 1, abstract) : NULL;
		if (responses[i].text)
			memcpy(responses[i].text, c->kbdint_password, len + 1);
		responses[i].length = responses[i].text ? (unsigned int)len : 0;
	}
}

static int auth_refused(struct sftp_conn *c, struct sftp_error *err, const char *method)
{
	char hp[300];

	format_hostport(hp, sizeof(hp), c->host, c->port);
	return set_error(err, SFTP_ERR_AUTH, -EACCES, "authentication as '%s' to %s failed (%s)",
	                 c->user, hp, method);
}

/* libssh2 1.10 reports a transport failure during authentication as a refused
 * credential: a socket that is closed or reset tells them apart. */
static bool connection_lost(const struct sftp_conn *c)
{
	char b;
	ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static int authenticate(struct sftp_conn *c, const struct cfg_site *site, const struct secrets *s,
                        struct sftp_error *err)
{
	unsigned int user_len = (unsigned int)strlen(c->user);
	const char *method;
	enum sftp_err_kind kind;
	char *list, hp[300];
	int rc;

	format_hostport(hp, sizeof(hp), c->host, c->port);
	RETRY_PTR(c, list, rc, libssh2_userauth_list(c->session, c->user, user_len));
	if (!list) {
		if (libssh2_userauth_authenticated(c->session))
			return 0; /* the server accepted "none" */
		return conn_fail(c, err, rc, "start authentication as '%s'", c->user);
	}
	if (s->key) {
		method = "publickey";
		if (!method_offered(list, method))
			return set_error(err, SFTP_ERR_AUTH, -EACCES,
			                 "%s does not accept publickey authentication for '%s' "
			                 "(it offers: %s)",
			                 hp, c->user, list);
		/* NULL public key: libssh2 derives it from the private key (it
		 * reads OpenSSH and PEM formats from memory). "" rather than
		 * NULL keeps OpenSSL from prompting for a passphrase. */
		RETRY(c, rc,
		      libssh2_userauth_publickey_frommemory(c->session, c->user, user_len, NULL, 0,
		                                            s->key, s->key_len,
		                                            s->passphrase ? s->passphrase : ""));
		if (rc == LIBSSH2_ERROR_FILE || rc == LIBSSH2_ERROR_KEYFILE_AUTH_FAILED)
			return set_error(err, SFTP_ERR_CONFIG, -EINVAL,
			                 "cannot use private key %s: %s", site->private_key_file,
			                 s->passphrase || !site->passphrase_file
			                     ? "wrong passphrase or unsupported key format"
			                     : "unsupported key format");
	} else if (method_offered(list, "password")) {
		method = "password";
		RETRY(c, rc,
		      libssh2_userauth_password_ex(c->session, c->user, user_len, s->password,
		                                   (unsigned int)s->password_len, NULL));
	} else if (method_offered(list, "keyboard-interactive")) {
		method = "keyboard-interactive";
		c->kbdint_password = s->password;
		RETRY(c, rc,
		      libssh2_userauth_keyboard_interactive_ex(c->session, c->user, user_len,
		                                               kbdint_response));
		c->kbdint_password = NULL;
	} else {
		return set_error(
		    err, SFTP_ERR_AUTH, -EACCES,
		    "%s does not accept password authentication for '%s' (it offers: %s)", hp,
		    c->user, list);
	}
	if (rc == 0)
		return 0;
	(void)sftp_error_from_libssh2(rc, 0, &kind);
	if (kind == SFTP_ERR_AUTH && !connection_lost(c))
		return auth_refused(c, err, method);
	if (kind == SFTP_ERR_AUTH) {
		c->broken = true;
		return set_error(err, SFTP_ERR_CONNECT, -ECONNRESET,
		                 "the connection was lost while authenticating to %s as '%s' (%s); "
		                 "this is a network problem, not a refused credential",
		                 hp, c->user, method);
	}
	return conn_fail(c, err, rc, "authenticate as '%s' (%s)", c->user, method);
}

int sftp_connect(const struct cfg_site *site, struct sftp_conn **out, struct sftp_error *err)
{
	struct known_hosts k = {0};
	struct secrets s = {0};
	struct sftp_conn *c = NULL;
	char prefs[256];
	int rc;

	*out = NULL;
	clear_error(err);
	if (!site->known_hosts_file && site->n_host_key_sha256 == 0) {
		rc = set_error(
		    err, SFTP_ERR_CONFIG, -EINVAL,
		    "site '%s' has neither known_hosts_file nor host_key_sha256; host key "
		    "verification cannot be turned off",
		    site->name ? site->name : "?");
		goto out;
	}
	if ((rc = secrets_load(site, &s, err)) < 0)
		goto out;
	if (!(c = conn_new(site))) {
		rc = set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = tcp_connect(c, site->connect_timeout_ms > 0 ? site->connect_timeout_ms : 30000,
	                      err)) < 0)
		goto out;
	set_deadline(c, site->auth_timeout_ms > 0 ? site->auth_timeout_ms : 30000);
	if ((rc = session_new(c, err)) < 0)
		goto out;
	if (site->known_hosts_file &&
	    (rc = known_hosts_load(c, site->known_hosts_file, &k, err)) < 0)
		goto out;
	hostkey_prefs(&k, prefs, sizeof(prefs));
	if ((rc = handshake(c, prefs, err)) < 0)
		goto out;
	if ((rc = verify_host_key(c, site, &k, err)) < 0)
		goto out;
	if ((rc = authenticate(c, site, &s, err)) < 0)
		goto out;
	RETRY_PTR(c, c->sftp, rc, libssh2_sftp_init(c->session));
	if (!c->sftp) {
		rc = conn_fail(c, err, rc, "start the SFTP subsystem");
		goto out;
	}
	if (c->keepalive_seconds > 0)
		libssh2_keepalive_config(c->session, 1, (unsigned int)c->keepalive_seconds);
	set_deadline(c, c->stall_timeout_ms);
	*out = c;
	c = NULL;
	rc = 0;
out:
	secrets_free(&s);
	known_hosts_free(&k);
	sftp_close(c);
	return rc;
}

void sftp_close(struct sftp_conn *c)
{
	int rc = 0;

	if (!c)
		return;
	c->keepalive_seconds = 0;
	if (c->session) {
		/* A dead or frozen peer would make every step below wait: cut the
		 * socket so that libssh2 gets errors instead of EAGAIN. */
		if (c->broken && c->fd >= 0)
			shutdown(c->fd, SHUT_RDWR);
		set_deadline(c, SFTP_CLOSE_TIMEOUT_MS);
		if (c->sftp)
			RETRY(c, rc, libssh2_sftp_shutdown(c->sftp));
		if (!c->broken && rc == 0)
			RETRY(c, rc, libssh2_session_disconnect(c->session, "done"));
		if (rc == LIBSSH2_ERROR_TIMEOUT && c->fd >= 0)
			shutdown(c->fd, SHUT_RDWR);
		set_deadline(c, SFTP_CLOSE_TIMEOUT_MS);
		RETRY(c, rc, libssh2_session_free(c->session));
	}
	conn_free(c);
}

int sftp_probe_host_key(const struct cfg_site *site, char *key_type, size_t type_len,
                        char *fingerprint, size_t fp_len, char **known_hosts_line,
                        struct sftp_error *err)
{
	struct sftp_conn *c = NULL;
	struct host_key hk;
	char prefs[256];
	int rc;

	*known_hosts_line = NULL;
	clear_error(err);
	if (!(c = conn_new(site))) {
		rc = set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = tcp_connect(c, site->connect_timeout_ms > 0 ? site->connect_timeout_ms : 30000,
	                      err)) < 0)
		goto out;
	set_deadline(c, site->auth_timeout_ms > 0 ? site->auth_timeout_ms : 30000);
	if ((rc = session_new(c, err)) < 0)
		goto out;
	hostkey_prefs(NULL, prefs, sizeof(prefs));
	if ((rc = handshake(c, prefs, err)) < 0 || (rc = get_host_key(c, &hk, err)) < 0)
		goto out;
	util_strlcpy(key_type, hk.type_name, type_len);
	util_strlcpy(fingerprint, hk.fingerprint, fp_len);
	*known_hosts_line = sftp_known_hosts_line(c->host, c->port, hk.blob, hk.len);
	if (!*known_hosts_line) {
		rc = set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
		goto out;
	}
	rc = 0;
out:
	sftp_close(c);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Listing and stat                                                    */

void sftp_entry_free(struct sftp_entry *e)
{
	if (!e)
		return;
	free(e->path);
	free(e->name);
	e->path = e->name = NULL;
}

void sftp_listing_free(struct sftp_listing *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		sftp_entry_free(&l->entries[i]);
	free(l->entries);
	l->entries = NULL;
	l->n = 0;
}

static char *join_path(const char *dir, const char *name)
{
	size_t len = strlen(dir);
	char *path = NULL;

	if (asprintf(&path, "%s%s%s", dir, len && dir[len - 1] == '/' ? "" : "/", name) < 0)
		return NULL;
	return path;
}

void sftp_entry_set_attrs(struct sftp_entry *e, unsigned long flags, uint64_t size,
                          unsigned long permissions, unsigned long mtime)
{
	bool has_perm = flags & LIBSSH2_SFTP_ATTR_PERMISSIONS;

	e->size = (flags & LIBSSH2_SFTP_ATTR_SIZE) ? size : 0;
	e->has_mtime = flags & LIBSSH2_SFTP_ATTR_ACMODTIME;
	e->mtime = e->has_mtime ? (int64_t)mtime : 0;
	/* Without permissions we cannot tell a file from anything else: not
	 * regular, so it is never imported by mistake. */
	e->is_regular = has_perm && LIBSSH2_SFTP_S_ISREG(permissions);
	e->is_dir = has_perm && LIBSSH2_SFTP_S_ISDIR(permissions);
}

static void fill_entry(struct sftp_entry *e, const LIBSSH2_SFTP_ATTRIBUTES *a)
{
	sftp_entry_set_attrs(e, a->flags, a->filesize, a->permissions, a->mtime);
}

static int list_one(struct sftp_conn *c, const char *dir, struct sftp_listing *out, size_t *cap,
                    char *name, size_t name_size, struct sftp_error *err)
{
	LIBSSH2_SFTP_HANDLE *h;
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	char hp[300];
	int rc, n;

	format_hostport(hp, sizeof(hp), c->host, c->port);
	RETRY_PTR(c, h, rc,
	          libssh2_sftp_open_ex(c->sftp, dir, (unsigned int)strlen(dir), 0, 0,
	                               LIBSSH2_SFTP_OPENDIR));
	if (!h)
		return conn_fail(c, err, rc, "list '%s'", dir);
	progress(c);
	for (;;) {
		struct sftp_entry *e;

		memset(&attrs, 0, sizeof(attrs));
		RETRY(c, n, libssh2_sftp_readdir_ex(h, name, name_size - 1, NULL, 0, &attrs));
		if (n == 0)
			break;
		if (n < 0) {
			rc = conn_fail(c, err, n, "list '%s'", dir);
			goto out;
		}
		progress(c);
		name[n] = '\0';
		/* never trust a name from the server to be a plain name */
		if ((size_t)n != strlen(name) || strchr(name, '/') || strcmp(name, ".") == 0 ||
		    strcmp(name, "..") == 0)
			continue;
		if (out->n >= SFTP_MAX_LIST_ENTRIES) {
			rc = set_error(err, SFTP_ERR_IO, -E2BIG,
			               "listing '%s' on %s has more than %d entries", dir, hp,
			               SFTP_MAX_LIST_ENTRIES);
			goto out;
		}
		if (out->n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 64;
			struct sftp_entry *grown = realloc(out->entries, ncap * sizeof(*grown));

			if (!grown) {
				rc = set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
				goto out;
			}
			out->entries = grown;
			*cap = ncap;
		}
		e = &out->entries[out->n];
		memset(e, 0, sizeof(*e));
		e->path = join_path(dir, name);
		e->name = strdup(name);
		if (!e->path || !e->name || strlen(e->path) >= SFTP_MAX_PATH) {
			bool too_long = e->path && e->name;

			sftp_entry_free(e);
			rc = too_long ? set_error(err, SFTP_ERR_IO, -ENAMETOOLONG,
			                          "a path under '%s' on %s is longer than %d bytes",
			                          dir, hp, SFTP_MAX_PATH)
			              : set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
			goto out;
		}
		fill_entry(e, &attrs);
		out->n++;
	}
	rc = 0;
out:
	if (!c->broken) {
		int crc;

		RETRY(c, crc, libssh2_sftp_close_handle(h));
		(void)crc; /* a directory handle: nothing was written */
	}
	return rc;
}

static size_t path_depth(const char *path)
{
	size_t depth = 0;

	for (; *path; path++)
		depth += *path == '/';
	return depth;
}

int sftp_list(struct sftp_conn *c, const char *dir, bool recursive, struct sftp_listing *out,
              struct sftp_error *err)
{
	size_t cap = 0, root_depth = path_depth(dir);
	char *name;
	int rc;

	out->entries = NULL;
	out->n = 0;
	if ((rc = check_usable(c, err)) < 0)
		return rc;
	name = malloc(SFTP_MAX_PATH);
	if (!name)
		return set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
	set_deadline(c, c->stall_timeout_ms);
	rc = list_one(c, dir, out, &cap, name, SFTP_MAX_PATH, err);
	/* breadth first: out->n grows while we walk it */
	for (size_t i = 0; rc == 0 && recursive && i < out->n; i++) {
		char *sub;

		if (!out->entries[i].is_dir ||
		    path_depth(out->entries[i].path) - root_depth >= SFTP_MAX_LIST_DEPTH)
			continue;
		sub = strdup(out->entries[i].path); /* entries may move on realloc */
		if (!sub) {
			rc = set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
			break;
		}
		rc = list_one(c, sub, out, &cap, name, SFTP_MAX_PATH, err);
		free(sub);
	}
	free(name);
	if (rc < 0)
		sftp_listing_free(out);
	return rc;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* stat without filling err: 0, or the libssh2 error (status in *status). */
static int stat_raw(struct sftp_conn *c, const char *path, LIBSSH2_SFTP_ATTRIBUTES *attrs,
                    unsigned long *status)
{
	int rc;

	memset(attrs, 0, sizeof(*attrs));
	RETRY(c, rc,
	      libssh2_sftp_stat_ex(c->sftp, path, (unsigned int)strlen(path), LIBSSH2_SFTP_STAT,
	                           attrs));
	*status = rc == LIBSSH2_ERROR_SFTP_PROTOCOL ? libssh2_sftp_last_error(c->sftp) : 0;
	return rc;
}

int sftp_stat(struct sftp_conn *c, const char *path, struct sftp_entry *out, struct sftp_error *err)
{
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	unsigned long status;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = check_usable(c, err)) < 0)
		return rc;
	set_deadline(c, c->stall_timeout_ms);
	rc = stat_raw(c, path, &attrs, &status);
	if (rc)
		return conn_fail_status(c, err, rc, status, "stat '%s'", path);
	out->path = strdup(path);
	out->name = strdup(base_name(path));
	if (!out->path || !out->name) {
		sftp_entry_free(out);
		return set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
	}
	fill_entry(out, &attrs);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Transfers                                                           */

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* fsync the directory holding path, so the new name survives a crash. */
static int fsync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	int fd, rc = 0;

	if (!dir)
		return -ENOMEM;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(dir);
	return rc;
}

static void close_handle(struct sftp_conn *c, LIBSSH2_SFTP_HANDLE *h)
{
	int rc;

	if (!h || c->broken)
		return;
	RETRY(c, rc, libssh2_sftp_close_handle(h));
	(void)rc;
}

int sftp_fetch(struct sftp_conn *c, const char *remote, uint64_t expected_size,
               const char *local_path, char sha256_hex[65], struct sftp_error *err)
{
	LIBSSH2_SFTP_HANDLE *h = NULL;
	EVP_MD_CTX *md = NULL;
	unsigned char digest[32];
	uint64_t total = 0;
	char *buf = NULL, hp[300];
	int fd = -1, rc;
	bool created = false;

	sha256_hex[0] = '\0';
	if ((rc = check_usable(c, err)) < 0)
		return rc;
	format_hostport(hp, sizeof(hp), c->host, c->port);
	set_deadline(c, c->stall_timeout_ms);
	buf = malloc(SFTP_READ_CHUNK);
	md = EVP_MD_CTX_new();
	if (!buf || !md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		rc = set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
		goto out;
	}
	RETRY_PTR(c, h, rc,
	          libssh2_sftp_open_ex(c->sftp, remote, (unsigned int)strlen(remote),
	                               LIBSSH2_FXF_READ, 0, LIBSSH2_SFTP_OPENFILE));
	if (!h) {
		rc = conn_fail(c, err, rc, "open '%s'", remote);
		goto out;
	}
	fd = open(local_path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = set_error(err, SFTP_ERR_IO, -errno, "cannot create staging file %s: %s",
		               local_path, strerror(errno));
		goto out;
	}
	created = true;
	for (;;) {
		ssize_t n;

		RETRY(c, n, libssh2_sftp_read(h, buf, SFTP_READ_CHUNK));
		if (n < 0) {
			rc = conn_fail(c, err, (int)n, "read '%s'", remote);
			goto out;
		}
		if (n == 0)
			break;
		progress(c);
		total += (uint64_t)n;
		if (total > expected_size) {
			rc = set_error(
			    err, SFTP_ERR_IO, -ESTALE,
			    "'%s' on %s is larger than the %llu bytes it had when listed; "
			    "it is still changing",
			    remote, hp, (unsigned long long)expected_size);
			goto out;
		}
		if ((rc = write_all(fd, buf, (size_t)n)) < 0) {
			rc = set_error(err, SFTP_ERR_IO, rc, "cannot write staging file %s: %s",
			               local_path, strerror(-rc));
			goto out;
		}
		if (EVP_DigestUpdate(md, buf, (size_t)n) != 1) {
			rc = set_error(err, SFTP_ERR_IO, -EIO, "SHA-256 failed");
			goto out;
		}
	}
	if (total != expected_size) {
		rc = set_error(err, SFTP_ERR_IO, -ESTALE,
		               "'%s' on %s has %llu bytes, not the %llu it had when listed; it "
		               "changed while being fetched",
		               remote, hp, (unsigned long long)total,
		               (unsigned long long)expected_size);
		goto out;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		fd = -1;
		rc = set_error(err, SFTP_ERR_IO, -errno, "cannot write staging file %s: %s",
		               local_path, strerror(errno));
		goto out;
	}
	fd = -1;
	if ((rc = fsync_parent(local_path)) < 0) {
		rc = set_error(err, SFTP_ERR_IO, rc, "cannot sync the directory of %s: %s",
		               local_path, strerror(-rc));
		goto out;
	}
	if (EVP_DigestFinal_ex(md, digest, NULL) != 1) {
		rc = set_error(err, SFTP_ERR_IO, -EIO, "SHA-256 failed");
		goto out;
	}
	for (int i = 0; i < 32; i++)
		snprintf(sha256_hex + 2 * i, 3, "%02x", digest[i]);
	rc = 0;
out:
	close_handle(c, h);
	if (fd >= 0)
		close(fd);
	if (rc < 0 && created)
		unlink(local_path);
	EVP_MD_CTX_free(md);
	free(buf);
	return rc;
}

/* A failed create or rename: does `path` exist after all? (SFTP v3, which
 * OpenSSH speaks, reports an existing target as plain FX_FAILURE.) */
static bool exists_after_failure(struct sftp_conn *c, int rc, unsigned long status,
                                 const char *path)
{
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	unsigned long st;

	if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL ||
	    (status != LIBSSH2_FX_FAILURE && status != LIBSSH2_FX_FILE_ALREADY_EXISTS))
		return false;
	return stat_raw(c, path, &attrs, &st) == 0;
}

int sftp_rename(struct sftp_conn *c, const char *from, const char *to, struct sftp_error *err)
{
	unsigned long status = 0;
	char hp[300];
	int rc;

	if ((rc = check_usable(c, err)) < 0)
		return rc;
	set_deadline(c, c->stall_timeout_ms);
	/* no LIBSSH2_SFTP_RENAME_OVERWRITE: a clash is the caller's to solve */
	RETRY(c, rc,
	      libssh2_sftp_rename_ex(c->sftp, from, (unsigned int)strlen(from), to,
	                             (unsigned int)strlen(to),
	                             LIBSSH2_SFTP_RENAME_ATOMIC | LIBSSH2_SFTP_RENAME_NATIVE));
	if (rc == 0)
		return 0;
	if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL)
		status = libssh2_sftp_last_error(c->sftp);
	if (exists_after_failure(c, rc, status, to)) {
		format_hostport(hp, sizeof(hp), c->host, c->port);
		return set_error(err, SFTP_ERR_IO, -EEXIST,
		                 "cannot rename '%s' to '%s' on %s: '%s' already exists", from, to,
		                 hp, to);
	}
	return conn_fail_status(c, err, rc, status, "rename '%s' to '%s'", from, to);
}

int sftp_unlink(struct sftp_conn *c, const char *path, struct sftp_error *err)
{
	int rc;

	if ((rc = check_usable(c, err)) < 0)
		return rc;
	set_deadline(c, c->stall_timeout_ms);
	RETRY(c, rc, libssh2_sftp_unlink_ex(c->sftp, path, (unsigned int)strlen(path)));
	if (rc)
		return conn_fail(c, err, rc, "delete '%s'", path);
	return 0;
}

/* Make one directory unless it exists. */
static int ensure_dir(struct sftp_conn *c, const char *path, struct sftp_error *err)
{
	LIBSSH2_SFTP_ATTRIBUTES attrs;
	unsigned long status, mk_status = 0;
	char hp[300];
	int rc, mk;

	format_hostport(hp, sizeof(hp), c->host, c->port);
	rc = stat_raw(c, path, &attrs, &status);
	if (rc == 0 && (attrs.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) &&
	    !LIBSSH2_SFTP_S_ISDIR(attrs.permissions))
		return set_error(err, SFTP_ERR_IO, -ENOTDIR,
		                 "cannot create folder '%s' on %s: a file of that name exists",
		                 path, hp);
	if (rc == 0)
		return 0;
	if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
		return conn_fail_status(c, err, rc, status, "stat '%s'", path);
	RETRY(c, mk, libssh2_sftp_mkdir_ex(c->sftp, path, (unsigned int)strlen(path), 0755));
	if (mk == 0)
		return 0;
	if (mk == LIBSSH2_ERROR_SFTP_PROTOCOL)
		mk_status = libssh2_sftp_last_error(c->sftp);
	/* made meanwhile by someone else? */
	if (mk == LIBSSH2_ERROR_SFTP_PROTOCOL && stat_raw(c, path, &attrs, &status) == 0 &&
	    (attrs.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) &&
	    LIBSSH2_SFTP_S_ISDIR(attrs.permissions))
		return 0;
	return conn_fail_status(c, err, mk, mk_status, "create folder '%s'", path);
}

int sftp_mkdir_p(struct sftp_conn *c, const char *dir, struct sftp_error *err)
{
	size_t len = strlen(dir);
	char *path;
	int rc = 0;

	if ((rc = check_usable(c, err)) < 0)
		return rc;
	if (len >= SFTP_MAX_PATH)
		return set_error(err, SFTP_ERR_IO, -ENAMETOOLONG,
		                 "folder name '%.64s...' is too long", dir);
	path = strdup(dir);
	if (!path)
		return set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
	while (len > 1 && path[len - 1] == '/')
		path[--len] = '\0';
	set_deadline(c, c->stall_timeout_ms);
	for (size_t i = 1; rc == 0 && i <= len; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		if (path[i - 1] == '/' || (i == 1 && path[0] == '.'))
			continue; /* "//" or a leading "./" */
		path[i] = '\0';
		rc = ensure_dir(c, path, err);
		if (i < len)
			path[i] = '/';
	}
	free(path);
	return rc;
}

int sftp_upload(struct sftp_conn *c, const char *local_path, const char *remote,
                struct sftp_error *err)
{
	LIBSSH2_SFTP_HANDLE *h = NULL;
	unsigned long status = 0;
	char *buf = NULL, hp[300];
	int fd = -1, rc;
	bool created = false;

	if ((rc = check_usable(c, err)) < 0)
		return rc;
	format_hostport(hp, sizeof(hp), c->host, c->port);
	set_deadline(c, c->stall_timeout_ms);
	fd = open(local_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = set_error(err, SFTP_ERR_IO, -errno, "cannot open %s: %s", local_path,
		               strerror(errno));
		goto out;
	}
	if (!(buf = malloc(SFTP_READ_CHUNK))) {
		rc = set_error(err, SFTP_ERR_IO, -ENOMEM, "out of memory");
		goto out;
	}
	RETRY_PTR(c, h, rc,
	          libssh2_sftp_open_ex(c->sftp, remote, (unsigned int)strlen(remote),
	                               LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_EXCL,
	                               0644, LIBSSH2_SFTP_OPENFILE));
	if (!h) {
		if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL)
			status = libssh2_sftp_last_error(c->sftp);
		if (exists_after_failure(c, rc, status, remote))
			rc = set_error(err, SFTP_ERR_IO, -EEXIST,
			               "cannot upload '%s' to %s: it already exists", remote, hp);
		else
			rc = conn_fail_status(c, err, rc, status, "create '%s'", remote);
		goto out;
	}
	created = true;
	for (;;) {
		ssize_t n = read(fd, buf, SFTP_READ_CHUNK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = set_error(err, SFTP_ERR_IO, -errno, "cannot read %s: %s", local_path,
			               strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		for (ssize_t off = 0; off < n;) {
			ssize_t w;

			RETRY(c, w, libssh2_sftp_write(h, buf + off, (size_t)(n - off)));
			if (w < 0) {
				rc = conn_fail(c, err, (int)w, "write '%s'", remote);
				goto out;
			}
			off += w;
			progress(c);
		}
	}
	/* the server reports write errors by the close at the latest */
	RETRY(c, rc, libssh2_sftp_close_handle(h));
	h = NULL;
	if (rc) {
		rc = conn_fail(c, err, rc, "finish writing '%s'", remote);
		goto out;
	}
	rc = 0;
out:
	close_handle(c, h);
	if (rc < 0 && created && !c->broken) {
		int urc;

		RETRY(c, urc,
		      libssh2_sftp_unlink_ex(c->sftp, remote, (unsigned int)strlen(remote)));
		(void)urc; /* best effort: no half report left behind */
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}
