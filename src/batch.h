/* batch.h — the request body, written directly as JSON (no jansson tree):
 *   {"columns":["user_id",...],"rows":[[...],[...]]}
 * Row values are encoded by the caller with batch_put_*(); batch_place()
 * decides where a row goes: batches hold at most max_rows rows and at most
 * max_bytes bytes, and a user_id repeated inside the current batch closes
 * it, so that both rows reach the API in file order in separate requests.
 * Duplicates are only detected within one batch (the window is bounded by
 * max_rows, so memory does not grow with the file); a repeat in a later
 * batch is an ordinary upsert of the same profile, in file order too. */
#ifndef XP_BATCH_H
#define XP_BATCH_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct batch {
	struct strbuf head;      /* {"columns":[...],"rows":[ */
	size_t max_rows, max_bytes;
	size_t rows;             /* rows in the current batch */
	size_t bytes;            /* its size so far, without the closing "]}" */
	uint32_t *slots;         /* user_id hash set of the current batch */
	size_t n_slots;
	struct strbuf ids;       /* the user_ids of the current batch */
	uint32_t *slot_hint;     /* batch_place() -> batch_append(): the free slot found */
	const char *hint_uid;
	size_t hint_len;
};

int batch_init(struct batch *b, const char *const *columns, size_t n, size_t max_rows,
	       size_t max_bytes);
void batch_free(struct batch *b);

/* JSON values. plain: the caller knows p/n has nothing to escape. */
int batch_put_string(struct strbuf *sb, const char *p, size_t n, bool plain);
/* Write p/n as a JSON string at out (room for n * 6 + 2 bytes); returns
 * the bytes written. */
size_t batch_escape(char *out, const char *p, size_t n);
int batch_put_raw(struct strbuf *sb, const char *p, size_t n);
int batch_put_null(struct strbuf *sb);

enum batch_place {
	BATCH_APPEND,    /* the row goes into the current batch */
	BATCH_CLOSE,     /* close the current batch first (full, or bytes) */
	BATCH_CLOSE_DUP, /* close it first: the user_id is already in it */
	BATCH_TOO_BIG,   /* the row alone is over max_bytes: a row error */
};
enum batch_place batch_place(struct batch *b, const char *uid, size_t uid_len, size_t row_len);
/* batch_place() == BATCH_TOO_BIG, without the user_id lookup. */
static inline bool batch_too_big(const struct batch *b, size_t row_len)
{
	return b->head.len + row_len + 2 > b->max_bytes;
}
/* Start a batch: body (may be NULL when only counting) gets the head. */
int batch_start(struct batch *b, struct strbuf *body);
/* Append a row placed with BATCH_APPEND (or after batch_start). */
int batch_append(struct batch *b, struct strbuf *body, const char *row, size_t len, const char *uid,
		 size_t uid_len);
/* Close the current batch: body gets "]}". */
int batch_finish(struct batch *b, struct strbuf *body);
#endif
