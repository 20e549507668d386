/* Unit tests for the pure parts of src/sftp.c: fingerprints, pins,
 * known_hosts lines, key type detection, libssh2 error conversion and the
 * host key refusal messages. The network parts are exercised against a
 * real sshd through tests/sftp_probe. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "sftp.h"
#include "util.h"

/* ssh-keygen -t ed25519 / -t ecdsa host keys and what `ssh-keygen -lf` prints */
static const char ed25519_b64[] =
    "AAAAC3NzaC1lZDI1NTE5AAAAIMoZhUSyclUuUrsmT9E/qJFKbo+DV0/uY65RFjiGsmFr";
static const char ed25519_fp[] = "SHA256:ptYsHqZqEZuHRnyEW9WpBJGh04UKhL21a72hy1uTTNc";
static const char ecdsa_b64[] = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBL8La2kAni43cS"
                                "uwRC+aRwVrVuY0HbNQ0eikn81o2zM0"
                                "BNx31bbsE1nglnNTqFPwApAJAH5B1bYuQX6S7fU9nS4=";
static const char ecdsa_fp[] = "SHA256:uhhZ4jYaP4JqPjye91AO/2t9oKfhtXLN8mjxyFtwJP8";

static size_t b64_decode(const char *b64, unsigned char *out)
{
	size_t len = strlen(b64);
	int n = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)len);

	assert_true(n >= 0);
	while (len > 0 && b64[len - 1] == '=') {
		len--;
		n--;
	}
	return (size_t)n;
}

static void test_fingerprint_matches_ssh_keygen(void **state)
{
	unsigned char blob[256];
	char fp[128];
	size_t len;

	(void)state;
	len = b64_decode(ed25519_b64, blob);
	assert_int_equal(sftp_fingerprint_sha256(blob, len, fp, sizeof(fp)), 0);
	assert_string_equal(fp, ed25519_fp);
	len = b64_decode(ecdsa_b64, blob);
	assert_int_equal(sftp_fingerprint_sha256(blob, len, fp, sizeof(fp)), 0);
	assert_string_equal(fp, ecdsa_fp);
	/* "SHA256:" + 43 characters + NUL */
	assert_int_equal(sftp_fingerprint_sha256(blob, len, fp, 51), 0);
	assert_int_equal(sftp_fingerprint_sha256(blob, len, fp, 50), -ENOSPC);
}

static void test_pin_matching(void **state)
{
	char pin_ok[] = "SHA256:ptYsHqZqEZuHRnyEW9WpBJGh04UKhL21a72hy1uTTNc";
	char pin_padded[] = "SHA256:ptYsHqZqEZuHRnyEW9WpBJGh04UKhL21a72hy1uTTNc=";
	char pin_other[] = "SHA256:uhhZ4jYaP4JqPjye91AO/2t9oKfhtXLN8mjxyFtwJP8";
	char pin_no_prefix[] = "ptYsHqZqEZuHRnyEW9WpBJGh04UKhL21a72hy1uTTNc";
	char pin_truncated[] = "SHA256:ptYsHqZqEZuHRnyEW9WpBJGh04UKhL21a72hy1uTTN";
	char pin_lowercase[] = "sha256:ptYsHqZqEZuHRnyEW9WpBJGh04UKhL21a72hy1uTTNc";
	char pin_case[] = "SHA256:PTYsHqZqEZuHRnyEW9WpBJGh04UKhL21a72hy1uTTNc";
	char pin_prefix_only[] = "SHA256:";
	char *one[] = {pin_ok};
	char *rotation[] = {pin_other, pin_padded};
	char *wrong[] = {pin_other, pin_no_prefix,   pin_truncated, pin_lowercase,
	                 pin_case,  pin_prefix_only, NULL};

	(void)state;
	assert_true(sftp_pin_matches(ed25519_fp, one, 1));
	assert_true(sftp_pin_matches(ed25519_fp, rotation, 2));
	assert_false(sftp_pin_matches(ed25519_fp, rotation, 1));
	assert_false(sftp_pin_matches(ed25519_fp, wrong, XP_ARRAY_SIZE(wrong)));
	assert_false(sftp_pin_matches(ed25519_fp, NULL, 0));
}

