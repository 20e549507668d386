/* xpimportctl — the operator's tool for xpimportd: status, history and run
 * details, "run now", one-off uploads, manual profiles, host keys, and the
 * ledger and job-state edits. Usable whether the daemon runs or not. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "control.h"
#include "ctl_common.h"
#include "log.h"
#include "util.h"

enum opt_bit {
	O_JSON = 1 << 0,
	O_LIMIT = 1 << 1,
	O_WAIT = 1 << 2,
	O_JOB = 1 << 3,
	O_DRY_RUN = 1 << 4,
	O_QUIET = 1 << 5,
	O_PROJECT = 1 << 6,
	O_COUNTRY = 1 << 7,
	O_YES = 1 << 8,
};

struct command {
	const char *name;
	int (*fn)(struct ctl *c);
	unsigned opts;
	int min_args, max_args; /* max -1: any number */
	const char *synopsis;
	const char *help;
};

static const struct command commands[] = {
    {"status", ctl_cmd_status, O_JSON, 0, 0, "status [--json]",
     "Each job: enabled, schedule, next run (from the running daemon), last run and its\n"
     "outcome, files waiting and why, and whether it is paused for authentication.\n"},
    {"history", ctl_cmd_history, O_JSON | O_LIMIT, 0, 1, "history [JOB] [--limit N] [--json]",
     "Past runs, newest first (default: the last 20 of every job; _manual holds the\n"
     "create-profile runs).\n"
     "  --limit N      show at most N runs (1-10000)\n"},
    {"show", ctl_cmd_show, O_JSON, 1, 1, "show RUN_ID [--json]",
     "One run in full: files, counts, batches with HTTP status, attempts and task ids,\n"
     "errors, the reject report and its first rejected rows.\n"},
    {"run", ctl_cmd_run, O_JSON | O_WAIT, 1, 1, "run JOB [--wait] [--json]",
     "Ask the running daemon to run JOB now (the UI's \"Run now\").\n"
     "  --wait         wait for the run to finish and print its outcome; exit 1 if it\n"
     "                 did not succeed\n"},
    {"import", ctl_cmd_import, O_JSON | O_JOB | O_DRY_RUN | O_QUIET, 1, 1,
     "import --job JOB [--dry-run] [--quiet] [--json] FILE",
     "Import a local CSV file once with JOB's mapping, validation, error budget and\n"
     "batching (the UI's \"Upload\"), recorded as a run with trigger 'upload'. Runs here\n"
     "when the daemon is stopped and inside the daemon when it runs.\n"
     "  --job JOB      the job whose rules apply (required)\n"
     "  --dry-run      parse, map and validate, print what would be posted; post and\n"
     "                 record nothing\n"
     "  -q, --quiet    no progress on stderr (shown only on a terminal anyway)\n"},
    {"create-profile", ctl_cmd_create_profile, O_JSON | O_PROJECT | O_COUNTRY, 1, -1,
     "create-profile --project NAME [--country-code N] [--json] ATTR=VALUE...",
     "Create or update one profile (the UI's \"Create User Profile\"): user_id is\n"
     "required, every other attribute optional; validated by the pipeline's rules and\n"
     "posted as a one-row import, recorded as a run with trigger 'manual'.\n"
     "  --project NAME     the project (required)\n"
     "  --country-code N   country calling code for national mobile numbers (default:\n"
     "                     the project's default_country_code)\n"},
    {"trust", ctl_cmd_trust, O_JSON | O_YES, 1, 1, "trust SITE [--yes] [--json]",
     "Connect to SITE, show its host key type and SHA256 fingerprint and, once\n"
     "confirmed, append it to the site's known_hosts_file.\n"
     "  -y, --yes      do not ask (after checking the fingerprint with the partner)\n"},
    {"forget", ctl_cmd_forget, 0, 2, 2, "forget JOB FILE",
     "Let an imported (or failed) file be imported again. FILE is its path as the job\n"
     "saw it (remote path, or the local path of an upload) or a unique base name.\n"
     "Recorded in the job's history with who and when.\n"},
    {"resume", ctl_cmd_resume, 0, 1, 1, "resume JOB",
     "Resume a job paused because the API refused its apptoken (after fixing it).\n"
     "Recorded in the job's history with who and when.\n"},
};

