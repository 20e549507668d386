/* test_config.c — config_load(): every rule with its exact
 * "FILE:LINE:COL: message", the design.md example field by field, the
 * shipped etc/ examples, and hostile input (billion laughs, 2 MiB, depth).
 * Each test builds its files in a fresh mkdtemp() directory. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char g_dir[PATH_MAX];

static void put(const char *rel, const char *content, mode_t mode)
{
	char path[PATH_MAX * 2];
	snprintf(path, sizeof(path), "%s/%s", g_dir, rel);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	size_t len = strlen(content);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void put_dir(const char *rel)
{
	char path[PATH_MAX * 2];
	snprintf(path, sizeof(path), "%s/%s", g_dir, rel);
	assert_int_equal(mkdir(path, 0700), 0);
}

static char *at_dir(const char *rel)
{
	static char buf[4][PATH_MAX * 2];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", g_dir, rel);
	return buf[i];
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	char tmpl[] = "/tmp/xpcfg.XXXXXX";
	(void)state;
	if (!mkdtemp(tmpl) || !realpath(tmpl, g_dir))
		return -1;
	unsetenv("CREDENTIALS_DIRECTORY");
	put_dir("jobs.d");
	put("main.apptoken", "SECRET-TOKEN-VALUE\n", 0600);
	put("partner-a.key", "-----BEGIN OPENSSH PRIVATE KEY-----\n", 0600);
	put("ca.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unsetenv("CREDENTIALS_DIRECTORY");
	return nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int load(struct cfg **cfg, struct cfg_errors *errs)
{
	*cfg = NULL;
	return config_load(at_dir("xpimportd.yaml"), cfg, errs);
}

/* Expected messages use '@' for the test directory. */
static char *expand(const char *want)
{
	size_t n = strlen(want) + 1;
	for (const char *p = want; *p; p++)
		if (*p == '@')
			n += strlen(g_dir);
	char *out = malloc(n), *o = out;
	assert_non_null(out);
	for (const char *p = want; *p; p++) {
		if (*p == '@') {
			strcpy(o, g_dir);
			o += strlen(g_dir);
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	return out;
}

static void dump(const struct cfg_errors *errs)
{
	for (size_t i = 0; i < errs->n; i++)
		fprintf(stderr, "  got[%zu]: %s\n", i, errs->msgs[i]);
}

static void expect_errors_(const struct cfg_errors *errs, const char *const *want, size_t n)
{
	bool ok = errs->n == n;
	for (size_t i = 0; ok && i < n; i++) {
		char *w = expand(want[i]);
		if (strcmp(errs->msgs[i], w) != 0) {
			fprintf(stderr, "  want[%zu]: %s\n", i, w);
			ok = false;
		}
		free(w);
	}
	if (!ok) {
		fprintf(stderr, "  expected %zu errors, got %zu\n", n, errs->n);
		dump(errs);
	}
	assert_true(ok);
}

#define EXPECT_ERRORS(errs, ...)                                                              \
	do {                                                                                  \
		const char *const want_[] = {__VA_ARGS__};                                    \
		expect_errors_((errs), want_, sizeof(want_) / sizeof(want_[0]));              \
	} while (0)

/* Load, expect -EINVAL and exactly these messages. */
#define EXPECT_INVALID(...)                                                                   \
	do {                                                                                  \
		struct cfg *cfg_;                                                             \
		struct cfg_errors errs_ = {0};                                                \
		int rc_ = load(&cfg_, &errs_);                                                \
		if (rc_ != -EINVAL)                                                           \
			dump(&errs_);                                                         \
		assert_int_equal(rc_, -EINVAL);                                               \
		assert_null(cfg_);                                                            \
		EXPECT_ERRORS(&errs_, __VA_ARGS__);                                           \
		cfg_errors_free(&errs_);                                                      \
	} while (0)

static struct cfg *load_ok(void)
{
	struct cfg *cfg;
	struct cfg_errors errs = {0};
	int rc = load(&cfg, &errs);
	if (rc != 0)
		dump(&errs);
	assert_int_equal(rc, 0);
	assert_int_equal(errs.n, 0);
	assert_non_null(cfg);
	return cfg;
}

static const char MAIN_OK[] =
	"projects:\n"
	"  main:\n"
	"    url: https://external-api.xtremepush.com\n"
	"    apptoken_file: main.apptoken\n"
	"    attributes:\n"
	"      first_name: string\n"
	"sites:\n"
	"  partner-a:\n"
	"    host: sftp.example\n"
	"    user: xp\n"
	"    private_key_file: partner-a.key\n"
	"    known_hosts_file: known_hosts\n";

static const char JOB_OK[] =
	"project: main\n"
	"source:\n"
	"  site: partner-a\n"
	"  path: /out\n"
	"schedule:\n"
	"  every: 15m\n";

/* ---- the design.md example --------------------------------------------- */

static const char DESIGN_MAIN[] =
	"# /etc/xpimportd/xpimportd.yaml\n"
	"jobs_directory: jobs.d            # relative to this file\n"
	"max_parallel_jobs: 4\n"
	"projects:\n"
	"  main:\n"
	"    url: https://external-api.xtremepush.com\n"
	"    apptoken_file: main.apptoken\n"
	"    ca_file: ca.pem   # optional\n"
	"    max_in_flight: 4              # batches posted concurrently for one run\n"
	"    attributes:                   # the project's custom profile attributes and their types\n"
	"      first_name: string\n"
	"      loyalty_tier: string\n"
	"      lifetime_value: number\n"
	"      last_deposit: date\n"
	"      vip: boolean\n"
	"      preferences: array\n"
	"sites:\n"
	"  partner-a:\n"
	"    host: sftp.partner-a.example\n"
	"    port: 22\n"
	"    user: xpimport\n"
	"    private_key_file: partner-a.key          # ed25519 or ecdsa; passphrase_file optional\n"
	"    known_hosts_file: /etc/xpimportd/known_hosts\n"
	"    # password_file: partner-a.password      # instead of a key\n";

static const char DESIGN_JOB[] =
	"# /etc/xpimportd/jobs.d/crm-daily.yaml\n"
	"project: main\n"
	"source:\n"
	"  site: partner-a\n"
	"  path: /outgoing/profiles\n"
	"  include: [\"profiles_*.csv\", \"profiles_*.csv.gz\"]\n"
	"  exclude: [\"*.part\", \"*.tmp\", \".*\"]\n"
	"  settle: 30s                    # size and mtime unchanged for this long\n"
	"  done_marker: .done             # optional: only take X when X.done exists\n"
	"  after_import: {action: move, to: archive/%Y-%m-%d}   # leave | delete | move\n"
	"  after_failure: {action: move, to: failed}\n"
	"schedule:\n"
	"  every: 15m                     # or: cron: \"0 6 * * 1-5\" with timezone: Europe/Dublin\n"
	"mapping:\n"
	"  auto: true                     # a header equal to an attribute name maps to it\n"
	"  columns:                       # explicit header -> attribute; `skip` = Don't import\n"
	"    E-mail: email\n"
	"    Phone: mobile_number\n"
	"    Internal ref: skip\n"
	"validation:\n"
	"  default_country_code: 353      # turns national 0850123456 into 353850123456\n"
	"  max_invalid_rows: 100          # or max_invalid_percent: 1\n"
	"batch:\n"
	"  size: 10000\n";

static void test_design_example(void **state)
{
	(void)state;
	put("xpimportd.yaml", DESIGN_MAIN, 0644);
	put("jobs.d/crm-daily.yaml", DESIGN_JOB, 0644);
	struct cfg *cfg = load_ok();

	assert_string_equal(cfg->path, at_dir("xpimportd.yaml"));
	assert_string_equal(cfg->dir, g_dir);
	assert_string_equal(cfg->jobs_directory, at_dir("jobs.d"));
	assert_int_equal(cfg->max_parallel_jobs, 4);
	assert_int_equal(cfg->state.keep_runs, 100);
	assert_int_equal(cfg->state.keep_runs_age_ms, 30LL * 86400 * 1000);

	assert_int_equal(cfg->n_projects, 1);
	const struct cfg_project *p = cfg_find_project(cfg, "main");
	assert_ptr_equal(p, &cfg->projects[0]);
	assert_string_equal(p->name, "main");
	assert_string_equal(p->url, "https://external-api.xtremepush.com");
	assert_string_equal(p->apptoken_file, at_dir("main.apptoken"));
	assert_string_equal(p->ca_file, at_dir("ca.pem"));
	assert_int_equal(p->max_in_flight, 4);
	static const struct {
		const char *name;
		enum attr_type type;
	} attrs[] = {{"first_name", ATTR_STRING},   {"loyalty_tier", ATTR_STRING},
		     {"lifetime_value", ATTR_NUMBER}, {"last_deposit", ATTR_DATE},
		     {"vip", ATTR_BOOLEAN},           {"preferences", ATTR_ARRAY}};
	assert_int_equal(p->n_attrs, 6);
	for (size_t i = 0; i < 6; i++) {
		assert_string_equal(p->attrs[i].name, attrs[i].name);
		assert_int_equal(p->attrs[i].type, attrs[i].type);
	}
	assert_int_equal(p->retry.max_attempts, 6);
	assert_int_equal(p->retry.initial_backoff_ms, 1000);
	assert_int_equal(p->retry.max_backoff_ms, 300000);
	assert_true(p->confirm_tasks);
	assert_int_equal(p->task_timeout_ms, 1800000);
	assert_int_equal(p->connect_timeout_ms, 30000);
	assert_int_equal(p->request_timeout_ms, 300000);
	assert_int_equal(p->default_country_code, 0);
	assert_string_equal(p->src_file, at_dir("xpimportd.yaml"));
	assert_int_equal(p->src_line, 5);
	assert_int_equal(p->src_col, 3);

	assert_int_equal(cfg->n_sites, 1);
	const struct cfg_site *s = cfg_find_site(cfg, "partner-a");
	assert_ptr_equal(s, &cfg->sites[0]);
	assert_string_equal(s->host, "sftp.partner-a.example");
	assert_int_equal(s->port, 22);
	assert_string_equal(s->user, "xpimport");
	assert_string_equal(s->private_key_file, at_dir("partner-a.key"));
	assert_null(s->passphrase_file);
	assert_null(s->password_file);
	assert_string_equal(s->known_hosts_file, "/etc/xpimportd/known_hosts");
	assert_int_equal(s->n_host_key_sha256, 0);
	assert_int_equal(s->connect_timeout_ms, 30000);
	assert_int_equal(s->auth_timeout_ms, 30000);
	assert_int_equal(s->stall_timeout_ms, 120000);
	assert_int_equal(s->keepalive_seconds, 30);
	assert_int_equal(s->src_line, 18);
	assert_int_equal(s->src_col, 3);

	assert_int_equal(cfg->n_jobs, 1);
	const struct cfg_job *j = cfg_find_job(cfg, "crm-daily");
	assert_ptr_equal(j, &cfg->jobs[0]);
	assert_null(cfg_find_job(cfg, "crm"));
	assert_string_equal(j->name, "crm-daily");
	assert_string_equal(j->file, at_dir("jobs.d/crm-daily.yaml"));
	assert_string_equal(j->src_file, at_dir("jobs.d/crm-daily.yaml"));
	assert_int_equal(j->src_line, 2);
	assert_int_equal(j->src_col, 1);
	assert_true(j->enabled);
	assert_string_equal(j->project_name, "main");
	assert_ptr_equal(j->project, p);
	assert_string_equal(j->source.site_name, "partner-a");
	assert_ptr_equal(j->source.site, s);
	assert_string_equal(j->source.path, "/outgoing/profiles");
	assert_int_equal(j->source.n_include, 2);
	assert_string_equal(j->source.include[0], "profiles_*.csv");
	assert_string_equal(j->source.include[1], "profiles_*.csv.gz");
	assert_int_equal(j->source.n_exclude, 3);
	assert_string_equal(j->source.exclude[0], "*.part");
	assert_string_equal(j->source.exclude[1], "*.tmp");
	assert_string_equal(j->source.exclude[2], ".*");
	assert_false(j->source.recursive);
	assert_int_equal(j->source.settle_ms, 30000);
	assert_int_equal(j->source.min_age_ms, 0);
	assert_string_equal(j->source.done_marker, ".done");
	assert_true(j->source.skip_duplicate_content);
	assert_int_equal(j->source.after_import.action, AFTER_MOVE);
	assert_string_equal(j->source.after_import.to, "archive/%Y-%m-%d");
	assert_false(j->source.after_import.upload_rejects);
	assert_int_equal(j->source.after_failure.action, AFTER_MOVE);
	assert_string_equal(j->source.after_failure.to, "failed");
	assert_false(j->source.after_failure.upload_rejects);
	assert_int_equal(j->schedule.every_ms, 900000);
	assert_null(j->schedule.cron);
	assert_string_equal(j->schedule.timezone, "UTC");
	assert_int_equal(j->schedule.jitter_ms, 0);
	assert_false(j->schedule.run_at_start);
	assert_true(j->mapping.auto_map);
	assert_int_equal(j->mapping.n_columns, 3);
	assert_string_equal(j->mapping.columns[0].header, "E-mail");
	assert_string_equal(j->mapping.columns[0].attr, "email");
	assert_string_equal(j->mapping.columns[1].header, "Phone");
	assert_string_equal(j->mapping.columns[1].attr, "mobile_number");
	assert_string_equal(j->mapping.columns[2].header, "Internal ref");
	assert_null(j->mapping.columns[2].attr);
	assert_string_equal(j->mapping.columns[1].src_file, at_dir("jobs.d/crm-daily.yaml"));
	assert_int_equal(j->mapping.columns[1].src_line, 18);
	assert_int_equal(j->mapping.columns[1].src_col, 5);
	assert_int_equal(j->validation.default_country_code, 353);
	assert_int_equal(j->validation.max_invalid_rows, 100);
	assert_true(j->validation.max_invalid_percent < 0);
	assert_int_equal(j->validation.empty_cells, EMPTY_NULL);
	assert_int_equal(j->csv.delimiter, ',');
	assert_int_equal(j->csv.quote, '"');
	assert_int_equal(j->csv.max_field_bytes, 65536);
	assert_int_equal(j->csv.max_columns, 1000);
	assert_int_equal(j->csv.max_line_bytes, 1048576);
	assert_int_equal(j->batch.size, 10000);
	assert_int_equal(j->batch.max_bytes, 8 * 1024 * 1024);
	cfg_free(cfg);
}

static void test_defaults_and_every_key(void **state)
{
	(void)state;
	put("creds.pw", "pw\n", 0600);
	put("xpimportd.yaml",
	    "max_parallel_jobs: 64\n"
	    "state: {keep_runs: 7, keep_runs_age: 2d}\n"
	    "projects:\n"
	    "  us:\n"
	    "    url: https://api.us.xtremepush.com/\n"
	    "    apptoken_file: main.apptoken\n"
	    "    max_in_flight: 32\n"
	    "    attributes: {n: integer}\n"
	    "    retry: {max_attempts: 3, initial_backoff: 250ms, max_backoff: 1m}\n"
	    "    confirm_tasks: false\n"
	    "    task_timeout: 1h\n"
	    "    connect_timeout: 10s\n"
	    "    request_timeout: 2m\n"
	    "    default_country_code: 44\n"
	    "sites:\n"
	    "  pw:\n"
	    "    host: h.example\n"
	    "    port: 2222\n"
	    "    user: u\n"
	    "    password_file: creds.pw\n"
	    "    host_key_sha256:\n"
	    "      - SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\n"
	    "      - \"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\"\n"
	    "    connect_timeout: 5s\n"
	    "    auth_timeout: 6s\n"
	    "    stall_timeout: 7s\n"
	    "    keepalive: 0\n",
	    0644);
	put("jobs.d/minimal.yaml",
	    "project: us\n"
	    "source: {site: pw, path: in}\n"
	    "schedule: {cron: \"0 6 * * 1-5\", timezone: Europe/Dublin}\n",
	    0644);
	put("jobs.d/full.yml",
	    "project: us\n"
	    "enabled: false\n"
	    "source:\n"
	    "  site: pw\n"
	    "  path: /in\n"
	    "  include: \"*.txt\"\n"
	    "  exclude: []\n"
	    "  recursive: true\n"
	    "  settle: 0\n"
	    "  min_age: 5m\n"
	    "  done_marker:\n"
	    "  duplicate_content: import\n"
	    "  after_import: {action: delete}\n"
	    "  after_failure: {action: move, to: failed, upload_rejects: true}\n"
	    "schedule: {every: 1s, jitter: 30s, run_at_start: true}\n"
	    "mapping: {auto: false, columns: {Customer: user_id, N: n}}\n"
	    "validation: {max_invalid_percent: 1.5, empty_cells: reject}\n"
	    "csv: {delimiter: \"\\t\", quote: \"'\", max_field_bytes: 10, max_columns: 3, "
	    "max_line_bytes: 100}\n"
	    "batch: {size: 1, max_bytes: 65536}\n",
	    0644);
	struct cfg *cfg = load_ok();
	assert_int_equal(cfg->max_parallel_jobs, 64);
	assert_int_equal(cfg->state.keep_runs, 7);
	assert_int_equal(cfg->state.keep_runs_age_ms, 2 * 86400000LL);
	const struct cfg_project *p = &cfg->projects[0];
	assert_string_equal(p->url, "https://api.us.xtremepush.com");
	assert_null(p->ca_file);
	assert_int_equal(p->max_in_flight, 32);
	assert_int_equal(p->n_attrs, 1);
	assert_int_equal(p->attrs[0].type, ATTR_INTEGER);
	assert_int_equal(p->retry.max_attempts, 3);
	assert_int_equal(p->retry.initial_backoff_ms, 250);
	assert_int_equal(p->retry.max_backoff_ms, 60000);
	assert_false(p->confirm_tasks);
	assert_int_equal(p->task_timeout_ms, 3600000);
	assert_int_equal(p->connect_timeout_ms, 10000);
	assert_int_equal(p->request_timeout_ms, 120000);
	assert_int_equal(p->default_country_code, 44);
	const struct cfg_site *s = &cfg->sites[0];
	assert_int_equal(s->port, 2222);
	assert_null(s->private_key_file);
	assert_string_equal(s->password_file, at_dir("creds.pw"));
	assert_null(s->known_hosts_file);
	assert_int_equal(s->n_host_key_sha256, 2);
	assert_string_equal(s->host_key_sha256[0], "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s");
	assert_string_equal(s->host_key_sha256[1], "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
	assert_int_equal(s->connect_timeout_ms, 5000);
	assert_int_equal(s->auth_timeout_ms, 6000);
	assert_int_equal(s->stall_timeout_ms, 7000);
	assert_int_equal(s->keepalive_seconds, 0);

	/* sorted by file name: full.yml before minimal.yaml */
	assert_int_equal(cfg->n_jobs, 2);
	const struct cfg_job *f = &cfg->jobs[0], *m = &cfg->jobs[1];
	assert_string_equal(f->name, "full");
	assert_string_equal(m->name, "minimal");

	assert_true(m->enabled);
	assert_int_equal(m->source.n_include, 2);
	assert_string_equal(m->source.include[0], "*.csv");
	assert_string_equal(m->source.include[1], "*.csv.gz");
	assert_int_equal(m->source.n_exclude, 4);
	assert_string_equal(m->source.exclude[0], "*.part");
	assert_string_equal(m->source.exclude[1], "*.filepart");
	assert_string_equal(m->source.exclude[2], "*.tmp");
	assert_string_equal(m->source.exclude[3], ".*");
	assert_int_equal(m->source.settle_ms, 30000);
	assert_null(m->source.done_marker);
	assert_int_equal(m->source.after_import.action, AFTER_LEAVE);
	assert_null(m->source.after_import.to);
	assert_int_equal(m->source.after_failure.action, AFTER_LEAVE);
	assert_int_equal(m->schedule.every_ms, 0);
	assert_string_equal(m->schedule.cron, "0 6 * * 1-5");
	assert_string_equal(m->schedule.timezone, "Europe/Dublin");
	assert_true(m->mapping.auto_map);
	assert_int_equal(m->mapping.n_columns, 0);
	assert_int_equal(m->validation.default_country_code, 0);
	assert_int_equal(m->validation.max_invalid_rows, 0); /* no budget: none allowed */
	assert_true(m->validation.max_invalid_percent < 0);
	assert_int_equal(m->batch.size, 10000);

	assert_false(f->enabled);
	assert_int_equal(f->source.n_include, 1);
	assert_string_equal(f->source.include[0], "*.txt");
	assert_int_equal(f->source.n_exclude, 0);
	assert_true(f->source.recursive);
	assert_int_equal(f->source.settle_ms, 0);
	assert_int_equal(f->source.min_age_ms, 300000);
	assert_null(f->source.done_marker);
	assert_false(f->source.skip_duplicate_content);
	assert_int_equal(f->source.after_import.action, AFTER_DELETE);
	assert_int_equal(f->source.after_failure.action, AFTER_MOVE);
	assert_true(f->source.after_failure.upload_rejects);
	assert_int_equal(f->schedule.every_ms, 1000);
	assert_int_equal(f->schedule.jitter_ms, 30000);
	assert_true(f->schedule.run_at_start);
	assert_false(f->mapping.auto_map);
	assert_int_equal(f->mapping.n_columns, 2);
	assert_string_equal(f->mapping.columns[0].attr, "user_id");
	assert_string_equal(f->mapping.columns[1].attr, "n");
	assert_int_equal(f->validation.max_invalid_rows, -1);
	assert_true(f->validation.max_invalid_percent == 1.5);
	assert_int_equal(f->validation.empty_cells, EMPTY_REJECT);
	assert_int_equal(f->csv.delimiter, '\t');
	assert_int_equal(f->csv.quote, '\'');
	assert_int_equal(f->csv.max_field_bytes, 10);
	assert_int_equal(f->csv.max_columns, 3);
	assert_int_equal(f->csv.max_line_bytes, 100);
	assert_int_equal(f->batch.size, 1);
	assert_int_equal(f->batch.max_bytes, 65536);
	cfg_free(cfg);
}

/* ---- the shipped examples ---------------------------------------------- */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	static char buf[65536];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strdup(buf);
}

static void test_etc_examples_load(void **state)
{
	(void)state;
	const char *src = getenv("XP_SRCDIR") ? getenv("XP_SRCDIR") : ".";
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/etc/xpimportd.yaml", src);
	char *main_yaml = slurp(path);
	snprintf(path, sizeof(path), "%s/etc/jobs.d/crm-daily.yaml.example", src);
	char *job_yaml = slurp(path);
	if (!main_yaml || !job_yaml)
		fail_msg("run from the source tree (or set XP_SRCDIR): %s not found", path);
	put("xpimportd.yaml", main_yaml, 0644);
	put("jobs.d/crm-daily.yaml", job_yaml, 0644);
	put("jobs.d/crm-daily.yaml.example", job_yaml, 0644);
	free(main_yaml);
	free(job_yaml);
	struct cfg *cfg = load_ok();
	assert_int_equal(cfg->n_jobs, 1); /* the .example copy is ignored */
	const struct cfg_job *j = cfg_find_job(cfg, "crm-daily");
	assert_non_null(j);
	assert_ptr_equal(j->project, cfg_find_project(cfg, "main"));
	assert_ptr_equal(j->source.site, cfg_find_site(cfg, "partner-a"));
	assert_int_equal(j->schedule.every_ms, 900000);
	assert_int_equal(j->source.after_import.action, AFTER_MOVE);
	assert_int_equal(j->validation.max_invalid_rows, 100);
	assert_int_equal(cfg->projects[0].n_attrs, 6);
	cfg_free(cfg);
}

/* ---- one test per rule --------------------------------------------------- */

static void test_unknown_keys(void **state)
{
	(void)state;
	put("xpimportd.yaml",
	    "projects:\n"
	    "  main:\n"
	    "    url: https://x.example\n"
	    "    apptoken_file: main.apptoken\n"
	    "    retry: {max_attemps: 3}\n"
	    "sites:\n"
	    "  partner-a:\n"
	    "    host: h\n"
	    "    user: u\n"
	    "    password_file: main.apptoken\n"
	    "    known_hosts_file: kh\n"
	    "    hostname: h\n"
	    "state: {keep: 1}\n"
	    "job_directory: x\n",
	    0644);
	put("jobs.d/crm.yaml",
	    "project: main\n"
	    "source:\n"
	    "  site: partner-a\n"
	    "  path: /out\n"
	    "  sttle: 30s\n"
	    "  after_import: {action: leave, too: x}\n"
	    "schedule:\n"
	    "  every: 15m\n"
	    "  tz: UTC\n"
	    "mapping: {autos: true}\n"
	    "validation: {max_invalid: 3}\n"
	    "csv: {sep: \",\"}\n"
	    "batch: {rows: 3}\n"
	    "colour: blue\n",
	    0644);
	EXPECT_INVALID("@/xpimportd.yaml:5:13: unknown key 'max_attemps' in projects.main.retry",
		       "@/xpimportd.yaml:12:5: unknown key 'hostname' in sites.partner-a",
		       "@/xpimportd.yaml:13:9: unknown key 'keep' in state",
		       "@/xpimportd.yaml:14:1: unknown key 'job_directory' at top level",
		       "@/jobs.d/crm.yaml:5:3: unknown key 'sttle' in source",
		       "@/jobs.d/crm.yaml:6:33: unknown key 'too' in source.after_import",
		       "@/jobs.d/crm.yaml:9:3: unknown key 'tz' in schedule",
		       "@/jobs.d/crm.yaml:10:11: unknown key 'autos' in mapping",
		       "@/jobs.d/crm.yaml:11:14: unknown key 'max_invalid' in validation",
		       "@/jobs.d/crm.yaml:12:7: unknown key 'sep' in csv",
		       "@/jobs.d/crm.yaml:13:9: unknown key 'rows' in batch",
		       "@/jobs.d/crm.yaml:14:1: unknown key 'colour' at top level");
}

static void test_wrong_types(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/crm.yaml",
	    "project: main\n"
	    "enabled: yes\n"
	    "source:\n"
	    "  site: partner-a\n"
	    "  path: [a, b]\n"
	    "  settle: soon\n"
	    "  recursive: 1\n"
	    "  include: {a: b}\n"
	    "  min_age: 30\n"
	    "schedule:\n"
	    "  every: 15m\n"
	    "  run_at_start: \"true\"\n"
	    "batch: 100\n",
	    0644);
	EXPECT_INVALID("@/jobs.d/crm.yaml:2:10: enabled: expected true or false",
		       "@/jobs.d/crm.yaml:5:9: path: expected a string",
		       "@/jobs.d/crm.yaml:6:11: settle: expected a duration like 30s, 15m, 2h, 1d",
		       "@/jobs.d/crm.yaml:7:14: recursive: expected true or false",
		       "@/jobs.d/crm.yaml:8:12: include: expected a string or a list of strings",
		       "@/jobs.d/crm.yaml:9:12: min_age: expected a duration like 30s, 15m, 2h, 1d",
		       "@/jobs.d/crm.yaml:12:17: run_at_start: expected true or false",
		       "@/jobs.d/crm.yaml:13:8: batch: expected a mapping");
}

static void test_duplicate_keys(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/crm.yaml",
	    "project: main\n"
	    "source:\n"
	    "  site: partner-a\n"
	    "  path: /out\n"
	    "  path: /in\n"
	    "schedule:\n"
	    "  every: 15m\n"
	    "project: other\n"
	    "project: third\n",
	    0644);
	EXPECT_INVALID("@/jobs.d/crm.yaml:5:3: duplicate key 'path' (first at 4:3)",
		       "@/jobs.d/crm.yaml:8:1: duplicate key 'project' (first at 1:1)",
		       "@/jobs.d/crm.yaml:9:1: duplicate key 'project' (first at 1:1)");
}

