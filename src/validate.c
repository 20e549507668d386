/* validate.c — one function per attribute type; each trims what it should,
 * applies the empty-cell policy, checks the rule and says what to send. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "csvread.h"
#include "util.h"
#include "validate.h"

#define ZONEINFO_DIR "/usr/share/zoneinfo/"
#define TZ_MAX_NAME 64
#define TZ_CACHE_SLOTS 256
#define NUMBER_MAX_LEN 64

/* ---- ITU-T E.164 assigned country calling codes ----------------------
 * With the plausible length of the national significant number (NSN) for
 * the countries where it is fixed or well known; 4..14 otherwise (the
 * overall 8..15 digit rule still applies). The codes are prefix-free. */
struct cc_entry {
	unsigned short code;
	unsigned char nsn_min, nsn_max;
};

static const struct cc_entry cc_table[] = {
	{1, 10, 10}, {7, 10, 10}, {20, 9, 10}, {27, 9, 9}, {30, 10, 10}, {31, 9, 9},
	{32, 8, 9}, {33, 9, 9}, {34, 9, 9}, {36, 8, 9}, {39, 6, 11}, {40, 9, 9},
	{41, 9, 9}, {43, 4, 13}, {44, 9, 10}, {45, 8, 8}, {46, 7, 13}, {47, 8, 8},
	{48, 9, 9}, {49, 6, 13}, {51, 8, 9}, {52, 10, 10}, {53, 8, 8}, {54, 10, 11},
	{55, 10, 11}, {56, 9, 9}, {57, 10, 10}, {58, 10, 10}, {60, 8, 10}, {61, 9, 9},
	{62, 8, 12}, {63, 10, 10}, {64, 8, 10}, {65, 8, 8}, {66, 8, 9}, {81, 9, 10},
	{82, 8, 10}, {84, 9, 10}, {86, 10, 11}, {90, 10, 10}, {91, 10, 10}, {92, 10, 10},
	{93, 9, 9}, {94, 9, 9}, {95, 7, 10}, {98, 10, 10},
	{211, 4, 14}, {212, 9, 9}, {213, 8, 9}, {216, 8, 8}, {218, 8, 9}, {220, 7, 7},
	{221, 9, 9}, {222, 8, 8}, {223, 8, 8}, {224, 8, 9}, {225, 8, 10}, {226, 8, 8},
	{227, 8, 8}, {228, 8, 8}, {229, 8, 10}, {230, 7, 8}, {231, 7, 9}, {232, 8, 8},
	{233, 9, 9}, {234, 8, 10}, {235, 8, 8}, {236, 8, 8}, {237, 9, 9}, {238, 7, 7},
	{239, 7, 7}, {240, 9, 9}, {241, 7, 8}, {242, 9, 9}, {243, 9, 9}, {244, 9, 9},
	{245, 7, 9}, {246, 7, 7}, {247, 4, 14}, {248, 7, 7}, {249, 9, 9}, {250, 9, 9},
	{251, 9, 9}, {252, 7, 9}, {253, 8, 8}, {254, 9, 10}, {255, 9, 9}, {256, 9, 9},
	{257, 8, 8}, {258, 8, 9}, {260, 9, 9}, {261, 9, 9}, {262, 9, 9}, {263, 9, 9},
	{264, 8, 9}, {265, 7, 9}, {266, 8, 8}, {267, 7, 8}, {268, 8, 8}, {269, 7, 7},
	{290, 4, 14}, {291, 7, 7}, {297, 7, 7}, {298, 6, 6}, {299, 6, 6},
	{350, 8, 8}, {351, 9, 9}, {352, 4, 11}, {353, 7, 9}, {354, 7, 9}, {355, 8, 9},
	{356, 8, 8}, {357, 8, 8}, {358, 5, 12}, {359, 8, 9}, {370, 8, 8}, {371, 8, 8},
	{372, 7, 8}, {373, 8, 8}, {374, 8, 8}, {375, 9, 10}, {376, 6, 9}, {377, 8, 9},
	{378, 6, 10}, {379, 4, 14}, {380, 9, 9}, {381, 8, 9}, {382, 8, 8}, {383, 8, 9},
	{385, 8, 9}, {386, 8, 8}, {387, 8, 9}, {389, 8, 8},
	{420, 9, 9}, {421, 9, 9}, {423, 7, 9},
	{500, 5, 5}, {501, 7, 7}, {502, 8, 8}, {503, 8, 8}, {504, 8, 8}, {505, 8, 8},
	{506, 8, 8}, {507, 7, 8}, {508, 6, 6}, {509, 8, 8}, {590, 9, 9}, {591, 8, 8},
	{592, 7, 7}, {593, 8, 9}, {594, 9, 9}, {595, 9, 9}, {596, 9, 9}, {597, 6, 7},
	{598, 8, 8}, {599, 7, 8},
	{670, 7, 8}, {672, 6, 6}, {673, 7, 7}, {674, 7, 7}, {675, 7, 8}, {676, 5, 7},
	{677, 5, 7}, {678, 5, 7}, {679, 7, 7}, {680, 7, 7}, {681, 6, 6}, {682, 5, 5},
	{683, 4, 4}, {685, 5, 7}, {686, 5, 8}, {687, 6, 6}, {688, 5, 6}, {689, 6, 8},
	{690, 4, 4}, {691, 7, 7}, {692, 7, 7},
	{800, 8, 8}, {808, 8, 8}, {850, 4, 14}, {852, 8, 8}, {853, 8, 8}, {855, 8, 9},
	{856, 8, 10}, {870, 9, 9}, {878, 4, 12}, {880, 10, 10}, {881, 4, 12}, {882, 4, 12},
	{883, 4, 12}, {886, 8, 9}, {888, 4, 12},
	{960, 7, 7}, {961, 7, 8}, {962, 8, 9}, {963, 8, 9}, {964, 10, 10}, {965, 8, 8},
	{966, 9, 9}, {967, 7, 9}, {968, 8, 8}, {970, 8, 9}, {971, 8, 9}, {972, 8, 9},
	{973, 8, 8}, {974, 8, 8}, {975, 7, 8}, {976, 8, 8}, {977, 8, 10}, {979, 4, 12},
	{991, 4, 12}, {992, 9, 9}, {993, 8, 8}, {994, 9, 9}, {995, 9, 9}, {996, 9, 9},
	{998, 9, 9},
};

