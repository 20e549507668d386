/* ledger.c — the per-job append-only ledger (format in ledger.h).
 *
 * The same code applies a record when it is replayed and when it is
 * appended: ledger_plan() checks it against the view and allocates whatever
 * applying it will need, ledger_commit() applies it and cannot fail. An
 * appender plans, writes, syncs, then commits, so a failed write leaves both
 * the file and the view as they were, and whatever an appender accepts the
 * replay accepts too.
 *
 * Appends and replays hold flock(LOCK_EX) on the ledger file, so xpimportctl
 * (forget) and the daemon can share it: before each append the records
 * another process added are replayed first. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "ledger.h"
#include "state.h"

#define LEDGER_MAX_LINE (64u << 10)          /* one record, CRC and LF included */
#define LEDGER_MAX_FILE ((uint64_t)1 << 30)  /* sanity bound on the whole file */
#define LEDGER_MAX_TEXT 4096                 /* error / action / who / task id we store */
#define LEDGER_MIN_BUCKETS 64

enum ledger_ev { EV_SEEN, EV_FETCHED, EV_VALIDATED, EV_BATCH, EV_IMPORTED, EV_FAILED, EV_AFTER, EV_FORGET };
static const char *const ledger_ev_names[] = {
	"seen", "fetched", "validated", "batch", "imported", "failed", "after", "forget",
};

/* One record, decoded; strings point into the JSON document or the caller. */
struct ledger_rec {
	enum ledger_ev ev;
	int64_t t;
	const char *run;        /* NULL if absent */
	const char *site;
	const char *path;
	uint64_t size;
	int64_t mtime;
	const char *sha256;     /* "" if unknown */
	uint64_t rows_valid, rows_rejected, n_batches, batch_size, index;
	int64_t http_status;    /* 0 if absent */
	const char *task_id;    /* NULL if absent */
	const char *error;
	const char *action;
	const char *who;
};

struct ledger_task {
	size_t index;
	char *task_id;
};

struct ledger_entry {
	struct ledger_file f;            /* first: ledger_file * <-> entry * */
	uint64_t seq;                    /* order of the last change */
	struct ledger_entry *next_ident; /* chains of the three indexes */
	struct ledger_entry *next_sha;
	struct ledger_entry *next_path;
	size_t *ahead;                   /* accepted indexes past the prefix, sorted */
	size_t n_ahead, cap_ahead;
	struct ledger_task *tasks;       /* task ids of 202 batches, sorted by index */
	size_t n_tasks, cap_tasks;
};

struct ledger {
	int fd;
	char *file;
	uint64_t off;                    /* bytes of the file replayed (all whole records) */
	size_t lines;
	uint64_t seq;
	struct ledger_entry **entries;   /* order of first appearance */
	size_t n, cap;
	struct ledger_entry **by_ident;  /* site, path, size, mtime */
	struct ledger_entry **by_sha;
	struct ledger_entry **by_path;
	size_t n_buckets;                /* power of two */
	char last_error[512];
};

/* What applying one record needs, prepared before anything is written. */
struct ledger_plan {
	struct ledger_entry *e;          /* existing entry it applies to, or NULL */
	struct ledger_entry *fresh;      /* new entry to insert on commit */
	bool upgrade;                    /* e is a sha-less "seen" entry getting its sha */
	bool reset;                      /* e was forgotten: a new fetch starts fresh */
	bool noop;
	char *text;                      /* error copy (failed) */
	char *task_id;                   /* task id copy (batch) */
};

/* ---------------------------------------------------------------- helpers */