static void test_anchors_aliases_tags(void **state)
{
	(void)state;
	put("xpimportd.yaml",
	    "projects:\n"
	    "  main: &p\n"
	    "    url: https://x.example\n"
	    "    apptoken_file: main.apptoken\n"
	    "  copy: *p\n"
	    "max_parallel_jobs: !!int 4\n"
	    "jobs_directory: \"jobs\\0.d\"\n",
	    0644);
	EXPECT_INVALID("@/xpimportd.yaml:2:9: anchors and aliases are not allowed",
		       "@/xpimportd.yaml:5:9: anchors and aliases are not allowed",
		       "@/xpimportd.yaml:6:20: tags are not allowed",
		       "@/xpimportd.yaml:7:17: NUL characters are not allowed");
}

static void test_billion_laughs(void **state)
{
	(void)state;
	char yaml[4096] = "", line[256];
	for (char c = 'a'; c <= 'i'; c++) {
		int n = snprintf(line, sizeof(line), "%c: &%c [", c, c);
		for (int k = 0; k < 9; k++) {
			if (c == 'a')
				n += snprintf(line + n, sizeof(line) - (size_t)n, "%s\"lol\"", k ? "," : "");
			else
				n += snprintf(line + n, sizeof(line) - (size_t)n, "%s*%c", k ? "," : "", c - 1);
		}
		snprintf(line + n, sizeof(line) - (size_t)n, "]\n");
		strcat(yaml, line);
	}
	put("xpimportd.yaml", yaml, 0644);
	struct cfg *cfg;
	struct cfg_errors errs = {0};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(load(&cfg, &errs), -EINVAL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(secs < 1.0);
	assert_null(cfg);
	/* 9 anchors + 8 x 9 aliases + 9 unknown keys, nothing expanded */
	assert_int_equal(errs.n, 90);
	char *w = expand("@/xpimportd.yaml:1:1: unknown key 'a' at top level");
	assert_string_equal(errs.msgs[0], w);
	free(w);
	w = expand("@/xpimportd.yaml:1:4: anchors and aliases are not allowed");
	assert_string_equal(errs.msgs[1], w);
	free(w);
	w = expand("@/xpimportd.yaml:2:8: anchors and aliases are not allowed");
	assert_string_equal(errs.msgs[4], w);
	free(w);
	cfg_errors_free(&errs);
}

static void test_large_files_refused(void **state)
{
	(void)state;
	size_t n = 2 * 1024 * 1024;
	char *big = malloc(n + 1);
	assert_non_null(big);
	memset(big, 'x', n);
	for (size_t i = 0; i < n; i += 64) {
		big[i] = '#';
		big[i + 63] = '\n';
	}
	big[n] = '\0';
	put("xpimportd.yaml", big, 0644);
	EXPECT_INVALID("@/xpimportd.yaml:1:1: file is larger than 1 MiB");

	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/big.yaml", big, 0644);
	put("jobs.d/crm.yaml", JOB_OK, 0644);
	/* exactly 1 MiB of comments is fine (but an empty job) */
	big[1024 * 1024] = '\0';
	put("jobs.d/edge.yaml", big, 0644);
	free(big);
	EXPECT_INVALID("@/jobs.d/big.yaml:1:1: file is larger than 1 MiB",
		       "@/jobs.d/edge.yaml:1:1: missing key 'project' at top level",
		       "@/jobs.d/edge.yaml:1:1: missing key 'source' at top level",
		       "@/jobs.d/edge.yaml:1:1: missing key 'schedule' at top level");
}

static void test_nesting_depth(void **state)
{
	(void)state;
	char yaml[256];
	/* the top-level mapping + 31 sequences = 32 levels: accepted by the parser */
	snprintf(yaml, sizeof(yaml), "x: %.*s%.*s\n", 31,
		 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 31,
		 "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
	put("xpimportd.yaml", yaml, 0644);
	EXPECT_INVALID("@/xpimportd.yaml:1:1: unknown key 'x' at top level");
	snprintf(yaml, sizeof(yaml), "x: %.*s%.*s\n", 40,
		 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 40,
		 "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
	put("xpimportd.yaml", yaml, 0644);
	EXPECT_INVALID("@/xpimportd.yaml:1:35: nesting deeper than 32 levels is not allowed");
}

static void test_one_document_only(void **state)
{
	(void)state;
	put("xpimportd.yaml", "max_parallel_jobs: 4\n---\nmax_parallel_jobs: 5\n", 0644);
	EXPECT_INVALID("@/xpimportd.yaml:2:1: only one YAML document is allowed per file");
}

static void test_syntax_error(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/crm.yaml", "project: main\nsource: [unclosed\nschedule: {every: 15m}\n", 0644);
	put("jobs.d/tab.yaml", "project: main\n\tsource: x\n", 0644);
	EXPECT_INVALID("@/jobs.d/crm.yaml:3:9: syntax error: did not find expected ',' or ']' "
		       "while parsing a flow sequence",
		       "@/jobs.d/tab.yaml:2:1: syntax error: found a tab character that violates "
		       "indentation while scanning a plain scalar");
}

static void test_bad_numbers_and_ranges(void **state)
{
	(void)state;
	put("xpimportd.yaml",
	    "max_parallel_jobs: 65\n"
	    "projects:\n"
	    "  main:\n"
	    "    url: https://x.example\n"
	    "    apptoken_file: main.apptoken\n"
	    "    max_in_flight: 33\n"
	    "    default_country_code: -1\n"
	    "    retry: {max_attempts: 0, initial_backoff: 10s, max_backoff: 5s}\n"
	    "sites:\n"
	    "  s1:\n"
	    "    host: h\n"
	    "    port: 70000\n"
	    "    user: u\n"
	    "    password_file: main.apptoken\n"
	    "    known_hosts_file: kh\n"
	    "    keepalive: 1500ms\n"
	    "  s2:\n"
	    "    host: h\n"
	    "    port: \"22\"\n"
	    "    user: u\n"
	    "    password_file: main.apptoken\n"
	    "    known_hosts_file: kh\n"
	    "    port: 22\n"
	    "    connect_timeout: 0\n"
	    "state:\n"
	    "  keep_runs: 0\n"
	    "  keep_runs_age: 99999999999999999999d\n",
	    0644);
	put("jobs.d/crm.yaml",
	    "project: main\n"
	    "source: {site: s1, path: /x}\n"
	    "schedule: {every: 500ms}\n"
	    "batch: {size: 10001, max_bytes: 1}\n"
	    "validation: {default_country_code: 1000, max_invalid_rows: -5}\n"
	    "csv: {max_columns: 0, max_field_bytes: 1x}\n",
	    0644);
	EXPECT_INVALID("@/xpimportd.yaml:1:20: max_parallel_jobs: 65 is out of range 1-64",
		       "@/xpimportd.yaml:6:20: max_in_flight: 33 is out of range 1-32",
		       "@/xpimportd.yaml:7:27: default_country_code: expected a whole number",
		       "@/xpimportd.yaml:8:27: max_attempts: 0 is out of range 1-100",
		       "@/xpimportd.yaml:8:65: retry: max_backoff must not be less than initial_backoff",
		       "@/xpimportd.yaml:12:11: port: 70000 is out of range 1-65535",
		       "@/xpimportd.yaml:16:16: keepalive: expected whole seconds, e.g. 30s (0 = off)",
		       "@/xpimportd.yaml:19:11: port: expected a whole number",
		       "@/xpimportd.yaml:23:5: duplicate key 'port' (first at 19:5)",
		       "@/xpimportd.yaml:24:22: connect_timeout: must be greater than 0",
		       "@/xpimportd.yaml:26:14: keep_runs: 0 is out of range 1-1000000",
		       "@/xpimportd.yaml:27:18: keep_runs_age: expected a duration like 30s, 15m, 2h, 1d",
		       "@/jobs.d/crm.yaml:3:19: every: must be at least 1s",
		       "@/jobs.d/crm.yaml:4:15: size: 10001 is out of range 1-10000",
		       "@/jobs.d/crm.yaml:4:33: max_bytes: 1 is out of range 65536-67108864",
		       "@/jobs.d/crm.yaml:5:36: default_country_code: 1000 is out of range 1-999",
		       "@/jobs.d/crm.yaml:5:60: max_invalid_rows: expected a whole number",
		       "@/jobs.d/crm.yaml:6:20: max_columns: 0 is out of range 1-10000",
		       "@/jobs.d/crm.yaml:6:40: max_field_bytes: expected a whole number");
}

static void test_unknown_project_and_site(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/crm.yaml",
	    "project: crm\n"
	    "source: {site: partner-b, path: /x}\n"
	    "schedule: {every: 15m}\n"
	    "mapping: {columns: {Phone: mobile}}\n",
	    0644);
	/* with the project unknown, the mapping targets cannot be checked */
	EXPECT_INVALID("@/jobs.d/crm.yaml:1:10: project 'crm' is not defined in @/xpimportd.yaml",
		       "@/jobs.d/crm.yaml:2:16: site 'partner-b' is not defined in @/xpimportd.yaml");
}

static void test_job_files_and_duplicate_names(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/crm.yaml", JOB_OK, 0644);
	put("jobs.d/crm.yml", JOB_OK, 0644);
	put("jobs.d/crm.yaml.example", "not: [valid\n", 0644);
	put("jobs.d/notes.txt", "not: [valid\n", 0644);
	put("jobs.d/.hidden.yaml", "not: [valid\n", 0644);
	put("jobs.d/bad name.yaml", JOB_OK, 0644);
	put_dir("jobs.d/sub.yaml");
	EXPECT_INVALID("@/jobs.d/bad name.yaml:1:1: job name 'bad name' (the file name) may "
		       "contain only letters, digits, '.', '_' and '-'",
		       "@/jobs.d/crm.yml:1:1: duplicate job name 'crm' (also defined by "
		       "@/jobs.d/crm.yaml)",
		       "@/jobs.d/sub.yaml:1:1: not a regular file");
}

static void test_jobs_directory(void **state)
{
	(void)state;
	char yaml[1024];
	/* the default jobs.d may be missing: no jobs */
	put("xpimportd.yaml", MAIN_OK, 0644);
	assert_int_equal(rmdir(at_dir("jobs.d")), 0);
	struct cfg *cfg = load_ok();
	assert_int_equal(cfg->n_jobs, 0);
	cfg_free(cfg);
	/* an explicit one must exist */
	snprintf(yaml, sizeof(yaml), "jobs_directory: nowhere\n%s", MAIN_OK);
	put("xpimportd.yaml", yaml, 0644);
	EXPECT_INVALID("@/xpimportd.yaml:1:17: jobs_directory '@/nowhere' cannot be opened: No "
		       "such file or directory");
	/* relative to the main file; absolute as is */
	put_dir("other");
	put("other/j.yaml", JOB_OK, 0644);
	snprintf(yaml, sizeof(yaml), "jobs_directory: other\n%s", MAIN_OK);
	put("xpimportd.yaml", yaml, 0644);
	cfg = load_ok();
	assert_string_equal(cfg->jobs_directory, at_dir("other"));
	assert_string_equal(cfg->jobs[0].file, at_dir("other/j.yaml"));
	cfg_free(cfg);
	snprintf(yaml, sizeof(yaml), "jobs_directory: %s\n%s", at_dir("other"), MAIN_OK);
	put("xpimportd.yaml", yaml, 0644);
	cfg = load_ok();
	assert_string_equal(cfg->jobs_directory, at_dir("other"));
	assert_int_equal(cfg->n_jobs, 1);
	cfg_free(cfg);
}

static void test_mapping_targets(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/crm.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n"
	    "mapping:\n"
	    "  columns:\n"
	    "    Phone: mobile\n"
	    "    Name: first_name\n"
	    "    E-mail: email\n"
	    "    Junk: skip\n"
	    "    Bad: [x]\n"
	    "    Lang: language\n",
	    0644);
	EXPECT_INVALID("@/jobs.d/crm.yaml:6:12: mapping.columns: 'Phone' maps to 'mobile' which "
		       "is not an attribute of project 'main'",
		       "@/jobs.d/crm.yaml:10:10: mapping.columns: 'Bad' must map to an attribute "
		       "name or skip");
}

static void test_user_id_required(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/a.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n"
	    "mapping:\n"
	    "  auto: false\n"
	    "  columns: {E-mail: email}\n",
	    0644);
	put("jobs.d/b.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n"
	    "mapping: {columns: {user_id: skip}}\n",
	    0644);
	put("jobs.d/c.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n"
	    "mapping: {auto: false, columns: {Customer: user_id}}\n",
	    0644);
	EXPECT_INVALID("@/jobs.d/a.yaml:4:1: mapping: no column maps to user_id (auto is off)",
		       "@/jobs.d/b.yaml:4:1: mapping: no column maps to user_id (the 'user_id' "
		       "header is remapped by mapping.columns)");
}

static void test_custom_attributes(void **state)
{
	(void)state;
	put("xpimportd.yaml",
	    "projects:\n"
	    "  main:\n"
	    "    url: https://x.example\n"
	    "    apptoken_file: main.apptoken\n"
	    "    attributes:\n"
	    "      First_Name: string\n"
	    "      email: string\n"
	    "      tier: text\n"
	    "      skip: string\n"
	    "      has space: number\n"
	    "      ok_1: integer\n"
	    "      user_id: string\n",
	    0644);
	EXPECT_INVALID("@/xpimportd.yaml:6:7: attribute name 'First_Name' may contain only "
		       "lowercase letters, digits and '_'",
		       "@/xpimportd.yaml:7:7: attribute 'email' is a system attribute and cannot "
		       "be redefined",
		       "@/xpimportd.yaml:8:13: attributes.tier: unknown type 'text' (expected "
		       "string, number, integer, date, boolean or array)",
		       "@/xpimportd.yaml:9:7: attribute name 'skip' is reserved (it means: do not "
		       "import)",
		       "@/xpimportd.yaml:10:7: attribute name 'has space' may contain only "
		       "lowercase letters, digits and '_'",
		       "@/xpimportd.yaml:12:7: attribute 'user_id' is a system attribute and "
		       "cannot be redefined");
}

static void test_https_required(void **state)
{
	(void)state;
	put("xpimportd.yaml",
	    "projects:\n"
	    "  a:\n"
	    "    url: http://external-api.xtremepush.com\n"
	    "    apptoken_file: main.apptoken\n"
	    "  b:\n"
	    "    url: ftp://x\n"
	    "    apptoken_file: main.apptoken\n"
	    "  c:\n"
	    "    url: https://\n"
	    "    apptoken_file: main.apptoken\n"
	    "  d:\n"
	    "    apptoken_file: main.apptoken\n",
	    0644);
	EXPECT_INVALID("@/xpimportd.yaml:3:10: url: 'http://external-api.xtremepush.com' is "
		       "refused: TLS is required, use https://",
		       "@/xpimportd.yaml:6:10: url: expected an https:// URL like "
		       "https://external-api.xtremepush.com",
		       "@/xpimportd.yaml:9:10: url: expected an https:// URL like "
		       "https://external-api.xtremepush.com",
		       "@/xpimportd.yaml:11:3: missing key 'url' in projects.d");
}

static void test_secret_files(void **state)
{
	(void)state;
	put("loose.token", "SECRET-TOKEN-VALUE\n", 0640);
	put("shared.token", "SECRET-TOKEN-VALUE\n", 0620);
	put("xpimportd.yaml",
	    "projects:\n"
	    "  a:\n"
	    "    url: https://x.example\n"
	    "    apptoken_file: nope.token\n"
	    "  b:\n"
	    "    url: https://x.example\n"
	    "    apptoken_file: loose.token\n"
	    "  c:\n"
	    "    url: https://x.example\n"
	    "    apptoken_file: shared.token\n"
	    "  d:\n"
	    "    url: https://x.example\n"
	    "    apptoken_file: jobs.d\n"
	    "  e:\n"
	    "    url: https://x.example\n"
	    "    ca_file: missing-ca.pem\n",
	    0644);
	struct cfg *cfg;
	struct cfg_errors errs = {0};
	assert_int_equal(load(&cfg, &errs), -EINVAL);
	for (size_t i = 0; i < errs.n; i++)
		assert_null(strstr(errs.msgs[i], "SECRET-TOKEN-VALUE"));
	EXPECT_ERRORS(&errs,
		      "@/xpimportd.yaml:4:20: apptoken_file '@/nope.token' does not exist",
		      "@/xpimportd.yaml:7:20: apptoken_file '@/loose.token' is readable by group or "
		      "others; chmod 600 it",
		      "@/xpimportd.yaml:10:20: apptoken_file '@/shared.token' is writable by group "
		      "or others; chmod 600 it",
		      "@/xpimportd.yaml:13:20: apptoken_file '@/jobs.d' is not a regular file",
		      "@/xpimportd.yaml:14:3: missing key 'apptoken_file' in projects.e",
		      "@/xpimportd.yaml:16:14: ca_file '@/missing-ca.pem' does not exist");
	cfg_errors_free(&errs);
}

static void test_secret_in_credentials_directory(void **state)
{
	(void)state;
	put_dir("creds");
	put("creds/main.apptoken", "t\n", 0600);
	put("creds/partner-a.key", "k\n", 0644); /* too open: the credentials copy is checked */
	setenv("CREDENTIALS_DIRECTORY", at_dir("creds"), 1);
	put("xpimportd.yaml", MAIN_OK, 0644);
	EXPECT_INVALID("@/xpimportd.yaml:11:23: private_key_file '@/creds/partner-a.key' is "
		       "readable by group or others; chmod 600 it");
	put("creds/partner-a.key", "k\n", 0600);
	struct cfg *cfg = load_ok();
	assert_string_equal(cfg->projects[0].apptoken_file, at_dir("creds/main.apptoken"));
	assert_string_equal(cfg->sites[0].private_key_file, at_dir("creds/partner-a.key"));
	/* not secrets: known_hosts_file stays next to the config */
	assert_string_equal(cfg->sites[0].known_hosts_file, at_dir("known_hosts"));
	cfg_free(cfg);
	/* a name missing from the credentials directory falls back next to the config */
	assert_int_equal(unlink(at_dir("creds/main.apptoken")), 0);
	cfg = load_ok();
	assert_string_equal(cfg->projects[0].apptoken_file, at_dir("main.apptoken"));
	cfg_free(cfg);
}

static void test_site_auth_and_host_keys(void **state)
{
	(void)state;
	put("xpimportd.yaml",
	    "sites:\n"
	    "  bare:\n"
	    "    host: h\n"
	    "    user: u\n"
	    "  pins:\n"
	    "    host: h\n"
	    "    user: u\n"
	    "    private_key_file: partner-a.key\n"
	    "    host_key_sha256: [\"SHA256:short\", \"MD5:aa\"]\n"
	    "  phrase:\n"
	    "    host: h\n"
	    "    user: u\n"
	    "    password_file: main.apptoken\n"
	    "    passphrase_file: main.apptoken\n"
	    "    host_key_sha256: SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\n"
	    "  nohost:\n"
	    "    user: u\n"
	    "    password_file: main.apptoken\n"
	    "    known_hosts_file: kh\n",
	    0644);
	EXPECT_INVALID("@/xpimportd.yaml:2:3: site 'bare' needs private_key_file or password_file",
		       "@/xpimportd.yaml:2:3: site 'bare' needs known_hosts_file or "
		       "host_key_sha256 to verify the server",
		       "@/xpimportd.yaml:9:23: host_key_sha256: 'SHA256:short' is not a "
		       "fingerprint like SHA256:<43 base64 characters> (as printed by ssh-keygen "
		       "-lf)",
		       "@/xpimportd.yaml:9:39: host_key_sha256: 'MD5:aa' is not a fingerprint like "
		       "SHA256:<43 base64 characters> (as printed by ssh-keygen -lf)",
		       "@/xpimportd.yaml:14:22: passphrase_file: only used with private_key_file",
		       "@/xpimportd.yaml:16:3: missing key 'host' in sites.nohost");
}

static void test_after_actions(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/a.yaml",
	    "project: main\n"
	    "source:\n"
	    "  site: partner-a\n"
	    "  path: /out\n"
	    "  after_import: {action: move}\n"
	    "  after_failure: {action: leave, to: x, upload_rejects: yes}\n"
	    "schedule: {every: 15m}\n",
	    0644);
	put("jobs.d/b.yaml",
	    "project: main\n"
	    "source:\n"
	    "  site: partner-a\n"
	    "  path: /out\n"
	    "  after_import: {action: delete, upload_rejects: true}\n"
	    "  after_failure: {action: shred}\n"
	    "schedule: {every: 15m}\n",
	    0644);
	put("jobs.d/c.yaml",
	    "project: main\n"
	    "source:\n"
	    "  site: partner-a\n"
	    "  path: /out\n"
	    "  after_import: delete\n"
	    "  after_failure: {to: failed}\n"
	    "schedule: {every: 15m}\n",
	    0644);
	EXPECT_INVALID("@/jobs.d/a.yaml:5:3: after_import: action 'move' needs 'to'",
		       "@/jobs.d/a.yaml:6:38: to: only used with action 'move'",
		       "@/jobs.d/a.yaml:6:57: upload_rejects: expected true or false",
		       "@/jobs.d/b.yaml:5:34: upload_rejects: only allowed in after_failure",
		       "@/jobs.d/b.yaml:6:27: action: expected leave, delete or move",
		       "@/jobs.d/c.yaml:5:17: source.after_import: expected a mapping",
		       "@/jobs.d/c.yaml:6:3: missing key 'action' in source.after_failure");
}

