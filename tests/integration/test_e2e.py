"""End-to-end: xpimportd --once from the loopback sshd to the API double, asserting on what
the API received and what the state directory holds."""

import glob
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import harness

SEED = ("user_id,email,email_subscription,mobile_number,sms_subscription,language,timezone,"
        "first_name\n"
        "fe56bc676be78,sam@example.com,1,353850123456,1,en,Europe/Dublin,Sam\n"
        "fe56bc676be79,laura@example.com,1,353850123457,1,en,Europe/London,Laura\n")


def rows_csv(n, start=0):
    lines = ["user_id,email,email_subscription,first_name"]
    for i in range(start, start + n):
        lines.append(f"u{i:06d},user{i}@example.com,1,Name {i}")
    return "\n".join(lines) + "\n"


def run_records(state_dir, job="crm-daily"):
    out = []
    for p in sorted(glob.glob(os.path.join(state_dir, "runs", job, "*.json"))):
        with open(p) as f:
            out.append(json.load(f))
    return out


def ledger_events(state_dir, job="crm-daily"):
    p = Path(state_dir) / "ledger" / f"{job}.log"
    if not p.exists():
        return []
    return [json.loads(line.split(" ", 1)[1]) for line in p.read_text().splitlines()]


def once(cfg, state_dir, *extra, timeout=60):
    return harness.run_xpimportd(["-c", cfg, "-S", state_dir, "--once", *extra], timeout=timeout)


