/* test_ledger.c — the per-job ledger: format, replay, torn tails,
 * corruption, out-of-order batches, forget, duplicates, scale. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "ledger.h"
#include "state.h"

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SHA_C "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define RUN "20261203T182000Z-3fa9c1"

struct fixture {
	char dir[64];
	char log[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_ledger.XXXXXX");
	if (!mkdtemp(f->dir) || state_init(f->dir) < 0)
		return -1;
	snprintf(f->log, sizeof(f->log), "%s/ledger/crm.log", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static struct ledger *open_ok(struct fixture *f, bool want_torn)
{
	struct ledger *l = NULL;
	bool torn = !want_torn;
	char err[512] = "";
	int r = ledger_open(f->dir, "crm", &l, &torn, err, sizeof(err));
	if (r != 0)
		fail_msg("ledger_open: %d %s", r, err);
	assert_int_equal(torn, want_torn);
	return l;
}

static off_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = '\0';
	fclose(fp);
	if (len)
		*len = (size_t)n;
	return buf;
}

static void append_raw(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

/* A record the way ledger.h specifies it, written independently of ledger.c. */
static int format_record(char *out, size_t size, const char *json)
{
	return snprintf(out, size, "%08lx %s\n", crc32(0L, (const unsigned char *)json, (uInt)strlen(json)), json);
}

static struct ledger_key key(const char *site, const char *path, uint64_t size, int64_t mtime, const char *sha)
{
	struct ledger_key k = { .site = site, .path = path, .size = size, .mtime = mtime, .sha256 = sha };
	return k;
}

/* Every event, then the same view after a reopen. */
static void check_roundtrip_view(struct ledger *l)
{
	assert_int_equal(ledger_count(l), 3);
	struct ledger_key a = key("partner-a", "/out/a.csv", 1000, 1764000000, SHA_A);
	const struct ledger_file *fa = ledger_get(l, &a);
	assert_non_null(fa);
	assert_ptr_equal(fa, ledger_at(l, 0));
	assert_string_equal(fa->site, "partner-a");
	assert_string_equal(fa->path, "/out/a.csv");
	assert_int_equal(fa->size, 1000);
	assert_int_equal(fa->mtime, 1764000000);
	assert_string_equal(fa->sha256, SHA_A);
	assert_int_equal(fa->state, LF_IMPORTED);
	assert_string_equal(fa->run_id, RUN);
	assert_int_equal(fa->n_batches, 2);
	assert_int_equal(fa->batch_size, 10000);
	assert_int_equal(fa->batches_accepted, 2);
	assert_int_equal(fa->rows_valid, 15000);
	assert_int_equal(fa->rows_rejected, 3);
	assert_true(fa->after_done);
	assert_null(fa->error);
	assert_true(fa->updated_ms > 1700000000000LL);

	struct ledger_key b = key("partner-a", "/out/b.csv", 5, -1, SHA_B);
	const struct ledger_file *fb = ledger_get(l, &b);
	assert_non_null(fb);
	assert_int_equal(fb->state, LF_FAILED);
	assert_string_equal(fb->error, "line 2: user_id is required");
	assert_false(fb->after_done);

	/* failed before it was fetched: no sha */
	struct ledger_key c = key("upload", "big.csv", 1ull << 40, 0, NULL);
	const struct ledger_file *fc = ledger_get(l, &c);
	assert_non_null(fc);
	assert_string_equal(fc->sha256, "");
	assert_int_equal(fc->state, LF_FAILED);
	assert_true(fc->after_done);
	assert_string_equal(ledger_fstate_name(fc->state), "failed");
}

