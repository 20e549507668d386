/* test_validate.c — every value rule, its normalisation and its exact
 * message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "validate.h"

static struct validate_ctx ctx = {353, EMPTY_NULL};

/* valid: sent as kind, with text out (NULL for null) */
static void ok(enum attr_type t, const char *in, enum validate_kind kind, const char *out)
{
	struct validate_out v;
	enum validate_error e = validate_value(&ctx, t, in, strlen(in), &v);
	if (e != VALIDATE_OK) {
		char msg[300];
		validate_message(e, "attr", in, strlen(in), &ctx, msg, sizeof(msg));
		fail_msg("'%s' rejected: %s", in, msg);
	}
	assert_int_equal(v.kind, kind);
	if (out) {
		assert_int_equal(v.n, strlen(out));
		assert_memory_equal(v.p, out, v.n);
	}
}

static void bad(enum attr_type t, const char *attr, const char *in, const char *rule,
		const char *msg)
{
	struct validate_out v;
	char buf[300];
	enum validate_error e = validate_value(&ctx, t, in, strlen(in), &v);
	if (e == VALIDATE_OK)
		fail_msg("'%s' accepted as %s", in, attr);
	validate_message(e, attr, in, strlen(in), &ctx, buf, sizeof(buf));
	assert_string_equal(buf, msg);
	assert_string_equal(validate_rule_name(e, t), rule);
}

static void test_user_id(void **state)
{
	ok(ATTR_SYS_USER_ID, "fe56bc676be78", VALIDATE_STRING, "fe56bc676be78");
	ok(ATTR_SYS_USER_ID, "  u1 ", VALIDATE_STRING, "u1");
	bad(ATTR_SYS_USER_ID, "user_id", "", "required", "user_id is empty");
	bad(ATTR_SYS_USER_ID, "user_id", "   ", "required", "user_id is empty");
	char long_id[103];
	memset(long_id, 'x', 102);
	long_id[102] = '\0';
	bad(ATTR_SYS_USER_ID, "user_id", long_id, "length", "user_id is longer than 101 characters");
	long_id[101] = '\0';
	ok(ATTR_SYS_USER_ID, long_id, VALIDATE_STRING, long_id);
	/* the empty_cells policy does not apply to user_id */
	ctx.empty = EMPTY_STRING;
	bad(ATTR_SYS_USER_ID, "user_id", "", "required", "user_id is empty");
	ctx.empty = EMPTY_NULL;
}

static void test_string_length_in_characters(void **state)
{
	char s[400] = "";
	for (int i = 0; i < 101; i++)
		strcat(s, "\xc3\xa9"); /* é: 2 bytes, 1 character */
	ok(ATTR_STRING, s, VALIDATE_STRING, s);
	strcat(s, "e");
	bad(ATTR_STRING, "first_name", s, "length", "first_name is longer than 101 characters");
	ok(ATTR_STRING, " Sam ", VALIDATE_STRING, " Sam "); /* strings are sent as given */
}

static void test_empty_policies(void **state)
{
	ok(ATTR_STRING, "", VALIDATE_NULL, NULL);
	ok(ATTR_NUMBER, " ", VALIDATE_NULL, NULL);
	ctx.empty = EMPTY_STRING;
	ok(ATTR_STRING, "", VALIDATE_STRING, "");
	ok(ATTR_SYS_EMAIL, "", VALIDATE_STRING, "");
	ctx.empty = EMPTY_REJECT;
	bad(ATTR_STRING, "first_name", "", "empty", "first_name is empty");
	bad(ATTR_DATE, "last_deposit", "", "empty", "last_deposit is empty");
	ctx.empty = EMPTY_NULL;
	struct validate_out v;
	assert_int_equal(validate_value(&ctx, ATTR_SYS_EMAIL, "", 0, &v), VALIDATE_OK);
	assert_false(v.set);
	assert_int_equal(validate_value(&ctx, ATTR_SYS_EMAIL, "a@b.ie", 6, &v), VALIDATE_OK);
	assert_true(v.set);
}

