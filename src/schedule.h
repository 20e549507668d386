/* schedule.h — when a job is due: `every` durations and 5-field cron
 * expressions in an IANA time zone. Pure computation, no logging. */
#ifndef XP_SCHEDULE_H
#define XP_SCHEDULE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cron_expr {
	uint64_t minutes;   /* bit i = minute i (0-59) */
	uint32_t hours;     /* 0-23 */
	uint32_t mdays;     /* 1-31 */
	uint16_t months;    /* 1-12 */
	uint8_t wdays;      /* 0-6, Sunday = 0 (7 accepted as Sunday) */
	bool mday_star, wday_star; /* cron's day-of-month/day-of-week OR rule */
};

/* Parse "m h dom mon dow": lists, ranges, steps, names (jan-dec, sun-sat),
 * "*". 0 or -EINVAL with err ("field 2 (hour): 25 is out of range 0-23").
 * Also @hourly @daily @midnight @weekly @monthly @yearly @annually.
 * mday_star/wday_star are set when the field allows every value; when both
 * day fields are restricted a day matching either runs (cron's OR rule). */
int cron_parse(const char *expr, struct cron_expr *out, char *err, size_t errlen);

/* The first minute strictly after after_s (unix seconds) matching expr in
 * time zone tz (IANA name; NULL, "" or "UTC" = UTC). DST: a local time
 * skipped by a spring-forward gap runs at the first valid minute after the
 * gap (once); a repeated local time runs once, at its first occurrence,
 * unless the hour field is "*" (then both passes run). See schedule.c.
 * Returns -1 if none within 5 years or tz cannot be loaded. Zones are read
 * from /usr/share/zoneinfo once and cached (thread-safe). */
int64_t cron_next(const struct cron_expr *expr, const char *tz, int64_t after_s);

/* True if tz names a zone in the system's tz database (safe name: no
 * leading '/', no "..", only [A-Za-z0-9_+-/]; the TZif file parses).
 * NULL, "" and "UTC" are valid. */
bool schedule_tz_valid(const char *tz);

/* A parsed time zone (TZif v1/v2+ with its footer rule), immutable once
 * loaded, so one zone may be used by several threads. NULL, "" and "UTC"
 * give UTC without reading a file. NULL on error with err set, e.g.
 * "unknown time zone 'Europe/Dubin'". */
struct sched_zone;
struct sched_zone *sched_zone_load(const char *name, char *err, size_t errlen);
void sched_zone_free(struct sched_zone *zone);
const char *sched_zone_name(const struct sched_zone *zone);

/* The same from the bytes of a TZif file (tests, fuzzing, other sources);
 * name is only used in messages. Leap-second records are ignored. */
struct sched_zone *sched_zone_from_tzif(const char *name, const void *data, size_t len,
					char *err, size_t errlen);

/* UTC offset in seconds east of UTC in force at instant t (0 for NULL). */
int32_t sched_zone_utc_offset(const struct sched_zone *zone, int64_t t);

/* cron_next() with an already loaded zone. */
int64_t cron_next_zone(const struct cron_expr *expr, const struct sched_zone *zone,
		       int64_t after_s);

/* Free the zones cached by cron_next(). Only when no other thread can be
 * inside cron_next() (shutdown, tests); later calls reload. */
void schedule_cache_clear(void);
#endif