static void test_blob_key_type(void **state)
{
	unsigned char blob[256];
	char type[32];
	size_t len;
	const unsigned char overlong[] = {0, 0, 1, 0, 's', 's', 'h'};
	const unsigned char empty_name[] = {0, 0, 0, 0};
	const unsigned char control_char[] = {0, 0, 0, 3, 's', '\n', 'h'};

	(void)state;
	len = b64_decode(ed25519_b64, blob);
	assert_int_equal(sftp_blob_key_type(blob, len, type, sizeof(type)), 0);
	assert_string_equal(type, "ssh-ed25519");
	assert_int_equal(sftp_blob_key_type(blob, len, type, 11), -ENOSPC);
	len = b64_decode(ecdsa_b64, blob);
	assert_int_equal(sftp_blob_key_type(blob, len, type, sizeof(type)), 0);
	assert_string_equal(type, "ecdsa-sha2-nistp256");
	assert_int_equal(sftp_blob_key_type(overlong, sizeof(overlong), type, sizeof(type)),
	                 -EINVAL);
	assert_int_equal(sftp_blob_key_type(empty_name, sizeof(empty_name), type, sizeof(type)),
	                 -EINVAL);
	assert_int_equal(sftp_blob_key_type(control_char, sizeof(control_char), type, sizeof(type)),
	                 -EINVAL);
	assert_int_equal(sftp_blob_key_type(blob, 3, type, sizeof(type)), -EINVAL);
}

static void test_known_hosts_line(void **state)
{
	unsigned char blob[256];
	char want[512];
	size_t len;
	char *line;
	const unsigned char bad[] = {0, 0, 9, 9};

	(void)state;
	len = b64_decode(ed25519_b64, blob);
	line = sftp_known_hosts_line("127.0.0.1", 2222, blob, len);
	snprintf(want, sizeof(want), "[127.0.0.1]:2222 ssh-ed25519 %s", ed25519_b64);
	assert_non_null(line);
	assert_string_equal(line, want);
	free(line);
	line = sftp_known_hosts_line("sftp.partner-a.example", 22, blob, len);
	snprintf(want, sizeof(want), "sftp.partner-a.example ssh-ed25519 %s", ed25519_b64);
	assert_string_equal(line, want);
	free(line);
	line = sftp_known_hosts_line("::1", 2222, blob, len);
	snprintf(want, sizeof(want), "[::1]:2222 ssh-ed25519 %s", ed25519_b64);
	assert_string_equal(line, want);
	free(line);
	len = b64_decode(ecdsa_b64, blob);
	line = sftp_known_hosts_line("10.0.0.5", 22, blob, len);
	snprintf(want, sizeof(want), "10.0.0.5 ecdsa-sha2-nistp256 %s", ecdsa_b64);
	assert_string_equal(line, want);
	free(line);
	assert_null(sftp_known_hosts_line("10.0.0.5", 22, bad, sizeof(bad)));
}

static unsigned char *put_str(unsigned char *p, const void *data, size_t len)
{
	*p++ = (unsigned char)(len >> 24);
	*p++ = (unsigned char)(len >> 16);
	*p++ = (unsigned char)(len >> 8);
	*p++ = (unsigned char)len;
	memcpy(p, data, len);
	return p + len;
}

/* An "openssh-key-v1" container whose public key blob names `type`. The
 * private section is filler: only the clear public part is read. */
static char *openssh_container(const char *cipher, const char *type)
{
	unsigned char raw[512], pub[128], *p = raw, *q = pub;
	const char *kdf = strcmp(cipher, "none") ? "bcrypt" : "none";
	char b64[1024], *pem;
	int n;

	memcpy(p, "openssh-key-v1", 15); /* with its NUL */
	p += 15;
	p = put_str(p, cipher, strlen(cipher));
	p = put_str(p, kdf, strlen(kdf));
	p = put_str(p, "", 0);
	memcpy(p, "\0\0\0\1", 4); /* one key */
	p += 4;
	q = put_str(q, type, strlen(type));
	memset(q, 0x41, 36);
	q += 36;
	p = put_str(p, pub, (size_t)(q - pub));
	p = put_str(p, "private-section-filler", 22);
	n = EVP_EncodeBlock((unsigned char *)b64, raw, (int)(p - raw));
	assert_true(n > 70);
	pem = malloc((size_t)n + 128);
	assert_non_null(pem);
	/* wrapped as ssh-keygen does */
	snprintf(
	    pem, (size_t)n + 128,
	    "-----BEGIN OPENSSH PRIVATE KEY-----\n%.70s\n%s\n-----END OPENSSH PRIVATE KEY-----\n",
	    b64, b64 + 70);
	return pem;
}