static int cc_cmp(const void *a, const void *b)
{
	const struct cc_entry *x = a, *y = b;
	return (int)x->code - (int)y->code;
}

static const struct cc_entry *cc_find(const char *digits, size_t n, size_t *cc_len)
{
	unsigned code = 0;
	for (size_t len = 1; len <= 3 && len <= n; len++) {
		code = code * 10 + (unsigned)(digits[len - 1] - '0');
		struct cc_entry key = {(unsigned short)code, 0, 0};
		const struct cc_entry *e =
			bsearch(&key, cc_table, XP_ARRAY_SIZE(cc_table), sizeof(cc_table[0]), cc_cmp);
		if (e) {
			*cc_len = len;
			return e;
		}
	}
	return NULL;
}

bool validate_country_code(const char *digits, size_t n, size_t *cc_len)
{
	size_t len = 0;
	bool ok = cc_find(digits, n, &len) != NULL;
	if (cc_len)
		*cc_len = len;
	return ok;
}

/* ---- ISO 639-1 (the 184 two-letter codes, sorted) ---------------------- */
static const char languages[][3] = {
	"aa", "ab", "ae", "af", "ak", "am", "an", "ar", "as", "av", "ay", "az", "ba", "be", "bg",
	"bh", "bi", "bm", "bn", "bo", "br", "bs", "ca", "ce", "ch", "co", "cr", "cs", "cu", "cv",
	"cy", "da", "de", "dv", "dz", "ee", "el", "en", "eo", "es", "et", "eu", "fa", "ff", "fi",
	"fj", "fo", "fr", "fy", "ga", "gd", "gl", "gn", "gu", "gv", "ha", "he", "hi", "ho", "hr",
	"ht", "hu", "hy", "hz", "ia", "id", "ie", "ig", "ii", "ik", "io", "is", "it", "iu", "ja",
	"jv", "ka", "kg", "ki", "kj", "kk", "kl", "km", "kn", "ko", "kr", "ks", "ku", "kv", "kw",
	"ky", "la", "lb", "lg", "li", "ln", "lo", "lt", "lu", "lv", "mg", "mh", "mi", "mk", "ml",
	"mn", "mr", "ms", "mt", "my", "na", "nb", "nd", "ne", "ng", "nl", "nn", "no", "nr", "nv",
	"ny", "oc", "oj", "om", "or", "os", "pa", "pi", "pl", "ps", "pt", "qu", "rm", "rn", "ro",
	"ru", "rw", "sa", "sc", "sd", "se", "sg", "si", "sk", "sl", "sm", "sn", "so", "sq", "sr",
	"ss", "st", "su", "sv", "sw", "ta", "te", "tg", "th", "ti", "tk", "tl", "tn", "to", "tr",
	"ts", "tt", "tw", "ty", "ug", "uk", "ur", "uz", "ve", "vi", "vo", "wa", "wo", "xh", "yi",
	"yo", "za", "zh", "zu",
};

