/* test_schedule.c — cron parsing, next-run computation and time zones.
 *
 * Expected instants in other zones are facts about the tz database, computed
 * offline with GNU date (glibc's own tz code, not ours), e.g.
 *   TZ=Europe/Dublin date -d @1774746000   ->  2026-03-29 02:00:00 IST
 *   date -u -d '2026-03-29 01:00' +%s      ->  1774746000
 * The command for each value is in the comment next to it. */
#include <errno.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "schedule.h"

/* ------------------------------------------------------------- helpers */

static int64_t utc(int y, int mo, int d, int h, int mi)
{
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
			.tm_min = mi};
	return (int64_t)timegm(&tm);
}

static struct cron_expr parse_ok(const char *text)
{
	struct cron_expr e;
	char err[256] = "";
	int rc = cron_parse(text, &e, err, sizeof(err));
	if (rc != 0)
		fail_msg("cron_parse(\"%s\") failed: %s", text, err);
	return e;
}

static void expect_error(const char *text, const char *message)
{
	struct cron_expr e;
	memset(&e, 0xAB, sizeof(e));
	struct cron_expr before;
	memcpy(&before, &e, sizeof(e));
	char err[256] = "";
	int rc = cron_parse(text, &e, err, sizeof(err));
	if (rc != -EINVAL)
		fail_msg("cron_parse(\"%s\") returned %d, expected -EINVAL", text, rc);
	if (strcmp(err, message) != 0)
		fail_msg("cron_parse(\"%s\"): got message \"%s\", expected \"%s\"", text, err,
			 message);
	assert_memory_equal(&e, &before, sizeof(e)); /* untouched on error */
}

/* Field by field: struct padding is not part of the value. */
static void assert_same_expr(const struct cron_expr *a, const struct cron_expr *b)
{
	assert_true(a->minutes == b->minutes);
	assert_int_equal(a->hours, b->hours);
	assert_int_equal(a->mdays, b->mdays);
	assert_int_equal(a->months, b->months);
	assert_int_equal(a->wdays, b->wdays);
	assert_int_equal(a->mday_star, b->mday_star);
	assert_int_equal(a->wday_star, b->wday_star);
}

static int64_t next_in(const char *expr, const char *tz, int64_t after)
{
	struct cron_expr e = parse_ok(expr);
	return cron_next(&e, tz, after);
}

static bool zone_exists(const char *name)
{
	char path[256];
	struct stat st;
	snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", name);
	return stat(path, &st) == 0;
}

#define REQUIRE_ZONE(name)                                                   \
	do {                                                                 \
		if (!zone_exists(name)) {                                    \
			print_message("zone %s not installed, skipped\n", name); \
			skip();                                              \
		}                                                            \
	} while (0)

#define BIT(n) (UINT64_C(1) << (n))

/* ------------------------------------------------------------- parsing */

static void test_parse_star_sets_every_value(void **state)
{
	struct cron_expr e = parse_ok("* * * * *");
	assert_true(e.minutes == (BIT(60) - 1));
	assert_int_equal(e.hours, 0xFFFFFF);
	assert_int_equal(e.mdays, 0xFFFFFFFE);
	assert_int_equal(e.months, 0x1FFE);
	assert_int_equal(e.wdays, 0x7F);
	assert_true(e.mday_star);
	assert_true(e.wday_star);
}

static void test_parse_list_range_and_steps(void **state)
{
	struct cron_expr e = parse_ok("1,15 1-5 */10 * *");
	assert_true(e.minutes == (BIT(1) | BIT(15)));
	assert_int_equal(e.hours, 0x3E);
	assert_int_equal(e.mdays, (1u << 1) | (1u << 11) | (1u << 21) | (1u << 31));
	assert_false(e.mday_star); /* "*\/10" is a restriction */

	e = parse_ok("0-30/10 */6 * * *");
	assert_true(e.minutes == (BIT(0) | BIT(10) | BIT(20) | BIT(30)));
	assert_int_equal(e.hours, (1u << 0) | (1u << 6) | (1u << 12) | (1u << 18));
	e = parse_ok("*/15 * * * *");
	assert_true(e.minutes == (BIT(0) | BIT(15) | BIT(30) | BIT(45)));

	/* "5/15" is 5-59/15 */
	e = parse_ok("5/15 3,7-9,22 * * *");
	assert_true(e.minutes == (BIT(5) | BIT(20) | BIT(35) | BIT(50)));
	assert_int_equal(e.hours, (1u << 3) | (1u << 7) | (1u << 8) | (1u << 9) | (1u << 22));

	/* blanks around and between fields */
	e = parse_ok("  0\t6  *  * 1-5 ");
	assert_true(e.minutes == BIT(0));
	assert_int_equal(e.hours, 1u << 6);
	assert_int_equal(e.wdays, 0x3E);
}

static void test_parse_names_any_case(void **state)
{
	struct cron_expr e = parse_ok("0 0 * jan,JUL,Dec mon-FRI");
	assert_int_equal(e.months, (1u << 1) | (1u << 7) | (1u << 12));
	assert_int_equal(e.wdays, 0x3E);
	e = parse_ok("0 0 * Feb-apr/2 sun,Sat");
	assert_int_equal(e.months, (1u << 2) | (1u << 4));
	assert_int_equal(e.wdays, (1u << 0) | (1u << 6));
	assert_false(e.wday_star);
}

