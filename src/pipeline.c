/* pipeline.c — the two passes over a staged file (pipeline.h).
 *
 * Both passes run the same engine: read a row (csvread), check it against
 * the header, validate each mapped cell (validate), encode the row as JSON
 * and place it into a batch (batch). Pass 1 counts and writes the reject
 * report, and with a spool also keeps the bodies in it; pass 2 either runs
 * the engine again and keeps the bodies, or reads them from the spool.
 * Because the engine and the sequence of batch_*() calls are the same and
 * every decision depends only on the file and the job, all ways agree on
 * every row, batch boundary and byte, which crash resume relies on. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <endian.h>

#include "batch.h"
#include "csvmap.h"
#include "csvread.h"
#include "pipeline.h"
#include "validate.h"

#define DEFAULT_BATCH_BYTES (8u * 1024 * 1024)

struct reject {
	uint64_t line;
	const char *column;       /* header, or "" */
	const char *rule;
	char message[300];
	const char *value;        /* the offending cell, verbatim */
	size_t value_len;
	char column_buf[32];      /* "column 9" when past the header */
};

struct engine {
	const struct cfg_job *job;
	struct csvread *rd;
	struct csvmap *map;
	struct validate_ctx vctx;
	validate_fn *fns;           /* per attribute */
	struct validate_out *outs;  /* per attribute */
	bool *plain;                /* per attribute: nothing to JSON-escape */
	struct batch batch;
	struct strbuf row;          /* the current valid row as JSON */
	const char *uid;            /* its user_id */
	size_t uid_len;
	const struct csvread_row *cur;
	char err[512];
};

enum { ROW_EOF = 0, ROW_VALID = 1, ROW_REJECTED = 2 };

static void engine_free(struct engine *e)
{
	csvread_free(e->rd);
	csvmap_free(e->map);
	free(e->fns);
	free(e->outs);
	free(e->plain);
	batch_free(&e->batch);
	strbuf_free(&e->row);
	memset(e, 0, sizeof(*e));
}

static int job_country_code(const struct cfg_job *job)
{
	if (job->validation.default_country_code > 0)
		return job->validation.default_country_code;
	return job->project ? job->project->default_country_code : 0;
}

static size_t batch_rows_of(const struct cfg_job *job)
{
	size_t n = job->batch.size ? job->batch.size : PIPE_MAX_BATCH;
	return n > PIPE_MAX_BATCH ? PIPE_MAX_BATCH : n;
}

static const char *column_name(const struct engine *e, size_t col, char *buf, size_t size)
{
	if (e->map && col < e->map->n_columns)
		return e->map->headers[col];
	snprintf(buf, size, "column %zu", col + 1);
	return buf;
}

/* Opens the file and maps its header. -EBADMSG: file error in e->err. */
static int engine_open(struct engine *e, const struct cfg_job *job, const char *path)
{
	struct csvread_opts o = {
		.delimiter = (unsigned char)job->csv.delimiter,
		.quote = (unsigned char)job->csv.quote,
		.max_field_bytes = job->csv.max_field_bytes,
		.max_columns = job->csv.max_columns,
		.max_line_bytes = job->csv.max_line_bytes,
	};
	const struct csvread_row *h;
	const char **names = NULL;
	int rc;

	memset(e, 0, sizeof(*e));
	e->job = job;
	e->vctx.country_code = job_country_code(job);
	e->vctx.empty = job->validation.empty_cells;
	rc = csvread_open(path, &o, &e->rd, e->err, sizeof(e->err));
	if (rc < 0)
		return rc;
	rc = csvread_next(e->rd, &h, e->err, sizeof(e->err));
	if (rc < 0)
		return rc;
	if (rc == 0) {
		snprintf(e->err, sizeof(e->err), "the file is empty (no header row)");
		return -EBADMSG;
	}
	size_t max_columns = o.max_columns ? o.max_columns : 1000;
	if (h->error != CSVREAD_OK) {
		snprintf(e->err, sizeof(e->err), "line %llu: the header row is malformed (%s)",
			 (unsigned long long)h->line,
			 h->error == CSVREAD_EQUOTE	    ? "quote inside an unquoted field"
			 : h->error == CSVREAD_EAFTERQUOTE  ? "unexpected character after a closing quote"
			 : h->error == CSVREAD_EUNTERMINATED ? "quoted field not closed"
							    : "too long");
		return -EBADMSG;
	}
	if (h->n_fields > max_columns) {
		snprintf(e->err, sizeof(e->err),
			 "the header has %zu columns, more than csv.max_columns (%zu)", h->n_fields,
			 max_columns);
		return -EBADMSG;
	}
	names = calloc(h->n_fields ? h->n_fields : 1, sizeof(*names));
	if (!names)
		return -ENOMEM;
	for (size_t i = 0; i < h->n_fields; i++)
		names[i] = csvread_field(h, i);
	rc = csvmap_build(job, names, h->len, h->n_fields, &e->map, e->err, sizeof(e->err));
	free(names);
	if (rc == -EINVAL)
		return -EBADMSG;
	if (rc < 0)
		return rc;
	size_t na = e->map->n_attrs;
	e->fns = calloc(na, sizeof(*e->fns));
	e->outs = calloc(na, sizeof(*e->outs));
	e->plain = calloc(na, sizeof(*e->plain));
	if (!e->fns || !e->outs || !e->plain)
		return -ENOMEM;
	for (size_t a = 0; a < na; a++)
		e->fns[a] = validate_for_type(e->map->attr_types[a]);
	size_t max_bytes = job->batch.max_bytes ? job->batch.max_bytes : DEFAULT_BATCH_BYTES;
	rc = batch_init(&e->batch, (const char *const *)e->map->attr_names, na, batch_rows_of(job),
			max_bytes);
	if (rc < 0)
		return rc;
	return 0;
}

