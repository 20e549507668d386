/* test_state.c — the state directory: atomic writes, modes, the lock, run
 * ids and retention. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
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

#include "state.h"

struct fixture {
	char dir[64];
};

static int rm_rf(const char *path)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	return system(cmd);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_state.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	rm_rf(f->dir);
	free(f);
	return 0;
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	return st.st_mode & 07777;
}

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	char *buf = calloc(1, 1 << 16);
	size_t n = fread(buf, 1, (1 << 16) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

/* Names in dir starting with '.' other than "." and ".." (temp files). */
static int count_hidden(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x\n", 2), 2);
	close(fd);
}

static void test_atomic_write_mode_and_no_temp(void **state)
{
	struct fixture *f = *state;
	char *path = state_path(f->dir, "jobs/%s.json", "crm-daily");
	assert_non_null(path);
	char *jobs = state_path(f->dir, "jobs");
	assert_int_equal(state_init(f->dir), 0);

	mode_t old = umask(0);
	assert_int_equal(state_write_atomic(path, "hello\n", 6), 0);
	umask(old);
	assert_int_equal(mode_of(path), 0600);
	char *got = slurp(path);
	assert_string_equal(got, "hello\n");
	free(got);
	assert_int_equal(count_hidden(jobs), 0);

	/* overwrite replaces the whole content */
	assert_int_equal(state_write_atomic(path, "second", 6), 0);
	got = slurp(path);
	assert_string_equal(got, "second");
	free(got);
	assert_int_equal(count_hidden(jobs), 0);
	assert_int_equal(count_entries(jobs), 1);

	/* an empty document is a document */
	assert_int_equal(state_write_atomic(path, "", 0), 0);
	got = slurp(path);
	assert_string_equal(got, "");
	free(got);
	free(path);
	free(jobs);
}

static void test_atomic_write_missing_dir(void **state)
{
	struct fixture *f = *state;
	char *path = state_path(f->dir, "nope/sub/x.json");
	assert_int_equal(state_write_atomic(path, "x", 1), -ENOENT);
	assert_int_equal(count_entries(f->dir), 0);
	free(path);
	assert_int_equal(state_write_atomic("", "x", 1), -EISDIR);
}

/* A write error in the middle (EFBIG through RLIMIT_FSIZE, the closest a
 * unit test gets to ENOSPC) propagates, leaves no temp file and keeps the
 * old content. */
