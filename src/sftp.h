/* sftp.h — the SFTP source (libssh2). Every call here is blocking and is
 * made from a libuv worker thread (uv_queue_work), one call at a time per
 * connection; results are applied on the loop thread in the after-work
 * callback. Timeouts bound every step (libssh2_session_set_timeout plus the
 * site's connect/auth/stall limits), so a worker never hangs for hours.
 * The host key is verified before any authentication is attempted. */
#ifndef XP_SFTP_H
#define XP_SFTP_H
#include "config.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sftp_err_kind {
	SFTP_ERR_NONE,
	SFTP_ERR_CONNECT, /* DNS/TCP/SSH handshake */
	SFTP_ERR_TIMEOUT,
	SFTP_ERR_HOSTKEY_UNKNOWN, /* not in known_hosts / no pin matches */
	SFTP_ERR_HOSTKEY_CHANGED, /* known_hosts has a different key for this host */
	SFTP_ERR_AUTH,            /* authentication refused */
	SFTP_ERR_CONFIG,          /* secret file unreadable / loose permissions / RSA unsupported */
	SFTP_ERR_NOT_FOUND,
	SFTP_ERR_IO,           /* SFTP protocol or local I/O error */
	SFTP_ERR_HOSTKEY_TYPE, /* known_hosts has this host, but only keys of other
	                        * types than the one the server offered */
};

struct sftp_error {
	enum sftp_err_kind kind;
	char message[512];     /* complete sentence for the operator; no secrets */
	char key_type[32];     /* host key offered, for host key errors */
	char fingerprint[128]; /* "SHA256:..." of the key offered */
};

struct sftp_entry {
	char *path; /* full remote path */
	char *name; /* base name */
	uint64_t size;
	int64_t mtime; /* seconds; valid if has_mtime */
	bool has_mtime;
	bool is_regular; /* symlinks and directories are false */
	bool is_dir;     /* a directory (symlinks to one are false) */
};

struct sftp_listing {
	struct sftp_entry *entries;
	size_t n;
};
void sftp_listing_free(struct sftp_listing *l);

struct sftp_conn;

/* Once per process, before any thread uses libssh2. */
int sftp_global_init(void);
void sftp_global_cleanup(void);

/* Connect, verify the host key (known_hosts_file and/or host_key_sha256),
 * then authenticate. 0 or negative errno with err filled. */
int sftp_connect(const struct cfg_site *site, struct sftp_conn **out, struct sftp_error *err);
void sftp_close(struct sftp_conn *c);

/* List dir (recursively if asked). Entries are not filtered here. */
int sftp_list(struct sftp_conn *c, const char *dir, bool recursive, struct sftp_listing *out,
              struct sftp_error *err);
/* Stat one path (done markers). -ENOENT if it does not exist. */
int sftp_stat(struct sftp_conn *c, const char *path, struct sftp_entry *out,
              struct sftp_error *err);
void sftp_entry_free(struct sftp_entry *e);

/* Download remote to local_path (created 0600 O_EXCL, fsync'd), computing
 * SHA-256 while streaming (hex, 64 chars + NUL). A size different from
 * expected_size is an error (-ESTALE, kind SFTP_ERR_IO: the file changed
 * since it was listed) and the local file is removed; so is it on any other
 * failure. No bytes for site->stall_timeout_ms: -ETIMEDOUT, SFTP_ERR_TIMEOUT. */
int sftp_fetch(struct sftp_conn *c, const char *remote, uint64_t expected_size,
               const char *local_path, char sha256_hex[65], struct sftp_error *err);

/* Never overwrites: an existing `to` is -EEXIST (the caller picks a suffix). */
int sftp_rename(struct sftp_conn *c, const char *from, const char *to, struct sftp_error *err);
int sftp_unlink(struct sftp_conn *c, const char *path, struct sftp_error *err);
int sftp_mkdir_p(struct sftp_conn *c, const char *dir, struct sftp_error *err);
/* Creates remote exclusively: an existing remote is -EEXIST, never overwritten. */
int sftp_upload(struct sftp_conn *c, const char *local_path, const char *remote,
                struct sftp_error *err);

/* For `xpimportctl trust`: connect without verifying, report the key
 * offered (type "ssh-ed25519", "SHA256:..." fingerprint, and the
 * known_hosts line to append). */
int sftp_probe_host_key(const struct cfg_site *site, char *key_type, size_t type_len,
                        char *fingerprint, size_t fp_len, char **known_hosts_line,
                        struct sftp_error *err);

/* ---- exported for tests (pure functions, no network) ---- */

/* "SHA256:" + unpadded base64 of SHA-256(blob), as ssh-keygen -l prints it.
 * 0, or -ENOSPC if out is too small (51 bytes are enough), -EIO (crypto). */
int sftp_fingerprint_sha256(const unsigned char *blob, size_t len, char *out, size_t out_len);
/* True if fingerprint equals one of the pins; a pin may carry base64 '='
 * padding, the "SHA256:" prefix is required and compared case-sensitively. */
bool sftp_pin_matches(const char *fingerprint, char *const *pins, size_t n_pins);
/* The key type named inside an SSH public key blob ("ssh-ed25519"), or
 * -EINVAL for a malformed blob, -ENOSPC if it does not fit. */
int sftp_blob_key_type(const unsigned char *blob, size_t len, char *out, size_t out_len);
/* "[host]:port type base64" ("host type base64" for port 22), malloc'd;
 * NULL on ENOMEM or a malformed blob. */
char *sftp_known_hosts_line(const char *host, int port, const unsigned char *blob, size_t len);
/* The key type of a private key file's contents: "ssh-rsa", "ssh-ed25519",
 * "ecdsa-sha2-nistp256", "ssh-dss", ... 0, or -ENOENT if it cannot be told
 * (e.g. an encrypted PKCS#8 file), -EINVAL if it is not a private key. */
int sftp_private_key_type(const char *data, size_t len, char *out, size_t out_len);
/* The one conversion of libssh2 codes: a libssh2 return code (and, for
 * LIBSSH2_ERROR_SFTP_PROTOCOL, the SFTP status) to a negative errno and
 * an error kind. */
int sftp_error_from_libssh2(int rc, unsigned long sftp_status, enum sftp_err_kind *kind);
/* Human text for an SFTP status code ("no such file"). */
const char *sftp_status_text(unsigned long sftp_status);
/* Set size, mtime and type of e from SFTP attributes (flags are the
 * SSH_FILEXFER_ATTR_* bits: size 0x1, permissions 0x4, acmodtime 0x8).
 * Without the permissions bit an entry is neither regular nor a dir. */
void sftp_entry_set_attrs(struct sftp_entry *e, unsigned long flags, uint64_t size,
                          unsigned long permissions, unsigned long mtime);
/* Fill err (kind, key_type, fingerprint, message) for a refused host key.
 * kind is one of the SFTP_ERR_HOSTKEY_* kinds; known_hosts_file may be NULL
 * (pins only); revoked: the key is listed as @revoked. */
void sftp_hostkey_error(struct sftp_error *err, enum sftp_err_kind kind, bool revoked,
                        const char *site_name, const char *host, int port, const char *key_type,
                        const char *fingerprint, const char *known_hosts_file);
#endif
