/* test_csvmap.c — header checks and header -> attribute mapping. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "csvmap.h"

static struct cfg_attr attrs[] = {
	{(char[]){"first_name"}, ATTR_STRING},
	{(char[]){"vip"}, ATTR_BOOLEAN},
};
static struct cfg_project project = {.name = (char[]){"main"}, .attrs = attrs, .n_attrs = 2};
static struct cfg_column columns[4];
static struct cfg_job job;

static int setup(void **state)
{
	memset(&job, 0, sizeof(job));
	job.project = &project;
	job.mapping.auto_map = true;
	job.mapping.columns = columns;
	job.mapping.n_columns = 0;
	return 0;
}

/* names separated by '|' */
static int build(const char *header, struct csvmap **m, char *err, size_t errlen)
{
	static char buf[512];
	const char *names[32];
	size_t lens[32], n = 0;
	strcpy(buf, header);
	char *p = buf;
	for (;;) {
		char *bar = strchr(p, '|');
		names[n] = p;
		lens[n] = bar ? (size_t)(bar - p) : strlen(p);
		n++;
		if (!bar)
			break;
		*bar = '\0';
		p = bar + 1;
	}
	err[0] = '\0';
	return csvmap_build(&job, names, lens, n, m, err, errlen);
}

static void expect_error(const char *header, const char *msg)
{
	struct csvmap *m;
	char err[512];
	assert_int_equal(build(header, &m, err, sizeof(err)), -EINVAL);
	assert_null(m);
	assert_string_equal(err, msg);
}

static void test_auto_map_order_and_ignored(void **state)
{
	struct csvmap *m;
	char err[512];
	assert_int_equal(build("email| user_id |Internal|first_name|email_subscription|vip", &m, err,
			       sizeof(err)),
			 0);
	assert_int_equal(m->n_columns, 6);
	assert_string_equal(m->headers[1], "user_id");
	assert_int_equal(m->n_attrs, 5);
	/* user_id first, then header order */
	const char *want[] = {"user_id", "email", "first_name", "email_subscription", "vip"};
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(m->attr_names[i], want[i]);
	assert_int_equal(m->attr_types[0], ATTR_SYS_USER_ID);
	assert_int_equal(m->attr_types[4], ATTR_BOOLEAN);
	assert_int_equal(m->attr_col[0], 1);
	assert_int_equal(m->col_attr[2], -1);
	assert_int_equal(m->n_ignored, 1);
	assert_string_equal(m->ignored[0], "Internal");
	assert_int_equal(m->email, 1);
	assert_int_equal(m->email_subscription, 3);
	assert_int_equal(m->mobile_number, -1);
	csvmap_free(m);
}

static void test_explicit_columns_win_and_skip(void **state)
{
	struct csvmap *m;
	char err[512];
	columns[0] = (struct cfg_column){.header = (char[]){"E-mail"}, .attr = (char[]){"email"}};
	columns[1] = (struct cfg_column){.header = (char[]){"first_name"}, .attr = NULL}; /* skip */
	columns[2] = (struct cfg_column){.header = (char[]){"ID"}, .attr = (char[]){"user_id"}};
	columns[3] = (struct cfg_column){.header = (char[]){"Opt"}, .attr = (char[]){"email_subscription"}};
	job.mapping.n_columns = 4;
	assert_int_equal(build("ID|E-mail|first_name|Opt", &m, err, sizeof(err)), 0);
	assert_int_equal(m->n_attrs, 3);
	assert_string_equal(m->attr_names[0], "user_id");
	assert_string_equal(m->attr_names[1], "email");
	assert_string_equal(m->attr_names[2], "email_subscription");
	/* `skip` is the operator's own decision: not imported, not reported as unmapped */
	assert_int_equal(m->n_ignored, 0);
	assert_int_equal(m->col_attr[2], -1);
	csvmap_free(m);
}

static void test_auto_off(void **state)
{
	struct csvmap *m;
	char err[512];
	job.mapping.auto_map = false;
	columns[0] = (struct cfg_column){.header = (char[]){"user_id"}, .attr = (char[]){"user_id"}};
	job.mapping.n_columns = 1;
	assert_int_equal(build("user_id|first_name", &m, err, sizeof(err)), 0);
	assert_int_equal(m->n_attrs, 1);
	assert_int_equal(m->n_ignored, 1);
	csvmap_free(m);
}

static void test_custom_attr_unknown_to_project_not_mapped(void **state)
{
	struct csvmap *m;
	char err[512];
	assert_int_equal(build("user_id|loyalty_tier", &m, err, sizeof(err)), 0);
	assert_int_equal(m->n_attrs, 1);
	assert_string_equal(m->ignored[0], "loyalty_tier");
	csvmap_free(m);
}

static void test_header_errors(void **state)
{
	expect_error("user_id|email| |x", "column 3 has an empty header");
	expect_error("user_id||x", "column 2 has an empty header");
	expect_error("user_id|email|a|b| email", "column 5 'email' duplicates column 2");
	expect_error("id|email|email_subscription",
		     "no column maps to user_id (header: id,email,email_subscription)");
	expect_error("user_id|bad\xff", "invalid UTF-8 in the header of column 2");
}

static void test_two_headers_same_attr(void **state)
{
	columns[0] = (struct cfg_column){.header = (char[]){"E-mail"}, .attr = (char[]){"email"}};
	job.mapping.n_columns = 1;
	expect_error("user_id|email|E-mail|email_subscription",
		     "columns 2 'email' and 3 'E-mail' both map to email");
}

static void test_target_not_in_project(void **state)
{
	columns[0] = (struct cfg_column){.header = (char[]){"Tier"}, .attr = (char[]){"loyalty_tier"}};
	job.mapping.n_columns = 1;
	expect_error("user_id|Tier",
		     "column 2 'Tier' maps to 'loyalty_tier', which is not an attribute of project 'main'");
}

static void test_pairs(void **state)
{
	expect_error("user_id|email", "column 2 'email' maps to email but no column maps to email_subscription");
	expect_error("user_id|mobile_number|first_name",
		     "column 2 'mobile_number' maps to mobile_number but no column maps to sms_subscription");
	expect_error("user_id|whatsapp_number",
		     "column 2 'whatsapp_number' maps to whatsapp_number but no column maps to "
		     "whatsapp_subscription");
	/* the subscription alone is fine */
	struct csvmap *m;
	char err[512];
	assert_int_equal(build("user_id|sms_subscription", &m, err, sizeof(err)), 0);
	csvmap_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_auto_map_order_and_ignored, setup),
		cmocka_unit_test_setup(test_explicit_columns_win_and_skip, setup),
		cmocka_unit_test_setup(test_auto_off, setup),
		cmocka_unit_test_setup(test_custom_attr_unknown_to_project_not_mapped, setup),
		cmocka_unit_test_setup(test_header_errors, setup),
		cmocka_unit_test_setup(test_two_headers_same_attr, setup),
		cmocka_unit_test_setup(test_target_not_in_project, setup),
		cmocka_unit_test_setup(test_pairs, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
