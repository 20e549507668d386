/* csvread.c — libcsv (CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) over
 * a zlib stream (gzread reads plain files transparently).
 *
 * Line numbers: libcsv does not track them, so the input is fed to it one
 * segment at a time, a segment ending at a '\n' (or at a bare '\r', which
 * libcsv also takes as a row end). A row therefore ends at most once per
 * segment, and the reader knows the physical line where each row starts and
 * ends. After a strict-mode error the rest of the physical line is dropped
 * and the parser is reset: parsing resumes at the next line.
 * Memory: one chunk, plus the current row (raw bytes and fields), bounded by
 * max_line_bytes; nothing grows with the file. */
#include <csv.h>
#include <errno.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "csvread.h"

#define CHUNK_BYTES (256 * 1024)
#define DEFAULT_MAX_FIELD (64 * 1024)
#define DEFAULT_MAX_COLUMNS 1000
#define DEFAULT_MAX_LINE (1024 * 1024)
/* libcsv's states (libcsv.c); only "between rows" (0) and "inside a field"
 * (2) are read here, from the public struct csv_parser. */
#define LIBCSV_ROW_NOT_BEGUN 0
#define LIBCSV_FIELD_BEGUN 2

struct csvread {
	gzFile gz;
	struct csv_parser parser;
	bool parser_ready;
	unsigned char flags;
	struct csvread_opts o;
	unsigned char *chunk;
	size_t pos, end;
	bool eof, started, finished, skip_line, oom;
	bool quoted_fastpath;     /* quoted_line() may be used (see csvread_open) */
	uint64_t bytes;
	uint64_t line;            /* physical line of the next byte */
	uint64_t last_line;       /* line of the last segment fed */
	/* the current row */
	bool row_done;
	size_t n_fields;
	char *fbuf;
	size_t flen, fcap;
	size_t *off, *len;
	size_t ocap, lcap;
	char *raw;
	size_t raw_len, raw_cap;
	enum csvread_error error;
	size_t error_field;
	struct csvread_row row;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 64;
	while (n < need)
		n *= 2;
	void *q = realloc(*p, n * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

static int store_field(struct csvread *r, const void *s, size_t n)
{
	size_t i = r->n_fields++;

	if (i >= r->o.max_columns)
		return 0;
	if (n > r->o.max_field_bytes) {
		if (r->error == CSVREAD_OK) {
			r->error = CSVREAD_EFIELD;
			r->error_field = i;
		}
		n = 0;
	}
	if (i >= r->ocap && (grow((void **)&r->off, &r->ocap, i + 1, sizeof(size_t)) < 0 ||
			     grow((void **)&r->len, &r->lcap, i + 1, sizeof(size_t)) < 0))
		return -ENOMEM;
	if (r->flen + n + 1 + CSVREAD_PAD > r->fcap &&
	    grow((void **)&r->fbuf, &r->fcap, r->flen + n + 1 + CSVREAD_PAD, 1) < 0)
		return -ENOMEM;
	memcpy(r->fbuf + r->flen, s, n);
	r->fbuf[r->flen + n] = '\0';
	r->off[i] = r->flen;
	r->len[i] = n;
	r->flen += n + 1;
	return 0;
}

static void on_field(void *s, size_t n, void *data)
{
	struct csvread *r = data;
	if (store_field(r, s ? s : "", n) < 0)
		r->oom = true;
}

static void on_row(int c, void *data)
{
	struct csvread *r = data;
	r->row_done = true;
}

/* Drop the parser's partial row: csv_fini without the STRICT_FINI check
 * resets it through the public API. */
static void parser_reset(struct csvread *r)
{
	csv_set_opts(&r->parser, r->flags & (unsigned char)~CSV_STRICT_FINI);
	csv_fini(&r->parser, NULL, NULL, NULL);
	csv_set_opts(&r->parser, r->flags);
}

int csvread_open(const char *path, const struct csvread_opts *opts, struct csvread **out,
		 char *err, size_t errlen)
{
	struct csvread *r = calloc(1, sizeof(*r));
	int rc;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	r->o = *opts;
	if (!r->o.delimiter)
		r->o.delimiter = ',';
	if (!r->o.quote)
		r->o.quote = '"';
	if (!r->o.max_field_bytes)
		r->o.max_field_bytes = DEFAULT_MAX_FIELD;
	if (!r->o.max_columns)
		r->o.max_columns = DEFAULT_MAX_COLUMNS;
	if (!r->o.max_line_bytes)
		r->o.max_line_bytes = DEFAULT_MAX_LINE;
	/* quoted_line() assumes libcsv's order of tests gives the same
	 * answer whichever of blank, delimiter and quote a byte is checked
	 * as first: so all three must differ, and none be a line end */
	r->quoted_fastpath = !r->o.no_fastpath && r->o.quote != r->o.delimiter &&
			     r->o.quote != ' ' && r->o.quote != '\t' && r->o.quote != '\r' &&
			     r->o.quote != '\n' && r->o.delimiter != ' ' && r->o.delimiter != '\r' &&
			     r->o.delimiter != '\n';
	r->line = 1;
	r->chunk = malloc(CHUNK_BYTES + CSVREAD_PAD);
	if (!r->chunk) {
		rc = -ENOMEM;
		goto fail;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		goto fail;
	}
	r->gz = gzdopen(fd, "rb");
	if (!r->gz) {
		close(fd);
		rc = -ENOMEM;
		goto fail;
	}
	gzbuffer(r->gz, 128 * 1024);
	r->flags = CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL;
	if (csv_init(&r->parser, r->flags) != 0) {
		rc = -ENOMEM;
		goto fail;
	}
	r->parser_ready = true;
	csv_set_delim(&r->parser, r->o.delimiter);
	csv_set_quote(&r->parser, r->o.quote);
	*out = r;
	return 0;
fail:
	csvread_free(r);
	return rc;
}

void csvread_free(struct csvread *r)
{
	if (!r)
		return;
	if (r->parser_ready)
		csv_free(&r->parser);
	if (r->gz)
		gzclose(r->gz);
	free(r->chunk);
	free(r->fbuf);
	free(r->off);
	free(r->len);
	free(r->raw);
	free(r);
}

uint64_t csvread_bytes(const struct csvread *r)
{
	return r->bytes;
}

/* zlib's error to ours: a system error stays an errno, anything else means
 * the gzip data is bad (a file error). */
static int gz_error(struct csvread *r, char *err, size_t errlen)
{
	int zerr = Z_OK;
	const char *msg = gzerror(r->gz, &zerr);

	if (zerr == Z_ERRNO) {
		int e = errno ? errno : EIO;
		snprintf(err, errlen, "read error: %s", strerror(e));
		return -e;
	}
	if (zerr == Z_MEM_ERROR)
		return -ENOMEM;
	if (zerr == Z_BUF_ERROR)
		snprintf(err, errlen, "the gzip data is truncated");
	else
		snprintf(err, errlen, "the gzip data is corrupt: %s", msg ? msg : "unknown error");
	return -EBADMSG;
}

static int fill(struct csvread *r, char *err, size_t errlen)
{
	int n = gzread(r->gz, r->chunk, CHUNK_BYTES);
	if (n < 0)
		return gz_error(r, err, errlen);
	if (n == 0) {
		int zerr = Z_OK;
		gzerror(r->gz, &zerr);
		if (zerr != Z_OK)
			return gz_error(r, err, errlen);
		r->eof = true;
		r->pos = r->end = 0;
		return 0;
	}
	r->bytes += (uint64_t)n;
	r->pos = 0;
	r->end = (size_t)n;
	if (!r->started) {
		r->started = true;
		if (n >= 3 && memcmp(r->chunk, "\xef\xbb\xbf", 3) == 0)
			r->pos = 3;
	}
	return 0;
}

static void row_reset(struct csvread *r)
{
	r->row_done = false;
	r->n_fields = 0;
	r->flen = 0;
	r->error = CSVREAD_OK;
	r->error_field = 0;
}

static const struct csvread_row *row_finish(struct csvread *r, uint64_t end_line, const char *raw,
					     size_t raw_len, bool in_chunk)
{
	struct csvread_row *row = &r->row;

	while (raw_len > 0 && (raw[raw_len - 1] == '\n' || raw[raw_len - 1] == '\r'))
		raw_len--;
	row->end_line = end_line;
	row->n_fields = r->n_fields;
	row->n_stored = r->n_fields < r->o.max_columns ? r->n_fields : r->o.max_columns;
	row->buf = in_chunk ? (const char *)r->chunk : r->fbuf ? r->fbuf : "";
	row->off = r->off;
	row->len = r->len;
	row->raw = raw ? raw : "";
	row->raw_len = raw_len;
	row->in_line = in_chunk;
	row->error = r->error;
	row->error_field = r->error_field;
	return row;
}

/* Skip input up to and including the next '\n'. */
static int skip_rest_of_line(struct csvread *r, char *err, size_t errlen)
{
	while (r->skip_line) {
		if (r->pos == r->end) {
			int rc = fill(r, err, errlen);
			if (rc < 0)
				return rc;
			if (r->eof) {
				r->skip_line = false;
				break;
			}
		}
		const unsigned char *nl = memchr(r->chunk + r->pos, '\n', r->end - r->pos);
		if (nl) {
			r->pos = (size_t)(nl - r->chunk) + 1;
			r->line++;
			r->skip_line = false;
		} else {
			r->pos = r->end;
		}
	}
	return 0;
}

/* Field [a, b) of a quote-free line at s (chunk offset base), blanks
 * around it dropped; it stays in the chunk: no copy. */
static inline int line_field(struct csvread *r, const unsigned char *s, size_t base, size_t a,
			     size_t b)
{
	while (a < b && (s[a] == ' ' || s[a] == '\t'))
		a++;
	while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
		b--;
	size_t f = r->n_fields++;
	if (f >= r->o.max_columns)
		return 0;
	if (f >= r->ocap && (grow((void **)&r->off, &r->ocap, f + 1, sizeof(size_t)) < 0 ||
			     grow((void **)&r->len, &r->lcap, f + 1, sizeof(size_t)) < 0))
		return -ENOMEM;
	if (b - a > r->o.max_field_bytes) {
		if (r->error == CSVREAD_OK) {
			r->error = CSVREAD_EFIELD;
			r->error_field = f;
		}
		b = a;
	}
	r->off[f] = base + a;
	r->len[f] = b - a;
	return 0;
}

/* A whole line without a quote character, split exactly as libcsv would
 * (fields at each delimiter, spaces and tabs around a field dropped, a line
 * of only spaces and tabs is blank), without libcsv's per-byte state
 * machine. Returns 1 for a row, 0 for a blank line. The fuzz target checks
 * that both ways give the same rows. With SSE2 the delimiters are found
 * sixteen bytes at a time (the chunk has CSVREAD_PAD readable bytes after
 * its end). */
static int fast_line(struct csvread *r, const unsigned char *s, size_t n)
{
	const unsigned char d = r->o.delimiter;
	size_t i;

	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
	for (i = 0; i < n; i++)
		if (!((s[i] == ' ' || s[i] == '\t') && s[i] != d))
			break;
	if (i == n)
		return 0;
	size_t start = 0, base = (size_t)(s - r->chunk);
#ifdef __SSE2__
	const __m128i dv = _mm_set1_epi8((char)d);
	for (size_t blk = 0; blk < n; blk += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + blk));
		unsigned mask = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, dv));
		if (n - blk < 16)
			mask &= (1u << (n - blk)) - 1;
		while (mask) {
			size_t end = blk + (size_t)__builtin_ctz(mask);
			if (line_field(r, s, base, start, end) < 0)
				return -ENOMEM;
			start = end + 1;
			mask &= mask - 1;
		}
	}