static void test_atomic_write_error_propagates(void **state)
{
	struct fixture *f = *state;
	char *path = state_path(f->dir, "doc.json");
	assert_int_equal(state_write_atomic(path, "old\n", 4), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = { 16, 16 };
		setrlimit(RLIMIT_FSIZE, &rl);
		char big[4096];
		memset(big, 'a', sizeof(big));
		int r = state_write_atomic(path, big, sizeof(big));
		_exit(r == -EFBIG ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	char *got = slurp(path);
	assert_string_equal(got, "old\n");
	free(got);
	assert_int_equal(count_hidden(f->dir), 0);
	free(path);
}

static void test_json_roundtrip(void **state)
{
	struct fixture *f = *state;
	char *path = state_path(f->dir, "j.json");
	json_t *doc = json_pack("{s:i,s:s,s:[i,i]}", "zeta", 1, "alpha", "x", "mid", 1, 2);
	assert_int_equal(state_write_json(path, doc), 0);
	char *got = slurp(path);
	assert_string_equal(got, "{\"alpha\":\"x\",\"mid\":[1,2],\"zeta\":1}\n");
	free(got);
	json_t *back = NULL;
	assert_int_equal(state_read_json(path, &back), 0);
	assert_true(json_equal(doc, back));
	json_decref(back);
	json_decref(doc);

	assert_int_equal(state_write_atomic(path, "{\"a\":", 5), 0);
	char err[256];
	assert_int_equal(state_read_json_err(path, &back, err, sizeof(err)), -EBADMSG);
	assert_null(back);
	assert_non_null(strstr(err, "j.json:1:"));
	free(path);
	path = state_path(f->dir, "absent.json");
	assert_int_equal(state_read_json(path, &back), -ENOENT);
	free(path);
}

static void test_init_modes_umask0(void **state)
{
	struct fixture *f = *state;
	char *top = state_path(f->dir, "a/b/state");
	mode_t old = umask(0);
	int r = state_init(top);
	umask(old);
	assert_int_equal(r, 0);
	assert_int_equal(mode_of(top), 0700);
	const char *subs[] = { "ledger", "jobs", "runs", "stage" };
	for (size_t i = 0; i < 4; i++) {
		char *p = state_path(top, "%s", subs[i]);
		assert_int_equal(mode_of(p), 0700);
		free(p);
	}
	char *mid = state_path(f->dir, "a/b");
	assert_int_equal(mode_of(mid), 0700);   /* created by mkdir -p: exactly 0700 */
	free(mid);
	/* again: idempotent */
	assert_int_equal(state_init(top), 0);

	/* an existing, looser (0755) directory is tightened */
	assert_int_equal(chmod(top, 0755), 0);
	assert_int_equal(state_init(top), 0);
	assert_int_equal(mode_of(top), 0700);

	/* a group/world-writable one is refused, and left alone */
	assert_int_equal(chmod(top, 0777), 0);
	assert_int_equal(state_init(top), -EPERM);
	assert_int_equal(mode_of(top), 0777);
	assert_int_equal(chmod(top, 0700), 0);
	char *jobs = state_path(top, "jobs");
	assert_int_equal(chmod(jobs, 0770), 0);
	assert_int_equal(state_init(top), -EPERM);
	free(jobs);

	/* a file where the directory should be */
	char *file = state_path(f->dir, "file");
	touch(file);
	assert_int_equal(state_init(file), -ENOTDIR);
	free(file);
	free(top);
}

static void test_lock_other_process(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(state_init(f->dir), 0);
	int pipefd[2], back[2];
	assert_int_equal(pipe(pipefd), 0);
	assert_int_equal(pipe(back), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd;
		char c = state_lock(f->dir, false, &fd) == 0 ? 'L' : 'E';
		(void)!write(back[1], &c, 1);
		(void)!read(pipefd[0], &c, 1);   /* hold until told */
		_exit(0);
	}
	char c = 0;
	assert_int_equal(read(back[0], &c, 1), 1);
	assert_int_equal(c, 'L');

	int fd = -2;
	assert_int_equal(state_lock(f->dir, false, &fd), -EWOULDBLOCK);
	assert_int_equal(fd, -1);
	long holder = 0;
	assert_int_equal(state_lock_holder(f->dir, &holder), 0);
	assert_int_equal(holder, pid);

	(void)!write(pipefd[1], "x", 1);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(state_lock(f->dir, false, &fd), 0);
	assert_true(fd >= 0);
	char *lock = state_path(f->dir, "lock");
	assert_int_equal(mode_of(lock), 0600);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(state_lock_holder(f->dir, &holder), 0);
	assert_int_equal(holder, getpid());
	free(lock);
	state_unlock(fd);
	close(pipefd[0]);
	close(pipefd[1]);
	close(back[0]);
	close(back[1]);
}

static void test_run_ids(void **state)
{
	char prev[32] = "", id[32];
	for (int i = 0; i < 2000; i++) {
		state_new_run_id(id);
		assert_int_equal(strlen(id), 23);
		assert_int_equal(id[8], 'T');
		assert_int_equal(id[15], 'Z');
		assert_int_equal(id[16], '-');
		for (int k = 17; k < 23; k++)
			assert_non_null(strchr("0123456789abcdef", id[k]));
		assert_true(strcmp(prev, id) < 0);   /* unique and in call order */
		memcpy(prev, id, sizeof(id));
	}
	/* the time part is now (UTC) */
	char now[32];
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y%m%dT%H", &tm);
	assert_memory_equal(id, now, 11);
}

static void make_run(const char *dir, const char *id, bool rejects)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s.json", dir, id);
	touch(path);
	if (rejects) {
		snprintf(path, sizeof(path), "%s/%s.1.rejects.csv", dir, id);
		touch(path);
		snprintf(path, sizeof(path), "%s/%s.2.rejects.csv", dir, id);
		touch(path);
	}
}

static bool exists(const char *dir, const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

static void id_at(char out[32], time_t t, const char *suffix)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(out, 32, "%Y%m%dT%H%M%SZ", &tm);
	snprintf(out + n, 32 - n, "-%s", suffix);
}

static void test_prune_by_count(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(state_init(f->dir), 0);
	char *runs = state_path(f->dir, "runs/job1");
	assert_int_equal(state_mkdir_p(runs, 0700), 0);
	time_t now = time(NULL);
	char ids[5][32];
	for (int i = 0; i < 5; i++) {
		id_at(ids[i], now - 3600 * (5 - i), i == 1 ? "000001" : "abcdef");
		make_run(runs, ids[i], i < 3);
	}
	assert_int_equal(state_prune_runs(f->dir, "job1", 3, 0), 0);
	char name[64];
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "%s.json", ids[i]);
		assert_int_equal(exists(runs, name), i >= 2);
		snprintf(name, sizeof(name), "%s.1.rejects.csv", ids[i]);
		assert_int_equal(exists(runs, name), i == 2);
		snprintf(name, sizeof(name), "%s.2.rejects.csv", ids[i]);
		assert_int_equal(exists(runs, name), i == 2);
	}
	assert_int_equal(count_entries(runs), 3 + 2);
	/* nothing more to do; a job without runs is fine */
	assert_int_equal(state_prune_runs(f->dir, "job1", 3, 0), 0);
	assert_int_equal(count_entries(runs), 5);
	assert_int_equal(state_prune_runs(f->dir, "never-ran", 3, 0), 0);
	assert_int_equal(state_prune_runs(f->dir, "../x", 3, 0), -EINVAL);
	free(runs);
}