static void test_parse_seven_is_sunday(void **state)
{
	assert_int_equal(parse_ok("0 0 * * 7").wdays, 1u << 0);
	assert_int_equal(parse_ok("0 0 * * 5-7").wdays, (1u << 5) | (1u << 6) | (1u << 0));
	/* a range may end on Sunday as 0 or sun */
	assert_int_equal(parse_ok("0 0 * * fri-sun").wdays, (1u << 5) | (1u << 6) | (1u << 0));
	assert_int_equal(parse_ok("0 0 * * 6-0").wdays, (1u << 6) | (1u << 0));
	/* 0-7 names every day, so day of week is unrestricted */
	struct cron_expr e = parse_ok("0 0 * * 0-7");
	assert_int_equal(e.wdays, 0x7F);
	assert_true(e.wday_star);
	assert_true(parse_ok("0 0 1-31 * *").mday_star);
}

static void test_parse_macros(void **state)
{
	struct cron_expr a, b;
	a = parse_ok("@hourly");
	b = parse_ok("0 * * * *");
	assert_same_expr(&a, &b);
	a = parse_ok("@daily");
	b = parse_ok("0 0 * * *");
	assert_same_expr(&a, &b);
	a = parse_ok(" @MIDNIGHT ");
	assert_same_expr(&a, &b);
	a = parse_ok("@weekly");
	b = parse_ok("0 0 * * 0");
	assert_same_expr(&a, &b);
	a = parse_ok("@monthly");
	b = parse_ok("0 0 1 * *");
	assert_same_expr(&a, &b);
	a = parse_ok("@yearly");
	b = parse_ok("0 0 1 1 *");
	assert_same_expr(&a, &b);
	a = parse_ok("@annually");
	assert_same_expr(&a, &b);
	expect_error("@reboot",
		     "unknown macro '@reboot' (use @hourly, @daily, @weekly, @monthly or @yearly)");
	expect_error("@daily 5",
		     "unknown macro '@daily 5' (use @hourly, @daily, @weekly, @monthly or @yearly)");
}

static void test_parse_error_messages(void **state)
{
	expect_error("0 25 * * *", "field 2 (hour): 25 is out of range 0-23");
	expect_error("0 6 * * 1-5 extra", "expected 5 fields, got 6");
	expect_error("0 6 * *", "expected 5 fields, got 4");
	expect_error("", "expected 5 fields, got 0");
	expect_error("   ", "expected 5 fields, got 0");
	expect_error("0 6 * * fry", "field 5 (day of week): unknown name 'fry'");
	expect_error("0 6 * * mon-fry", "field 5 (day of week): unknown name 'fry'");
	expect_error("0 6 * * monday", "field 5 (day of week): unknown name 'monday'");
	expect_error("*/0 * * * *", "field 1 (minute): step 0 is invalid");
	expect_error("60 * * * *", "field 1 (minute): 60 is out of range 0-59");
	expect_error("0 0 0 * *", "field 3 (day of month): 0 is out of range 1-31");
	expect_error("0 0 32 * *", "field 3 (day of month): 32 is out of range 1-31");
	expect_error("0 0 * 13 *", "field 4 (month): 13 is out of range 1-12");
	expect_error("0 0 * 0 *", "field 4 (month): 0 is out of range 1-12");
	expect_error("0 0 * * 8", "field 5 (day of week): 8 is out of range 0-7");
	expect_error("0 0 * foo *", "field 4 (month): unknown name 'foo'");
	expect_error("0 0 * mon *", "field 4 (month): unknown name 'mon'");
	expect_error("mon * * * *", "field 1 (minute): 'mon' is not a number");
	expect_error("5x * * * *", "field 1 (minute): '5x' is not a number");
	expect_error("-5 * * * *", "field 1 (minute): missing value");
	expect_error("1,,2 * * * *", "field 1 (minute): empty list element");
	expect_error("1, * * * *", "field 1 (minute): empty list element");
	expect_error("30-10 * * * *", "field 1 (minute): range 30-10 is reversed");
	expect_error("0 0 * * fri-mon", "field 5 (day of week): range fri-mon is reversed");
	expect_error("0 0 * 12-1 *", "field 4 (month): range 12-1 is reversed");
	expect_error("*/x * * * *", "field 1 (minute): step 'x' is not a number");
	expect_error("*/ * * * *", "field 1 (minute): missing step after '/'");
	expect_error("*/60 * * * *", "field 1 (minute): step 60 is out of range 1-59");
	expect_error("0 */24 * * *", "field 2 (hour): step 24 is out of range 1-23");
	expect_error("99999999999 * * * *", "field 1 (minute): 99999999999 is out of range 0-59");
	expect_error("0 0 * * 1\n", "invalid character at position 10");
	expect_error("0 0 * * \xc3\xa9", "invalid character at position 9");
}