static void test_roundtrip_every_event(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ok(f, false);
	assert_int_equal(ledger_count(l), 0);
	struct ledger_key a = key("partner-a", "/out/a.csv", 1000, 1764000000, SHA_A);
	struct ledger_key b = key("partner-a", "/out/b.csv", 5, -1, SHA_B);
	struct ledger_key c = key("upload", "big.csv", 1ull << 40, 0, NULL);

	assert_int_equal(ledger_seen(l, RUN, &a), 0);
	assert_int_equal(ledger_fetched(l, RUN, &a), 0);
	assert_int_equal(ledger_validated(l, RUN, &a, 15000, 3, 2, 10000), 0);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 0, 200, NULL), 0);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 1, 202, "task-77"), 0);
	assert_string_equal(ledger_task_id(ledger_get(l, &a), 1), "task-77");
	assert_null(ledger_task_id(ledger_get(l, &a), 0));
	assert_int_equal(ledger_imported(l, RUN, &a), 0);
	assert_int_equal(ledger_after_done(l, RUN, &a, "move"), 0);
	assert_int_equal(ledger_fetched(l, RUN, &b), 0);
	assert_int_equal(ledger_failed(l, RUN, &b, "line 2: user_id is required"), 0);
	assert_int_equal(ledger_failed(l, RUN, &c, "file larger than 1 GiB"), 0);
	assert_int_equal(ledger_after_done(l, RUN, &c, "move failed/"), 0);
	assert_string_equal(ledger_last_error(l), "");
	check_roundtrip_view(l);
	ledger_free(l);

	/* the format, as ledger.h specifies it */
	size_t len;
	char *text = slurp(f->log, &len);
	assert_non_null(strstr(text, "{\"ev\":\"batch\",\"t\":"));
	assert_non_null(strstr(text, "\"run\":\"" RUN "\",\"site\":\"partner-a\",\"path\":\"/out/a.csv\","
				     "\"size\":1000,\"mtime\":1764000000,\"sha256\":\"" SHA_A "\",\"index\":1,"
				     "\"http_status\":202,\"task_id\":\"task-77\"}\n"));
	assert_non_null(strstr(text, "\"rows_valid\":15000,\"rows_rejected\":3,\"n_batches\":2,\"batch_size\":10000}"));
	assert_non_null(strstr(text, "\"error\":\"line 2: user_id is required\"}"));
	assert_non_null(strstr(text, "\"action\":\"move\"}"));
	int lines = 0;
	for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1, lines++) {
		*nl = '\0';
		assert_int_equal(line[8], ' ');
		char crc[9];
		snprintf(crc, sizeof(crc), "%08lx",
			 crc32(0L, (const unsigned char *)line + 9, (uInt)strlen(line + 9)));
		assert_memory_equal(line, crc, 8);
		assert_memory_equal(line + 9, "{\"ev\":\"", 7);
		json_error_t jerr;
		json_t *o = json_loads(line + 9, 0, &jerr);
		assert_non_null(o);
		assert_true(json_is_integer(json_object_get(o, "t")));
		json_decref(o);
	}
	assert_int_equal(lines, 11);
	free(text);
	struct stat st;
	assert_int_equal(stat(f->log, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	/* replay gives the same view */
	l = open_ok(f, false);
	check_roundtrip_view(l);
	/* imported: the task ids were confirmed and are let go */
	assert_null(ledger_task_id(ledger_get(l, &a), 1));
	ledger_free(l);
}

static void test_torn_partial_last_line(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ok(f, false);
	struct ledger_key a = key("s", "/a.csv", 10, 20, SHA_A);
	assert_int_equal(ledger_fetched(l, RUN, &a), 0);
	assert_int_equal(ledger_validated(l, RUN, &a, 10, 0, 1, 10), 0);
	ledger_free(l);
	off_t good = file_size(f->log);

	const char partial[] = "0badc0de {\"ev\":\"batch\",\"t\":1,\"si";
	append_raw(f->log, partial, sizeof(partial) - 1);
	bool torn = false;
	char err[512];
	assert_int_equal(ledger_open(f->dir, "crm", &l, &torn, err, sizeof(err)), 0);
	assert_true(torn);
	char want[512];
	snprintf(want, sizeof(want), "%s:3: dropped a torn last record (no end of line, %zu bytes)", f->log,
		 sizeof(partial) - 1);
	assert_string_equal(err, want);
	assert_int_equal(file_size(f->log), good);
	const struct ledger_file *fa = ledger_get(l, &a);
	assert_int_equal(fa->state, LF_VALIDATED);
	/* appends after that work, and the file is whole again */
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 0, 200, NULL), 0);
	assert_int_equal(ledger_imported(l, RUN, &a), 0);
	ledger_free(l);
	l = open_ok(f, false);
	assert_int_equal(ledger_get(l, &a)->state, LF_IMPORTED);
	ledger_free(l);
}