static char *pkcs8_pem(int type, bool encrypted)
{
	char passphrase[] = "secret";
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(type, NULL);
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *copy;
	long len;

	assert_non_null(ctx);
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	assert_int_equal(EVP_PKEY_keygen(ctx, &pkey), 1);
	if (encrypted)
		assert_int_equal(PEM_write_bio_PKCS8PrivateKey(bio, pkey, EVP_aes_128_cbc(), NULL,
		                                               0, NULL, passphrase),
		                 1);
	else
		assert_int_equal(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL), 1);
	len = BIO_get_mem_data(bio, &data);
	copy = strndup(data, (size_t)len);
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	return copy;
}

static void assert_key_type(const char *pem, int want_rc, const char *want_type)
{
	char type[32] = "";

	assert_int_equal(sftp_private_key_type(pem, strlen(pem), type, sizeof(type)), want_rc);
	if (want_type)
		assert_string_equal(type, want_type);
}

static void test_private_key_type(void **state)
{
	char *pem;

	(void)state;
	pem = openssh_container("none", "ssh-ed25519");
	assert_key_type(pem, 0, "ssh-ed25519");
	free(pem);
	pem = openssh_container("none", "ssh-rsa");
	assert_key_type(pem, 0, "ssh-rsa");
	free(pem);
	/* a passphrase-protected OpenSSH key still shows its type */
	pem = openssh_container("aes256-ctr", "ssh-rsa");
	assert_key_type(pem, 0, "ssh-rsa");
	free(pem);
	pem = openssh_container("aes256-ctr", "ecdsa-sha2-nistp384");
	assert_key_type(pem, 0, "ecdsa-sha2-nistp384");
	free(pem);
	assert_key_type("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n", 0,
	                "ssh-rsa");
	assert_key_type("-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n", 0,
	                "ecdsa");
	assert_key_type("-----BEGIN DSA PRIVATE KEY-----\nMIIB\n-----END DSA PRIVATE KEY-----\n", 0,
	                "ssh-dss");
	pem = pkcs8_pem(EVP_PKEY_ED25519, false);
	assert_key_type(pem, 0, "ssh-ed25519");
	free(pem);
	pem = pkcs8_pem(EVP_PKEY_ED25519, true);
	assert_key_type(pem, -ENOENT, NULL);
	free(pem);
	assert_key_type("ssh-ed25519 AAAAC3Nza... a public key", -EINVAL, NULL);
	assert_key_type("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", -EINVAL,
	                NULL);
	assert_key_type("-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n-----END OPENSSH "
	                "PRIVATE KEY-----\n",
	                -EINVAL, NULL);
	assert_key_type("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA", -EINVAL, NULL);
}

static void assert_maps(int rc, unsigned long status, int want_errno, enum sftp_err_kind want_kind)
{
	enum sftp_err_kind kind = SFTP_ERR_NONE;

	assert_int_equal(sftp_error_from_libssh2(rc, status, &kind), want_errno);
	assert_int_equal(kind, want_kind);
}

