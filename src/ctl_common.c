/* ctl_common.c — what the xpimportctl commands share: configuration and
 * state access, talking to the daemon, messages, tables. */
#include "ctl_common.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "state.h"
#include "util.h"

void ctl_err(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fflush(stdout);
	fprintf(stderr, "xpimportctl: %s\n", msg);
}

int ctl_load_config(struct ctl *c)
{
	struct cfg_errors errs = {0};

	if (c->cfg)
		return CTL_EXIT_OK;
	if (access(c->config_path, F_OK) < 0 && errno == ENOENT) {
		ctl_err("no configuration at %s; give its path with -c FILE", c->config_path);
		return CTL_EXIT_CONFIG;
	}
	int r = config_load(c->config_path, &c->cfg, &errs);
	if (r == 0)
		return CTL_EXIT_OK;
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "%s\n", errs.msgs[i]);
	if (errs.n == 0 && r == -ENOENT)
		ctl_err("no configuration at %s; give its path with -c FILE", c->config_path);
	else if (errs.n == 0)
		ctl_err("cannot read the configuration %s: %s", c->config_path, strerror(-r));
	else
		ctl_err(
		    "the configuration %s is invalid (%zu error%s above); fix it and check it with "
		    "'xpimportd -n -c %s'",
		    c->config_path, errs.n, errs.n == 1 ? "" : "s", c->config_path);
	cfg_errors_free(&errs);
	cfg_free(c->cfg);
	c->cfg = NULL;
	return CTL_EXIT_CONFIG;
}

const struct cfg_job *ctl_find_job(struct ctl *c, const char *name, int *exit_code)
{
	const struct cfg_job *job = cfg_find_job(c->cfg, name);

	*exit_code = CTL_EXIT_OK;
	if (!job) {
		ctl_err("no job named '%s' in %s; 'xpimportctl status' lists the jobs", name,
		        c->cfg->jobs_directory);
		*exit_code = CTL_EXIT_NOT_FOUND;
	}
	return job;
}

const char *ctl_who(void)
{
	static char buf[64];
	const char *s = getenv("SUDO_USER");

	if (s && *s && strlen(s) < 64)
		return s;
	s = getlogin();
	if (s && *s)
		return s;
	struct passwd *pw = getpwuid(getuid());
	if (pw && pw->pw_name)
		return pw->pw_name;
	snprintf(buf, sizeof(buf), "uid %u", (unsigned)getuid());
	return buf;
}

int ctl_become_state_owner(struct ctl *c)
{
	struct stat st;

	if (geteuid() != 0 || stat(c->state_dir, &st) < 0 || st.st_uid == 0)
		return CTL_EXIT_OK;
	struct passwd *pw = getpwuid(st.st_uid);
	int r = pw ? initgroups(pw->pw_name, st.st_gid) : setgroups(1, &st.st_gid);
	if (r == 0 && setgid(st.st_gid) == 0 && setuid(st.st_uid) == 0)
		return CTL_EXIT_OK;
	ctl_err("cannot switch to the owner (uid %u) of the state directory %s: %s",
	        (unsigned)st.st_uid, c->state_dir, strerror(errno));
	return CTL_EXIT_FAILED;
}

int ctl_state_error(const struct ctl *c, int rc, const char *what)
{
	struct stat st;

	if (rc == -EPERM || rc == -EACCES) {
		if (stat(c->state_dir, &st) == 0 && st.st_uid != geteuid()) {
			struct passwd *pw = getpwuid(st.st_uid);
			ctl_err(
			    "%s: the state directory %s belongs to %s; run this as root or as that "
			    "user",
			    what, c->state_dir, pw ? pw->pw_name : "another user");
		} else {
			ctl_err("%s: the state directory %s (or a directory in it) is writable by "
			        "group "
			        "or others or not ours (%s); fix it with 'chmod 0700'",
			        what, c->state_dir, strerror(-rc));
		}
		return CTL_EXIT_FAILED;
	}
	ctl_err("%s: state directory %s: %s; give the right one with -S DIR", what, c->state_dir,
	        strerror(-rc));
	return rc == -ENOENT ? CTL_EXIT_NOT_FOUND : CTL_EXIT_FAILED;
}

