/* test_csvread.c — the streaming reader: RFC 4180 cases, physical line
 * numbers, strict-mode errors and resynchronisation, delimiters, gzip,
 * limits. Every case runs twice, with and without the quote-free fast path,
 * and both must give the same rows. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "csvread.h"
#include "util.h"

static char tmpdir[] = "/tmp/test_csvread.XXXXXX";

static char *write_file(const char *name, const void *data, size_t len)
{
	static char path[256];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
	return path;
}

/* Parse path into a dump: one line per row, "L-E:[f1|f2]" plus " !code@col"
 * for a row error; "FILE:msg" for a file error. */
static char *dump_path(const char *path, const struct csvread_opts *base, bool fast)
{
	struct csvread_opts o = *base;
	struct csvread *r;
	struct strbuf sb = {0};
	char err[256] = "";
	const struct csvread_row *row;
	int rc;

	o.no_fastpath = !fast;
	assert_int_equal(csvread_open(path, &o, &r, err, sizeof(err)), 0);
	while ((rc = csvread_next(r, &row, err, sizeof(err))) == 1) {
		strbuf_printf(&sb, "%llu-%llu:[", (unsigned long long)row->line,
			      (unsigned long long)row->end_line);
		for (size_t i = 0; i < row->n_stored; i++) {
			if (i)
				strbuf_puts(&sb, "|");
			strbuf_append(&sb, csvread_field(row, i), row->len[i]);
		}
		strbuf_puts(&sb, "]");
		if (row->n_fields != row->n_stored)
			strbuf_printf(&sb, " n=%zu", row->n_fields);
		if (row->error)
			strbuf_printf(&sb, " !%d@%zu", (int)row->error, row->error_field);
		strbuf_puts(&sb, "\n");
	}
	if (rc < 0)
		strbuf_printf(&sb, "FILE %d:%s\n", rc, err);
	csvread_free(r);
	char *out = strdup(strbuf_cstr(&sb));
	strbuf_free(&sb);
	return out;
}

/* Both ways, compared, against the expected dump. */
static void check_opts(const char *csv, size_t len, const struct csvread_opts *o, const char *expect)
{
	char *path = write_file("in.csv", csv, len);
	char *slow = dump_path(path, o, false);
	char *fast = dump_path(path, o, true);
	if (strcmp(slow, expect) != 0)
		fail_msg("libcsv path:\n%s\nexpected:\n%s", slow, expect);
	if (strcmp(fast, expect) != 0)
		fail_msg("fast path:\n%s\nexpected:\n%s", fast, expect);
	free(slow);
	free(fast);
}

static void check(const char *csv, const char *expect)
{
	struct csvread_opts o = {0};
	check_opts(csv, strlen(csv), &o, expect);
}

static void test_simple(void **state)
{
	check("a,b,c\n1,2,3\n", "1-1:[a|b|c]\n2-2:[1|2|3]\n");
}

static void test_quoted(void **state)
{
	check("h1,h2\n\"x,y\",\"say \"\"hi\"\"\"\n", "1-1:[h1|h2]\n2-2:[x,y|say \"hi\"]\n");
}

static void test_embedded_newline_line_numbers(void **state)
{
	check("h1,h2\n\"line1\nline2\nline3\",b\nnext,row\n\"a\r\nb\",c\r\nlast,one\n",
	      "1-1:[h1|h2]\n2-4:[line1\nline2\nline3|b]\n5-5:[next|row]\n6-7:[a\r\nb|c]\n"
	      "8-8:[last|one]\n");
}

static void test_line_ends(void **state)
{
	check("a,b\r\n1,2\r\n", "1-1:[a|b]\n2-2:[1|2]\n");
	check("a,b\n1,2\r\n3,4\n", "1-1:[a|b]\n2-2:[1|2]\n3-3:[3|4]\n");
}