static void test_prune_by_age(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(state_init(f->dir), 0);
	char *runs = state_path(f->dir, "runs/job2");
	assert_int_equal(state_mkdir_p(runs, 0700), 0);
	time_t now = time(NULL);
	char old_id[32], new_id[32];
	id_at(old_id, now - 40 * 86400, "111111");
	id_at(new_id, now - 3600, "222222");
	make_run(runs, old_id, true);
	make_run(runs, new_id, true);
	/* a record whose name is no run id: its mtime decides */
	char path[512];
	snprintf(path, sizeof(path), "%s/legacy.json", runs);
	touch(path);
	struct timespec ts[2] = { { now - 31 * 86400, 0 }, { now - 31 * 86400, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
	snprintf(path, sizeof(path), "%s/fresh.json", runs);
	touch(path);
	/* a temp file in flight is never touched */
	snprintf(path, sizeof(path), "%s/.%s.json.tmp.1.abc", runs, old_id);
	touch(path);

	int64_t thirty_days = 30LL * 86400 * 1000;
	assert_int_equal(state_prune_runs(f->dir, "job2", 100, thirty_days), 0);
	char name[64];
	snprintf(name, sizeof(name), "%s.json", old_id);
	assert_false(exists(runs, name));
	snprintf(name, sizeof(name), "%s.1.rejects.csv", old_id);
	assert_false(exists(runs, name));
	snprintf(name, sizeof(name), "%s.json", new_id);
	assert_true(exists(runs, name));
	snprintf(name, sizeof(name), "%s.2.rejects.csv", new_id);
	assert_true(exists(runs, name));
	assert_false(exists(runs, "legacy.json"));
	assert_true(exists(runs, "fresh.json"));
	assert_int_equal(count_hidden(runs), 1);
	free(runs);
}

static void test_mkdir_p_and_path(void **state)
{
	struct fixture *f = *state;
	char *deep = state_path(f->dir, "stage/%s/%d", "job", 7);
	assert_non_null(deep);
	char want[128];
	snprintf(want, sizeof(want), "%s/stage/job/7", f->dir);
	assert_string_equal(deep, want);
	mode_t old = umask(0);
	assert_int_equal(state_mkdir_p(deep, 0700), 0);
	umask(old);
	assert_int_equal(mode_of(deep), 0700);
	assert_int_equal(state_mkdir_p(deep, 0700), 0);
	char *file = state_path(f->dir, "stage/job/7/f");
	touch(file);
	char *under = state_path(f->dir, "stage/job/7/f/g");
	assert_int_equal(state_mkdir_p(under, 0700), -ENOTDIR);
	assert_int_equal(state_fsync_dir(deep), 0);
	assert_int_equal(state_fsync_dir(under), -ENOTDIR);
	free(under);
	free(file);
	free(deep);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_atomic_write_mode_and_no_temp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_write_missing_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_write_error_propagates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_init_modes_umask0, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_other_process, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_ids, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune_by_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune_by_age, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mkdir_p_and_path, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
