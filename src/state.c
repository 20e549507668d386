/* state.c — the state directory: layout, the single-instance lock, atomic
 * writes and run retention. Never logs: every function returns 0 or a
 * negative errno and the caller says what went wrong. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "state.h"

#define STATE_JSON_MAX (64u << 20)   /* bound on a state document we read */
#define STATE_RUN_ID_TIME_LEN 16     /* "20261203T182000Z" */
#define STATE_RUN_ID_LEN 23          /* + "-" + 6 hex */

static const char *const state_subdirs[] = { "ledger", "jobs", "runs", "stage" };

/* Random bytes; falls back to time and pid mixing when getrandom() cannot
 * deliver (early boot, seccomp): these are names, not secrets. */
static void state_random(void *buf, size_t len)
{
	unsigned char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = getrandom(p + got, len - got, GRND_NONBLOCK);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		got += (size_t)n;
	}
	if (got < len) {
		static unsigned long counter;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		unsigned long long x = (unsigned long long)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^
				       ((unsigned long long)getpid() << 32) ^ ++counter;
		for (; got < len; got++) {
			x ^= x >> 29;
			x *= 0xbf58476d1ce4e5b9ull;
			p[got] = (unsigned char)(x >> 56);
		}
	}
}

char *state_path(const char *state_dir, const char *fmt, ...)
{
	va_list ap;
	char *rel = NULL, *out = NULL;

	va_start(ap, fmt);
	int n = vasprintf(&rel, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	if (asprintf(&out, "%s/%s", state_dir, rel) < 0)
		out = NULL;
	free(rel);
	return out;
}

int state_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = 0;
	/* Some file systems cannot fsync a directory (EINVAL): nothing to do. */
	if (fsync(fd) < 0 && errno != EINVAL)
		r = -errno;
	close(fd);
	return r;
}

int state_mkdir_p(const char *dir, unsigned mode)
{
	if (!dir || !*dir)
		return -EINVAL;
	char *buf = strdup(dir);
	if (!buf)
		return -ENOMEM;
	int r = 0;
	size_t len = strlen(buf);
	while (len > 1 && buf[len - 1] == '/')
		buf[--len] = '\0';
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		*p = '\0';
		if (mkdir(buf, (mode_t)mode) == 0) {
			/* umask-independent: the mode is exactly what was asked. */
			if (chmod(buf, (mode_t)mode) < 0) {
				r = -errno;
				goto out;
			}
		} else if (errno == EEXIST) {
			struct stat st;
			if (stat(buf, &st) < 0) {
				r = -errno;
				goto out;
			}
			if (!S_ISDIR(st.st_mode)) {
				r = -ENOTDIR;
				goto out;
			}
		} else {
			r = -errno;
			goto out;
		}
		*p = saved;
		if (saved == '\0')
			break;
	}
out:
	free(buf);
	return r;
}

/* A directory of the state tree: ours, not writable by anyone else, 0700. */
static int state_check_dir(const char *dir)
{
	struct stat st;
	if (stat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (st.st_uid != geteuid())
		return -EPERM;
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return -EPERM;
	if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) < 0)
		return -errno;
	return 0;
}

int state_init(const char *state_dir)
{
	int r = state_mkdir_p(state_dir, 0700);
	if (r < 0)
		return r;
	r = state_check_dir(state_dir);
	if (r < 0)
		return r;
	for (size_t i = 0; i < sizeof(state_subdirs) / sizeof(state_subdirs[0]); i++) {
		char *sub = state_path(state_dir, "%s", state_subdirs[i]);
		if (!sub)
			return -ENOMEM;
		r = 0;
		if (mkdir(sub, 0700) == 0) {
			if (chmod(sub, 0700) < 0)
				r = -errno;
		} else if (errno != EEXIST) {
			r = -errno;
		}
		if (r == 0)
			r = state_check_dir(sub);
		free(sub);
		if (r < 0)
			return r;
	}
	return state_fsync_dir(state_dir);
}

int state_lock(const char *state_dir, bool blocking, int *fd_out)
{
	*fd_out = -1;
	char *path = state_path(state_dir, "lock");
	if (!path)
		return -ENOMEM;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	free(path);
	if (fd < 0)
		return -errno;
	int r;
	while ((r = flock(fd, LOCK_EX | (blocking ? 0 : LOCK_NB))) < 0 && errno == EINTR)
		;
	if (r < 0) {
		r = -errno;   /* EWOULDBLOCK: another instance holds it */
		close(fd);
		return r;
	}
	/* Ours now: note who holds it, for the second instance's message. */
	struct stat st;
	if (fstat(fd, &st) == 0 && (st.st_mode & 07777) != 0600)
		(void)fchmod(fd, 0600);
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == 0)
		(void)!pwrite(fd, pid, (size_t)n, 0);
	*fd_out = fd;
	return 0;
}

