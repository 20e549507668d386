/* pipebench.c — the full pipeline over one file: pipeline_validate (pass 1)
 * then every batch of pipeline_batcher (pass 2) written to /dev/null, with
 * the profiles job of gen_profiles.py (default_country_code 353).
 * usage: pipebench FILE   prints rows, MB/s of both passes and of each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct cfg_attr attrs[] = {
		{"first_name", ATTR_STRING}, {"loyalty_tier", ATTR_STRING},
		{"lifetime_value", ATTR_NUMBER}, {"last_deposit", ATTR_DATE}, {"vip", ATTR_BOOLEAN},
	};
	struct cfg_project project = {.name = "bench", .attrs = attrs, .n_attrs = 5,
				      .default_country_code = 353};
	struct cfg_job job = {.name = "bench", .project = &project};
	struct pipe_summary s;
	struct strbuf body = {0};
	struct pipe_batcher *b;
	size_t rows, index, n_batches = 0, rows_sent = 0;
	unsigned long long body_bytes = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: pipebench FILE\n");
		return 2;
	}
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
	int rc = pipeline_validate(&job, argv[1], argv[1], NULL, &s);
	double t1 = now();
	if (rc < 0 || s.file_error) {
		fprintf(stderr, "validate: %d %s\n", rc, s.error);
		return 1;
	}
	rc = pipeline_batcher_open(&job, argv[1], argv[1], &b);
	if (rc < 0) {
		fprintf(stderr, "batcher: %d\n", rc);
		return 1;
	}
	while ((rc = pipeline_batcher_next(b, &body, &rows, &index)) == 1) {
		fwrite(body.data, 1, body.len, devnull);
		body_bytes += body.len;
		rows_sent += rows;
		n_batches++;
	}
	double t2 = now();
	if (rc < 0) {
		fprintf(stderr, "batcher next: %d\n", rc);
		return 1;
	}
	double mb = (double)s.bytes / 1e6;
	printf("pipeline rows=%llu valid=%llu rejected=%llu duplicates=%llu batches=%zu/%zu "
	       "rows_sent=%zu json_bytes=%llu\n",
	       (unsigned long long)s.rows_read, (unsigned long long)s.rows_valid,
	       (unsigned long long)s.rows_rejected, (unsigned long long)s.duplicates, s.n_batches,
	       n_batches, rows_sent, body_bytes);
	printf("pipeline both_passes seconds=%.3f MB/s=%.1f rows/s=%.0f | pass1 MB/s=%.1f | "
	       "pass2 MB/s=%.1f\n",
	       t2 - t0, mb / (t2 - t0), (double)s.rows_read / (t2 - t0), mb / (t1 - t0),
	       mb / (t2 - t1));
	if (s.n_first_rejects)
		fprintf(stderr, "first reject: line %llu: %s\n",
			(unsigned long long)s.first_rejects[0].line, s.first_rejects[0].message);
	pipeline_batcher_free(b);
	pipe_summary_free(&s);
	strbuf_free(&body);
	fclose(devnull);
	return rows_sent == s.rows_valid && n_batches == s.n_batches ? 0 : 1;
}