static void test_schedule_rules(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/a.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m, cron: \"0 6 * * *\"}\n",
	    0644);
	put("jobs.d/b.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule:\n"
	    "  timezone: Mars/Olympus_Mons\n"
	    "  jitter: lots\n",
	    0644);
	put("jobs.d/c.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {cron: \"0 25 * * *\"}\n",
	    0644);
	put("jobs.d/d.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n",
	    0644);
	EXPECT_INVALID("@/jobs.d/a.yaml:3:30: schedule: use either 'every' or 'cron', not both",
		       "@/jobs.d/b.yaml:3:1: schedule: needs 'every' or 'cron'",
		       "@/jobs.d/b.yaml:4:13: timezone: unknown time zone 'Mars/Olympus_Mons' "
		       "(expected an IANA name like Europe/Dublin)",
		       "@/jobs.d/b.yaml:5:11: jitter: expected a duration like 30s, 15m, 2h, 1d",
		       "@/jobs.d/c.yaml:3:18: cron: '0 25 * * *': field 2 (hour): 25 is out of "
		       "range 0-23",
		       "@/jobs.d/d.yaml:1:1: missing key 'schedule' at top level");
}

static void test_validation_rules(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/a.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n"
	    "validation:\n"
	    "  default_country_code: 0\n"
	    "  max_invalid_rows: 5\n"
	    "  max_invalid_percent: 1\n"
	    "  empty_cells: blank\n",
	    0644);
	put("jobs.d/b.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n"
	    "validation: {max_invalid_percent: 100.5}\n",
	    0644);
	put("jobs.d/c.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n"
	    "validation: {max_invalid_percent: 2%, empty_cells: null}\n",
	    0644);
	EXPECT_INVALID("@/jobs.d/a.yaml:5:25: default_country_code: 0 is out of range 1-999",
		       "@/jobs.d/a.yaml:7:24: max_invalid_percent: cannot be used together with "
		       "max_invalid_rows",
		       "@/jobs.d/a.yaml:8:16: empty_cells: expected null, empty or reject",
		       "@/jobs.d/b.yaml:4:35: max_invalid_percent: expected a number from 0 to 100",
		       "@/jobs.d/c.yaml:4:35: max_invalid_percent: expected a number from 0 to 100");
	put("jobs.d/a.yaml", JOB_OK, 0644);
	put("jobs.d/b.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n"
	    "validation: {max_invalid_percent: 0, empty_cells: empty}\n",
	    0644);
	put("jobs.d/c.yaml",
	    "project: main\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n"
	    "validation: {max_invalid_rows: 0, empty_cells: null}\n",
	    0644);
	struct cfg *cfg = load_ok();
	assert_true(cfg->jobs[1].validation.max_invalid_percent == 0);
	assert_int_equal(cfg->jobs[1].validation.max_invalid_rows, -1);
	assert_int_equal(cfg->jobs[1].validation.empty_cells, EMPTY_STRING);
	assert_int_equal(cfg->jobs[2].validation.max_invalid_rows, 0);
	assert_int_equal(cfg->jobs[2].validation.empty_cells, EMPTY_NULL);
	cfg_free(cfg);
}