void state_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

int state_lock_holder(const char *state_dir, long *pid_out)
{
	*pid_out = 0;
	char *path = state_path(state_dir, "lock");
	if (!path)
		return -ENOMEM;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(path);
	if (fd < 0)
		return -errno;
	char buf[32];
	ssize_t got = pread(fd, buf, sizeof(buf) - 1, 0);
	int r = got < 0 ? -errno : 0;
	close(fd);
	if (r < 0)
		return r;
	size_t n = (size_t)got < sizeof(buf) - 1 ? (size_t)got : sizeof(buf) - 1;
	buf[n] = '\0';
	long pid = 0;
	size_t i = 0;
	for (; i < n && buf[i] >= '0' && buf[i] <= '9' && pid < 100000000; i++)
		pid = pid * 10 + (buf[i] - '0');
	if (i == 0 || pid <= 0 || (i < n && buf[i] != '\n'))
		return -ENODATA;
	*pid_out = pid;
	return 0;
}

static int state_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int state_write_atomic(const char *path, const void *data, size_t len)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	if (!*base)
		return -EISDIR;
	char *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
	if (!dir)
		return -ENOMEM;
	char *tmp = NULL;
	int fd = -1, r = 0;

	for (int attempt = 0; attempt < 16; attempt++) {
		unsigned int rnd;
		state_random(&rnd, sizeof(rnd));
		free(tmp);
		if (asprintf(&tmp, "%s/.%s.tmp.%ld.%08x", dir, base, (long)getpid(), rnd) < 0) {
			tmp = NULL;
			r = -ENOMEM;
			goto out;
		}
		fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0) {
		r = -errno;
		free(tmp);
		tmp = NULL;    /* not ours: never unlink it */
		goto out;
	}
	if (fchmod(fd, 0600) < 0 ||   /* a umask such as 0277 must not weaken it */
	    (r = state_write_all(fd, data, len)) < 0 || fsync(fd) < 0) {
		if (r == 0)
			r = -errno;
		goto out;
	}
	r = close(fd);
	fd = -1;
	if (r < 0 && errno != EINTR) {
		r = -errno;
		goto out;
	}
	r = 0;
	if (rename(tmp, path) < 0) {
		r = -errno;
		goto out;
	}
	free(tmp);
	tmp = NULL;   /* renamed: nothing to clean up any more */
	r = state_fsync_dir(dir);
out:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(dir);
	return r;
}

int state_save_job_state(const char *state_dir, const char *job, const json_t *doc)
{
	char *path = state_path(state_dir, "jobs/%s.json", job);
	int r = path ? state_write_json(path, doc) : -ENOMEM;
	free(path);
	return r;
}

int state_write_json(const char *path, const json_t *doc)
{
	if (!doc)
		return -EINVAL;
	char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (!text)
		return -ENOMEM;
	size_t len = strlen(text);
	char *buf = realloc(text, len + 2);
	if (!buf) {
		free(text);
		return -ENOMEM;
	}
	buf[len] = '\n';
	buf[len + 1] = '\0';
	int r = state_write_atomic(path, buf, len + 1);
	free(buf);
	return r;
}

