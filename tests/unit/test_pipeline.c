/* test_pipeline.c — both passes over real files: counts, the reject report,
 * file errors, empty-cell policies, duplicates, the error budget, batch
 * splitting, and every body round-tripped through jansson and compared
 * value by value. The spooled pass (pipeline_validate_spool +
 * pipeline_spool_open) is compared byte for byte with the two passes on
 * every input, and its file format checked for truncation and damage.
 * Also pipeline_single (create-profile). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "pipeline.h"

static char tmpdir[] = "/tmp/test_pipeline.XXXXXX";
static char csv_path[300], rej_path[300], spool_path[300], rej2_path[300];

static struct cfg_attr attrs[] = {
	{(char[]){"first_name"}, ATTR_STRING},   {(char[]){"loyalty_tier"}, ATTR_STRING},
	{(char[]){"lifetime_value"}, ATTR_NUMBER}, {(char[]){"last_deposit"}, ATTR_DATE},
	{(char[]){"vip"}, ATTR_BOOLEAN},         {(char[]){"preferences"}, ATTR_ARRAY},
	{(char[]){"visits"}, ATTR_INTEGER},
};
static char project_name[] = "main", job_name[] = "crm-daily";
static struct cfg_project project;
static struct cfg_job job;
static struct pipe_summary sum;

static int setup(void **state)
{
	memset(&project, 0, sizeof(project));
	project.name = project_name;
	project.attrs = attrs;
	project.n_attrs = sizeof(attrs) / sizeof(attrs[0]);
	project.default_country_code = 353;
	memset(&job, 0, sizeof(job));
	job.name = job_name;
	job.project = &project;
	job.mapping.auto_map = true;
	job.validation.max_invalid_rows = -1;
	job.validation.max_invalid_percent = -1;
	job.validation.empty_cells = EMPTY_NULL;
	job.csv.delimiter = ',';
	job.csv.quote = '"';
	job.batch.size = 10000;
	memset(&sum, 0, sizeof(sum));
	unlink(rej_path);
	unlink(rej2_path);
	unlink(spool_path);
	return 0;
}

static int teardown(void **state)
{
	pipe_summary_free(&sum);
	return 0;
}

static void write_csv(const char *csv)
{
	FILE *f = fopen(csv_path, "wb");
	assert_non_null(f);
	fwrite(csv, 1, strlen(csv), f);
	fclose(f);
}

static void validate(const char *csv)
{
	write_csv(csv);
	pipe_summary_free(&sum);
	assert_int_equal(pipeline_validate(&job, csv_path, "in.csv", rej_path, &sum), 0);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	static char buf[65536];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* All batches as one JSON array of bodies; checks each body parses and that
 * the count matches pass 1. */
static json_t *batches(void)
{
	struct pipe_batcher *b;
	struct strbuf body = {0};
	size_t rows, index, n = 0;
	json_t *all = json_array();
	assert_int_equal(pipeline_batcher_open(&job, csv_path, "in.csv", &b), 0);
	int rc;
	while ((rc = pipeline_batcher_next(b, &body, &rows, &index)) == 1) {
		json_error_t jerr;
		json_t *j = json_loadb(body.data, body.len, 0, &jerr);
		if (!j)
			fail_msg("batch %zu is not JSON: %s\n%s", index, jerr.text, body.data);
		assert_int_equal(index, n);
		assert_int_equal(json_array_size(json_object_get(j, "rows")), rows);
		json_array_append_new(all, j);
		n++;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(n, sum.n_batches);
	pipeline_batcher_free(b);
	strbuf_free(&body);
	return all;
}

static char *slurp_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct strbuf sb = {0};
	char buf[4096];
	size_t n;
	if (!f)
		return NULL;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		strbuf_append(&sb, buf, n);
	fclose(f);
	*len = sb.len;
	return sb.data ? sb.data : strdup("");
}

static void same_summary(const struct pipe_summary *a, const struct pipe_summary *b)
{
	assert_int_equal(a->bytes, b->bytes);
	assert_int_equal(a->rows_read, b->rows_read);
	assert_int_equal(a->rows_valid, b->rows_valid);
	assert_int_equal(a->rows_rejected, b->rows_rejected);
	assert_int_equal(a->duplicates, b->duplicates);
	assert_int_equal(a->n_batches, b->n_batches);
	assert_int_equal(a->over_budget, b->over_budget);
	assert_int_equal(a->file_error, b->file_error);
	assert_string_equal(a->error, b->error);
	assert_int_equal(a->n_first_rejects, b->n_first_rejects);
	for (size_t i = 0; i < a->n_first_rejects; i++) {
		assert_int_equal(a->first_rejects[i].line, b->first_rejects[i].line);
		assert_string_equal(a->first_rejects[i].message, b->first_rejects[i].message);
	}
	assert_int_equal(a->n_columns_sent, b->n_columns_sent);
	for (size_t i = 0; i < a->n_columns_sent; i++)
		assert_string_equal(a->columns_sent[i], b->columns_sent[i]);
	assert_int_equal(a->n_columns_ignored, b->n_columns_ignored);
	if (a->first_rows_json || b->first_rows_json)
		assert_string_equal(a->first_rows_json, b->first_rows_json);
}

/* The spooled way against the two passes, on the file at path: the same
 * summary and reject report, and every body the same bytes, in the same
 * order with the same row counts. Returns the number of batches. */