#else
	for (const unsigned char *e; (e = memchr(s + start, d, n - start)) != NULL;) {
		size_t end = (size_t)(e - s);
		if (line_field(r, s, base, start, end) < 0)
			return -ENOMEM;
		start = end + 1;
	}
#endif
	if (line_field(r, s, base, start, n) < 0)
		return -ENOMEM;
	return 1;
}

/* One field of a quoted line into fbuf; the bytes [p, p + n) with each
 * doubled quote q made one when unquote. Limits as store_field(). */
static int store_quoted(struct csvread *r, const unsigned char *p, size_t n, bool unquote,
			unsigned char q)
{
	size_t i = r->n_fields++;

	if (i >= r->o.max_columns)
		return 0;
	if (i >= r->ocap && (grow((void **)&r->off, &r->ocap, i + 1, sizeof(size_t)) < 0 ||
			     grow((void **)&r->len, &r->lcap, i + 1, sizeof(size_t)) < 0))
		return -ENOMEM;
	if (r->flen + n + 1 + CSVREAD_PAD > r->fcap &&
	    grow((void **)&r->fbuf, &r->fcap, r->flen + n + 1 + CSVREAD_PAD, 1) < 0)
		return -ENOMEM;
	char *o = r->fbuf + r->flen;
	size_t len = 0;
	if (!unquote) {
		memcpy(o, p, n);
		len = n;
	} else {
		for (size_t k = 0; k < n; k++) {
			o[len++] = (char)p[k];
			if (p[k] == q)
				k++; /* the second of the pair */
		}
	}
	if (len > r->o.max_field_bytes) {
		if (r->error == CSVREAD_OK) {
			r->error = CSVREAD_EFIELD;
			r->error_field = i;
		}
		len = 0;
	}
	o[len] = '\0';
	r->off[i] = r->flen;
	r->len[i] = len;
	r->flen += len + 1;
	return 0;
}