static void test_torn_bad_crc_last_line(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ok(f, false);
	struct ledger_key a = key("s", "/a.csv", 10, 20, SHA_A);
	assert_int_equal(ledger_fetched(l, RUN, &a), 0);
	assert_int_equal(ledger_validated(l, RUN, &a, 10, 0, 1, 10), 0);
	ledger_free(l);
	off_t good = file_size(f->log);

	/* a whole line whose checksum does not match (half-written sector) */
	const char json[] = "{\"ev\":\"batch\",\"t\":1,\"site\":\"s\",\"path\":\"/a.csv\",\"size\":10,\"mtime\":20,"
			    "\"sha256\":\"" SHA_A "\",\"index\":0}";
	char line[512];
	format_record(line, sizeof(line), json);
	line[20] ^= 0x01;
	append_raw(f->log, line, strlen(line));
	bool torn = false;
	char err[512];
	assert_int_equal(ledger_open(f->dir, "crm", &l, &torn, err, sizeof(err)), 0);
	assert_true(torn);
	assert_non_null(strstr(err, "crm.log:3: dropped a torn last record (checksum mismatch, "));
	assert_int_equal(file_size(f->log), good);
	assert_int_equal(ledger_get(l, &a)->batches_accepted, 0);
	ledger_free(l);

	/* zeroes after a crash on a file system that extended the size first */
	char zeros[300] = { 0 };
	append_raw(f->log, zeros, sizeof(zeros));
	l = open_ok(f, true);
	assert_int_equal(file_size(f->log), good);
	ledger_free(l);

	/* the same record with a right checksum is taken */
	format_record(line, sizeof(line), json);
	append_raw(f->log, line, strlen(line));
	l = open_ok(f, false);
	assert_int_equal(ledger_get(l, &a)->batches_accepted, 1);
	ledger_free(l);
}

static void test_corruption_in_the_middle(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ok(f, false);
	struct ledger_key a = key("s", "/a.csv", 10, 20, SHA_A);
	assert_int_equal(ledger_fetched(l, RUN, &a), 0);
	assert_int_equal(ledger_validated(l, RUN, &a, 10, 0, 1, 10), 0);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 0, 200, NULL), 0);
	assert_int_equal(ledger_imported(l, RUN, &a), 0);
	ledger_free(l);

	size_t len;
	char *text = slurp(f->log, &len);
	char *line2 = strchr(text, '\n') + 1;
	char *p = strstr(line2, "\"rows_valid\":10");
	assert_non_null(p);
	p[strlen("\"rows_valid\":1")] = '9';   /* 10 -> 19: still JSON, wrong CRC */
	FILE *fp = fopen(f->log, "wb");
	fwrite(text, 1, len, fp);
	fclose(fp);
	free(text);

	bool torn = false;
	char err[512];
	l = (struct ledger *)0x1;
	assert_int_equal(ledger_open(f->dir, "crm", &l, &torn, err, sizeof(err)), -EBADMSG);
	assert_null(l);
	char want[512];
	snprintf(want, sizeof(want),
		 "%s:2: corrupt ledger record (checksum mismatch); refusing to guess: move the file aside to start over",
		 f->log);
	assert_string_equal(err, want);
	/* nothing was "repaired" */
	assert_int_equal(file_size(f->log), (off_t)len);
}