static void test_csv_and_source_rules(void **state)
{
	(void)state;
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/a.yaml",
	    "project: main\n"
	    "source:\n"
	    "  site: partner-a\n"
	    "  path: \"\"\n"
	    "  include: []\n"
	    "  done_marker: done/x\n"
	    "  duplicate_content: maybe\n"
	    "schedule: {every: 15m}\n"
	    "csv: {delimiter: \":\", quote: x}\n",
	    0644);
	put("jobs.d/b.yaml",
	    "project: main\n"
	    "source: {site: partner-a}\n"
	    "schedule: {every: 15m}\n"
	    "csv: {delimiter: \",,\", quote: \"\\\"\"}\n",
	    0644);
	EXPECT_INVALID("@/jobs.d/a.yaml:4:9: path: must not be empty",
		       "@/jobs.d/a.yaml:5:12: include: must not be empty",
		       "@/jobs.d/a.yaml:6:16: done_marker: expected a file name suffix like .done",
		       "@/jobs.d/a.yaml:7:22: duplicate_content: expected skip or import",
		       "@/jobs.d/a.yaml:9:18: delimiter: expected one of \",\" \";\" \"\\t\" \"|\"",
		       "@/jobs.d/a.yaml:9:30: quote: expected '\"' or \"'\"",
		       "@/jobs.d/b.yaml:2:1: missing key 'path' in source",
		       "@/jobs.d/b.yaml:4:18: delimiter: expected one of \",\" \";\" \"\\t\" \"|\"");
}