static void test_email(void **state)
{
	ok(ATTR_SYS_EMAIL, "sam@example.com", VALIDATE_STRING, "sam@example.com");
	ok(ATTR_SYS_EMAIL, " first.last+tag@mail.example.ie ", VALIDATE_STRING,
	   "first.last+tag@mail.example.ie");
	ok(ATTR_SYS_EMAIL, "s\xc3\xa9@exampl\xc3\xa9.fr", VALIDATE_STRING, "s\xc3\xa9@exampl\xc3\xa9.fr");
	const char *bads[] = {"sam at example.com", "sam@example", "Sam <sam@example.com>",
			      "sam@@example.com", "@example.com", "sam@", "sa m@example.com",
			      "sam.@example.com", ".sam@example.com", "s..m@example.com",
			      "sam@-example.com", "sam@example..com", "sam@example.123",
			      "a@b@example.com"};
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		char msg[200];
		snprintf(msg, sizeof(msg), "email '%s' is not a valid address", bads[i]);
		bad(ATTR_SYS_EMAIL, "email", bads[i], "email", msg);
	}
}

static void test_subscription(void **state)
{
	const char *ones[] = {"1", "true", "TRUE", "Yes", "yes", " 1 "};
	const char *zeros[] = {"0", "false", "False", "NO", "no"};
	for (size_t i = 0; i < 6; i++)
		ok(ATTR_SYS_EMAIL_SUBSCRIPTION, ones[i], VALIDATE_RAW, "1");
	for (size_t i = 0; i < 5; i++)
		ok(ATTR_SYS_SMS_SUBSCRIPTION, zeros[i], VALIDATE_RAW, "0");
	bad(ATTR_SYS_EMAIL_SUBSCRIPTION, "email_subscription", "maybe", "subscription",
	    "email_subscription 'maybe' is not 1/0, true/false or yes/no");
	bad(ATTR_SYS_SMS_SUBSCRIPTION, "sms_subscription", "2", "subscription",
	    "sms_subscription '2' is not 1/0, true/false or yes/no");
	bad(ATTR_SYS_WHATSAPP_SUBSCRIPTION, "whatsapp_subscription", "y", "subscription",
	    "whatsapp_subscription 'y' is not 1/0, true/false or yes/no");
}

static void test_boolean(void **state)
{
	ok(ATTR_BOOLEAN, "true", VALIDATE_RAW, "true");
	ok(ATTR_BOOLEAN, "1", VALIDATE_RAW, "true");
	ok(ATTR_BOOLEAN, "Yes", VALIDATE_RAW, "true");
	ok(ATTR_BOOLEAN, "0", VALIDATE_RAW, "false");
	ok(ATTR_BOOLEAN, "FALSE", VALIDATE_RAW, "false");
	bad(ATTR_BOOLEAN, "vip", "maybe", "boolean", "vip 'maybe' is not 1/0, true/false or yes/no");
}

static void test_mobile(void **state)
{
	/* the seed's examples */
	ok(ATTR_SYS_MOBILE_NUMBER, "0850123456", VALIDATE_STRING, "353850123456");
	ctx.country_code = 44;
	ok(ATTR_SYS_MOBILE_NUMBER, "07400123456", VALIDATE_STRING, "447400123456");
	ctx.country_code = 353;
	ok(ATTR_SYS_MOBILE_NUMBER, "+353 85 012 3456", VALIDATE_STRING, "353850123456");
	ok(ATTR_SYS_MOBILE_NUMBER, "00353-85-012-3456", VALIDATE_STRING, "353850123456");
	ok(ATTR_SYS_MOBILE_NUMBER, "(085) 012.3456", VALIDATE_STRING, "353850123456");
	ok(ATTR_SYS_MOBILE_NUMBER, "353850123456", VALIDATE_STRING, "353850123456");
	ok(ATTR_SYS_MOBILE_NUMBER, "+44 (0)7400 123456", VALIDATE_STRING, "447400123456");
	ok(ATTR_SYS_MOBILE_NUMBER, "+1 (212) 555-0100", VALIDATE_STRING, "12125550100");
	ok(ATTR_SYS_WHATSAPP_NUMBER, "+49 151 23456789", VALIDATE_STRING, "4915123456789");
	bad(ATTR_SYS_MOBILE_NUMBER, "mobile_number", "0850 12", "mobile_number",
	    "mobile_number '0850 12' is not a valid number");
	bad(ATTR_SYS_MOBILE_NUMBER, "mobile_number", "085x0123456", "mobile_number",
	    "mobile_number '085x0123456' is not a valid number");
	bad(ATTR_SYS_MOBILE_NUMBER, "mobile_number", "+353 85 0123 4567 8901", "mobile_number",
	    "mobile_number '+353 85 0123 4567 8901' is not a valid number");
	bad(ATTR_SYS_MOBILE_NUMBER, "mobile_number", "+1 212 555 010", "mobile_number",
	    "mobile_number '+1 212 555 010' is not a valid number");
	bad(ATTR_SYS_MOBILE_NUMBER, "mobile_number", "1+2345678901", "mobile_number",
	    "mobile_number '1+2345678901' is not a valid number");
	bad(ATTR_SYS_MOBILE_NUMBER, "mobile_number", "+999 123 456 789", "mobile_number",
	    "mobile_number '+999 123 456 789' does not start with a known country calling code");
	bad(ATTR_SYS_MOBILE_NUMBER, "mobile_number", "+0 85 123 4567", "mobile_number",
	    "mobile_number '+0 85 123 4567' is not a valid number");
	ctx.country_code = 0;
	bad(ATTR_SYS_MOBILE_NUMBER, "mobile_number", "0850123456", "mobile_number",
	    "mobile_number '0850123456' is a national number but no default_country_code is set");
	ok(ATTR_SYS_MOBILE_NUMBER, "+353850123456", VALIDATE_STRING, "353850123456");
	ctx.country_code = 353;
}