static int put_value(struct strbuf *sb, const struct validate_out *v, bool plain)
{
	switch (v->kind) {
	case VALIDATE_NULL:
		return batch_put_null(sb);
	case VALIDATE_RAW:
		return batch_put_raw(sb, v->p, v->n);
	case VALIDATE_STRING:
	default:
		return batch_put_string(sb, v->p, v->n, plain);
	}
}

static void reject_row(struct reject *r, const struct csvread_row *row, const char *column,
		       const char *rule)
{
	r->line = row->line;
	r->column = column;
	r->rule = rule;
	r->value = "";
	r->value_len = 0;
}

/* The paired-attribute rule: email set => email_subscription set. */
static bool pair_missing(const struct engine *e, int a, int sub, const char *name,
			 const char *sub_name, struct reject *rj)
{
	if (a < 0 || !e->outs[a].set || (sub >= 0 && e->outs[sub].set))
		return false;
	rj->column = sub >= 0 ? e->map->headers[e->map->attr_col[sub]] : "";
	rj->rule = "required";
	snprintf(rj->message, sizeof(rj->message), "%s is set but %s is empty", name, sub_name);
	return true;
}

/* The next row: ROW_VALID (e->row holds its JSON, e->uid its user_id),
 * ROW_REJECTED (*rj says why), ROW_EOF, -EBADMSG (file error in e->err),
 * or another negative errno. */
