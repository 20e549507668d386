/* attr.c — the attribute vocabulary: system attributes (reserved names,
 * xtremepush-api.md "Attributes") and the custom attribute types. */
#include <string.h>

#include "config.h"

static const struct {
	const char *name;
	enum attr_type type;
} system_attrs[] = {
	{"user_id", ATTR_SYS_USER_ID},
	{"email", ATTR_SYS_EMAIL},
	{"email_subscription", ATTR_SYS_EMAIL_SUBSCRIPTION},
	{"mobile_number", ATTR_SYS_MOBILE_NUMBER},
	{"sms_subscription", ATTR_SYS_SMS_SUBSCRIPTION},
	{"language", ATTR_SYS_LANGUAGE},
	{"timezone", ATTR_SYS_TIMEZONE},
	{"whatsapp_number", ATTR_SYS_WHATSAPP_NUMBER},
	{"whatsapp_subscription", ATTR_SYS_WHATSAPP_SUBSCRIPTION},
};

static const char *const type_names[] = {
	[ATTR_STRING] = "string",
	[ATTR_NUMBER] = "number",
	[ATTR_INTEGER] = "integer",
	[ATTR_DATE] = "date",
	[ATTR_BOOLEAN] = "boolean",
	[ATTR_ARRAY] = "array",
};

bool cfg_system_attr(const char *name, enum attr_type *type)
{
	for (size_t i = 0; i < sizeof(system_attrs) / sizeof(system_attrs[0]); i++) {
		if (strcmp(system_attrs[i].name, name) == 0) {
			if (type)
				*type = system_attrs[i].type;
			return true;
		}
	}
	return false;
}

bool cfg_attr_type_from_name(const char *name, enum attr_type *type)
{
	for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
		if (strcmp(type_names[i], name) == 0) {
			*type = (enum attr_type)i;
			return true;
		}
	}
	return false;
}

const char *cfg_attr_type_name(enum attr_type type)
{
	if ((size_t)type < sizeof(type_names) / sizeof(type_names[0]))
		return type_names[type];
	for (size_t i = 0; i < sizeof(system_attrs) / sizeof(system_attrs[0]); i++)
		if (system_attrs[i].type == type)
			return system_attrs[i].name;
	return "unknown";
}

bool cfg_project_attr(const struct cfg_project *p, const char *name, enum attr_type *type)
{
	if (cfg_system_attr(name, type))
		return true;
	for (size_t i = 0; p && i < p->n_attrs; i++) {
		if (strcmp(p->attrs[i].name, name) == 0) {
			if (type)
				*type = p->attrs[i].type;
			return true;
		}
	}
	return false;
}