static void test_all_errors_of_two_files_in_one_call(void **state)
{
	(void)state;
	put("xpimportd.yaml",
	    "max_parallel_jobs: 0\n"
	    "projects:\n"
	    "  main:\n"
	    "    url: http://x.example\n"
	    "    apptoken_file: main.apptoken\n"
	    "    attributes: {tier: string}\n"
	    "sites:\n"
	    "  partner-a:\n"
	    "    host: h\n"
	    "    user: u\n"
	    "    private_key_file: partner-a.key\n"
	    "    known_hosts_file: kh\n"
	    "    prot: 22\n",
	    0644);
	put("jobs.d/crm.yaml",
	    "project: main\n"
	    "source:\n"
	    "  site: partner-a\n"
	    "  path: /out\n"
	    "  sttle: 30s\n"
	    "schedule:\n"
	    "  every: 15 minutes\n"
	    "mapping:\n"
	    "  columns: {Tier: tier, Phone: mobile}\n",
	    0644);
	put("jobs.d/other.yaml",
	    "project: nope\n"
	    "source: {site: partner-a, path: /out}\n"
	    "schedule: {every: 15m}\n",
	    0644);
	EXPECT_INVALID("@/xpimportd.yaml:1:20: max_parallel_jobs: 0 is out of range 1-64",
		       "@/xpimportd.yaml:4:10: url: 'http://x.example' is refused: TLS is "
		       "required, use https://",
		       "@/xpimportd.yaml:13:5: unknown key 'prot' in sites.partner-a",
		       "@/jobs.d/crm.yaml:5:3: unknown key 'sttle' in source",
		       "@/jobs.d/crm.yaml:7:10: every: expected a duration like 30s, 15m, 2h, 1d",
		       "@/jobs.d/crm.yaml:9:32: mapping.columns: 'Phone' maps to 'mobile' which is "
		       "not an attribute of project 'main'",
		       "@/jobs.d/other.yaml:1:10: project 'nope' is not defined in "
		       "@/xpimportd.yaml");
}