/* A whole line with quote characters, split exactly as libcsv would, when
 * it is regular: every quoted field closes on this line and is followed by
 * blanks and a delimiter or the line end, no quote inside an unquoted
 * field. Returns 1 for a row, -ENOMEM, or 0 when the line is not regular:
 * then nothing was taken and libcsv gets it (and reports its error).
 * The fields are copied (doubled quotes made one). The fuzz target checks
 * that both ways give the same rows. */
static int quoted_line(struct csvread *r, const unsigned char *s, size_t n)
{
	const unsigned char d = r->o.delimiter, q = r->o.quote;
	size_t i = 0;
	int rc = 0;

	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
#define BLANK(c) (((c) == ' ' || (c) == '\t') && (c) != d)
	for (;;) {
		while (i < n && BLANK(s[i]))
			i++;
		if (i < n && s[i] == q) {
			size_t a = ++i;
			bool doubled = false;
			for (;;) {
				const unsigned char *e = memchr(s + i, q, n - i);
				if (!e)
					goto irregular; /* runs past the line */
				i = (size_t)(e - s) + 1;
				if (i < n && s[i] == q) {
					doubled = true;
					i++;
					continue;
				}
				break;
			}
			size_t b = i - 1; /* the closing quote */
			while (i < n && BLANK(s[i]))
				i++;
			if (i < n && s[i] != d)
				goto irregular;
			rc = store_quoted(r, s + a, b - a, doubled, q);
		} else {
			const unsigned char *e = memchr(s + i, d, n - i);
			size_t end = e ? (size_t)(e - s) : n, b = end;
			if (memchr(s + i, q, end - i))
				goto irregular;
			while (b > i && (s[b - 1] == ' ' || s[b - 1] == '\t'))
				b--;
			rc = store_quoted(r, s + i, b - i, false, q);
			i = end;
		}
		if (rc < 0)
			return rc;
		if (i >= n)
			return 1;
		i++; /* the delimiter */
	}
#undef BLANK
irregular:
	row_reset(r);
	return 0;
}