static void test_country_codes(void **state)
{
	size_t len;
	assert_true(validate_country_code("1212", 4, &len));
	assert_int_equal(len, 1);
	assert_true(validate_country_code("353", 3, &len));
	assert_int_equal(len, 3);
	assert_true(validate_country_code("44", 2, &len));
	assert_int_equal(len, 2);
	assert_false(validate_country_code("999", 3, &len));
	assert_false(validate_country_code("384", 3, &len));
	assert_true(validate_country_code("383", 3, &len)); /* Kosovo */
	/* codes from every zone are found at their own length (the table is
	 * sorted for bsearch and prefix-free) */
	const char *codes[] = {"1", "7", "20", "27", "30", "49", "66", "98", "211", "218", "269",
			       "290", "299", "350", "389", "420", "423", "500", "599", "670",
			       "692", "800", "888", "960", "998"};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		if (!validate_country_code(codes[i], strlen(codes[i]), &len))
			fail_msg("country code %s not found", codes[i]);
		assert_int_equal(len, strlen(codes[i]));
	}
	const char *unassigned[] = {"21", "28", "35", "42", "50", "80", "96", "0", "210", "384",
				    "999"};
	for (size_t i = 0; i < sizeof(unassigned) / sizeof(unassigned[0]); i++)
		if (validate_country_code(unassigned[i], strlen(unassigned[i]), &len))
			fail_msg("%s is not an assigned code", unassigned[i]);
}

static void test_language(void **state)
{
	assert_int_equal(validate_n_languages(), 184);
	ok(ATTR_SYS_LANGUAGE, "en", VALIDATE_STRING, "en");
	ok(ATTR_SYS_LANGUAGE, "en-IE", VALIDATE_STRING, "en-IE");
	ok(ATTR_SYS_LANGUAGE, "ga", VALIDATE_STRING, "ga");
	ok(ATTR_SYS_LANGUAGE, "PT-br", VALIDATE_STRING, "PT-br");
	const char *bads[] = {"xx", "eng", "en_IE", "en-IRL", "e", "en-1E"};
	for (size_t i = 0; i < 6; i++) {
		char msg[200];
		snprintf(msg, sizeof(msg),
			 "language '%s' is not an ISO 639-1 language code (like en or en-IE)", bads[i]);
		bad(ATTR_SYS_LANGUAGE, "language", bads[i], "language", msg);
	}
}

static void test_timezone(void **state)
{
	ok(ATTR_SYS_TIMEZONE, "Europe/Dublin", VALIDATE_STRING, "Europe/Dublin");
	ok(ATTR_SYS_TIMEZONE, "UTC", VALIDATE_STRING, "UTC");
	ok(ATTR_SYS_TIMEZONE, "America/Argentina/Buenos_Aires", VALIDATE_STRING, NULL);
	ok(ATTR_SYS_TIMEZONE, "Europe/Dublin", VALIDATE_STRING, "Europe/Dublin"); /* cached */
	const char *bads[] = {"Europe/Atlantis", "../../etc/passwd", "/etc/passwd", "Europe//Dublin",
			      "posixrules", "zone.tab", "Europe", "localtime", "Europe/Dublin/"};
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		char msg[200];
		snprintf(msg, sizeof(msg), "timezone '%s' is not a known IANA time zone", bads[i]);
		bad(ATTR_SYS_TIMEZONE, "timezone", bads[i], "timezone", msg);
	}
	assert_false(validate_is_timezone("Europe/Atlantis", 15)); /* negative result cached */
}