static size_t spool_equals_two_passes(const char *path, const char *display)
{
	struct pipe_summary two, one;
	assert_int_equal(pipeline_validate(&job, path, display, rej_path, &two), 0);
	assert_int_equal(pipeline_validate_spool(&job, path, display, rej2_path, spool_path, &one), 0);
	same_summary(&two, &one);
	size_t l1 = 0, l2 = 0;
	char *r1 = slurp_all(rej_path, &l1), *r2 = slurp_all(rej2_path, &l2);
	assert_true((r1 == NULL) == (r2 == NULL));
	if (r1) {
		assert_int_equal(l1, l2);
		assert_memory_equal(r1, r2, l1);
	}
	free(r1);
	free(r2);
	size_t n = 0;
	if (!two.file_error && !two.over_budget) {
		struct pipe_batcher *a, *b;
		struct strbuf ba = {0}, bb = {0};
		size_t ra, rb, ia, ib;
		int rca, rcb;
		struct stat st;
		assert_int_equal(stat(spool_path, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0600);
		assert_int_equal(pipeline_batcher_open(&job, path, display, &a), 0);
		assert_int_equal(pipeline_spool_open(spool_path, one.n_batches, &b), 0);
		for (;;) {
			rca = pipeline_batcher_next(a, &ba, &ra, &ia);
			rcb = pipeline_batcher_next(b, &bb, &rb, &ib);
			assert_int_equal(rca, rcb);
			if (rca != 1)
				break;
			assert_int_equal(ia, n);
			assert_int_equal(ib, n);
			assert_int_equal(ra, rb);
			if (ba.len != bb.len || memcmp(ba.data, bb.data, ba.len) != 0)
				fail_msg("batch %zu differs:\npass 2: %s\nspool:  %s", n, ba.data, bb.data);
			assert_int_equal(bb.data[bb.len], '\0');
			json_error_t jerr;
			json_t *j = json_loadb(bb.data, bb.len, 0, &jerr);
			if (!j)
				fail_msg("spooled batch %zu is not JSON: %s", n, jerr.text);
			json_decref(j);
			n++;
		}
		assert_int_equal(rca, 0);
		assert_int_equal(n, one.n_batches);
		/* at the end it stays at the end */
		assert_int_equal(pipeline_batcher_next(b, &bb, &rb, &ib), 0);
		pipeline_batcher_free(a);
		pipeline_batcher_free(b);
		strbuf_free(&ba);
		strbuf_free(&bb);
	} else {
		assert_int_equal(access(spool_path, F_OK), -1); /* no spool of a file not posted */
	}
	pipe_summary_free(&two);
	pipe_summary_free(&one);
	return n;
}

static size_t spool_equals(const char *csv)
{
	write_csv(csv);
	return spool_equals_two_passes(csv_path, "in.csv");
}

static void expect_json(json_t *got, const char *want)
{
	json_error_t jerr;
	json_t *w = json_loads(want, 0, &jerr);
	if (!w)
		fail_msg("bad expectation: %s", jerr.text);
	if (!json_equal(got, w)) {
		char *g = json_dumps(got, JSON_COMPACT);
		fail_msg("got:\n%s\nwant:\n%s", g, want);
	}
	json_decref(w);
}

static void test_clean_file_round_trip(void **state)
{
	validate("user_id,email,email_subscription,mobile_number,sms_subscription,language,timezone,"
		 "first_name,Internal ref,lifetime_value,last_deposit,vip,preferences,visits\r\n"
		 "u1,sam@example.com,yes,0850123456,1,en-IE,Europe/Dublin,\"Sam \"\"S\"\"\",x,12.5,"
		 "2024-02-29,true,\"[1,2]\",7\r\n"
		 "u2,,,,,,,\"Se\xc3\xa1n\nO'Brien\",y,,,0,,\r\n"
		 "u3,b@example.ie,0,+44 7400 123456,No,ga,UTC,\"tab\there\",z,-1e3,2023-01-01 10:00:00Z,"
		 "FALSE,\"{\"\"a\"\":1}\",0\r\n");
	assert_false(sum.file_error);
	assert_int_equal(sum.rows_read, 3);
	assert_int_equal(sum.rows_valid, 3);
	assert_int_equal(sum.rows_rejected, 0);
	assert_int_equal(sum.n_batches, 1);
	assert_int_equal(sum.n_columns_sent, 13);
	assert_string_equal(sum.columns_sent[0], "user_id");
	assert_int_equal(sum.n_columns_ignored, 1);
	assert_string_equal(sum.columns_ignored[0], "Internal ref");
	assert_false(sum.over_budget);
	assert_null(slurp(rej_path)); /* no reject report for a clean file */
	json_t *all = batches();
	expect_json(json_array_get(all, 0),
		    "{\"columns\":[\"user_id\",\"email\",\"email_subscription\",\"mobile_number\","
		    "\"sms_subscription\",\"language\",\"timezone\",\"first_name\",\"lifetime_value\","
		    "\"last_deposit\",\"vip\",\"preferences\",\"visits\"],\"rows\":["
		    "[\"u1\",\"sam@example.com\",1,\"353850123456\",1,\"en-IE\",\"Europe/Dublin\","
		    "\"Sam \\\"S\\\"\",12.5,\"2024-02-29\",true,\"[1,2]\",7],"
		    "[\"u2\",null,null,null,null,null,null,\"Se\xc3\xa1n\\nO'Brien\",null,null,false,null,null],"
		    "[\"u3\",\"b@example.ie\",0,\"447400123456\",0,\"ga\",\"UTC\",\"tab\\there\",-1e3,"
		    "\"2023-01-01 10:00:00Z\",false,\"{\\\"a\\\":1}\",0]]}");
	json_decref(all);
	/* the dry run's first rows */
	json_error_t jerr;
	json_t *first = json_loads(sum.first_rows_json, 0, &jerr);
	assert_non_null(first);
	assert_int_equal(json_array_size(first), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(first, 0), "mobile_number")),
			    "353850123456");
	json_decref(first);
}