static uint64_t ledger_fnv(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t ledger_hash_str(const char *s)
{
	return ledger_fnv(0xcbf29ce484222325ull, s, strlen(s) + 1);
}

static uint64_t ledger_hash_ident(const char *site, const char *path, uint64_t size, int64_t mtime)
{
	uint64_t h = ledger_fnv(0xcbf29ce484222325ull, site, strlen(site) + 1);
	h = ledger_fnv(h, path, strlen(path) + 1);
	h = ledger_fnv(h, &size, sizeof(size));
	return ledger_fnv(h, &mtime, sizeof(mtime));
}

static int64_t ledger_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool ledger_sha_ok(const char *s)
{
	if (strlen(s) != 64)
		return false;
	for (size_t i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static void ledger_set_error(struct ledger *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ledger_set_error(struct ledger *l, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->last_error, sizeof(l->last_error), fmt, ap);
	va_end(ap);
}

const char *ledger_fstate_name(enum ledger_fstate s)
{
	switch (s) {
	case LF_SEEN: return "seen";
	case LF_FETCHED: return "fetched";
	case LF_VALIDATED: return "validated";
	case LF_POSTING: return "posting";
	case LF_IMPORTED: return "imported";
	case LF_FAILED: return "failed";
	case LF_FORGOTTEN: return "forgotten";
	}
	return "unknown";
}

/* ---------------------------------------------------------------- the view */

static void ledger_entry_free(struct ledger_entry *e)
{
	if (!e)
		return;
	free(e->f.site);
	free(e->f.path);
	free(e->f.error);
	free(e->ahead);
	for (size_t i = 0; i < e->n_tasks; i++)
		free(e->tasks[i].task_id);
	free(e->tasks);
	free(e);
}

static void ledger_entry_clear_progress(struct ledger_entry *e)
{
	e->n_ahead = 0;
	for (size_t i = 0; i < e->n_tasks; i++)
		free(e->tasks[i].task_id);
	e->n_tasks = 0;
}

static void ledger_index_insert(struct ledger *l, struct ledger_entry *e)
{
	size_t mask = l->n_buckets - 1;
	size_t b = ledger_hash_ident(e->f.site, e->f.path, e->f.size, e->f.mtime) & mask;
	e->next_ident = l->by_ident[b];
	l->by_ident[b] = e;
	b = ledger_hash_str(e->f.path) & mask;
	e->next_path = l->by_path[b];
	l->by_path[b] = e;
	e->next_sha = NULL;
	if (e->f.sha256[0]) {
		b = ledger_hash_str(e->f.sha256) & mask;
		e->next_sha = l->by_sha[b];
		l->by_sha[b] = e;
	}
}

/* Room for one more entry: the entries array and, at load 1, the indexes. */
static int ledger_reserve_entry(struct ledger *l)
{
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		struct ledger_entry **ne = realloc(l->entries, ncap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		l->entries = ne;
		l->cap = ncap;
	}
	if (l->n + 1 <= l->n_buckets)
		return 0;
	size_t nb = l->n_buckets ? l->n_buckets * 2 : LEDGER_MIN_BUCKETS;
	struct ledger_entry **bi = calloc(nb, sizeof(*bi));
	struct ledger_entry **bs = calloc(nb, sizeof(*bs));
	struct ledger_entry **bp = calloc(nb, sizeof(*bp));
	if (!bi || !bs || !bp) {
		free(bi);
		free(bs);
		free(bp);
		return -ENOMEM;
	}
	free(l->by_ident);
	free(l->by_sha);
	free(l->by_path);
	l->by_ident = bi;
	l->by_sha = bs;
	l->by_path = bp;
	l->n_buckets = nb;
	for (size_t i = 0; i < l->n; i++)
		ledger_index_insert(l, l->entries[i]);
	return 0;
}

static struct ledger_entry *ledger_find_exact(const struct ledger *l, const char *site, const char *path,
					      uint64_t size, int64_t mtime, const char *sha)
{
	if (!l->n_buckets)
		return NULL;
	size_t b = ledger_hash_ident(site, path, size, mtime) & (l->n_buckets - 1);
	for (struct ledger_entry *e = l->by_ident[b]; e; e = e->next_ident)
		if (e->f.size == size && e->f.mtime == mtime && !strcmp(e->f.path, path) &&
		    !strcmp(e->f.site, site) && !strcmp(e->f.sha256, sha))
			return e;
	return NULL;
}

/* The most recently changed identity with this site, path, size, mtime. */
static struct ledger_entry *ledger_find_latest(const struct ledger *l, const char *site, const char *path,
					       uint64_t size, int64_t mtime)
{
	if (!l->n_buckets)
		return NULL;
	struct ledger_entry *best = NULL;
	size_t b = ledger_hash_ident(site, path, size, mtime) & (l->n_buckets - 1);
	for (struct ledger_entry *e = l->by_ident[b]; e; e = e->next_ident)
		if (e->f.size == size && e->f.mtime == mtime && !strcmp(e->f.path, path) &&
		    !strcmp(e->f.site, site) && (!best || e->seq > best->seq))
			best = e;
	return best;
}

static bool ledger_accepted(const struct ledger_entry *e, size_t index)
{
	if (index < e->f.batches_accepted)
		return true;
	size_t lo = 0, hi = e->n_ahead;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (e->ahead[mid] < index)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < e->n_ahead && e->ahead[lo] == index;
}

static bool ledger_has_progress(const struct ledger_entry *e)
{
	return e->f.batches_accepted > 0 || e->n_ahead > 0;
}

/* Check r against the view; allocate what commit needs. why: the reason
 * when r does not fit (-EINVAL / -ENOENT). */
static int ledger_plan(struct ledger *l, const struct ledger_rec *r, bool replaying, struct ledger_plan *p,
		       char *why, size_t whylen)
{
	memset(p, 0, sizeof(*p));
	struct ledger_entry *e = NULL;

	if (r->ev == EV_FORGET) {
		size_t matches = 0;
		if (l->n_buckets) {
			size_t b = ledger_hash_str(r->path) & (l->n_buckets - 1);
			for (struct ledger_entry *x = l->by_path[b]; x; x = x->next_path)
				matches += !strcmp(x->f.path, r->path);
		}
		if (matches == 0 && !replaying) {
			snprintf(why, whylen, "no file %s in the ledger", r->path);
			return -ENOENT;
		}
		return 0;
	}

	e = ledger_find_exact(l, r->site, r->path, r->size, r->mtime, r->sha256);
	p->e = e;
	bool need_new = false;
	switch (r->ev) {
	case EV_SEEN:
		if (e || (!r->sha256[0] && ledger_find_latest(l, r->site, r->path, r->size, r->mtime)))
			p->noop = true;
		else
			need_new = true;
		break;
	case EV_FETCHED:
		if (!ledger_sha_ok(r->sha256)) {
			snprintf(why, whylen, "fetched record without a valid sha256");
			return -EINVAL;
		}
		if (e) {
			p->reset = e->f.state == LF_FORGOTTEN;
		} else {
			struct ledger_entry *s = ledger_find_exact(l, r->site, r->path, r->size, r->mtime, "");
			if (s && s->f.state == LF_SEEN) {
				p->e = s;
				p->upgrade = true;
			} else {
				need_new = true;
			}
		}
		break;
	case EV_VALIDATED:
		if (!e) {
			snprintf(why, whylen, "validated record for a file never fetched");
			return -ENOENT;
		}
		if (e->f.state != LF_FETCHED && e->f.state != LF_VALIDATED && e->f.state != LF_POSTING) {
			snprintf(why, whylen, "validated record for a file in state %s",
				 ledger_fstate_name(e->f.state));
			return -EINVAL;
		}
		if (r->n_batches > SIZE_MAX / 2 || r->batch_size > SIZE_MAX ||
		    (r->n_batches > 0 && r->batch_size == 0)) {
			snprintf(why, whylen, "validated record with an impossible batch layout");
			return -EINVAL;
		}
		if (ledger_has_progress(e) && (r->n_batches != e->f.n_batches || r->batch_size != e->f.batch_size)) {
			snprintf(why, whylen,
				 "batch layout changed (%zu x %zu -> %llu x %llu) after batches were accepted",
				 e->f.n_batches, e->f.batch_size, (unsigned long long)r->n_batches,
				 (unsigned long long)r->batch_size);
			return -EINVAL;
		}
		break;
	case EV_BATCH:
		if (!e) {
			snprintf(why, whylen, "batch record for a file never fetched");
			return -ENOENT;
		}
		if (e->f.state != LF_VALIDATED && e->f.state != LF_POSTING) {
			snprintf(why, whylen, "batch record for a file in state %s", ledger_fstate_name(e->f.state));
			return -EINVAL;
		}
		if (r->index >= e->f.n_batches) {
			snprintf(why, whylen, "batch %llu of a file of %zu batches", (unsigned long long)r->index,
				 e->f.n_batches);
			return -EINVAL;
		}
		if (!ledger_accepted(e, (size_t)r->index) && r->index > e->f.batches_accepted &&
		    e->n_ahead == e->cap_ahead) {
			size_t ncap = e->cap_ahead ? e->cap_ahead * 2 : 8;
			size_t *na = realloc(e->ahead, ncap * sizeof(*na));
			if (!na)
				return -ENOMEM;
			e->ahead = na;
			e->cap_ahead = ncap;
		}
		if (r->task_id && *r->task_id) {
			if (e->n_tasks == e->cap_tasks) {
				size_t ncap = e->cap_tasks ? e->cap_tasks * 2 : 8;
				struct ledger_task *nt = realloc(e->tasks, ncap * sizeof(*nt));
				if (!nt)
					return -ENOMEM;
				e->tasks = nt;
				e->cap_tasks = ncap;
			}
			if (!(p->task_id = strndup(r->task_id, LEDGER_MAX_TEXT)))
				return -ENOMEM;
		}
		break;
	case EV_IMPORTED:
		if (!e) {
			snprintf(why, whylen, "imported record for a file never fetched");
			return -ENOENT;
		}
		if (e->f.state != LF_VALIDATED && e->f.state != LF_POSTING && e->f.state != LF_IMPORTED) {
			snprintf(why, whylen, "imported record for a file in state %s", ledger_fstate_name(e->f.state));
			return -EINVAL;
		}
		if (e->f.batches_accepted != e->f.n_batches) {
			snprintf(why, whylen, "imported record with %zu of %zu batches accepted", e->f.batches_accepted,
				 e->f.n_batches);
			return -EINVAL;
		}
		break;
	case EV_FAILED:
		if (!e)
			need_new = true;
		if (!(p->text = strndup(r->error ? r->error : "", LEDGER_MAX_TEXT)))
			return -ENOMEM;
		break;
	case EV_AFTER:
		if (!e) {
			snprintf(why, whylen, "after-action record for an unknown file");
			return -ENOENT;
		}
		if (e->f.state != LF_IMPORTED && e->f.state != LF_FAILED) {
			snprintf(why, whylen, "after-action record for a file in state %s",
				 ledger_fstate_name(e->f.state));
			return -EINVAL;
		}
		break;
	case EV_FORGET:
		break;
	}

	if (need_new) {
		int rc = ledger_reserve_entry(l);
		if (rc < 0)
			goto fail;
		struct ledger_entry *n = calloc(1, sizeof(*n));
		if (!n || !(n->f.site = strdup(r->site)) || !(n->f.path = strdup(r->path))) {
			ledger_entry_free(n);
			rc = -ENOMEM;
			goto fail;
		}
		n->f.size = r->size;
		n->f.mtime = r->mtime;
		snprintf(n->f.sha256, sizeof(n->f.sha256), "%s", r->sha256);
		p->fresh = n;
		return 0;
fail:
		free(p->text);
		free(p->task_id);
		p->text = p->task_id = NULL;
		return rc;
	}
	return 0;
}

static void ledger_plan_drop(struct ledger_plan *p)
{
	ledger_entry_free(p->fresh);
	free(p->text);
	free(p->task_id);
	memset(p, 0, sizeof(*p));
}

static void ledger_accept(struct ledger_entry *e, size_t index)
{
	if (ledger_accepted(e, index))
		return;
	if (index == e->f.batches_accepted) {
		e->f.batches_accepted++;
		/* batches that came early now join the prefix */
		size_t k = 0;
		while (k < e->n_ahead && e->ahead[k] == e->f.batches_accepted) {
			e->f.batches_accepted++;
			k++;
		}
		if (k > 0) {
			memmove(e->ahead, e->ahead + k, (e->n_ahead - k) * sizeof(*e->ahead));
			e->n_ahead -= k;
		}
		return;
	}
	size_t pos = e->n_ahead;
	while (pos > 0 && e->ahead[pos - 1] > index)
		pos--;
	memmove(e->ahead + pos + 1, e->ahead + pos, (e->n_ahead - pos) * sizeof(*e->ahead));
	e->ahead[pos] = index;
	e->n_ahead++;   /* room reserved by ledger_plan */
}

static void ledger_commit(struct ledger *l, const struct ledger_rec *r, struct ledger_plan *p)
{
	l->seq++;
	if (r->ev == EV_FORGET) {
		if (l->n_buckets) {
			size_t b = ledger_hash_str(r->path) & (l->n_buckets - 1);
			for (struct ledger_entry *x = l->by_path[b]; x; x = x->next_path) {
				if (strcmp(x->f.path, r->path))
					continue;
				x->f.state = LF_FORGOTTEN;
				x->f.after_done = false;
				x->f.updated_ms = r->t;
				x->seq = l->seq;
			}
		}
		ledger_plan_drop(p);
		return;
	}
	if (p->noop) {
		ledger_plan_drop(p);
		return;
	}
	struct ledger_entry *e = p->e;
	if (p->fresh) {
		e = p->fresh;
		p->fresh = NULL;
		e->f.state = r->ev == EV_FAILED ? LF_FAILED : r->ev == EV_SEEN ? LF_SEEN : LF_FETCHED;
		l->entries[l->n++] = e;
		ledger_index_insert(l, e);
	}
	e->seq = l->seq;
	e->f.updated_ms = r->t;
	if (r->run)
		snprintf(e->f.run_id, sizeof(e->f.run_id), "%s", r->run);

	switch (r->ev) {
	case EV_SEEN:
		break;
	case EV_FETCHED:
		if (p->upgrade) {
			/* the sha joins the identity: index it under its sha too */
			snprintf(e->f.sha256, sizeof(e->f.sha256), "%s", r->sha256);
			size_t b = ledger_hash_str(e->f.sha256) & (l->n_buckets - 1);
			e->next_sha = l->by_sha[b];
			l->by_sha[b] = e;
		}
		if (p->reset) {
			ledger_entry_clear_progress(e);
			e->f.n_batches = e->f.batch_size = e->f.batches_accepted = 0;
			e->f.rows_valid = e->f.rows_rejected = 0;
			e->f.after_done = false;
			free(e->f.error);
			e->f.error = NULL;
		}
		/* a fetch again after a crash keeps what was accepted */
		if (e->f.state == LF_SEEN || e->f.state == LF_FORGOTTEN)
			e->f.state = LF_FETCHED;
		break;
	case EV_VALIDATED:
		e->f.rows_valid = r->rows_valid;
		e->f.rows_rejected = r->rows_rejected;
		e->f.n_batches = (size_t)r->n_batches;
		e->f.batch_size = (size_t)r->batch_size;
		if (e->f.state == LF_FETCHED)
			e->f.state = LF_VALIDATED;
		break;
	case EV_BATCH:
		ledger_accept(e, (size_t)r->index);
		e->f.state = LF_POSTING;
		if (p->task_id) {
			size_t pos = e->n_tasks;
			while (pos > 0 && e->tasks[pos - 1].index >= r->index)
				pos--;
			if (pos < e->n_tasks && e->tasks[pos].index == r->index) {
				free(e->tasks[pos].task_id);   /* the latest answer wins */
			} else {
				memmove(e->tasks + pos + 1, e->tasks + pos, (e->n_tasks - pos) * sizeof(*e->tasks));
				e->n_tasks++;
			}
			e->tasks[pos].index = (size_t)r->index;
			e->tasks[pos].task_id = p->task_id;
			p->task_id = NULL;
		}
		break;
	case EV_IMPORTED:
		e->f.state = LF_IMPORTED;
		ledger_entry_clear_progress(e);   /* tasks were confirmed: done with them */
		break;
	case EV_FAILED:
		e->f.state = LF_FAILED;
		free(e->f.error);
		e->f.error = p->text;
		p->text = NULL;
		break;
	case EV_AFTER:
		e->f.after_done = true;
		break;
	case EV_FORGET:
		break;
	}
	ledger_plan_drop(p);
}

/* ---------------------------------------------------------------- records */

/* A record's fields: a flat JSON object of strings and integers. */
enum ledger_ftype { FT_STR, FT_INT, FT_OTHER };
struct ledger_field {
	const char *key;
	enum ledger_ftype type;
	const char *str;        /* FT_STR, NUL-terminated (no NUL inside) */
	int64_t num;            /* FT_INT */
};
#define LEDGER_MAX_FIELDS 32
struct ledger_fields {
	struct ledger_field f[LEDGER_MAX_FIELDS];
	size_t n;
	char *scratch;          /* >= the line: unescaped keys and strings */
	json_t *doc;            /* set when jansson parsed the line */
};

static const struct ledger_field *ledger_field(const struct ledger_fields *fl, const char *key)
{
	for (size_t i = 0; i < fl->n; i++)
		if (!strcmp(fl->f[i].key, key))
			return &fl->f[i];
	return NULL;
}

static int ledger_get_str(const struct ledger_fields *fl, const char *key, bool required, const char **out,
			  char *why, size_t whylen)
{
	const struct ledger_field *v = ledger_field(fl, key);
	if (!v) {
		if (!required)
			return 0;
		snprintf(why, whylen, "missing \"%s\"", key);
		return -EINVAL;
	}
	if (v->type != FT_STR) {
		snprintf(why, whylen, "\"%s\" is not a string", key);
		return -EINVAL;
	}
	*out = v->str;
	return 0;
}

static int ledger_get_int(const struct ledger_fields *fl, const char *key, bool required, int64_t min,
			  int64_t *out, char *why, size_t whylen)
{
	const struct ledger_field *v = ledger_field(fl, key);
	if (!v) {
		if (!required)
			return 0;
		snprintf(why, whylen, "missing \"%s\"", key);
		return -EINVAL;
	}
	if (v->type != FT_INT || v->num < min) {
		snprintf(why, whylen, "\"%s\" is not an integer >= %lld", key, (long long)min);
		return -EINVAL;
	}
	*out = v->num;
	return 0;
}

static int ledger_get_uint(const struct ledger_fields *fl, const char *key, bool required, uint64_t *out,
			   char *why, size_t whylen)
{
	int64_t v = 0;
	int r = ledger_get_int(fl, key, required, 0, &v, why, whylen);
	if (r == 0 && ledger_field(fl, key))
		*out = (uint64_t)v;
	return r;
}

/* Decode a record's fields (not its meaning: ledger_plan does that). */
static int ledger_decode(const struct ledger_fields *o, struct ledger_rec *r, char *why, size_t whylen)
{
	memset(r, 0, sizeof(*r));
	r->sha256 = "";
	const char *ev = NULL;
	int rc = ledger_get_str(o, "ev", true, &ev, why, whylen);
	if (rc < 0)
		return rc;
	size_t i = 0;
	while (i < sizeof(ledger_ev_names) / sizeof(ledger_ev_names[0]) && strcmp(ev, ledger_ev_names[i]))
		i++;
	if (i == sizeof(ledger_ev_names) / sizeof(ledger_ev_names[0])) {
		snprintf(why, whylen, "unknown event \"%.40s\"", ev);
		return -EINVAL;
	}
	r->ev = (enum ledger_ev)i;
	if ((rc = ledger_get_int(o, "t", true, 0, &r->t, why, whylen)) < 0 ||
	    (rc = ledger_get_str(o, "run", false, &r->run, why, whylen)) < 0 ||
	    (rc = ledger_get_str(o, "path", true, &r->path, why, whylen)) < 0)
		return rc;
	if (!*r->path) {
		snprintf(why, whylen, "empty \"path\"");
		return -EINVAL;
	}
	if (r->ev == EV_FORGET)
		return ledger_get_str(o, "who", false, &r->who, why, whylen);

	if ((rc = ledger_get_str(o, "site", true, &r->site, why, whylen)) < 0 ||
	    (rc = ledger_get_uint(o, "size", true, &r->size, why, whylen)) < 0 ||
	    (rc = ledger_get_int(o, "mtime", true, INT64_MIN, &r->mtime, why, whylen)) < 0 ||
	    (rc = ledger_get_str(o, "sha256", r->ev == EV_FETCHED, &r->sha256, why, whylen)) < 0)
		return rc;
	if (!*r->site) {
		snprintf(why, whylen, "empty \"site\"");
		return -EINVAL;
	}
	if (*r->sha256 && !ledger_sha_ok(r->sha256)) {
		snprintf(why, whylen, "\"sha256\" is not 64 lowercase hex digits");
		return -EINVAL;
	}
	switch (r->ev) {
	case EV_VALIDATED:
		if ((rc = ledger_get_uint(o, "rows_valid", true, &r->rows_valid, why, whylen)) < 0 ||
		    (rc = ledger_get_uint(o, "rows_rejected", true, &r->rows_rejected, why, whylen)) < 0 ||
		    (rc = ledger_get_uint(o, "n_batches", true, &r->n_batches, why, whylen)) < 0 ||
		    (rc = ledger_get_uint(o, "batch_size", true, &r->batch_size, why, whylen)) < 0)
			return rc;
		break;
	case EV_BATCH:
		if ((rc = ledger_get_uint(o, "index", true, &r->index, why, whylen)) < 0 ||
		    (rc = ledger_get_int(o, "http_status", false, 0, &r->http_status, why, whylen)) < 0 ||
		    (rc = ledger_get_str(o, "task_id", false, &r->task_id, why, whylen)) < 0)
			return rc;
		break;
	case EV_FAILED:
		rc = ledger_get_str(o, "error", false, &r->error, why, whylen);
		break;
	case EV_AFTER:
		rc = ledger_get_str(o, "action", true, &r->action, why, whylen);
		break;
	default:
		break;
	}
	return rc;
}

static int ledger_set(json_t *o, const char *key, json_t *v)
{
	return v && json_object_set_new(o, key, v) == 0 ? 0 : -1;
}

/* The record as one line "CRC32HEX SP JSON LF" (malloc'd). */
static int ledger_encode(const struct ledger_rec *r, char **line, size_t *len)
{
	json_t *o = json_object();
	int bad = !o;
	if (bad)
		return -ENOMEM;
	/* insertion order is kept: the event first, as a person reads it */
	bad |= ledger_set(o, "ev", json_string(ledger_ev_names[r->ev]));
	bad |= ledger_set(o, "t", json_integer(r->t));
	if (r->run)
		bad |= ledger_set(o, "run", json_string(r->run));
	if (r->ev != EV_FORGET) {
		bad |= ledger_set(o, "site", json_string(r->site));
		bad |= ledger_set(o, "path", json_string(r->path));
		bad |= ledger_set(o, "size", json_integer((json_int_t)r->size));
		bad |= ledger_set(o, "mtime", json_integer(r->mtime));
		if (r->sha256[0])
			bad |= ledger_set(o, "sha256", json_string(r->sha256));
	} else {
		bad |= ledger_set(o, "path", json_string(r->path));
	}
	switch (r->ev) {
	case EV_VALIDATED:
		bad |= ledger_set(o, "rows_valid", json_integer((json_int_t)r->rows_valid));
		bad |= ledger_set(o, "rows_rejected", json_integer((json_int_t)r->rows_rejected));
		bad |= ledger_set(o, "n_batches", json_integer((json_int_t)r->n_batches));
		bad |= ledger_set(o, "batch_size", json_integer((json_int_t)r->batch_size));
		break;
	case EV_BATCH:
		bad |= ledger_set(o, "index", json_integer((json_int_t)r->index));
		if (r->http_status)
			bad |= ledger_set(o, "http_status", json_integer(r->http_status));
		if (r->task_id)
			bad |= ledger_set(o, "task_id", json_string(r->task_id));
		break;
	case EV_FAILED:
		bad |= ledger_set(o, "error", json_string(r->error ? r->error : ""));
		break;
	case EV_AFTER:
		bad |= ledger_set(o, "action", json_string(r->action));
		break;
	case EV_FORGET:
		if (r->who)
			bad |= ledger_set(o, "who", json_string(r->who));
		break;
	default:
		break;
	}
	if (bad) {
		/* json_string() refuses bytes that are not UTF-8 */
		json_decref(o);
		return -EILSEQ;
	}
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!text)
		return -ENOMEM;
	size_t tlen = strlen(text);
	if (tlen + 10 > LEDGER_MAX_LINE) {
		free(text);
		return -EMSGSIZE;
	}
	char *buf = malloc(tlen + 11);
	if (!buf) {
		free(text);
		return -ENOMEM;
	}
	unsigned long crc = crc32(0L, (const unsigned char *)text, (uInt)tlen);
	snprintf(buf, 10, "%08lx ", crc);
	memcpy(buf + 9, text, tlen);
	buf[9 + tlen] = '\n';
	buf[10 + tlen] = '\0';
	free(text);
	*line = buf;
	*len = tlen + 10;
	return 0;
}

/* Length of the UTF-8 sequence at p (< end) if it is a valid one, else 0:
 * no overlongs, no surrogates, nothing past U+10FFFF. */
static size_t ledger_utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t n;
	unsigned min;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, min = 0x10000;
	else
		return 0;
	if ((size_t)(end - p) < n)
		return 0;
	unsigned cp = c & (0x7f >> n);
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static const unsigned char *ledger_skip_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++;
	return p;
}

/* A string without escapes, copied NUL-terminated to *dst. NULL if it is
 * not one (then jansson decides). */
static const unsigned char *ledger_fast_str(const unsigned char *p, const unsigned char *end, char **dst)
{
	if (p >= end || *p != '"')
		return NULL;
	p++;
	char *d = *dst;
	while (p < end && *p != '"') {
		if (*p < 0x20 || *p == '\\')
			return NULL;
		size_t n = ledger_utf8_seq(p, end);
		if (!n)
			return NULL;
		memcpy(d, p, n);
		d += n;
		p += n;
	}
	if (p >= end)
		return NULL;
	*d++ = '\0';
	*dst = d;
	return p + 1;
}

/* The common case fast: a flat object of escape-free strings and integers
 * without duplicate keys. false: let jansson parse (and judge) the line,
 * which is the slow but complete path. Never accepts what jansson would
 * refuse. */
static bool ledger_fast_parse(const unsigned char *p, const unsigned char *end, struct ledger_fields *fl)
{
	char *d = fl->scratch;
	fl->n = 0;
	p = ledger_skip_ws(p, end);
	if (p >= end || *p++ != '{')
		return false;
	p = ledger_skip_ws(p, end);
	if (p < end && *p == '}') {
		p++;
		goto done;
	}
	for (;;) {
		if (fl->n == LEDGER_MAX_FIELDS)
			return false;
		struct ledger_field *f = &fl->f[fl->n];
		f->key = d;
		if (!(p = ledger_fast_str(p, end, &d)))
			return false;
		for (size_t i = 0; i < fl->n; i++)
			if (!strcmp(fl->f[i].key, f->key))
				return false;
		p = ledger_skip_ws(p, end);
		if (p >= end || *p++ != ':')
			return false;
		p = ledger_skip_ws(p, end);
		if (p < end && *p == '"') {
			f->type = FT_STR;
			f->str = d;
			if (!(p = ledger_fast_str(p, end, &d)))
				return false;
		} else {
			bool neg = p < end && *p == '-';
			p += neg;
			if (p >= end || *p < '0' || *p > '9' || (*p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9'))
				return false;
			uint64_t v = 0;
			while (p < end && *p >= '0' && *p <= '9') {
				if (v > (UINT64_MAX - 9) / 10)
					return false;
				v = v * 10 + (uint64_t)(*p++ - '0');
			}
			if (p < end && (*p == '.' || *p == 'e' || *p == 'E'))
				return false;
			if (v > (uint64_t)INT64_MAX + neg)
				return false;
			f->type = FT_INT;
			f->num = neg ? (int64_t)(0 - v) : (int64_t)v;
		}
		fl->n++;
		p = ledger_skip_ws(p, end);
		if (p < end && *p == ',') {
			p = ledger_skip_ws(p + 1, end);
			continue;
		}
		if (p < end && *p == '}') {
			p++;
			break;
		}
		return false;
	}
done:
	return ledger_skip_ws(p, end) == end;
}

/* The slow path: jansson, then the same field list. */
static const char *ledger_jansson_parse(const char *json, size_t len, struct ledger_fields *fl)
{
	json_error_t jerr;
	fl->n = 0;
	json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o)
		return "checksum right but not JSON";
	if (!json_is_object(o)) {
		json_decref(o);
		return "not a JSON object";
	}
	const char *key;
	json_t *v;
	json_object_foreach(o, key, v)
	{
		if (fl->n == LEDGER_MAX_FIELDS) {
			json_decref(o);
			return "too many fields";
		}
		struct ledger_field *f = &fl->f[fl->n++];
		f->key = key;
		if (json_is_string(v)) {
			f->type = FT_STR;
			f->str = json_string_value(v);
		} else if (json_is_integer(v)) {
			f->type = FT_INT;
			f->num = json_integer_value(v);
		} else {
			f->type = FT_OTHER;
		}
	}
	fl->doc = o;
	return NULL;
}

static void ledger_fields_release(struct ledger_fields *fl)
{
	json_decref(fl->doc);
	fl->doc = NULL;
	fl->n = 0;
}

/* Check a line's frame and parse it: NULL and fl filled, or why it is not a
 * record. */
static const char *ledger_check_line(const char *line, size_t len, struct ledger_fields *fl)
{
	fl->n = 0;
	fl->doc = NULL;
	if (len + 1 > LEDGER_MAX_LINE)
		return "line longer than 64 KiB";
	if (len < 10 || line[8] != ' ')
		return "no checksum";
	unsigned long want = 0;
	for (int i = 0; i < 8; i++) {
		char c = line[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (v < 0)
			return "no checksum";
		want = want << 4 | (unsigned long)v;
	}
	const unsigned char *json = (const unsigned char *)line + 9;
	if (crc32(0L, json, (uInt)(len - 9)) != want)
		return "checksum mismatch";
	if (ledger_fast_parse(json, json + len - 9, fl)) {
#ifdef LEDGER_FUZZ_CHECK
		/* the fuzz build checks the fast path against jansson */
		struct ledger_fields ref;
		memset(&ref, 0, sizeof(ref));
		if (ledger_jansson_parse((const char *)json, len - 9, &ref) || ref.n != fl->n)
			abort();
		for (size_t i = 0; i < ref.n; i++) {
			const struct ledger_field *a = &fl->f[i], *b = &ref.f[i];
			if (strcmp(a->key, b->key) || a->type != b->type ||
			    (a->type == FT_STR && strcmp(a->str, b->str)) || (a->type == FT_INT && a->num != b->num))
				abort();
		}
		ledger_fields_release(&ref);
#endif
		return NULL;
	}
	return ledger_jansson_parse((const char *)json, len - 9, fl);
}

/* Replay buf, the bytes of the file from l->off on. A bad last line is a torn
 * write: it is truncated away (*torn, and err says so). The lock is held. */
static int ledger_replay(struct ledger *l, const char *buf, size_t len, bool *torn, char *err, size_t errlen)
{
	struct ledger_fields fl;
	memset(&fl, 0, sizeof(fl));
	if (!(fl.scratch = malloc(LEDGER_MAX_LINE))) {
		snprintf(err, errlen, "%s: out of memory", l->file);
		return -ENOMEM;
	}
	int rc = 0;
	size_t pos = 0;
	while (pos < len) {
		const char *line = buf + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t linelen = nl ? (size_t)(nl - line) : len - pos;
		bool last = pos + linelen + 1 >= len;
		size_t lineno = l->lines + 1;
		const char *bad = nl ? ledger_check_line(line, linelen, &fl) : "no end of line";

		if (bad && last) {
			if (ftruncate(l->fd, (off_t)l->off) < 0 || fdatasync(l->fd) < 0) {
				rc = -errno;
				snprintf(err, errlen, "%s:%zu: cannot drop the torn last record: %s", l->file, lineno,
					 strerror(-rc));
				break;
			}
			*torn = true;
			snprintf(err, errlen, "%s:%zu: dropped a torn last record (%s, %zu bytes)", l->file, lineno,
				 bad, len - pos);
			break;
		}
		if (bad) {
			snprintf(err, errlen,
				 "%s:%zu: corrupt ledger record (%s); refusing to guess: "
				 "move the file aside to start over",
				 l->file, lineno, bad);
			rc = -EBADMSG;
			break;
		}
		struct ledger_rec r;
		struct ledger_plan p;
		char why[200] = "";
		rc = ledger_decode(&fl, &r, why, sizeof(why));
		if (rc == 0)
			rc = ledger_plan(l, &r, true, &p, why, sizeof(why));
		if (rc == -ENOMEM) {
			snprintf(err, errlen, "%s:%zu: out of memory", l->file, lineno);
			break;
		}
		if (rc < 0) {
			snprintf(err, errlen,
				 "%s:%zu: invalid ledger record (%s); refusing to guess: "
				 "move the file aside to start over",
				 l->file, lineno, why);
			rc = -EBADMSG;
			break;
		}
		ledger_commit(l, &r, &p);
		ledger_fields_release(&fl);
		l->off += linelen + 1;
		l->lines++;
		pos += linelen + 1;
	}
	ledger_fields_release(&fl);
	free(fl.scratch);
	return rc;
}

static int ledger_flock(int fd, int op)
{
	while (flock(fd, op) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* Replay what was appended since l->off (by another process, or a torn
 * tail of our own failed append). The lock is held. */
static int ledger_catch_up(struct ledger *l, bool *torn, char *err, size_t errlen)
{
	struct stat st;
	if (fstat(l->fd, &st) < 0) {
		int rc = -errno;
		snprintf(err, errlen, "%s: %s", l->file, strerror(-rc));
		return rc;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (size == l->off)
		return 0;
	if (size < l->off) {
		snprintf(err, errlen, "%s: the ledger shrank under us (%llu < %llu bytes)", l->file,
			 (unsigned long long)size, (unsigned long long)l->off);
		return -ESTALE;
	}
	if (size > LEDGER_MAX_FILE) {
		snprintf(err, errlen, "%s: ledger larger than %llu bytes", l->file, (unsigned long long)LEDGER_MAX_FILE);
		return -EFBIG;
	}
	size_t len = (size_t)(size - l->off), got = 0;
	char *buf = malloc(len ? len : 1);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", l->file);
		return -ENOMEM;
	}
	while (got < len) {
		ssize_t n = pread(l->fd, buf + got, len - got, (off_t)(l->off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int rc = n < 0 ? -errno : -EIO;
			snprintf(err, errlen, "%s: %s", l->file, strerror(-rc));
			free(buf);
			return rc;
		}
		got += (size_t)n;
	}
	int rc = ledger_replay(l, buf, len, torn, err, errlen);
	free(buf);
	return rc;
}

/* ---------------------------------------------------------------- open */

int ledger_open(const char *state_dir, const char *job, struct ledger **out, bool *torn, char *err, size_t errlen)
{
	*out = NULL;
	*torn = false;
	if (err && errlen)
		err[0] = '\0';
	char dummy[1];
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	if (!job || !*job || strchr(job, '/') || job[0] == '.') {
		snprintf(err, errlen, "invalid job name for a ledger");
		return -EINVAL;
	}
	struct ledger *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->fd = -1;
	int rc = 0;
	if (!(l->file = state_path(state_dir, "ledger/%s.log", job))) {
		rc = -ENOMEM;
		goto fail;
	}
	for (int attempt = 0; attempt < 4 && l->fd < 0; attempt++) {
		l->fd = open(l->file, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
		if (l->fd >= 0 || errno != ENOENT)
			break;
		l->fd = open(l->file, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_CREAT | O_EXCL, 0600);
		if (l->fd >= 0) {
			/* a new file: make its name durable before records go in */
			char *dir = state_path(state_dir, "ledger");
			rc = dir ? state_fsync_dir(dir) : -ENOMEM;
			free(dir);
			if (rc < 0) {
				snprintf(err, errlen, "%s: cannot sync its directory: %s", l->file, strerror(-rc));
				goto fail;
			}
		} else if (errno != EEXIST) {
			break;
		}
	}
	if (l->fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", l->file, strerror(-rc));
		goto fail;
	}
	struct stat st;
	if (fstat(l->fd, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", l->file, strerror(-rc));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		snprintf(err, errlen, "%s: not a regular file", l->file);
		goto fail;
	}
	if ((rc = ledger_flock(l->fd, LOCK_EX)) < 0) {
		snprintf(err, errlen, "%s: cannot lock: %s", l->file, strerror(-rc));
		goto fail;
	}
	if ((rc = ledger_reserve_entry(l)) < 0)
		goto fail;
	rc = ledger_catch_up(l, torn, err, errlen);
	flock(l->fd, LOCK_UN);
	if (rc < 0)
		goto fail;
	*out = l;
	return 0;
fail:
	ledger_free(l);
	return rc;
}

int ledger_sync(struct ledger *l, bool *torn, char *err, size_t errlen)
{
	char dummy[1];
	*torn = false;
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	int rc = ledger_flock(l->fd, LOCK_EX);
	if (rc < 0) {
		snprintf(err, errlen, "%s: cannot lock: %s", l->file, strerror(-rc));
		return rc;
	}
	rc = ledger_catch_up(l, torn, err, errlen);
	flock(l->fd, LOCK_UN);
	return rc;
}

void ledger_free(struct ledger *l)
{
	if (!l)
		return;
	if (l->fd >= 0)
		close(l->fd);
	for (size_t i = 0; i < l->n; i++)
		ledger_entry_free(l->entries[i]);
	free(l->entries);
	free(l->by_ident);
	free(l->by_sha);
	free(l->by_path);
	free(l->file);
	free(l);
}

const char *ledger_last_error(const struct ledger *l)
{
	return l->last_error;
}

/* ---------------------------------------------------------------- append */

static int ledger_write_line(struct ledger *l, const char *line, size_t len)
{
	size_t done = 0;
	int rc = 0;
	/* O_APPEND under the lock: one write() normally; the loop only
	 * continues a write a signal cut short. */
	while (done < len) {
		ssize_t n = write(l->fd, line + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)n;
	}
	if (rc == 0 && fdatasync(l->fd) < 0)
		rc = -errno;
	if (rc < 0 && done > 0) {
		/* no half record may remain; if this fails too, the next
		 * append or open finds it torn and drops it */
		if (ftruncate(l->fd, (off_t)l->off) == 0)
			(void)fdatasync(l->fd);
	}
	return rc;
}

static int ledger_append(struct ledger *l, struct ledger_rec *r)
{
	l->last_error[0] = '\0';
	int rc = ledger_flock(l->fd, LOCK_EX);
	if (rc < 0) {
		ledger_set_error(l, "%s: cannot lock: %s", l->file, strerror(-rc));
		return rc;
	}
	bool torn = false;
	char *line = NULL;
	size_t len = 0;
	struct ledger_plan p;
	memset(&p, 0, sizeof(p));
	char why[300] = "";
	if ((rc = ledger_catch_up(l, &torn, l->last_error, sizeof(l->last_error))) < 0)
		goto out;
	l->last_error[0] = '\0';
	if ((rc = ledger_plan(l, r, false, &p, why, sizeof(why))) < 0) {
		ledger_set_error(l, "%s: %s %s: %s", l->file, ledger_ev_names[r->ev], r->path, why[0] ? why : strerror(-rc));
		goto out;
	}
	if ((rc = ledger_encode(r, &line, &len)) < 0) {
		ledger_set_error(l, "%s: cannot encode a %s record for %s: %s", l->file, ledger_ev_names[r->ev], r->path,
				 strerror(-rc));
		ledger_plan_drop(&p);
		goto out;
	}
	if ((rc = ledger_write_line(l, line, len)) < 0) {
		ledger_set_error(l, "%s: cannot record %s of %s: %s", l->file, ledger_ev_names[r->ev], r->path,
				 strerror(-rc));
		ledger_plan_drop(&p);
		goto out;
	}
	ledger_commit(l, r, &p);
	l->off += len;
	l->lines++;
out:
	free(line);
	flock(l->fd, LOCK_UN);
	return rc;
}

/* Fill r's identity from k. With no sha256 in k, the latest identity with
 * that site/path/size/mtime is meant (for failed: or a new sha-less one). */
static int ledger_key_rec(struct ledger *l, enum ledger_ev ev, const char *run_id, const struct ledger_key *k,
			  struct ledger_rec *r, char sha[65])
{
	memset(r, 0, sizeof(*r));
	r->ev = ev;
	r->t = ledger_now_ms();
	r->run = run_id;
	if (!k || !k->site || !*k->site || !k->path || !*k->path || k->size > INT64_MAX) {
		ledger_set_error(l, "%s: %s record without a site and path", l->file, ledger_ev_names[ev]);
		return -EINVAL;
	}
	r->site = k->site;
	r->path = k->path;
	r->size = k->size;
	r->mtime = k->mtime;
	sha[0] = '\0';
	if (k->sha256 && *k->sha256) {
		size_t n = strlen(k->sha256);
		for (size_t i = 0; i < n && i < 64; i++)
			sha[i] = (k->sha256[i] >= 'A' && k->sha256[i] <= 'F') ? (char)(k->sha256[i] - 'A' + 'a')
									       : k->sha256[i];
		sha[n < 64 ? n : 64] = '\0';
		if (n != 64 || !ledger_sha_ok(sha)) {
			ledger_set_error(l, "%s: %s: not a SHA-256 hex digest", l->file, k->path);
			return -EINVAL;
		}
	} else if (ev != EV_SEEN) {
		const struct ledger_entry *e = ledger_find_latest(l, k->site, k->path, k->size, k->mtime);
		if (e)
			memcpy(sha, e->f.sha256, 65);
	}
	r->sha256 = sha;
	return 0;
}

int ledger_seen(struct ledger *l, const char *run_id, const struct ledger_key *k)
{
	struct ledger_rec r;
	char sha[65];
	int rc = ledger_key_rec(l, EV_SEEN, run_id, k, &r, sha);
	return rc < 0 ? rc : ledger_append(l, &r);
}

int ledger_fetched(struct ledger *l, const char *run_id, const struct ledger_key *k)
{
	struct ledger_rec r;
	char sha[65];
	if (!k || !k->sha256 || !*k->sha256) {
		ledger_set_error(l, "%s: fetched record without a sha256", l->file);
		return -EINVAL;
	}
	int rc = ledger_key_rec(l, EV_FETCHED, run_id, k, &r, sha);
	return rc < 0 ? rc : ledger_append(l, &r);
}

int ledger_validated(struct ledger *l, const char *run_id, const struct ledger_key *k, uint64_t rows_valid,
		     uint64_t rows_rejected, size_t n_batches, size_t batch_size)
{
	struct ledger_rec r;
	char sha[65];
	int rc = ledger_key_rec(l, EV_VALIDATED, run_id, k, &r, sha);
	if (rc < 0)
		return rc;
	if (rows_valid > INT64_MAX || rows_rejected > INT64_MAX || (uint64_t)n_batches > INT64_MAX ||
	    (uint64_t)batch_size > INT64_MAX)
		return -EOVERFLOW;
	r.rows_valid = rows_valid;
	r.rows_rejected = rows_rejected;
	r.n_batches = n_batches;
	r.batch_size = batch_size;
	return ledger_append(l, &r);
}

int ledger_batch_accepted(struct ledger *l, const char *run_id, const struct ledger_key *k, size_t index,
			  int http_status, const char *task_id)
{
	struct ledger_rec r;
	char sha[65];
	int rc = ledger_key_rec(l, EV_BATCH, run_id, k, &r, sha);
	if (rc < 0)
		return rc;
	if (http_status < 0)
		return -EINVAL;
	r.index = index;
	r.http_status = http_status;
	r.task_id = task_id && *task_id ? task_id : NULL;
	if (r.task_id && strlen(r.task_id) > LEDGER_MAX_TEXT)
		return -EMSGSIZE;
	return ledger_append(l, &r);
}

int ledger_imported(struct ledger *l, const char *run_id, const struct ledger_key *k)
{
	struct ledger_rec r;
	char sha[65];
	int rc = ledger_key_rec(l, EV_IMPORTED, run_id, k, &r, sha);
	return rc < 0 ? rc : ledger_append(l, &r);
}

int ledger_failed(struct ledger *l, const char *run_id, const struct ledger_key *k, const char *why)
{
	struct ledger_rec r;
	char sha[65];
	int rc = ledger_key_rec(l, EV_FAILED, run_id, k, &r, sha);
	if (rc < 0)
		return rc;
	/* a long API message is cut (at a UTF-8 boundary) rather than lost */
	char *cut = NULL;
	if (why && strlen(why) > LEDGER_MAX_TEXT) {
		size_t n = LEDGER_MAX_TEXT;
		while (n > 0 && ((unsigned char)why[n] & 0xc0) == 0x80)
			n--;
		if (!(cut = strndup(why, n)))
			return -ENOMEM;
	}
	r.error = cut ? cut : why ? why : "";
	rc = ledger_append(l, &r);
	free(cut);
	return rc;
}

int ledger_after_done(struct ledger *l, const char *run_id, const struct ledger_key *k, const char *action)
{
	struct ledger_rec r;
	char sha[65];
	int rc = ledger_key_rec(l, EV_AFTER, run_id, k, &r, sha);
	if (rc < 0)
		return rc;
	if (!action || strlen(action) > LEDGER_MAX_TEXT)
		return -EINVAL;
	r.action = action;
	return ledger_append(l, &r);
}

int ledger_forget(struct ledger *l, const char *path, const char *who)
{
	if (!path || !*path || (who && strlen(who) > LEDGER_MAX_TEXT))
		return -EINVAL;
	struct ledger_rec r;
	memset(&r, 0, sizeof(r));
	r.ev = EV_FORGET;
	r.t = ledger_now_ms();
	r.path = path;
	r.sha256 = "";
	r.who = who;
	return ledger_append(l, &r);
}

/* ---------------------------------------------------------------- lookups */

const struct ledger_file *ledger_get(const struct ledger *l, const struct ledger_key *k)
{
	if (!l || !k || !k->site || !k->path)
		return NULL;
	const struct ledger_entry *e;
	if (k->sha256 && *k->sha256) {
		char sha[65];
		size_t n = strlen(k->sha256);
		if (n != 64)
			return NULL;
		for (size_t i = 0; i <= n; i++)
			sha[i] = (k->sha256[i] >= 'A' && k->sha256[i] <= 'F') ? (char)(k->sha256[i] - 'A' + 'a')
									       : k->sha256[i];
		e = ledger_find_exact(l, k->site, k->path, k->size, k->mtime, sha);
	} else {
		e = ledger_find_latest(l, k->site, k->path, k->size, k->mtime);
	}
	return e ? &e->f : NULL;
}

const struct ledger_file *ledger_find_sha(const struct ledger *l, const char *sha256, const char *other_than_path)
{
	if (!l || !sha256 || !*sha256 || !l->n_buckets)
		return NULL;
	const struct ledger_entry *best = NULL;
	size_t b = ledger_hash_str(sha256) & (l->n_buckets - 1);
	for (const struct ledger_entry *e = l->by_sha[b]; e; e = e->next_sha)
		if (e->f.state == LF_IMPORTED && !strcmp(e->f.sha256, sha256) &&
		    (!other_than_path || strcmp(e->f.path, other_than_path)) && (!best || e->seq < best->seq))
			best = e;   /* the first import of that content */
	return best ? &best->f : NULL;
}

size_t ledger_count(const struct ledger *l)
{
	return l ? l->n : 0;
}

const struct ledger_file *ledger_at(const struct ledger *l, size_t i)
{
	return l && i < l->n ? &l->entries[i]->f : NULL;
}

const char *ledger_task_id(const struct ledger_file *f, size_t index)
{
	const struct ledger_entry *e = (const struct ledger_entry *)f;
	for (size_t i = 0; e && i < e->n_tasks; i++)
		if (e->tasks[i].index == index)
			return e->tasks[i].task_id;
	return NULL;
}

bool ledger_batch_is_accepted(const struct ledger_file *f, size_t index)
{
	return f && ledger_accepted((const struct ledger_entry *)f, index);
}