size_t validate_n_languages(void)
{
	return XP_ARRAY_SIZE(languages);
}

static int lang_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 2);
}

static inline bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

bool validate_language_code(const char *p, size_t n)
{
	if (n != 2 && n != 5)
		return false;
	if (n == 5 && (p[2] != '-' || !is_alpha(p[3]) || !is_alpha(p[4])))
		return false;
	char key[3] = {lower(p[0]), lower(p[1]), 0};
	if (!is_alpha(key[0]) || !is_alpha(key[1]))
		return false;
	return bsearch(key, languages, XP_ARRAY_SIZE(languages), sizeof(languages[0]), lang_cmp) != NULL;
}

/* ---- IANA time zones: a file under /usr/share/zoneinfo ----------------
 * Names are restricted to the characters tz names use (no '.', so no ".."
 * and none of the .tab and .zi data files), must not start with '/', and the
 * file must be a TZif file. Results are cached per thread (direct-mapped,
 * bounded): the pipeline runs on worker threads and asks for the same few
 * zones a million times. */
struct tz_slot {
	char name[TZ_MAX_NAME + 1];
	unsigned char len;
	bool used, valid;
};
static _Thread_local struct tz_slot tz_cache[TZ_CACHE_SLOTS];

static bool tz_lookup(const char *p, size_t n)
{
	static const char *const refused[] = {"posixrules", "localtime", "Factory", "leapseconds",
					      "SECURITY"};
	if (n == 0 || n > TZ_MAX_NAME || p[0] == '/' || p[n - 1] == '/')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (!(is_alpha(c) || is_digit(c) || c == '_' || c == '-' || c == '+' || c == '/'))
			return false;
		if (c == '/' && p[i + 1] == '/')
			return false;
	}
	for (size_t i = 0; i < XP_ARRAY_SIZE(refused); i++)
		if (strlen(refused[i]) == n && memcmp(refused[i], p, n) == 0)
			return false;
	if ((n > 6 && memcmp(p, "posix/", 6) == 0) || (n > 6 && memcmp(p, "right/", 6) == 0))
		return false;
	char path[sizeof(ZONEINFO_DIR) + TZ_MAX_NAME];
	memcpy(path, ZONEINFO_DIR, sizeof(ZONEINFO_DIR) - 1);
	memcpy(path + sizeof(ZONEINFO_DIR) - 1, p, n);
	path[sizeof(ZONEINFO_DIR) - 1 + n] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 && errno == ELOOP)
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* Debian links aliases */
	if (fd < 0)
		return false;
	struct stat st;
	char magic[4];
	bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && read(fd, magic, 4) == 4 &&
		  memcmp(magic, "TZif", 4) == 0;
	close(fd);
	return ok;
}

