/* log.h — one structured event per call. Under systemd (JOURNAL_STREAM set
 * and matching stderr) entries go to the journal with their fields;
 * otherwise one line to stderr with a "<N>" priority prefix.
 * Only the job/daemon layer logs; modules that parse or compute return
 * errors (style.md, point 9). Never pass a secret to these functions. */
#ifndef XP_LOG_H
#define XP_LOG_H
#include <syslog.h>

/* MESSAGE_IDs, one per event kind; the catalog is systemd/xpimportd.catalog. */
#define XP_MSG_RUN_STARTED      "6b0a2f3e9c0d4e51a1f27c3f4a1e0001"
#define XP_MSG_RUN_FINISHED     "6b0a2f3e9c0d4e51a1f27c3f4a1e0002"
#define XP_MSG_RUN_FAILED       "6b0a2f3e9c0d4e51a1f27c3f4a1e0003"
#define XP_MSG_FILE_WAITING     "6b0a2f3e9c0d4e51a1f27c3f4a1e0004"
#define XP_MSG_FILE_SKIPPED     "6b0a2f3e9c0d4e51a1f27c3f4a1e0005"
#define XP_MSG_FILE_IMPORTED    "6b0a2f3e9c0d4e51a1f27c3f4a1e0006"
#define XP_MSG_FILE_REJECTED    "6b0a2f3e9c0d4e51a1f27c3f4a1e0007"
#define XP_MSG_HOSTKEY_REFUSED  "6b0a2f3e9c0d4e51a1f27c3f4a1e0008"
#define XP_MSG_AUTH_FAILED      "6b0a2f3e9c0d4e51a1f27c3f4a1e0009"
#define XP_MSG_BATCH_RETRIED    "6b0a2f3e9c0d4e51a1f27c3f4a1e000a"
#define XP_MSG_CONFIG_RELOADED  "6b0a2f3e9c0d4e51a1f27c3f4a1e000b"
#define XP_MSG_CONFIG_REJECTED  "6b0a2f3e9c0d4e51a1f27c3f4a1e000c"
#define XP_MSG_API_AUTH_FAILED  "6b0a2f3e9c0d4e51a1f27c3f4a1e000d"
#define XP_MSG_BATCH_REJECTED   "6b0a2f3e9c0d4e51a1f27c3f4a1e000e"
#define XP_MSG_DAEMON_STARTED   "6b0a2f3e9c0d4e51a1f27c3f4a1e000f"
#define XP_MSG_DAEMON_STOPPING  "6b0a2f3e9c0d4e51a1f27c3f4a1e0010"

/* Set once at start. verbose enables LOG_DEBUG. */
void log_init(const char *ident, int verbose);

/* A plain message (no event id). */
void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A structured event. fields is a NULL-terminated list of "KEY=value"
 * strings (JOB=, RUN_ID=, SITE=, FILE=, ROWS=...). msg_id may be NULL. */
void log_event(int priority, const char *msg_id, const char *const *fields,
	       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
#endif
