/* fuzz_yaml.c — libFuzzer target for the configuration loader.
 *
 * The first byte picks the role of the rest of the input: even = a job file
 * (jobs.d/fuzz.yaml) next to a valid main file, odd = the main file itself
 * (next to a valid job). Seeds start with 'J' (job) or 'M' (main).
 *
 *   clang -g -O1 -std=c17 -D_GNU_SOURCE -Isrc -fsanitize=fuzzer,address,undefined \
 *     -o tests/fuzz/bin/fuzz_yaml tests/fuzz/fuzz_yaml.c src/config.c src/util.c \
 *     src/attr.c src/schedule.c -lyaml -lpthread
 *   mkdir -p /tmp/xp-fuzz-yaml-new
 *   tests/fuzz/bin/fuzz_yaml -max_total_time=30 /tmp/xp-fuzz-yaml-new tests/fuzz/corpus/yaml
 * (new inputs go to the first directory; replay: fuzz_yaml tests/fuzz/corpus/yaml/\*)
 */
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char MAIN_YAML[] =
	"projects:\n"
	"  main:\n"
	"    url: https://external-api.xtremepush.com\n"
	"    apptoken_file: main.apptoken\n"
	"    attributes: {first_name: string, vip: boolean}\n"
	"sites:\n"
	"  partner-a:\n"
	"    host: sftp.example\n"
	"    user: xp\n"
	"    private_key_file: partner-a.key\n"
	"    known_hosts_file: known_hosts\n";

static const char JOB_YAML[] =
	"project: main\n"
	"source: {site: partner-a, path: /out}\n"
	"schedule: {every: 15m}\n";

static char dir[PATH_MAX];
static char main_path[PATH_MAX + 32], job_path[PATH_MAX + 32];

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		abort();
	if (len && write(fd, data, len) != (ssize_t)len)
		abort();
	close(fd);
}

static void cleanup(void)
{
	static const char *const names[] = {"jobs.d/fuzz.yaml", "jobs.d", "main.apptoken",
					    "partner-a.key", "xpimportd.yaml"};
	char path[PATH_MAX + 32];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		remove(path);
	}
	rmdir(dir);
}

static void init_once(void)
{
	char path[PATH_MAX + 32];
	char tmpl[] = "/tmp/fuzz_yaml.XXXXXX";

	if (dir[0])
		return;
	if (!mkdtemp(tmpl))
		abort();
	snprintf(dir, sizeof(dir), "%s", tmpl);
	snprintf(path, sizeof(path), "%s/jobs.d", dir);
	if (mkdir(path, 0700) < 0)
		abort();
	snprintf(path, sizeof(path), "%s/main.apptoken", dir);
	write_file(path, "token\n", 6, 0600);
	snprintf(path, sizeof(path), "%s/partner-a.key", dir);
	write_file(path, "key\n", 4, 0600);
	snprintf(main_path, sizeof(main_path), "%s/xpimportd.yaml", dir);
	snprintf(job_path, sizeof(job_path), "%s/jobs.d/fuzz.yaml", dir);
	atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg *cfg = NULL;
	struct cfg_errors errs = {0};

	init_once();
	if (size == 0)
		return 0;
	if (data[0] % 2 == 0) {
		write_file(main_path, MAIN_YAML, sizeof(MAIN_YAML) - 1, 0644);
		write_file(job_path, data + 1, size - 1, 0644);
	} else {
		write_file(main_path, data + 1, size - 1, 0644);
		write_file(job_path, JOB_YAML, sizeof(JOB_YAML) - 1, 0644);
	}
	int rc = config_load(main_path, &cfg, &errs);
	/* the contract: success has no errors, failure has no cfg */
	if ((rc == 0) != (cfg != NULL) || (rc == 0 && errs.n != 0))
		abort();
	for (size_t i = 0; i < errs.n; i++)
		if (!errs.msgs[i] || !errs.msgs[i][0])
			abort();
	cfg_free(cfg);
	cfg_errors_free(&errs);
	return 0;
}