bool validate_is_timezone(const char *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 16777619u;
	struct tz_slot *s = &tz_cache[h % TZ_CACHE_SLOTS];
	if (s->used && s->len == n && memcmp(s->name, p, n) == 0)
		return s->valid;
	bool valid = tz_lookup(p, n);
	if (n <= TZ_MAX_NAME) {
		memcpy(s->name, p, n);
		s->len = (unsigned char)n;
		s->used = true;
		s->valid = valid;
	}
	return valid;
}

/* ---- helpers ------------------------------------------------------------ */
static inline void trim(const char **p, size_t *n)
{
	const char *s = *p;
	size_t len = *n;
	while (len && (s[0] == ' ' || s[0] == '\t')) {
		s++;
		len--;
	}
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	*p = s;
	*n = len;
}

static inline void out_string(struct validate_out *out, const char *p, size_t n)
{
	out->kind = VALIDATE_STRING;
	out->p = p;
	out->n = n;
	out->set = true;
}

static inline void out_raw(struct validate_out *out, const char *p, size_t n)
{
	out->kind = VALIDATE_RAW;
	out->p = p;
	out->n = n;
	out->set = true;
}

/* An empty cell, by job.validation.empty_cells. */
static inline enum validate_error empty(const struct validate_ctx *ctx, struct validate_out *out)
{
	out->set = false;
	out->p = "";
	out->n = 0;
	switch (ctx->empty) {
	case EMPTY_STRING:
		out->kind = VALIDATE_STRING;
		return VALIDATE_OK;
	case EMPTY_REJECT:
		return VALIDATE_EEMPTY;
	case EMPTY_NULL:
	default:
		out->kind = VALIDATE_NULL;
		return VALIDATE_OK;
	}
}

static inline bool too_long(const char *p, size_t n)
{
	return n > VALIDATE_MAX_CHARS && csvread_utf8_chars(p, n) > VALIDATE_MAX_CHARS;
}

static bool ieq(const char *p, size_t n, const char *word)
{
	size_t i = 0;
	for (; i < n && word[i]; i++)
		if (lower(p[i]) != word[i])
			return false;
	return i == n && word[i] == '\0';
}

/* 1/0, true/false, yes/no in any case: 1 for true, 0 for false, -1 else. */
static int flag_value(const char *p, size_t n)
{
	if (n == 1 && p[0] == '1')
		return 1;
	if (n == 1 && p[0] == '0')
		return 0;
	if (ieq(p, n, "true") || ieq(p, n, "yes"))
		return 1;
	if (ieq(p, n, "false") || ieq(p, n, "no"))
		return 0;
	return -1;
}

/* ---- the rules ------------------------------------------------------------ */
static enum validate_error v_user_id(const struct validate_ctx *ctx, const char *p, size_t n,
				     struct validate_out *out)
{
	trim(&p, &n);
	if (n == 0)
		return VALIDATE_EEMPTY; /* whatever empty_cells says */
	if (too_long(p, n))
		return VALIDATE_ELENGTH;
	out_string(out, p, n);
	return VALIDATE_OK;
}

static enum validate_error v_string(const struct validate_ctx *ctx, const char *p, size_t n,
				    struct validate_out *out)
{
	if (n == 0)
		return empty(ctx, out);
	if (too_long(p, n))
		return VALIDATE_ELENGTH;
	out_string(out, p, n);
	return VALIDATE_OK;
}

/* RFC 5322 atext, plus UTF-8 (RFC 6531) */
static inline bool email_atext(unsigned char c)
{
	if (c >= 0x80 || is_alpha((char)c) || is_digit((char)c))
		return true;
	switch (c) {
	case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
	case '/': case '=': case '?': case '^': case '_': case '`': case '{': case '|':
	case '}': case '~': case '-':
		return true;
	default:
		return false;
	}
}

