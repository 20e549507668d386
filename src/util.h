/* util.h — small shared helpers: bounded number parsing, durations,
 * growable buffers, secret files. Errors are 0 or a negative errno. */
#ifndef XP_UTIL_H
#define XP_UTIL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Parse a whole decimal string into [min, max]. -EINVAL for anything that is
 * not all digits (no sign, no spaces), -ERANGE out of range. */
int util_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Durations: "0", "250ms", "30s", "15m", "2h", "1d" (one unit). Result in ms. */
int util_parse_duration_ms(const char *s, int64_t *out_ms);

/* A growable byte buffer; always NUL-terminated when len > 0 or after
 * strbuf_cstr(). strbuf_free() on a zeroed struct is a no-op. */
struct strbuf {
	char *data;
	size_t len;
	size_t cap;
};
int strbuf_reserve(struct strbuf *sb, size_t extra);
int strbuf_append(struct strbuf *sb, const void *data, size_t len);
int strbuf_puts(struct strbuf *sb, const char *s);
int strbuf_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *strbuf_cstr(struct strbuf *sb);
void strbuf_reset(struct strbuf *sb);
void strbuf_free(struct strbuf *sb);

/* Resolve a *_file key: absolute as is; relative in $CREDENTIALS_DIRECTORY
 * if set and the file exists there, else next to base_dir. Returns a
 * malloc'd path or NULL (ENOMEM). */
char *util_resolve_secret_path(const char *name, const char *base_dir);

/* Read a secret file: refuses one readable or writable by group/others
 * (-EPERM), bounds its size (-EFBIG), strips one trailing newline. The
 * result is malloc'd and must be freed with util_free_secret(). */
int util_read_secret(const char *path, size_t max_len, char **out, size_t *out_len);
void util_free_secret(char *secret, size_t len);

/* A stamp of a file's identity and version ("INODE:SIZE:MTIME_NS"), without
 * reading it: tells whether an operator replaced a secret file. "" if absent. */
void util_file_stamp(const char *path, char *out, size_t size);

/* Copy with truncation, always NUL-terminates when size > 0. */
size_t util_strlcpy(char *dst, const char *src, size_t size);

/* Milliseconds of CLOCK_REALTIME / CLOCK_MONOTONIC. */
int64_t util_now_ms(void);
int64_t util_mono_ms(void);

/* ISO-8601 UTC "2026-12-03T18:20:00Z" for a realtime ms value. */
void util_format_time(int64_t ms, char *buf, size_t size);

/* True if the bytes are valid UTF-8 (no overlongs, no surrogates). */
bool util_utf8_valid(const char *s, size_t len);

#endif