static void test_parse_error_is_truncated_safely(void **state)
{
	struct cron_expr e;
	char err[12];
	assert_int_equal(cron_parse("0 25 * * *", &e, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "field 2 (ho");
	assert_int_equal(cron_parse("0 25 * * *", &e, NULL, 0), -EINVAL);
	assert_int_equal(cron_parse(NULL, &e, err, sizeof(err)), -EINVAL);
}

/* ------------------------------------------------------------- next, UTC */

static void test_next_utc_simple(void **state)
{
	int64_t t = utc(2026, 5, 12, 12, 7) + 30;
	assert_int_equal(next_in("*/15 * * * *", NULL, t), utc(2026, 5, 12, 12, 15));
	/* strictly after: exactly on a match gives the following one */
	assert_int_equal(next_in("*/15 * * * *", "", utc(2026, 5, 12, 12, 15)),
			 utc(2026, 5, 12, 12, 30));
	assert_int_equal(next_in("* * * * *", "UTC", utc(2026, 5, 12, 12, 15)),
			 utc(2026, 5, 12, 12, 16));
	assert_int_equal(next_in("0 0 1 1 *", NULL, utc(2026, 5, 12, 12, 0)),
			 utc(2027, 1, 1, 0, 0));
	/* 2026-05-12 is a Tuesday; @weekly is Sunday midnight */
	assert_int_equal(next_in("@weekly", NULL, utc(2026, 5, 12, 12, 0)),
			 utc(2026, 5, 17, 0, 0));
	assert_int_equal(next_in("30 23 31 dec *", NULL, utc(2026, 12, 31, 23, 30)),
			 utc(2027, 12, 31, 23, 30));
	assert_int_equal(next_in("0 12 * * *", "Etc/UTC", utc(2026, 5, 12, 12, 0) - 1),
			 utc(2026, 5, 12, 12, 0));
	/* before 1970 works too */
	assert_int_equal(next_in("0 0 1 1 *", NULL, utc(1969, 6, 1, 0, 0)),
			 utc(1970, 1, 1, 0, 0));
}

static void test_next_dom_dow_or_rule(void **state)
{
	/* both restricted: the 10th OR any Friday (2026-03-06/13/20 are Fridays) */
	int64_t t = utc(2026, 3, 7, 0, 0);
	assert_int_equal(next_in("0 0 10 * 5", NULL, t), utc(2026, 3, 10, 0, 0));
	assert_int_equal(next_in("0 0 10 * 5", NULL, utc(2026, 3, 10, 0, 0)),
			 utc(2026, 3, 13, 0, 0));
	/* a step in day of month is a restriction too: odd days OR Fridays */
	assert_int_equal(next_in("0 0 */2 * fri", NULL, utc(2026, 3, 11, 0, 0)),
			 utc(2026, 3, 13, 0, 0));
	assert_int_equal(next_in("0 0 */2 * fri", NULL, utc(2026, 3, 19, 0, 0)),
			 utc(2026, 3, 20, 0, 0));
	/* day of week unrestricted: only the 13th */
	assert_int_equal(next_in("0 0 13 * *", NULL, t), utc(2026, 3, 13, 0, 0));
	assert_int_equal(next_in("0 0 13 * *", NULL, utc(2026, 3, 13, 0, 0)),
			 utc(2026, 4, 13, 0, 0));
	/* day of month unrestricted ("*" or "1-31"): only Fridays */
	assert_int_equal(next_in("0 0 * * 5", NULL, utc(2026, 3, 13, 0, 0)),
			 utc(2026, 3, 20, 0, 0));
	assert_int_equal(next_in("0 0 1-31 * 5", NULL, utc(2026, 3, 13, 0, 0)),
			 utc(2026, 3, 20, 0, 0));
	/* the month restricts both: Friday 13th of November 2026 */
	assert_int_equal(next_in("0 0 13 nov 5", NULL, t), utc(2026, 11, 6, 0, 0));
}

static void test_next_leap_day(void **state)
{
	assert_int_equal(next_in("0 0 29 2 *", NULL, utc(2026, 1, 1, 0, 0)),
			 utc(2028, 2, 29, 0, 0));
	assert_int_equal(next_in("0 0 29 2 *", NULL, utc(2028, 2, 29, 0, 0)),
			 utc(2032, 2, 29, 0, 0));
	assert_int_equal(next_in("0 0 31 * *", NULL, utc(2026, 1, 31, 0, 0)),
			 utc(2026, 3, 31, 0, 0));
}

static void test_next_impossible_returns_minus_one(void **state)
{
	assert_int_equal(next_in("0 0 30 2 *", NULL, utc(2026, 1, 1, 0, 0)), -1);
	assert_int_equal(next_in("0 0 31 4,6,9,11 *", "Europe/Dublin", utc(2026, 1, 1, 0, 0)),
			 -1);
	assert_int_equal(next_in("0 0 * * *", "Europe/Nowhere", utc(2026, 1, 1, 0, 0)), -1);
	assert_int_equal(next_in("0 0 * * *", NULL, INT64_MAX), -1);
	assert_int_equal(next_in("0 0 * * *", NULL, INT64_MIN), -1);
}

/* ------------------------------------------------------- next, in zones */

static void test_next_weekday_0600_dublin_winter_and_summer(void **state)
{
	REQUIRE_ZONE("Europe/Dublin");
	/* winter, GMT = UTC: Wed 2026-01-14 12:00Z -> Thu 06:00 GMT
	 * TZ=Europe/Dublin date -d '2026-01-15 06:00' +%s -> 1768456800 */
	assert_int_equal(next_in("0 6 * * 1-5", "Europe/Dublin", 1768392000), 1768456800);
	/* Fri 2026-01-16 12:00Z -> Mon 2026-01-19 06:00 GMT
	 * TZ=Europe/Dublin date -d '2026-01-19 06:00' +%s -> 1768802400 */
	assert_int_equal(next_in("0 6 * * 1-5", "Europe/Dublin", 1768564800), 1768802400);
	/* summer, IST = UTC+1: Wed 2026-07-15 12:00Z -> Thu 06:00 IST = 05:00Z
	 * TZ=Europe/Dublin date -d '2026-07-16 06:00' +%s -> 1784178000 */
	assert_int_equal(next_in("0 6 * * 1-5", "Europe/Dublin", 1784116800), 1784178000);
}

static void test_next_dst_gap_runs_at_first_minute_after_gap(void **state)
{
	REQUIRE_ZONE("Europe/Dublin");
	/* 2026-03-29: 01:00 GMT -> 02:00 IST at 01:00Z; 01:30 does not exist.
	 * The job runs at 02:00 IST the same day:
	 * TZ=Europe/Dublin date -d @1774746000 -> 2026-03-29 02:00:00 IST
	 * (after = date -u -d '2026-03-28 12:00' +%s = 1774699200) */
	assert_int_equal(next_in("30 1 * * *", "Europe/Dublin", 1774699200), 1774746000);
	/* and then normally the next day, 01:30 IST = 00:30Z:
	 * TZ=Europe/Dublin date -d '2026-03-30 01:30' +%s -> 1774830600 */
	assert_int_equal(next_in("30 1 * * *", "Europe/Dublin", 1774746000), 1774830600);
	/* several skipped minutes still give a single run at 02:00 IST */
	assert_int_equal(next_in("*/15 1 * * *", "Europe/Dublin", 1774745100 /* 00:45Z */),
			 1774746000);
	assert_int_equal(next_in("*/15 1,2 * * *", "Europe/Dublin", 1774746000),
			 1774746000 + 15 * 60);
	/* a time after the gap is unaffected: 02:30 IST = 01:30Z */
	assert_int_equal(next_in("30 2 * * *", "Europe/Dublin", 1774699200), 1774747800);
}

static void test_next_dst_repeat_runs_once_at_first_occurrence(void **state)
{
	REQUIRE_ZONE("Europe/Dublin");
	/* 2026-10-25: 02:00 IST -> 01:00 GMT at 01:00Z; 01:30 happens twice:
	 * date -u -d '2026-10-25 00:30' +%s -> 1792888200 (01:30 IST, the first)
	 * date -u -d '2026-10-25 01:30' +%s -> 1792891800 (01:30 GMT, the second)
	 * after = date -u -d '2026-10-24 12:00' +%s = 1792843200 */
	assert_int_equal(next_in("30 1 * * *", "Europe/Dublin", 1792843200), 1792888200);
	/* not again at 01:30 GMT; next is 2026-10-26 01:30 GMT:
	 * date -u -d '2026-10-26 01:30' +%s -> 1792978200 */
	assert_int_equal(next_in("30 1 * * *", "Europe/Dublin", 1792888200), 1792978200);
	/* even if the daemon starts between the two 01:30s */
	assert_int_equal(next_in("30 1 * * *", "Europe/Dublin", 1792891800 - 60), 1792978200);
	/* a time after the repeated hour: 02:15 GMT = 02:15Z */
	assert_int_equal(next_in("15 2 * * *", "Europe/Dublin", 1792888200), 1792894500);
}

static void test_next_dst_repeat_every_hour_job_runs_in_both_passes(void **state)
{
	REQUIRE_ZONE("Europe/Dublin");
	/* hour field "*": a cadence, not an appointment; 01:30 IST (00:30Z) then
	 * 01:30 GMT (01:30Z) then 02:30 GMT (02:30Z) */
	assert_int_equal(next_in("30 * * * *", "Europe/Dublin", 1792888200 - 60), 1792888200);
	assert_int_equal(next_in("30 * * * *", "Europe/Dublin", 1792888200), 1792891800);
	assert_int_equal(next_in("30 * * * *", "Europe/Dublin", 1792891800), 1792895400);
	/* every minute: 01:59 IST (00:59Z) is followed by 01:00 GMT (01:00Z) */
	assert_int_equal(next_in("* * * * *", "Europe/Dublin", 1792890000 - 60), 1792890000);
}

static void test_next_new_york_both_transitions(void **state)
{
	REQUIRE_ZONE("America/New_York");
	/* 2026-03-08: 02:00 EST -> 03:00 EDT at 07:00Z; 02:30 does not exist.
	 * TZ=America/New_York date -d @1772953200 -> 2026-03-08 03:00:00 EDT
	 * after = date -u -d '2026-03-07 12:00' +%s = 1772884800 */
	assert_int_equal(next_in("30 2 * * *", "America/New_York", 1772884800), 1772953200);
	/* next day 02:30 EDT = 06:30Z: TZ=America/New_York date -d '2026-03-09 02:30' +%s */
	assert_int_equal(next_in("30 2 * * *", "America/New_York", 1772953200), 1773037800);
	/* 2026-11-01: 02:00 EDT -> 01:00 EST at 06:00Z; 01:30 twice.
	 * TZ=America/New_York date -d @1793511000 -> 2026-11-01 01:30:00 EDT (first)
	 * TZ=America/New_York date -d @1793601000 -> 2026-11-02 01:30:00 EST
	 * after = date -u -d '2026-10-31 12:00' +%s = 1793448000 */
	assert_int_equal(next_in("30 1 * * *", "America/New_York", 1793448000), 1793511000);
	assert_int_equal(next_in("30 1 * * *", "America/New_York", 1793511000), 1793601000);
}

static void test_next_lord_howe_half_hour_dst(void **state)
{
	REQUIRE_ZONE("Australia/Lord_Howe");
	/* 2026-10-04: 02:00 +1030 -> 02:30 +11 at 15:30Z Oct 3; 02:15 does not exist.
	 * TZ=Australia/Lord_Howe date -d @1791041400 -> 2026-10-04 02:30:00 +11
	 * after = date -u -d '2026-10-03 00:00' +%s = 1790985600 */
	assert_int_equal(next_in("15 2 * * *", "Australia/Lord_Howe", 1790985600), 1791041400);
	/* 02:45 +11 exists: 15:45Z */
	assert_int_equal(next_in("45 2 * * *", "Australia/Lord_Howe", 1790985600),
			 1791041400 + 15 * 60);
	/* 2026-04-05: 02:00 +11 -> 01:30 +1030 at 15:00Z Apr 4; 01:45 twice.
	 * TZ=Australia/Lord_Howe date -d @1775313900 -> 2026-04-05 01:45:00 +11
	 * TZ=Australia/Lord_Howe date -d @1775402100 -> 2026-04-06 01:45:00 +1030
	 * after = date -u -d '2026-04-04 00:00' +%s = 1775260800 */
	assert_int_equal(next_in("45 1 * * *", "Australia/Lord_Howe", 1775260800), 1775313900);
	assert_int_equal(next_in("45 1 * * *", "Australia/Lord_Howe", 1775313900), 1775402100);
}

static void test_next_kolkata_half_hour_offset_no_dst(void **state)
{
	REQUIRE_ZONE("Asia/Kolkata");
	/* TZ=Asia/Kolkata date -d @1777606200 -> 2026-05-01 09:00:00 IST
	 * after = date -u -d '2026-05-01 00:00' +%s = 1777593600 */
	assert_int_equal(next_in("0 9 * * *", "Asia/Kolkata", 1777593600), 1777606200);
	/* local midnight is 18:30Z the day before */
	assert_int_equal(next_in("0 0 * * *", "Asia/Kolkata", 1777593600),
			 utc(2026, 5, 1, 18, 30));
}

static void test_next_2040_uses_footer_rule(void **state)
{
	REQUIRE_ZONE("Europe/Dublin");
	/* The file's table ends in 2037; 2040 comes from "IST-1GMT0,M10.5.0,M3.5.0/1".
	 * Gap 2040-03-25: TZ=Europe/Dublin date -d @2216250000 -> 2040-03-25 02:00:00 IST
	 * after = date -u -d '2040-03-24 12:00' +%s = 2216203200 */
	assert_int_equal(next_in("30 1 * * *", "Europe/Dublin", 2216203200), 2216250000);
	/* Summer: TZ=Europe/Dublin date -d @2224753200 -> 2040-07-01 12:00:00 IST
	 * after = date -u -d '2040-07-01 00:00' +%s = 2224713600 */
	assert_int_equal(next_in("0 12 * * *", "Europe/Dublin", 2224713600), 2224753200);
	/* Repeat 2040-10-28: TZ=Europe/Dublin date -d @2234997000 -> 2040-10-28 01:30:00 IST
	 * then TZ=Europe/Dublin date -d @2235087000 -> 2040-10-29 01:30:00 GMT
	 * after = date -u -d '2040-10-27 12:00' +%s = 2234952000 */
	assert_int_equal(next_in("30 1 * * *", "Europe/Dublin", 2234952000), 2234997000);
	assert_int_equal(next_in("30 1 * * *", "Europe/Dublin", 2234997000), 2235087000);

	/* Offsets at the 2100 transitions:
	 * TZ=Europe/Dublin date -d @4109878799 -> 2100-03-28 00:59:59 +0000
	 * TZ=Europe/Dublin date -d @4109878800 -> 2100-03-28 02:00:00 +0100
	 * TZ=Europe/Dublin date -d @4128627599 -> 2100-10-31 01:59:59 +0100
	 * TZ=Europe/Dublin date -d @4128627600 -> 2100-10-31 01:00:00 +0000 */
	char err[256];
	struct sched_zone *z = sched_zone_load("Europe/Dublin", err, sizeof(err));
	assert_non_null(z);
	assert_int_equal(sched_zone_utc_offset(z, 4109878799), 0);
	assert_int_equal(sched_zone_utc_offset(z, 4109878800), 3600);
	assert_int_equal(sched_zone_utc_offset(z, 4128627599), 3600);
	assert_int_equal(sched_zone_utc_offset(z, 4128627600), 0);
	sched_zone_free(z);
}

static void test_next_new_york_2045_footer(void **state)
{
	REQUIRE_ZONE("America/New_York");
	/* TZ=America/New_York date -d @2382786000 -> 2045-07-04 09:00:00 EDT
	 * after = date -u -d '2045-07-04 00:00' +%s = 2382739200 */
	assert_int_equal(next_in("0 9 * * *", "America/New_York", 2382739200), 2382786000);
}

static void test_next_zone_api_matches_convenience(void **state)
{
	REQUIRE_ZONE("Europe/Dublin");
	char err[256];
	struct sched_zone *z = sched_zone_load("Europe/Dublin", err, sizeof(err));
	assert_non_null(z);
	assert_string_equal(sched_zone_name(z), "Europe/Dublin");
	struct cron_expr e = parse_ok("30 1 * * *");
	assert_int_equal(cron_next_zone(&e, z, 1774699200), 1774746000);
	for (int64_t t = 1774699200; t < 1774699200 + 400 * 86400; t += 86400 * 7 + 3659)
		assert_int_equal(cron_next_zone(&e, z, t), cron_next(&e, "Europe/Dublin", t));
	sched_zone_free(z);
	sched_zone_free(NULL);

	struct sched_zone *u = sched_zone_load(NULL, err, sizeof(err));
	assert_non_null(u);
	assert_string_equal(sched_zone_name(u), "UTC");
	assert_int_equal(cron_next_zone(&e, u, utc(2026, 5, 1, 0, 0)), utc(2026, 5, 1, 1, 30));
	sched_zone_free(u);
}

/* ---------------------------------------------------------- zone names */

static void test_tz_valid(void **state)
{
	assert_true(schedule_tz_valid(NULL));
	assert_true(schedule_tz_valid(""));
	assert_true(schedule_tz_valid("UTC"));
	if (zone_exists("Europe/Dublin"))
		assert_true(schedule_tz_valid("Europe/Dublin"));
	if (zone_exists("Etc/GMT+5"))
		assert_true(schedule_tz_valid("Etc/GMT+5"));
	if (zone_exists("America/Port-au-Prince"))
		assert_true(schedule_tz_valid("America/Port-au-Prince"));
	assert_false(schedule_tz_valid("Europe/Dubin"));
	assert_false(schedule_tz_valid("/etc/passwd"));
	assert_false(schedule_tz_valid("../../../etc/passwd"));
	assert_false(schedule_tz_valid("Europe/../Europe/Dublin"));
	assert_false(schedule_tz_valid("Europe//Dublin"));
	assert_false(schedule_tz_valid("Europe/Dublin/"));
	assert_false(schedule_tz_valid("Europe/Dublin "));
	assert_false(schedule_tz_valid("Europe"));        /* a directory */
	assert_false(schedule_tz_valid("zone1970.tab")); /* '.' not allowed */
	if (zone_exists("leapseconds"))
		assert_false(schedule_tz_valid("leapseconds")); /* not TZif */
	char longname[400];
	memset(longname, 'A', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_false(schedule_tz_valid(longname));
}

static void test_zone_load_error_messages(void **state)
{
	char err[256];
	assert_null(sched_zone_load("Europe/Dubin", err, sizeof(err)));
	assert_string_equal(err, "unknown time zone 'Europe/Dubin'");
	assert_null(sched_zone_load("../etc/passwd", err, sizeof(err)));
	assert_string_equal(err,
			    "invalid time zone name (expected an IANA name such as Europe/Dublin)");
	if (zone_exists("leapseconds")) {
		assert_null(sched_zone_load("leapseconds", err, sizeof(err)));
		assert_string_equal(err, "time zone 'leapseconds': not a TZif file");
	}
}

/* ------------------------------------------------- TZif files in memory */

struct tzif_spec {
	char version;           /* 0, '2', '3' */
	size_t ntimes;
	const int64_t *times;
	const uint8_t *idx;
	size_t ntypes;
	const int32_t *utoff;
	const char *footer;     /* NULL: none written (v1) */
};

static size_t put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
	return 4;
}

static size_t put_block(unsigned char *p, const struct tzif_spec *s, char version, int tsize)
{
	size_t n = 0;
	memcpy(p, "TZif", 4);
	p[4] = (unsigned char)version;
	memset(p + 5, 0, 15);
	n = 20;
	n += put32(p + n, 0);                  /* isutcnt */
	n += put32(p + n, 0);                  /* isstdcnt */
	n += put32(p + n, 0);                  /* leapcnt */
	n += put32(p + n, (uint32_t)s->ntimes);
	n += put32(p + n, (uint32_t)s->ntypes);
	n += put32(p + n, 4);                  /* charcnt: "XXX\0" */
	for (size_t i = 0; i < s->ntimes; i++) {
		if (tsize == 8) {
			n += put32(p + n, (uint32_t)((uint64_t)s->times[i] >> 32));
			n += put32(p + n, (uint32_t)s->times[i]);
		} else {
			n += put32(p + n, (uint32_t)(int32_t)s->times[i]);
		}
	}
	for (size_t i = 0; i < s->ntimes; i++)
		p[n++] = s->idx[i];
	for (size_t i = 0; i < s->ntypes; i++) {
		n += put32(p + n, (uint32_t)s->utoff[i]);
		p[n++] = 0;
		p[n++] = 0;
	}
	memcpy(p + n, "XXX", 4);
	return n + 4;
}

static size_t build_tzif(unsigned char *buf, const struct tzif_spec *s)
{
	size_t n = put_block(buf, s, s->version, 4);
	if (s->version >= '2') {
		n += put_block(buf + n, s, s->version, 8);
		buf[n++] = '\n';
		size_t fl = strlen(s->footer ? s->footer : "");
		memcpy(buf + n, s->footer ? s->footer : "", fl);
		n += fl;
		buf[n++] = '\n';
	}
	return n;
}

static struct sched_zone *footer_zone(const char *footer)
{
	static const int32_t off0[] = {0};
	struct tzif_spec s = {.version = '2', .ntypes = 1, .utoff = off0, .footer = footer};
	unsigned char buf[512];
	char err[256] = "";
	size_t len = build_tzif(buf, &s);
	struct sched_zone *z = sched_zone_from_tzif(footer, buf, len, err, sizeof(err));
	if (!z)
		fail_msg("footer zone \"%s\": %s", footer, err);
	return z;
}

static void test_slim_file_footer_only_matches_full_file(void **state)
{
	/* A "slim" file: no transitions, everything from the footer. */
	struct sched_zone *z = footer_zone("IST-1GMT0,M10.5.0,M3.5.0/1");
	struct cron_expr e = parse_ok("30 1 * * *");
	assert_int_equal(cron_next_zone(&e, z, 1774699200), 1774746000); /* gap, as above */
	assert_int_equal(cron_next_zone(&e, z, 1792843200), 1792888200); /* repeat */
	assert_int_equal(cron_next_zone(&e, z, 1792888200), 1792978200);
	e = parse_ok("0 6 * * 1-5");
	assert_int_equal(cron_next_zone(&e, z, 1784116800), 1784178000);
	sched_zone_free(z);

	z = footer_zone("EST5EDT,M3.2.0,M11.1.0");
	/* TZ=America/New_York date -d @1772953199 -> 2026-03-08 01:59:59 EST */
	assert_int_equal(sched_zone_utc_offset(z, 1772953199), -5 * 3600);
	assert_int_equal(sched_zone_utc_offset(z, 1772953200), -4 * 3600);
	assert_int_equal(sched_zone_utc_offset(z, 1793512799), -4 * 3600);
	assert_int_equal(sched_zone_utc_offset(z, 1793512800), -5 * 3600);
	sched_zone_free(z);

	/* southern hemisphere, half-hour offsets, <quoted> names */
	z = footer_zone("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0");
	e = parse_ok("15 2 * * *");
	assert_int_equal(cron_next_zone(&e, z, 1790985600), 1791041400);
	e = parse_ok("45 1 * * *");
	assert_int_equal(cron_next_zone(&e, z, 1775260800), 1775313900);
	assert_int_equal(cron_next_zone(&e, z, 1775313900), 1775402100);
	sched_zone_free(z);
}

static void test_footer_julian_and_zero_based_days(void **state)
{
	/* Facts from glibc, which reads POSIX TZ strings itself, e.g.
	 * TZ='XST-2XDT,J60/2,J300/3' date -d @1803859200 -> 2027-03-01 03:00:00 +0300 */
	struct sched_zone *j = footer_zone("XST-2XDT,J60/2,J300/3");
	struct sched_zone *n = footer_zone("XST-2XDT,59/2,300/3");
	/* 2027 (not leap): J60 and day 59 are both March 1 */
	assert_int_equal(sched_zone_utc_offset(j, 1803859199), 7200);
	assert_int_equal(sched_zone_utc_offset(j, 1803859200), 10800);
	assert_int_equal(sched_zone_utc_offset(n, 1803859199), 7200);
	assert_int_equal(sched_zone_utc_offset(n, 1803859200), 10800);
	/* 2028 (leap): J60 is March 1, day 59 is February 29 */
	assert_int_equal(sched_zone_utc_offset(j, 1835395200), 7200);
	assert_int_equal(sched_zone_utc_offset(n, 1835395199), 7200);
	assert_int_equal(sched_zone_utc_offset(n, 1835395200), 10800);
	assert_int_equal(sched_zone_utc_offset(j, 1835481599), 7200);
	assert_int_equal(sched_zone_utc_offset(j, 1835481600), 10800);
	/* end: 2027 J300 = Oct 27, day 300 = Oct 28, 03:00 +0300 = 00:00Z
	 * TZ='XST-2XDT,J60/2,J300/3' date -d @1824595200 -> 2027-10-27 02:00:00 +0200
	 * TZ='XST-2XDT,59/2,300/3' date -d @1824681600 -> 2027-10-28 02:00:00 +0200 */
	assert_int_equal(sched_zone_utc_offset(j, 1824595199), 10800);
	assert_int_equal(sched_zone_utc_offset(j, 1824595200), 7200);
	assert_int_equal(sched_zone_utc_offset(n, 1824595200), 10800);
	assert_int_equal(sched_zone_utc_offset(n, 1824681599), 10800);
	assert_int_equal(sched_zone_utc_offset(n, 1824681600), 7200);
	sched_zone_free(j);
	sched_zone_free(n);

	/* DST all year (RFC 8536 3.3.1 example): no transition ever */
	struct sched_zone *a = footer_zone("EST5EDT,0/0,J365/25");
	assert_int_equal(sched_zone_utc_offset(a, utc(2026, 1, 1, 0, 0)), -4 * 3600);
	assert_int_equal(sched_zone_utc_offset(a, utc(2026, 7, 1, 0, 0)), -4 * 3600);
	assert_int_equal(sched_zone_utc_offset(a, utc(2026, 12, 31, 23, 59)), -4 * 3600);
	struct cron_expr e = parse_ok("0 0 1 1 *");
	assert_int_equal(cron_next_zone(&e, a, utc(2026, 6, 1, 0, 0)), utc(2027, 1, 1, 4, 0));
	sched_zone_free(a);

	/* no DST, offset with minutes */
	struct sched_zone *k = footer_zone("IST-5:30");
	assert_int_equal(sched_zone_utc_offset(k, utc(2030, 6, 1, 0, 0)), 5 * 3600 + 1800);
	sched_zone_free(k);
}

static void test_tzif_v1_and_table_then_footer(void **state)
{
	/* A v1 file: +0, then +1 from 1000000000, then +2 from 1100000000. */
	static const int64_t times[] = {1000000000, 1100000000};
	static const uint8_t idx[] = {1, 2};
	static const int32_t offs[] = {0, 3600, 7200};
	struct tzif_spec s = {.version = 0, .ntimes = 2, .times = times, .idx = idx,
			      .ntypes = 3, .utoff = offs};
	unsigned char buf[512];
	char err[256];
	size_t len = build_tzif(buf, &s);
	struct sched_zone *z = sched_zone_from_tzif("v1", buf, len, err, sizeof(err));
	assert_non_null(z);
	assert_int_equal(sched_zone_utc_offset(z, 999999999), 0);
	assert_int_equal(sched_zone_utc_offset(z, 1000000000), 3600);
	assert_int_equal(sched_zone_utc_offset(z, 1099999999), 3600);
	assert_int_equal(sched_zone_utc_offset(z, 1100000000), 7200);
	assert_int_equal(sched_zone_utc_offset(z, 2000000000), 7200); /* last type stays */
	sched_zone_free(z);

	/* v2: the table, then the footer after its last transition */
	s.version = '2';
	s.footer = "XST-2";
	len = build_tzif(buf, &s);
	z = sched_zone_from_tzif("v2", buf, len, err, sizeof(err));
	assert_non_null(z);
	assert_int_equal(sched_zone_utc_offset(z, 1000000000), 3600);
	assert_int_equal(sched_zone_utc_offset(z, 1100000000), 7200);
	assert_int_equal(sched_zone_utc_offset(z, 2000000000), 7200);
	/* the last transition, +1 -> +2 at 1100000000 = 2004-11-09 11:33:20Z,
	 * skips local 12:33:20-13:33:20: 12:50 runs at 13:34 local */
	struct cron_expr e = parse_ok("50 12 * * *");
	assert_int_equal(cron_next_zone(&e, z, 1099990000), 1100000000 + 40);
	sched_zone_free(z);
}

static void test_tzif_rejects_bad_files(void **state)
{
	static const int32_t off0[] = {0};
	struct tzif_spec s = {.version = '2', .ntypes = 1, .utoff = off0, .footer = "UTC0"};
	unsigned char buf[512];
	char err[256];
	size_t len = build_tzif(buf, &s);
	struct sched_zone *z = sched_zone_from_tzif("ok", buf, len, err, sizeof(err));
	assert_non_null(z);
	sched_zone_free(z);

	assert_null(sched_zone_from_tzif("t", "TZiX", 4, err, sizeof(err)));
	assert_string_equal(err, "time zone 't': not a TZif file");
	assert_null(sched_zone_from_tzif("t", buf, 50, err, sizeof(err)));
	assert_string_equal(err, "time zone 't': truncated");
	for (size_t cut = 0; cut < len - 1; cut++) { /* every truncation fails cleanly */
		z = sched_zone_from_tzif("t", buf, cut, err, sizeof(err));
		if (z)
			fail_msg("truncated to %zu bytes was accepted", cut);
	}

	s.footer = "EST5EDT,M13.1.0,M11.1.0";
	len = build_tzif(buf, &s);
	assert_null(sched_zone_from_tzif("t", buf, len, err, sizeof(err)));
	assert_string_equal(err, "time zone 't': footer TZ rule not understood");

	static const int64_t times[] = {2000, 1000};
	static const uint8_t idx[] = {0, 0};
	struct tzif_spec bad = {.version = '2', .ntimes = 2, .times = times, .idx = idx,
				.ntypes = 1, .utoff = off0, .footer = ""};
	len = build_tzif(buf, &bad);
	assert_null(sched_zone_from_tzif("t", buf, len, err, sizeof(err)));
	assert_string_equal(err, "time zone 't': transitions out of order");

	static const uint8_t bad_idx[] = {0, 5};
	static const int64_t good_times[] = {1000, 2000};
	bad.times = good_times;
	bad.idx = bad_idx;
	len = build_tzif(buf, &bad);
	assert_null(sched_zone_from_tzif("t", buf, len, err, sizeof(err)));
	assert_string_equal(err, "time zone 't': bad type index");
}

/* cron_next() from several threads at once (the daemon's libuv workers):
 * the zone cache is shared, results must not differ from one thread's. */
struct thread_case {
	const char *tz;
	int64_t expected[50];
	int failures;
};

static void *next_many(void *arg)
{
	struct thread_case *c = arg;
	struct cron_expr e;
	char err[128];
	if (cron_parse("30 1 * * *", &e, err, sizeof(err)) != 0)
		return NULL;
	for (int round = 0; round < 20; round++)
		for (int i = 0; i < 50; i++)
			if (cron_next(&e, c->tz, 1774699200 + i * 86400 * 7) != c->expected[i])
				c->failures++;
	return NULL;
}

static void test_next_from_several_threads(void **state)
{
	REQUIRE_ZONE("Europe/Dublin");
	REQUIRE_ZONE("America/New_York");
	struct thread_case cases[4] = {{.tz = "Europe/Dublin"}, {.tz = "America/New_York"},
				       {.tz = "Europe/Dublin"}, {.tz = "America/New_York"}};
	struct cron_expr e = parse_ok("30 1 * * *");
	for (int k = 0; k < 4; k++) {
		char err[256];
		struct sched_zone *z = sched_zone_load(cases[k].tz, err, sizeof(err));
		assert_non_null(z);
		for (int i = 0; i < 50; i++)
			cases[k].expected[i] = cron_next_zone(&e, z, 1774699200 + i * 86400 * 7);
		sched_zone_free(z);
	}
	schedule_cache_clear(); /* the threads race to load the zones */
	pthread_t th[4];
	for (int k = 0; k < 4; k++)
		assert_int_equal(pthread_create(&th[k], NULL, next_many, &cases[k]), 0);
	for (int k = 0; k < 4; k++) {
		assert_int_equal(pthread_join(th[k], NULL), 0);
		assert_int_equal(cases[k].failures, 0);
	}
}

static int teardown_cache(void **state)
{
	schedule_cache_clear();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_star_sets_every_value),
		cmocka_unit_test(test_parse_list_range_and_steps),
		cmocka_unit_test(test_parse_names_any_case),
		cmocka_unit_test(test_parse_seven_is_sunday),
		cmocka_unit_test(test_parse_macros),
		cmocka_unit_test(test_parse_error_messages),
		cmocka_unit_test(test_parse_error_is_truncated_safely),
		cmocka_unit_test(test_next_utc_simple),
		cmocka_unit_test(test_next_dom_dow_or_rule),
		cmocka_unit_test(test_next_leap_day),
		cmocka_unit_test(test_next_impossible_returns_minus_one),
		cmocka_unit_test(test_next_weekday_0600_dublin_winter_and_summer),
		cmocka_unit_test(test_next_dst_gap_runs_at_first_minute_after_gap),
		cmocka_unit_test(test_next_dst_repeat_runs_once_at_first_occurrence),
		cmocka_unit_test(test_next_dst_repeat_every_hour_job_runs_in_both_passes),
		cmocka_unit_test(test_next_new_york_both_transitions),
		cmocka_unit_test(test_next_lord_howe_half_hour_dst),
		cmocka_unit_test(test_next_kolkata_half_hour_offset_no_dst),
		cmocka_unit_test(test_next_2040_uses_footer_rule),
		cmocka_unit_test(test_next_new_york_2045_footer),
		cmocka_unit_test(test_next_zone_api_matches_convenience),
		cmocka_unit_test(test_next_from_several_threads),
		cmocka_unit_test(test_tz_valid),
		cmocka_unit_test(test_zone_load_error_messages),
		cmocka_unit_test(test_slim_file_footer_only_matches_full_file),
		cmocka_unit_test(test_footer_julian_and_zero_based_days),
		cmocka_unit_test(test_tzif_v1_and_table_then_footer),
		cmocka_unit_test(test_tzif_rejects_bad_files),
	};
	return cmocka_run_group_tests(tests, NULL, teardown_cache);
}
