/* schedule.c — 5-field cron expressions and their next run in an IANA time
 * zone read straight from the system's TZif files.
 *
 * Why not localtime_r()/mktime(): the daemon is multi-threaded (libuv worker
 * threads call localtime), and changing TZ per job with setenv()+tzset() is a
 * data race. So the zone is parsed here (RFC 8536: the v2+ 64-bit section,
 * else v1, plus the footer POSIX TZ rule for instants after the last
 * transition, which is all that "slim" files carry) and evaluated without
 * touching any global state.
 *
 * DST rules for cron_next() (the tests are named after them):
 *  - Gap (spring forward): a local time that does not exist that day runs at
 *    the first valid minute after the gap, once (Europe/Dublin 2026-03-29:
 *    01:00 GMT jumps to 02:00 IST, so "30 1 * * *" runs at 02:00 IST =
 *    01:00 UTC). Like cronie and systemd, the job still runs that day.
 *  - Repeat (fall back): a local time that occurs twice runs once, at its
 *    first occurrence (Europe/Dublin 2026-10-25: "30 1 * * *" runs at
 *    01:30 IST = 00:30 UTC, not again at 01:30 GMT). Exception, as in cronie
 *    for wildcard jobs: when the hour field is "*" (every hour), the job is a
 *    cadence rather than an appointment, so it runs in both passes of the
 *    repeated hour instead of pausing for an hour.
 */
#include "schedule.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZONEINFO_DIR "/usr/share/zoneinfo"
#define ZONE_NAME_MAX 255
#define TZIF_MAX_BYTES (512 * 1024)
#define TZIF_MAX_TIMES 20000
#define TZIF_MAX_TYPES 256
#define CRON_EXPR_MAX 512
#define SEARCH_DAYS (5 * 365 + 2) /* "5 years", leap days included */
#define ZONE_CACHE_SIZE 32
/* Instants we compute with: year 0 .. year 9999, far from int64 limits. */
#define TIME_MIN INT64_C(-62167219200)
#define TIME_MAX INT64_C(253402300799)

/* ---------------------------------------------------------------- civil */

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = floor_div(y, 400);
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *year, int *month, int *day)
{
	z += 719468;
	int64_t era = floor_div(z, 146097);
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int d = (int)(doy - (153 * mp + 2) / 5 + 1);
	int m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*year = yoe + era * 400 + (m <= 2);
	*month = m;
	*day = d;
}

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int weekday_from_days(int64_t z)
{
	return (int)(((z % 7) + 11) % 7);
}

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
	static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return m == 2 && is_leap(y) ? 29 : len[m - 1];
}

/* ----------------------------------------------------------- cron parse */

struct field_spec {
	const char *name;
	int min, max;      /* accepted values */
	int star_max;      /* what "*" and "N/step" run up to (6 for weekdays) */
	const char *const *names; /* names[i] is value i + names_base */
	int names_base, names_count;
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
					  "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static const struct field_spec cron_fields[5] = {
	{"minute", 0, 59, 59, NULL, 0, 0},
	{"hour", 0, 23, 23, NULL, 0, 0},
	{"day of month", 1, 31, 31, NULL, 0, 0},
	{"month", 1, 12, 12, month_names, 1, 12},
	{"day of week", 0, 7, 6, day_names, 0, 7},
};

#define TOKEN_SHOWN 32 /* longest piece of user text echoed in a message */