static bool email_valid(const char *p, size_t n)
{
	const char *at = NULL;
	if (n < 3 || n > 254)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '@') {
			if (at)
				return false;
			at = p + i;
		}
	}
	if (!at)
		return false;
	size_t local = (size_t)(at - p), dlen = n - local - 1;
	if (local == 0 || local > 64 || dlen == 0 || dlen > 253)
		return false;
	for (size_t i = 0; i < local; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '.') {
			if (i == 0 || i == local - 1 || p[i - 1] == '.')
				return false;
		} else if (!email_atext(c)) {
			return false;
		}
	}
	const char *d = at + 1;
	size_t labels = 0, label_len = 0, label_start = 0;
	bool tld_digits = true;
	for (size_t i = 0; i <= dlen; i++) {
		if (i == dlen || d[i] == '.') {
			if (label_len == 0 || label_len > 63 || d[label_start] == '-' || d[i - 1] == '-')
				return false;
			labels++;
			tld_digits = true;
			for (size_t k = label_start; k < i; k++)
				tld_digits = tld_digits && is_digit(d[k]);
			label_len = 0;
			label_start = i + 1;
			continue;
		}
		unsigned char c = (unsigned char)d[i];
		if (!(c >= 0x80 || is_alpha((char)c) || is_digit((char)c) || c == '-'))
			return false;
		label_len++;
	}
	return labels >= 2 && !tld_digits;
}

static enum validate_error v_email(const struct validate_ctx *ctx, const char *p, size_t n,
				   struct validate_out *out)
{
	trim(&p, &n);
	if (n == 0)
		return empty(ctx, out);
	if (!email_valid(p, n))
		return VALIDATE_EEMAIL;
	out_string(out, p, n);
	return VALIDATE_OK;
}

static enum validate_error v_subscription(const struct validate_ctx *ctx, const char *p, size_t n,
					  struct validate_out *out)
{
	trim(&p, &n);
	if (n == 0)
		return empty(ctx, out);
	int v = flag_value(p, n);
	if (v < 0)
		return VALIDATE_ESUBSCRIPTION;
	out_raw(out, v ? "1" : "0", 1);
	return VALIDATE_OK;
}

static enum validate_error v_boolean(const struct validate_ctx *ctx, const char *p, size_t n,
				     struct validate_out *out)
{
	trim(&p, &n);
	if (n == 0)
		return empty(ctx, out);
	int v = flag_value(p, n);
	if (v < 0)
		return VALIDATE_EBOOLEAN;
	if (v)
		out_raw(out, "true", 4);
	else
		out_raw(out, "false", 5);
	return VALIDATE_OK;
}

/* E.164 without '+': see issue 3. Separators (space, tab, '-', '.', '(',
 * ')') are dropped; "(0)" after an international prefix is the trunk
 * prefix a national caller dials and is dropped too (+44 (0)7400 ...). */
static enum validate_error v_mobile(const struct validate_ctx *ctx, const char *p, size_t n,
				    struct validate_out *out)
{
	char d[24];
	size_t k = 0;
	bool plus = false;

	trim(&p, &n);
	if (n == 0)
		return empty(ctx, out);
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (is_digit(c)) {
			if (k >= 20)
				return VALIDATE_EMOBILE;
			d[k++] = c;
		} else if (c == ' ' || c == '\t' || c == '-' || c == '.' || c == ')') {
			continue;
		} else if (c == '(') {
			bool intl = plus || (k >= 2 && d[0] == '0' && d[1] == '0');
			if (intl && i + 2 < n && p[i + 1] == '0' && p[i + 2] == ')')
				i += 2;
		} else if (c == '+' && k == 0 && !plus) {
			plus = true;
		} else {
			return VALIDATE_EMOBILE;
		}
	}
	const char *digits = d;
	char *o = out->tmp;
	size_t len = k;
	if (!plus && k >= 2 && d[0] == '0' && d[1] == '0') {
		digits += 2;
		len -= 2;
	} else if (!plus && k >= 1 && d[0] == '0') {
		if (ctx->country_code <= 0)
			return VALIDATE_EMOBILE_NATIONAL;
		int w = snprintf(o, sizeof(out->tmp), "%d", ctx->country_code);
		if (w <= 0 || (size_t)w >= sizeof(out->tmp))
			return VALIDATE_EMOBILE;
		o += w;
		digits++;
		len--;
	}
	size_t prefix = (size_t)(o - out->tmp);
	if (prefix + len > 15 || prefix + len < 8)
		return VALIDATE_EMOBILE;
	memcpy(o, digits, len);
	len += prefix;
	out->tmp[len] = '\0';
	if (out->tmp[0] == '0')
		return VALIDATE_EMOBILE;
	size_t cc_len = 0;
	const struct cc_entry *cc = cc_find(out->tmp, len, &cc_len);
	if (!cc)
		return VALIDATE_EMOBILE_CC;
	size_t nsn = len - cc_len;
	if (nsn < cc->nsn_min || nsn > cc->nsn_max)
		return VALIDATE_EMOBILE;
	out_string(out, out->tmp, len);
	return VALIDATE_OK;
}