int csvread_next(struct csvread *r, const struct csvread_row **out, char *err, size_t errlen)
{
	int rc;

	*out = NULL;
	if (r->finished)
		return 0;
	row_reset(r);
	rc = skip_rest_of_line(r, err, errlen);
	if (rc < 0)
		return rc;
	for (;;) {
		/* a chunk may be empty after the BOM is dropped */
		while (r->pos == r->end && !r->eof) {
			rc = fill(r, err, errlen);
			if (rc < 0)
				return rc;
		}
		if (r->pos == r->end)
			break;
		const unsigned char *s = r->chunk + r->pos;
		size_t avail = r->end - r->pos;
		const unsigned char *nl = memchr(s, '\n', avail);
		size_t seg = nl ? (size_t)(nl - s) + 1 : avail;
		bool has_nl = nl != NULL;
		const unsigned char *cr = memchr(s, '\r', seg);
		if (cr && !(has_nl && cr == nl - 1)) {
			seg = (size_t)(cr - s) + 1;
			has_nl = false;
		}

		bool terminated = has_nl || s[seg - 1] == '\r';
		if (r->parser.pstate == LIBCSV_ROW_NOT_BEGUN && terminated && !r->o.no_fastpath &&
		    seg <= r->o.max_line_bytes && !memchr(s, r->o.quote, seg)) {
			uint64_t seg_line = r->line;
			r->row.line = seg_line;
			r->last_line = seg_line;
			r->pos += seg;
			if (has_nl)
				r->line++;
			rc = fast_line(r, s, seg);
			if (rc < 0)
				return rc;
			if (rc == 0)
				continue;
			*out = row_finish(r, seg_line, (const char *)s, seg, true);
			return 1;
		}
		if (r->parser.pstate == LIBCSV_ROW_NOT_BEGUN && terminated && r->quoted_fastpath &&
		    seg <= r->o.max_line_bytes) {
			rc = quoted_line(r, s, seg);
			if (rc < 0)
				return rc;
			if (rc == 1) {
				uint64_t seg_line = r->line;
				r->row.line = seg_line;
				r->last_line = seg_line;
				r->pos += seg;
				if (has_nl)
					r->line++;
				*out = row_finish(r, seg_line, (const char *)s, seg, false);
				return 1;
			}
		}
		if (r->parser.pstate == LIBCSV_ROW_NOT_BEGUN) {
			r->row.line = r->line;
			r->raw_len = 0;
		}
		uint64_t seg_line = r->line;
		r->last_line = seg_line;
		if (r->raw_len + seg > r->o.max_line_bytes) {
			if (r->parser.pstate == LIBCSV_FIELD_BEGUN && r->parser.quoted) {
				snprintf(err, errlen,
					 "line %llu: row is longer than %zu bytes (csv.max_line_bytes); "
					 "is a quoted field not closed?",
					 (unsigned long long)r->row.line, r->o.max_line_bytes);
				r->finished = true;
				return -EBADMSG;
			}
			r->error = CSVREAD_ELINE;
			r->error_field = r->n_fields;
			r->pos += seg;
			if (has_nl)
				r->line++;
			else
				r->skip_line = true;
			parser_reset(r);
			*out = row_finish(r, seg_line, r->raw, r->raw_len, false);
			return 1;
		}
		if (grow((void **)&r->raw, &r->raw_cap, r->raw_len + seg, 1) < 0)
			return -ENOMEM;
		memcpy(r->raw + r->raw_len, s, seg);
		r->raw_len += seg;

		size_t used = csv_parse(&r->parser, s, seg, on_field, on_row, r);
		if (r->oom)
			return -ENOMEM;
		r->pos += seg;
		if (has_nl)
			r->line++;
		if (used < seg) {
			int status = csv_error(&r->parser);
			if (status != CSV_EPARSE)
				return -ENOMEM;
			/* libcsv stopped on the offending character: the state
			 * tells which strict rule it broke. */
			enum csvread_error e = r->parser.pstate == LIBCSV_FIELD_BEGUN && !r->parser.quoted
						       ? CSVREAD_EQUOTE
						       : CSVREAD_EAFTERQUOTE;
			r->error = e;
			r->error_field = r->n_fields;
			if (!has_nl)
				r->skip_line = true;
			parser_reset(r);
			*out = row_finish(r, seg_line, r->raw, r->raw_len, false);
			return 1;
		}
		if (r->row_done) {
			*out = row_finish(r, seg_line, r->raw, r->raw_len, false);
			return 1;
		}
	}
	/* end of file */
	r->finished = true;
	if (r->parser.pstate == LIBCSV_ROW_NOT_BEGUN)
		return 0;
	if (csv_fini(&r->parser, on_field, on_row, r) != 0) {
		r->error = CSVREAD_EUNTERMINATED;
		r->error_field = r->n_fields;
		parser_reset(r);
		*out = row_finish(r, r->last_line, r->raw, r->raw_len, false);
		return 1;
	}
	if (r->oom)
		return -ENOMEM;
	if (!r->row_done)
		return 0;
	*out = row_finish(r, r->last_line, r->raw, r->raw_len, false);
	return 1;
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
#define HAS_ZERO(v) (((v) - ONES) & ~(v) & HIGHS)
#define HAS_LESS(v, n) (((v) - ONES * (n)) & ~(v) & HIGHS)

/* The flags of the words seen, accumulated without a per-byte loop: each
 * test is exact for "some byte of the word is ..." (HAS_LESS for n <= 128). */
struct scan_acc {
	uint64_t high, less, quote, backslash;
};

static inline void scan_word(struct scan_acc *a, uint64_t v)
{
	a->high |= v & HIGHS;
	a->less |= HAS_LESS(v, 0x20);
	a->quote |= HAS_ZERO(v ^ (ONES * '"'));
	a->backslash |= HAS_ZERO(v ^ (ONES * '\\'));
}

static inline unsigned scan_flags(const struct scan_acc *a, bool nul)
{
	return (a->high ? CSVREAD_SCAN_HIGH : 0u) | (nul ? CSVREAD_SCAN_NUL : 0u) |
	       (a->less | a->quote | a->backslash ? CSVREAD_SCAN_ESC : 0u);
}

static bool has_nul(const unsigned char *s, size_t n)
{
	return memchr(s, '\0', n) != NULL;
}

unsigned csvread_scan(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	struct scan_acc a = {0, 0, 0, 0};
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, s + i, 8);
		scan_word(&a, v);
	}
	if (i < n) {
		/* the tail as one word, padded with a harmless byte */
		uint64_t v = ONES * 'a';
		memcpy(&v, s + i, n - i);
		scan_word(&a, v);
	}
	/* NUL is a byte below 0x20: only then is it looked for */
	return scan_flags(&a, a.less && has_nul(s, n));
}

