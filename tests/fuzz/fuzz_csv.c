/* fuzz_csv.c — libFuzzer target for the CSV front end: reader, mapper,
 * validation and batch encoder, on a fixed job.
 *
 * For each input (written to a memfd): pipeline_validate() and then every
 * batch of the batcher; every body must parse with jansson and the batch
 * count and rows must agree with pass 1 (abort otherwise). The spooled way
 * (pipeline_validate_spool() + pipeline_spool_open()) must give the same
 * summary and every body byte for byte. The reader is also run with and
 * without its fast paths (quote-free and regular quoted lines), which must
 * give the same rows and raw bytes as libcsv alone; the word-at-a-time scan
 * and UTF-8 check must agree with the plain ones.
 *
 * Build (see the report in issue 3):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *     -o tests/fuzz/bin/fuzz_csv tests/fuzz/fuzz_csv.c src/pipeline.c src/csvread.c \
 *     src/csvmap.c src/validate.c src/batch.c src/util.c src/attr.c -ljansson -lcsv -lz
 * (or `make tests/fuzz/bin/fuzz_csv`)
 * Run: tests/fuzz/bin/fuzz_csv -max_total_time=60 tests/fuzz/corpus/csv
 * Replay (make check): tests/fuzz/bin/fuzz_csv tests/fuzz/corpus/csv/<any file>... */
#include <jansson.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "csvread.h"
#include "pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char attr_first_name[] = "first_name", attr_lifetime[] = "lifetime_value",
	    attr_last_deposit[] = "last_deposit", attr_vip[] = "vip", attr_prefs[] = "preferences",
	    attr_visits[] = "visits";
static struct cfg_attr attrs[] = {
	{attr_first_name, ATTR_STRING}, {attr_lifetime, ATTR_NUMBER}, {attr_last_deposit, ATTR_DATE},
	{attr_vip, ATTR_BOOLEAN},       {attr_prefs, ATTR_ARRAY},     {attr_visits, ATTR_INTEGER},
};
static char project_name[] = "fuzz", job_name[] = "fuzz";
static char h_email[] = "E-mail", a_email[] = "email", h_skip[] = "skip";
static struct cfg_column columns[] = {{h_email, a_email, NULL, 0, 0}, {h_skip, NULL, NULL, 0, 0}};

static void dump_rows(const char *path, bool fast, struct strbuf *out)
{
	struct csvread_opts o = {.max_field_bytes = 4096, .max_columns = 64, .max_line_bytes = 16384,
				 .no_fastpath = !fast};
	struct csvread *r;
	const struct csvread_row *row;
	char err[256];
	int rc;
	if (csvread_open(path, &o, &r, err, sizeof(err)) < 0)
		abort();
	while ((rc = csvread_next(r, &row, err, sizeof(err))) == 1) {
		strbuf_printf(out, "%llu-%llu:%zu:%d@%zu:", (unsigned long long)row->line,
			      (unsigned long long)row->end_line, row->n_fields, (int)row->error,
			      row->error_field);
		for (size_t i = 0; i < row->n_stored; i++) {
			strbuf_printf(out, "%zu|", row->len[i]);
			strbuf_append(out, csvread_field(row, i), row->len[i]);
		}
		strbuf_printf(out, "raw %zu|", row->raw_len);
		strbuf_append(out, row->raw, row->raw_len);
		strbuf_append(out, "\n", 1);
	}
	strbuf_printf(out, "end %d %s\n", rc, rc < 0 ? err : "");
	csvread_free(r);
}

/* A spool path of this process, in a directory made once and removed at exit. */
static char spool_dir[] = "/tmp/fuzz_csv.XXXXXX";
static char spool_file[sizeof(spool_dir) + 8];

static void remove_spool_dir(void)
{
	unlink(spool_file);
	rmdir(spool_dir);
}

static const char *spool_path(void)
{
	if (!spool_file[0]) {
		if (!mkdtemp(spool_dir))
			abort();
		snprintf(spool_file, sizeof(spool_file), "%s/spool", spool_dir);
		atexit(remove_spool_dir);
	}
	return spool_file;
}

/* The scans agree with their plain forms on the whole input. */
static void check_scans(const uint8_t *data, size_t size)
{
	char *padded = malloc(size + CSVREAD_PAD);
	if (!padded)
		abort();
	memcpy(padded, data, size);
	memset(padded + size, 0x80, CSVREAD_PAD); /* must not count */
	for (size_t off = 0; off <= size && off < 24; off++)
		if (csvread_scan(padded + off, size - off) != csvread_scan_padded(padded + off, size - off))
			abort();
	if (csvread_utf8_valid((const char *)data, size) != util_utf8_valid((const char *)data, size))
		abort();
	free(padded);
}