int state_read_json_err(const char *path, json_t **out, char *err, size_t errlen)
{
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = 0;
	char *buf = NULL;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > STATE_JSON_MAX) {
		r = -EFBIG;
		goto out;
	}
	size_t size = (size_t)st.st_size, len = 0;
	buf = malloc(size + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	/* Read to what fstat said; a file growing under us is not ours. */
	while (len < size) {
		ssize_t n = read(fd, buf + len, size - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	json_error_t jerr;
	*out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!*out) {
		r = -EBADMSG;
		if (err && errlen)
			snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
	}
out:
	free(buf);
	close(fd);
	return r;
}

int state_read_json(const char *path, json_t **out)
{
	return state_read_json_err(path, out, NULL, 0);
}

void state_new_run_id(char out[32])
{
	/* Strictly increasing within the process, so two runs started in the
	 * same second get distinct ids that still sort by start time. */
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static time_t last_sec;
	static unsigned long last_suffix;
	unsigned char rnd[3];
	state_random(rnd, sizeof(rnd));
	unsigned long suffix = (unsigned long)rnd[0] << 16 | (unsigned long)rnd[1] << 8 | rnd[2];
	time_t now = time(NULL);

	pthread_mutex_lock(&lock);
	if (now <= last_sec) {
		now = last_sec;
		suffix = last_suffix + 1 + (suffix & 0xff);
		if (suffix > 0xffffff) {
			now++;
			suffix &= 0xffff;
		}
	}
	last_sec = now;
	last_suffix = suffix;
	pthread_mutex_unlock(&lock);

	struct tm tm;
	gmtime_r(&now, &tm);
	size_t n = strftime(out, 32, "%Y%m%dT%H%M%SZ", &tm);
	snprintf(out + n, 32 - n, "-%06lx", suffix);
}

/* The start time of a run from its id, in ms; -1 if the name is not an id. */
static int64_t state_run_id_ms(const char *name)
{
	if (strlen(name) < STATE_RUN_ID_LEN || name[STATE_RUN_ID_TIME_LEN] != '-')
		return -1;
	for (int i = 0; i < 6; i++) {
		char c = name[STATE_RUN_ID_TIME_LEN + 1 + i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return -1;
	}
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *end = strptime(name, "%Y%m%dT%H%M%SZ", &tm);
	if (end != name + STATE_RUN_ID_TIME_LEN)
		return -1;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	return (int64_t)t * 1000;
}

static int state_cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool state_has_suffix(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);
	return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

int state_prune_runs(const char *state_dir, const char *job, int keep_runs, int64_t max_age_ms)
{
	if (!job || !*job || strchr(job, '/') || job[0] == '.')
		return -EINVAL;
	char *dir = state_path(state_dir, "runs/%s", job);
	if (!dir)
		return -ENOMEM;
	int r = 0;
	char **names = NULL;     /* every visible entry, sorted */
	bool *doomed = NULL;     /* run records to remove */
	size_t n = 0, cap = 0;
	DIR *d = opendir(dir);
	if (!d) {
		r = errno == ENOENT ? 0 : -errno;
		goto out;
	}
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno)
				r = -errno;
			break;
		}
		if (de->d_name[0] == '.')   /* ".", "..", and temp files in flight */
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			char **nn = realloc(names, ncap * sizeof(*names));
			if (!nn) {
				r = -ENOMEM;
				break;
			}
			names = nn;
			cap = ncap;
		}
		if (!(names[n] = strdup(de->d_name))) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	if (r < 0)
		goto out;
	qsort(names, n, sizeof(*names), state_cmp_names);
	doomed = calloc(n ? n : 1, sizeof(*doomed));
	if (!doomed) {
		r = -ENOMEM;
		goto out;
	}

	size_t n_records = 0;
	for (size_t i = 0; i < n; i++)
		n_records += state_has_suffix(names[i], ".json");
	int64_t now_ms = (int64_t)time(NULL) * 1000;
	size_t seen = 0;
	for (size_t i = 0; i < n; i++) {
		if (!state_has_suffix(names[i], ".json"))
			continue;
		seen++;
		/* Names sort by start time: the first ones are the oldest. */
		if (keep_runs > 0 && n_records - seen >= (size_t)keep_runs)
			doomed[i] = true;
		if (max_age_ms > 0 && !doomed[i]) {
			int64_t t = state_run_id_ms(names[i]);
			if (t < 0) {
				struct stat st;
				if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
					continue;
				t = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
			}
			if (now_ms - t > max_age_ms)
				doomed[i] = true;
		}
	}

	size_t removed = 0;
	for (size_t i = 0; i < n; i++) {
		if (!doomed[i])
			continue;
		size_t idlen = strlen(names[i]) - strlen(".json");
		/* RUN_ID.json and its companions RUN_ID.* are contiguous in the
		 * sorted names: find the first name >= "RUN_ID." and walk on. */
		size_t lo = 0, hi = n;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			int c = strncmp(names[mid], names[i], idlen);
			if (c == 0)
				c = names[mid][idlen] < '.' ? -1 : (names[mid][idlen] == '.' ? 0 : 1);
			if (c < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (size_t j = lo; j < n; j++) {
			if (strncmp(names[j], names[i], idlen) != 0 || names[j][idlen] != '.')
				break;
			/* never a record that is kept ("ID.json" vs "ID.x.json") */
			if (j != i && state_has_suffix(names[j], ".json") && !doomed[j])
				continue;
			if (unlinkat(dirfd(d), names[j], 0) == 0)
				removed++;
			else if (errno != ENOENT && r == 0)
				r = -errno;
		}
	}
	if (removed > 0) {
		int fr = state_fsync_dir(dir);
		if (r == 0)
			r = fr;
	}
out:
	if (d)
		closedir(d);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(doomed);
	free(dir);
	return r;
}