static const char common_help[] =
    "Common options:\n"
    "  -c, --config FILE       configuration (default " CTL_DEFAULT_CONFIG ")\n"
    "  -S, --state-dir DIR     state directory (default $STATE_DIRECTORY, else\n"
    "                          " CTL_DEFAULT_STATE ")\n"
    "  -R, --runtime-dir DIR   directory of the daemon's control socket (default\n"
    "                          $RUNTIME_DIRECTORY, else " CONTROL_DEFAULT_RUNTIME_DIR ")\n"
    "      --json              machine-readable output (see xpimportctl(1))\n"
    "  -h, --help              help\n";

static const char exit_help[] =
    "Exit status: 0 ok, 1 the operation failed (run failed, validation failed, API\n"
    "refused), 2 usage, 3 configuration invalid, 4 daemon not reachable or state\n"
    "directory locked, 5 not found (job, run, site, project, file).\n";

static void usage(FILE *out)
{
	fprintf(out, "Usage: xpimportctl [OPTIONS] COMMAND [ARGS]\n"
	             "The operator's tool for xpimportd.\n\nCommands:\n");
	for (size_t i = 0; i < XP_ARRAY_SIZE(commands); i++)
		fprintf(out, "  %s\n", commands[i].synopsis);
	fprintf(out,
	        "\n%s      --version           print the version\n\n%s"
	        "'xpimportctl COMMAND --help' describes a command; see xpimportctl(1).\n",
	        common_help, exit_help);
}

static void command_usage(const struct command *cmd, FILE *out)
{
	fprintf(out, "Usage: xpimportctl %s\n\n%s\n%s\n%s", cmd->synopsis, cmd->help, common_help,
	        exit_help);
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < XP_ARRAY_SIZE(commands); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

enum {
	OPT_JSON = 256,
	OPT_LIMIT,
	OPT_WAIT,
	OPT_JOB,
	OPT_DRY_RUN,
	OPT_PROJECT,
	OPT_COUNTRY,
	OPT_VERSION,
};

static const struct option longopts[] = {
    {"config", required_argument, NULL, 'c'},
    {"state-dir", required_argument, NULL, 'S'},
    {"runtime-dir", required_argument, NULL, 'R'},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"wait", no_argument, NULL, OPT_WAIT},
    {"job", required_argument, NULL, OPT_JOB},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"quiet", no_argument, NULL, 'q'},
    {"project", required_argument, NULL, OPT_PROJECT},
    {"country-code", required_argument, NULL, OPT_COUNTRY},
    {"yes", no_argument, NULL, 'y'},
    {NULL, 0, NULL, 0},
};

static const char *option_name(int opt)
{
	for (const struct option *o = longopts; o->name; o++)
		if (o->val == opt)
			return o->name;
	return "?";
}

/* Parse options of argv (after the command when cmd is set). Returns -1 to
 * go on, else an exit status. Positional arguments are left in
 * argv[optind..]. */