static void test_invalid_records(void **state)
{
	struct fixture *f = *state;
	char line[1024];
	char err[512];
	bool torn;
	struct ledger *l;

	/* a batch for a file never fetched: right checksum, wrong story. Even as
	 * the last line it is not "torn" */
	format_record(line, sizeof(line),
		      "{\"ev\":\"batch\",\"t\":1,\"site\":\"s\",\"path\":\"/a.csv\",\"size\":1,\"mtime\":2,"
		      "\"sha256\":\"" SHA_A "\",\"index\":0}");
	int fd = open(f->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	close(fd);
	assert_int_equal(ledger_open(f->dir, "crm", &l, &torn, err, sizeof(err)), -EBADMSG);
	char want[512];
	snprintf(want, sizeof(want),
		 "%s:1: invalid ledger record (batch record for a file never fetched); refusing to guess: "
		 "move the file aside to start over",
		 f->log);
	assert_string_equal(err, want);

	format_record(line, sizeof(line), "{\"ev\":\"compacted\",\"t\":1,\"path\":\"/a\"}");
	fd = open(f->log, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	close(fd);
	assert_int_equal(ledger_open(f->dir, "crm", &l, &torn, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, ":1: invalid ledger record (unknown event \"compacted\")"));

	format_record(line, sizeof(line), "{\"ev\":\"fetched\",\"t\":1,\"site\":\"s\",\"path\":\"/a\",\"mtime\":2,"
					  "\"sha256\":\"" SHA_A "\"}");
	fd = open(f->log, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	close(fd);
	assert_int_equal(ledger_open(f->dir, "crm", &l, &torn, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, ":1: invalid ledger record (missing \"size\")"));

	/* an over-long line in the middle */
	fd = open(f->log, O_WRONLY | O_TRUNC);
	char *big = malloc(70000);
	memset(big, 'x', 70000);
	big[69999] = '\n';
	assert_int_equal(write(fd, big, 70000), 70000);
	format_record(line, sizeof(line), "{\"ev\":\"forget\",\"t\":1,\"path\":\"/a\"}");
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	close(fd);
	free(big);
	assert_int_equal(ledger_open(f->dir, "crm", &l, &torn, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, ":1: corrupt ledger record (line longer than 64 KiB)"));

	assert_int_equal(ledger_open(f->dir, "../etc", &l, &torn, err, sizeof(err)), -EINVAL);
}

static void test_batches_out_of_order(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ok(f, false);
	struct ledger_key a = key("s", "/a.csv", 10, 20, SHA_A);
	assert_int_equal(ledger_fetched(l, RUN, &a), 0);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 0, 200, NULL), -EINVAL);   /* not validated */
	assert_int_equal(ledger_validated(l, RUN, &a, 50, 0, 5, 10), 0);
	const struct ledger_file *fa = ledger_get(l, &a);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 2, 200, NULL), 0);
	assert_int_equal(fa->batches_accepted, 0);
	assert_int_equal(fa->state, LF_POSTING);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 0, 200, NULL), 0);
	assert_int_equal(fa->batches_accepted, 1);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 4, 202, "t4"), 0);
	assert_int_equal(fa->batches_accepted, 1);
	assert_true(ledger_batch_is_accepted(fa, 4));
	assert_false(ledger_batch_is_accepted(fa, 3));
	assert_int_equal(ledger_imported(l, RUN, &a), -EINVAL);
	assert_non_null(strstr(ledger_last_error(l), "imported record with 1 of 5 batches accepted"));
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 5, 200, NULL), -EINVAL);
	/* the layout cannot change once batches were accepted */
	assert_int_equal(ledger_validated(l, RUN, &a, 50, 0, 10, 5), -EINVAL);
	ledger_free(l);

	/* replay: same prefix; a crash here resumes at batch 1 */
	l = open_ok(f, false);
	fa = ledger_get(l, &a);
	assert_int_equal(fa->batches_accepted, 1);
	assert_true(ledger_batch_is_accepted(fa, 2));
	assert_string_equal(ledger_task_id(fa, 4), "t4");
	/* re-fetch and re-validate after a crash keep what was accepted */
	assert_int_equal(ledger_fetched(l, "20261203T190000Z-000001", &a), 0);
	assert_int_equal(ledger_validated(l, "20261203T190000Z-000001", &a, 50, 0, 5, 10), 0);
	assert_int_equal(fa->batches_accepted, 1);
	assert_int_equal(fa->state, LF_POSTING);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 1, 200, NULL), 0);
	assert_int_equal(fa->batches_accepted, 3);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 1, 200, NULL), 0);   /* a repeat is harmless */
	assert_int_equal(fa->batches_accepted, 3);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 3, 200, NULL), 0);
	assert_int_equal(fa->batches_accepted, 5);
	assert_int_equal(ledger_imported(l, RUN, &a), 0);
	ledger_free(l);
	l = open_ok(f, false);
	fa = ledger_get(l, &a);
	assert_int_equal(fa->batches_accepted, 5);
	assert_int_equal(fa->state, LF_IMPORTED);
	assert_string_equal(fa->run_id, RUN);
	ledger_free(l);
}

