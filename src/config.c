/* config.c — load xpimportd.yaml and jobs.d/NAME.yaml into struct cfg.
 *
 * Two passes per file: libyaml events become a small node tree that keeps
 * the 1-based line:column of every node (refusing anchors, aliases, tags,
 * deep nesting, duplicate keys and extra documents), then a schema walk
 * fills the structs. Every problem of every file is collected as
 * "FILE:LINE:COL: message"; nothing stops at the first error. Secret files
 * are located and checked (exists, regular, mode), never read. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "schedule.h"
#include "util.h"

#define CFG_MAX_FILE_BYTES (1024 * 1024)
#define CFG_MAX_DEPTH 32
#define CFG_MAX_ERRORS_PER_FILE 100
#define CFG_MAX_JOB_FILES 10000

/* ---- the node tree ------------------------------------------------------ */

enum node_kind { NODE_SCALAR, NODE_MAP, NODE_SEQ, NODE_BAD };

struct node {
	enum node_kind kind;
	int line, col;          /* 1-based */
	bool plain;             /* scalar written without quotes */
	bool skip;              /* map key: duplicate or not a scalar; ignore */
	bool used;              /* map key: consumed by the schema walk */
	char *str;              /* scalar text, NUL-terminated */
	size_t len;
	struct node **kids;     /* MAP: key, value, key, value ...; SEQ: items */
	size_t n_kids, cap_kids;
};

/* ---- error collection --------------------------------------------------- */

struct load_err {
	int file_idx;
	int line, col;
	size_t seq;
	char *msg;
};

struct loader {
	struct cfg *cfg;
	struct load_err *errs;
	size_t n_errs, cap_errs;
	bool oom;
	/* the file being read */
	const char *file;       /* as shown in messages */
	int file_idx;
	size_t file_errs;
	bool file_gave_up;
	/* jobs_directory as shown in messages, and where it was set */
	char *jobs_disp;
	bool jobs_dir_explicit;
	int jobs_dir_line, jobs_dir_col;
};

static void report(struct loader *ld, int line, int col, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void push_err(struct loader *ld, int line, int col, char *body)
{
	char *msg = NULL;

	if (!body || asprintf(&msg, "%s:%d:%d: %s", ld->file, line, col, body) < 0) {
		free(body);
		ld->oom = true;
		return;
	}
	free(body);
	if (ld->n_errs == ld->cap_errs) {
		size_t cap = ld->cap_errs ? ld->cap_errs * 2 : 16;
		struct load_err *v = realloc(ld->errs, cap * sizeof(*v));
		if (!v) {
			free(msg);
			ld->oom = true;
			return;
		}
		ld->errs = v;
		ld->cap_errs = cap;
	}
	ld->errs[ld->n_errs] = (struct load_err){ld->file_idx, line, col, ld->n_errs, msg};
	ld->n_errs++;
}

static void vreport(struct loader *ld, int line, int col, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

static void vreport(struct loader *ld, int line, int col, const char *fmt, va_list ap)
{
	char *body = NULL;

	if (ld->file_gave_up)
		return;
	if (++ld->file_errs > CFG_MAX_ERRORS_PER_FILE) {
		ld->file_gave_up = true;
		push_err(ld, line, col, strdup("too many errors; the rest of this file is not checked"));
		return;
	}
	if (vasprintf(&body, fmt, ap) < 0)
		body = NULL;
	push_err(ld, line, col, body);
}

static void report(struct loader *ld, int line, int col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(ld, line, col, fmt, ap);
	va_end(ap);
}

/* Outside text shown in a message: bounded, control bytes replaced. */
#define SHOWN_MAX 64
static const char *shown_max(char *buf, size_t max, const char *s)
{
	size_t i = 0;

	for (; s[i] && i < max; i++) {
		unsigned char ch = (unsigned char)s[i];
		buf[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
	}
	if (s[i]) {
		while (i > 0 && ((unsigned char)buf[i] & 0xc0) == 0x80)
			i--; /* do not cut a UTF-8 sequence */
		memcpy(buf + i, "...", 4);
	} else {
		buf[i] = '\0';
	}
	return buf;
}

static const char *shown(char buf[SHOWN_MAX + 4], const char *s)
{
	return shown_max(buf, SHOWN_MAX, s);
}

/* File paths come from our own configuration: shown in full (bounded by PATH_MAX). */
#define shown_path(buf, s) shown_max((buf), PATH_MAX, (s))

static char *xstrdup(struct loader *ld, const char *s)
{
	char *d = strdup(s);
	if (!d)
		ld->oom = true;
	return d;
}

static void *xcalloc(struct loader *ld, size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	if (!p)
		ld->oom = true;
	return p;
}

/* ---- events to tree ----------------------------------------------------- */

static void node_free(struct node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n_kids; i++)
		node_free(n->kids[i]);
	free(n->kids);
	free(n->str);
	free(n);
}

static struct node *node_new(struct loader *ld, enum node_kind kind, const yaml_mark_t *mark)
{
	struct node *n = xcalloc(ld, 1, sizeof(*n));
	if (n) {
		n->kind = kind;
		n->line = (int)(mark->line < INT_MAX ? mark->line + 1 : INT_MAX);
		n->col = (int)(mark->column < INT_MAX ? mark->column + 1 : INT_MAX);
	}
	return n;
}

static bool node_add(struct loader *ld, struct node *parent, struct node *kid)
{
	if (parent->n_kids == parent->cap_kids) {
		size_t cap = parent->cap_kids ? parent->cap_kids * 2 : 8;
		struct node **v = realloc(parent->kids, cap * sizeof(*v));
		if (!v) {
			ld->oom = true;
			return false;
		}
		parent->kids = v;
		parent->cap_kids = cap;
	}
	parent->kids[parent->n_kids++] = kid;
	return true;
}

struct key_ref {
	const struct node *key;
	size_t pos;
};

static int key_ref_cmp(const void *a, const void *b)
{
	const struct key_ref *x = a, *y = b;
	size_t n = x->key->len < y->key->len ? x->key->len : y->key->len;
	int c = memcmp(x->key->str, y->key->str, n);

	if (c)
		return c;
	if (x->key->len != y->key->len)
		return x->key->len < y->key->len ? -1 : 1;
	return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

/* Sorting makes this O(n log n): a hostile file may hold 100k keys. */
static void check_duplicate_keys(struct loader *ld, struct node *map)
{
	size_t n_pairs = map->n_kids / 2, n = 0;
	struct key_ref *refs;

	if (n_pairs < 2)
		return;
	refs = xcalloc(ld, n_pairs, sizeof(*refs));
	if (!refs)
		return;
	for (size_t i = 0; i < n_pairs; i++) {
		struct node *k = map->kids[2 * i];
		if (k->kind == NODE_SCALAR && !k->skip)
			refs[n++] = (struct key_ref){k, i};
	}
	qsort(refs, n, sizeof(*refs), key_ref_cmp);
	for (size_t i = 1; i < n; i++) {
		const struct node *first = refs[i - 1].key;
		struct node *dup = map->kids[2 * refs[i].pos];
		if (first->len != dup->len || memcmp(first->str, dup->str, dup->len) != 0)
			continue;
		char b[SHOWN_MAX + 4];
		/* refs[i-1] may itself be a duplicate; walk back to the first */
		size_t j = i - 1;
		while (j > 0 && refs[j - 1].key->len == dup->len &&
		       memcmp(refs[j - 1].key->str, dup->str, dup->len) == 0)
			j--;
		report(ld, dup->line, dup->col, "duplicate key '%s' (first at %d:%d)",
		       shown(b, dup->str), refs[j].key->line, refs[j].key->col);
		dup->skip = true;
	}
	free(refs);
}

static void report_syntax(struct loader *ld, const yaml_parser_t *p, const char *buf, size_t len)
{
	int line = (int)(p->problem_mark.line < INT_MAX ? p->problem_mark.line + 1 : INT_MAX);
	int col = (int)(p->problem_mark.column < INT_MAX ? p->problem_mark.column + 1 : INT_MAX);
	const char *problem = p->problem ? p->problem : "unknown error";

	if (p->error == YAML_MEMORY_ERROR) {
		ld->oom = true;
		return;
	}
	if (p->error == YAML_READER_ERROR) {
		/* libyaml leaves problem_mark unset for reader errors (bad UTF-8, NUL):
		 * the byte offset says where. Columns count characters, like marks. */
		size_t off = p->problem_offset < len ? p->problem_offset : len;
		line = 1;
		col = 1;
		for (size_t i = 0; i < off; i++) {
			if (buf[i] == '\n') {
				line++;
				col = 1;
			} else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
				col++;
			}
		}
		report(ld, line, col, "invalid input: %s (the file must be UTF-8 text)", problem);
		return;
	}
	if (p->context)
		report(ld, line, col, "syntax error: %s %s", problem, p->context);
	else
		report(ld, line, col, "syntax error: %s", problem);
}

/* Attach a new node under the innermost open container (or as the root). */
static void attach(struct loader *ld, struct node **root, struct node **stack, size_t depth,
		   struct node *n)
{
	if (depth == 0) {
		if (*root)
			node_free(*root); /* cannot happen: one document only */
		*root = n;
		return;
	}
	struct node *parent = stack[depth - 1];
	if (parent->kind == NODE_MAP && parent->n_kids % 2 == 0) {
		if (n->kind != NODE_SCALAR) {
			if (n->kind != NODE_BAD)
				report(ld, n->line, n->col, "a mapping key must be a plain string");
			n->skip = true;
		}
	}
	if (!node_add(ld, parent, n))
		node_free(n);
}

static bool has_anchor_or_tag(struct loader *ld, const yaml_event_t *ev, int line, int col)
{
	const yaml_char_t *anchor = NULL, *tag = NULL;

	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		anchor = ev->data.scalar.anchor;
		tag = ev->data.scalar.tag;
		break;
	case YAML_SEQUENCE_START_EVENT:
		anchor = ev->data.sequence_start.anchor;
		tag = ev->data.sequence_start.tag;
		break;
	case YAML_MAPPING_START_EVENT:
		anchor = ev->data.mapping_start.anchor;
		tag = ev->data.mapping_start.tag;
		break;
	default:
		break;
	}
	if (anchor) {
		report(ld, line, col, "anchors and aliases are not allowed");
		return true;
	}
	if (tag) {
		report(ld, line, col, "tags are not allowed");
		return true;
	}
	return false;
}

/* Parse one document into a tree. Returns false when the file could not be
 * read as a whole (syntax error, too deep, several documents): the caller
 * then skips the schema walk, which would only add noise. */
static bool parse_yaml(struct loader *ld, const char *buf, size_t len, struct node **rootp)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	struct node *stack[CFG_MAX_DEPTH];
	struct node *root = NULL;
	size_t depth = 0;
	int docs = 0;
	bool done = false, fatal = false;

	*rootp = NULL;
	if (!yaml_parser_initialize(&parser)) {
		ld->oom = true;
		return false;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	while (!done && !fatal && !ld->oom && !ld->file_gave_up) {
		if (!yaml_parser_parse(&parser, &ev)) {
			report_syntax(ld, &parser, buf, len);
			fatal = true;
			break;
		}
		int line = (int)(ev.start_mark.line < INT_MAX ? ev.start_mark.line + 1 : INT_MAX);
		int col = (int)(ev.start_mark.column < INT_MAX ? ev.start_mark.column + 1 : INT_MAX);
		struct node *n = NULL;

		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1) {
				report(ld, line, col, "only one YAML document is allowed per file");
				fatal = true;
			}
			break;
		case YAML_ALIAS_EVENT:
			report(ld, line, col, "anchors and aliases are not allowed");
			n = node_new(ld, NODE_BAD, &ev.start_mark);
			if (n)
				attach(ld, &root, stack, depth, n);
			break;
		case YAML_SCALAR_EVENT: {
			bool bad = has_anchor_or_tag(ld, &ev, line, col);
			const char *v = (const char *)ev.data.scalar.value;
			size_t vlen = ev.data.scalar.length;
			if (!bad && memchr(v, '\0', vlen)) {
				report(ld, line, col, "NUL characters are not allowed");
				bad = true;
			}
			n = node_new(ld, bad ? NODE_BAD : NODE_SCALAR, &ev.start_mark);
			if (!n)
				break;
			n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
			n->str = malloc(vlen + 1);
			if (!n->str) {
				ld->oom = true;
				node_free(n);
				break;
			}
			memcpy(n->str, v, vlen);
			n->str[vlen] = '\0';
			n->len = vlen;
			attach(ld, &root, stack, depth, n);
			break;
		}
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (depth >= CFG_MAX_DEPTH) {
				report(ld, line, col, "nesting deeper than %d levels is not allowed",
				       CFG_MAX_DEPTH);
				fatal = true;
				break;
			}
			has_anchor_or_tag(ld, &ev, line, col);
			n = node_new(ld, ev.type == YAML_MAPPING_START_EVENT ? NODE_MAP : NODE_SEQ,
				     &ev.start_mark);
			if (!n)
				break;
			attach(ld, &root, stack, depth, n);
			if (!ld->oom)
				stack[depth++] = n;
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			if (depth > 0) {
				depth--;
				if (stack[depth]->kind == NODE_MAP)
					check_duplicate_keys(ld, stack[depth]);
			}
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	if (fatal || ld->oom || ld->file_gave_up) {
		node_free(root);
		return false;
	}
	*rootp = root;
	return true;
}

/* ---- reading files ------------------------------------------------------ */

/* Read a whole config file. -EFBIG above the limit, -EFTYPE-like -EINVAL
 * for something that is not a regular file, other -errno from the OS. */
static int read_file(const char *path, char **out, size_t *out_len)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, rc = 0;

	*out = NULL;
	*out_len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		goto out;
	}
	if (st.st_size > CFG_MAX_FILE_BYTES) {
		rc = -EFBIG;
		goto out;
	}
	buf = malloc(CFG_MAX_FILE_BYTES + 2);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + len, CFG_MAX_FILE_BYTES + 1 - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > CFG_MAX_FILE_BYTES) {
			rc = -EFBIG; /* it grew while we read it */
			goto out;
		}
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return rc;
}