static int engine_next(struct engine *e, struct reject *rj)
{
	const struct csvread_row *row;
	int rc = csvread_next(e->rd, &row, e->err, sizeof(e->err));
	if (rc <= 0)
		return rc;
	e->cur = row;
	const struct csvmap *m = e->map;

	if (row->error != CSVREAD_OK) {
		const char *col = column_name(e, row->error_field, rj->column_buf, sizeof(rj->column_buf));
		reject_row(rj, row, col, "csv");
		switch (row->error) {
		case CSVREAD_EQUOTE:
			snprintf(rj->message, sizeof(rj->message),
				 "quote inside an unquoted field in column '%s'", col);
			break;
		case CSVREAD_EAFTERQUOTE:
			snprintf(rj->message, sizeof(rj->message),
				 "unexpected character after the closing quote in column '%s'", col);
			if (row->end_line > row->line) {
				size_t l = strlen(rj->message);
				snprintf(rj->message + l, sizeof(rj->message) - l,
					 " (the row runs to line %llu)",
					 (unsigned long long)row->end_line);
			}
			break;
		case CSVREAD_EUNTERMINATED:
			if (row->end_line > row->line) {
				/* the rest of the file is inside the quotes:
				 * rows would be lost silently */
				snprintf(e->err, sizeof(e->err),
					 "line %llu: quoted field in column '%s' is not closed before "
					 "the end of the file",
					 (unsigned long long)row->line, col);
				return -EBADMSG;
			}
			snprintf(rj->message, sizeof(rj->message),
				 "quoted field in column '%s' is not closed", col);
			break;
		case CSVREAD_EFIELD:
			rj->rule = "limit";
			snprintf(rj->message, sizeof(rj->message),
				 "column '%s' is longer than %zu bytes (csv.max_field_bytes)", col,
				 e->job->csv.max_field_bytes ? e->job->csv.max_field_bytes : 65536);
			break;
		case CSVREAD_ELINE:
		default:
			rj->rule = "limit";
			rj->column = "";
			snprintf(rj->message, sizeof(rj->message),
				 "row is longer than %zu bytes (csv.max_line_bytes)",
				 e->job->csv.max_line_bytes ? e->job->csv.max_line_bytes : 1048576);
			break;
		}
		return ROW_REJECTED;
	}
	if (row->n_fields != m->n_columns) {
		reject_row(rj, row, "", "fields");
		snprintf(rj->message, sizeof(rj->message), "%zu field%s, header has %zu", row->n_fields,
			 row->n_fields == 1 ? "" : "s", m->n_columns);
		return ROW_REJECTED;
	}
	/* A quote-free line is scanned once as a whole: when it has nothing to
	 * escape, no NUL and valid UTF-8, so has every field in it. Otherwise
	 * each field is scanned, so that the first bad mapped column is named. */
	bool clean = false;
	if (row->in_line) {
		unsigned lf = csvread_scan_padded(row->raw, row->raw_len);
		clean = !(lf & CSVREAD_SCAN_ESC) &&
			(!(lf & CSVREAD_SCAN_HIGH) || csvread_utf8_valid(row->raw, row->raw_len));
	}
	for (size_t c = 0; c < m->n_columns; c++) {
		int a = m->col_attr[c];
		if (a < 0)
			continue;
		const char *p = csvread_field(row, c);
		size_t n = row->len[c];
		unsigned flags = clean ? 0 : csvread_scan_padded(p, n);
		if (flags & (CSVREAD_SCAN_NUL | CSVREAD_SCAN_HIGH)) {
			if (flags & CSVREAD_SCAN_NUL) {
				reject_row(rj, row, m->headers[c], "nul");
				snprintf(rj->message, sizeof(rj->message), "NUL byte in column '%s'",
					 m->headers[c]);
				rj->value = p;
				rj->value_len = n;
				return ROW_REJECTED;
			}
			if (!util_utf8_valid(p, n)) {
				reject_row(rj, row, m->headers[c], "utf8");
				snprintf(rj->message, sizeof(rj->message), "invalid UTF-8 in column '%s'",
					 m->headers[c]);
				rj->value = p;
				rj->value_len = n;
				return ROW_REJECTED;
			}
		}
		e->plain[a] = !(flags & CSVREAD_SCAN_ESC);
		enum validate_error ve = e->fns[a](&e->vctx, p, n, &e->outs[a]);
		if (ve != VALIDATE_OK) {
			reject_row(rj, row, m->headers[c], validate_rule_name(ve, m->attr_types[a]));
			validate_message(ve, m->attr_names[a], p, n, &e->vctx, rj->message,
					 sizeof(rj->message));
			rj->value = p;
			rj->value_len = n;
			return ROW_REJECTED;
		}
	}
	reject_row(rj, row, "", "required");
	if (pair_missing(e, m->email, m->email_subscription, "email", "email_subscription", rj) ||
	    pair_missing(e, m->mobile_number, m->sms_subscription, "mobile_number", "sms_subscription",
			 rj) ||
	    pair_missing(e, m->whatsapp_number, m->whatsapp_subscription, "whatsapp_number",
			 "whatsapp_subscription", rj))
		return ROW_REJECTED;

	/* the row as JSON, written straight into one reserved buffer */
	struct strbuf *sb = &e->row;
	size_t need = 2;
	for (size_t a = 0; a < m->n_attrs; a++)
		need += e->outs[a].n * (e->plain[a] ? 1 : 6) + 8;
	strbuf_reset(sb);
	rc = strbuf_reserve(sb, need);
	if (rc < 0)
		return rc;
	char *o = sb->data;
	*o++ = '[';
	for (size_t a = 0; a < m->n_attrs; a++) {
		const struct validate_out *v = &e->outs[a];
		if (a)
			*o++ = ',';
		if (v->kind == VALIDATE_NULL) {
			memcpy(o, "null", 4);
			o += 4;
		} else if (v->kind == VALIDATE_RAW) {
			memcpy(o, v->p, v->n);
			o += v->n;
		} else if (e->plain[a]) {
			*o++ = '"';
			memcpy(o, v->p, v->n);
			o += v->n;
			*o++ = '"';
		} else {
			o += batch_escape(o, v->p, v->n);
		}
	}
	*o++ = ']';
	sb->len = (size_t)(o - sb->data);
	sb->data[sb->len] = '\0';
	e->uid = e->outs[0].p;
	e->uid_len = e->outs[0].n;
	if (batch_too_big(&e->batch, sb->len)) {
		reject_row(rj, row, "", "limit");
		snprintf(rj->message, sizeof(rj->message),
			 "row is %zu bytes as JSON, more than batch.max_bytes (%zu)", sb->len,
			 e->batch.max_bytes);
		return ROW_REJECTED;
	}
	return ROW_VALID;
}

/* ---- the reject report -------------------------------------------------- */
struct report {
	const char *path;
	FILE *f;
};

static int csv_cell(FILE *f, const char *p, size_t n)
{
	bool quote = n > 0 && (p[0] == ' ' || p[n - 1] == ' ');
	for (size_t i = 0; !quote && i < n; i++)
		quote = p[i] == ',' || p[i] == '"' || p[i] == '\n' || p[i] == '\r';
	if (!quote)
		return fwrite(p, 1, n, f) == n ? 0 : -1;
	if (fputc('"', f) == EOF)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '"' && fputc('"', f) == EOF)
			return -1;
		if (fputc(p[i], f) == EOF)
			return -1;
	}
	return fputc('"', f) == EOF ? -1 : 0;
}

/* A cell a spreadsheet would run as a formula. */
static bool formula_risk(const char *p, size_t n)
{
	return n > 0 && strchr("=+-@\t\r", p[0]) != NULL && p[0] != '\0';
}

