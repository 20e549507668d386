/* csvmap.h — CSV header -> attribute mapping, as the product UI does it:
 * mapping.columns entries win (attr NULL = skip, "Don't import"); else, with
 * mapping.auto, a header equal to a system attribute or a custom attribute
 * of the project maps to it; any other column is not imported (reported). */
#ifndef XP_CSVMAP_H
#define XP_CSVMAP_H
#include <stddef.h>

#include "config.h"

struct csvmap {
	size_t n_columns;          /* CSV columns in the header */
	char **headers;            /* trimmed header names */
	int *col_attr;             /* CSV column -> index in attr_*, or -1 (not imported) */
	size_t n_attrs;            /* mapped attributes, in batch column order: user_id
				    * first, then the others in header order */
	char **attr_names;
	enum attr_type *attr_types;
	size_t *attr_col;          /* attribute -> CSV column */
	char **ignored;            /* headers of the columns not imported, in header order */
	size_t n_ignored;
	/* attribute indices of the paired system attributes, -1 if not mapped */
	int email, email_subscription, mobile_number, sms_subscription, whatsapp_number,
		whatsapp_subscription;
};

/* Build the mapping for header names[i]/lens[i] (i < n, not trimmed yet).
 * Returns 0, -EINVAL for a file error (err: "column 3 has an empty
 * header", "column 5 'email' duplicates column 2", "no column maps to
 * user_id (header: ...)", ...), or -ENOMEM. */
int csvmap_build(const struct cfg_job *job, const char *const *names, const size_t *lens, size_t n,
		 struct csvmap **out, char *err, size_t errlen);
void csvmap_free(struct csvmap *m);
#endif