int ctl_state_open(struct ctl *c, int *lock_fd)
{
	*lock_fd = -1;
	int r = ctl_become_state_owner(c);
	if (r != CTL_EXIT_OK)
		return r;
	r = state_init(c->state_dir);
	if (r < 0)
		return ctl_state_error(c, r, "cannot use the state directory");
	r = state_lock(c->state_dir, false, lock_fd);
	if (r == -EWOULDBLOCK || r == -EAGAIN) {
		*lock_fd = -1;
		return CTL_EXIT_OK;
	}
	if (r < 0)
		return ctl_state_error(c, r, "cannot lock the state directory");
	return CTL_EXIT_OK;
}

json_t *ctl_read_job_state(const struct ctl *c, const char *job)
{
	char *path = state_path(c->state_dir, "jobs/%s.json", job);
	char err[512] = "";
	json_t *doc = NULL;

	if (!path)
		return NULL;
	int r = state_read_json_err(path, &doc, err, sizeof(err));
	if (r == -ENOENT) {
		free(path);
		return json_object();
	}
	if (r < 0 || !json_is_object(doc)) {
		if (r == -EBADMSG)
			ctl_err("%s; move it aside to start the job's state afresh", err);
		else if (r < 0)
			ctl_err("cannot read %s: %s", path, strerror(-r));
		else
			ctl_err("%s is not a JSON object; move it aside to start afresh", path);
		json_decref(doc);
		free(path);
		return NULL;
	}
	free(path);
	return doc;
}

int ctl_daemon_request(struct ctl *c, json_t *req, int send_fd, int timeout_ms, json_t **resp,
                       char *err, size_t errlen)
{
	return control_request_fd(c->socket_path, req, send_fd, timeout_ms, resp, err, errlen);
}

void ctl_err_daemon(const struct ctl *c, int rc, const char *err, const char *hint)
{
	if (rc == -ENOENT || rc == -ECONNREFUSED)
		ctl_err(
		    "the daemon is not running (%s); start it with 'systemctl start xpimportd'%s",
		    err, hint ? hint : "");
	else if (rc == -EACCES)
		ctl_err("%s; run this as root or as a member of the socket's group", err);
	else
		ctl_err("%s; see 'systemctl status xpimportd' and 'journalctl -u xpimportd'", err);
}

int ctl_daemon_refused(const json_t *resp)
{
	const char *code = ctl_jstr(resp, "code");
	const char *msg = ctl_jstr(resp, "error");

	ctl_err("%s", *msg ? msg : "the daemon refused the request");
	if (strcmp(code, "not_found") == 0)
		return CTL_EXIT_NOT_FOUND;
	if (strcmp(code, "refused") == 0 || strcmp(code, "busy") == 0)
		return CTL_EXIT_UNREACHABLE;
	if (strcmp(code, "invalid") == 0)
		return CTL_EXIT_USAGE;
	return CTL_EXIT_FAILED;
}

const char *ctl_jstr(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : "";
}

int64_t ctl_jint(const json_t *obj, const char *key)
{
	return (int64_t)json_integer_value(json_object_get(obj, key));
}

void ctl_print_json(const json_t *doc)
{
	char *s = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
}

/* ---- tables ------------------------------------------------------------- */

void ctl_table_init(struct ctl_table *t, size_t n_cols)
{
	t->n_cols = n_cols;
	t->n_rows = 0;
	t->cells = NULL;
}