static int field_error(char *err, size_t errlen, int index, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int field_error(char *err, size_t errlen, int index, const char *fmt, ...)
{
	if (err && errlen > 0) {
		int n = snprintf(err, errlen, "field %d (%s): ", index + 1, cron_fields[index].name);
		if (n >= 0 && (size_t)n < errlen) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -EINVAL;
}

static int plain_error(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int plain_error(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* All digits, at most 9 of them: the value; else -1. */
static long parse_digits(const char *s, size_t len)
{
	if (len == 0 || len > 9)
		return -1;
	long v = 0;
	for (size_t i = 0; i < len; i++) {
		if (!is_digit(s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

static bool all_digits(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_digit(s[i]))
			return false;
	return true;
}

/* One value of a field: a number in range or (month, weekday) a name. */
static int parse_value(int index, const char *s, size_t len, int *out, char *err, size_t errlen)
{
	const struct field_spec *f = &cron_fields[index];
	int shown = len > TOKEN_SHOWN ? TOKEN_SHOWN : (int)len;
	if (len == 0)
		return field_error(err, errlen, index, "missing value");
	if (is_alpha(s[0]) && f->names) {
		for (int i = 0; i < f->names_count; i++) {
			if (len == 3 && strncasecmp(s, f->names[i], 3) == 0) {
				*out = i + f->names_base;
				return 0;
			}
		}
		return field_error(err, errlen, index, "unknown name '%.*s'", shown, s);
	}
	if (!all_digits(s, len))
		return field_error(err, errlen, index, "'%.*s' is not a number", shown, s);
	long v = parse_digits(s, len);
	if (v < f->min || v > f->max)
		return field_error(err, errlen, index, "%.*s is out of range %d-%d", shown, s,
				   f->min, f->max);
	*out = (int)v;
	return 0;
}

/* One list element: "*", "N", "A-B", each optionally "/STEP". */
static int parse_element(int index, const char *s, size_t len, uint64_t *bits, char *err,
			 size_t errlen)
{
	const struct field_spec *f = &cron_fields[index];
	const char *slash = memchr(s, '/', len);
	size_t base_len = slash ? (size_t)(slash - s) : len;
	int lo, hi, step = 1, rc;

	if (base_len == 1 && s[0] == '*') {
		lo = f->min;
		hi = f->star_max;
	} else {
		const char *dash = memchr(s, '-', base_len);
		size_t lo_len = dash ? (size_t)(dash - s) : base_len;
		if ((rc = parse_value(index, s, lo_len, &lo, err, errlen)) < 0)
			return rc;
		if (dash) {
			if ((rc = parse_value(index, dash + 1, base_len - lo_len - 1, &hi, err,
					      errlen)) < 0)
				return rc;
			/* "fri-sun": Sunday also closes the week as 7 */
			if (index == 4 && hi == 0 && lo > 0)
				hi = 7;
			if (lo > hi) {
				int shown = base_len > TOKEN_SHOWN ? TOKEN_SHOWN : (int)base_len;
				return field_error(err, errlen, index, "range %.*s is reversed",
						   shown, s);
			}
		} else {
			/* "5/15" means 5-max/15; a plain "5" is just 5. */
			hi = slash ? (lo > f->star_max ? lo : f->star_max) : lo;
		}
	}
	if (slash) {
		const char *st = slash + 1;
		size_t st_len = len - base_len - 1;
		int shown = st_len > TOKEN_SHOWN ? TOKEN_SHOWN : (int)st_len;
		if (st_len == 0)
			return field_error(err, errlen, index, "missing step after '/'");
		if (!all_digits(st, st_len))
			return field_error(err, errlen, index, "step '%.*s' is not a number", shown,
					   st);
		long v = parse_digits(st, st_len);
		if (v == 0)
			return field_error(err, errlen, index, "step 0 is invalid");
		int step_max = f->star_max - f->min;
		if (v < 0 || v > step_max)
			return field_error(err, errlen, index, "step %.*s is out of range 1-%d",
					   shown, st, step_max);
		step = (int)v;
	}
	for (int v = lo; v <= hi; v += step)
		*bits |= UINT64_C(1) << (index == 4 && v == 7 ? 0 : v);
	return 0;
}

static int parse_field(int index, const char *s, size_t len, uint64_t *bits, char *err,
		       size_t errlen)
{
	*bits = 0;
	size_t pos = 0;
	for (;;) {
		const char *comma = memchr(s + pos, ',', len - pos);
		size_t end = comma ? (size_t)(comma - s) : len;
		if (end == pos)
			return field_error(err, errlen, index, "empty list element");
		int rc = parse_element(index, s + pos, end - pos, bits, err, errlen);
		if (rc < 0)
			return rc;
		if (!comma)
			return 0;
		pos = end + 1;
	}
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

struct cron_macro {
	const char *name, *expansion;
};

static const struct cron_macro cron_macros[] = {
	{"@hourly", "0 * * * *"},  {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
	{"@weekly", "0 0 * * 0"},  {"@monthly", "0 0 1 * *"},  {"@yearly", "0 0 1 1 *"},
	{"@annually", "0 0 1 1 *"},
};

int cron_parse(const char *expr, struct cron_expr *out, char *err, size_t errlen)
{
	if (err && errlen > 0)
		err[0] = '\0';
	if (!expr || !out)
		return plain_error(err, errlen, "no expression");
	size_t total = strnlen(expr, CRON_EXPR_MAX + 1);
	if (total > CRON_EXPR_MAX)
		return plain_error(err, errlen, "expression is longer than %d characters",
				   CRON_EXPR_MAX);
	for (size_t i = 0; i < total; i++) {
		unsigned char c = (unsigned char)expr[i];
		if (c != '\t' && (c < 0x20 || c > 0x7e))
			return plain_error(err, errlen, "invalid character at position %zu", i + 1);
	}

	const char *start = expr, *end = expr + total;
	while (start < end && is_blank(*start))
		start++;
	while (end > start && is_blank(end[-1]))
		end--;
	if (start < end && *start == '@') {
		size_t mlen = (size_t)(end - start);
		for (size_t i = 0; i < XP_ARRAY_SIZE(cron_macros); i++) {
			if (strlen(cron_macros[i].name) == mlen &&
			    strncasecmp(start, cron_macros[i].name, mlen) == 0)
				return cron_parse(cron_macros[i].expansion, out, err, errlen);
		}
		int shown = mlen > TOKEN_SHOWN ? TOKEN_SHOWN : (int)mlen;
		return plain_error(err, errlen,
				   "unknown macro '%.*s' (use @hourly, @daily, @weekly, @monthly "
				   "or @yearly)",
				   shown, start);
	}

	const char *tok[5];
	size_t tok_len[5];
	int count = 0;
	for (const char *p = start; p < end;) {
		while (p < end && is_blank(*p))
			p++;
		if (p == end)
			break;
		const char *q = p;
		while (q < end && !is_blank(*q))
			q++;
		if (count < 5) {
			tok[count] = p;
			tok_len[count] = (size_t)(q - p);
		}
		count++;
		p = q;
	}
	if (count != 5)
		return plain_error(err, errlen, "expected 5 fields, got %d", count);

	uint64_t bits[5];
	for (int i = 0; i < 5; i++) {
		int rc = parse_field(i, tok[i], tok_len[i], &bits[i], err, errlen);
		if (rc < 0)
			return rc;
	}
	struct cron_expr e = {
		.minutes = bits[0],
		.hours = (uint32_t)bits[1],
		.mdays = (uint32_t)bits[2],
		.months = (uint16_t)bits[3],
		.wdays = (uint8_t)bits[4],
	};
	/* A field is unrestricted when it allows every value ("*", "1-31",
	 * "*\/1"): then the other day field alone decides (AND); when both are
	 * restricted a day matching either runs (the classic cron OR rule). */
	e.mday_star = e.mdays == UINT32_C(0xFFFFFFFE);
	e.wday_star = e.wdays == 0x7F;
	*out = e;
	return 0;
}

/* ------------------------------------------------------------- TZ rules */

enum rule_kind { RULE_JULIAN_NOLEAP, RULE_YDAY, RULE_MONTH_WEEK_DAY };

struct tz_rule_date {
	enum rule_kind kind;
	int day;          /* Jn: 1-365; n: 0-365; M: weekday 0-6 */
	int week, month;  /* M only: week 1-5 (5 = last), month 1-12 */
	int32_t time;     /* seconds after local midnight, -167h..167h */
};

struct tz_rule {
	bool valid;
	bool has_dst;
	int32_t std_off, dst_off; /* seconds east of UTC */
	struct tz_rule_date start, end;
};

struct tz_type {
	int32_t utoff;
};

struct sched_zone {
	char *name;
	int64_t *times;    /* transition instants, ascending */
	uint8_t *idx;      /* type index for each transition */
	size_t timecnt;
	struct tz_type *types;
	size_t typecnt;
	struct tz_rule footer;
};

/* "[+-]hh[:mm[:ss]]" with hh <= max_hours; seconds in *out. */
static const char *parse_tz_time(const char *p, int max_hours, int32_t *out)
{
	int sign = 1;
	if (*p == '+' || *p == '-')
		sign = *p++ == '-' ? -1 : 1;
	int part[3] = {0, 0, 0};
	for (int i = 0; i < 3; i++) {
		if (i > 0) {
			if (*p != ':')
				break;
			p++;
		}
		int digits = 0, v = 0;
		while (is_digit(*p) && digits < 3) {
			v = v * 10 + (*p++ - '0');
			digits++;
		}
		if (digits == 0 || is_digit(*p))
			return NULL;
		if ((i == 0 && v > max_hours) || (i > 0 && v > 59))
			return NULL;
		part[i] = v;
	}
	*out = sign * (part[0] * 3600 + part[1] * 60 + part[2]);
	return p;
}

static const char *parse_tz_name(const char *p)
{
	const char *s = p;
	if (*p == '<') {
		p++;
		while (is_alpha(*p) || is_digit(*p) || *p == '+' || *p == '-')
			p++;
		if (*p != '>' || p - s < 4)
			return NULL;
		return p + 1;
	}
	while (is_alpha(*p))
		p++;
	return p - s >= 3 ? p : NULL;
}

static const char *parse_tz_date(const char *p, struct tz_rule_date *d)
{
	int v;
	memset(d, 0, sizeof(*d));
	if (*p == 'M') {
		int nums[3];
		p++;
		for (int i = 0; i < 3; i++) {
			if (i > 0 && *p++ != '.')
				return NULL;
			if (!is_digit(*p))
				return NULL;
			v = 0;
			for (int n = 0; is_digit(*p); n++) {
				if (n >= 2)
					return NULL;
				v = v * 10 + (*p++ - '0');
			}
			nums[i] = v;
		}
		if (nums[0] < 1 || nums[0] > 12 || nums[1] < 1 || nums[1] > 5 || nums[2] > 6)
			return NULL;
		d->kind = RULE_MONTH_WEEK_DAY;
		d->month = nums[0];
		d->week = nums[1];
		d->day = nums[2];
	} else {
		bool julian = *p == 'J';
		if (julian)
			p++;
		if (!is_digit(*p))
			return NULL;
		v = 0;
		for (int n = 0; is_digit(*p); n++) {
			if (n >= 3)
				return NULL;
			v = v * 10 + (*p++ - '0');
		}
		if (julian ? (v < 1 || v > 365) : v > 365)
			return NULL;
		d->kind = julian ? RULE_JULIAN_NOLEAP : RULE_YDAY;
		d->day = v;
	}
	d->time = 2 * 3600;
	if (*p == '/') {
		p = parse_tz_time(p + 1, 167, &d->time);
		if (!p)
			return NULL;
	}
	return p;
}

/* POSIX TZ string as in a TZif footer, e.g. "IST-1GMT0,M10.5.0,M3.5.0/1". */
static bool parse_tz_rule(const char *s, struct tz_rule *r)
{
	const char *p = s;
	int32_t off;
	memset(r, 0, sizeof(*r));
	if (!(p = parse_tz_name(p)) || !(p = parse_tz_time(p, 24, &off)))
		return false;
	r->std_off = -off;
	r->dst_off = r->std_off;
	if (*p == '\0') {
		r->valid = true;
		return true;
	}
	if (!(p = parse_tz_name(p)))
		return false;
	r->has_dst = true;
	r->dst_off = r->std_off + 3600;
	if (*p != ',' && *p != '\0') {
		if (!(p = parse_tz_time(p, 24, &off)))
			return false;
		r->dst_off = -off;
	}
	if (*p == '\0') {
		/* No rule: POSIX leaves it to the implementation; glibc uses the US one. */
		p = ",M3.2.0,M11.1.0";
	}
	if (*p++ != ',' || !(p = parse_tz_date(p, &r->start)))
		return false;
	if (*p++ != ',' || !(p = parse_tz_date(p, &r->end)))
		return false;
	if (*p != '\0')
		return false;
	r->valid = true;
	return true;
}

/* UTC instant of a rule date in year y, given the offset in force before it. */
static int64_t rule_instant(const struct tz_rule_date *d, int64_t y, int32_t off_before)
{
	int64_t days;
	switch (d->kind) {
	case RULE_JULIAN_NOLEAP:
		days = days_from_civil(y, 1, 1) + d->day - 1 + (is_leap(y) && d->day >= 60);
		break;
	case RULE_YDAY:
		days = days_from_civil(y, 1, 1) + d->day;
		break;
	default: {
		int64_t first = days_from_civil(y, d->month, 1);
		int first_wd = weekday_from_days(first);
		int mday = 1 + (d->day - first_wd + 7) % 7 + (d->week - 1) * 7;
		while (mday > days_in_month(y, d->month))
			mday -= 7;
		days = first + mday - 1;
		break;
	}
	}
	return days * 86400 + d->time - off_before;
}

struct rule_event {
	int64_t at;
	int32_t off;  /* offset from this instant on */
};

/* The footer's transitions for the years around t, ascending, with equal
 * instants and no-op changes folded. Returns the count (<= 10). */
static size_t rule_events(const struct tz_rule *r, int64_t t, struct rule_event *ev)
{
	int64_t y;
	int m, d;
	civil_from_days(floor_div(t, 86400), &y, &m, &d);
	struct rule_event raw[10];
	size_t n = 0;
	for (int64_t yy = y - 2; yy <= y + 2; yy++) {
		struct rule_event a = {rule_instant(&r->start, yy, r->std_off), r->dst_off};
		struct rule_event b = {rule_instant(&r->end, yy, r->dst_off), r->std_off};
		if (b.at < a.at) {
			struct rule_event tmp = a;
			a = b;
			b = tmp;
		}
		raw[n++] = a;
		raw[n++] = b;
	}
	/* Insertion sort, stable: on equal instants the later-generated wins. */
	for (size_t i = 1; i < n; i++) {
		struct rule_event key = raw[i];
		size_t j = i;
		while (j > 0 && raw[j - 1].at > key.at) {
			raw[j] = raw[j - 1];
			j--;
		}
		raw[j] = key;
	}
	size_t out = 0;
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && raw[i + 1].at == raw[i].at)
			continue;
		if (out > 0 && ev[out - 1].off == raw[i].off)
			continue;
		ev[out++] = raw[i];
	}
	return out;
}

/* A stretch of time with one UTC offset: [start, end). start is the
 * transition that began it (INT64_MIN if none known) and prev_off the offset
 * before it. */
struct zone_span {
	int64_t start, end;
	int32_t off, prev_off;
};

static int32_t type_off(const struct sched_zone *z, size_t transition)
{
	return z->types[z->idx[transition]].utoff;
}

static void zone_span_at(const struct sched_zone *z, int64_t t, struct zone_span *s)
{
	size_t n = z->timecnt;
	int32_t type0 = z->types[0].utoff;

	if (!z->footer.valid || (n > 0 && t < z->times[n - 1])) {
		/* From the transition table. */
		size_t lo = 0, hi = n; /* first transition > t */
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (z->times[mid] <= t)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == 0) {
			s->start = INT64_MIN;
			s->off = s->prev_off = type0;
		} else {
			s->start = z->times[lo - 1];
			s->off = type_off(z, lo - 1);
			s->prev_off = lo >= 2 ? type_off(z, lo - 2) : type0;
		}
		s->end = lo < n ? z->times[lo] : INT64_MAX;
		return;
	}

	/* After the last transition: the footer rule. */
	const struct tz_rule *r = &z->footer;
	int64_t table_last = n > 0 ? z->times[n - 1] : INT64_MIN;
	int32_t table_prev = n >= 2 ? type_off(z, n - 2) : type0;
	s->start = table_last;
	s->prev_off = n > 0 ? table_prev : r->std_off;
	s->off = r->std_off;
	s->end = INT64_MAX;
	if (!r->has_dst) {
		if (n == 0)
			s->prev_off = s->off;
		return;
	}
	struct rule_event ev[10];
	size_t count = rule_events(r, t, ev);
	if (count == 0) { /* DST all year round */
		s->off = r->dst_off;
		if (n == 0)
			s->prev_off = s->off;
		return;
	}
	size_t i = 0; /* first event > t */
	while (i < count && ev[i].at <= t)
		i++;
	if (i == 0) {
		/* Cannot happen for sane t (events start two years back). */
		s->off = ev[0].off == r->dst_off ? r->std_off : r->dst_off;
	} else {
		s->off = ev[i - 1].off;
		if (ev[i - 1].at > table_last) {
			s->start = ev[i - 1].at;
			s->prev_off = i >= 2 ? ev[i - 2].off
					     : (s->off == r->dst_off ? r->std_off : r->dst_off);
		}
	}
	if (i < count)
		s->end = ev[i].at;
}

int32_t sched_zone_utc_offset(const struct sched_zone *zone, int64_t t)
{
	if (!zone)
		return 0;
	struct zone_span s;
	zone_span_at(zone, t, &s);
	return s.off;
}

/* ---------------------------------------------------------- TZif loader */

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_counts {
	uint32_t isut, isstd, leap, time, type, chars;
};

static bool tzif_header(const unsigned char *p, size_t avail, char *version,
			struct tzif_counts *c)
{
	if (avail < 44 || memcmp(p, "TZif", 4) != 0)
		return false;
	*version = (char)p[4];
	c->isut = be32(p + 20);
	c->isstd = be32(p + 24);
	c->leap = be32(p + 28);
	c->time = be32(p + 32);
	c->type = be32(p + 36);
	c->chars = be32(p + 40);
	return c->type >= 1 && c->type <= TZIF_MAX_TYPES && c->time <= TZIF_MAX_TIMES &&
	       c->leap <= TZIF_MAX_TIMES && c->chars <= 65536 &&
	       (c->isut == 0 || c->isut == c->type) && (c->isstd == 0 || c->isstd == c->type);
}

static size_t tzif_block_size(const struct tzif_counts *c, size_t time_size)
{
	return (size_t)c->time * time_size + c->time + (size_t)c->type * 6 + c->chars +
	       (size_t)c->leap * (time_size + 4) + c->isstd + c->isut;
}

static const char *tzif_parse(struct sched_zone *z, const unsigned char *buf, size_t size)
{
	char version;
	struct tzif_counts c;
	if (!tzif_header(buf, size, &version, &c))
		return "not a TZif file";
	size_t pos = 44, time_size = 4;
	size_t block = tzif_block_size(&c, 4);
	if (block > size - pos)
		return "truncated";
	if (version >= '2') {
		pos += block;
		if (!tzif_header(buf + pos, size - pos, &version, &c))
			return "bad version 2 header";
		pos += 44;
		time_size = 8;
		block = tzif_block_size(&c, 8);
		if (block > size - pos)
			return "truncated";
	}
	const unsigned char *p = buf + pos;
	z->timecnt = c.time;
	z->typecnt = c.type;
	z->times = calloc(c.time ? c.time : 1, sizeof(*z->times));
	z->idx = calloc(c.time ? c.time : 1, 1);
	z->types = calloc(c.type, sizeof(*z->types));
	if (!z->times || !z->idx || !z->types)
		return "out of memory";
	for (size_t i = 0; i < c.time; i++) {
		z->times[i] = time_size == 8 ? be64(p + i * 8) : (int32_t)be32(p + i * 4);
		if (i > 0 && z->times[i] <= z->times[i - 1])
			return "transitions out of order";
	}
	p += (size_t)c.time * time_size;
	for (size_t i = 0; i < c.time; i++) {
		if (p[i] >= c.type)
			return "bad type index";
		z->idx[i] = p[i];
	}
	p += c.time;
	for (size_t i = 0; i < c.type; i++) {
		int32_t off = (int32_t)be32(p + i * 6);
		if (off < -25 * 3600 || off > 26 * 3600)
			return "UTC offset out of range";
		z->types[i].utoff = off;
	}
	pos += block;
	if (version >= '2') {
		/* Footer: "\nTZ\n"; an empty TZ means no rule. */
		if (pos >= size)
			return "missing footer";
		const char *f = (const char *)buf + pos;
		size_t flen = size - pos;
		const char *nl;
		if (f[0] != '\n' || !(nl = memchr(f + 1, '\n', flen - 1)))
			return "bad footer";
		size_t tzlen = (size_t)(nl - f - 1);
		if (tzlen > 0) {
			char rule[128];
			if (tzlen >= sizeof(rule))
				return "footer too long";
			memcpy(rule, f + 1, tzlen);
			rule[tzlen] = '\0';
			if (!parse_tz_rule(rule, &z->footer))
				return "footer TZ rule not understood";
		}
	}
	return NULL;
}

struct sched_zone *sched_zone_from_tzif(const char *name, const void *data, size_t len,
				       char *err, size_t errlen)
{
	if (err && errlen > 0)
		err[0] = '\0';
	if (!name)
		name = "UTC";
	struct sched_zone *z = calloc(1, sizeof(*z));
	const char *why = z ? NULL : "out of memory";
	if (!why && !(z->name = strdup(name)))
		why = "out of memory";
	if (!why && (!data || len > TZIF_MAX_BYTES))
		why = len > TZIF_MAX_BYTES ? "file too large" : "no data";
	if (!why)
		why = tzif_parse(z, data, len);
	if (why) {
		plain_error(err, errlen, "time zone '%s': %s", name, why);
		sched_zone_free(z);
		return NULL;
	}
	return z;
}

static bool zone_name_safe(const char *name)
{
	size_t len = strnlen(name, ZONE_NAME_MAX + 1);
	if (len == 0 || len > ZONE_NAME_MAX || name[0] == '/' || name[len - 1] == '/' ||
	    strstr(name, "..") || strstr(name, "//"))
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = name[i];
		if (!is_alpha(ch) && !is_digit(ch) && ch != '_' && ch != '+' && ch != '-' &&
		    ch != '/')
			return false;
	}
	return true;
}

static bool is_utc_name(const char *name)
{
	return !name || !name[0] || strcmp(name, "UTC") == 0;
}

static int read_zone_file(const char *path, unsigned char **out, size_t *out_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	int rc = 0;
	unsigned char *buf = NULL;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EISDIR;
		goto out;
	}
	if (st.st_size <= 0 || st.st_size > TZIF_MAX_BYTES) {
		rc = -EFBIG;
		goto out;
	}
	size_t len = (size_t)st.st_size, got = 0;
	buf = malloc(len);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			goto out;
		}
		got += (size_t)n;
	}
	*out = buf;
	*out_len = len;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return rc;
}

void sched_zone_free(struct sched_zone *zone)
{
	if (!zone)
		return;
	free(zone->name);
	free(zone->times);
	free(zone->idx);
	free(zone->types);
	free(zone);
}

static struct sched_zone *zone_new_utc(void)
{
	struct sched_zone *z = calloc(1, sizeof(*z));
	if (!z)
		return NULL;
	z->name = strdup("UTC");
	z->types = calloc(1, sizeof(*z->types));
	z->typecnt = 1;
	if (!z->name || !z->types) {
		sched_zone_free(z);
		return NULL;
	}
	return z;
}

struct sched_zone *sched_zone_load(const char *name, char *err, size_t errlen)
{
	if (err && errlen > 0)
		err[0] = '\0';
	if (is_utc_name(name)) {
		struct sched_zone *z = zone_new_utc();
		if (!z)
			plain_error(err, errlen, "out of memory");
		return z;
	}
	if (!zone_name_safe(name)) {
		plain_error(err, errlen,
			    "invalid time zone name (expected an IANA name such as Europe/Dublin)");
		return NULL;
	}
	char path[sizeof(ZONEINFO_DIR) + ZONE_NAME_MAX + 2];
	snprintf(path, sizeof(path), "%s/%s", ZONEINFO_DIR, name);
	unsigned char *buf = NULL;
	size_t len = 0;
	int rc = read_zone_file(path, &buf, &len);
	if (rc < 0) {
		if (rc == -ENOENT || rc == -ENOTDIR || rc == -EISDIR)
			plain_error(err, errlen, "unknown time zone '%s'", name);
		else
			plain_error(err, errlen, "time zone '%s': %s: %s", name, path,
				    rc == -EFBIG ? "file too large" : strerror(-rc));
		return NULL;
	}
	struct sched_zone *z = sched_zone_from_tzif(name, buf, len, err, errlen);
	free(buf);
	return z;
}

const char *sched_zone_name(const struct sched_zone *zone)
{
	return zone ? zone->name : "UTC";
}

bool schedule_tz_valid(const char *tz)
{
	if (is_utc_name(tz))
		return true;
	struct sched_zone *z = sched_zone_load(tz, NULL, 0);
	bool ok = z != NULL;
	sched_zone_free(z);
	return ok;
}

/* ----------------------------------------------------------- next run */

static bool day_matches(const struct cron_expr *e, int month, int mday, int wday)
{
	if (!(e->months & (1u << month)))
		return false;
	bool dom = e->mdays & (UINT32_C(1) << mday);
	bool dow = e->wdays & (1u << wday);
	if (!e->mday_star && !e->wday_star)
		return dom || dow;
	return dom && dow;
}

/* First minute-aligned local time in [from, until) matching e (local
 * seconds: wall-clock time read as if it were UTC). Steps by month, day,
 * hour and minute with the bitmasks. */
static bool find_local(const struct cron_expr *e, int64_t from, int64_t until, int64_t *out)
{
	from = floor_div(from + 59, 60) * 60;
	int64_t day = floor_div(from, 86400);
	int64_t secs = from - day * 86400;
	int hour = (int)(secs / 3600), minute = (int)(secs % 3600 / 60);

	while (day * 86400 < until) {
		int64_t y;
		int m, d;
		civil_from_days(day, &y, &m, &d);
		if (!(e->months & (1u << m))) {
			day = days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1);
			hour = minute = 0;
			continue;
		}
		if (day_matches(e, m, d, weekday_from_days(day))) {
			for (int h = hour; h < 24; h++) {
				if (!(e->hours & (UINT32_C(1) << h)))
					continue;
				for (int mi = h == hour ? minute : 0; mi < 60; mi++) {
					if (e->minutes & (UINT64_C(1) << mi)) {
						int64_t local = day * 86400 + h * 3600 + mi * 60;
						if (local >= until)
							return false;
						*out = local;
						return true;
					}
				}
			}
		}
		day++;
		hour = minute = 0;
	}
	return false;
}

int64_t cron_next_zone(const struct cron_expr *expr, const struct sched_zone *zone,
		       int64_t after_s)
{
	if (!expr || !zone || after_s < TIME_MIN || after_s > TIME_MAX - SEARCH_DAYS * 86400)
		return -1;
	if (!expr->minutes || !expr->hours || !expr->months || (!expr->mdays && !expr->wdays))
		return -1;
	const bool every_hour = (expr->hours & 0xFFFFFF) == 0xFFFFFF;
	const int64_t limit = after_s + (int64_t)SEARCH_DAYS * 86400; /* inclusive */
	int64_t t = after_s + 1;

	while (t <= limit) {
		struct zone_span s;
		zone_span_at(zone, t, &s);
		int64_t seg_end = s.end < limit + 1 ? s.end : limit + 1;
		int64_t local;

		/* Gap: the local times [start+prev_off, start+off) never happened;
		 * if one of them matches, run at the first valid minute after. */
		if (s.start != INT64_MIN && s.start > after_s && s.off > s.prev_off &&
		    find_local(expr, s.start + s.prev_off, s.start + s.off, &local)) {
			int64_t wall = s.start + s.off;
			int64_t run = s.start + (floor_div(wall + 59, 60) * 60 - wall);
			if (run < seg_end)
				return run;
		}

		int64_t from = t + s.off;
		/* Repeat: local times [start+off, start+prev_off) already occurred
		 * just before this span; a fixed-hour job ran at the first one. */
		if (s.start != INT64_MIN && s.off < s.prev_off && !every_hour &&
		    from < s.start + s.prev_off)
			from = s.start + s.prev_off;
		if (seg_end > t && find_local(expr, from, seg_end + s.off, &local))
			return local - s.off;
		if (s.end == INT64_MAX || s.end > limit)
			return -1;
		t = s.end;
	}
	return -1;
}

/* Zones loaded by cron_next(), kept until schedule_cache_clear(): entries are
 * never evicted while the process runs, so a pointer taken under the lock
 * stays valid after it is released. */
static pthread_mutex_t zone_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sched_zone *zone_cache[ZONE_CACHE_SIZE];

int64_t cron_next(const struct cron_expr *expr, const char *tz, int64_t after_s)
{
	static struct tz_type utc_type[1];
	static const struct sched_zone utc = {.types = utc_type, .typecnt = 1};
	if (is_utc_name(tz))
		return cron_next_zone(expr, &utc, after_s);

	const struct sched_zone *zone = NULL;
	struct sched_zone *owned = NULL;
	pthread_mutex_lock(&zone_cache_lock);
	size_t i;
	for (i = 0; i < ZONE_CACHE_SIZE && zone_cache[i]; i++) {
		if (strcmp(zone_cache[i]->name, tz) == 0) {
			zone = zone_cache[i];
			break;
		}
	}
	if (!zone) {
		struct sched_zone *z = sched_zone_load(tz, NULL, 0);
		if (z && i < ZONE_CACHE_SIZE)
			zone_cache[i] = z;
		else
			owned = z; /* cache full: use once */
		zone = z;
	}
	pthread_mutex_unlock(&zone_cache_lock);
	if (!zone)
		return -1;
	int64_t next = cron_next_zone(expr, zone, after_s);
	sched_zone_free(owned);
	return next;
}

void schedule_cache_clear(void)
{
	pthread_mutex_lock(&zone_cache_lock);
	for (size_t i = 0; i < ZONE_CACHE_SIZE; i++) {
		sched_zone_free(zone_cache[i]);
		zone_cache[i] = NULL;
	}
	pthread_mutex_unlock(&zone_cache_lock);
}