static void test_error_mapping(void **state)
{
	(void)state;
	assert_maps(0, 0, 0, SFTP_ERR_NONE);
	assert_maps(LIBSSH2_ERROR_TIMEOUT, 0, -ETIMEDOUT, SFTP_ERR_TIMEOUT);
	assert_maps(LIBSSH2_ERROR_SOCKET_TIMEOUT, 0, -ETIMEDOUT, SFTP_ERR_TIMEOUT);
	assert_maps(LIBSSH2_ERROR_SOCKET_RECV, 0, -ECONNRESET, SFTP_ERR_CONNECT);
	assert_maps(LIBSSH2_ERROR_SOCKET_DISCONNECT, 0, -ECONNRESET, SFTP_ERR_CONNECT);
	assert_maps(LIBSSH2_ERROR_BANNER_RECV, 0, -ECONNRESET, SFTP_ERR_CONNECT);
	assert_maps(LIBSSH2_ERROR_CHANNEL_CLOSED, 0, -ECONNRESET, SFTP_ERR_CONNECT);
	assert_maps(LIBSSH2_ERROR_KEX_FAILURE, 0, -EPROTO, SFTP_ERR_CONNECT);
	assert_maps(LIBSSH2_ERROR_METHOD_NONE, 0, -EPROTO, SFTP_ERR_CONNECT);
	assert_maps(LIBSSH2_ERROR_AUTHENTICATION_FAILED, 0, -EACCES, SFTP_ERR_AUTH);
	assert_maps(LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED, 0, -EACCES, SFTP_ERR_AUTH);
	assert_maps(LIBSSH2_ERROR_PASSWORD_EXPIRED, 0, -EACCES, SFTP_ERR_AUTH);
	assert_maps(LIBSSH2_ERROR_FILE, 0, -EINVAL, SFTP_ERR_CONFIG);
	assert_maps(LIBSSH2_ERROR_ALLOC, 0, -ENOMEM, SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_EAGAIN, 0, -EAGAIN, SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED, 0, -EPERM, SFTP_ERR_IO);
	assert_maps(-12345, 0, -EIO, SFTP_ERR_IO);
	/* SFTP statuses */
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_NO_SUCH_FILE, -ENOENT,
	            SFTP_ERR_NOT_FOUND);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_NO_SUCH_PATH, -ENOENT,
	            SFTP_ERR_NOT_FOUND);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_FILE_ALREADY_EXISTS, -EEXIST,
	            SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_PERMISSION_DENIED, -EACCES,
	            SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_WRITE_PROTECT, -EACCES, SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_FAILURE, -EIO, SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM, -ENOSPC,
	            SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_QUOTA_EXCEEDED, -EDQUOT, SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_OP_UNSUPPORTED, -EOPNOTSUPP,
	            SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_CONNECTION_LOST, -ECONNRESET,
	            SFTP_ERR_CONNECT);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_NOT_A_DIRECTORY, -ENOTDIR, SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, LIBSSH2_FX_DIR_NOT_EMPTY, -ENOTEMPTY, SFTP_ERR_IO);
	assert_maps(LIBSSH2_ERROR_SFTP_PROTOCOL, 999, -EIO, SFTP_ERR_IO);
	assert_string_equal(sftp_status_text(LIBSSH2_FX_NO_SUCH_FILE), "no such file");
	assert_string_equal(sftp_status_text(LIBSSH2_FX_PERMISSION_DENIED), "permission denied");
	assert_string_equal(sftp_status_text(999), "unknown SFTP error");
}

static void test_hostkey_messages(void **state)
{
	struct sftp_error err;
	char want[512], longhost[400];

	(void)state;
	memset(&err, 0, sizeof(err));
	sftp_hostkey_error(&err, SFTP_ERR_HOSTKEY_UNKNOWN, false, "partner-a", "127.0.0.1", 2222,
	                   "ssh-ed25519", ed25519_fp, "/etc/xpimportd/known_hosts");
	snprintf(
	    want, sizeof(want),
	    "host key for 127.0.0.1:2222 is not known (ssh-ed25519 %s); verify it out of band, "
	    "then run 'xpimportctl trust partner-a'",
	    ed25519_fp);
	assert_string_equal(err.message, want);
	assert_int_equal(err.kind, SFTP_ERR_HOSTKEY_UNKNOWN);
	assert_string_equal(err.key_type, "ssh-ed25519");
	assert_string_equal(err.fingerprint, ed25519_fp);

	sftp_hostkey_error(&err, SFTP_ERR_HOSTKEY_CHANGED, false, "partner-a", "sftp.example", 22,
	                   "ssh-ed25519", ed25519_fp, "/etc/xpimportd/known_hosts");
	snprintf(want, sizeof(want),
	         "host key for sftp.example:22 has CHANGED (now ssh-ed25519 %s) and does not match "
	         "/etc/xpimportd/known_hosts; this may be an attack (someone intercepting the "
	         "connection); verify the new key out of band, remove the old entry, then run "
	         "'xpimportctl trust partner-a'",
	         ed25519_fp);
	assert_string_equal(err.message, want);
	assert_int_equal(err.kind, SFTP_ERR_HOSTKEY_CHANGED);

	sftp_hostkey_error(&err, SFTP_ERR_HOSTKEY_TYPE, false, "partner-a", "::1", 2222,
	                   "ecdsa-sha2-nistp256", ecdsa_fp, "kh");
	snprintf(
	    want, sizeof(want),
	    "host key for [::1]:2222 is of type ecdsa-sha2-nistp256 (%s), but kh has only keys "
	    "of other types for this host; verify it out of band, then run 'xpimportctl trust "
	    "partner-a'",
	    ecdsa_fp);
	assert_string_equal(err.message, want);
	assert_int_equal(err.kind, SFTP_ERR_HOSTKEY_TYPE);
	assert_string_equal(err.key_type, "ecdsa-sha2-nistp256");

	sftp_hostkey_error(&err, SFTP_ERR_HOSTKEY_UNKNOWN, false, "partner-b", "10.0.0.5", 22,
	                   "ssh-ed25519", ed25519_fp, NULL);
	snprintf(want, sizeof(want),
	         "host key for 10.0.0.5:22 (ssh-ed25519 %s) matches none of site 'partner-b' "
	         "host_key_sha256 pins; verify it out of band, then add it to host_key_sha256 or "
	         "run 'xpimportctl trust partner-b'",
	         ed25519_fp);
	assert_string_equal(err.message, want);

	sftp_hostkey_error(&err, SFTP_ERR_HOSTKEY_CHANGED, true, "partner-a", "10.0.0.5", 22,
	                   "ssh-ed25519", ed25519_fp, "kh");
	snprintf(want, sizeof(want),
	         "host key for 10.0.0.5:22 (ssh-ed25519 %s) is marked @revoked in kh; this may be "
	         "an attack (someone intercepting the connection); do not connect until the "
	         "server's administrator confirms its current key",
	         ed25519_fp);
	assert_string_equal(err.message, want);

	/* an absurd host name is truncated, never overflows */
	memset(longhost, 'h', sizeof(longhost) - 1);
	longhost[sizeof(longhost) - 1] = '\0';
	sftp_hostkey_error(&err, SFTP_ERR_HOSTKEY_UNKNOWN, false, "x", longhost, 22, "ssh-ed25519",
	                   ed25519_fp, "kh");
	assert_true(strlen(err.message) < sizeof(err.message));
	assert_true(strncmp(err.message, "host key for hhhh", 17) == 0);
}

