/* Unit tests for src/util.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"

static void test_parse_uint(void **state)
{
	uint64_t v = 0;
	assert_int_equal(util_parse_uint("42", 0, 100, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(util_parse_uint("", 0, 100, &v), -EINVAL);
	assert_int_equal(util_parse_uint("-1", 0, 100, &v), -EINVAL);
	assert_int_equal(util_parse_uint(" 1", 0, 100, &v), -EINVAL);
	assert_int_equal(util_parse_uint("1x", 0, 100, &v), -EINVAL);
	assert_int_equal(util_parse_uint("101", 0, 100, &v), -ERANGE);
	assert_int_equal(util_parse_uint("0", 1, 100, &v), -ERANGE);
	assert_int_equal(util_parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
	assert_int_equal(util_parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
	assert_true(v == UINT64_MAX);
}

static void test_durations(void **state)
{
	int64_t ms = -1;
	assert_int_equal(util_parse_duration_ms("30s", &ms), 0);
	assert_int_equal(ms, 30000);
	assert_int_equal(util_parse_duration_ms("15m", &ms), 0);
	assert_int_equal(ms, 900000);
	assert_int_equal(util_parse_duration_ms("2h", &ms), 0);
	assert_int_equal(ms, 7200000);
	assert_int_equal(util_parse_duration_ms("1d", &ms), 0);
	assert_int_equal(ms, 86400000);
	assert_int_equal(util_parse_duration_ms("250ms", &ms), 0);
	assert_int_equal(ms, 250);
	assert_int_equal(util_parse_duration_ms("0", &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(util_parse_duration_ms("30", &ms), -EINVAL);
	assert_int_equal(util_parse_duration_ms("s", &ms), -EINVAL);
	assert_int_equal(util_parse_duration_ms("3 s", &ms), -EINVAL);
	assert_int_equal(util_parse_duration_ms("1w", &ms), -EINVAL);
	assert_int_equal(util_parse_duration_ms("-5s", &ms), -EINVAL);
	assert_int_equal(util_parse_duration_ms("99999999999999999d", &ms), -ERANGE);
}

static void test_strbuf(void **state)
{
	struct strbuf sb = {0};
	assert_string_equal(strbuf_cstr(&sb), "");
	for (int i = 0; i < 1000; i++)
		assert_int_equal(strbuf_printf(&sb, "%d,", i), 0);
	assert_int_equal(strncmp(sb.data, "0,1,2,", 6), 0);
	assert_int_equal(sb.data[sb.len], '\0');
	strbuf_reset(&sb);
	assert_int_equal(sb.len, 0);
	assert_int_equal(strbuf_append(&sb, "ab\0c", 4), 0);
	assert_int_equal(sb.len, 4);
	strbuf_free(&sb);
	strbuf_free(&sb);
}

static void test_utf8(void **state)
{
	assert_true(util_utf8_valid("plain", 5));
	assert_true(util_utf8_valid("Se\xc3\xa1n", 5));
	assert_true(util_utf8_valid("\xe2\x82\xac", 3));
	assert_true(util_utf8_valid("\xf0\x9f\x98\x80", 4));
	assert_false(util_utf8_valid("\xc3", 1));          /* truncated */
	assert_false(util_utf8_valid("\xe2\x82", 2));      /* truncated */
	assert_false(util_utf8_valid("\xc0\xaf", 2));      /* overlong */
	assert_false(util_utf8_valid("\xed\xa0\x80", 3));  /* surrogate */
	assert_false(util_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	assert_false(util_utf8_valid("caf\xe9", 4));       /* Windows-1252 */
}

static void test_read_secret(void **state)
{
	char dir[] = "/tmp/xp-util-XXXXXX";
	char path[64], *s = NULL;
	size_t len = 0;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/token", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("s3cret\n", f);
	fclose(f);
	chmod(path, 0600);
	assert_int_equal(util_read_secret(path, 100, &s, &len), 0);
	assert_string_equal(s, "s3cret");
	assert_int_equal(len, 6);
	util_free_secret(s, len);
	chmod(path, 0640);
	assert_int_equal(util_read_secret(path, 100, &s, &len), -EPERM);
	chmod(path, 0600);
	assert_int_equal(util_read_secret(path, 3, &s, &len), -EFBIG);
	unlink(path);
	assert_int_equal(util_read_secret(path, 100, &s, &len), -ENOENT);
	rmdir(dir);
}

static void test_resolve_secret(void **state)
{
	char *p = util_resolve_secret_path("/abs/key", "/etc/x");
	assert_string_equal(p, "/abs/key");
	free(p);
	unsetenv("CREDENTIALS_DIRECTORY");
	p = util_resolve_secret_path("main.apptoken", "/etc/xpimportd");
	assert_string_equal(p, "/etc/xpimportd/main.apptoken");
	free(p);
	char dir[] = "/tmp/xp-cred-XXXXXX", path[64];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/main.apptoken", dir);
	fclose(fopen(path, "w"));
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	p = util_resolve_secret_path("main.apptoken", "/etc/xpimportd");
	assert_string_equal(p, path);
	free(p);
	p = util_resolve_secret_path("other.key", "/etc/xpimportd");
	assert_string_equal(p, "/etc/xpimportd/other.key");
	free(p);
	unsetenv("CREDENTIALS_DIRECTORY");
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_uint),   cmocka_unit_test(test_durations),
		cmocka_unit_test(test_strbuf),       cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_read_secret),  cmocka_unit_test(test_resolve_secret),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