/* A trimmed string value that a predicate accepts, sent as given. */
static enum validate_error checked_string(const struct validate_ctx *ctx, const char *p, size_t n,
					  struct validate_out *out, bool (*ok)(const char *, size_t),
					  enum validate_error bad)
{
	trim(&p, &n);
	if (n == 0)
		return empty(ctx, out);
	if (!ok(p, n))
		return bad;
	out_string(out, p, n);
	return VALIDATE_OK;
}

static enum validate_error v_language(const struct validate_ctx *ctx, const char *p, size_t n,
				      struct validate_out *out)
{
	return checked_string(ctx, p, n, out, validate_language_code, VALIDATE_ELANGUAGE);
}

static enum validate_error v_timezone(const struct validate_ctx *ctx, const char *p, size_t n,
				      struct validate_out *out)
{
	return checked_string(ctx, p, n, out, validate_is_timezone, VALIDATE_ETIMEZONE);
}

/* JSON's number grammar, as is: no '+', no leading zeros, no NaN/Infinity,
 * and not so large that it overflows a double. */
static bool number_valid(const char *p, size_t n, bool integer)
{
	size_t i = 0;
	if (n == 0 || n > NUMBER_MAX_LEN)
		return false;
	if (p[i] == '-')
		i++;
	if (i == n || !is_digit(p[i]))
		return false;
	if (p[i] == '0')
		i++;
	else
		while (i < n && is_digit(p[i]))
			i++;
	if (integer) {
		if (i != n)
			return false;
		size_t digits = n - (p[0] == '-');
		if (digits < 19)
			return true;
		if (digits > 19)
			return false;
		return memcmp(p + (p[0] == '-'), p[0] == '-' ? "9223372036854775808" : "9223372036854775807",
			      19) <= 0;
	}
	if (i < n && p[i] == '.') {
		i++;
		if (i == n || !is_digit(p[i]))
			return false;
		while (i < n && is_digit(p[i]))
			i++;
	}
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < n && (p[i] == '+' || p[i] == '-'))
			i++;
		if (i == n || !is_digit(p[i]))
			return false;
		while (i < n && is_digit(p[i]))
			i++;
		if (i != n)
			return false;
		char buf[NUMBER_MAX_LEN + 1];
		memcpy(buf, p, n);
		buf[n] = '\0';
		return isfinite(strtod(buf, NULL));
	}
	return i == n;
}

static enum validate_error v_number(const struct validate_ctx *ctx, const char *p, size_t n,
				    struct validate_out *out)
{
	trim(&p, &n);
	if (n == 0)
		return empty(ctx, out);
	if (!number_valid(p, n, false))
		return VALIDATE_ENUMBER;
	out_raw(out, p, n);
	return VALIDATE_OK;
}

static enum validate_error v_integer(const struct validate_ctx *ctx, const char *p, size_t n,
				     struct validate_out *out)
{
	trim(&p, &n);
	if (n == 0)
		return empty(ctx, out);
	if (!number_valid(p, n, true))
		return VALIDATE_EINTEGER;
	out_raw(out, p, n);
	return VALIDATE_OK;
}