static void test_error_cap_per_file(void **state)
{
	(void)state;
	char *yaml = calloc(1, 150 * 32 + 64);
	assert_non_null(yaml);
	strcat(yaml, JOB_OK);
	for (int i = 0; i < 150; i++)
		sprintf(yaml + strlen(yaml), "k%03d: 1\n", i);
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/crm.yaml", yaml, 0644);
	free(yaml);
	struct cfg *cfg;
	struct cfg_errors errs = {0};
	assert_int_equal(load(&cfg, &errs), -EINVAL);
	assert_int_equal(errs.n, 101);
	char *w = expand("@/jobs.d/crm.yaml:7:1: unknown key 'k000' at top level");
	assert_string_equal(errs.msgs[0], w);
	free(w);
	w = expand("@/jobs.d/crm.yaml:107:1: too many errors; the rest of this file is not checked");
	assert_string_equal(errs.msgs[100], w);
	free(w);
	cfg_errors_free(&errs);
}

static void test_empty_and_non_mapping_files(void **state)
{
	(void)state;
	put("xpimportd.yaml", "", 0644);
	put("jobs.d/a.yaml", "", 0644);
	put("jobs.d/b.yaml", "- just\n- a list\n", 0644);
	put("jobs.d/c.yaml", "project: main\nsource: ~\nschedule: {every: 15m}\n", 0644);
	EXPECT_INVALID("@/jobs.d/a.yaml:1:1: missing key 'project' at top level",
		       "@/jobs.d/a.yaml:1:1: missing key 'source' at top level",
		       "@/jobs.d/a.yaml:1:1: missing key 'schedule' at top level",
		       "@/jobs.d/b.yaml:1:1: expected a mapping at the top level",
		       "@/jobs.d/c.yaml:1:10: project 'main' is not defined in @/xpimportd.yaml",
		       "@/jobs.d/c.yaml:2:1: missing key 'source' at top level");
}

