/* log.c — structured events to the journal (under systemd) or stderr.
 * Under systemd, JOURNAL_STREAM names the device:inode of the stream our
 * stderr is connected to; if it matches, entries go through sd_journal_sendv
 * with their fields, else one "<N>message" line goes to stderr, which
 * systemd's stream parser also understands. Lines are written with a single
 * write() so that concurrent writers do not interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

static const char *log_ident = "xpimportd";
static int log_verbose;
static bool log_to_journal;
static bool log_plain; /* a terminal: no "<N>" prefixes */

static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(const char *ident, int verbose)
{
	log_ident = ident;
	log_verbose = verbose;
	log_to_journal = stderr_is_journal();
	log_plain = !log_to_journal && isatty(STDERR_FILENO);
}

#define LOG_FIELDS_MAX 24

static void log_emit(int priority, const char *msg_id, const char *const *fields,
		     const char *fmt, va_list ap)
{
	char msg[2048];

	if (priority == LOG_DEBUG && !log_verbose)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);

	if (log_to_journal) {
		char prio[16], ident[64], mid[64];
		char *message = NULL;
		struct iovec iov[LOG_FIELDS_MAX + 4];
		size_t n = 0;

		if (asprintf(&message, "MESSAGE=%s", msg) < 0)
			return;
		snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
		snprintf(ident, sizeof(ident), "SYSLOG_IDENTIFIER=%s", log_ident);
		iov[n++] = (struct iovec){message, strlen(message)};
		iov[n++] = (struct iovec){prio, strlen(prio)};
		iov[n++] = (struct iovec){ident, strlen(ident)};
		if (msg_id) {
			snprintf(mid, sizeof(mid), "MESSAGE_ID=%s", msg_id);
			iov[n++] = (struct iovec){mid, strlen(mid)};
		}
		for (size_t i = 0; fields && fields[i] && i < LOG_FIELDS_MAX; i++)
			iov[n++] = (struct iovec){(void *)(uintptr_t)fields[i], strlen(fields[i])};
		sd_journal_sendv(iov, (int)n);
		free(message);
		return;
	}

	/* stderr: "<prio>message [KEY=value ...]" on one line. */
	char line[4096];
	int len = log_plain ? snprintf(line, sizeof(line), "%s", msg)
			    : snprintf(line, sizeof(line), "<%d>%s", priority, msg);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(line))
		len = (int)sizeof(line) - 1;
	for (size_t i = 0; log_verbose && fields && fields[i]; i++) {
		int m = snprintf(line + len, sizeof(line) - (size_t)len, " %s", fields[i]);
		if (m < 0 || (size_t)(len + m) >= sizeof(line))
			break;
		len += m;
	}
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, (size_t)len);
	(void)w;
}

void log_msg(int priority, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(priority, NULL, NULL, fmt, ap);
	va_end(ap);
}

void log_event(int priority, const char *msg_id, const char *const *fields, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(priority, msg_id, fields, fmt, ap);
	va_end(ap);
}