static void test_entry_attrs(void **state)
{
	struct sftp_entry e;

	(void)state;
	memset(&e, 0, sizeof(e));
	sftp_entry_set_attrs(&e,
	                     LIBSSH2_SFTP_ATTR_SIZE | LIBSSH2_SFTP_ATTR_PERMISSIONS |
	                         LIBSSH2_SFTP_ATTR_ACMODTIME,
	                     1234, LIBSSH2_SFTP_S_IFREG | 0644, 1767323045);
	assert_true(e.is_regular);
	assert_false(e.is_dir);
	assert_true(e.has_mtime);
	assert_int_equal(e.mtime, 1767323045);
	assert_int_equal(e.size, 1234);
	/* a server that sends no times */
	sftp_entry_set_attrs(&e, LIBSSH2_SFTP_ATTR_SIZE | LIBSSH2_SFTP_ATTR_PERMISSIONS, 5,
	                     LIBSSH2_SFTP_S_IFREG | 0600, 99);
	assert_false(e.has_mtime);
	assert_int_equal(e.mtime, 0);
	assert_true(e.is_regular);
	sftp_entry_set_attrs(&e, LIBSSH2_SFTP_ATTR_PERMISSIONS, 0, LIBSSH2_SFTP_S_IFLNK | 0777, 0);
	assert_false(e.is_regular);
	assert_false(e.is_dir);
	sftp_entry_set_attrs(&e, LIBSSH2_SFTP_ATTR_PERMISSIONS, 0, LIBSSH2_SFTP_S_IFDIR | 0755, 0);
	assert_false(e.is_regular);
	assert_true(e.is_dir);
	/* no permissions: cannot tell, so not a file to import */
	sftp_entry_set_attrs(&e, LIBSSH2_SFTP_ATTR_SIZE, 10, LIBSSH2_SFTP_S_IFREG | 0644, 0);
	assert_false(e.is_regular);
	assert_false(e.is_dir);
	assert_int_equal(e.size, 10);
	sftp_entry_set_attrs(&e, 0, 10, 0, 0);
	assert_int_equal(e.size, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fingerprint_matches_ssh_keygen),
	    cmocka_unit_test(test_pin_matching),
	    cmocka_unit_test(test_blob_key_type),
	    cmocka_unit_test(test_known_hosts_line),
	    cmocka_unit_test(test_private_key_type),
	    cmocka_unit_test(test_error_mapping),
	    cmocka_unit_test(test_hostkey_messages),
	    cmocka_unit_test(test_entry_attrs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
