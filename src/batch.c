/* batch.c — direct JSON encoding and batch boundaries. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"

int batch_put_null(struct strbuf *sb)
{
	return strbuf_append(sb, "null", 4);
}

int batch_put_raw(struct strbuf *sb, const char *p, size_t n)
{
	return strbuf_append(sb, p, n);
}

/* Valid UTF-8 in, a JSON string out: '"' and '\\' escaped, control
 * characters as \b \f \n \r \t or \u00XX, everything else (non-ASCII UTF-8
 * included) as is. */
size_t batch_escape(char *out, const char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	char *o = out;

	*o++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c >= 0x20 && c != '"' && c != '\\') {
			*o++ = (char)c;
			continue;
		}
		*o++ = '\\';
		switch (c) {
		case '"':
			*o++ = '"';
			break;
		case '\\':
			*o++ = '\\';
			break;
		case '\b':
			*o++ = 'b';
			break;
		case '\f':
			*o++ = 'f';
			break;
		case '\n':
			*o++ = 'n';
			break;
		case '\r':
			*o++ = 'r';
			break;
		case '\t':
			*o++ = 't';
			break;
		default:
			*o++ = 'u';
			*o++ = '0';
			*o++ = '0';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	*o++ = '"';
	return (size_t)(o - out);
}

/* Valid UTF-8 in, a JSON string out: '"' and '\\' escaped, control
 * characters as \b \f \n \r \t or \u00XX, everything else (non-ASCII UTF-8
 * included) as is. */
int batch_put_string(struct strbuf *sb, const char *p, size_t n, bool plain)
{
	int rc = strbuf_reserve(sb, plain ? n + 2 : n * 6 + 2);
	if (rc < 0)
		return rc;
	char *o = sb->data + sb->len;
	if (plain) {
		o[0] = '"';
		memcpy(o + 1, p, n);
		o[n + 1] = '"';
		sb->len += n + 2;
	} else {
		sb->len += batch_escape(o, p, n);
	}
	sb->data[sb->len] = '\0';
	return 0;
}

int batch_init(struct batch *b, const char *const *columns, size_t n, size_t max_rows,
	       size_t max_bytes)
{
	memset(b, 0, sizeof(*b));
	b->max_rows = max_rows;
	b->max_bytes = max_bytes;
	int rc = strbuf_puts(&b->head, "{\"columns\":[");
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (i)
			rc = strbuf_append(&b->head, ",", 1);
		if (rc == 0)
			rc = batch_put_string(&b->head, columns[i], strlen(columns[i]), false);
	}
	if (rc == 0)
		rc = strbuf_puts(&b->head, "],\"rows\":[");
	b->n_slots = 16;
	while (b->n_slots < max_rows * 2)
		b->n_slots *= 2;
	b->slots = calloc(b->n_slots, sizeof(uint32_t));
	if (rc == 0 && !b->slots)
		rc = -ENOMEM;
	if (rc < 0)
		batch_free(b);
	return rc;
}

void batch_free(struct batch *b)
{
	if (!b)
		return;
	strbuf_free(&b->head);
	strbuf_free(&b->ids);
	free(b->slots);
	b->slots = NULL;
}

/* Eight bytes at a time; only needs to spread typical ids over the slots. */
static uint64_t hash_id(const char *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, p + i, 8);
		h = (h ^ v) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	if (i < n) {
		uint64_t v = 0;
		memcpy(&v, p + i, n - i);
		h = (h ^ v) * 0xc4ceb9fe1a85ec53ull;
	}
	return h ^ (h >> 29);
}

/* The slot of uid: either the empty one where it would go, or its own. */
static uint32_t *id_slot(struct batch *b, const char *uid, size_t n, bool *found)
{
	size_t mask = b->n_slots - 1, i = (size_t)hash_id(uid, n) & mask;
	for (;;) {
		uint32_t *s = &b->slots[i];
		if (*s == 0) {
			*found = false;
			return s;
		}
		const char *e = b->ids.data + *s - 1;
		uint32_t len;
		memcpy(&len, e, sizeof(len));
		if (len == n && memcmp(e + sizeof(len), uid, n) == 0) {
			*found = true;
			return s;
		}
		i = (i + 1) & mask;
	}
}

enum batch_place batch_place(struct batch *b, const char *uid, size_t uid_len, size_t row_len)
{
	if (batch_too_big(b, row_len))
		return BATCH_TOO_BIG;
	if (b->rows == 0)
		return BATCH_APPEND;
	/* a full batch closes anyway: the repeat then opens a new window */
	if (b->rows >= b->max_rows || b->bytes + 1 + row_len + 2 > b->max_bytes)
		return BATCH_CLOSE;
	bool found;
	b->slot_hint = id_slot(b, uid, uid_len, &found);
	b->hint_uid = uid;
	b->hint_len = uid_len;
	return found ? BATCH_CLOSE_DUP : BATCH_APPEND;
}

int batch_start(struct batch *b, struct strbuf *body)
{
	b->rows = 0;
	b->bytes = b->head.len;
	b->slot_hint = NULL;
	memset(b->slots, 0, b->n_slots * sizeof(uint32_t));
	strbuf_reset(&b->ids);
	if (body) {
		strbuf_reset(body);
		return strbuf_append(body, b->head.data, b->head.len);
	}
	return 0;
}

int batch_append(struct batch *b, struct strbuf *body, const char *row, size_t len, const char *uid,
		 size_t uid_len)
{
	int rc;
	if (body) {
		rc = strbuf_reserve(body, len + 1);
		if (rc < 0)
			return rc;
		if (b->rows)
			body->data[body->len++] = ',';
		memcpy(body->data + body->len, row, len);
		body->len += len;
		body->data[body->len] = '\0';
	}
	b->bytes += len + (b->rows ? 1 : 0);
	b->rows++;
	bool found = false;
	uint32_t *slot;
	if (b->slot_hint && b->hint_uid == uid && b->hint_len == uid_len && b->rows > 1)
		slot = b->slot_hint; /* batch_place() just looked it up: not found */
	else
		slot = id_slot(b, uid, uid_len, &found);
	b->slot_hint = NULL;
	if (!found) {
		uint32_t l = (uint32_t)uid_len;
		size_t off = b->ids.len;
		rc = strbuf_append(&b->ids, &l, sizeof(l));
		if (rc == 0)
			rc = strbuf_append(&b->ids, uid, uid_len);
		if (rc < 0)
			return rc;
		*slot = (uint32_t)off + 1;
	}
	return 0;
}

int batch_finish(struct batch *b, struct strbuf *body)
{
	b->bytes += 2;
	return body ? strbuf_append(body, "]}", 2) : 0;
}