/* Sixteen bytes at a time (SSE2 on x86-64, NEON on arm64, plain code
 * elsewhere: GCC/Clang vector extensions). */
typedef unsigned char vec16 __attribute__((vector_size(16)));
typedef signed char vmask16 __attribute__((vector_size(16)));

static inline vec16 load16(const unsigned char *p)
{
	vec16 v;
	memcpy(&v, p, 16);
	return v;
}

static inline bool any16(vec16 v)
{
	uint64_t a, b;
	memcpy(&a, &v, 8);
	memcpy(&b, (const char *)&v + 8, 8);
	return (a | b) != 0;
}

unsigned csvread_scan_padded(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	const vec16 hi = (vec16){0} + 0x80;
	vec16 high = {0}, esc = {0};
	size_t i = 0;

	for (; i + 16 <= n; i += 16) {
		vec16 v = load16(s + i);
		high |= v & hi;
		esc |= (vec16)((v < 0x20) | (v == '"') | (v == '\\'));
	}
	if (i < n) {
		/* a whole vector is readable (CSVREAD_PAD); the bytes past
		 * the field are replaced by a harmless one */
		static const vec16 idx = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
		vec16 keep = (vec16)(idx < (unsigned char)(n - i));
		vec16 v = (load16(s + i) & keep) | (((vec16){0} + 'a') & ~keep);
		high |= v & hi;
		esc |= (vec16)((v < 0x20) | (v == '"') | (v == '\\'));
	}
	unsigned flags = (any16(high) ? CSVREAD_SCAN_HIGH : 0u) | (any16(esc) ? CSVREAD_SCAN_ESC : 0u);
	/* NUL is a byte below 0x20: only then is it looked for */
	if ((flags & CSVREAD_SCAN_ESC) && has_nul(s, n))
		flags |= CSVREAD_SCAN_NUL;
	return flags;
}

