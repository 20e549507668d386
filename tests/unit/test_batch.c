/* test_batch.c — JSON encoding (round trip through jansson) and batch
 * boundaries: rows, bytes, duplicate user_ids, a row too big alone. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "batch.h"

static void roundtrip(const char *s, size_t n)
{
	struct strbuf sb = {0};
	json_error_t jerr;
	assert_int_equal(batch_put_string(&sb, s, n, false), 0);
	json_t *j = json_loadb(sb.data, sb.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!j)
		fail_msg("not JSON: %s (%s)", sb.data, jerr.text);
	assert_true(json_is_string(j));
	assert_int_equal(json_string_length(j), n);
	assert_memory_equal(json_string_value(j), s, n);
	json_decref(j);
	strbuf_free(&sb);
}

static void test_escaping(void **state)
{
	char all[128];
	for (int i = 0; i < 128; i++)
		all[i] = (char)i; /* every ASCII byte, NUL and controls included */
	roundtrip(all, sizeof(all));
	roundtrip("say \"hi\" \\ back", 15);
	roundtrip("Se\xc3\xa1n \xe2\x82\xac \xf0\x9f\x98\x80", 14);
	roundtrip("", 0);
	struct strbuf sb = {0};
	batch_put_string(&sb, "a\n\t\x01\"\\", 6, false);
	assert_string_equal(sb.data, "\"a\\n\\t\\u0001\\\"\\\\\"");
	strbuf_reset(&sb);
	/* non-ASCII stays as is */
	batch_put_string(&sb, "\xc3\xa9", 2, false);
	assert_string_equal(sb.data, "\"\xc3\xa9\"");
	strbuf_reset(&sb);
	batch_put_string(&sb, "plain", 5, true);
	batch_put_raw(&sb, ",1,", 3);
	batch_put_null(&sb);
	assert_string_equal(sb.data, "\"plain\",1,null");
	strbuf_free(&sb);
}

static const char *const cols[] = {"user_id", "first_name"};

static void add(struct batch *b, struct strbuf *body, const char *uid, size_t *closed,
		size_t *dups)
{
	char row[128];
	int n = snprintf(row, sizeof(row), "[\"%s\",\"x\"]", uid);
	enum batch_place pl = batch_place(b, uid, strlen(uid), (size_t)n);
	assert_int_not_equal(pl, BATCH_TOO_BIG);
	if (pl != BATCH_APPEND) {
		if (pl == BATCH_CLOSE_DUP)
			(*dups)++;
		batch_finish(b, body);
		json_error_t jerr;
		json_t *j = json_loadb(body->data, body->len, 0, &jerr);
		if (!j)
			fail_msg("batch body is not JSON: %s", jerr.text);
		json_decref(j);
		(*closed)++;
		batch_start(b, body);
	}
	assert_int_equal(batch_append(b, body, row, (size_t)n, uid, strlen(uid)), 0);
}

static void test_split_by_rows(void **state)
{
	struct batch b;
	struct strbuf body = {0};
	size_t closed = 0, dups = 0;
	char uid[16];
	assert_int_equal(batch_init(&b, cols, 2, 3, 1 << 20), 0);
	batch_start(&b, &body);
	for (int i = 0; i < 7; i++) {
		snprintf(uid, sizeof(uid), "u%d", i);
		add(&b, &body, uid, &closed, &dups);
	}
	assert_int_equal(closed, 2);
	assert_int_equal(b.rows, 1);
	batch_finish(&b, &body);
	assert_string_equal(body.data, "{\"columns\":[\"user_id\",\"first_name\"],\"rows\":[[\"u6\",\"x\"]]}");
	assert_int_equal(b.bytes, body.len);
	batch_free(&b);
	strbuf_free(&body);
}

static void test_split_by_bytes(void **state)
{
	struct batch b;
	struct strbuf body = {0};
	size_t closed = 0, dups = 0;
	/* head is 44 bytes, each row 10 (["uN","x"]), "]}" 2: two rows fit
	 * in 44 + 10 + 1 + 10 + 2 = 67 */
	assert_int_equal(batch_init(&b, cols, 2, 100, 67), 0);
	assert_int_equal(b.head.len, 44);
	batch_start(&b, &body);
	add(&b, &body, "u1", &closed, &dups);
	add(&b, &body, "u2", &closed, &dups);
	assert_int_equal(closed, 0);
	add(&b, &body, "u3", &closed, &dups);
	assert_int_equal(closed, 1);
	/* a row alone over the cap */
	assert_int_equal(batch_place(&b, "u4", 2, 22), BATCH_TOO_BIG);
	assert_int_equal(batch_place(&b, "u4", 2, 21), BATCH_CLOSE);
	batch_finish(&b, &body);
	assert_true(body.len <= 67);
	assert_int_equal(b.bytes, body.len);
	batch_free(&b);
	strbuf_free(&body);
}

static void test_duplicates_close_batch(void **state)
{
	struct batch b;
	struct strbuf body = {0};
	size_t closed = 0, dups = 0;
	assert_int_equal(batch_init(&b, cols, 2, 100, 1 << 20), 0);
	batch_start(&b, &body);
	add(&b, &body, "a", &closed, &dups);
	add(&b, &body, "b", &closed, &dups);
	add(&b, &body, "a", &closed, &dups); /* closes [a,b] */
	assert_int_equal(closed, 1);
	assert_int_equal(dups, 1);
	add(&b, &body, "b", &closed, &dups); /* new window: b is not in [a] */
	assert_int_equal(closed, 1);
	add(&b, &body, "b", &closed, &dups);
	assert_int_equal(closed, 2);
	assert_int_equal(dups, 2);
	/* many ids in one window: the hash set finds each repeat */
	batch_start(&b, &body);
	char uid[16];
	for (int i = 0; i < 90; i++) {
		snprintf(uid, sizeof(uid), "id-%d", i);
		add(&b, &body, uid, &closed, &dups);
	}
	assert_int_equal(closed, 2);
	assert_int_equal(batch_place(&b, "id-42", 5, 14), BATCH_CLOSE_DUP);
	assert_int_equal(batch_place(&b, "id-90", 5, 14), BATCH_APPEND);
	batch_free(&b);
	strbuf_free(&body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_split_by_rows),
		cmocka_unit_test(test_split_by_bytes),
		cmocka_unit_test(test_duplicates_close_batch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
