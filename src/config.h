/* config.h — the daemon configuration (xpimportd.yaml) and jobs
 * (jobs.d/NAME.yaml) as loaded by config_load(). Shapes: design.md and
 * xpimportd.yaml(5). Everything is owned by struct cfg; cfg_free() frees it. */
#ifndef XP_CONFIG_H
#define XP_CONFIG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Attribute types. The first six are the configurable custom types; the
 * rest are the system attributes, each with its own validation rule. */
enum attr_type {
	ATTR_STRING,
	ATTR_NUMBER,
	ATTR_INTEGER,
	ATTR_DATE,
	ATTR_BOOLEAN,
	ATTR_ARRAY,
	ATTR_SYS_USER_ID,
	ATTR_SYS_EMAIL,
	ATTR_SYS_EMAIL_SUBSCRIPTION,
	ATTR_SYS_MOBILE_NUMBER,
	ATTR_SYS_SMS_SUBSCRIPTION,
	ATTR_SYS_LANGUAGE,
	ATTR_SYS_TIMEZONE,
	ATTR_SYS_WHATSAPP_NUMBER,
	ATTR_SYS_WHATSAPP_SUBSCRIPTION,
};

/* Look up a system attribute by name; returns false if name is not one. */
bool cfg_system_attr(const char *name, enum attr_type *type);
/* "string" -> ATTR_STRING ...; false for an unknown type name. */
bool cfg_attr_type_from_name(const char *name, enum attr_type *type);
const char *cfg_attr_type_name(enum attr_type type);

struct cfg_attr {
	char *name;
	enum attr_type type;
};

struct cfg_retry {
	int max_attempts;        /* retry.max_attempts, default 6 */
	int64_t initial_backoff_ms; /* retry.initial_backoff, default 1s */
	int64_t max_backoff_ms;  /* retry.max_backoff, default 5m */
};

struct cfg_project {
	char *name;
	char *url;               /* https only; base, e.g. https://external-api.xtremepush.com */
	char *apptoken_file;     /* resolved absolute path */
	char *ca_file;           /* optional, resolved */
	int max_in_flight;       /* default 4, 1..32 */
	struct cfg_attr *attrs;  /* custom attributes */
	size_t n_attrs;
	struct cfg_retry retry;
	bool confirm_tasks;      /* default true */
	int64_t task_timeout_ms; /* default 30m: overall limit for polling info/task */
	int64_t connect_timeout_ms; /* default 30s */
	int64_t request_timeout_ms; /* default 5m */
	int default_country_code; /* 0 = none */
	/* file:line:col of the project's key, for cross-file error messages */
	char *src_file;
	int src_line, src_col;
};

struct cfg_site {
	char *name;
	char *host;
	int port;                /* default 22 */
	char *user;
	char *private_key_file;  /* resolved; NULL if password auth */
	char *passphrase_file;   /* resolved, optional */
	char *password_file;     /* resolved, optional */
	char *known_hosts_file;  /* resolved, optional if host_key_sha256 given */
	char **host_key_sha256;  /* "SHA256:base64" pins */
	size_t n_host_key_sha256;
	int64_t connect_timeout_ms; /* default 30s */
	int64_t auth_timeout_ms;    /* default 30s */
	int64_t stall_timeout_ms;   /* default 2m: no bytes moved for this long */
	int keepalive_seconds;      /* default 30 */
	char *src_file;
	int src_line, src_col;
};

enum after_action { AFTER_LEAVE, AFTER_DELETE, AFTER_MOVE };

struct cfg_after {
	enum after_action action;
	char *to;                /* AFTER_MOVE: folder, strftime tokens allowed */
	bool upload_rejects;     /* after_failure only */
};

struct cfg_column {
	char *header;            /* CSV header as written by the partner */
	char *attr;              /* target attribute, or NULL for `skip` */
	char *src_file;
	int src_line, src_col;
};

enum empty_policy {
	EMPTY_NULL,              /* default: send JSON null (the stored value is kept) */
	EMPTY_STRING,            /* send "" */
	EMPTY_REJECT,            /* empty cell in a mapped column is a row error */
};

struct cfg_job {
	char *name;              /* the job file's stem */
	char *file;              /* path of jobs.d/NAME.yaml */
	bool enabled;            /* default true */
	char *project_name;
	struct cfg_project *project; /* resolved */
	struct {
		char *site_name;
		struct cfg_site *site; /* resolved */
		char *path;
		char **include;  /* default ["*.csv", "*.csv.gz"] */
		size_t n_include;
		char **exclude;  /* default ["*.part", "*.filepart", "*.tmp", ".*"] */
		size_t n_exclude;
		bool recursive;
		int64_t settle_ms;   /* default 30s */
		int64_t min_age_ms;  /* default 0 */
		char *done_marker;   /* optional suffix, e.g. ".done" */
		bool skip_duplicate_content; /* default true */
		struct cfg_after after_import;  /* default leave */
		struct cfg_after after_failure; /* default leave */
	} source;
	struct {
		int64_t every_ms;    /* 0 if cron */
		char *cron;          /* 5-field expression or NULL */
		char *timezone;      /* IANA, default UTC */
		int64_t jitter_ms;
		bool run_at_start;
	} schedule;
	struct {
		bool auto_map;       /* default true */
		struct cfg_column *columns;
		size_t n_columns;
	} mapping;
	struct {
		int default_country_code; /* 0 = project's, then none */
		int64_t max_invalid_rows; /* -1 = not set */
		double max_invalid_percent; /* < 0 = not set; neither set: 0 rows allowed? see yaml(5) */
		enum empty_policy empty_cells;
	} validation;
	struct {
		char delimiter;      /* default ',' */
		char quote;          /* default '"' */
		size_t max_field_bytes;  /* default 64 KiB */
		size_t max_columns;      /* default 1000 */
		size_t max_line_bytes;   /* default 1 MiB */
	} csv;
	struct {
		size_t size;         /* default and max 10000 */
		size_t max_bytes;    /* default 8 MiB */
	} batch;
	char *src_file;
	int src_line, src_col;
};

struct cfg_state {
	int keep_runs;           /* default 100 per job */
	int64_t keep_runs_age_ms; /* default 30d */
};

struct cfg {
	char *path;              /* the main file */
	char *dir;               /* its directory */
	char *jobs_directory;    /* resolved */
	int max_parallel_jobs;   /* default 4 */
	struct cfg_state state;
	struct cfg_project *projects;
	size_t n_projects;
	struct cfg_site *sites;
	size_t n_sites;
	struct cfg_job *jobs;
	size_t n_jobs;
};

/* All errors of one load, each "FILE:LINE:COL: message". */
struct cfg_errors {
	char **msgs;
	size_t n;
};
void cfg_errors_free(struct cfg_errors *errs);

/* Load and validate path and every job under its jobs_directory, collecting
 * every error in one pass. Returns 0 and *out on success; -EINVAL with errs
 * filled when the configuration is invalid; other negative errno on I/O.
 * Secret files are checked for existence and permissions, not read. */
int config_load(const char *path, struct cfg **out, struct cfg_errors *errs);
void cfg_free(struct cfg *cfg);

const struct cfg_job *cfg_find_job(const struct cfg *cfg, const char *name);
const struct cfg_project *cfg_find_project(const struct cfg *cfg, const char *name);
const struct cfg_site *cfg_find_site(const struct cfg *cfg, const char *name);
/* The type of attribute `name` in project p (system or custom). */
bool cfg_project_attr(const struct cfg_project *p, const char *name, enum attr_type *type);

#endif
