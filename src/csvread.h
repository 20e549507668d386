/* csvread.h — streaming CSV reader: libcsv (strict) over a plain or gzip
 * file, one row at a time, with physical line numbers, limits and
 * resynchronisation after a malformed row. Internal to the pipeline. */
#ifndef XP_CSVREAD_H
#define XP_CSVREAD_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct csvread_opts {
	unsigned char delimiter;  /* ',' ';' '\t' '|' */
	unsigned char quote;      /* '"' */
	size_t max_field_bytes;   /* 0 = default 64 KiB */
	size_t max_columns;       /* 0 = default 1000 */
	size_t max_line_bytes;    /* 0 = default 1 MiB; bounds a whole row (all its physical lines) */
	bool no_fastpath;         /* tests: give every line to libcsv (see fast_line()) */
};

/* Row errors found while parsing; the row is still returned (error set). */
enum csvread_error {
	CSVREAD_OK = 0,
	CSVREAD_EQUOTE,       /* quote character inside an unquoted field */
	CSVREAD_EAFTERQUOTE,  /* something other than a delimiter or line end after a closing quote */
	CSVREAD_EUNTERMINATED,/* end of file inside a quoted field */
	CSVREAD_EFIELD,       /* a field longer than max_field_bytes */
	CSVREAD_ELINE,        /* a row longer than max_line_bytes */
};

struct csvread_row {
	uint64_t line;            /* physical line where the row starts (1-based) */
	uint64_t end_line;        /* physical line where it ends */
	size_t n_fields;          /* fields in the row (may exceed n_stored) */
	size_t n_stored;          /* fields available in buf/off/len (<= max_columns) */
	const char *buf;          /* field i: buf + off[i], len[i] bytes (not NUL-terminated;
				   * at least CSVREAD_PAD bytes after it are readable) */
	const size_t *off;
	const size_t *len;
	const char *raw;          /* the row's bytes as in the file, without the final line end */
	size_t raw_len;
	bool in_line;             /* every field lies inside raw (a quote-free line), so one
				   * csvread_scan_padded(raw, raw_len) covers them all */
	enum csvread_error error;
	size_t error_field;       /* 0-based column of the error */
};

static inline const char *csvread_field(const struct csvread_row *row, size_t i)
{
	return row->buf + row->off[i];
}

struct csvread;

/* Opens path; gzip data (by magic) is decompressed while streaming, anything
 * else is read as is. A leading UTF-8 BOM is dropped. */
int csvread_open(const char *path, const struct csvread_opts *opts, struct csvread **out,
		 char *err, size_t errlen);

/* The next row (the first one is the header). Returns 1 with *row valid until
 * the next call, 0 at the end of the file, -EBADMSG for a file error that
 * makes the rest of the file unusable (err says why, with the line), another
 * negative errno for I/O errors (err says so). Blank lines are skipped. */
int csvread_next(struct csvread *r, const struct csvread_row **row, char *err, size_t errlen);

/* Bytes of (decompressed) input read so far, BOM included. */
uint64_t csvread_bytes(const struct csvread *r);
void csvread_free(struct csvread *r);

/* Flags of one scan over a field's bytes. */
#define CSVREAD_SCAN_HIGH 1u  /* has bytes >= 0x80 (check UTF-8) */
#define CSVREAD_SCAN_NUL 2u   /* has a NUL byte */
#define CSVREAD_SCAN_ESC 4u   /* has bytes that JSON must escape (< 0x20, '"', '\\') */
unsigned csvread_scan(const char *p, size_t n);
/* The same for a field of a row: may read up to CSVREAD_PAD bytes past p + n. */
#define CSVREAD_PAD 16
unsigned csvread_scan_padded(const char *p, size_t n);

/* util_utf8_valid(), sixteen ASCII bytes at a time. */
bool csvread_utf8_valid(const char *p, size_t n);

/* Number of UTF-8 code points in valid UTF-8 text. */
size_t csvread_utf8_chars(const char *p, size_t n);
#endif