def test_seed_sample_reaches_the_api_and_is_recorded(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_0412.csv", SEED)
    cfg = xpconfig()
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    profiles = fakeapi.profiles()
    assert profiles["fe56bc676be78"]["email"] == "sam@example.com"
    assert profiles["fe56bc676be78"]["mobile_number"] == "353850123456"
    assert profiles["fe56bc676be78"]["email_subscription"] == 1
    assert profiles["fe56bc676be79"]["first_name"] == "Laura"
    assert profiles["fe56bc676be79"]["timezone"] == "Europe/London"
    reqs = fakeapi.imports()
    assert len(reqs) == 1 and reqs[0]["status"] == 200 and reqs[0]["apptoken_ok"]
    assert reqs[0]["columns"][0] == "user_id"
    recs = run_records(state_dir)
    assert len(recs) == 1
    rec = recs[0]
    assert rec["outcome"] == "succeeded" and rec["trigger"] == "once"
    f = rec["files"][0]
    assert (f["name"], f["rows_read"], f["rows_valid"], f["rows_posted"], f["outcome"]) == \
        ("profiles_0412.csv", 2, 2, 2, "imported")
    assert len(f["sha256"]) == 64
    evs = [e["ev"] for e in ledger_events(state_dir)]
    assert evs.count("imported") == 1
    # state files are private
    for root, dirs, files in os.walk(state_dir):
        for d in dirs:
            assert os.stat(os.path.join(root, d)).st_mode & 0o077 == 0, d
        for name in files:
            assert os.stat(os.path.join(root, name)).st_mode & 0o077 == 0, name
    # the summary names the counts; the token is nowhere in the output
    assert "1 file imported" in r.stdout
    assert fakeapi.token not in r.stdout + r.stderr
    assert "internal error" not in r.stderr  # every libuv handle closed, uv_loop_close() == 0


def test_second_run_imports_nothing_again(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_a.csv", SEED)
    cfg = xpconfig()
    assert once(cfg, state_dir).returncode == 0
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert len(fakeapi.imports()) == 1
    assert [e["ev"] for e in ledger_events(state_dir)].count("imported") == 1


def test_batches_of_batch_size_with_async_tasks_confirmed(sshd, fakeapi, xpconfig, state_dir,
                                                           csv_drop):
    csv_drop("big.csv", rows_csv(2500))
    cfg = xpconfig({"crm-daily": {"batch": {"size": 1000}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    # up to max_in_flight batches are posted at once: they may arrive in any order
    reqs = sorted(fakeapi.imports(), key=lambda q: q["rows"][0][0])
    assert [q["n_rows"] for q in reqs] == [1000, 1000, 500]
    assert all(q["status"] == 202 for q in reqs)
    # rows arrive once, in file order
    ids = [row[0] for q in reqs for row in q["rows"]]
    assert ids == [f"u{i:06d}" for i in range(2500)]
    f = run_records(state_dir)[0]["files"][0]
    assert sorted(b["index"] for b in f["batches"]) == [0, 1, 2]
    assert all(b["task_id"] and b["task_status"] == "complete" for b in f["batches"])
    assert len(fakeapi.profiles()) == 2500


def test_dry_run_posts_and_records_nothing(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_d.csv", SEED)
    cfg = xpconfig()
    r = once(cfg, state_dir, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "rows read 2, valid 2, rejected 0" in r.stdout
    assert "columns sent: user_id" in r.stdout
    assert fakeapi.imports() == []
    assert run_records(state_dir) == []
    assert ledger_events(state_dir) == []
    # and a real run afterwards still imports it
    assert once(cfg, state_dir).returncode == 0
    assert len(fakeapi.profiles()) == 2


def test_unknown_host_key_refused_before_authentication(sshd, fakeapi, xpconfig, state_dir,
                                                       csv_drop, tmp_path):
    csv_drop("profiles_h.csv", SEED)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    cfg = xpconfig(extra={"sites": {"partner-a": {"known_hosts_file": str(empty)}}})
    r = once(cfg, state_dir)
    assert r.returncode == 1
    assert "not known" in r.stderr and "xpimportctl trust partner-a" in r.stderr
    assert "SHA256:" in r.stderr
    log = sshd.log()
    assert "Accepted publickey" not in log and "Failed publickey" not in log
    assert fakeapi.imports() == []
    assert run_records(state_dir)[0]["outcome"] == "failed"


def test_changed_host_key_refused(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_c.csv", SEED)
    cfg = xpconfig()
    sshd.restart_with_new_host_key()
    r = once(cfg, state_dir)
    assert r.returncode == 1
    assert "changed" in r.stderr
    assert "Accepted publickey" not in sshd.log()
    assert fakeapi.imports() == []


def test_server_errors_are_retried_then_accepted(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_r.csv", SEED)
    fakeapi.faults([{"status": 500}, {"status": 500}])
    cfg = xpconfig(projects_extra={"main": {"retry": {"initial_backoff": "100ms",
                                                      "max_backoff": "1s"}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert [q["status"] for q in fakeapi.imports()] == [500, 500, 200]
    b = run_records(state_dir)[0]["files"][0]["batches"][0]
    assert b["attempts"] == 3 and b["status"] == 200
    assert r.stderr.count("retrying") == 2


def test_retry_after_is_honoured(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_429.csv", SEED)
    fakeapi.faults([{"status": 429, "retry_after": "2"}])
    cfg = xpconfig(projects_extra={"main": {"retry": {"initial_backoff": "100ms",
                                                      "max_backoff": "10s"}}})
    assert once(cfg, state_dir).returncode == 0
    reqs = fakeapi.imports()
    assert [q["status"] for q in reqs] == [429, 200]
    assert reqs[1]["time"] - reqs[0]["time"] >= 1.95


def test_rejected_third_batch_stops_the_file(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("five.csv", rows_csv(50))
    fakeapi.faults([{"delay": 0}, {"delay": 0}, {"status": 400, "message": "bad batch", "errors": ["row 3 bad"]}])
    cfg = xpconfig({"crm-daily": {"batch": {"size": 10}}},
                   projects_extra={"main": {"max_in_flight": 1}})
    r = once(cfg, state_dir)
    assert r.returncode == 1
    reqs = fakeapi.imports()
    assert [q["status"] for q in reqs] == [200, 200, 400]
    f = run_records(state_dir)[0]["files"][0]
    assert f["outcome"] == "failed" and "bad batch" in f["error"]
    assert f["rows_posted"] == 20
    assert "rejected by the API" in r.stderr


def test_api_authentication_failure_pauses_the_job(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_401.csv", SEED)
    cfg = xpconfig()
    Path(fakeapi.token_file).write_text("wrong-token\n")
    r = once(cfg, state_dir)
    assert r.returncode == 1
    assert "paused" in r.stderr
    assert "wrong-token" not in r.stderr + r.stdout
    assert len(fakeapi.imports()) == 1  # no hammering
    state = json.loads((Path(state_dir) / "jobs" / "crm-daily.json").read_text())
    assert state["paused"]["reason"] == "authentication failed"
    r = once(cfg, state_dir)
    assert len(fakeapi.imports()) == 1, "a paused job must not post"
    # the configuration changes (the right token is put back): the job resumes by itself
    harness.write_secret(fakeapi.token_file, fakeapi.token + "\n")
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert "apptoken file of project 'main' changed; resuming" in r.stderr
    assert len(fakeapi.profiles()) == 2
    state = json.loads((Path(state_dir) / "jobs" / "crm-daily.json").read_text())
    assert "paused" not in state
    assert state["history"][-1]["action"] == "resume"


def test_move_after_import_with_clash_suffix(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    src = csv_drop("profiles_m.csv", SEED)
    archive = Path(sshd.root) / "outgoing" / "archive"
    archive.mkdir()
    (archive / "profiles_m.csv").write_text("already here\n")
    cfg = xpconfig({"crm-daily": {"source": {"after_import": {"action": "move",
                                                              "to": "archive"}}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(src)
    assert (archive / "profiles_m.csv").read_text() == "already here\n"
    assert (archive / "profiles_m.csv.1").read_text() == SEED
    assert "after" in [e["ev"] for e in ledger_events(state_dir)]


def test_settling_file_is_not_taken_on_first_sighting(sshd, fakeapi, xpconfig, state_dir,
                                                     csv_drop):
    csv_drop("profiles_s.csv", SEED)
    cfg = xpconfig({"crm-daily": {"source": {"settle": "1h"}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert "settling" in r.stderr
    assert fakeapi.imports() == []
    rec = run_records(state_dir)[0]
    assert rec["waiting"][0]["path"].endswith("profiles_s.csv")


def test_second_instance_exits_at_once(sshd, fakeapi, xpconfig, state_dir, daemons):
    cfg = xpconfig()
    d = daemons(["-c", cfg, "-S", state_dir])
    d.wait_log("started")
    r = once(cfg, state_dir, timeout=10)
    assert r.returncode == 4
    assert "holds the state directory" in r.stderr


def test_kill9_during_import_resumes_without_loss(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    n = 30000
    csv_drop("crash.csv", rows_csv(n))
    cfg = xpconfig({"crm-daily": {"batch": {"size": 500}}},
                   projects_extra={"main": {"max_in_flight": 2}})
    fakeapi.faults([{"delay": 0.08}] * 1000)
    crashes = 0
    for attempt in range(8):
        p = subprocess.Popen([str(harness.XPIMPORTD), "-c", cfg, "-S", state_dir, "--once"],
                             env=harness.program_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(0.4 + 0.15 * attempt)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            crashes += 1
        p.wait()
    fakeapi.faults([])
    r = once(cfg, state_dir, timeout=120)
    assert r.returncode == 0, r.stderr
    profiles = fakeapi.profiles()
    assert len(profiles) == n
    evs = ledger_events(state_dir)
    assert [e["ev"] for e in evs].count("imported") == 1
    posted = sum(q["n_rows"] for q in fakeapi.imports() if q["status"] in (200, 202))
    dup_batches = (posted - n) // 500
    print(f"crashes={crashes} rows_valid={n} rows_delivered={len(profiles)} "
          f"duplicate_batches={dup_batches}")
    assert dup_batches <= 2 * crashes  # at most the batches in flight (max_in_flight 2)
