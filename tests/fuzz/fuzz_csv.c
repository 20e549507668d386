/* fuzz_csv.c — libFuzzer target for the CSV front end: reader, mapper,
 * validation and batch encoder, on a fixed job.
 *
 * For each input (written to a memfd): pipeline_validate() and then every
 * batch of the batcher; every body must parse with jansson and the batch
 * count and rows must agree with pass 1 (abort otherwise). The reader is
 * also run with and without its quote-free fast path, which must give the
 * same rows as libcsv alone.
 *
 * Build (see the report in issue 3):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *     -o tests/fuzz/bin/fuzz_csv tests/fuzz/fuzz_csv.c src/pipeline.c src/csvread.c \
 *     src/csvmap.c src/validate.c src/batch.c src/util.c src/attr.c -ljansson -lcsv -lz
 * Run: tests/fuzz/bin/fuzz_csv -max_total_time=60 tests/fuzz/corpus/csv
 * Replay (make check): tests/fuzz/bin/fuzz_csv tests/fuzz/corpus/csv/<any file>... */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
		strbuf_append(out, "\n", 1);
	}
	strbuf_printf(out, "end %d %s\n", rc, rc < 0 ? err : "");
	csvread_free(r);
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
	pipe_summary_free(&s);
	close(fd);
	return 0;
}