static void test_bom(void **state)
{
	check("\xef\xbb\xbfuser_id,email\nu1,x\n", "1-1:[user_id|email]\n2-2:[u1|x]\n");
	check("\xef\xbb\xbf", ""); /* found by fuzz_csv: nothing after the BOM */
	check("\xef\xbb\xbf\n", "");
}

static void test_last_line_without_newline(void **state)
{
	check("a,b\n1,2", "1-1:[a|b]\n2-2:[1|2]\n");
	check("a,b\n1,\"2\"", "1-1:[a|b]\n2-2:[1|2]\n");
}

static void test_blank_lines(void **state)
{
	check("a,b\n1,2\n\n\r\n  \n", "1-1:[a|b]\n2-2:[1|2]\n");
	check("a,b\n\n1,2\n", "1-1:[a|b]\n3-3:[1|2]\n");
}

static void test_empty_fields(void **state)
{
	check("a,b,c\n,,\n x , y ,\n", "1-1:[a|b|c]\n2-2:[||]\n3-3:[x|y|]\n");
}

static void test_unterminated_quote(void **state)
{
	/* the row starting on line 2 runs to the end of the file */
	check("a,b\n1,\"open\nmore\n", "1-1:[a|b]\n2-3:[1] !3@1\n");
	check("a,b\n1,\"open", "1-1:[a|b]\n2-2:[1] !3@1\n");
}

static void test_quote_in_unquoted_field(void **state)
{
	check("a,b\nx,ab\"c\nok,1\n", "1-1:[a|b]\n2-2:[x] !1@1\n3-3:[ok|1]\n");
}

static void test_garbage_after_quote(void **state)
{
	check("a,b\n\"x\"y,1\nok,2\n", "1-1:[a|b]\n2-2:[] !2@0\n3-3:[ok|2]\n");
	/* an unclosed quote swallows lines until a quote ends it badly */
	check("a,b\n1,\"open\n2,3\n4,\"x\"y\n5,6\n", "1-1:[a|b]\n2-4:[1] !2@1\n5-5:[5|6]\n");
}

static void test_ragged(void **state)
{
	check("a,b,c\n1,2\n1,2,3,4\n", "1-1:[a|b|c]\n2-2:[1|2]\n3-3:[1|2|3|4]\n");
}

static void test_bare_cr(void **state)
{
	check("a,b\n1,2\r3,4\n", "1-1:[a|b]\n2-2:[1|2]\n2-2:[3|4]\n");
}

static void test_delimiters(void **state)
{
	struct csvread_opts o = {.delimiter = ';'};
	const char *a = "a;b\n\"x;y\";2\n";
	check_opts(a, strlen(a), &o, "1-1:[a|b]\n2-2:[x;y|2]\n");
	o.delimiter = '\t';
	const char *b = "a\tb\n x \t\n\"q\t\"\t2\n";
	check_opts(b, strlen(b), &o, "1-1:[a|b]\n2-2:[x|]\n3-3:[q\t|2]\n");
	o.delimiter = '|';
	const char *c = "a|b\n1|2,3\n";
	check_opts(c, strlen(c), &o, "1-1:[a|b]\n2-2:[1|2,3]\n");
}

static void test_quote_option(void **state)
{
	struct csvread_opts o = {.quote = '\''};
	const char *a = "a,b\n'x,y',\"z\"\n";
	check_opts(a, strlen(a), &o, "1-1:[a|b]\n2-2:[x,y|\"z\"]\n");
}

static void test_nul_bytes_kept(void **state)
{
	struct csvread_opts o = {0};
	char *path = write_file("nul.csv", "a,b\nx\0y,2\n", 10);
	for (int fast = 0; fast < 2; fast++) {
		struct csvread *r;
		const struct csvread_row *row;
		char err[128];
		o.no_fastpath = !fast;
		assert_int_equal(csvread_open(path, &o, &r, err, sizeof(err)), 0);
		assert_int_equal(csvread_next(r, &row, err, sizeof(err)), 1);
		assert_int_equal(csvread_next(r, &row, err, sizeof(err)), 1);
		assert_int_equal(row->len[0], 3);
		assert_memory_equal(csvread_field(row, 0), "x\0y", 3);
		csvread_free(r);
	}
}