/* One file with every kind of row defect. */
static const char *defects =
	"user_id,email,email_subscription,mobile_number,sms_subscription,first_name,vip\n" /* 1 */
	"ok1,a@example.com,1,,,A,1\n"                                                     /* 2 */
	",a@example.com,1,,,A,1\n"                                                        /* 3 */
	"u4,sam at example.com,1,,,A,1\n"                                                 /* 4 */
	"u5,a@example.com,,,,A,1\n"                                                       /* 5 */
	"u6,,,0850 12,1,A,1\n"                                                            /* 6 */
	"u7,,,0850123456,,A,1\n"                                                          /* 7 */
	"u8,,,,,A,maybe\n"                                                                /* 8 */
	"u9,,,,\n"                                                                        /* 9 */
	"u10,,,,,\"multi\nline\",0\n"                                                     /* 10-11 */
	"u12,,,,,bad\"quote,0\n"                                                          /* 12 */
	"u13,,,,,\xff\xfe,0\n"                                                            /* 13 */
	"=cmd,,,,,x,1\n"                                                                  /* 14 */
	"ok15,,,,,\"x\",1\n";                                                             /* 15 */

static void test_defects_reject_report(void **state)
{
	validate(defects);
	assert_false(sum.file_error);
	assert_int_equal(sum.rows_read, 13);
	assert_int_equal(sum.rows_valid, 4);
	assert_int_equal(sum.rows_rejected, 9);
	assert_int_equal(sum.n_first_rejects, 9);
	const struct {
		uint64_t line;
		const char *column, *rule, *message;
	} want[] = {
		{3, "user_id", "required", "user_id is empty"},
		{4, "email", "email", "email 'sam at example.com' is not a valid address"},
		{5, "email_subscription", "required", "email is set but email_subscription is empty"},
		{6, "mobile_number", "mobile_number", "mobile_number '0850 12' is not a valid number"},
		{7, "sms_subscription", "required",
		 "mobile_number is set but sms_subscription is empty"},
		{8, "vip", "boolean", "vip 'maybe' is not 1/0, true/false or yes/no"},
		{9, "", "fields", "5 fields, header has 7"},
		{12, "first_name", "csv", "quote inside an unquoted field in column 'first_name'"},
		{13, "first_name", "utf8", "invalid UTF-8 in column 'first_name'"},
	};
	for (size_t i = 0; i < 9; i++) {
		const struct pipe_reject *r = &sum.first_rejects[i];
		if (r->line != want[i].line || strcmp(r->column, want[i].column) ||
		    strcmp(r->rule, want[i].rule) || strcmp(r->message, want[i].message))
			fail_msg("reject %zu: got line %llu [%s] [%s] [%s]", i,
				 (unsigned long long)r->line, r->column, r->rule, r->message);
	}
	struct stat st;
	assert_int_equal(stat(rej_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	const char *report = slurp(rej_path);
	const char *expect =
		"line,column,rule,value,raw_row,formula_risk\n"
		"3,user_id,required,,\",a@example.com,1,,,A,1\",0\n"
		"4,email,email,sam at example.com,\"u4,sam at example.com,1,,,A,1\",0\n"
		"5,email_subscription,required,,\"u5,a@example.com,,,,A,1\",0\n"
		"6,mobile_number,mobile_number,0850 12,\"u6,,,0850 12,1,A,1\",0\n"
		"7,sms_subscription,required,,\"u7,,,0850123456,,A,1\",0\n"
		"8,vip,boolean,maybe,\"u8,,,,,A,maybe\",0\n"
		"9,,fields,,\"u9,,,,\",0\n"
		"12,first_name,csv,,\"u12,,,,,bad\"\"quote,0\",0\n"
		"13,first_name,utf8,\xff\xfe,\"u13,,,,,\xff\xfe,0\",0\n";
	if (strncmp(report, expect, strlen(expect)) != 0)
		fail_msg("report:\n%s\nexpected:\n%s", report, expect);
	json_t *all = batches();
	json_t *rows = json_object_get(json_array_get(all, 0), "rows");
	assert_int_equal(json_array_size(rows), 4);
	assert_string_equal(json_string_value(json_array_get(json_array_get(rows, 0), 0)), "ok1");
	assert_string_equal(json_string_value(json_array_get(json_array_get(rows, 1), 0)), "u10");
	assert_string_equal(json_string_value(json_array_get(json_array_get(rows, 1), 5)),
			    "multi\nline");
	assert_string_equal(json_string_value(json_array_get(json_array_get(rows, 2), 0)), "=cmd");
	assert_string_equal(json_string_value(json_array_get(json_array_get(rows, 3), 0)), "ok15");
	json_decref(all);
}

static void test_formula_risk_flag(void **state)
{
	validate("user_id,lifetime_value\nu1,=1+2\n@x,5\nu3,-\n");
	assert_int_equal(sum.rows_rejected, 2);
	const char *report = slurp(rej_path);
	assert_string_equal(report,
			    "line,column,rule,value,raw_row,formula_risk\n"
			    "2,lifetime_value,number,=1+2,\"u1,=1+2\",1\n"
			    "4,lifetime_value,number,-,\"u3,-\",1\n");
	assert_string_equal(sum.first_rejects[0].message, "lifetime_value '=1+2' is not a number");
}

static void test_error_past_the_header(void **state)
{
	validate("user_id,first_name\nu1,x,ab\"c\nu2,y\n");
	assert_int_equal(sum.rows_rejected, 1);
	assert_string_equal(sum.first_rejects[0].column, "column 3");
	assert_string_equal(sum.first_rejects[0].message,
			    "quote inside an unquoted field in column 'column 3'");
	assert_string_equal(slurp(rej_path), "line,column,rule,value,raw_row,formula_risk\n"
					     "2,column 3,csv,,\"u1,x,ab\"\"c\",0\n");
}

static void test_line_numbers_after_multiline_rows(void **state)
{
	validate("user_id,first_name\n\"u1\",\"a\nb\nc\"\n\nu2,\"x\r\ny\"\r\nu3,too,many\n");
	assert_int_equal(sum.rows_rejected, 1);
	assert_int_equal(sum.first_rejects[0].line, 8);
	assert_string_equal(sum.first_rejects[0].message, "3 fields, header has 2");
}

static void test_unterminated_quote_is_file_error(void **state)
{
	validate("user_id,first_name\nu1,\"open\nu2,x\nu3,y\n");
	assert_true(sum.file_error);
	assert_string_equal(sum.error,
			    "line 2: quoted field in column 'first_name' is not closed before the end of "
			    "the file");
	/* on the last line only, it is a row error */
	validate("user_id,first_name\nu1,x\nu2,\"open");
	assert_false(sum.file_error);
	assert_int_equal(sum.rows_rejected, 1);
	assert_string_equal(sum.first_rejects[0].message,
			    "quoted field in column 'first_name' is not closed");
}

static void test_file_errors(void **state)
{
	validate("");
	assert_true(sum.file_error);
	assert_string_equal(sum.error, "the file is empty (no header row)");
	validate("\n\n");
	assert_string_equal(sum.error, "the file is empty (no header row)");
	validate("user_id,email, ,x\nu1,,,\n");
	assert_string_equal(sum.error, "column 3 has an empty header");
	validate("user_id,email,first_name,vip,email\n");
	assert_string_equal(sum.error, "column 5 'email' duplicates column 2");
	validate("id,first_name\nu1,x\n");
	assert_string_equal(sum.error, "no column maps to user_id (header: id,first_name)");
	validate("user_id,email\nu1,a@b.ie\n");
	assert_string_equal(sum.error,
			    "column 2 'email' maps to email but no column maps to email_subscription");
	assert_int_equal(sum.rows_read, 0); /* found before any row */
	assert_null(slurp(rej_path));
	validate("user_id,\"bad\"x\n");
	assert_true(sum.file_error);
	assert_string_equal(sum.error,
			    "line 1: the header row is malformed (unexpected character after a closing quote)");
	/* header only: no error, nothing to post */
	validate("user_id,first_name\n");
	assert_false(sum.file_error);
	assert_int_equal(sum.rows_read, 0);
	assert_int_equal(sum.n_batches, 0);
	assert_null(sum.first_rows_json);
	/* too many columns */
	job.csv.max_columns = 2;
	validate("user_id,a,b\n");
	assert_string_equal(sum.error, "the header has 3 columns, more than csv.max_columns (2)");
	/* missing file: an I/O error */
	pipe_summary_free(&sum);
	assert_int_equal(pipeline_validate(&job, "/nonexistent/f.csv", "f.csv", NULL, &sum), -ENOENT);
	assert_false(sum.file_error);
	assert_non_null(strstr(sum.error, "cannot open"));
}

static void test_empty_cell_policies(void **state)
{
	const char *csv = "user_id,first_name,vip,email,email_subscription\nu1,,,,\n";
	validate(csv);
	json_t *all = batches();
	expect_json(json_object_get(json_array_get(all, 0), "rows"), "[[\"u1\",null,null,null,null]]");
	json_decref(all);
	job.validation.empty_cells = EMPTY_STRING;
	validate(csv);
	all = batches();
	expect_json(json_object_get(json_array_get(all, 0), "rows"), "[[\"u1\",\"\",\"\",\"\",\"\"]]");
	json_decref(all);
	job.validation.empty_cells = EMPTY_REJECT;
	validate(csv);
	assert_int_equal(sum.rows_rejected, 1);
	assert_string_equal(sum.first_rejects[0].message, "first_name is empty");
	assert_string_equal(sum.first_rejects[0].rule, "empty");
	assert_int_equal(sum.n_batches, 0);
}

static void test_duplicates(void **state)
{
	validate("user_id,first_name\na,1\nb,2\na,3\nc,4\nc,5\n");
	assert_int_equal(sum.rows_valid, 5);
	assert_int_equal(sum.duplicates, 2);
	assert_int_equal(sum.n_batches, 3);
	json_t *all = batches();
	expect_json(all, "[{\"columns\":[\"user_id\",\"first_name\"],\"rows\":[[\"a\",\"1\"],[\"b\",\"2\"]]},"
			 "{\"columns\":[\"user_id\",\"first_name\"],\"rows\":[[\"a\",\"3\"],[\"c\",\"4\"]]},"
			 "{\"columns\":[\"user_id\",\"first_name\"],\"rows\":[[\"c\",\"5\"]]}]");
	json_decref(all);
	/* user_id is trimmed before comparing */
	validate("user_id,first_name\na,1\n\" a \",2\n");
	assert_int_equal(sum.duplicates, 1);
	/* outside the batch window a repeat is not counted (bounded memory) */
	job.batch.size = 2;
	validate("user_id,first_name\na,1\nb,2\na,3\n");
	assert_int_equal(sum.duplicates, 0);
	assert_int_equal(sum.n_batches, 2);
}

static void test_error_budget(void **state)
{
	const char *csv = "user_id,vip\nu1,1\nu2,x\nu3,y\nu4,1\n";
	validate(csv);
	assert_int_equal(sum.rows_rejected, 2);
	assert_false(sum.over_budget); /* neither set: unlimited, the valid rows go */
	job.validation.max_invalid_rows = 2;
	validate(csv);
	assert_false(sum.over_budget);
	job.validation.max_invalid_rows = 1;
	validate(csv);
	assert_true(sum.over_budget);
	job.validation.max_invalid_rows = -1;
	job.validation.max_invalid_percent = 50;
	validate(csv);
	assert_false(sum.over_budget);
	job.validation.max_invalid_percent = 49.9;
	validate(csv);
	assert_true(sum.over_budget);
	job.validation.max_invalid_percent = 0;
	validate("user_id,vip\nu1,1\n");
	assert_false(sum.over_budget);
}

static void test_batch_split_by_size_and_bytes(void **state)
{
	struct strbuf csv = {0};
	strbuf_puts(&csv, "user_id,first_name\n");
	for (int i = 0; i < 25; i++)
		strbuf_printf(&csv, "user%02d,name%02d\n", i, i);
	job.batch.size = 10;
	validate(csv.data);
	assert_int_equal(sum.n_batches, 3);
	json_t *all = batches();
	assert_int_equal(json_array_size(json_object_get(json_array_get(all, 2), "rows")), 5);
	json_decref(all);
	/* bytes: head 44, each row 19 (["user00","name00"]) + ',' */
	job.batch.size = 10000;
	job.batch.max_bytes = 44 + 19 * 4 + 3 + 2;
	validate(csv.data);
	assert_int_equal(sum.n_batches, 7);
	all = batches();
	for (size_t i = 0; i < json_array_size(all); i++) {
		char *s = json_dumps(json_array_get(all, i), JSON_COMPACT);
		assert_true(strlen(s) <= job.batch.max_bytes);
		free(s);
	}
	json_t *first = json_object_get(json_array_get(all, 0), "rows");
	assert_int_equal(json_array_size(first), 4);
	json_decref(all);
	/* a row alone over max_bytes is a row error */
	job.batch.max_bytes = 60;
	validate("user_id,first_name\nu1,x\nu2,a-much-longer-value-than-fits\n");
	assert_int_equal(sum.rows_rejected, 1);
	assert_string_equal(sum.first_rejects[0].message,
			    "row is 38 bytes as JSON, more than batch.max_bytes (60)");
	strbuf_free(&csv);
}

static void test_delimiter_and_gzip(void **state)
{
	job.csv.delimiter = ';';
	char gz_path[320];
	snprintf(gz_path, sizeof(gz_path), "%s/in.csv.gz", tmpdir);
	gzFile gz = gzopen(gz_path, "wb");
	gzputs(gz, "\xef\xbb\xbfuser_id;first_name\nu1;\"a;b\"\nu2;c\n");
	gzclose(gz);
	pipe_summary_free(&sum);
	assert_int_equal(pipeline_validate(&job, gz_path, "in.csv.gz", NULL, &sum), 0);
	assert_int_equal(sum.rows_valid, 2);
	assert_int_equal(sum.bytes, 36);
	struct pipe_batcher *b;
	struct strbuf body = {0};
	size_t rows, index;
	assert_int_equal(pipeline_batcher_open(&job, gz_path, "in.csv.gz", &b), 0);
	assert_int_equal(pipeline_batcher_next(b, &body, &rows, &index), 1);
	assert_string_equal(body.data,
			    "{\"columns\":[\"user_id\",\"first_name\"],\"rows\":[[\"u1\",\"a;b\"],[\"u2\",\"c\"]]}");
	assert_int_equal(pipeline_batcher_next(b, &body, &rows, &index), 0);
	pipeline_batcher_free(b);
	strbuf_free(&body);
}

static void test_limits_are_row_errors(void **state)
{
	job.csv.max_field_bytes = 10;
	validate("user_id,first_name\nu1,12345678901\nu2,1234567890\n");
	assert_false(sum.file_error);
	assert_int_equal(sum.rows_rejected, 1);
	assert_string_equal(sum.first_rejects[0].message,
			    "column 'first_name' is longer than 10 bytes (csv.max_field_bytes)");
	/* the header is bound too */
	job.csv.max_field_bytes = 5;
	validate("user_id,first_name\nu1,x\n");
	assert_true(sum.file_error);
	assert_string_equal(sum.error, "line 1: the header row is malformed (too long)");
	job.csv.max_field_bytes = 0;
	job.csv.max_line_bytes = 24;
	validate("user_id,first_name\nu1,123456789012345678901234\nu2,x\n");
	assert_int_equal(sum.rows_rejected, 1);
	assert_int_equal(sum.rows_valid, 1);
	assert_string_equal(sum.first_rejects[0].message,
			    "row is longer than 24 bytes (csv.max_line_bytes)");
	assert_string_equal(sum.first_rejects[0].rule, "limit");
}

static void test_nul_byte(void **state)
{
	FILE *f = fopen(csv_path, "wb");
	fwrite("user_id,first_name\nu1,a\0b\nu2,ok\n", 1, 32, f);
	fclose(f);
	pipe_summary_free(&sum);
	assert_int_equal(pipeline_validate(&job, csv_path, "in.csv", NULL, &sum), 0);
	assert_int_equal(sum.rows_rejected, 1);
	assert_string_equal(sum.first_rejects[0].message, "NUL byte in column 'first_name'");
	assert_string_equal(sum.first_rejects[0].rule, "nul");
}

static void test_deterministic(void **state)
{
	struct strbuf csv = {0};
	strbuf_puts(&csv, "user_id,first_name,vip\n");
	for (int i = 0; i < 300; i++)
		strbuf_printf(&csv, "u%d,\"n,%d\",%s\n", i % 97, i, i % 13 ? "1" : "bad");
	job.batch.size = 50;
	validate(csv.data);
	json_t *a = batches(), *b = batches();
	assert_true(json_equal(a, b));
	size_t total = 0;
	for (size_t i = 0; i < json_array_size(a); i++)
		total += json_array_size(json_object_get(json_array_get(a, i), "rows"));
	assert_int_equal(total, sum.rows_valid);
	json_decref(a);
	json_decref(b);
	strbuf_free(&csv);
}

/* ---- the spooled pass ------------------------------------------------------ */

static const char *clean_file =
	"user_id,email,email_subscription,mobile_number,sms_subscription,language,timezone,"
	"first_name,Internal ref,lifetime_value,last_deposit,vip,preferences,visits\r\n"
	"u1,sam@example.com,yes,0850123456,1,en-IE,Europe/Dublin,\"Sam \"\"S\"\"\",x,12.5,"
	"2024-02-29,true,\"[1,2]\",7\r\n"
	"u2,,,,,,,\"Se\xc3\xa1n\nO'Brien\",y,,,0,,\r\n"
	"u3,b@example.ie,0,+44 7400 123456,No,ga,UTC,\"tab\there\",z,-1e3,2023-01-01 10:00:00Z,"
	"FALSE,\"{\"\"a\"\":1}\",0\r\n";

static void test_spool_same_bodies(void **state)
{
	assert_int_equal(spool_equals(clean_file), 1);
	assert_int_equal(spool_equals(defects), 1);
	/* quotes, blanks around quoted fields, a quote after a space, CR line ends */
	assert_int_equal(spool_equals("user_id,first_name\n \"u1\" , \"a,b\"  \n\"u2\",\"\"\"\"\n"
				      "u3,\"x\"y\nu4, \"q\" \"\nu5,\"\\\\back\"\r\nu6,\"multi\r\nline\"\r"
				      "u7,\"cr\rin\"\n\"u8\"\"x\",\"\"\n"),
			 1);
	/* UTF-8 (valid and not) in mapped and unmapped columns, NUL, controls */
	assert_int_equal(spool_equals("user_id,first_name,notes\nu1,Se\xc3\xa1n,\xff\nu2,\xc3(,x\n"
				      "u3,ok,\xe2\x82\xac\nu4,\x01\x1f,\\\nu5,Zo\xc3\xab,\"\xf0\x9f\x98\x80\"\n"),
			 1);
	FILE *f = fopen(csv_path, "wb");
	fwrite("user_id,first_name\nu1,a\0b\nu2,ok\nu3,\"x\0\"\n", 1, 41, f);
	fclose(f);
	assert_int_equal(spool_equals_two_passes(csv_path, "in.csv"), 1);
	/* header only, a BOM, blank lines, no newline at the end */
	assert_int_equal(spool_equals("user_id,first_name\n"), 0);
	assert_int_equal(spool_equals("\xef\xbb\xbfuser_id,first_name\n\n \nu1,x\n\nu2,\"y\""), 1);
	/* an unterminated quote on the last line is a row error */
	assert_int_equal(spool_equals("user_id,first_name\nu1,x\nu2,\"open"), 1);
}

static void test_spool_duplicates_and_splits(void **state)
{
	/* the duplicate user_id closes a batch early, in the spool too */
	assert_int_equal(spool_equals("user_id,first_name\na,1\nb,2\na,3\nc,4\nc,5\n"), 3);
	assert_int_equal(spool_equals("user_id,first_name\na,1\n\" a \",2\n"), 2);
	struct strbuf csv = {0};
	strbuf_puts(&csv, "user_id,first_name,vip\n");
	for (int i = 0; i < 300; i++)
		strbuf_printf(&csv, "u%d,\"n,%d\",%s\n", i % 97, i, i % 13 ? "1" : "bad");
	job.batch.size = 50;
	assert_int_equal(spool_equals(csv.data), 6);
	job.batch.size = 10;
	assert_int_equal(spool_equals(csv.data), 28);
	/* max_bytes: head 44, each row 19 + ',' */
	strbuf_reset(&csv);
	strbuf_puts(&csv, "user_id,first_name\n");
	for (int i = 0; i < 25; i++)
		strbuf_printf(&csv, "user%02d,name%02d\n", i, i);
	job.batch.size = 10000;
	job.batch.max_bytes = 44 + 19 * 4 + 3 + 2;
	assert_int_equal(spool_equals(csv.data), 7);
	/* a row alone over max_bytes is a row error in both */
	job.batch.max_bytes = 60;
	assert_int_equal(spool_equals("user_id,first_name\nu1,x\nu2,a-much-longer-value-than-fits\n"), 1);
	strbuf_free(&csv);
}

static void test_spool_empty_cells_delimiter_gzip(void **state)
{
	const char *csv = "user_id,first_name,vip,email,email_subscription\nu1,,,,\nu2,x,1,a@b.ie,1\n";
	job.validation.empty_cells = EMPTY_NULL;
	assert_int_equal(spool_equals(csv), 1);
	job.validation.empty_cells = EMPTY_STRING;
	assert_int_equal(spool_equals(csv), 1);
	job.validation.empty_cells = EMPTY_REJECT;
	assert_int_equal(spool_equals(csv), 1);
	job.validation.empty_cells = EMPTY_NULL;
	job.csv.delimiter = ';';
	char gz_path[320];
	snprintf(gz_path, sizeof(gz_path), "%s/in.csv.gz", tmpdir);
	gzFile gz = gzopen(gz_path, "wb");
	gzputs(gz, "\xef\xbb\xbfuser_id;first_name\nu1;\"a;b\"\nu2;c\nu3;\"d\ne\"\n");
	gzclose(gz);
	assert_int_equal(spool_equals_two_passes(gz_path, "in.csv.gz"), 1);
	job.csv.delimiter = '\t';
	assert_int_equal(spool_equals("user_id\tfirst_name\nu1\t\"a\tb\"\nu2\t c \n"), 1);
}

static void test_spool_not_left_for_files_not_posted(void **state)
{
	/* a stale spool is replaced; a file error leaves none */
	write_csv("junk");
	FILE *f = fopen(spool_path, "wb");
	fputs("stale", f);
	fclose(f);
	pipe_summary_free(&sum);
	write_csv("id,first_name\nu1,x\n");
	assert_int_equal(pipeline_validate_spool(&job, csv_path, "in.csv", NULL, spool_path, &sum), 0);
	assert_true(sum.file_error);
	assert_int_equal(access(spool_path, F_OK), -1);
	/* over budget by rows (stops spooling early) and by percent */
	const char *csv = "user_id,vip\nu1,1\nu2,x\nu3,y\nu4,1\n";
	job.validation.max_invalid_rows = 1;
	assert_int_equal(spool_equals(csv), 0);
	job.validation.max_invalid_rows = -1;
	job.validation.max_invalid_percent = 49.9;
	assert_int_equal(spool_equals(csv), 0);
	job.validation.max_invalid_percent = 50;
	assert_int_equal(spool_equals(csv), 1);
	/* an I/O error on the input: no spool either */
	pipe_summary_free(&sum);
	assert_int_equal(pipeline_validate_spool(&job, "/nonexistent/f.csv", "f.csv", NULL, spool_path,
						 &sum),
			 -ENOENT);
	assert_int_equal(access(spool_path, F_OK), -1);
	/* the spool cannot be created: an error that says so */
	pipe_summary_free(&sum);
	write_csv("user_id\nu1\n");
	assert_int_equal(pipeline_validate_spool(&job, csv_path, "in.csv", NULL, "/nonexistent/x.spool",
						 &sum),
			 -ENOENT);
	assert_string_equal(sum.error,
			    "cannot create the spool /nonexistent/x.spool: No such file or directory");
	/* no spool_path: exactly pipeline_validate */
	pipe_summary_free(&sum);
	assert_int_equal(pipeline_validate_spool(&job, csv_path, "in.csv", NULL, NULL, &sum), 0);
	assert_int_equal(sum.rows_valid, 1);
	assert_int_equal(access(spool_path, F_OK), -1);
}

/* Writes the spool of a 3-batch file and returns its bytes. */
static char *spool_of_three(size_t *len)
{
	job.batch.size = 2;
	write_csv("user_id,first_name\nu1,a\nu2,b\nu3,c\nu4,d\nu5,e\n");
	pipe_summary_free(&sum);
	assert_int_equal(pipeline_validate_spool(&job, csv_path, "in.csv", NULL, spool_path, &sum), 0);
	assert_int_equal(sum.n_batches, 3);
	char *data = slurp_all(spool_path, len);
	assert_non_null(data);
	assert_memory_equal(data, "XPSPOOL1", 8);
	return data;
}

static void put_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

/* pipeline_batcher_next() over the spool until it ends or fails. */
static int drain_spool(size_t expected, size_t *good)
{
	struct pipe_batcher *b;
	struct strbuf body = {0};
	size_t rows, index;
	int rc = pipeline_spool_open(spool_path, expected, &b);
	*good = 0;
	if (rc < 0)
		return rc;
	while ((rc = pipeline_batcher_next(b, &body, &rows, &index)) == 1)
		(*good)++;
	pipeline_batcher_free(b);
	strbuf_free(&body);
	return rc;
}

static void test_spool_truncated_or_damaged(void **state)
{
	size_t len, good;
	char *data = spool_of_three(&len);
	assert_int_equal(drain_spool(3, &good), 0);
	assert_int_equal(good, 3);
	/* the batch count is the caller's check too */
	assert_int_equal(drain_spool(2, &good), -EBADMSG);
	assert_int_equal(drain_spool(4, &good), -EBADMSG);
	/* cut anywhere: refused at open, before any batch */
	for (size_t cut = 0; cut < len; cut++) {
		put_file(spool_path, data, cut);
		assert_int_equal(drain_spool(3, &good), -EBADMSG);
		assert_int_equal(good, 0);
	}
	/* one byte changed anywhere: refused, and no damaged body is returned */
	for (size_t i = 0; i < len; i++) {
		data[i] ^= 0x20;
		put_file(spool_path, data, len);
		int rc = drain_spool(3, &good);
		if (rc != -EBADMSG)
			fail_msg("byte %zu changed: rc %d after %zu batches", i, rc, good);
		data[i] ^= 0x20;
	}
	/* a longer file (trailer not at the end) */
	char *longer = malloc(len + 1);
	memcpy(longer, data, len);
	longer[len] = '\n';
	put_file(spool_path, longer, len + 1);
	assert_int_equal(drain_spool(3, &good), -EBADMSG);
	free(longer);
	free(data);
	unlink(spool_path);
	struct pipe_batcher *b = (struct pipe_batcher *)&good; /* must be reset */
	assert_int_equal(pipeline_spool_open(spool_path, 3, &b), -ENOENT);
	assert_null(b);
	pipeline_batcher_free(NULL);
}

static void test_spool_empty_file(void **state)
{
	size_t good;
	write_csv("user_id,first_name\n");
	pipe_summary_free(&sum);
	assert_int_equal(pipeline_validate_spool(&job, csv_path, "in.csv", NULL, spool_path, &sum), 0);
	assert_int_equal(sum.n_batches, 0);
	assert_int_equal(drain_spool(0, &good), 0);
	assert_int_equal(good, 0);
}

static void test_single(void **state)
{
	struct strbuf body = {0};
	char err[300];
	const char *attrs1[] = {"email", "user_id", "email_subscription", "mobile_number",
				"sms_subscription", "vip"};
	const char *vals1[] = {"sam@example.com", "fe56bc676be78", "yes", "07400123456", "1", "no"};
	assert_int_equal(pipeline_single(&project, 44, attrs1, vals1, 6, &body, err, sizeof(err)), 0);
	assert_string_equal(body.data,
			    "{\"columns\":[\"user_id\",\"email\",\"email_subscription\",\"mobile_number\","
			    "\"sms_subscription\",\"vip\"],\"rows\":[[\"fe56bc676be78\",\"sam@example.com\",1,"
			    "\"447400123456\",1,false]]}");
	/* project default country code */
	const char *attrs2[] = {"user_id", "mobile_number", "sms_subscription"};
	const char *vals2[] = {"u1", "0850 12", "1"};
	assert_int_equal(pipeline_single(&project, 0, attrs2, vals2, 3, &body, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "mobile_number '0850 12' is not a valid number");
	const char *attrs3[] = {"user_id", "nickname"};
	const char *vals3[] = {"u1", "x"};
	assert_int_equal(pipeline_single(&project, 0, attrs3, vals3, 2, &body, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "'nickname' is not an attribute of project 'main'");
	const char *attrs4[] = {"first_name"};
	const char *vals4[] = {"Sam"};
	assert_int_equal(pipeline_single(&project, 0, attrs4, vals4, 1, &body, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "user_id is required");
	const char *attrs5[] = {"user_id", "email"};
	const char *vals5[] = {"u1", "a@example.com"};
	assert_int_equal(pipeline_single(&project, 0, attrs5, vals5, 2, &body, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "email is set but email_subscription is empty");
	const char *vals6[] = {"", "a@example.com"};
	assert_int_equal(pipeline_single(&project, 0, attrs5, vals6, 2, &body, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "user_id is empty");
	strbuf_free(&body);
}

static int group_setup(void **state)
{
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(csv_path, sizeof(csv_path), "%s/in.csv", tmpdir);
	snprintf(rej_path, sizeof(rej_path), "%s/rejects.csv", tmpdir);
	snprintf(rej2_path, sizeof(rej2_path), "%s/rejects2.csv", tmpdir);
	snprintf(spool_path, sizeof(spool_path), "%s/in.csv.spool", tmpdir);
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_clean_file_round_trip),
		T(test_defects_reject_report),
		T(test_formula_risk_flag),
		T(test_error_past_the_header),
		T(test_line_numbers_after_multiline_rows),
		T(test_unterminated_quote_is_file_error),
		T(test_file_errors),
		T(test_empty_cell_policies),
		T(test_duplicates),
		T(test_error_budget),
		T(test_batch_split_by_size_and_bytes),
		T(test_delimiter_and_gzip),
		T(test_limits_are_row_errors),
		T(test_nul_byte),
		T(test_deterministic),
		T(test_spool_same_bodies),
		T(test_spool_duplicates_and_splits),
		T(test_spool_empty_cells_delimiter_gzip),
		T(test_spool_not_left_for_files_not_posted),
		T(test_spool_truncated_or_damaged),
		T(test_spool_empty_file),
		T(test_single),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