static void test_number(void **state)
{
	const char *good[] = {"0", "-1", "12.50", "1e10", "-0.5E-3", "61898.83", "1E+2"};
	for (size_t i = 0; i < 7; i++)
		ok(ATTR_NUMBER, good[i], VALIDATE_RAW, good[i]);
	const char *bads[] = {"+1", "01", ".5", "5.", "NaN", "Infinity", "1e999", "1,5", "0x10",
			      "1e", "--1", "abc"};
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		char msg[200];
		snprintf(msg, sizeof(msg), "lifetime_value '%s' is not a number", bads[i]);
		bad(ATTR_NUMBER, "lifetime_value", bads[i], "number", msg);
	}
}

static void test_integer(void **state)
{
	ok(ATTR_INTEGER, "42", VALIDATE_RAW, "42");
	ok(ATTR_INTEGER, "-9223372036854775808", VALIDATE_RAW, "-9223372036854775808");
	ok(ATTR_INTEGER, "9223372036854775807", VALIDATE_RAW, "9223372036854775807");
	const char *bads[] = {"1.5", "9223372036854775808", "+3", "007", "1e3", ""};
	for (size_t i = 0; i < 5; i++) {
		char msg[200];
		snprintf(msg, sizeof(msg), "visits '%s' is not an integer", bads[i]);
		bad(ATTR_INTEGER, "visits", bads[i], "integer", msg);
	}
}

static void test_date(void **state)
{
	const char *good[] = {"2024-02-29", "2023-12-31 23:59:59", "2023-01-01T00:00:00",
			      "2023-01-01T10:00:00Z", "2023-01-01 10:00:00+01:00",
			      "2000-02-29", "2023-06-30T12:00:00-05:30"};
	for (size_t i = 0; i < 7; i++)
		ok(ATTR_DATE, good[i], VALIDATE_STRING, good[i]);
	const char *bads[] = {"2023-02-29", "1900-02-29", "2023-13-01", "2023-04-31", "2023-1-01",
			      "2023-01-01 24:00:00", "2023-01-01 10:00", "2023-01-01Z",
			      "2023-01-01 10:00:00+1", "01/02/2023", "0000-01-01",
			      "2023-01-01 10:00:00+15:00"};
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		char msg[200];
		snprintf(msg, sizeof(msg),
			 "last_deposit '%s' is not a valid date (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)",
			 bads[i]);
		bad(ATTR_DATE, "last_deposit", bads[i], "date", msg);
	}
}

static void test_array(void **state)
{
	ok(ATTR_ARRAY, "[1,2,\"x\"]", VALIDATE_STRING, "[1,2,\"x\"]");
	ok(ATTR_ARRAY, "{\"a\": [true]}", VALIDATE_STRING, "{\"a\": [true]}");
	const char *bads[] = {"[1,", "42", "\"str\"", "{a:1}", "[1] x"};
	for (size_t i = 0; i < 5; i++) {
		char msg[200];
		snprintf(msg, sizeof(msg), "preferences '%s' is not a valid JSON array or object",
			 bads[i]);
		bad(ATTR_ARRAY, "preferences", bads[i], "array", msg);
	}
}

static void test_message_value_truncated_and_sanitised(void **state)
{
	char v[200], buf[300];
	memset(v, 'a', 100);
	v[100] = '\0';
	validate_quote_value(v, 100, buf, sizeof(buf));
	assert_int_equal(strlen(buf), 64 + 5);
	assert_string_equal(buf + 65, "...'");
	validate_quote_value("a\nb\tc", 5, buf, sizeof(buf));
	assert_string_equal(buf, "'a?b?c'");
	/* never cut inside a UTF-8 sequence */
	memset(v, 'a', 63);
	memcpy(v + 63, "\xc3\xa9zz", 5);
	validate_quote_value(v, 67, buf, sizeof(buf));
	assert_int_equal(strlen(buf), 63 + 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_id),
		cmocka_unit_test(test_string_length_in_characters),
		cmocka_unit_test(test_empty_policies),
		cmocka_unit_test(test_email),
		cmocka_unit_test(test_subscription),
		cmocka_unit_test(test_boolean),
		cmocka_unit_test(test_mobile),
		cmocka_unit_test(test_country_codes),
		cmocka_unit_test(test_language),
		cmocka_unit_test(test_timezone),
		cmocka_unit_test(test_number),
		cmocka_unit_test(test_integer),
		cmocka_unit_test(test_date),
		cmocka_unit_test(test_array),
		cmocka_unit_test(test_message_value_truncated_and_sanitised),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