static void import_one(struct ledger *l, const struct ledger_key *k)
{
	assert_int_equal(ledger_fetched(l, RUN, k), 0);
	assert_int_equal(ledger_validated(l, RUN, k, 1, 0, 1, 10000), 0);
	assert_int_equal(ledger_batch_accepted(l, RUN, k, 0, 200, NULL), 0);
	assert_int_equal(ledger_imported(l, RUN, k), 0);
}

static void test_forget(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ok(f, false);
	struct ledger_key a1 = key("site-1", "/in/p.csv", 10, 20, SHA_A);
	struct ledger_key a2 = key("site-2", "/in/p.csv", 11, 21, SHA_B);
	struct ledger_key other = key("site-1", "/in/q.csv", 10, 20, SHA_C);
	import_one(l, &a1);
	import_one(l, &a2);
	import_one(l, &other);
	assert_int_equal(ledger_forget(l, "/in/none.csv", "ops"), -ENOENT);
	assert_int_equal(ledger_forget(l, "/in/p.csv", "ops"), 0);
	assert_int_equal(ledger_get(l, &a1)->state, LF_FORGOTTEN);
	assert_int_equal(ledger_get(l, &a2)->state, LF_FORGOTTEN);
	assert_int_equal(ledger_get(l, &other)->state, LF_IMPORTED);
	ledger_free(l);

	l = open_ok(f, false);
	const struct ledger_file *fa = ledger_get(l, &a1);
	assert_int_equal(fa->state, LF_FORGOTTEN);
	assert_int_equal(ledger_get(l, &a2)->state, LF_FORGOTTEN);
	assert_int_equal(ledger_get(l, &other)->state, LF_IMPORTED);
	/* a new fetch of it starts fresh */
	assert_int_equal(ledger_fetched(l, RUN, &a1), 0);
	assert_int_equal(fa->state, LF_FETCHED);
	assert_int_equal(fa->batches_accepted, 0);
	assert_int_equal(fa->n_batches, 0);
	assert_int_equal(fa->rows_valid, 0);
	assert_int_equal(ledger_count(l), 3);
	assert_int_equal(ledger_validated(l, RUN, &a1, 1, 0, 1, 10000), 0);
	assert_int_equal(ledger_batch_accepted(l, RUN, &a1, 0, 200, NULL), 0);
	assert_int_equal(ledger_imported(l, RUN, &a1), 0);
	ledger_free(l);
	l = open_ok(f, false);
	assert_int_equal(ledger_get(l, &a1)->state, LF_IMPORTED);
	assert_int_equal(ledger_get(l, &a2)->state, LF_FORGOTTEN);
	ledger_free(l);
}