static void test_gzip(void **state)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/in.csv.gz", tmpdir);
	gzFile gz = gzopen(path, "wb");
	assert_non_null(gz);
	const char *csv = "user_id,x\n\"u\n1\",2\nu2,3\n";
	gzwrite(gz, csv, (unsigned)strlen(csv));
	gzclose(gz);
	struct csvread_opts o = {0};
	for (int fast = 0; fast < 2; fast++) {
		char *d = dump_path(path, &o, fast);
		assert_string_equal(d, "1-1:[user_id|x]\n2-3:[u\n1|2]\n4-4:[u2|3]\n");
		free(d);
	}
}

static void test_gzip_corrupt_and_truncated(void **state)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/big.csv.gz", tmpdir);
	gzFile gz = gzopen(path, "wb");
	for (int i = 0; i < 2000; i++)
		gzprintf(gz, "u%d,%d\n", i, i * 7);
	gzclose(gz);
	FILE *f = fopen(path, "rb");
	static unsigned char buf[65536];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	struct csvread_opts o = {0};
	/* truncated */
	char *p = write_file("trunc.csv.gz", buf, n / 2);
	char *d = dump_path(p, &o, true);
	assert_non_null(strstr(d, "FILE -74:the gzip data is truncated"));
	free(d);
	/* corrupt */
	for (size_t i = 20; i < 60; i++)
		buf[i] ^= 0x5a;
	p = write_file("bad.csv.gz", buf, n);
	d = dump_path(p, &o, true);
	assert_non_null(strstr(d, "FILE -74:the gzip data is corrupt"));
	free(d);
}

static void test_limit_field(void **state)
{
	struct csvread_opts o = {.max_field_bytes = 4};
	const char *a = "a,b\n1234,12345\n\"12345\",1\nok,1\n";
	check_opts(a, strlen(a), &o, "1-1:[a|b]\n2-2:[1234|] !4@1\n3-3:[|1] !4@0\n4-4:[ok|1]\n");
}

static void test_limit_columns(void **state)
{
	struct csvread_opts o = {.max_columns = 2};
	const char *a = "a,b\n1,2,3,4\n";
	check_opts(a, strlen(a), &o, "1-1:[a|b]\n2-2:[1|2] n=4\n");
}

static void test_limit_line(void **state)
{
	struct csvread_opts o = {.max_line_bytes = 10};
	const char *a = "a,b\n1234567,89012\nok,1\n";
	check_opts(a, strlen(a), &o, "1-1:[a|b]\n2-2:[] !5@0\n3-3:[ok|1]\n");
	/* inside a quoted field the row end is unknown: a file error */
	const char *b = "a,b\n1,\"23\n4567890\n";
	check_opts(b, strlen(b), &o,
		   "1-1:[a|b]\nFILE -74:line 2: row is longer than 10 bytes (csv.max_line_bytes); "
		   "is a quoted field not closed?\n");
}

static void test_long_line_across_chunks(void **state)
{
	/* a 600 KiB line crosses the 256 KiB read chunks */
	size_t big = 600 * 1024;
	char *csv = malloc(big + 64);
	strcpy(csv, "a,b\nx,\"");
	size_t o = strlen(csv);
	memset(csv + o, 'z', big);
	o += big;
	memcpy(csv + o, "\"\nok,1\n", 8);
	o += 7;
	char *path = write_file("big.csv", csv, o);
	struct csvread_opts opts = {.max_field_bytes = big};
	struct csvread *r;
	const struct csvread_row *row;
	char err[128];
	assert_int_equal(csvread_open(path, &opts, &r, err, sizeof(err)), 0);
	assert_int_equal(csvread_next(r, &row, err, sizeof(err)), 1);
	assert_int_equal(csvread_next(r, &row, err, sizeof(err)), 1);
	assert_int_equal(row->error, CSVREAD_OK);
	assert_int_equal(row->len[1], big);
	assert_int_equal(csvread_next(r, &row, err, sizeof(err)), 1);
	assert_int_equal(row->line, 3);
	assert_int_equal(row->len[0], 2);
	assert_memory_equal(csvread_field(row, 0), "ok", 2);
	assert_int_equal(csvread_next(r, &row, err, sizeof(err)), 0);
	assert_int_equal(csvread_bytes(r), o);
	csvread_free(r);
	free(csv);
}

