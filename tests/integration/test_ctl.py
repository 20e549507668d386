"""xpimportctl through the real binaries: status/history/show (--json parsed), import
with and without the daemon, create-profile, trust, forget, resume, run, and the exit
statuses and one-line errors of xpimportctl(1).

Every xpimportctl and xpimportd here gets RUNTIME_DIRECTORY=TMP/run, so the control
socket is TMP/run/control.sock and /run/xpimportd is never touched."""

import json
import os
import re
import stat
import time
from pathlib import Path

import pytest

import harness

RUN_ID = re.compile(r"\b(\d{8}T\d{6}Z-[0-9a-f]{6})\b")
PROFILES_CSV = "user_id,email,email_subscription,first_name\n" \
               "u1,u1@example.com,1,Ann\nu2,u2@example.com,1,Bob\nu3,u3@example.com,0,Cy\n"


@pytest.fixture
def runtime_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o755)
    return str(d)


@pytest.fixture
def ctl(runtime_dir, state_dir):
    """ctl(cfg, *args, env=None, input=None) -> CompletedProcess of
    xpimportctl -c CFG -S STATE ARGS with RUNTIME_DIRECTORY set."""
    def run(cfg, *args, env=None, input=None, timeout=60):
        e = {"RUNTIME_DIRECTORY": runtime_dir, "SUDO_USER": "operator-test"}
        e.update(env or {})
        return harness.run_xpimportctl(["-c", cfg, "-S", state_dir, *args], env=e, input=input,
                                       timeout=timeout)
    return run


def ctl_json(ctl, cfg, *args):
    r = ctl(cfg, *args, "--json")
    assert r.returncode == 0, f"xpimportctl {' '.join(args)} --json: {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


def one_error_line(r):
    lines = [l for l in r.stderr.splitlines() if l.startswith("xpimportctl: ")]
    assert len(lines) == 1, f"expected one error line, got: {r.stderr!r}"
    return lines[0]


def run_id_of(r):
    m = RUN_ID.search(r.stdout)
    assert m, f"no run id in {r.stdout!r}"
    return m.group(1)


def read_json(path):
    return json.loads(Path(path).read_text())


def start_daemon(daemons, cfg, state_dir, runtime_dir):
    d = daemons(["-c", cfg, "-S", state_dir], env={"RUNTIME_DIRECTORY": runtime_dir})
    sock = Path(runtime_dir) / "control.sock"
    try:
        harness.wait_for(lambda: sock.exists(), timeout=15,
                         what=f"the daemon's control socket {sock}")
    except harness.HarnessError:
        raise AssertionError(f"xpimportd did not create {sock} (daemon.c must call "
                             f"control_server_start):\n{d.log()[-2000:]}")
    return d


# ---------------------------------------------------------------------------------------
# usage and errors
# ---------------------------------------------------------------------------------------

