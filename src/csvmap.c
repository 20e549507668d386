/* csvmap.c — header checks (empty, duplicate, encoding) and the mapping. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csvmap.h"
#include "util.h"
#include "validate.h"

#define HEADER_LIST_MAX 200

void csvmap_free(struct csvmap *m)
{
	if (!m)
		return;
	for (size_t i = 0; m->headers && i < m->n_columns; i++)
		free(m->headers[i]);
	free(m->headers);
	free(m->col_attr);
	for (size_t i = 0; m->attr_names && i < m->n_attrs; i++)
		free(m->attr_names[i]);
	free(m->attr_names);
	free(m->attr_types);
	free(m->attr_col);
	for (size_t i = 0; m->ignored && i < m->n_ignored; i++)
		free(m->ignored[i]);
	free(m->ignored);
	free(m);
}

static char *dup_trimmed(const char *p, size_t n)
{
	while (n && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	char *s = malloc(n + 1);
	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* The target attribute of header h: *attr NULL = not imported; explicit
 * says whether a mapping.columns entry decided it. */
static const char *target_of(const struct cfg_job *job, const char *h, bool *explicit_entry)
{
	*explicit_entry = false;
	for (size_t i = 0; i < job->mapping.n_columns; i++) {
		if (job->mapping.columns[i].header && strcmp(job->mapping.columns[i].header, h) == 0) {
			*explicit_entry = true;
			return job->mapping.columns[i].attr;
		}
	}
	if (job->mapping.auto_map && cfg_project_attr(job->project, h, NULL))
		return h;
	return NULL;
}

static void header_list(const struct csvmap *m, char *buf, size_t size)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < m->n_columns && o < size; i++) {
		int w = snprintf(buf + o, size - o, "%s%s", i ? "," : "", m->headers[i]);
		if (w < 0)
			break;
		o += (size_t)w;
	}
	if (o >= HEADER_LIST_MAX && size > HEADER_LIST_MAX + 4)
		memcpy(buf + HEADER_LIST_MAX, "...", 4);
}

static int find_attr(const struct csvmap *m, const char *name)
{
	for (size_t i = 0; i < m->n_attrs; i++)
		if (strcmp(m->attr_names[i], name) == 0)
			return (int)i;
	return -1;
}

/* email => email_subscription, and the like: a file error when the first
 * is mapped and the second is not, since every row setting it would fail. */
static int check_pair(const struct csvmap *m, int a, const char *name, const char *pair, char *err,
		      size_t errlen)
{
	if (a < 0 || find_attr(m, pair) >= 0)
		return 0;
	char q[VALIDATE_MSG_VALUE * 2 + 8];
	size_t col = m->attr_col[a];
	validate_quote_value(m->headers[col], strlen(m->headers[col]), q, sizeof(q));
	snprintf(err, errlen, "column %zu %s maps to %s but no column maps to %s", col + 1, q, name,
		 pair);
	return -EINVAL;
}