static int report_write(struct report *rep, const struct reject *rj, const struct csvread_row *row)
{
	if (!rep->path)
		return 0;
	if (!rep->f) {
		int fd = open(rep->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			return -errno;
		if (fchmod(fd, 0600) < 0) {
			int e = errno;
			close(fd);
			return -e;
		}
		rep->f = fdopen(fd, "w");
		if (!rep->f) {
			int e = errno;
			close(fd);
			return -e;
		}
		if (fputs("line,column,rule,value,raw_row,formula_risk\n", rep->f) == EOF)
			return -EIO;
	}
	const char *raw = row ? row->raw : "";
	size_t raw_len = row ? row->raw_len : 0;
	/* Any cell of the rejected row that a spreadsheet would run as a formula
	 * (kept verbatim; the flag tells whoever opens the report). */
	bool risk = formula_risk(rj->value, rj->value_len) || formula_risk(raw, raw_len);
	for (size_t i = 0; row && !risk && i < row->n_stored; i++)
		risk = formula_risk(csvread_field(row, i), row->len[i]);
	if (fprintf(rep->f, "%llu,", (unsigned long long)rj->line) < 0 ||
	    csv_cell(rep->f, rj->column, strlen(rj->column)) < 0 || fputc(',', rep->f) == EOF ||
	    csv_cell(rep->f, rj->rule, strlen(rj->rule)) < 0 || fputc(',', rep->f) == EOF ||
	    csv_cell(rep->f, rj->value, rj->value_len) < 0 || fputc(',', rep->f) == EOF ||
	    csv_cell(rep->f, raw, raw_len) < 0 || fprintf(rep->f, ",%d\n", risk ? 1 : 0) < 0)
		return -EIO;
	return 0;
}

static int report_close(struct report *rep)
{
	int rc = 0;
	if (!rep->f)
		return 0;
	if (fflush(rep->f) == EOF || fsync(fileno(rep->f)) < 0)
		rc = -errno;
	if (fclose(rep->f) == EOF && rc == 0)
		rc = -errno;
	rep->f = NULL;
	return rc;
}

/* ---- pass 1 --------------------------------------------------------------- */
void pipe_summary_free(struct pipe_summary *s)
{
	if (!s)
		return;
	for (size_t i = 0; s->columns_sent && i < s->n_columns_sent; i++)
		free(s->columns_sent[i]);
	free(s->columns_sent);
	for (size_t i = 0; s->columns_ignored && i < s->n_columns_ignored; i++)
		free(s->columns_ignored[i]);
	free(s->columns_ignored);
	free(s->first_rows_json);
	s->columns_sent = s->columns_ignored = NULL;
	s->n_columns_sent = s->n_columns_ignored = 0;
	s->first_rows_json = NULL;
}

static int copy_names(char **src, size_t n, char ***dst, size_t *dn)
{
	*dst = calloc(n ? n : 1, sizeof(char *));
	if (!*dst)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		(*dst)[i] = strdup(src[i]);
		if (!(*dst)[i])
			return -ENOMEM;
		*dn = i + 1;
	}
	return 0;
}

/* {"user_id":"u1",...} for the dry run's first rows. */
static int first_row_json(const struct engine *e, struct strbuf *sb)
{
	int rc = strbuf_append(sb, sb->len > 1 ? ",{" : "{", sb->len > 1 ? 2 : 1);
	for (size_t a = 0; rc == 0 && a < e->map->n_attrs; a++) {
		if (a)
			rc = strbuf_append(sb, ",", 1);
		if (rc == 0)
			rc = batch_put_string(sb, e->map->attr_names[a], strlen(e->map->attr_names[a]),
					      false);
		if (rc == 0)
			rc = strbuf_append(sb, ":", 1);
		if (rc == 0)
			rc = put_value(sb, &e->outs[a], e->plain[a]);
	}
	return rc == 0 ? strbuf_append(sb, "}", 1) : rc;
}

static bool over_budget(const struct cfg_job *job, const struct pipe_summary *s)
{
	if (job->validation.max_invalid_rows >= 0 &&
	    s->rows_rejected > (uint64_t)job->validation.max_invalid_rows)
		return true;
	if (job->validation.max_invalid_percent >= 0 && s->rows_read > 0 &&
	    (double)s->rows_rejected * 100.0 / (double)s->rows_read > job->validation.max_invalid_percent)
		return true;
	return false;
}

/* ---- the spool ---------------------------------------------------------------
 * Pass 1 can keep the bodies it encodes so that pass 2 does not parse again:
 *   "XPSPOOL1"
 *   per batch:  u32 rows (>= 1), u64 length, length body bytes, u64 sum_of(rows, length, body)
 *   trailer:    u32 0, u64 batches, u64 offset of the trailer, u64 sum_of(0, 0, these 20 bytes)
 * all little-endian. A truncated spool has no valid trailer and is refused
 * at open; a damaged batch fails its CRC before it is returned. */
#define SPOOL_MAGIC "XPSPOOL1"
#define SPOOL_MAGIC_LEN 8
#define SPOOL_REC_HEAD 12
#define SPOOL_TRAILER 28
#define SPOOL_SUM 8

