/* validate.h — value rules and normalisation for each attribute type
 * (xtremepush-api.md "Attributes", issue 3 "Validate"). Pure functions, no
 * logging; the pipeline turns a failed rule into a row error. */
#ifndef XP_VALIDATE_H
#define XP_VALIDATE_H
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define VALIDATE_MAX_CHARS 101   /* user_id and string attributes, in code points */
#define VALIDATE_MSG_VALUE 64    /* bytes of a value quoted in a message */

/* What a value is sent as. */
enum validate_kind {
	VALIDATE_NULL,    /* JSON null */
	VALIDATE_STRING,  /* a JSON string of p/n (escaped by the encoder) */
	VALIDATE_RAW,     /* p/n written as is: a JSON number, true or false */
};

struct validate_out {
	enum validate_kind kind;
	const char *p;
	size_t n;
	bool set;         /* the cell had a value (not empty) */
	char tmp[24];     /* normalised value storage (mobile numbers) */
};

/* Rule results: 0 = valid. The message and rule name come from
 * validate_message() / validate_rule_name(). */
enum validate_error {
	VALIDATE_OK = 0,
	VALIDATE_EEMPTY,        /* empty and required / empty_cells: reject */
	VALIDATE_ELENGTH,       /* longer than 101 characters */
	VALIDATE_EEMAIL,
	VALIDATE_EMOBILE,       /* not a valid number */
	VALIDATE_EMOBILE_NATIONAL, /* national number, no default country code */
	VALIDATE_EMOBILE_CC,    /* unknown country calling code */
	VALIDATE_ESUBSCRIPTION,
	VALIDATE_EBOOLEAN,
	VALIDATE_ELANGUAGE,
	VALIDATE_ETIMEZONE,
	VALIDATE_ENUMBER,
	VALIDATE_EINTEGER,
	VALIDATE_EDATE,
	VALIDATE_EARRAY,
};

struct validate_ctx {
	int country_code;           /* 0 = none */
	enum empty_policy empty;
};

/* Validate and normalise value p/n (not necessarily NUL-terminated; valid UTF-8,
 * no NUL bytes) as an attribute of type t. Fills *out on success. */
typedef enum validate_error (*validate_fn)(const struct validate_ctx *ctx, const char *p, size_t n,
					   struct validate_out *out);
validate_fn validate_for_type(enum attr_type t);
enum validate_error validate_value(const struct validate_ctx *ctx, enum attr_type t, const char *p,
				   size_t n, struct validate_out *out);

/* "mobile_number '0850 12' is not a valid number": the value quoted,
 * truncated to VALIDATE_MSG_VALUE bytes, control characters shown as '?'. */
void validate_message(enum validate_error e, const char *attr, const char *p, size_t n,
		      const struct validate_ctx *ctx, char *buf, size_t size);
/* Short rule name for the reject report: "required", "email", ... */
const char *validate_rule_name(enum validate_error e, enum attr_type t);

/* Quote value p/n for a message: 'value' (truncated, sanitised). */
void validate_quote_value(const char *p, size_t n, char *buf, size_t size);

/* Exposed for tests. */
bool validate_country_code(const char *digits, size_t n, size_t *cc_len);
bool validate_language_code(const char *p, size_t n);
size_t validate_n_languages(void);
bool validate_is_timezone(const char *p, size_t n);
#endif