bool csvread_utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		if (i + 16 <= len) {
#ifdef __SSE2__
			unsigned high = (unsigned)_mm_movemask_epi8(
				_mm_loadu_si128((const __m128i *)(const void *)(s + i)));
			if (!high) {
				i += 16;
				continue;
			}
			i += (size_t)__builtin_ctz(high); /* ASCII up to there */
#else
			if (!any16(load16(s + i) & ((vec16){0} + 0x80))) {
				i += 16;
				continue;
			}
#endif
		}
		/* a block with a non-ASCII byte (or the tail): byte by byte */
		size_t stop = len - i > 16 ? i + 16 : len;
		while (i < stop) {
			unsigned char c = s[i];
			if (c < 0x80) {
				i++;
				continue;
			}
			/* the same rules as util_utf8_valid(): no overlong
			 * forms, no surrogates, nothing above U+10FFFF */
			size_t n;
			uint32_t cp;
			if (c >= 0xc2 && c <= 0xdf) {
				n = 1;
				cp = c & 0x1f;
			} else if (c >= 0xe0 && c <= 0xef) {
				n = 2;
				cp = c & 0x0f;
			} else if (c >= 0xf0 && c <= 0xf4) {
				n = 3;
				cp = c & 0x07;
			} else {
				return false;
			}
			if (i + n >= len)
				return false;
			for (size_t k = 1; k <= n; k++) {
				if ((s[i + k] & 0xc0) != 0x80)
					return false;
				cp = (cp << 6) | (s[i + k] & 0x3f);
			}
			if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
			    (cp >= 0xd800 && cp <= 0xdfff))
				return false;
			i += n + 1;
		}
	}
	return true;
}

size_t csvread_utf8_chars(const char *p, size_t n)
{
	size_t count = 0;
	for (size_t i = 0; i < n; i++)
		count += ((unsigned char)p[i] & 0xc0) != 0x80;
	return count;
}