def test_help_version_and_usage_errors(xpconfig, ctl):
    cfg = xpconfig()
    r = harness.run_xpimportctl(["--help"])
    assert r.returncode == 0
    for cmd in ("status", "history", "show", "run", "import", "create-profile", "trust",
                "forget", "resume"):
        assert f"\n  {cmd}" in r.stdout, cmd
    assert "Exit status: 0 ok, 1 the operation failed" in r.stdout
    r = harness.run_xpimportctl(["import", "--help"])
    assert r.returncode == 0 and "Usage: xpimportctl import --job JOB [--dry-run]" in r.stdout
    r = harness.run_xpimportctl(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("xpimportctl ")

    r = ctl(cfg, "status", "--wait")
    assert r.returncode == 2
    assert one_error_line(r) == ("xpimportctl: --wait does not apply to status; "
                                 "see 'xpimportctl status --help'")
    r = ctl(cfg, "frobnicate")
    assert r.returncode == 2
    assert "unknown command 'frobnicate'" in one_error_line(r)
    r = ctl(cfg, "show")
    assert r.returncode == 2
    assert one_error_line(r) == ("xpimportctl: show needs more arguments; usage: "
                                 "xpimportctl show RUN_ID [--json]")
    r = ctl(cfg, "history", "--limit", "0")
    assert r.returncode == 2 and "--limit wants a number from 1 to 10000, not '0'" in r.stderr
    r = ctl(cfg, "import", "x.csv")
    assert r.returncode == 2 and "import needs --job JOB" in r.stderr


def test_not_found_and_config_errors(xpconfig, ctl, tmp_path):
    cfg = xpconfig()
    r = ctl(cfg, "show", "20261203T182000Z-3fa9c1")
    assert r.returncode == 5 and "no run 20261203T182000Z-3fa9c1 in " in one_error_line(r)
    r = ctl(cfg, "show", "../../etc/passwd")
    assert r.returncode == 2 and "is not a run id" in r.stderr
    r = ctl(cfg, "history", "nosuchjob")
    assert r.returncode == 5 and "no job named 'nosuchjob'" in r.stderr
    r = ctl(cfg, "import", "--job", "nosuchjob", str(tmp_path / "x.csv"))
    assert r.returncode == 5
    assert one_error_line(r).startswith("xpimportctl: no job named 'nosuchjob' in ")
    r = ctl(cfg, "import", "--job", "crm-daily", str(tmp_path / "missing.csv"))
    assert r.returncode == 5
    assert one_error_line(r) == (f"xpimportctl: cannot import {tmp_path / 'missing.csv'}: "
                                 "No such file or directory")
    r = ctl(cfg, "create-profile", "--project", "nope", "user_id=u1")
    assert r.returncode == 5 and "no project named 'nope'" in r.stderr
    r = ctl(cfg, "trust", "nosite", "--yes")
    assert r.returncode == 5 and "no site named 'nosite'" in r.stderr
    r = ctl(cfg, "resume", "nosuchjob")
    assert r.returncode == 5
    # an invalid configuration: exit 3, its errors as FILE:LINE:COL, and what to do
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs_directory: jobs.d\nbogus_key: 1\n")
    r = ctl(str(bad), "status")
    assert r.returncode == 3
    assert re.search(r"bad\.yaml:\d+:\d+: ", r.stderr), r.stderr
    assert "fix it and check it with 'xpimportd -n -c " in r.stderr
    r = ctl(str(tmp_path / "none.yaml"), "status")
    assert r.returncode == 3
    assert one_error_line(r) == (f"xpimportctl: no configuration at {tmp_path / 'none.yaml'}; "
                                 "give its path with -c FILE")


def test_run_without_daemon_says_what_to_do(xpconfig, ctl, runtime_dir):
    cfg = xpconfig()
    r = ctl(cfg, "run", "crm-daily")
    assert r.returncode == 4
    assert one_error_line(r) == (
        f"xpimportctl: the daemon is not running (no socket at {runtime_dir}/control.sock); "
        "start it with 'systemctl start xpimportd', or run the job once without it: "
        "'xpimportd --once --job crm-daily'")
    r = ctl(cfg, "run", "nosuchjob")
    assert r.returncode == 5


# ---------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------

def test_status_without_daemon(xpconfig, ctl, state_dir, runtime_dir):
    cfg = xpconfig({"crm-daily": {},
                    "weekday": {"enabled": False,
                                "schedule": {"every": None, "cron": "0 6 * * 1-5",
                                             "timezone": "Europe/Dublin"}}})
    doc = ctl_json(ctl, cfg, "status")
    assert doc["daemon"]["running"] is False
    assert doc["daemon"]["socket"] == f"{runtime_dir}/control.sock"
    assert doc["daemon"]["error"].startswith("not running (no socket at ")
    jobs = {j["name"]: j for j in doc["jobs"]}
    assert set(jobs) == {"crm-daily", "weekday"}
    j = jobs["crm-daily"]
    assert j["enabled"] is True and j["project"] == "main" and j["site"] == "partner-a"
    assert j["schedule"] == {"every": "15m", "cron": None, "timezone": "UTC"}
    assert j["next_run"] is None and j["running"] is None and j["last_run"] is None
    assert j["waiting"] == [] and j["paused"] is None
    w = jobs["weekday"]
    assert w["enabled"] is False
    assert w["schedule"] == {"every": None, "cron": "0 6 * * 1-5", "timezone": "Europe/Dublin"}

    r = ctl(cfg, "status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("daemon: not running (no socket at ")
    header = next(l for l in lines if l.startswith("JOB"))
    assert re.match(r"JOB +ENABLED +SCHEDULE +NEXT RUN +LAST RUN +OUTCOME +WAITING +PAUSED$",
                    header), header
    row = next(l for l in lines if l.startswith("weekday "))
    # aligned: every column starts where its header does
    assert row.index("no") == header.index("ENABLED")
    assert row.index("cron '0 6 * * 1-5' Europe/Dublin") == header.index("SCHEDULE")


def test_status_shows_waiting_files_and_last_run(xpconfig, ctl, csv_drop, state_dir):
    cfg = xpconfig({"crm-daily": {"source": {"settle": "1h"}}})
    csv_drop("profiles_1.csv", PROFILES_CSV)
    r = harness.run_xpimportd(["-c", cfg, "-S", state_dir, "--once"])
    assert r.returncode == 0, r.stderr
    doc = ctl_json(ctl, cfg, "status")
    j = doc["jobs"][0]
    assert j["last_run"]["outcome"] == "succeeded"
    assert RUN_ID.fullmatch(j["last_run"]["run_id"])
    assert len(j["waiting"]) == 1
    assert j["waiting"][0]["path"].endswith("/outgoing/profiles_1.csv")
    assert j["waiting"][0]["reason"].startswith("settling")
    r = ctl(cfg, "status")
    assert f"crm-daily: waiting: {j['waiting'][0]['path']}: settling" in r.stdout


# ---------------------------------------------------------------------------------------
# import, history, show, forget
# ---------------------------------------------------------------------------------------

def test_import_without_daemon_then_forget_and_reimport(xpconfig, ctl, fakeapi, tmp_path,
                                                        state_dir):
    cfg = xpconfig()
    f = tmp_path / "upload.csv"
    f.write_text(PROFILES_CSV)
    r = ctl(cfg, "import", "--job", "crm-daily", str(f))
    assert r.returncode == 0, r.stderr
    assert re.match(r"crm-daily: run \S+ succeeded: 1 file imported", r.stdout), r.stdout
    rid = run_id_of(r)
    assert "\r" not in r.stderr          # no progress: stderr is not a terminal
    assert fakeapi.token not in r.stdout + r.stderr
    posted = fakeapi.imports()
    assert sum(len(x["rows"]) for x in posted) == 3
    assert set(fakeapi.profiles()) == {"u1", "u2", "u3"}

    rec = read_json(Path(state_dir) / "runs" / "crm-daily" / f"{rid}.json")
    assert rec["trigger"] == "upload" and rec["site"] == "upload"
    assert rec["files"][0]["path"] == str(f) and rec["outcome"] == "succeeded"

    hist = ctl_json(ctl, cfg, "history")
    assert [h["run_id"] for h in hist["runs"]] == [rid]
    h = hist["runs"][0]
    assert h["job"] == "crm-daily" and h["trigger"] == "upload" and h["outcome"] == "succeeded"
    assert h["counts"]["rows_posted"] == 3 and h["counts"]["files_imported"] == 1
    assert ctl_json(ctl, cfg, "history", "crm-daily")["runs"][0]["run_id"] == rid
    r = ctl(cfg, "history")
    assert re.search(rf"^{rid} +crm-daily +upload +\S+ +succeeded +1/1 +3 +0$", r.stdout, re.M), \
        r.stdout

    show = ctl_json(ctl, cfg, "show", rid)
    assert show["run_id"] == rid and show["counts"]["rows_read"] == 3
    b = show["files"][0]["batches"]
    assert len(b) == 1 and b[0]["status"] in (200, 202) and b[0]["attempts"] == 1
    r = ctl(cfg, "show", rid)
    assert r.returncode == 0
    assert f"run       {rid}" in r.stdout and "outcome   succeeded" in r.stdout
    assert re.search(r"BATCH +ROWS +HTTP +ATTEMPTS +TASK", r.stdout)

    # the same file again: the ledger knows it
    r = ctl(cfg, "import", "--job", "crm-daily", str(f))
    assert r.returncode == 1
    assert one_error_line(r) == (
        f"xpimportctl: {f} was already imported by run {rid}; "
        f"'xpimportctl forget crm-daily {f}' lets it be imported again")
    assert len(fakeapi.imports()) == len(posted)

    r = ctl(cfg, "forget", "crm-daily", "upload.csv")   # a unique base name is enough
    assert r.returncode == 0, r.stderr
    assert f"crm-daily: forgot {f};" in r.stdout
    js = read_json(Path(state_dir) / "jobs" / "crm-daily.json")
    assert js["history"][-1]["action"] == "forget"
    assert js["history"][-1]["who"] == "operator-test"
    assert js["history"][-1]["file"] == str(f)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", js["history"][-1]["when"])

    r = ctl(cfg, "import", "--job", "crm-daily", str(f))
    assert r.returncode == 0, r.stderr
    assert sum(len(x["rows"]) for x in fakeapi.imports()) == 6
    r = ctl(cfg, "forget", "crm-daily", "/no/such.csv")
    assert r.returncode == 5
    assert one_error_line(r) == ("xpimportctl: job crm-daily has no record of /no/such.csv; "
                                 "'xpimportctl history crm-daily' shows what it imported")


def test_import_with_rejects_show_first_rejected_rows(xpconfig, ctl, fakeapi, tmp_path):
    cfg = xpconfig({"crm-daily": {"validation": {"max_invalid_rows": 10}}})
    f = tmp_path / "mixed.csv"
    f.write_text("user_id,email,email_subscription\n"
                 "u1,u1@example.com,1\n"
                 "u2,not-an-email,1\n"
                 "u3,u3@example.com,7\n")
    r = ctl(cfg, "import", "--job", "crm-daily", str(f))
    assert r.returncode == 0, r.stderr
    rid = run_id_of(r)
    show = ctl_json(ctl, cfg, "show", rid)
    fe = show["files"][0]
    assert fe["rows_rejected"] == 2 and fe["rows_posted"] == 1
    assert fe["reject_report"] and os.path.exists(fe["reject_report"])
    rows = fe["rejected_rows"]
    assert [(x["line"], x["column"], x["value"]) for x in rows] == \
        [(3, "email", "not-an-email"), (4, "email_subscription", "7")]
    assert all(x["rule"] for x in rows)
    r = ctl(cfg, "show", rid)
    assert f"  reject report {fe['reject_report']}" in r.stdout
    assert re.search(r"LINE +COLUMN +RULE +VALUE\n +3 +email +\S+ +not-an-email", r.stdout), \
        r.stdout


def test_import_over_budget_fails_with_exit_1(xpconfig, ctl, fakeapi, tmp_path):
    cfg = xpconfig({"crm-daily": {"validation": {"max_invalid_rows": 0}}})
    f = tmp_path / "bad.csv"
    f.write_text("user_id,email,email_subscription\nu1,nope,1\n")
    r = ctl(cfg, "import", "--job", "crm-daily", str(f))
    assert r.returncode == 1
    rid = run_id_of(r)
    assert f"details: 'xpimportctl show {rid}'" in one_error_line(r)
    assert fakeapi.imports() == []


def test_import_dry_run_records_nothing(xpconfig, ctl, fakeapi, tmp_path, state_dir):
    cfg = xpconfig()
    f = tmp_path / "upload.csv"
    f.write_text(PROFILES_CSV)
    r = ctl(cfg, "import", "--job", "crm-daily", "--dry-run", "--quiet", str(f))
    assert r.returncode == 0, r.stderr
    assert "rows read 3, valid 3, rejected 0" in r.stdout
    assert "dry run: nothing posted" in r.stdout
    assert fakeapi.imports() == []
    assert not (Path(state_dir) / "runs" / "crm-daily").exists()
    assert not (Path(state_dir) / "ledger" / "crm-daily.log").exists()
    assert ctl_json(ctl, cfg, "history")["runs"] == []


def test_import_paused_job_then_resume(xpconfig, ctl, fakeapi, tmp_path, state_dir):
    wrong = harness.write_secret(tmp_path / "wrong.apptoken", "xp-wrong-token\n")
    cfg = xpconfig(projects_extra={"main": {"apptoken_file": str(wrong)}})
    f = tmp_path / "upload.csv"
    f.write_text(PROFILES_CSV)
    r = ctl(cfg, "import", "--job", "crm-daily", str(f))
    assert r.returncode == 1
    assert "xp-wrong-token" not in r.stdout + r.stderr
    doc = ctl_json(ctl, cfg, "status")
    paused = doc["jobs"][0]["paused"]
    assert paused["reason"] == "authentication failed" and paused["http_status"] == 401
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", paused["since"])
    r = ctl(cfg, "status")
    assert "crm-daily: paused since " in r.stdout and "'xpimportctl resume crm-daily'" in r.stdout

    cfg = xpconfig()                       # the apptoken is fixed
    g = tmp_path / "upload2.csv"
    g.write_text(PROFILES_CSV.replace("u1", "u9"))
    r = ctl(cfg, "import", "--job", "crm-daily", str(g))
    assert r.returncode == 1
    assert one_error_line(r).startswith("xpimportctl: job crm-daily is paused since the API "
                                        "refused its apptoken")
    r = ctl(cfg, "resume", "crm-daily")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("crm-daily: resumed;")
    js = read_json(Path(state_dir) / "jobs" / "crm-daily.json")
    assert "paused" not in js
    assert js["history"][-1]["action"] == "resume" and js["history"][-1]["who"] == "operator-test"
    r = ctl(cfg, "resume", "crm-daily")
    assert r.returncode == 0 and r.stdout == "crm-daily: was not paused; nothing to do\n"
    r = ctl(cfg, "import", "--job", "crm-daily", str(g))
    assert r.returncode == 0, r.stderr
    assert "u9" in fakeapi.profiles()


# ---------------------------------------------------------------------------------------
# create-profile
# ---------------------------------------------------------------------------------------

def test_create_profile_normalises_national_mobile(xpconfig, ctl, fakeapi, state_dir):
    cfg = xpconfig()
    r = ctl(cfg, "create-profile", "--project", "main", "--country-code", "353",
            "user_id=u-cp1", "mobile_number=0850123456", "sms_subscription=1",
            "first_name=Siobhán")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^  mobile_number +353850123456$", r.stdout, re.M), r.stdout
    assert re.search(r"^  user_id +u-cp1$", r.stdout, re.M)
    assert "the API accepted it (HTTP" in r.stdout
    assert fakeapi.token not in r.stdout + r.stderr
    prof = fakeapi.profiles()["u-cp1"]
    assert str(prof["mobile_number"]) == "353850123456"
    assert prof["first_name"] == "Siobhán"
    rid = run_id_of(r)
    rec = read_json(Path(state_dir) / "runs" / "_manual" / f"{rid}.json")
    assert rec["trigger"] == "manual" and rec["job"] == "_manual" and rec["project"] == "main"
    assert rec["outcome"] == "succeeded" and rec["counts"]["rows_posted"] == 1
    assert rec["files"][0]["name"] == "create-profile"
    assert rec["files"][0]["columns"][0] == "user_id"
    hist = ctl_json(ctl, cfg, "history", "_manual")
    assert [h["run_id"] for h in hist["runs"]] == [rid]
    assert ctl_json(ctl, cfg, "show", rid)["files"][0]["batches"][0]["rows"] == 1

    doc = ctl_json(ctl, cfg, "create-profile", "--project", "main", "user_id=u-cp2",
                   "email=a@example.com", "email_subscription=1")
    assert doc["ok"] is True and doc["sent"]["email"] == "a@example.com"


def test_create_profile_validation_errors(xpconfig, ctl, fakeapi, state_dir):
    cfg = xpconfig()
    r = ctl(cfg, "create-profile", "--project", "main", "user_id=u1", "mobile_number=0850 12",
            "sms_subscription=1", "--country-code", "353")
    assert r.returncode == 1
    assert one_error_line(r) == "xpimportctl: mobile_number '0850 12' is not a valid number"
    r = ctl(cfg, "create-profile", "--project", "main", "email=a@example.com",
            "email_subscription=1")
    assert r.returncode == 1
    assert one_error_line(r) == "xpimportctl: user_id is required"
    r = ctl(cfg, "create-profile", "--project", "main", "user_id=u1", "shoe_size=9")
    assert r.returncode == 1
    assert one_error_line(r) == ("xpimportctl: 'shoe_size' is not an attribute of "
                                 "project 'main'")
    r = ctl(cfg, "create-profile", "--project", "main", "user_id")
    assert r.returncode == 2 and "'user_id' is not ATTR=VALUE" in r.stderr
    r = ctl(cfg, "create-profile", "--project", "main", "--country-code", "35x", "user_id=u1")
    assert r.returncode == 2
    assert fakeapi.imports() == []
    assert not (Path(state_dir) / "runs" / "_manual").exists()


# ---------------------------------------------------------------------------------------
# trust
# ---------------------------------------------------------------------------------------

def test_trust_appends_the_host_key(xpconfig, ctl, sshd, fakeapi, csv_drop, tmp_path,
                                    state_dir):
    kh = tmp_path / "etc" / "trusted_hosts"
    cfg = xpconfig(extra={"sites": {"partner-a": {"known_hosts_file": str(kh)}}})
    csv_drop("profiles_1.csv", PROFILES_CSV)
    r = harness.run_xpimportd(["-c", cfg, "-S", state_dir, "--once"])
    assert r.returncode != 0                              # unknown host key
    r = ctl(cfg, "trust", "partner-a")                    # stdin is not a terminal
    assert r.returncode == 2
    assert "'xpimportctl trust partner-a --yes'" in one_error_line(r)
    assert sshd.host_fingerprint in r.stdout
    assert not kh.exists()

    r = ctl(cfg, "trust", "partner-a", "--yes")
    assert r.returncode == 0, r.stderr
    assert f"offers this ssh-ed25519 host key:\n  {sshd.host_fingerprint}\n" in r.stdout
    assert kh.read_text() == sshd.known_hosts_line()
    assert stat.S_IMODE(kh.stat().st_mode) == 0o644
    r = ctl(cfg, "trust", "partner-a", "--yes")
    assert r.returncode == 0 and "already trusts it" in r.stdout
    assert kh.read_text() == sshd.known_hosts_line()
    doc = ctl_json(ctl, cfg, "trust", "partner-a", "--yes")
    assert doc["fingerprint"] == sshd.host_fingerprint and doc["key_type"] == "ssh-ed25519"

    r = harness.run_xpimportd(["-c", cfg, "-S", state_dir, "--once"])
    assert r.returncode == 0, r.stderr
    assert set(fakeapi.profiles()) == {"u1", "u2", "u3"}


def test_trust_without_known_hosts_file_says_pin(xpconfig, ctl, sshd, tmp_path):
    cfg = xpconfig(extra={"sites": {"partner-a": {"known_hosts_file": None,
                                                  "host_key_sha256": ["SHA256:" + "A" * 43]}}})
    r = ctl(cfg, "trust", "partner-a", "--yes")
    assert r.returncode == 1
    assert one_error_line(r).startswith(
        f"xpimportctl: site partner-a has no known_hosts_file; pin the key instead with "
        f"host_key_sha256: [\"{sshd.host_fingerprint}\"]")


# ---------------------------------------------------------------------------------------
# with the daemon running (daemon.c serves the control socket)
# ---------------------------------------------------------------------------------------

def test_run_and_status_with_daemon(xpconfig, ctl, daemons, fakeapi, csv_drop, state_dir,
                                    runtime_dir):
    cfg = xpconfig({"crm-daily": {"schedule": {"every": "1h"}}})
    d = start_daemon(daemons, cfg, state_dir, runtime_dir)
    sock = Path(runtime_dir) / "control.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    doc = ctl_json(ctl, cfg, "status")
    assert doc["daemon"]["running"] is True and doc["daemon"]["pid"] == d.pid
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["jobs"][0]["next_run"] or ""), doc

    csv_drop("profiles_1.csv", PROFILES_CSV)
    r = ctl(cfg, "run", "crm-daily", "--wait")
    assert r.returncode == 0, r.stderr + d.log()[-2000:]
    assert re.match(r"crm-daily: run \S+ succeeded", r.stdout), r.stdout
    rid = run_id_of(r)
    assert set(fakeapi.profiles()) == {"u1", "u2", "u3"}
    rec = ctl_json(ctl, cfg, "show", rid)
    assert rec["trigger"] == "run-now"
    r = ctl(cfg, "run", "crm-daily")
    assert r.returncode == 0 and re.match(r"crm-daily: run \S+ (started|already in progress)",
                                          r.stdout)
    r = ctl(cfg, "run", "nosuchjob")
    assert r.returncode == 5


def test_import_while_daemon_runs(xpconfig, ctl, daemons, fakeapi, tmp_path, state_dir,
                                  runtime_dir):
    cfg = xpconfig({"crm-daily": {"schedule": {"every": "1h"}}})
    d = start_daemon(daemons, cfg, state_dir, runtime_dir)
    f = tmp_path / "upload.csv"
    f.write_text(PROFILES_CSV)
    r = ctl(cfg, "import", "--job", "crm-daily", str(f))
    assert r.returncode == 0, r.stderr + d.log()[-2000:]
    rid = run_id_of(r)
    rec = read_json(Path(state_dir) / "runs" / "crm-daily" / f"{rid}.json")
    assert rec["trigger"] == "upload" and rec["files"][0]["path"] == str(f)
    assert set(fakeapi.profiles()) == {"u1", "u2", "u3"}
    # forget through the daemon, then import again through it
    r = ctl(cfg, "forget", "crm-daily", str(f))
    assert r.returncode == 0, r.stderr
    r = ctl(cfg, "import", "--job", "crm-daily", str(f))
    assert r.returncode == 0, r.stderr
    assert sum(len(x["rows"]) for x in fakeapi.imports()) == 6
    assert d.proc.poll() is None
    assert d.stop() == 0
    js = read_json(Path(state_dir) / "jobs" / "crm-daily.json")
    assert js["history"][-1]["action"] == "forget" and js["history"][-1]["file"] == str(f)


def test_resume_tells_the_daemon(xpconfig, ctl, daemons, fakeapi, state_dir, runtime_dir):
    cfg = xpconfig({"crm-daily": {"schedule": {"every": "1h"}}})
    jobs = Path(state_dir) / "jobs"
    jobs.mkdir(mode=0o700, exist_ok=True)
    (jobs / "crm-daily.json").write_text(json.dumps(
        {"paused": {"reason": "authentication failed", "since": 1, "http_status": 401}}))
    os.chmod(jobs / "crm-daily.json", 0o600)
    d = start_daemon(daemons, cfg, state_dir, runtime_dir)
    assert ctl_json(ctl, cfg, "status")["jobs"][0]["paused"]["http_status"] == 401
    r = ctl(cfg, "resume", "crm-daily")
    assert r.returncode == 0, r.stderr + d.log()[-2000:]
    assert r.stdout.startswith("crm-daily: resumed;")
    r = ctl(cfg, "run", "crm-daily", "--wait")          # runs again
    assert r.returncode == 0, r.stderr
    d.stop()
    js = read_json(jobs / "crm-daily.json")
    assert "paused" not in js
    assert js["history"][-1]["action"] == "resume" and js["history"][-1]["who"] == "operator-test"


def test_import_progress_only_on_a_terminal(xpconfig, ctl, fakeapi, tmp_path):
    import pty
    import subprocess
    cfg = xpconfig()
    f = tmp_path / "upload.csv"
    f.write_text(PROFILES_CSV)
    g = tmp_path / "upload2.csv"
    g.write_text(PROFILES_CSV.replace("u1", "u7"))

    def on_pty(*args):
        master, slave = pty.openpty()
        p = subprocess.run([str(harness.XPIMPORTCTL), "-c", cfg, "-S",
                            str(tmp_path / "state"), *args],
                           env=harness.program_env({"RUNTIME_DIRECTORY": str(tmp_path / "run")}),
                           stdout=subprocess.PIPE, stderr=slave, text=True, timeout=60)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        return p, out.decode(errors="replace")

    p, err = on_pty("import", "--job", "crm-daily", str(f))
    assert p.returncode == 0, err
    assert "upload.csv: 3/3 rows, batch 1/1" in err, err
    assert "MB/s" in err and "elapsed" in err and "ETA" in err, err
    p, err = on_pty("import", "--job", "crm-daily", "--quiet", str(g))
    assert p.returncode == 0, err
    assert "rows posted" not in err, err