/* The spooled way gives what the two passes give. */
static void check_spool(const struct cfg_job *job, const char *path, const struct pipe_summary *s)
{
	struct pipe_summary s2;
	const char *sp = spool_path();
	if (pipeline_validate_spool(job, path, "fuzz.csv", NULL, sp, &s2) < 0)
		abort();
	if (s2.rows_read != s->rows_read || s2.rows_valid != s->rows_valid ||
	    s2.rows_rejected != s->rows_rejected || s2.duplicates != s->duplicates ||
	    s2.n_batches != s->n_batches || s2.file_error != s->file_error ||
	    s2.over_budget != s->over_budget || s2.bytes != s->bytes ||
	    strcmp(s2.error, s->error) != 0 || s2.n_first_rejects != s->n_first_rejects)
		abort();
	for (size_t i = 0; i < s->n_first_rejects; i++)
		if (s2.first_rejects[i].line != s->first_rejects[i].line ||
		    strcmp(s2.first_rejects[i].message, s->first_rejects[i].message) != 0)
			abort();
	if ((s2.first_rows_json == NULL) != (s->first_rows_json == NULL) ||
	    (s->first_rows_json && strcmp(s2.first_rows_json, s->first_rows_json) != 0))
		abort();
	if (s->file_error) {
		if (access(sp, F_OK) == 0)
			abort(); /* no spool of a file not posted */
		pipe_summary_free(&s2);
		return;
	}
	struct pipe_batcher *a, *b;
	struct strbuf ba = {0}, bb = {0};
	size_t ra, rb, ia, ib;
	int rca, rcb;
	if (pipeline_batcher_open(job, path, "fuzz.csv", &a) < 0 ||
	    pipeline_spool_open(sp, s2.n_batches, &b) < 0)
		abort();
	do {
		rca = pipeline_batcher_next(a, &ba, &ra, &ia);
		rcb = pipeline_batcher_next(b, &bb, &rb, &ib);
		if (rca != rcb)
			abort();
		if (rca == 1) {
			json_error_t jerr;
			json_t *j = json_loadb(bb.data, bb.len, 0, &jerr);
			if (!j || ra != rb || ia != ib || ba.len != bb.len ||
			    memcmp(ba.data, bb.data, ba.len) != 0)
				abort();
			json_decref(j);
		}
	} while (rca == 1);
	if (rca != 0)
		abort();
	pipeline_batcher_free(a);
	pipeline_batcher_free(b);
	strbuf_free(&ba);
	strbuf_free(&bb);
	unlink(sp);
	pipe_summary_free(&s2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg_project project = {.name = project_name, .attrs = attrs, .n_attrs = 6,
				      .default_country_code = 353};
	struct cfg_job job = {.name = job_name, .project = &project};
	char path[64];
	struct pipe_summary s;
	int fd = memfd_create("fuzz_csv", MFD_CLOEXEC);

	if (fd < 0)
		abort();
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	job.mapping.auto_map = true;
	job.mapping.columns = columns;
	job.mapping.n_columns = 2;
	job.validation.max_invalid_rows = -1;
	job.validation.max_invalid_percent = -1;
	job.validation.empty_cells = size % 3 == 0 ? EMPTY_NULL : size % 3 == 1 ? EMPTY_STRING : EMPTY_REJECT;
	job.csv.delimiter = ',';
	job.csv.quote = '"';
	job.csv.max_field_bytes = 4096;
	job.csv.max_columns = 64;
	job.csv.max_line_bytes = 16384;
	job.batch.size = 3;
	job.batch.max_bytes = 2048;

	/* the fast path and libcsv agree */
	struct strbuf a = {0}, b = {0};
	dump_rows(path, false, &a);
	dump_rows(path, true, &b);
	if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
		abort();
	strbuf_free(&a);
	strbuf_free(&b);

	check_scans(data, size);
	if (pipeline_validate(&job, path, "fuzz.csv", NULL, &s) < 0)
		abort(); /* a memfd cannot fail to read */
	if (s.rows_valid + s.rows_rejected != s.rows_read)
		abort();
	if (s.first_rows_json) {
		json_error_t jerr;
		json_t *j = json_loads(s.first_rows_json, 0, &jerr);
		if (!j)
			abort();
		json_decref(j);
	}
	if (!s.file_error) {
		struct pipe_batcher *bt;
		struct strbuf body = {0};
		size_t rows, index, n = 0, total = 0;
		int rc;
		if (pipeline_batcher_open(&job, path, "fuzz.csv", &bt) < 0)
			abort();
		while ((rc = pipeline_batcher_next(bt, &body, &rows, &index)) == 1) {
			json_error_t jerr;
			json_t *j = json_loadb(body.data, body.len, 0, &jerr);
			if (!j || body.len > job.batch.max_bytes || rows == 0 || rows > job.batch.size ||
			    json_array_size(json_object_get(j, "rows")) != rows)
				abort();
			json_decref(j);
			n++;
			total += rows;
		}
		if (rc < 0 || n != s.n_batches || total != s.rows_valid)
			abort();
		pipeline_batcher_free(bt);
		strbuf_free(&body);
	}
	check_spool(&job, path, &s);
	pipe_summary_free(&s);
	close(fd);
	return 0;
}