static void test_missing_main_file_and_free(void **state)
{
	(void)state;
	struct cfg *cfg = (struct cfg *)1;
	struct cfg_errors errs = {0};
	assert_int_equal(config_load(at_dir("nope.yaml"), &cfg, &errs), -ENOENT);
	assert_null(cfg);
	EXPECT_ERRORS(&errs, "@/nope.yaml:1:1: cannot read: No such file or directory");
	cfg_errors_free(&errs);
	assert_int_equal(errs.n, 0);
	assert_null(errs.msgs);
	cfg_errors_free(&errs);
	cfg_errors_free(NULL);
	cfg_free(NULL);
	assert_null(cfg_find_job(NULL, "x"));
	assert_null(cfg_find_project(NULL, "x"));
	assert_null(cfg_find_site(NULL, "x"));
	put("dir.yaml", "", 0644);
	assert_int_equal(unlink(at_dir("dir.yaml")), 0);
	put_dir("dir.yaml");
	assert_int_equal(config_load(at_dir("dir.yaml"), &cfg, &errs), -EINVAL);
	EXPECT_ERRORS(&errs, "@/dir.yaml:1:1: not a regular file");
	cfg_errors_free(&errs);
}

static void test_relative_main_path(void **state)
{
	(void)state;
	char cwd[PATH_MAX];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	put("xpimportd.yaml", MAIN_OK, 0644);
	put("jobs.d/crm.yaml", "project: main\n", 0644);
	assert_int_equal(chdir(g_dir), 0);
	struct cfg *cfg;
	struct cfg_errors errs = {0};
	int rc = config_load("xpimportd.yaml", &cfg, &errs);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rc, -EINVAL);
	/* messages name files as the caller did; paths in the cfg are absolute */
	EXPECT_ERRORS(&errs, "jobs.d/crm.yaml:1:1: missing key 'source' at top level",
		      "jobs.d/crm.yaml:1:1: missing key 'schedule' at top level");
	cfg_errors_free(&errs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_design_example),
		T(test_defaults_and_every_key),
		T(test_etc_examples_load),
		T(test_unknown_keys),
		T(test_wrong_types),
		T(test_duplicate_keys),
		T(test_anchors_aliases_tags),
		T(test_billion_laughs),
		T(test_large_files_refused),
		T(test_nesting_depth),
		T(test_one_document_only),
		T(test_syntax_error),
		T(test_bad_numbers_and_ranges),
		T(test_unknown_project_and_site),
		T(test_job_files_and_duplicate_names),
		T(test_jobs_directory),
		T(test_mapping_targets),
		T(test_user_id_required),
		T(test_custom_attributes),
		T(test_https_required),
		T(test_secret_files),
		T(test_secret_in_credentials_directory),
		T(test_site_auth_and_host_keys),
		T(test_after_actions),
		T(test_schedule_rules),
		T(test_validation_rules),
		T(test_csv_and_source_rules),
		T(test_all_errors_of_two_files_in_one_call),
		T(test_error_cap_per_file),
		T(test_empty_and_non_mapping_files),
		T(test_missing_main_file_and_free),
		T(test_relative_main_path),
#undef T
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
