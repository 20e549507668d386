"""Delivery and state: async tasks, dropped connections, torn ledger tails, a corrupt ledger,
retention of run records."""

import json
import os
from pathlib import Path

import harness
from test_e2e import ledger_events, once, rows_csv, run_records


def test_failed_async_task_fails_the_file(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("tasks.csv", rows_csv(150))
    fakeapi.task_outcome("failed")
    cfg = xpconfig()
    r = once(cfg, state_dir)
    assert r.returncode == 1
    assert [q["status"] for q in fakeapi.imports()] == [202]
    f = run_records(state_dir)[0]["files"][0]
    assert f["outcome"] == "failed" and "task" in f["error"] and "failed" in f["error"]
    assert f["batches"][0]["task_status"] == "failed"
    assert "imported" not in [e["ev"] for e in ledger_events(state_dir)]


def test_confirm_tasks_off_does_not_poll(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("tasks2.csv", rows_csv(150))
    cfg = xpconfig(projects_extra={"main": {"confirm_tasks": False}})
    assert once(cfg, state_dir).returncode == 0
    paths = [q["path"] for q in fakeapi.requests()]
    assert not any(p.endswith("info/task") for p in paths)


def test_dropped_connection_after_body_is_retried(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("drop.csv", rows_csv(30))
    fakeapi.faults([{"drop": True}, {"drop_after_upsert": True}])
    cfg = xpconfig(projects_extra={"main": {"retry": {"initial_backoff": "100ms",
                                                      "max_backoff": "500ms"}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert [q["status"] for q in fakeapi.imports()] == [None, None, 200]
    assert len(fakeapi.profiles()) == 30
    assert run_records(state_dir)[0]["files"][0]["batches"][0]["attempts"] == 3


def test_gave_up_leaves_the_file_for_the_next_run(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("down.csv", rows_csv(30))
    fakeapi.faults([{"status": 503}] * 3)
    cfg = xpconfig(projects_extra={"main": {"retry": {"max_attempts": 3,
                                                      "initial_backoff": "100ms",
                                                      "max_backoff": "200ms"}}})
    r = once(cfg, state_dir)
    assert r.returncode == 1
    assert "not accepted after 3 attempts" in r.stderr
    assert run_records(state_dir)[0]["files"][0]["outcome"] == "interrupted"
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert len(fakeapi.profiles()) == 30


def test_torn_ledger_tail_is_dropped_and_the_file_resumed(sshd, fakeapi, xpconfig, state_dir,
                                                         csv_drop):
    csv_drop("torn.csv", rows_csv(30))
    cfg = xpconfig({"crm-daily": {"batch": {"size": 10}}})
    assert once(cfg, state_dir).returncode == 0
    ledger = Path(state_dir) / "ledger" / "crm-daily.log"
    lines = ledger.read_bytes().splitlines(keepends=True)
    # cut the ledger just after the second batch record, then tear the next record
    keep = [l for l in lines if b'"ev":"imported"' not in l and b'"ev":"after"' not in l]
    batch_idx = [i for i, l in enumerate(keep) if b'"ev":"batch"' in l]
    keep = keep[:batch_idx[1] + 1]
    ledger.write_bytes(b"".join(keep) + lines[batch_idx[2]][:25])
    fakeapi.reset()
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert "torn" in r.stderr
    reqs = fakeapi.imports()
    assert [q["n_rows"] for q in reqs] == [10], "only the unaccepted batch is re-sent"
    kept = {json.loads(l.split(b" ", 1)[1])["index"] for l in keep if b'"ev":"batch"' in l}
    missing = ({0, 1, 2} - kept).pop()
    assert reqs[0]["rows"][0][0] == f"u{missing * 10:06d}"


def test_corrupt_ledger_stops_the_daemon(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("c.csv", rows_csv(5))
    cfg = xpconfig()
    assert once(cfg, state_dir).returncode == 0
    ledger = Path(state_dir) / "ledger" / "crm-daily.log"
    lines = ledger.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"ev"', b'"eV"')
    ledger.write_bytes(b"".join(lines))
    r = once(cfg, state_dir)
    assert r.returncode == 5
    assert "crm-daily.log:1" in r.stderr


def test_run_records_are_pruned_to_keep_runs(sshd, fakeapi, xpconfig, state_dir):
    cfg = xpconfig(extra={"state": {"keep_runs": 3}})
    for _ in range(5):
        assert once(cfg, state_dir).returncode == 0
    assert len(run_records(state_dir)) == 3
