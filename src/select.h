/* select.h — which listed remote files a run takes, and why the others wait.
 * Pure: takes the listing, the job's rules, the job's previous sightings
 * (size/mtime first seen at) and the time; returns the candidates oldest
 * first plus a reason for every file left waiting, and the sightings to keep.
 * Import-once (the ledger) is applied by the run, which knows content hashes. */
#ifndef XP_SELECT_H
#define XP_SELECT_H
#include <jansson.h>
#include <stdint.h>

#include "config.h"
#include "sftp.h"

struct select_waiting {
	char *path;
	char *reason; /* "settling: size/mtime unchanged for 4s of 30s" */
};

struct select_result {
	struct sftp_entry *take; /* borrowed from the listing, oldest first */
	size_t n_take;
	struct select_waiting *waiting;
	size_t n_waiting;
	json_t *sightings;       /* new object: path -> {size, mtime, since} */
	bool no_mtime;           /* the server reports no mtimes: size stability only */
};

/* Default partial-upload patterns, excluded even when `exclude` is set. */
extern const char *const select_partial_patterns[];

/* prev_sightings may be NULL. Returns 0 or -ENOMEM. */
int select_files(const struct cfg_job *job, const struct sftp_listing *listing,
		 const json_t *prev_sightings, int64_t now_ms, struct select_result *out);
void select_result_free(struct select_result *r);
#endif