struct spool_out {
	const char *path;
	int fd;                   /* -1: not (or no longer) spooling */
	bool created;
	struct strbuf body;       /* the batch being encoded */
	uint64_t off;             /* bytes written */
	uint64_t n_batches;
};

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const unsigned char *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* A checksum against damage (not against malice): four lanes of 8-byte
 * words, each step (h ^ w) * K then a rotation, which is invertible, so a
 * change in any one word always changes the result; several GB/s, where
 * zlib's CRC-32 cost a tenth of the pass. The tail goes byte by byte
 * into the first lane. The seeds cover a batch's rows and length. */
static uint64_t rotl64(uint64_t v, int k)
{
	return (v << k) | (v >> (64 - k));
}

static uint64_t load64(const unsigned char *p)
{
	uint64_t w;
	memcpy(&w, p, 8);
	return le64toh(w);
}

static uint64_t sum_of(uint64_t seed0, uint64_t seed1, const void *p, size_t n)
{
	static const uint64_t K = 0x9e3779b97f4a7c15ull;
	const unsigned char *s = p;
	uint64_t h0 = 0x243f6a8885a308d3ull ^ seed0, h1 = 0x13198a2e03707344ull ^ seed1,
		 h2 = 0xa4093822299f31d0ull, h3 = 0x082efa98ec4e6c89ull;
	size_t i = 0;

	for (; i + 32 <= n; i += 32) {
		h0 = rotl64((h0 ^ load64(s + i)) * K, 31);
		h1 = rotl64((h1 ^ load64(s + i + 8)) * K, 31);
		h2 = rotl64((h2 ^ load64(s + i + 16)) * K, 31);
		h3 = rotl64((h3 ^ load64(s + i + 24)) * K, 31);
	}
	for (; i < n; i++)
		h0 = rotl64((h0 ^ s[i]) * K, 31);
	uint64_t r = n * K;
	r = rotl64((r ^ h0) * 0xff51afd7ed558ccdull, 29);
	r = rotl64((r ^ h1) * 0xff51afd7ed558ccdull, 29);
	r = rotl64((r ^ h2) * 0xff51afd7ed558ccdull, 29);
	r = rotl64((r ^ h3) * 0xff51afd7ed558ccdull, 29);
	return r ^ (r >> 32);
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int spool_create(struct spool_out *sp, const char *path)
{
	sp->path = path;
	sp->fd = -1;
	if (!path)
		return 0;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	sp->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (sp->fd < 0)
		return -errno;
	sp->created = true;
	sp->off = SPOOL_MAGIC_LEN;
	return write_all(sp->fd, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
}

/* The body of the batch being built, or NULL when not spooling. */
static struct strbuf *spool_body(struct spool_out *sp)
{
	return sp->fd >= 0 ? &sp->body : NULL;
}

static int spool_put(struct spool_out *sp, size_t rows)
{
	unsigned char head[SPOOL_REC_HEAD], sum[SPOOL_SUM];
	if (sp->fd < 0)
		return 0;
	put_le32(head, (uint32_t)rows);
	put_le64(head + 4, sp->body.len);
	put_le64(sum, sum_of(rows, sp->body.len, sp->body.data, sp->body.len));
	int rc = write_all(sp->fd, head, sizeof(head));
	if (rc == 0)
		rc = write_all(sp->fd, sp->body.data, sp->body.len);
	if (rc == 0)
		rc = write_all(sp->fd, sum, sizeof(sum));
	sp->off += sizeof(head) + sp->body.len + sizeof(sum);
	sp->n_batches++;
	return rc;
}

static int spool_finish(struct spool_out *sp)
{
	unsigned char t[SPOOL_TRAILER];
	if (sp->fd < 0)
		return 0;
	put_le32(t, 0);
	put_le64(t + 4, sp->n_batches);
	put_le64(t + 12, sp->off);
	put_le64(t + 20, sum_of(0, 0, t, 20));
	int rc = write_all(sp->fd, t, sizeof(t));
	if (rc == 0 && fsync(sp->fd) < 0)
		rc = -errno;
	if (close(sp->fd) < 0 && rc == 0)
		rc = -errno;
	sp->fd = -1;
	return rc;
}

/* No spool is left of a file that will not be posted. */
static void spool_discard(struct spool_out *sp)
{
	if (sp->fd >= 0) {
		close(sp->fd);
		sp->fd = -1;
	}
	if (sp->created) {
		unlink(sp->path);
		sp->created = false;
	}
}

/* A failed spool write, said in e->err. */
static int spool_error(struct engine *e, const char *path, int rc)
{
	if (rc < 0 && rc != -ENOMEM)
		snprintf(e->err, sizeof(e->err), "cannot write the spool %s: %s", path, strerror(-rc));
	return rc;
}

static int validate_file(const struct cfg_job *job, const char *path, const char *reject_path,
			 const char *spool_path, struct pipe_summary *s)
{
	struct engine e;
	struct report rep = {reject_path, NULL};
	struct spool_out sp = {0};
	struct strbuf first = {0};
	struct reject rj;
	int rc;

	memset(s, 0, sizeof(*s));
	memset(&e, 0, sizeof(e));
	rc = spool_create(&sp, spool_path);
	if (rc < 0) {
		snprintf(e.err, sizeof(e.err), "cannot create the spool %s: %s", spool_path,
			 strerror(-rc));
		goto out;
	}
	rc = engine_open(&e, job, path);
	if (rc < 0)
		goto out;
	rc = copy_names(e.map->attr_names, e.map->n_attrs, &s->columns_sent, &s->n_columns_sent);
	if (rc == 0)
		rc = copy_names(e.map->ignored, e.map->n_ignored, &s->columns_ignored,
				&s->n_columns_ignored);
	if (rc < 0)
		goto out;
	rc = strbuf_append(&first, "[", 1);
	if (rc == 0)
		rc = batch_start(&e.batch, spool_body(&sp));
	if (rc < 0)
		goto out;
	for (;;) {
		rc = engine_next(&e, &rj);
		if (rc < 0)
			goto out;
		if (rc == ROW_EOF)
			break;
		s->rows_read++;
		if (rc == ROW_REJECTED) {
			if (s->n_first_rejects < PIPE_FIRST_REJECTS) {
				struct pipe_reject *pr = &s->first_rejects[s->n_first_rejects++];
				pr->line = rj.line;
				util_strlcpy(pr->column, rj.column, sizeof(pr->column));
				util_strlcpy(pr->rule, rj.rule, sizeof(pr->rule));
				util_strlcpy(pr->message, rj.message, sizeof(pr->message));
			}
			s->rows_rejected++;
			rc = report_write(&rep, &rj, e.cur);
			if (rc < 0) {
				snprintf(e.err, sizeof(e.err), "cannot write the reject report %s: %s",
					 reject_path, strerror(-rc));
				goto out;
			}
			/* certainly over budget: the rest need not be spooled */
			if (job->validation.max_invalid_rows >= 0 &&
			    s->rows_rejected > (uint64_t)job->validation.max_invalid_rows)
				spool_discard(&sp);
			continue;
		}
		enum batch_place pl = batch_place(&e.batch, e.uid, e.uid_len, e.row.len);
		if (pl == BATCH_CLOSE || pl == BATCH_CLOSE_DUP) {
			if (pl == BATCH_CLOSE_DUP)
				s->duplicates++;
			rc = batch_finish(&e.batch, spool_body(&sp));
			if (rc == 0)
				rc = spool_put(&sp, e.batch.rows);
			if (rc == 0)
				rc = batch_start(&e.batch, spool_body(&sp));
			if (rc < 0) {
				rc = spool_error(&e, spool_path, rc);
				goto out;
			}
			s->n_batches++;
		}
		rc = batch_append(&e.batch, spool_body(&sp), e.row.data, e.row.len, e.uid, e.uid_len);
		if (rc < 0)
			goto out;
		if (s->rows_valid < PIPE_FIRST_ROWS) {
			rc = first_row_json(&e, &first);
			if (rc < 0)
				goto out;
		}
		s->rows_valid++;
	}
	if (e.batch.rows > 0) {
		rc = batch_finish(&e.batch, spool_body(&sp));
		if (rc == 0)
			rc = spool_put(&sp, e.batch.rows);
		if (rc < 0) {
			rc = spool_error(&e, spool_path, rc);
			goto out;
		}
		s->n_batches++;
	}
	if (s->rows_valid > 0) {
		rc = strbuf_append(&first, "]", 1);
		if (rc < 0)
			goto out;
		s->first_rows_json = strdup(first.data);
		if (!s->first_rows_json) {
			rc = -ENOMEM;
			goto out;
		}
	}
	s->over_budget = over_budget(job, s);
	rc = s->over_budget ? 0 : spool_error(&e, spool_path, spool_finish(&sp));
out:
	if (e.rd)
		s->bytes = csvread_bytes(e.rd);
	if (rc == -EBADMSG) {
		s->file_error = true;
		util_strlcpy(s->error, e.err, sizeof(s->error));
		rc = 0;
	} else if (rc < 0 && s->error[0] == '\0') {
		util_strlcpy(s->error, e.err[0] ? e.err : strerror(-rc), sizeof(s->error));
	}
	int rc2 = report_close(&rep);
	if (rc == 0 && rc2 < 0) {
		snprintf(s->error, sizeof(s->error), "cannot write the reject report %s: %s",
			 reject_path, strerror(-rc2));
		rc = rc2;
	}
	if (rc < 0 || s->file_error || s->over_budget)
		spool_discard(&sp);
	strbuf_free(&sp.body);
	strbuf_free(&first);
	engine_free(&e);
	return rc;
}

int pipeline_validate(const struct cfg_job *job, const char *path, const char *display_name,
		      const char *reject_path, struct pipe_summary *s)
{
	(void)display_name;
	return validate_file(job, path, reject_path, NULL, s);
}

int pipeline_validate_spool(const struct cfg_job *job, const char *path, const char *display_name,
			    const char *reject_path, const char *spool_path, struct pipe_summary *s)
{
	(void)display_name;
	return validate_file(job, path, reject_path, spool_path, s);
}

/* ---- pass 2 --------------------------------------------------------------- */
struct pipe_batcher {
	struct engine e;
	bool pending;   /* e.row holds a valid row that opens the next batch */
	bool done;
	size_t index;
	int spool_fd;   /* >= 0: the bodies come from a spool (pipeline_spool_open) */
	uint64_t spool_left;   /* bytes before the trailer not read yet */
	size_t spool_batches;
};

int pipeline_batcher_open(const struct cfg_job *job, const char *path, const char *display_name,
			  struct pipe_batcher **out)
{
	struct pipe_batcher *b = calloc(1, sizeof(*b));
	(void)display_name;
	*out = NULL;
	if (!b)
		return -ENOMEM;
	b->spool_fd = -1;
	int rc = engine_open(&b->e, job, path);
	if (rc < 0) {
		engine_free(&b->e);
		free(b);
		return rc;
	}
	*out = b;
	return 0;
}

/* Reads exactly n bytes: -EBADMSG when the file ends first. */
static int read_all(int fd, void *p, size_t n)
{
	char *c = p;
	while (n > 0) {
		ssize_t r = read(fd, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EBADMSG;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

int pipeline_spool_open(const char *spool_path, size_t expected_batches, struct pipe_batcher **out)
{
	unsigned char magic[SPOOL_MAGIC_LEN], t[SPOOL_TRAILER];
	struct pipe_batcher *b = NULL;
	struct stat st;
	int rc, fd;

	*out = NULL;
	fd = open(spool_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto fail;
	}
	rc = -EBADMSG;
	if (!S_ISREG(st.st_mode) || st.st_size < SPOOL_MAGIC_LEN + SPOOL_TRAILER)
		goto fail;
	uint64_t size = (uint64_t)st.st_size, trailer = size - SPOOL_TRAILER;
	ssize_t got = pread(fd, t, sizeof(t), (off_t)trailer);
	if (got != (ssize_t)sizeof(t)) {
		rc = got < 0 ? -errno : -EBADMSG;
		goto fail;
	}
	if (get_le32(t) != 0 || get_le64(t + 4) != expected_batches || get_le64(t + 12) != trailer ||
	    get_le64(t + 20) != sum_of(0, 0, t, 20))
		goto fail;
	rc = read_all(fd, magic, sizeof(magic));
	if (rc < 0)
		goto fail;
	rc = -EBADMSG;
	if (memcmp(magic, SPOOL_MAGIC, SPOOL_MAGIC_LEN) != 0)
		goto fail;
	b = calloc(1, sizeof(*b));
	if (!b) {
		rc = -ENOMEM;
		goto fail;
	}
	b->spool_fd = fd;
	b->spool_left = trailer - SPOOL_MAGIC_LEN;
	b->spool_batches = expected_batches;
	*out = b;
	return 0;
fail:
	close(fd);
	return rc;
}

static int spool_next(struct pipe_batcher *b, struct strbuf *body, size_t *rows, size_t *index)
{
	unsigned char head[SPOOL_REC_HEAD], sum[SPOOL_SUM];
	int rc;

	if (b->index == b->spool_batches)
		return b->spool_left == 0 ? 0 : -EBADMSG;
	if (b->spool_left < SPOOL_REC_HEAD + SPOOL_SUM)
		return -EBADMSG;
	rc = read_all(b->spool_fd, head, sizeof(head));
	if (rc < 0)
		return rc;
	uint32_t n = get_le32(head);
	uint64_t len = get_le64(head + 4);
	if (n == 0 || n > PIPE_MAX_BATCH || len > b->spool_left - SPOOL_REC_HEAD - SPOOL_SUM ||
	    len > SIZE_MAX - 1)
		return -EBADMSG;
	strbuf_reset(body);
	rc = strbuf_reserve(body, (size_t)len + 1);
	if (rc == 0)
		rc = read_all(b->spool_fd, body->data, (size_t)len);
	if (rc == 0)
		rc = read_all(b->spool_fd, sum, sizeof(sum));
	if (rc < 0)
		return rc;
	if (get_le64(sum) != sum_of(n, len, body->data, (size_t)len))
		return -EBADMSG;
	body->len = (size_t)len;
	body->data[body->len] = '\0';
	b->spool_left -= SPOOL_REC_HEAD + len + SPOOL_SUM;
	*rows = n;
	*index = b->index++;
	return 1;
}

int pipeline_batcher_next(struct pipe_batcher *b, struct strbuf *body, size_t *rows, size_t *index)
{
	struct engine *e = &b->e;
	struct reject rj;
	int rc;

	*rows = 0;
	if (b->spool_fd >= 0)
		return spool_next(b, body, rows, index);
	if (b->done)
		return 0;
	rc = batch_start(&e->batch, body);
	if (rc < 0)
		return rc;
	if (b->pending) {
		b->pending = false;
		rc = batch_append(&e->batch, body, e->row.data, e->row.len, e->uid, e->uid_len);
		if (rc < 0)
			return rc;
	}
	for (;;) {
		rc = engine_next(e, &rj);
		if (rc < 0)
			return rc;
		if (rc == ROW_REJECTED)
			continue;
		if (rc == ROW_EOF) {
			b->done = true;
			if (e->batch.rows == 0)
				return 0;
			break;
		}
		enum batch_place pl = batch_place(&e->batch, e->uid, e->uid_len, e->row.len);
		if (pl == BATCH_CLOSE || pl == BATCH_CLOSE_DUP) {
			b->pending = true;
			break;
		}
		rc = batch_append(&e->batch, body, e->row.data, e->row.len, e->uid, e->uid_len);
		if (rc < 0)
			return rc;
	}
	*rows = e->batch.rows;
	rc = batch_finish(&e->batch, body);
	if (rc < 0)
		return rc;
	*index = b->index++;
	return 1;
}

void pipeline_batcher_free(struct pipe_batcher *b)
{
	if (!b)
		return;
	if (b->spool_fd >= 0)
		close(b->spool_fd);
	engine_free(&b->e);
	free(b);
}

/* ---- create-profile -------------------------------------------------------- */
int pipeline_single(const struct cfg_project *p, int country_code, const char *const *attrs,
		    const char *const *values, size_t n, struct strbuf *body, char *err, size_t errlen)
{
	struct validate_ctx ctx = {country_code > 0 ? country_code : p->default_country_code,
				   EMPTY_NULL};
	struct validate_out *outs = calloc(n ? n : 1, sizeof(*outs));
	enum attr_type *types = calloc(n ? n : 1, sizeof(*types));
	size_t *order = calloc(n ? n : 1, sizeof(*order));
	const char **names = calloc(n ? n : 1, sizeof(*names));
	struct batch b = {0};
	struct strbuf row = {0};
	int rc = -ENOMEM;
	int uid = -1;

	if (!outs || !types || !order || !names)
		goto out;
	rc = -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!cfg_project_attr(p, attrs[i], &types[i])) {
			snprintf(err, errlen, "'%s' is not an attribute of project '%s'", attrs[i],
				 p->name ? p->name : "");
			goto out;
		}
		for (size_t k = 0; k < i; k++) {
			if (strcmp(attrs[k], attrs[i]) == 0) {
				snprintf(err, errlen, "%s is given twice", attrs[i]);
				goto out;
			}
		}
		if (types[i] == ATTR_SYS_USER_ID)
			uid = (int)i;
	}
	if (uid < 0) {
		snprintf(err, errlen, "user_id is required");
		goto out;
	}
	/* user_id first, then in the given order */
	size_t k = 0;
	order[k++] = (size_t)uid;
	for (size_t i = 0; i < n; i++)
		if ((int)i != uid)
			order[k++] = i;
	const char *pair[3][2] = {{"email", "email_subscription"},
				  {"mobile_number", "sms_subscription"},
				  {"whatsapp_number", "whatsapp_subscription"}};
	int set_of[3][2];
	memset(set_of, 0, sizeof(set_of));
	for (size_t i = 0; i < n; i++) {
		size_t a = order[i];
		const char *v = values[a] ? values[a] : "";
		size_t vl = strlen(v);
		names[i] = attrs[a];
		if (!util_utf8_valid(v, vl)) {
			snprintf(err, errlen, "invalid UTF-8 in %s", attrs[a]);
			goto out;
		}
		enum validate_error ve = validate_value(&ctx, types[a], v, vl, &outs[i]);
		if (ve != VALIDATE_OK) {
			validate_message(ve, attrs[a], v, vl, &ctx, err, errlen);
			goto out;
		}
		for (int q = 0; q < 3; q++)
			for (int r = 0; r < 2; r++)
				if (strcmp(attrs[a], pair[q][r]) == 0 && outs[i].set)
					set_of[q][r] = 1;
	}
	for (int q = 0; q < 3; q++) {
		if (set_of[q][0] && !set_of[q][1]) {
			snprintf(err, errlen, "%s is set but %s is empty", pair[q][0], pair[q][1]);
			goto out;
		}
	}
	rc = batch_init(&b, names, n, 1, SIZE_MAX);
	if (rc == 0)
		rc = strbuf_append(&row, "[", 1);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (i)
			rc = strbuf_append(&row, ",", 1);
		if (rc == 0)
			rc = put_value(&row, &outs[i], false);
	}
	if (rc == 0)
		rc = strbuf_append(&row, "]", 1);
	if (rc == 0)
		rc = batch_start(&b, body);
	if (rc == 0)
		rc = batch_append(&b, body, row.data, row.len, outs[0].p, outs[0].n);
	if (rc == 0)
		rc = batch_finish(&b, body);
out:
	batch_free(&b);
	strbuf_free(&row);
	free(outs);
	free(types);
	free(order);
	free(names);
	return rc;
}
