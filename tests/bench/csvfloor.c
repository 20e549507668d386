/* csvfloor.c — the benchmark floor: libcsv alone (same options as the
 * pipeline) counting the fields and rows of a file.
 * usage: csvfloor FILE   prints: rows fields bytes seconds MB/s rows/s */
#include <csv.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct counts {
	unsigned long long fields, rows;
};

static void on_field(void *s, size_t len, void *data)
{
	((struct counts *)data)->fields++;
}

static void on_row(int c, void *data)
{
	((struct counts *)data)->rows++;
}

int main(int argc, char **argv)
{
	static char buf[256 * 1024];
	struct csv_parser p;
	struct counts n = {0, 0};
	unsigned long long bytes = 0;
	struct timespec t0, t1;

	if (argc != 2) {
		fprintf(stderr, "usage: csvfloor FILE\n");
		return 2;
	}
	FILE *f = fopen(argv[1], "rb");
	if (!f) {
		perror(argv[1]);
		return 1;
	}
	if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	size_t got;
	while ((got = fread(buf, 1, sizeof(buf), f)) > 0) {
		bytes += got;
		if (csv_parse(&p, buf, got, on_field, on_row, &n) != got) {
			fprintf(stderr, "parse error: %s\n", csv_strerror(csv_error(&p)));
			return 1;
		}
	}
	csv_fini(&p, on_field, on_row, &n);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("csvfloor rows=%llu fields=%llu bytes=%llu seconds=%.3f MB/s=%.1f rows/s=%.0f\n",
	       n.rows, n.fields, bytes, secs, (double)bytes / 1e6 / secs, (double)n.rows / secs);
	csv_free(&p);
	fclose(f);
	return 0;
}
