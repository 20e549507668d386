/* test_pipeline.c — both passes over real files: counts, the reject report,
 * file errors, empty-cell policies, duplicates, the error budget, batch
 * splitting, and every body round-tripped through jansson and compared
 * value by value. Also pipeline_single (create-profile). */
#include <errno.h>
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
static char csv_path[300], rej_path[300];

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
		T(test_single),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