/* Read and parse one file, reporting problems against it. */
static bool load_tree(struct loader *ld, const char *path, struct node **root, int *io_err)
{
	char *buf = NULL;
	size_t len = 0;
	int rc = read_file(path, &buf, &len);

	*root = NULL;
	*io_err = 0;
	if (rc == -ENOMEM) {
		ld->oom = true;
		return false;
	}
	if (rc == -EFBIG) {
		report(ld, 1, 1, "file is larger than 1 MiB");
		return false;
	}
	if (rc == -EINVAL) {
		report(ld, 1, 1, "not a regular file");
		return false;
	}
	if (rc < 0) {
		*io_err = rc;
		report(ld, 1, 1, "cannot read: %s", strerror(-rc));
		return false;
	}
	bool ok = parse_yaml(ld, buf, len, root);
	free(buf);
	return ok;
}

/* ---- schema helpers ----------------------------------------------------- */

static bool node_is_null(const struct node *n)
{
	return n->kind == NODE_SCALAR && n->plain &&
	       (n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
		strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0);
}

/* The value of key in map (or NULL), marking the key as known. */
static struct node *get_raw(struct node *map, const char *key, struct node **keynode)
{
	if (keynode)
		*keynode = NULL;
	if (!map || map->kind != NODE_MAP)
		return NULL;
	for (size_t i = 0; i + 1 < map->n_kids; i += 2) {
		struct node *k = map->kids[i];
		if (k->skip || k->kind != NODE_SCALAR || strcmp(k->str, key) != 0)
			continue;
		k->used = true;
		if (keynode)
			*keynode = k;
		return map->kids[i + 1];
	}
	return NULL;
}

/* Like get_raw, but a YAML null (`key:`, `~`, `null`) counts as absent. */
static struct node *get(struct node *map, const char *key)
{
	struct node *v = get_raw(map, key, NULL);
	return v && node_is_null(v) ? NULL : v;
}

