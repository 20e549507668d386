/* select.c — complete-file-only selection (settle, min_age, done marker,
 * include/exclude globs, partial-upload names), oldest first. */
#include "select.h"
#include "util.h"

#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const select_partial_patterns[] = {"*.part", "*.filepart", "*.tmp", ".*", NULL};

static bool matches_any(char *const *pats, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (fnmatch(pats[i], name, 0) == 0)
			return true;
	return false;
}

static bool is_partial_name(const char *name)
{
	for (size_t i = 0; select_partial_patterns[i]; i++)
		if (fnmatch(select_partial_patterns[i], name, 0) == 0)
			return true;
	return false;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a > b && strcmp(s + a - b, suffix) == 0;
}

static bool listing_has(const struct sftp_listing *l, const char *path)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->entries[i].path, path) == 0)
			return true;
	return false;
}

static int add_waiting(struct select_result *r, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int add_waiting(struct select_result *r, const char *path, const char *fmt, ...)
{
	struct select_waiting *w = realloc(r->waiting, (r->n_waiting + 1) * sizeof(*w));
	va_list ap;
	char *reason = NULL;

	if (!w)
		return -ENOMEM;
	r->waiting = w;
	va_start(ap, fmt);
	int n = vasprintf(&reason, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	w[r->n_waiting].path = strdup(path);
	w[r->n_waiting].reason = reason;
	if (!w[r->n_waiting].path) {
		free(reason);
		return -ENOMEM;
	}
	r->n_waiting++;
	return 0;
}

/* With recursive listing, the job's own move targets under source.path are
 * not sources. The folder is the part of `to` before the first component
 * holding a strftime token ("archive/%Y-%m-%d" -> "archive/"). */
static bool in_after_folder(const struct cfg_job *job, const char *path)
{
	const struct cfg_after *acts[] = {&job->source.after_import, &job->source.after_failure};

	for (size_t i = 0; i < XP_ARRAY_SIZE(acts); i++) {
		const char *to = acts[i]->to;
		char prefix[4096];
		if (acts[i]->action != AFTER_MOVE || !to)
			continue;
		size_t dirlen = strcspn(to, "%");
		if (to[dirlen] == '%') {
			while (dirlen > 0 && to[dirlen - 1] != '/')
				dirlen--;
			if (dirlen == 0)
				continue; /* the first component varies: nothing fixed to skip */
		}
		int n = to[0] == '/'
				? snprintf(prefix, sizeof(prefix), "%.*s/", (int)dirlen, to)
				: snprintf(prefix, sizeof(prefix), "%s/%.*s/", job->source.path, (int)dirlen, to);
		if (n <= 0 || (size_t)n >= sizeof(prefix))
			continue;
		if (n >= 2 && prefix[n - 2] == '/')
			prefix[--n] = '\0'; /* "archive/" + "/" */
		if (strncmp(path, prefix, (size_t)n) == 0)
			return true;
	}
	return false;
}

static int cmp_oldest(const void *a, const void *b)
{
	const struct sftp_entry *x = a, *y = b;
	int64_t mx = x->has_mtime ? x->mtime : 0, my = y->has_mtime ? y->mtime : 0;
	if (mx != my)
		return mx < my ? -1 : 1;
	return strcmp(x->path, y->path);
}

/* Has this file kept its size and mtime for settle_ms? Records the sighting. */
static int check_settled(const struct sftp_entry *e,
			 const json_t *prev, int64_t now_ms, json_t *sightings, int64_t *stable_for)
{
	int64_t since = now_ms;
	const json_t *old = prev ? json_object_get(prev, e->path) : NULL;

	if (old) {
		json_int_t size = json_integer_value(json_object_get(old, "size"));
		json_int_t mtime = json_integer_value(json_object_get(old, "mtime"));
		if ((uint64_t)size == e->size && (!e->has_mtime || mtime == e->mtime))
			since = json_integer_value(json_object_get(old, "since"));
	}
	json_t *s = json_pack("{sI sI sI}", "size", (json_int_t)e->size, "mtime",
			      (json_int_t)(e->has_mtime ? e->mtime : -1), "since", (json_int_t)since);
	if (!s || json_object_set_new(sightings, e->path, s) < 0)
		return -ENOMEM;
	*stable_for = now_ms - since;
	return 0;
}

int select_files(const struct cfg_job *job, const struct sftp_listing *listing,
		 const json_t *prev, int64_t now_ms, struct select_result *out)
{
	const char *marker = job->source.done_marker;
	int r = 0;

	memset(out, 0, sizeof(*out));
	out->sightings = json_object();
	out->take = calloc(listing->n ? listing->n : 1, sizeof(*out->take));
	if (!out->sightings || !out->take)
		return -ENOMEM;

	for (size_t i = 0; i < listing->n; i++) {
		const struct sftp_entry *e = &listing->entries[i];
		int64_t stable_for = 0;

		if (!e->is_regular)
			continue; /* directories, symlinks: never taken (xpimportd.yaml(5)) */
		if (marker && *marker && has_suffix(e->name, marker))
			continue; /* the marker itself */
		if (job->source.after_failure.upload_rejects && has_suffix(e->name, ".rejects.csv"))
			continue; /* a reject report we uploaded for the sender */
		if (job->source.recursive && in_after_folder(job, e->path))
			continue; /* our own archive/failed folders */
		if (!matches_any(job->source.include, job->source.n_include, e->name))
			continue;
		if (is_partial_name(e->name) ||
		    matches_any(job->source.exclude, job->source.n_exclude, e->name))
			continue;
		if (!e->has_mtime)
			out->no_mtime = true;
		r = check_settled(e, prev, now_ms, out->sightings, &stable_for);
		if (r < 0)
			return r;
		if (job->source.settle_ms > 0 && stable_for < job->source.settle_ms) {
			r = add_waiting(out, e->path,
					"settling: size%s unchanged for %" PRId64 "s of %" PRId64 "s",
					e->has_mtime ? " and mtime" : "", stable_for / 1000,
					job->source.settle_ms / 1000);
			if (r < 0)
				return r;
			continue;
		}
		if (job->source.min_age_ms > 0 && e->has_mtime &&
		    now_ms - e->mtime * 1000 < job->source.min_age_ms) {
			r = add_waiting(out, e->path, "younger than min_age (%" PRId64 "s)",
					job->source.min_age_ms / 1000);
			if (r < 0)
				return r;
			continue;
		}
		if (marker && *marker) {
			char *mpath = NULL;
			if (asprintf(&mpath, "%s%s", e->path, marker) < 0)
				return -ENOMEM;
			bool found = listing_has(listing, mpath);
			free(mpath);
			if (!found) {
				r = add_waiting(out, e->path, "waiting for done marker %s%s", e->name,
						marker);
				if (r < 0)
					return r;
				continue;
			}
		}
		out->take[out->n_take++] = *e;
	}
	qsort(out->take, out->n_take, sizeof(*out->take), cmp_oldest);
	return 0;
}

void select_result_free(struct select_result *r)
{
	if (!r)
		return;
	free(r->take);
	for (size_t i = 0; i < r->n_waiting; i++) {
		free(r->waiting[i].path);
		free(r->waiting[i].reason);
	}
	free(r->waiting);
	json_decref(r->sightings);
	memset(r, 0, sizeof(*r));
}