void ctl_table_add(struct ctl_table *t, ...)
{
	char **cells = realloc(t->cells, (t->n_rows + 1) * t->n_cols * sizeof(*cells));
	va_list ap;

	if (!cells)
		return;
	t->cells = cells;
	va_start(ap, t);
	for (size_t i = 0; i < t->n_cols; i++) {
		const char *s = va_arg(ap, const char *);
		cells[t->n_rows * t->n_cols + i] = strdup(s && *s ? s : "-");
	}
	va_end(ap);
	t->n_rows++;
}

/* Display width: code points (UTF-8 continuation bytes do not count). */
static size_t text_width(const char *s)
{
	size_t w = 0;
	for (; s && *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

void ctl_table_print(const struct ctl_table *t, FILE *out, const char *indent)
{
	size_t widths[32] = {0};
	size_t n_cols = t->n_cols < 32 ? t->n_cols : 32;

	for (size_t r = 0; r < t->n_rows; r++)
		for (size_t i = 0; i < n_cols; i++) {
			size_t w = text_width(t->cells[r * t->n_cols + i]);
			if (w > widths[i])
				widths[i] = w;
		}
	for (size_t r = 0; r < t->n_rows; r++) {
		fputs(indent ? indent : "", out);
		for (size_t i = 0; i < n_cols; i++) {
			const char *cell = t->cells[r * t->n_cols + i];
			fputs(cell ? cell : "-", out);
			if (i + 1 < n_cols)
				for (size_t pad = text_width(cell); pad < widths[i] + 2; pad++)
					fputc(' ', out);
		}
		fputc('\n', out);
	}
}

void ctl_table_free(struct ctl_table *t)
{
	for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->n_rows = 0;
}

/* ---- small formatting -------------------------------------------------- */

void ctl_format_duration(int64_t ms, char *buf, size_t size)
{
	static const struct {
		int64_t ms;
		const char *unit;
	} units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};

	for (size_t i = 0; i < XP_ARRAY_SIZE(units); i++) {
		if (ms > 0 && ms % units[i].ms == 0) {
			snprintf(buf, size, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
			return;
		}
	}
	snprintf(buf, size, "%lldms", (long long)ms);
}

void ctl_sanitize(const char *s, size_t max_chars, char *buf, size_t size)
{
	size_t o = 0, chars = 0;
	bool utf8 = s && util_utf8_valid(s, strlen(s));

	if (size == 0)
		return;
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		bool start = (*p & 0xc0) != 0x80;
		if (start && chars == max_chars) {
			if (o + 4 <= size) {
				memcpy(buf + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (o + 5 > size)
			break;
		if (start)
			chars++;
		if (*p < 0x20 || *p == 0x7f || (*p >= 0x80 && !utf8))
			buf[o++] = '?';
		else
			buf[o++] = (char)*p;
	}
	/* never end inside a multi-byte sequence */
	while (o > 0 && utf8 && ((unsigned char)buf[o - 1] & 0x80) && !util_utf8_valid(buf, o))
		o--;
	buf[o] = '\0';
}

bool ctl_valid_run_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > 31)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = id[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

bool ctl_valid_name(const char *name)
{
	return name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
	       strlen(name) < 256;
}

int ctl_locked_daemon_request(struct ctl *c, json_t *req, int send_fd, int timeout_ms,
			      json_t **resp)
{
	char err[600];
	int r = ctl_daemon_request(c, req, send_fd, timeout_ms, resp, err, sizeof(err));

	if (r >= 0)
		return 0;
	long pid = 0;
	state_lock_holder(c->state_dir, &pid);
	if (r == -ENOENT || r == -ECONNREFUSED)
		ctl_err("the state directory %s is locked by pid %ld (the daemon or an "
			"'xpimportctl import'), but its control socket is not reachable (%s); "
			"wait for that import to finish, or check 'systemctl status xpimportd'",
			c->state_dir, pid, err);
	else
		ctl_err_daemon(c, r, err, "");
	return CTL_EXIT_UNREACHABLE;
}