/* Where key's value (else the map) starts, for a message; never NULL. */
static const struct node *pos_of(const struct node *map, const char *key)
{
	static const struct node file_start = {.kind = NODE_BAD, .line = 1, .col = 1};
	const struct node *v = NULL;

	for (size_t i = 0; map && map->kind == NODE_MAP && i + 1 < map->n_kids; i += 2) {
		const struct node *k = map->kids[i];
		if (!k->skip && k->kind == NODE_SCALAR && strcmp(k->str, key) == 0) {
			v = map->kids[i + 1];
			break;
		}
	}
	return v ? v : map ? map : &file_start;
}

static void report_at(struct loader *ld, const struct node *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void report_at(struct loader *ld, const struct node *at, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(ld, at->line, at->col, fmt, ap);
	va_end(ap);
}

static void check_unknown(struct loader *ld, struct node *map, const char *where)
{
	char b[SHOWN_MAX + 4];

	if (!map || map->kind != NODE_MAP)
		return;
	for (size_t i = 0; i + 1 < map->n_kids; i += 2) {
		const struct node *k = map->kids[i];
		if (!k->skip && !k->used && k->kind == NODE_SCALAR)
			report(ld, k->line, k->col, "unknown key '%s' %s", shown(b, k->str), where);
	}
}

static void report_missing(struct loader *ld, const struct node *at, const char *key,
			   const char *where)
{
	report(ld, at ? at->line : 1, at ? at->col : 1, "missing key '%s' %s", key, where);
}

/* A mapping value, or false after reporting (silently for a refused node). */
static bool want_map(struct loader *ld, const struct node *v, const char *label)
{
	if (!v || v->kind == NODE_BAD)
		return false;
	if (v->kind != NODE_MAP) {
		report(ld, v->line, v->col, "%s: expected a mapping", label);
		return false;
	}
	return true;
}

/* Typed getters: 0 = absent, 1 = set and valid, -1 = invalid (reported). */

static int get_str(struct loader *ld, struct node *map, const char *key, char **out)
{
	struct node *v = get(map, key);

	if (!v)
		return 0;
	if (v->kind == NODE_BAD)
		return -1;
	if (v->kind != NODE_SCALAR) {
		report(ld, v->line, v->col, "%s: expected a string", key);
		return -1;
	}
	if (v->len == 0) {
		report(ld, v->line, v->col, "%s: must not be empty", key);
		return -1;
	}
	char *s = xstrdup(ld, v->str);
	if (!s)
		return -1;
	free(*out);
	*out = s;
	return 1;
}

static int get_bool(struct loader *ld, struct node *map, const char *key, bool *out)
{
	struct node *v = get(map, key);

	if (!v)
		return 0;
	if (v->kind == NODE_BAD)
		return -1;
	if (v->kind == NODE_SCALAR && v->plain && strcmp(v->str, "true") == 0)
		*out = true;
	else if (v->kind == NODE_SCALAR && v->plain && strcmp(v->str, "false") == 0)
		*out = false;
	else {
		report(ld, v->line, v->col, "%s: expected true or false", key);
		return -1;
	}
	return 1;
}

static int get_u64(struct loader *ld, struct node *map, const char *key, uint64_t min,
		   uint64_t max, uint64_t *out)
{
	struct node *v = get(map, key);
	char b[SHOWN_MAX + 4];
	uint64_t val;
	int rc;

	if (!v)
		return 0;
	if (v->kind == NODE_BAD)
		return -1;
	if (v->kind != NODE_SCALAR || !v->plain ||
	    (rc = util_parse_uint(v->str, min, max, &val)) == -EINVAL) {
		report(ld, v->line, v->col, "%s: expected a whole number", key);
		return -1;
	}
	if (rc < 0) {
		report(ld, v->line, v->col, "%s: %s is out of range %llu-%llu", key, shown(b, v->str),
		       (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	*out = val;
	return 1;
}

static int get_int(struct loader *ld, struct node *map, const char *key, int min, int max,
		   int *out)
{
	uint64_t v;
	int rc = get_u64(ld, map, key, (uint64_t)min, (uint64_t)max, &v);
	if (rc == 1)
		*out = (int)v;
	return rc;
}

static int get_size(struct loader *ld, struct node *map, const char *key, size_t min, size_t max,
		    size_t *out)
{
	uint64_t v;
	int rc = get_u64(ld, map, key, min, max, &v);
	if (rc == 1)
		*out = (size_t)v;
	return rc;
}

/* min_ms: 0 accepts "0"; >0 demands at least that much. */
static int get_duration(struct loader *ld, struct node *map, const char *key, int64_t min_ms,
			const char *min_text, int64_t *out)
{
	struct node *v = get(map, key);
	int64_t ms;

	if (!v)
		return 0;
	if (v->kind == NODE_BAD)
		return -1;
	if (v->kind != NODE_SCALAR || util_parse_duration_ms(v->str, &ms) < 0) {
		report(ld, v->line, v->col, "%s: expected a duration like 30s, 15m, 2h, 1d", key);
		return -1;
	}
	if (ms < min_ms) {
		if (min_ms == 1)
			report(ld, v->line, v->col, "%s: must be greater than 0", key);
		else
			report(ld, v->line, v->col, "%s: must be at least %s", key, min_text);
		return -1;
	}
	*out = ms;
	return 1;
}

/* names[] holds the accepted values; *out gets the index. */
static int get_enum(struct loader *ld, struct node *map, const char *key,
		    const char *const *names, size_t n_names, const char *expected, int *out)
{
	struct node *v = get_raw(map, key, NULL);

	if (!v)
		return 0;
	if (v->kind == NODE_BAD)
		return -1;
	for (size_t i = 0; v->kind == NODE_SCALAR && i < n_names; i++) {
		if (strcmp(v->str, names[i]) == 0) {
			*out = (int)i;
			return 1;
		}
	}
	report(ld, v->line, v->col, "%s: expected %s", key, expected);
	return -1;
}

static void free_str_list(char **list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
}

/* A string or a list of strings. */
static int get_str_list(struct loader *ld, struct node *map, const char *key, char ***out,
			size_t *n_out)
{
	struct node *v = get(map, key);
	struct node *const *items;
	size_t n, k = 0;
	char **list;
	bool bad = false;

	if (!v)
		return 0;
	if (v->kind == NODE_BAD)
		return -1;
	if (v->kind == NODE_SCALAR) {
		items = &v;
		n = 1;
	} else if (v->kind == NODE_SEQ) {
		items = v->kids;
		n = v->n_kids;
	} else {
		report(ld, v->line, v->col, "%s: expected a string or a list of strings", key);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const struct node *it = items[i];
		if (it->kind == NODE_BAD) {
			bad = true;
		} else if (it->kind != NODE_SCALAR || it->len == 0) {
			report(ld, it->line, it->col, "%s: expected a string or a list of strings", key);
			bad = true;
		}
	}
	if (bad)
		return -1;
	list = xcalloc(ld, n, sizeof(*list));
	if (!list)
		return -1;
	for (; k < n; k++) {
		list[k] = xstrdup(ld, items[k]->str);
		if (!list[k]) {
			free_str_list(list, k);
			return -1;
		}
	}
	free_str_list(*out, *n_out);
	*out = list;
	*n_out = n;
	return 1;
}

static char *path_join(struct loader *ld, const char *dir, const char *name)
{
	char *p = NULL;

	if (name[0] == '/' || dir[0] == '\0')
		return xstrdup(ld, name);
	if (asprintf(&p, "%s/%s", dir, name) < 0) {
		ld->oom = true;
		return NULL;
	}
	return p;
}

enum file_kind {
	FILE_SECRET,      /* $CREDENTIALS_DIRECTORY or next to the config; 0600 */
	FILE_MUST_EXIST,  /* next to the config; must exist */
	FILE_MAY_BE_NEW,  /* next to the config; may not exist yet */
};

/* A *_file key: resolve the name and check the file without reading it. */
static int get_file(struct loader *ld, struct node *map, const char *key, enum file_kind kind,
		    char **out)
{
	char *name = NULL, *path;
	const struct node *v;
	struct stat st;
	char b[PATH_MAX + 4];
	int rc = get_str(ld, map, key, &name);

	if (rc <= 0)
		return rc;
	v = pos_of(map, key);
	path = kind == FILE_SECRET ? util_resolve_secret_path(name, ld->cfg->dir)
				   : path_join(ld, ld->cfg->dir, name);
	free(name);
	if (!path) {
		ld->oom = true;
		return -1;
	}
	free(*out);
	*out = path;
	if (kind == FILE_MAY_BE_NEW)
		return 1;
	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			report(ld, v->line, v->col, "%s '%s' does not exist", key, shown_path(b, path));
		else
			report(ld, v->line, v->col, "%s '%s': %s", key, shown_path(b, path), strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		report(ld, v->line, v->col, "%s '%s' is not a regular file", key, shown_path(b, path));
		return -1;
	}
	if (kind == FILE_SECRET && (st.st_mode & (S_IRGRP | S_IROTH))) {
		report(ld, v->line, v->col, "%s '%s' is readable by group or others; chmod 600 it",
		       key, shown_path(b, path));
		return -1;
	}
	if (kind == FILE_SECRET && (st.st_mode & (S_IWGRP | S_IWOTH))) {
		report(ld, v->line, v->col, "%s '%s' is writable by group or others; chmod 600 it",
		       key, shown_path(b, path));
		return -1;
	}
	return 1;
}

static bool name_ok(const char *s)
{
	if (!*s || *s == '.' || *s == '-')
		return false;
	for (; *s; s++) {
		char ch = *s;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.'))
			return false;
	}
	return true;
}

static bool attr_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

/* "SHA256:" then unpadded base64 of 32 bytes, as ssh-keygen -lf prints. */
static bool fingerprint_ok(const char *s)
{
	size_t n = 0;

	if (strncmp(s, "SHA256:", 7) != 0)
		return false;
	for (s += 7; s[n]; n++)
		if (!((s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= 'a' && s[n] <= 'z') ||
		      (s[n] >= '0' && s[n] <= '9') || s[n] == '+' || s[n] == '/'))
			break;
	return n == 43 && (s[n] == '\0' || (s[n] == '=' && s[n + 1] == '\0'));
}

/* Pair iteration over a user-named mapping (projects, sites, ...). */
static size_t count_pairs(const struct node *map)
{
	size_t n = 0;
	for (size_t i = 0; i + 1 < map->n_kids; i += 2)
		if (!map->kids[i]->skip && map->kids[i]->kind == NODE_SCALAR)
			n++;
	return n;
}

/* ---- the main file ------------------------------------------------------ */

static struct cfg_project *find_project(struct cfg *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_projects; i++)
		if (cfg->projects[i].name && strcmp(cfg->projects[i].name, name) == 0)
			return &cfg->projects[i];
	return NULL;
}

static struct cfg_site *find_site(struct cfg *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_sites; i++)
		if (cfg->sites[i].name && strcmp(cfg->sites[i].name, name) == 0)
			return &cfg->sites[i];
	return NULL;
}

static void walk_url(struct loader *ld, struct node *map, struct cfg_project *p)
{
	char b[SHOWN_MAX + 4];
	const struct node *v;

	if (get_str(ld, map, "url", &p->url) != 1)
		return;
	v = pos_of(map, "url");
	if (strncasecmp(p->url, "http://", 7) == 0) {
		report(ld, v->line, v->col, "url: '%s' is refused: TLS is required, use https://",
		       shown(b, p->url));
		return;
	}
	bool ok = strncasecmp(p->url, "https://", 8) == 0 && p->url[8] && p->url[8] != '/';
	for (const char *s = p->url; ok && *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			ok = false;
	if (!ok) {
		report(ld, v->line, v->col,
		       "url: expected an https:// URL like https://external-api.xtremepush.com");
		return;
	}
	size_t n = strlen(p->url);
	while (n > 8 && p->url[n - 1] == '/')
		p->url[--n] = '\0'; /* the API module appends /api/... */
}

static void walk_attributes(struct loader *ld, struct node *map, struct cfg_project *p,
			    const char *where)
{
	char b[SHOWN_MAX + 4], b2[SHOWN_MAX + 4];
	char label[160];

	snprintf(label, sizeof(label), "%s.attributes", where);
	if (!want_map(ld, map, label))
		return;
	p->attrs = xcalloc(ld, count_pairs(map), sizeof(*p->attrs));
	if (!p->attrs)
		return;
	for (size_t i = 0; i + 1 < map->n_kids; i += 2) {
		struct node *k = map->kids[i], *v = map->kids[i + 1];
		enum attr_type type = ATTR_STRING;
		if (k->skip || k->kind != NODE_SCALAR)
			continue;
		struct cfg_attr *a = &p->attrs[p->n_attrs++];
		a->name = xstrdup(ld, k->str);
		if (!attr_name_ok(k->str))
			report(ld, k->line, k->col,
			       "attribute name '%s' may contain only lowercase letters, digits and '_'",
			       shown(b, k->str));
		else if (cfg_system_attr(k->str, NULL))
			report(ld, k->line, k->col,
			       "attribute '%s' is a system attribute and cannot be redefined", k->str);
		else if (strcmp(k->str, "skip") == 0)
			report(ld, k->line, k->col,
			       "attribute name 'skip' is reserved (it means: do not import)");
		if (v->kind == NODE_BAD)
			continue;
		if (v->kind != NODE_SCALAR || !cfg_attr_type_from_name(v->str, &type) ||
		    type > ATTR_ARRAY)
			report(ld, v->line, v->col,
			       "attributes.%s: unknown type '%s' (expected string, number, integer, "
			       "date, boolean or array)",
			       shown(b, k->str), v->kind == NODE_SCALAR ? shown(b2, v->str) : "");
		a->type = type;
	}
}

static void walk_retry(struct loader *ld, struct node *map, struct cfg_retry *r, const char *where)
{
	char label[160];

	snprintf(label, sizeof(label), "%s.retry", where);
	if (!want_map(ld, map, label))
		return;
	get_int(ld, map, "max_attempts", 1, 100, &r->max_attempts);
	int a = get_duration(ld, map, "initial_backoff", 1, NULL, &r->initial_backoff_ms);
	int b = get_duration(ld, map, "max_backoff", 1, NULL, &r->max_backoff_ms);
	if (a >= 0 && b >= 0 && r->max_backoff_ms < r->initial_backoff_ms) {
		report_at(ld, pos_of(map, b == 1 ? "max_backoff" : "initial_backoff"), "retry: max_backoff must not be less than initial_backoff");
	}
	snprintf(label, sizeof(label), "in %s.retry", where);
	check_unknown(ld, map, label);
}

static void walk_project(struct loader *ld, struct cfg_project *p, const struct node *key,
			 struct node *map)
{
	char where[128], in[140], b[SHOWN_MAX + 4];

	snprintf(where, sizeof(where), "projects.%s", shown(b, key->str));
	snprintf(in, sizeof(in), "in %s", where);
	if (!want_map(ld, map, where))
		return;
	walk_url(ld, map, p);
	if (!get(map, "url"))
		report_missing(ld, key, "url", in);
	if (get_file(ld, map, "apptoken_file", FILE_SECRET, &p->apptoken_file) == 0)
		report_missing(ld, key, "apptoken_file", in);
	get_file(ld, map, "ca_file", FILE_MUST_EXIST, &p->ca_file);
	get_int(ld, map, "max_in_flight", 1, 32, &p->max_in_flight);
	if (get(map, "attributes"))
		walk_attributes(ld, get(map, "attributes"), p, where);
	if (get(map, "retry"))
		walk_retry(ld, get(map, "retry"), &p->retry, where);
	get_bool(ld, map, "confirm_tasks", &p->confirm_tasks);
	get_duration(ld, map, "task_timeout", 1, NULL, &p->task_timeout_ms);
	get_duration(ld, map, "connect_timeout", 1, NULL, &p->connect_timeout_ms);
	get_duration(ld, map, "request_timeout", 1, NULL, &p->request_timeout_ms);
	get_int(ld, map, "default_country_code", 1, 999, &p->default_country_code);
	check_unknown(ld, map, in);
}

static void walk_host_keys(struct loader *ld, struct node *map, struct cfg_site *s)
{
	const struct node *v = pos_of(map, "host_key_sha256");
	char b[SHOWN_MAX + 4];

	if (get_str_list(ld, map, "host_key_sha256", &s->host_key_sha256,
			 &s->n_host_key_sha256) != 1)
		return;
	for (size_t i = 0; i < s->n_host_key_sha256; i++) {
		const struct node *at = v->kind == NODE_SEQ ? v->kids[i] : v;
		if (!fingerprint_ok(s->host_key_sha256[i]))
			report(ld, at->line, at->col,
			       "host_key_sha256: '%s' is not a fingerprint like SHA256:<43 base64 "
			       "characters> (as printed by ssh-keygen -lf)",
			       shown(b, s->host_key_sha256[i]));
	}
}

static void walk_site(struct loader *ld, struct cfg_site *s, const struct node *key,
		      struct node *map)
{
	char where[128], in[140], b[SHOWN_MAX + 4];
	int64_t keepalive_ms = -1;

	snprintf(where, sizeof(where), "sites.%s", shown(b, key->str));
	snprintf(in, sizeof(in), "in %s", where);
	if (!want_map(ld, map, where))
		return;
	if (get_str(ld, map, "host", &s->host) == 0)
		report_missing(ld, key, "host", in);
	get_int(ld, map, "port", 1, 65535, &s->port);
	if (get_str(ld, map, "user", &s->user) == 0)
		report_missing(ld, key, "user", in);
	int key_rc = get_file(ld, map, "private_key_file", FILE_SECRET, &s->private_key_file);
	int pass_rc = get_file(ld, map, "passphrase_file", FILE_SECRET, &s->passphrase_file);
	int pw_rc = get_file(ld, map, "password_file", FILE_SECRET, &s->password_file);
	int kh_rc = get_file(ld, map, "known_hosts_file", FILE_MAY_BE_NEW, &s->known_hosts_file);
	walk_host_keys(ld, map, s);
	if (key_rc == 0 && pw_rc == 0)
		report(ld, key->line, key->col,
		       "site '%s' needs private_key_file or password_file", shown(b, key->str));
	if (pass_rc != 0 && key_rc == 0) {
		report_at(ld, pos_of(map, "passphrase_file"), "passphrase_file: only used with private_key_file");
	}
	if (kh_rc == 0 && !get(map, "host_key_sha256"))
		report(ld, key->line, key->col,
		       "site '%s' needs known_hosts_file or host_key_sha256 to verify the server",
		       shown(b, key->str));
	get_duration(ld, map, "connect_timeout", 1, NULL, &s->connect_timeout_ms);
	get_duration(ld, map, "auth_timeout", 1, NULL, &s->auth_timeout_ms);
	get_duration(ld, map, "stall_timeout", 1, NULL, &s->stall_timeout_ms);
	if (get_duration(ld, map, "keepalive", 0, NULL, &keepalive_ms) == 1) {
		const struct node *v = pos_of(map, "keepalive");
		if (keepalive_ms % 1000 != 0 || keepalive_ms / 1000 > INT_MAX)
			report(ld, v->line, v->col, "keepalive: expected whole seconds, e.g. 30s (0 = off)");
		else
			s->keepalive_seconds = (int)(keepalive_ms / 1000);
	}
	check_unknown(ld, map, in);
}

static void project_defaults(struct cfg_project *p)
{
	p->max_in_flight = 4;
	p->retry.max_attempts = 6;
	p->retry.initial_backoff_ms = 1000;
	p->retry.max_backoff_ms = 5 * 60000;
	p->confirm_tasks = true;
	p->task_timeout_ms = 30 * 60000;
	p->connect_timeout_ms = 30000;
	p->request_timeout_ms = 5 * 60000;
}

static void site_defaults(struct cfg_site *s)
{
	s->port = 22;
	s->connect_timeout_ms = 30000;
	s->auth_timeout_ms = 30000;
	s->stall_timeout_ms = 2 * 60000;
	s->keepalive_seconds = 30;
}

static void walk_projects(struct loader *ld, struct node *map)
{
	struct cfg *cfg = ld->cfg;
	char b[SHOWN_MAX + 4];

	if (!want_map(ld, map, "projects"))
		return;
	cfg->projects = xcalloc(ld, count_pairs(map), sizeof(*cfg->projects));
	if (!cfg->projects)
		return;
	for (size_t i = 0; i + 1 < map->n_kids; i += 2) {
		struct node *k = map->kids[i];
		if (k->skip || k->kind != NODE_SCALAR)
			continue;
		struct cfg_project *p = &cfg->projects[cfg->n_projects++];
		project_defaults(p);
		p->name = xstrdup(ld, k->str);
		p->src_file = xstrdup(ld, ld->file);
		p->src_line = k->line;
		p->src_col = k->col;
		if (!name_ok(k->str))
			report(ld, k->line, k->col,
			       "project name '%s' may contain only letters, digits, '.', '_' and '-'",
			       shown(b, k->str));
		walk_project(ld, p, k, map->kids[i + 1]);
	}
}

static void walk_sites(struct loader *ld, struct node *map)
{
	struct cfg *cfg = ld->cfg;
	char b[SHOWN_MAX + 4];

	if (!want_map(ld, map, "sites"))
		return;
	cfg->sites = xcalloc(ld, count_pairs(map), sizeof(*cfg->sites));
	if (!cfg->sites)
		return;
	for (size_t i = 0; i + 1 < map->n_kids; i += 2) {
		struct node *k = map->kids[i];
		if (k->skip || k->kind != NODE_SCALAR)
			continue;
		struct cfg_site *s = &cfg->sites[cfg->n_sites++];
		site_defaults(s);
		s->name = xstrdup(ld, k->str);
		s->src_file = xstrdup(ld, ld->file);
		s->src_line = k->line;
		s->src_col = k->col;
		if (!name_ok(k->str))
			report(ld, k->line, k->col,
			       "site name '%s' may contain only letters, digits, '.', '_' and '-'",
			       shown(b, k->str));
		walk_site(ld, s, k, map->kids[i + 1]);
	}
}

static void walk_main(struct loader *ld, struct node *root, const char *disp_dir)
{
	struct cfg *cfg = ld->cfg;
	char *jobs_dir = NULL;
	struct node *v;

	if (root && root->kind != NODE_MAP) {
		if (root->kind != NODE_BAD)
			report(ld, root->line, root->col, "expected a mapping at the top level");
		root = NULL;
	}
	if (get_str(ld, root, "jobs_directory", &jobs_dir) == 1) {
		ld->jobs_dir_explicit = true;
		ld->jobs_dir_line = pos_of(root, "jobs_directory")->line;
		ld->jobs_dir_col = pos_of(root, "jobs_directory")->col;
	}
	cfg->jobs_directory = path_join(ld, cfg->dir, jobs_dir ? jobs_dir : "jobs.d");
	ld->jobs_disp = path_join(ld, disp_dir, jobs_dir ? jobs_dir : "jobs.d");
	free(jobs_dir);
	get_int(ld, root, "max_parallel_jobs", 1, 64, &cfg->max_parallel_jobs);
	v = get(root, "state");
	if (v && want_map(ld, v, "state")) {
		get_int(ld, v, "keep_runs", 1, 1000000, &cfg->state.keep_runs);
		get_duration(ld, v, "keep_runs_age", 1, NULL, &cfg->state.keep_runs_age_ms);
		check_unknown(ld, v, "in state");
	}
	if ((v = get(root, "projects")))
		walk_projects(ld, v);
	if ((v = get(root, "sites")))
		walk_sites(ld, v);
	check_unknown(ld, root, "at top level");
}

/* ---- job files ---------------------------------------------------------- */

static const char *const after_names[] = {"leave", "delete", "move"};

static void walk_after(struct loader *ld, struct node *source, const char *key,
		       struct cfg_after *after, bool is_failure)
{
	struct node *k = NULL, *map = get_raw(source, key, &k), *v;
	char label[64], in[80];
	int action = AFTER_LEAVE;

	if (!map || node_is_null(map))
		return;
	snprintf(label, sizeof(label), "source.%s", key);
	snprintf(in, sizeof(in), "in source.%s", key);
	if (!want_map(ld, map, label))
		return;
	int rc = get_enum(ld, map, "action", after_names, XP_ARRAY_SIZE(after_names),
			  "leave, delete or move", &action);
	if (rc == 0)
		report_missing(ld, k, "action", in);
	after->action = (enum after_action)action;
	int to_rc = get_str(ld, map, "to", &after->to);
	if (rc == 1 && action == AFTER_MOVE && to_rc == 0)
		report(ld, k->line, k->col, "%s: action 'move' needs 'to'", key);
	if (rc == 1 && action != AFTER_MOVE && to_rc != 0) {
		report_at(ld, pos_of(map, "to"), "to: only used with action 'move'");
	}
	if (is_failure) {
		get_bool(ld, map, "upload_rejects", &after->upload_rejects);
	} else if ((v = get_raw(map, "upload_rejects", &k))) {
		report(ld, k->line, k->col, "upload_rejects: only allowed in after_failure");
	}
	check_unknown(ld, map, in);
}

static void walk_source(struct loader *ld, struct cfg_job *job, const struct node *key,
			struct node *map)
{
	static const char *const dup_names[] = {"skip", "import"};
	char b[SHOWN_MAX + 4];

	if (!want_map(ld, map, "source"))
		return;
	if (get_str(ld, map, "site", &job->source.site_name) == 1) {
		job->source.site = find_site(ld->cfg, job->source.site_name);
		if (!job->source.site) {
			report_at(ld, pos_of(map, "site"), "site '%s' is not defined in %s",
			       shown(b, job->source.site_name), ld->cfg->path);
		}
	} else if (!get(map, "site")) {
		report_missing(ld, key, "site", "in source");
	}
	if (get_str(ld, map, "path", &job->source.path) == 0)
		report_missing(ld, key, "path", "in source");
	if (get_str_list(ld, map, "include", &job->source.include, &job->source.n_include) == 1 &&
	    job->source.n_include == 0) {
		report_at(ld, pos_of(map, "include"), "include: must not be empty");
	}
	get_str_list(ld, map, "exclude", &job->source.exclude, &job->source.n_exclude);
	get_bool(ld, map, "recursive", &job->source.recursive);
	get_duration(ld, map, "settle", 0, NULL, &job->source.settle_ms);
	get_duration(ld, map, "min_age", 0, NULL, &job->source.min_age_ms);
	if (get_str(ld, map, "done_marker", &job->source.done_marker) == 1 &&
	    strchr(job->source.done_marker, '/')) {
		report_at(ld, pos_of(map, "done_marker"), "done_marker: expected a file name suffix like .done");
	}
	int dup = 0;
	if (get_enum(ld, map, "duplicate_content", dup_names, XP_ARRAY_SIZE(dup_names),
		     "skip or import", &dup) == 1)
		job->source.skip_duplicate_content = dup == 0;
	walk_after(ld, map, "after_import", &job->source.after_import, false);
	walk_after(ld, map, "after_failure", &job->source.after_failure, true);
	check_unknown(ld, map, "in source");
}

static void walk_schedule(struct loader *ld, struct cfg_job *job, const struct node *key,
			  struct node *map)
{
	char b[SHOWN_MAX + 4];

	if (!want_map(ld, map, "schedule"))
		return;
	int every = get_duration(ld, map, "every", 1000, "1s", &job->schedule.every_ms);
	int cron = get_str(ld, map, "cron", &job->schedule.cron);
	if (every != 0 && cron != 0) {
		report_at(ld, pos_of(map, "cron"), "schedule: use either 'every' or 'cron', not both");
	} else if (every == 0 && cron == 0) {
		report(ld, key->line, key->col, "schedule: needs 'every' or 'cron'");
	}
	if (cron == 1) {
		struct cron_expr expr;
		char err[128] = "";
		if (cron_parse(job->schedule.cron, &expr, err, sizeof(err)) < 0) {
			report_at(ld, pos_of(map, "cron"), "cron: '%s': %s", shown(b, job->schedule.cron),
			       err[0] ? err : "not a valid 5-field cron expression");
		}
	}
	if (get_str(ld, map, "timezone", &job->schedule.timezone) == 1 &&
	    !schedule_tz_valid(job->schedule.timezone)) {
		report_at(ld, pos_of(map, "timezone"), "timezone: unknown time zone '%s' (expected an IANA "
		       "name like Europe/Dublin)", shown(b, job->schedule.timezone));
	}
	get_duration(ld, map, "jitter", 0, NULL, &job->schedule.jitter_ms);
	get_bool(ld, map, "run_at_start", &job->schedule.run_at_start);
	check_unknown(ld, map, "in schedule");
}

static void walk_mapping(struct loader *ld, struct cfg_job *job, struct node *map)
{
	char b[SHOWN_MAX + 4], b2[SHOWN_MAX + 4], b3[SHOWN_MAX + 4];
	struct node *cols;

	if (!want_map(ld, map, "mapping"))
		return;
	get_bool(ld, map, "auto", &job->mapping.auto_map);
	cols = get(map, "columns");
	if (cols && want_map(ld, cols, "mapping.columns")) {
		job->mapping.columns = xcalloc(ld, count_pairs(cols), sizeof(*job->mapping.columns));
		for (size_t i = 0; job->mapping.columns && i + 1 < cols->n_kids; i += 2) {
			struct node *k = cols->kids[i], *v = cols->kids[i + 1];
			if (k->skip || k->kind != NODE_SCALAR)
				continue;
			struct cfg_column *c = &job->mapping.columns[job->mapping.n_columns++];
			c->header = xstrdup(ld, k->str);
			c->src_file = xstrdup(ld, ld->file);
			c->src_line = k->line;
			c->src_col = k->col;
			if (k->len == 0)
				report(ld, k->line, k->col, "mapping.columns: a header must not be empty");
			if (v->kind == NODE_BAD)
				continue;
			if (v->kind != NODE_SCALAR || v->len == 0) {
				report(ld, v->line, v->col,
				       "mapping.columns: '%s' must map to an attribute name or skip",
				       shown(b, k->str));
				continue;
			}
			if (strcmp(v->str, "skip") == 0)
				continue;
			c->attr = xstrdup(ld, v->str);
			if (job->project && !cfg_project_attr(job->project, v->str, NULL))
				report(ld, v->line, v->col,
				       "mapping.columns: '%s' maps to '%s' which is not an attribute "
				       "of project '%s'",
				       shown(b, k->str), shown(b2, v->str), shown(b3, job->project->name));
		}
	}
	check_unknown(ld, map, "in mapping");
}

/* The mapper needs a user_id column: explicit, or a header "user_id" that
 * auto-mapping takes (unless columns remaps that header). */
static void check_user_id(struct loader *ld, struct cfg_job *job, const struct node *at)
{
	bool header_remapped = false;

	for (size_t i = 0; i < job->mapping.n_columns; i++) {
		const struct cfg_column *c = &job->mapping.columns[i];
		if (c->attr && strcmp(c->attr, "user_id") == 0)
			return;
		if (c->header && strcmp(c->header, "user_id") == 0)
			header_remapped = true;
	}
	if (!job->mapping.auto_map)
		report(ld, at->line, at->col, "mapping: no column maps to user_id (auto is off)");
	else if (header_remapped)
		report(ld, at->line, at->col,
		       "mapping: no column maps to user_id (the 'user_id' header is remapped "
		       "by mapping.columns)");
}

static void walk_validation(struct loader *ld, struct cfg_job *job, struct node *map)
{
	static const char *const empty_names[] = {"null", "empty", "reject"};
	struct node *v;
	uint64_t rows;
	int empty = EMPTY_NULL;

	if (!want_map(ld, map, "validation"))
		return;
	get_int(ld, map, "default_country_code", 1, 999, &job->validation.default_country_code);
	int rows_rc = get_u64(ld, map, "max_invalid_rows", 0, 1000000000000ULL, &rows);
	if (rows_rc == 1)
		job->validation.max_invalid_rows = (int64_t)rows;
	if ((v = get(map, "max_invalid_percent"))) {
		char *end = NULL;
		double pct = -1;
		if (v->kind == NODE_SCALAR && v->plain && v->len > 0 &&
		    ((v->str[0] >= '0' && v->str[0] <= '9') || v->str[0] == '.')) {
			errno = 0;
			pct = strtod(v->str, &end);
			if (errno || !end || *end || !isfinite(pct))
				pct = -1;
		}
		if (v->kind == NODE_BAD)
			;
		else if (pct < 0 || pct > 100)
			report(ld, v->line, v->col,
			       "max_invalid_percent: expected a number from 0 to 100");
		else if (rows_rc != 0)
			report(ld, v->line, v->col,
			       "max_invalid_percent: cannot be used together with max_invalid_rows");
		else
			job->validation.max_invalid_percent = pct;
	}
	if (get_enum(ld, map, "empty_cells", empty_names, XP_ARRAY_SIZE(empty_names),
		     "null, empty or reject", &empty) == 1)
		job->validation.empty_cells = (enum empty_policy)empty;
	check_unknown(ld, map, "in validation");
}

static void walk_csv(struct loader *ld, struct cfg_job *job, struct node *map)
{
	struct node *v;

	if (!want_map(ld, map, "csv"))
		return;
	if ((v = get(map, "delimiter")) && v->kind != NODE_BAD) {
		if (v->kind == NODE_SCALAR && v->len == 1 && strchr(",;\t|", v->str[0]))
			job->csv.delimiter = v->str[0];
		else
			report(ld, v->line, v->col,
			       "delimiter: expected one of \",\" \";\" \"\\t\" \"|\"");
	}
	if ((v = get(map, "quote")) && v->kind != NODE_BAD) {
		if (v->kind == NODE_SCALAR && v->len == 1 && (v->str[0] == '"' || v->str[0] == '\''))
			job->csv.quote = v->str[0];
		else
			report(ld, v->line, v->col, "quote: expected '\"' or \"'\"");
	}
	get_size(ld, map, "max_field_bytes", 1, 16 * 1024 * 1024, &job->csv.max_field_bytes);
	get_size(ld, map, "max_columns", 1, 10000, &job->csv.max_columns);
	get_size(ld, map, "max_line_bytes", 1, 64 * 1024 * 1024, &job->csv.max_line_bytes);
	check_unknown(ld, map, "in csv");
}

static void walk_batch(struct loader *ld, struct cfg_job *job, struct node *map)
{
	if (!want_map(ld, map, "batch"))
		return;
	get_size(ld, map, "size", 1, 10000, &job->batch.size);
	get_size(ld, map, "max_bytes", 64 * 1024, 64 * 1024 * 1024, &job->batch.max_bytes);
	check_unknown(ld, map, "in batch");
}

static const char *const default_include[] = {"*.csv", "*.csv.gz"};
static const char *const default_exclude[] = {"*.part", "*.filepart", "*.tmp", ".*"};

static char **dup_list(struct loader *ld, const char *const *src, size_t n)
{
	char **list = xcalloc(ld, n, sizeof(*list));
	for (size_t i = 0; list && i < n; i++)
		list[i] = xstrdup(ld, src[i]);
	return list;
}

static void job_defaults(struct loader *ld, struct cfg_job *job)
{
	job->enabled = true;
	job->source.include = dup_list(ld, default_include, XP_ARRAY_SIZE(default_include));
	job->source.n_include = job->source.include ? XP_ARRAY_SIZE(default_include) : 0;
	job->source.exclude = dup_list(ld, default_exclude, XP_ARRAY_SIZE(default_exclude));
	job->source.n_exclude = job->source.exclude ? XP_ARRAY_SIZE(default_exclude) : 0;
	job->source.settle_ms = 30000;
	job->source.skip_duplicate_content = true;
	job->schedule.timezone = xstrdup(ld, "UTC");
	job->mapping.auto_map = true;
	job->validation.max_invalid_rows = -1;
	job->validation.max_invalid_percent = -1;
	job->validation.empty_cells = EMPTY_NULL;
	job->csv.delimiter = ',';
	job->csv.quote = '"';
	job->csv.max_field_bytes = 64 * 1024;
	job->csv.max_columns = 1000;
	job->csv.max_line_bytes = 1024 * 1024;
	job->batch.size = 10000;
	job->batch.max_bytes = 8 * 1024 * 1024;
}

static void walk_job(struct loader *ld, struct cfg_job *job, struct node *root)
{
	static const struct node top = {.kind = NODE_MAP, .line = 1, .col = 1};
	const struct node *at = root ? root : &top;
	struct node *k, *v;
	char b[SHOWN_MAX + 4];

	job->src_line = at->line;
	job->src_col = at->col;
	if (root && root->kind != NODE_MAP) {
		if (root->kind != NODE_BAD)
			report(ld, root->line, root->col, "expected a mapping at the top level");
		return;
	}
	if (get_str(ld, root, "project", &job->project_name) == 1) {
		job->project = find_project(ld->cfg, job->project_name);
		if (!job->project) {
			report_at(ld, pos_of(root, "project"), "project '%s' is not defined in %s",
			       shown(b, job->project_name), ld->cfg->path);
		}
	} else if (!get(root, "project")) {
		report_missing(ld, at, "project", "at top level");
	}
	get_bool(ld, root, "enabled", &job->enabled);
	if ((v = get_raw(root, "source", &k)) && !node_is_null(v))
		walk_source(ld, job, k, v);
	else
		report_missing(ld, k ? k : at, "source", "at top level");
	if ((v = get_raw(root, "schedule", &k)) && !node_is_null(v))
		walk_schedule(ld, job, k, v);
	else
		report_missing(ld, k ? k : at, "schedule", "at top level");
	if ((v = get_raw(root, "mapping", &k)) && !node_is_null(v))
		walk_mapping(ld, job, v);
	if (!v || v->kind == NODE_MAP || node_is_null(v))
		check_user_id(ld, job, k ? k : at);
	if ((v = get(root, "validation")))
		walk_validation(ld, job, v);
	if (job->validation.max_invalid_rows < 0 && job->validation.max_invalid_percent < 0)
		job->validation.max_invalid_rows = 0; /* no budget given: no invalid row */
	if ((v = get(root, "csv")))
		walk_csv(ld, job, v);
	if ((v = get(root, "batch")))
		walk_batch(ld, job, v);
	check_unknown(ld, root, "at top level");
}

struct job_file {
	char *name;     /* directory entry */
	size_t stem_len;
};

static int job_file_cmp(const void *a, const void *b)
{
	const struct job_file *x = a, *y = b;
	return strcmp(x->name, y->name);
}

static size_t job_stem_len(const char *name)
{
	size_t n = strlen(name);

	if (name[0] == '.')
		return 0;
	if (n > 5 && strcmp(name + n - 5, ".yaml") == 0)
		return n - 5;
	if (n > 4 && strcmp(name + n - 4, ".yml") == 0)
		return n - 4;
	return 0;
}

/* The job files, sorted; NULL entries never. */
static struct job_file *list_job_files(struct loader *ld, size_t *n_out)
{
	struct cfg *cfg = ld->cfg;
	struct job_file *files = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *dir;

	*n_out = 0;
	if (!cfg->jobs_directory)
		return NULL;
	dir = opendir(cfg->jobs_directory);
	if (!dir) {
		/* the default directory may be absent: then there are no jobs */
		if (ld->jobs_dir_explicit || errno != ENOENT)
			report(ld, ld->jobs_dir_explicit ? ld->jobs_dir_line : 1,
			       ld->jobs_dir_explicit ? ld->jobs_dir_col : 1,
			       "jobs_directory '%s' cannot be opened: %s", ld->jobs_disp,
			       strerror(errno));
		return NULL;
	}
	while ((de = readdir(dir)) != NULL) {
		size_t stem = job_stem_len(de->d_name);
		if (stem == 0)
			continue;
		if (n >= CFG_MAX_JOB_FILES) {
			report(ld, ld->jobs_dir_line ? ld->jobs_dir_line : 1,
			       ld->jobs_dir_col ? ld->jobs_dir_col : 1,
			       "jobs_directory holds more than %d job files", CFG_MAX_JOB_FILES);
			break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			struct job_file *v = realloc(files, cap * sizeof(*v));
			if (!v) {
				ld->oom = true;
				break;
			}
			files = v;
		}
		files[n].name = xstrdup(ld, de->d_name);
		files[n].stem_len = stem;
		if (!files[n].name)
			break;
		n++;
	}
	closedir(dir);
	if (n > 0)
		qsort(files, n, sizeof(*files), job_file_cmp);
	*n_out = n;
	return files;
}

static void load_jobs(struct loader *ld)
{
	struct cfg *cfg = ld->cfg;
	size_t n_files = 0;
	struct job_file *files;
	char b[SHOWN_MAX + 4];

	ld->file = cfg->path; /* errors about the directory itself */
	files = list_job_files(ld, &n_files);
	if (n_files > 0)
		cfg->jobs = xcalloc(ld, n_files, sizeof(*cfg->jobs));
	for (size_t i = 0; cfg->jobs && i < n_files; i++) {
		char *disp = path_join(ld, ld->jobs_disp, files[i].name);
		char *abs = path_join(ld, cfg->jobs_directory, files[i].name);
		char *stem = strndup(files[i].name, files[i].stem_len);
		struct node *root = NULL;
		size_t twin = i;
		int io_err;

		if (!disp || !abs || !stem) {
			ld->oom = true;
			free(disp);
			free(abs);
			free(stem);
			break;
		}
		ld->file = disp;
		ld->file_idx = (int)i + 1;
		ld->file_errs = 0;
		ld->file_gave_up = false;
		for (size_t j = 0; j < i && twin == i; j++)
			if (files[j].stem_len == files[i].stem_len &&
			    memcmp(files[j].name, stem, files[i].stem_len) == 0)
				twin = j;
		if (twin != i) {
			report(ld, 1, 1, "duplicate job name '%s' (also defined by %s/%s)",
			       shown(b, stem), ld->jobs_disp, files[twin].name);
		} else {
			if (!name_ok(stem))
				report(ld, 1, 1,
				       "job name '%s' (the file name) may contain only letters, "
				       "digits, '.', '_' and '-'", shown(b, stem));
			else if (strcmp(stem, "_manual") == 0)
				report(ld, 1, 1,
				       "job name '_manual' is reserved (it holds the runs of "
				       "'xpimportctl create-profile'); rename the file");
			if (load_tree(ld, abs, &root, &io_err)) {
				struct cfg_job *job = &cfg->jobs[cfg->n_jobs++];
				job_defaults(ld, job);
				job->name = stem;
				job->file = abs;
				job->src_file = disp;
				stem = abs = disp = NULL;
				ld->file = job->src_file;
				walk_job(ld, job, root);
			}
		}
		ld->file = cfg->path;
		node_free(root);
		free(stem);
		free(abs);
		free(disp);
	}
	for (size_t i = 0; i < n_files; i++)
		free(files[i].name);
	free(files);
	ld->file = cfg->path;
	ld->file_idx = 0;
}

/* ---- entry points ------------------------------------------------------- */

static int err_cmp(const void *a, const void *b)
{
	const struct load_err *x = a, *y = b;

	if (x->file_idx != y->file_idx)
		return x->file_idx < y->file_idx ? -1 : 1;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->col != y->col)
		return x->col < y->col ? -1 : 1;
	return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

static void hand_over_errors(struct loader *ld, struct cfg_errors *errs)
{
	if (ld->n_errs == 0)
		return;
	qsort(ld->errs, ld->n_errs, sizeof(*ld->errs), err_cmp);
	errs->msgs = calloc(ld->n_errs, sizeof(*errs->msgs));
	if (!errs->msgs) {
		ld->oom = true;
		for (size_t i = 0; i < ld->n_errs; i++)
			free(ld->errs[i].msg);
		return;
	}
	for (size_t i = 0; i < ld->n_errs; i++)
		errs->msgs[i] = ld->errs[i].msg;
	errs->n = ld->n_errs;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(""); /* shown as given: "jobs.d/x.yaml", not "./jobs.d/x.yaml" */
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

int config_load(const char *path, struct cfg **out, struct cfg_errors *errs)
{
	struct loader ld = {0};
	struct node *root = NULL;
	char *disp_dir = NULL;
	struct cfg *cfg;
	int io_err = 0, rc;

	*out = NULL;
	errs->msgs = NULL;
	errs->n = 0;
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	ld.cfg = cfg;
	cfg->max_parallel_jobs = 4;
	cfg->state.keep_runs = 100;
	cfg->state.keep_runs_age_ms = 30LL * 86400000;
	cfg->path = xstrdup(&ld, path);
	disp_dir = dir_of(path);
	if (!cfg->path || !disp_dir) {
		rc = -ENOMEM;
		goto out;
	}
	cfg->dir = realpath(disp_dir[0] ? disp_dir : ".", NULL);
	if (!cfg->dir)
		cfg->dir = xstrdup(&ld, disp_dir[0] ? disp_dir : ".");
	ld.file = cfg->path;
	ld.file_idx = 0;
	if (load_tree(&ld, path, &root, &io_err))
		walk_main(&ld, root, disp_dir);
	node_free(root);
	if (io_err == 0 && !ld.oom && cfg->jobs_directory && ld.jobs_disp)
		load_jobs(&ld);
	hand_over_errors(&ld, errs);
	if (ld.oom)
		rc = -ENOMEM;
	else if (io_err)
		rc = io_err;
	else
		rc = errs->n ? -EINVAL : 0;
out:
	free(ld.errs);
	free(ld.jobs_disp);
	free(disp_dir);
	if (rc == 0)
		*out = cfg;
	else
		cfg_free(cfg);
	return rc;
}

void cfg_errors_free(struct cfg_errors *errs)
{
	if (!errs)
		return;
	for (size_t i = 0; i < errs->n; i++)
		free(errs->msgs[i]);
	free(errs->msgs);
	errs->msgs = NULL;
	errs->n = 0;
}

static void free_after(struct cfg_after *a)
{
	free(a->to);
}

static void free_job(struct cfg_job *job)
{
	free(job->name);
	free(job->file);
	free(job->project_name);
	free(job->source.site_name);
	free(job->source.path);
	free_str_list(job->source.include, job->source.n_include);
	free_str_list(job->source.exclude, job->source.n_exclude);
	free(job->source.done_marker);
	free_after(&job->source.after_import);
	free_after(&job->source.after_failure);
	free(job->schedule.cron);
	free(job->schedule.timezone);
	for (size_t i = 0; i < job->mapping.n_columns; i++) {
		free(job->mapping.columns[i].header);
		free(job->mapping.columns[i].attr);
		free(job->mapping.columns[i].src_file);
	}
	free(job->mapping.columns);
	free(job->src_file);
}

void cfg_free(struct cfg *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_projects; i++) {
		struct cfg_project *p = &cfg->projects[i];
		free(p->name);
		free(p->url);
		free(p->apptoken_file);
		free(p->ca_file);
		for (size_t j = 0; j < p->n_attrs; j++)
			free(p->attrs[j].name);
		free(p->attrs);
		free(p->src_file);
	}
	free(cfg->projects);
	for (size_t i = 0; i < cfg->n_sites; i++) {
		struct cfg_site *s = &cfg->sites[i];
		free(s->name);
		free(s->host);
		free(s->user);
		free(s->private_key_file);
		free(s->passphrase_file);
		free(s->password_file);
		free(s->known_hosts_file);
		free_str_list(s->host_key_sha256, s->n_host_key_sha256);
		free(s->src_file);
	}
	free(cfg->sites);
	for (size_t i = 0; i < cfg->n_jobs; i++)
		free_job(&cfg->jobs[i]);
	free(cfg->jobs);
	free(cfg->path);
	free(cfg->dir);
	free(cfg->jobs_directory);
	free(cfg);
}

const struct cfg_job *cfg_find_job(const struct cfg *cfg, const char *name)
{
	for (size_t i = 0; cfg && i < cfg->n_jobs; i++)
		if (cfg->jobs[i].name && strcmp(cfg->jobs[i].name, name) == 0)
			return &cfg->jobs[i];
	return NULL;
}

const struct cfg_project *cfg_find_project(const struct cfg *cfg, const char *name)
{
	for (size_t i = 0; cfg && i < cfg->n_projects; i++)
		if (cfg->projects[i].name && strcmp(cfg->projects[i].name, name) == 0)
			return &cfg->projects[i];
	return NULL;
}

const struct cfg_site *cfg_find_site(const struct cfg *cfg, const char *name)
{
	for (size_t i = 0; cfg && i < cfg->n_sites; i++)
		if (cfg->sites[i].name && strcmp(cfg->sites[i].name, name) == 0)
			return &cfg->sites[i];
	return NULL;
}