static bool two_digits(const char *p, int *v)
{
	if (!is_digit(p[0]) || !is_digit(p[1]))
		return false;
	*v = (p[0] - '0') * 10 + (p[1] - '0');
	return true;
}

/* YYYY-MM-DD, then optionally [ T]HH:MM:SS, then optionally Z or ±HH:MM. */
static bool date_valid(const char *p, size_t n)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int y1, y2, mo, dd, hh, mi, ss;
	if (n < 10 || !two_digits(p, &y1) || !two_digits(p + 2, &y2) || p[4] != '-' ||
	    !two_digits(p + 5, &mo) || p[7] != '-' || !two_digits(p + 8, &dd))
		return false;
	int year = y1 * 100 + y2;
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	if (year == 0 || mo < 1 || mo > 12 || dd < 1 || dd > mdays[mo - 1] + (mo == 2 && leap))
		return false;
	if (n == 10)
		return true;
	if (n < 19 || (p[10] != ' ' && p[10] != 'T') || !two_digits(p + 11, &hh) || p[13] != ':' ||
	    !two_digits(p + 14, &mi) || p[16] != ':' || !two_digits(p + 17, &ss))
		return false;
	if (hh > 23 || mi > 59 || ss > 59)
		return false;
	if (n == 19)
		return true;
	if (n == 20)
		return p[19] == 'Z';
	int oh, om;
	if (n != 25 || (p[19] != '+' && p[19] != '-') || !two_digits(p + 20, &oh) || p[22] != ':' ||
	    !two_digits(p + 23, &om))
		return false;
	return oh <= 14 && om <= 59;
}

static enum validate_error v_date(const struct validate_ctx *ctx, const char *p, size_t n,
				  struct validate_out *out)
{
	return checked_string(ctx, p, n, out, date_valid, VALIDATE_EDATE);
}

/* A JSON array or object (jansson's default decoder accepts nothing else
 * at the top level), sent as a JSON string. */
static enum validate_error v_array(const struct validate_ctx *ctx, const char *p, size_t n,
				   struct validate_out *out)
{
	trim(&p, &n);
	if (n == 0)
		return empty(ctx, out);
	json_error_t jerr;
	json_t *j = json_loadb(p, n, 0, &jerr);
	if (!j)
		return VALIDATE_EARRAY;
	json_decref(j);
	out_string(out, p, n);
	return VALIDATE_OK;
}

validate_fn validate_for_type(enum attr_type t)
{
	switch (t) {
	case ATTR_STRING:
		return v_string;
	case ATTR_NUMBER:
		return v_number;
	case ATTR_INTEGER:
		return v_integer;
	case ATTR_DATE:
		return v_date;
	case ATTR_BOOLEAN:
		return v_boolean;
	case ATTR_ARRAY:
		return v_array;
	case ATTR_SYS_USER_ID:
		return v_user_id;
	case ATTR_SYS_EMAIL:
		return v_email;
	case ATTR_SYS_EMAIL_SUBSCRIPTION:
	case ATTR_SYS_SMS_SUBSCRIPTION:
	case ATTR_SYS_WHATSAPP_SUBSCRIPTION:
		return v_subscription;
	case ATTR_SYS_MOBILE_NUMBER:
	case ATTR_SYS_WHATSAPP_NUMBER:
		return v_mobile;
	case ATTR_SYS_LANGUAGE:
		return v_language;
	case ATTR_SYS_TIMEZONE:
		return v_timezone;
	}
	return v_string;
}

enum validate_error validate_value(const struct validate_ctx *ctx, enum attr_type t, const char *p,
				   size_t n, struct validate_out *out)
{
	return validate_for_type(t)(ctx, p, n, out);
}