static void test_raw_row(void **state)
{
	struct csvread_opts o = {0};
	char *path = write_file("raw.csv", "a,b\n\"x\ny\",2\r\nq,r\n", 18);
	struct csvread *r;
	const struct csvread_row *row;
	char err[128];
	assert_int_equal(csvread_open(path, &o, &r, err, sizeof(err)), 0);
	assert_int_equal(csvread_next(r, &row, err, sizeof(err)), 1);
	assert_int_equal(csvread_next(r, &row, err, sizeof(err)), 1);
	assert_int_equal(row->raw_len, 7);
	assert_memory_equal(row->raw, "\"x\ny\",2", 7);
	assert_int_equal(csvread_next(r, &row, err, sizeof(err)), 1);
	assert_int_equal(row->raw_len, 3);
	assert_memory_equal(row->raw, "q,r", 3);
	csvread_free(r);
}

static void test_missing_file(void **state)
{
	struct csvread_opts o = {0};
	struct csvread *r;
	char err[256];
	assert_int_equal(csvread_open("/nonexistent/x.csv", &o, &r, err, sizeof(err)), -ENOENT);
	assert_null(r);
}

static void test_scan(void **state)
{
	assert_int_equal(csvread_scan("plain text here!", 16), 0);
	assert_int_equal(csvread_scan("abc", 3), 0);
	assert_int_equal(csvread_scan("a\"b", 3), CSVREAD_SCAN_ESC);
	assert_int_equal(csvread_scan("0123456789\\", 11), CSVREAD_SCAN_ESC);
	assert_int_equal(csvread_scan("tab\there", 8), CSVREAD_SCAN_ESC);
	assert_int_equal(csvread_scan("Se\xc3\xa1n", 5), CSVREAD_SCAN_HIGH);
	assert_int_equal(csvread_scan("abcdefgh\0", 9), CSVREAD_SCAN_NUL | CSVREAD_SCAN_ESC);
	assert_int_equal(csvread_scan("", 0), 0);
	assert_int_equal(csvread_utf8_chars("Se\xc3\xa1n", 5), 4);
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),
		cmocka_unit_test(test_quoted),
		cmocka_unit_test(test_embedded_newline_line_numbers),
		cmocka_unit_test(test_line_ends),
		cmocka_unit_test(test_bom),
		cmocka_unit_test(test_last_line_without_newline),
		cmocka_unit_test(test_blank_lines),
		cmocka_unit_test(test_empty_fields),
		cmocka_unit_test(test_unterminated_quote),
		cmocka_unit_test(test_quote_in_unquoted_field),
		cmocka_unit_test(test_garbage_after_quote),
		cmocka_unit_test(test_ragged),
		cmocka_unit_test(test_bare_cr),
		cmocka_unit_test(test_delimiters),
		cmocka_unit_test(test_quote_option),
		cmocka_unit_test(test_nul_bytes_kept),
		cmocka_unit_test(test_gzip),
		cmocka_unit_test(test_gzip_corrupt_and_truncated),
		cmocka_unit_test(test_limit_field),
		cmocka_unit_test(test_limit_columns),
		cmocka_unit_test(test_limit_line),
		cmocka_unit_test(test_long_line_across_chunks),
		cmocka_unit_test(test_raw_row),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_scan),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