int csvmap_build(const struct cfg_job *job, const char *const *names, const size_t *lens, size_t n,
		 struct csvmap **out, char *err, size_t errlen)
{
	struct csvmap *m = calloc(1, sizeof(*m));
	char q1[VALIDATE_MSG_VALUE * 2 + 8], q2[VALIDATE_MSG_VALUE * 2 + 8];
	int rc = -ENOMEM;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	m->headers = calloc(n ? n : 1, sizeof(char *));
	m->col_attr = calloc(n ? n : 1, sizeof(int));
	m->attr_names = calloc(n ? n : 1, sizeof(char *));
	m->attr_types = calloc(n ? n : 1, sizeof(enum attr_type));
	m->attr_col = calloc(n ? n : 1, sizeof(size_t));
	m->ignored = calloc(n ? n : 1, sizeof(char *));
	if (!m->headers || !m->col_attr || !m->attr_names || !m->attr_types || !m->attr_col ||
	    !m->ignored)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		m->headers[i] = dup_trimmed(names[i], lens[i]);
		if (!m->headers[i])
			goto fail;
		m->n_columns = i + 1;
	}
	rc = -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const char *h = m->headers[i];
		size_t hl = strlen(h);
		if (hl != lens[i] && memchr(names[i], '\0', lens[i])) {
			snprintf(err, errlen, "NUL byte in the header of column %zu", i + 1);
			goto fail;
		}
		if (!util_utf8_valid(h, hl)) {
			snprintf(err, errlen, "invalid UTF-8 in the header of column %zu", i + 1);
			goto fail;
		}
		if (hl == 0) {
			snprintf(err, errlen, "column %zu has an empty header", i + 1);
			goto fail;
		}
		for (size_t k = 0; k < i; k++) {
			if (strcmp(m->headers[k], h) == 0) {
				validate_quote_value(h, hl, q1, sizeof(q1));
				snprintf(err, errlen, "column %zu %s duplicates column %zu", i + 1, q1,
					 k + 1);
				goto fail;
			}
		}
	}
	/* user_id first, then the rest in header order */
	int uid_col = -1;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			bool explicit_entry;
			const char *attr = target_of(job, m->headers[i], &explicit_entry);
			bool is_uid = attr && strcmp(attr, "user_id") == 0;
			if (pass == 0 && !is_uid)
				continue;
			if (pass == 1 && is_uid)
				continue;
			if (!attr) {
				if (pass == 1)
					m->col_attr[i] = -1;
				/* `skip` is the operator's decision: not reported as unmapped. */
				if (pass == 1 && !explicit_entry) {
					m->ignored[m->n_ignored] = strdup(m->headers[i]);
					if (!m->ignored[m->n_ignored++]) {
						rc = -ENOMEM;
						goto fail;
					}
				}
				continue;
			}
			enum attr_type type;
			if (!cfg_project_attr(job->project, attr, &type)) {
				validate_quote_value(m->headers[i], strlen(m->headers[i]), q1, sizeof(q1));
				snprintf(err, errlen,
					 "column %zu %s maps to '%s', which is not an attribute of project '%s'",
					 i + 1, q1, attr,
					 job->project && job->project->name ? job->project->name : "");
				goto fail;
			}
			int prev = find_attr(m, attr);
			if (prev >= 0) {
				size_t pc = m->attr_col[prev];
				validate_quote_value(m->headers[pc], strlen(m->headers[pc]), q1, sizeof(q1));
				validate_quote_value(m->headers[i], strlen(m->headers[i]), q2, sizeof(q2));
				snprintf(err, errlen, "columns %zu %s and %zu %s both map to %s", pc + 1, q1,
					 i + 1, q2, attr);
				goto fail;
			}
			size_t a = m->n_attrs;
			m->attr_names[a] = strdup(attr);
			if (!m->attr_names[a]) {
				rc = -ENOMEM;
				goto fail;
			}
			m->attr_types[a] = type;
			m->attr_col[a] = i;
			m->col_attr[i] = (int)a;
			m->n_attrs++;
			if (is_uid)
				uid_col = (int)i;
		}
	}
	if (uid_col < 0) {
		char list[HEADER_LIST_MAX + 8];
		header_list(m, list, sizeof(list));
		snprintf(err, errlen, "no column maps to user_id (header: %s)", list);
		goto fail;
	}
	m->email = find_attr(m, "email");
	m->email_subscription = find_attr(m, "email_subscription");
	m->mobile_number = find_attr(m, "mobile_number");
	m->sms_subscription = find_attr(m, "sms_subscription");
	m->whatsapp_number = find_attr(m, "whatsapp_number");
	m->whatsapp_subscription = find_attr(m, "whatsapp_subscription");
	if (check_pair(m, m->email, "email", "email_subscription", err, errlen) < 0 ||
	    check_pair(m, m->mobile_number, "mobile_number", "sms_subscription", err, errlen) < 0 ||
	    check_pair(m, m->whatsapp_number, "whatsapp_number", "whatsapp_subscription", err, errlen) <
		    0)
		goto fail;
	*out = m;
	return 0;
fail:
	csvmap_free(m);
	return rc;
}
