/* pipebench.c — the full pipeline over one file, with the profiles job of
 * gen_profiles.py (default_country_code 353).
 *   pipebench FILE           pipeline_validate (pass 1), then every batch of
 *                            pipeline_batcher (pass 2: parse again) to /dev/null
 *   pipebench --spool FILE   pipeline_validate_spool (one parse, the bodies
 *                            spooled to FILE.spool), then every batch of
 *                            pipeline_spool_open to /dev/null; the spool is removed
 *   pipebench --check FILE   both ways; every body must be the same bytes
 * prints rows, MB/s of the whole and of each pass (last line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pipeline.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

struct totals {
	size_t n_batches, rows_sent;
	unsigned long long body_bytes;
};

/* Every batch of b to out; with other, compares each body with other's. */
static int drain(struct pipe_batcher *b, struct pipe_batcher *other, FILE *out, struct totals *t)
{
	struct strbuf body = {0}, body2 = {0};
	size_t rows, index, rows2, index2;
	int rc;

	while ((rc = pipeline_batcher_next(b, &body, &rows, &index)) == 1) {
		if (other) {
			if (pipeline_batcher_next(other, &body2, &rows2, &index2) != 1 || rows2 != rows ||
			    index2 != index || body2.len != body.len ||
			    memcmp(body.data, body2.data, body.len) != 0) {
				fprintf(stderr, "batch %zu differs between the spool and pass 2\n", index);
				rc = -1;
				break;
			}
		}
		fwrite(body.data, 1, body.len, out);
		t->body_bytes += body.len;
		t->rows_sent += rows;
		t->n_batches++;
	}
	if (rc == 0 && other && pipeline_batcher_next(other, &body2, &rows2, &index2) != 0) {
		fprintf(stderr, "pass 2 has more batches than the spool\n");
		rc = -1;
	}
	strbuf_free(&body);
	strbuf_free(&body2);
	return rc;
}

int main(int argc, char **argv)
{
	static char n1[] = "first_name", n2[] = "loyalty_tier", n3[] = "lifetime_value",
		    n4[] = "last_deposit", n5[] = "vip", name[] = "bench";
	struct cfg_attr attrs[] = {
		{n1, ATTR_STRING}, {n2, ATTR_STRING}, {n3, ATTR_NUMBER}, {n4, ATTR_DATE}, {n5, ATTR_BOOLEAN},
	};
	struct cfg_project project = {.name = name, .attrs = attrs, .n_attrs = 5,
				      .default_country_code = 353};
	struct cfg_job job = {.name = name, .project = &project};
	struct pipe_summary s;
	struct pipe_batcher *b, *b2 = NULL;
	struct totals t = {0, 0, 0};
	const char *mode = "", *file;
	char spool[4096];
	int rc;

	if (argc == 3 && (strcmp(argv[1], "--spool") == 0 || strcmp(argv[1], "--check") == 0))
		mode = argv[1];
	else if (argc != 2) {
		fprintf(stderr, "usage: pipebench [--spool|--check] FILE\n");
		return 2;
	}
	file = argv[argc - 1];
	snprintf(spool, sizeof(spool), "%s.spool", file);
	job.mapping.auto_map = true;
	job.validation.max_invalid_rows = -1;
	job.validation.max_invalid_percent = -1;
	job.csv.delimiter = ',';
	job.csv.quote = '"';
	job.batch.size = 10000;
	FILE *devnull = fopen("/dev/null", "w");
	if (!devnull)
		return 1;

	double t0 = now();
	if (*mode)
		rc = pipeline_validate_spool(&job, file, file, NULL, spool, &s);
	else
		rc = pipeline_validate(&job, file, file, NULL, &s);
	double t1 = now();
	if (rc < 0 || s.file_error) {
		fprintf(stderr, "validate: %d %s\n", rc, s.error);
		return 1;
	}
	rc = *mode ? pipeline_spool_open(spool, s.n_batches, &b)
		   : pipeline_batcher_open(&job, file, file, &b);
	if (rc == 0 && strcmp(mode, "--check") == 0)
		rc = pipeline_batcher_open(&job, file, file, &b2);
	if (rc < 0) {
		fprintf(stderr, "batcher: %d\n", rc);
		return 1;
	}
	rc = drain(b, b2, devnull, &t);
	double t2 = now();
	if (*mode)
		unlink(spool);
	if (rc < 0) {
		fprintf(stderr, "batcher next: %d\n", rc);
		return 1;
	}
	double mb = (double)s.bytes / 1e6;
	printf("pipeline rows=%llu valid=%llu rejected=%llu duplicates=%llu batches=%zu/%zu "
	       "rows_sent=%zu json_bytes=%llu\n",
	       (unsigned long long)s.rows_read, (unsigned long long)s.rows_valid,
	       (unsigned long long)s.rows_rejected, (unsigned long long)s.duplicates, s.n_batches,
	       t.n_batches, t.rows_sent, t.body_bytes);
	if (!*mode)
		printf("pipeline both_passes seconds=%.3f MB/s=%.1f rows/s=%.0f | pass1 MB/s=%.1f | "
		       "pass2 MB/s=%.1f\n",
		       t2 - t0, mb / (t2 - t0), (double)s.rows_read / (t2 - t0), mb / (t1 - t0),
		       mb / (t2 - t1));
	else
		printf("pipeline %s seconds=%.3f MB/s=%.1f rows/s=%.0f | pass1+spool MB/s=%.1f "
		       "seconds=%.3f | read_spool MB/s=%.1f seconds=%.3f%s\n",
		       mode + 2, t2 - t0, mb / (t2 - t0), (double)s.rows_read / (t2 - t0),
		       mb / (t1 - t0), t1 - t0, mb / (t2 - t1), t2 - t1,
		       b2 ? " | bodies identical" : "");
	if (s.n_first_rejects)
		fprintf(stderr, "first reject: line %llu: %s\n",
			(unsigned long long)s.first_rejects[0].line, s.first_rejects[0].message);
	pipeline_batcher_free(b);
	pipeline_batcher_free(b2);
	pipe_summary_free(&s);
	fclose(devnull);
	return t.rows_sent == s.rows_valid && t.n_batches == s.n_batches ? 0 : 1;
}