void validate_quote_value(const char *p, size_t n, char *buf, size_t size)
{
	size_t cut = n;
	bool truncated = false;
	if (cut > VALIDATE_MSG_VALUE) {
		cut = VALIDATE_MSG_VALUE;
		while (cut > 0 && ((unsigned char)p[cut] & 0xc0) == 0x80)
			cut--;
		truncated = true;
	}
	size_t o = 0;
	if (size == 0)
		return;
	buf[o++] = '\'';
	for (size_t i = 0; i < cut && o + 1 < size; i++) {
		unsigned char c = (unsigned char)p[i];
		buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	const char *tail = truncated ? "...'" : "'";
	for (; *tail && o + 1 < size; tail++)
		buf[o++] = *tail;
	buf[o < size ? o : size - 1] = '\0';
}

void validate_message(enum validate_error e, const char *attr, const char *p, size_t n,
		      const struct validate_ctx *ctx, char *buf, size_t size)
{
	char v[VALIDATE_MSG_VALUE * 2 + 8];
	validate_quote_value(p, n, v, sizeof(v));
	switch (e) {
	case VALIDATE_OK:
		snprintf(buf, size, "%s is valid", attr);
		break;
	case VALIDATE_EEMPTY:
		snprintf(buf, size, "%s is empty", attr);
		break;
	case VALIDATE_ELENGTH:
		snprintf(buf, size, "%s is longer than %d characters", attr, VALIDATE_MAX_CHARS);
		break;
	case VALIDATE_EEMAIL:
		snprintf(buf, size, "%s %s is not a valid address", attr, v);
		break;
	case VALIDATE_EMOBILE:
		snprintf(buf, size, "%s %s is not a valid number", attr, v);
		break;
	case VALIDATE_EMOBILE_NATIONAL:
		snprintf(buf, size, "%s %s is a national number but no default_country_code is set",
			 attr, v);
		break;
	case VALIDATE_EMOBILE_CC:
		snprintf(buf, size, "%s %s does not start with a known country calling code", attr, v);
		break;
	case VALIDATE_ESUBSCRIPTION:
	case VALIDATE_EBOOLEAN:
		snprintf(buf, size, "%s %s is not 1/0, true/false or yes/no", attr, v);
		break;
	case VALIDATE_ELANGUAGE:
		snprintf(buf, size, "%s %s is not an ISO 639-1 language code (like en or en-IE)", attr, v);
		break;
	case VALIDATE_ETIMEZONE:
		snprintf(buf, size, "%s %s is not a known IANA time zone", attr, v);
		break;
	case VALIDATE_ENUMBER:
		snprintf(buf, size, "%s %s is not a number", attr, v);
		break;
	case VALIDATE_EINTEGER:
		snprintf(buf, size, "%s %s is not an integer", attr, v);
		break;
	case VALIDATE_EDATE:
		snprintf(buf, size, "%s %s is not a valid date (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)",
			 attr, v);
		break;
	case VALIDATE_EARRAY:
		snprintf(buf, size, "%s %s is not a valid JSON array or object", attr, v);
		break;
	}
	(void)ctx;
}

const char *validate_rule_name(enum validate_error e, enum attr_type t)
{
	switch (e) {
	case VALIDATE_OK:
		return "";
	case VALIDATE_EEMPTY:
		return t == ATTR_SYS_USER_ID ? "required" : "empty";
	case VALIDATE_ELENGTH:
		return "length";
	case VALIDATE_EEMAIL:
		return "email";
	case VALIDATE_EMOBILE:
	case VALIDATE_EMOBILE_NATIONAL:
	case VALIDATE_EMOBILE_CC:
		return "mobile_number";
	case VALIDATE_ESUBSCRIPTION:
		return "subscription";
	case VALIDATE_EBOOLEAN:
		return "boolean";
	case VALIDATE_ELANGUAGE:
		return "language";
	case VALIDATE_ETIMEZONE:
		return "timezone";
	case VALIDATE_ENUMBER:
		return "number";
	case VALIDATE_EINTEGER:
		return "integer";
	case VALIDATE_EDATE:
		return "date";
	case VALIDATE_EARRAY:
		return "array";
	}
	return "invalid";
}
