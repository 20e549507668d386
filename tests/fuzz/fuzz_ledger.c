/* fuzz_ledger.c — libFuzzer target: the input is a ledger file
 * (STATE/ledger/fuzz.log in a temp state directory); ledger_open() must
 * replay it or refuse it cleanly, and a ledger it accepts must take an
 * append and read back the same.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DLEDGER_FUZZ_CHECK -D_GNU_SOURCE \
 *     -Isrc -o tests/fuzz/bin/fuzz_ledger tests/fuzz/fuzz_ledger.c src/ledger.c src/state.c \
 *     -ljansson -lz
 *   tests/fuzz/bin/fuzz_ledger -max_total_time=30 NEW_UNITS_DIR tests/fuzz/corpus/ledger
 *
 * LEDGER_FUZZ_CHECK makes ledger.c compare its fast record parser with
 * jansson on every line it accepts (abort() on a difference).
 *
 * An input starting with '#' is framed by the target: each following line
 * gets its right CRC in front (the last one too, keeping its lack of LF), so
 * that mutations reach the JSON and the replay rules instead of dying on the
 * checksum. Anything else is written as it is. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "ledger.h"
#include "state.h"

static char fuzz_dir[128];
static char fuzz_log[192];

static void fuzz_cleanup(void)
{
	if (!fuzz_dir[0])
		return;
	unlink(fuzz_log);
	char path[256];
	const char *subs[] = { "ledger", "jobs", "runs", "stage" };
	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/%s", fuzz_dir, subs[i]);
		rmdir(path);
	}
	rmdir(fuzz_dir);
}

static void fuzz_init(void)
{
	/* tmpfs if there is one: fdatasync there costs nothing */
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/fuzz_ledger.XXXXXX", base);
	if (!mkdtemp(fuzz_dir) || state_init(fuzz_dir) < 0)
		abort();
	snprintf(fuzz_log, sizeof(fuzz_log), "%s/ledger/fuzz.log", fuzz_dir);
	atexit(fuzz_cleanup);
}

static void fuzz_write_all(int fd, const void *buf, size_t size)
{
	const char *data = buf;
	while (size > 0) {
		ssize_t n = write(fd, data, size);
		if (n <= 0)
			abort();
		data += n;
		size -= (size_t)n;
	}
}

static void fuzz_write(const uint8_t *data, size_t size)
{
	int fd = open(fuzz_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		abort();
	if (size > 0 && data[0] == '#') {
		const uint8_t *p = data + 1, *end = data + size;
		while (p < end) {
			const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
			size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
			char crc[16];
			snprintf(crc, sizeof(crc), "%08lx ", crc32(0L, p, (uInt)len));
			fuzz_write_all(fd, crc, 9);
			fuzz_write_all(fd, p, len + (nl ? 1 : 0));
			p += len + (nl ? 1 : 0);
		}
	} else {
		fuzz_write_all(fd, data, size);
	}
	close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!fuzz_dir[0])
		fuzz_init();
	fuzz_write(data, size);

	struct ledger *l = NULL;
	bool torn = false;
	char err[512];
	int r = ledger_open(fuzz_dir, "fuzz", &l, &torn, err, sizeof(err));
	if (r < 0) {
		if (l || !err[0])
			abort();   /* a refusal always says why */
		unlink(fuzz_log);
		return 0;
	}
	/* walk the view: every identity is found again by its key */
	size_t n = ledger_count(l);
	for (size_t i = 0; i < n; i++) {
		const struct ledger_file *f = ledger_at(l, i);
		struct ledger_key k = { f->site, f->path, f->size, f->mtime, f->sha256[0] ? f->sha256 : NULL };
		const struct ledger_file *g = ledger_get(l, &k);
		if (!g || (f->sha256[0] && g != f))
			abort();
		if (f->batches_accepted > f->n_batches)
			abort();
		(void)ledger_fstate_name(f->state);
		if (f->sha256[0])
			(void)ledger_find_sha(l, f->sha256, "/");
		(void)ledger_task_id(f, 0);
	}
	/* one append on top of what was replayed, then a replay of the lot */
	const char *path = n ? ledger_at(l, 0)->path : "/fuzz.csv";
	char *path_copy = strdup(path);
	int fr = path_copy ? ledger_forget(l, path_copy, "fuzz") : -1;
	size_t before = ledger_count(l);
	ledger_free(l);
	if (fr == 0) {
		l = NULL;
		if (ledger_open(fuzz_dir, "fuzz", &l, &torn, err, sizeof(err)) < 0 || torn ||
		    ledger_count(l) != before)
			abort();
		ledger_free(l);
	}
	free(path_copy);
	unlink(fuzz_log);
	return 0;
}