static void test_find_sha_and_lookups(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ok(f, false);
	struct ledger_key a = key("s", "/in/a.csv", 10, 20, SHA_A);
	struct ledger_key b = key("s", "/in/b.csv", 10, 30, SHA_A);
	import_one(l, &a);
	assert_int_equal(ledger_fetched(l, RUN, &b), 0);
	const struct ledger_file *dup = ledger_find_sha(l, SHA_A, "/in/b.csv");
	assert_non_null(dup);
	assert_string_equal(dup->path, "/in/a.csv");
	assert_null(ledger_find_sha(l, SHA_A, "/in/a.csv"));   /* b is not imported */
	assert_null(ledger_find_sha(l, SHA_B, "/in/b.csv"));

	/* sha unknown (before fetch): the latest identity of that listing */
	struct ledger_key listing = key("s", "/in/a.csv", 10, 20, NULL);
	assert_ptr_equal(ledger_get(l, &listing), ledger_get(l, &a));
	struct ledger_key changed = key("s", "/in/a.csv", 10, 21, NULL);
	assert_null(ledger_get(l, &changed));
	struct ledger_key upper = key("s", "/in/a.csv", 10, 20,
				      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
	assert_ptr_equal(ledger_get(l, &upper), ledger_get(l, &a));
	/* appenders with no sha mean that identity too */
	struct ledger_key bl = key("s", "/in/b.csv", 10, 30, NULL);
	assert_int_equal(ledger_failed(l, RUN, &bl, "duplicate of /in/a.csv"), 0);
	assert_int_equal(ledger_get(l, &b)->state, LF_FAILED);
	assert_int_equal(ledger_count(l), 2);
	struct ledger_key nosha = key("s", "/in/c.csv", 1, 1, NULL);
	assert_int_equal(ledger_fetched(l, RUN, &nosha), -EINVAL);
	assert_int_equal(ledger_validated(l, RUN, &nosha, 1, 0, 1, 1), -ENOENT);
	struct ledger_key badsha = key("s", "/in/c.csv", 1, 1, "xyz");
	assert_int_equal(ledger_fetched(l, RUN, &badsha), -EINVAL);
	assert_int_equal(ledger_count(l), 2);
	ledger_free(l);
}

/* A write that fails half-way (EFBIG from RLIMIT_FSIZE, as ENOSPC would)
 * leaves no half record and no change in the view. */
static void test_append_failure_truncates(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ok(f, false);
	struct ledger_key a = key("s", "/a.csv", 10, 20, SHA_A);
	assert_int_equal(ledger_fetched(l, RUN, &a), 0);
	assert_int_equal(ledger_validated(l, RUN, &a, 10, 0, 1, 10), 0);
	off_t good = file_size(f->log);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = { (rlim_t)good + 40, (rlim_t)good + 40 };
		setrlimit(RLIMIT_FSIZE, &rl);
		int r = ledger_batch_accepted(l, RUN, &a, 0, 200, NULL);
		const struct ledger_file *fa = ledger_get(l, &a);
		bool ok = r == -EFBIG && fa->batches_accepted == 0 && fa->state == LF_VALIDATED &&
			  strstr(ledger_last_error(l), "cannot record batch of /a.csv: File too large");
		_exit(ok ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(file_size(f->log), good);
	/* and it works again once there is room */
	assert_int_equal(ledger_batch_accepted(l, RUN, &a, 0, 200, NULL), 0);
	ledger_free(l);
	l = open_ok(f, false);
	assert_int_equal(ledger_get(l, &a)->batches_accepted, 1);
	ledger_free(l);
}

/* xpimportctl forget while the daemon has the ledger open. */
static void test_two_processes(void **state)
{
	struct fixture *f = *state;
	struct ledger *l = open_ok(f, false);
	struct ledger_key a = key("s", "/a.csv", 10, 20, SHA_A);
	struct ledger_key b = key("s", "/b.csv", 10, 20, SHA_B);
	import_one(l, &a);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ledger *other = NULL;
		bool torn;
		char err[256];
		int r = ledger_open(f->dir, "crm", &other, &torn, err, sizeof(err));
		if (r == 0)
			r = ledger_forget(other, "/a.csv", "operator");
		ledger_free(other);
		_exit(r == 0 ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(ledger_get(l, &a)->state, LF_IMPORTED);   /* not yet seen */
	/* our next append reads it first */
	assert_int_equal(ledger_fetched(l, RUN, &b), 0);
	assert_int_equal(ledger_get(l, &a)->state, LF_FORGOTTEN);
	bool torn = true;
	char err[256];
	assert_int_equal(ledger_sync(l, &torn, err, sizeof(err)), 0);
	assert_false(torn);
	ledger_free(l);
}

static double elapsed_ms(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

static void test_ten_thousand_files(void **state)
{
	struct fixture *f = *state;
	FILE *fp = fopen(f->log, "wb");
	assert_non_null(fp);
	char json[1024], line[1200];
	const char *const evs[] = { "fetched", "validated", "batch", "batch", "imported", "after" };
	for (int i = 0; i < 10000; i++) {
		char sha[65];
		snprintf(sha, sizeof(sha), "%064x", i);
		for (size_t e = 0; e < 6; e++) {
			int n = snprintf(json, sizeof(json),
					 "{\"ev\":\"%s\",\"t\":%lld,\"run\":\"" RUN "\",\"site\":\"partner-a\","
					 "\"path\":\"/outgoing/profiles/profiles_%05d.csv\",\"size\":%d,"
					 "\"mtime\":%d,\"sha256\":\"%s\"",
					 evs[e], 1764000000000LL + i * 1000 + (long long)e, i, 1000 + i,
					 1764000000 + i, sha);
			if (e == 1)
				snprintf(json + n, sizeof(json) - (size_t)n,
					 ",\"rows_valid\":20000,\"rows_rejected\":1,\"n_batches\":2,\"batch_size\":10000}");
			else if (e == 2 || e == 3)
				snprintf(json + n, sizeof(json) - (size_t)n, ",\"index\":%zu,\"http_status\":200}",
					 3 - e);   /* batch 1 first, then 0 */
			else if (e == 5)
				snprintf(json + n, sizeof(json) - (size_t)n, ",\"action\":\"move\"}");
			else
				snprintf(json + n, sizeof(json) - (size_t)n, "}");
			format_record(line, sizeof(line), json);
			fputs(line, fp);
		}
	}
	fclose(fp);

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct ledger *l = open_ok(f, false);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = elapsed_ms(&t0, &t1);
	print_message("ledger_open of 10,000 files / 60,000 records: %.1f ms\n", ms);
	assert_true(ms < 1000.0);
	assert_int_equal(ledger_count(l), 10000);
	char sha[65];
	snprintf(sha, sizeof(sha), "%064x", 4242);
	struct ledger_key k = key("partner-a", "/outgoing/profiles/profiles_04242.csv", 5242, 1764004242, sha);
	const struct ledger_file *fk = ledger_get(l, &k);
	assert_non_null(fk);
	assert_int_equal(fk->state, LF_IMPORTED);
	assert_int_equal(fk->batches_accepted, 2);
	assert_true(fk->after_done);
	assert_ptr_equal(ledger_at(l, 4242), fk);
	assert_non_null(ledger_find_sha(l, sha, "/elsewhere.csv"));
	/* and lookups stay cheap */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 10000; i++) {
		snprintf(sha, sizeof(sha), "%064x", i);
		assert_non_null(ledger_find_sha(l, sha, "/x"));
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(elapsed_ms(&t0, &t1) < 500.0);
	ledger_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip_every_event, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_partial_last_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_bad_crc_last_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corruption_in_the_middle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batches_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_sha_and_lookups, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_failure_truncates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ten_thousand_files, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