static int parse_options(struct ctl *c, const struct command *cmd, int argc, char **argv)
{
	int opt;
	uint64_t v;

	optind = 0; /* GNU: reinitialise, argv changed */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, cmd ? ":c:S:R:hqy" : "+:c:S:R:h", longopts, NULL)) !=
	       -1) {
		unsigned bit = 0;
		switch (opt) {
		case 'c':
			c->config_path = optarg;
			continue;
		case 'S':
			c->state_dir = optarg;
			continue;
		case 'R':
			c->runtime_dir = optarg;
			continue;
		case 'h':
			if (cmd)
				command_usage(cmd, stdout);
			else
				usage(stdout);
			return CTL_EXIT_OK;
		case OPT_VERSION:
			printf("xpimportctl %s\n", XP_VERSION);
			return CTL_EXIT_OK;
		case '?':
		case ':': {
			char shortname[3] = {'-', (char)optopt, '\0'};
			const char *what =
			    optopt > 0 && optopt < 256 ? shortname : argv[optind - 1];
			ctl_err("%s %s%s%s; see 'xpimportctl %s%s--help'",
			        opt == ':' ? "option" : "unknown option", what,
			        opt == ':' ? " needs a value" : "",
			        cmd ? "" : " before the command", cmd ? cmd->name : "",
			        cmd ? " " : "");
			return CTL_EXIT_USAGE;
		}
		case OPT_JSON:
			bit = O_JSON;
			c->json = true;
			break;
		case OPT_LIMIT:
			bit = O_LIMIT;
			if (util_parse_uint(optarg, 1, 10000, &v) < 0) {
				ctl_err("--limit wants a number from 1 to 10000, not '%s'", optarg);
				return CTL_EXIT_USAGE;
			}
			c->limit = v;
			break;
		case OPT_WAIT:
			bit = O_WAIT;
			c->wait = true;
			break;
		case OPT_JOB:
			bit = O_JOB;
			c->job = optarg;
			break;
		case OPT_DRY_RUN:
			bit = O_DRY_RUN;
			c->dry_run = true;
			break;
		case 'q':
			bit = O_QUIET;
			c->quiet = true;
			break;
		case OPT_PROJECT:
			bit = O_PROJECT;
			c->project = optarg;
			break;
		case OPT_COUNTRY:
			bit = O_COUNTRY;
			if (util_parse_uint(optarg, 1, 999, &v) < 0) {
				ctl_err(
				    "--country-code wants a calling code from 1 to 999 (e.g. 353), "
				    "not '%s'",
				    optarg);
				return CTL_EXIT_USAGE;
			}
			c->country_code = (int)v;
			break;
		case 'y':
			bit = O_YES;
			c->yes = true;
			break;
		default:
			return CTL_EXIT_USAGE;
		}
		if (!cmd || !(cmd->opts & bit)) {
			ctl_err("--%s does not apply %s%s; see 'xpimportctl %s%s--help'",
			        option_name(opt), cmd ? "to " : "before a command",
			        cmd ? cmd->name : "", cmd ? cmd->name : "", cmd ? " " : "");
			return CTL_EXIT_USAGE;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct ctl c = {.config_path = CTL_DEFAULT_CONFIG, .limit = 20};
	int ex;

	c.state_dir = getenv("STATE_DIRECTORY");
	if (c.state_dir && strchr(c.state_dir, ':'))
		c.state_dir = NULL;
	if (!c.state_dir || !*c.state_dir)
		c.state_dir = CTL_DEFAULT_STATE;
	log_init("xpimportctl", 0);

	ex = parse_options(&c, NULL, argc, argv);
	if (ex >= 0)
		return ex;
	if (optind >= argc) {
		usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (strcmp(argv[optind], "help") == 0) {
		const struct command *hc =
		    optind + 1 < argc ? find_command(argv[optind + 1]) : NULL;
		if (hc)
			command_usage(hc, stdout);
		else
			usage(stdout);
		return CTL_EXIT_OK;
	}
	const struct command *cmd = find_command(argv[optind]);
	if (!cmd) {
		ctl_err("unknown command '%s'; 'xpimportctl --help' lists the commands",
		        argv[optind]);
		return CTL_EXIT_USAGE;
	}
	int sub_argc = argc - optind;
	char **sub_argv = argv + optind;
	ex = parse_options(&c, cmd, sub_argc, sub_argv);
	if (ex >= 0)
		return ex;
	c.argc = sub_argc - optind;
	c.argv = sub_argv + optind;
	if (c.argc < cmd->min_args || (cmd->max_args >= 0 && c.argc > cmd->max_args)) {
		ctl_err("%s %s; usage: xpimportctl %s", cmd->name,
		        c.argc < cmd->min_args ? "needs more arguments" : "has too many arguments",
		        cmd->synopsis);
		return CTL_EXIT_USAGE;
	}
	if (control_socket_path(c.runtime_dir, c.socket_path, sizeof(c.socket_path)) < 0) {
		ctl_err("the runtime directory path is too long for a unix socket; use a shorter "
		        "--runtime-dir");
		return CTL_EXIT_USAGE;
	}
	ex = cmd->fn(&c);
	cfg_free(c.cfg);
	uv_library_shutdown(); /* joins the thread pool of import runs; frees its OpenSSL state */
	if (fflush(stdout) != 0 && ex == CTL_EXIT_OK) {
		fprintf(stderr, "xpimportctl: cannot write the output: %s\n", strerror(errno));
		ex = CTL_EXIT_FAILED;
	}
	return ex;
}
