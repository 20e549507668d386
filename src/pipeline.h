/* pipeline.h — parse (libcsv, streaming) -> map (header -> attribute) ->
 * validate -> batch (direct JSON) over one staged local file.
 *
 * Two passes over the same file, so that the error budget is known before
 * the first row is posted (design.md): pipeline_validate() reads the whole
 * file and writes the reject report; pipeline_batcher_*() reads it again and
 * yields the request bodies. Both are deterministic: the same file and job
 * give the same batches, which is what crash resume relies on.
 * This module never logs; it returns errors and counts. Memory does not grow
 * with the file. Blocking file I/O: call from a worker thread. */
#ifndef XP_PIPELINE_H
#define XP_PIPELINE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "util.h"

#define PIPE_MAX_BATCH 10000
#define PIPE_FIRST_REJECTS 10
#define PIPE_FIRST_ROWS 5

/* One rejected row, as in the reject report. */
struct pipe_reject {
	uint64_t line;           /* physical line where the row starts (header = 1) */
	char column[128];        /* CSV header of the offending column ("" for the row) */
	char rule[32];           /* e.g. "required", "email", "mobile_number", "utf8", "fields" */
	char message[300];       /* operator-readable: "mobile_number '0850 12' is not a valid number" */
};

struct pipe_summary {
	uint64_t bytes;          /* bytes of the (decompressed) CSV read */
	uint64_t rows_read;      /* data rows, header excluded, blank lines excluded */
	uint64_t rows_valid;
	uint64_t rows_rejected;
	uint64_t duplicates;     /* user_id repeats detected (see yaml(5): the last row wins) */
	size_t n_batches;        /* batches pipeline_batcher will produce */
	char **columns_sent;     /* attribute names, in batch column order */
	size_t n_columns_sent;
	char **columns_ignored;  /* CSV headers that are not imported (reported once per file) */
	size_t n_columns_ignored;
	bool over_budget;        /* error budget exceeded: the file must not be posted */
	bool file_error;         /* header missing/empty/duplicate, no user_id, unreadable... */
	char error[512];         /* file error message, with column position where relevant */
	struct pipe_reject first_rejects[PIPE_FIRST_REJECTS];
	size_t n_first_rejects;
	char *first_rows_json;   /* JSON array of the first PIPE_FIRST_ROWS valid rows, or NULL */
};
void pipe_summary_free(struct pipe_summary *s);

/* Pass 1. path: staged file (".gz" suffix of display_name or gzip magic ->
 * decompressed while streaming). reject_path: where to write the reject
 * report (CSV, mode 0600: line,column,rule,value,raw_row), or NULL for none;
 * the report is only created when a row was rejected.
 * Returns 0 when the file was read (check s->file_error / over_budget),
 * negative errno on I/O errors (s->error says what). */
int pipeline_validate(const struct cfg_job *job, const char *path, const char *display_name,
		      const char *reject_path, struct pipe_summary *s);

/* Pass 2: the request bodies, without the apptoken:
 *   {"columns":["user_id",...],"rows":[["u1",...],...]}
 * The API client splices the apptoken in front. */
struct pipe_batcher;
int pipeline_batcher_open(const struct cfg_job *job, const char *path, const char *display_name,
			  struct pipe_batcher **out);
/* Next batch into body (reset first). Returns 1 with *rows set, 0 at the end,
 * negative errno on error. *index is the 0-based batch number. */
int pipeline_batcher_next(struct pipe_batcher *b, struct strbuf *body, size_t *rows, size_t *index);
void pipeline_batcher_free(struct pipe_batcher *b);

/* Pass 1 and the bodies at once, so that the file is parsed only once:
 * pipeline_validate() as above, and every request body exactly as
 * pipeline_batcher_next() would produce it (same rows, splits and bytes) is
 * streamed to spool_path (created O_EXCL, mode 0600; a stale one is removed
 * first; fsync'd when complete). When the file is not to be posted
 * (s->file_error, s->over_budget) or on an error, no spool is left.
 * spool_path NULL: exactly pipeline_validate(). Memory does not grow with
 * the file (one batch body at a time). */
int pipeline_validate_spool(const struct cfg_job *job, const char *path, const char *display_name,
			    const char *reject_path, const char *spool_path, struct pipe_summary *s);

/* Pass 2 from a spool written by pipeline_validate_spool(): a batcher whose
 * pipeline_batcher_next() yields the spooled bodies in order (index 0..n-1)
 * and that pipeline_batcher_free() frees. expected_batches: s->n_batches of
 * that pass 1. -EBADMSG when the spool is truncated, damaged or of another
 * batch count (at open, or from pipeline_batcher_next() for a damaged
 * batch, before it is returned): validate the staged file again. */
int pipeline_spool_open(const char *spool_path, size_t expected_batches, struct pipe_batcher **out);

/* The manual entry (create-profile): one record of attribute=value pairs,
 * validated by the same rules against project p. On success body holds a
 * one-row request body as above and 0 is returned; on a rule violation
 * -EINVAL with err describing it ("mobile_number '0850 12' is not a valid
 * number"). country_code 0 = the project's default. */
int pipeline_single(const struct cfg_project *p, int country_code, const char *const *attrs,
		    const char *const *values, size_t n, struct strbuf *body, char *err, size_t errlen);
#endif
