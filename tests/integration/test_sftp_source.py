"""The SFTP source through the real daemon (issue 4): authentication and host keys, complete
files only (settle, .part names, done markers), import once (ledger, duplicate content),
remote after-actions, order, listing, broken transfers, a 200 MB file in bounded memory.

Every case runs src/xpimportd -c CFG -S STATE --once against the loopback sshd and the API
double, and asserts on what the API received, the state directory (runs/, ledger/JOB.log,
jobs/JOB.json), sshd's log, the remote folder (sshd.root) and stderr.

Not duplicated from test_e2e.py: unknown and changed host key, move with a clash suffix,
settle on first sighting, a re-run imports nothing.
"""

import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import harness

JOB = "crm-daily"
RUN_LINE = re.compile(r"run \d{8}T\d{6}Z-\w+ (failed|partial|succeeded)")
HEADER = "user_id,email,email_subscription,first_name"


def rows_csv(n, start=0, prefix="u", header=True):
    lines = [HEADER] if header else []
    for i in range(start, start + n):
        lines.append(f"{prefix}{i:06d},user{i}@example.com,1,Name {i}")
    return "\n".join(lines) + "\n"


def _record_names(state_dir, job=JOB):
    return set(glob.glob(os.path.join(state_dir, "runs", job, "*.json")))


def once(cfg, state_dir, *extra, timeout=60):
    """xpimportd --once; the result carries .records, the run records this run wrote (run ids
    start with the second, so file names do not sort runs of one second in order)."""
    before = _record_names(state_dir)
    r = harness.run_xpimportd(["-c", cfg, "-S", state_dir, "--once", *extra], timeout=timeout)
    r.records = []
    for name in sorted(_record_names(state_dir) - before):
        with open(name) as f:
            r.records.append(json.load(f))
    return r


def ledger_events(state_dir, job=JOB):
    p = Path(state_dir) / "ledger" / f"{job}.log"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        crc, _, js = line.partition(" ")
        assert len(crc) == 8 and int(crc, 16) >= 0, line
        out.append(json.loads(js))
    return out


def events_for(state_dir, path, job=JOB):
    return [e["ev"] for e in ledger_events(state_dir, job) if e.get("path") == path]


def one_record(r):
    assert len(r.records) == 1, r.records
    return r.records[0]


def job_state(state_dir, job=JOB):
    return json.loads((Path(state_dir) / "jobs" / f"{job}.json").read_text())


def posted_user_ids(api):
    return [row[0] for q in api.imports() if q["status"] in (200, 202) for row in q["rows"]]


def log_lines(stderr, needle):
    return [line for line in stderr.splitlines() if needle in line]


def outgoing(sshd, *parts):
    return Path(sshd.root, "outgoing", *parts)


def keygen(path, comment="xpimportd-test-other", kind="ed25519", passphrase=""):
    path = str(path)
    subprocess.run([harness.SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", comment,
                    "-f", path], check=True, stdout=subprocess.DEVNULL)
    os.chmod(path, 0o600)
    return path


def site(**over):
    """extra= for xpconfig: override keys of the site partner-a (None removes a key)."""
    return {"sites": {"partner-a": over}}


def auth_attempted(sshd_log):
    return any(w in sshd_log for w in ("Accepted publickey", "Failed publickey",
                                       "Postponed publickey", "Accepted password",
                                       "Failed password", "Failed none"))


# ---------------------------------------------------------------------------------------
# 1. Connect and authenticate
# ---------------------------------------------------------------------------------------

def test_wrong_client_key_is_an_authentication_error(sshd, fakeapi, xpconfig, state_dir,
                                                     csv_drop, tmp_path):
    csv_drop("profiles_k.csv", rows_csv(2))
    other = keygen(tmp_path / "other_ed25519")
    cfg = xpconfig(extra=site(private_key_file=other))
    r = once(cfg, state_dir)
    assert r.returncode == 1, r.stderr
    err = log_lines(r.stderr, "authentication as")
    assert err, r.stderr
    assert f"authentication as '{sshd.user}' to 127.0.0.1:{sshd.port} failed (publickey)" \
        in r.stderr
    assert "no new complete files" not in r.stderr
    assert fakeapi.imports() == []
    rec = one_record(r)
    assert rec["outcome"] == "failed"
    assert "authentication as" in rec["error"]
    assert rec["files"] == []
    # the host key was accepted and the server saw the key refused
    assert "Accepted publickey" not in sshd.log()
    assert ledger_events(state_dir) == []
    # the private key's content never reaches the output
    key_body = Path(other).read_text().splitlines()[1]
    assert key_body not in r.stderr + r.stdout


def test_wrong_password_is_an_authentication_error(fakeapi, state_dir, tmp_path):
    pw_sshd = harness.Sshd.start(tmp_path / "sshd-pw", password=True)
    try:
        d = Path(pw_sshd.root) / "outgoing"
        (d / "profiles_pw.csv").write_text(rows_csv(2))
        pw = harness.write_secret(tmp_path / "partner-a.password", "not-the-password-42\n")
        cfg = harness.write_config(tmp_path, pw_sshd, fakeapi, {JOB: {}},
                                   extra=site(private_key_file=None, password_file=str(pw)))
        r = once(cfg, state_dir)
        assert r.returncode == 1, r.stderr
        assert f"authentication as '{pw_sshd.user}' to 127.0.0.1:{pw_sshd.port} failed" \
            in r.stderr
        assert "(password)" in r.stderr or "(keyboard-interactive)" in r.stderr
        assert "not-the-password-42" not in r.stderr + r.stdout
        assert "no new complete files" not in r.stderr
        assert fakeapi.imports() == []
        assert "Accepted password" not in pw_sshd.log()
    finally:
        pw_sshd.stop()


def test_private_key_readable_by_others_is_refused(sshd, fakeapi, xpconfig, state_dir,
                                                   csv_drop, tmp_path):
    csv_drop("profiles_p.csv", rows_csv(2))
    short = Path(tempfile.mkdtemp(prefix="xpk", dir="/tmp"))
    try:
        loose = short / "k"
        loose.write_bytes(Path(sshd.client_key).read_bytes())
        cfg = xpconfig(extra=site(private_key_file=str(loose)))
        os.chmod(loose, 0o644)
        r = harness.run_xpimportd(["-n", "-c", cfg])
        assert r.returncode == 3, r.stdout + r.stderr
        out = r.stdout + r.stderr
        assert f"private_key_file '{loose}' is readable by group or others; chmod 600 it" \
            in out, out
        # a run refuses too, and nothing is posted
        r = once(cfg, state_dir)
        assert r.returncode == 3
        assert f"'{loose}' is readable by group or others" in r.stdout + r.stderr
        assert fakeapi.imports() == []
        assert not auth_attempted(sshd.log())
    finally:
        shutil.rmtree(short)


def test_loose_private_key_message_names_a_long_path_in_full(sshd, fakeapi, xpconfig,
                                                             tmp_path):
    loose = tmp_path / "a-rather-long-directory-name-for-keys" / "partner-a_ed25519"
    loose.parent.mkdir()
    loose.write_bytes(Path(sshd.client_key).read_bytes())
    cfg = xpconfig(extra=site(private_key_file=str(loose)))
    os.chmod(loose, 0o644)
    assert len(str(loose)) > 80
    r = harness.run_xpimportd(["-n", "-c", cfg])
    assert r.returncode == 3
    assert str(loose) in r.stdout + r.stderr


def test_key_loosened_after_start_refused_at_run_time(sshd, fakeapi, xpconfig, state_dir,
                                                      csv_drop, daemons, tmp_path):
    csv_drop("profiles_rt.csv", rows_csv(2))
    key = tmp_path / "k2"
    key.write_bytes(Path(sshd.client_key).read_bytes())
    os.chmod(key, 0o600)
    cfg = xpconfig({JOB: {"schedule": {"every": "2s"}}}, extra=site(private_key_file=str(key)))
    d = daemons(["-c", cfg, "-S", state_dir])
    d.wait_log("started")
    os.chmod(key, 0o644)
    log = d.wait_log("refusing secret file", timeout=15)
    line = log_lines(log, "refusing secret file")[0]
    assert f"refusing secret file {key}: it is readable or writable by group or others " \
        f"(chmod 600 {key})" in line
    assert fakeapi.imports() == []
    assert not auth_attempted(sshd.log())


def test_pinned_host_key_accepted(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_pin.csv", rows_csv(3))
    cfg = xpconfig(extra=site(known_hosts_file=None, host_key_sha256=[sshd.host_fingerprint]))
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert posted_user_ids(fakeapi) == ["u000000", "u000001", "u000002"]


def test_wrong_pin_refused_before_authentication(sshd, fakeapi, xpconfig, state_dir,
                                                 csv_drop, tmp_path):
    csv_drop("profiles_pin.csv", rows_csv(3))
    other = keygen(tmp_path / "other_host")
    wrong = harness.pubkey_fingerprint(Path(other + ".pub").read_text())
    assert wrong != sshd.host_fingerprint
    cfg = xpconfig(extra=site(known_hosts_file=None, host_key_sha256=wrong))
    r = once(cfg, state_dir, "-v")
    assert r.returncode == 1, r.stderr
    lines = log_lines(r.stderr, "matches none of site 'partner-a' host_key_sha256 pins")
    assert len(lines) >= 1, r.stderr
    assert sshd.host_fingerprint in lines[0] and "ssh-ed25519" in lines[0]
    assert wrong not in lines[0]
    # the journal event carries the fingerprint offered as a field of its own
    assert f"FINGERPRINT={sshd.host_fingerprint}" in lines[0]
    assert "xpimportctl trust partner-a" in lines[0]
    assert not auth_attempted(sshd.log()), sshd.log()[-2000:]
    assert fakeapi.imports() == []
    assert one_record(r)["outcome"] == "failed"


def test_hashed_known_hosts_works(sshd, fakeapi, xpconfig, state_dir, csv_drop, tmp_path):
    csv_drop("profiles_hash.csv", rows_csv(2))
    kh = tmp_path / "hashed_known_hosts"
    kh.write_text(sshd.known_hosts_line())
    subprocess.run([harness.SSH_KEYGEN, "-H", "-f", str(kh)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = kh.read_text()
    assert text.startswith("|1|") and "127.0.0.1" not in text
    cfg = xpconfig(extra=site(known_hosts_file=str(kh)))
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert posted_user_ids(fakeapi) == ["u000000", "u000001"]


def authorize(sshd, key):
    with open(sshd.authorized_keys, "a") as f:
        f.write(Path(key + ".pub").read_text())


def test_ecdsa_key_works(sshd, fakeapi, xpconfig, state_dir, csv_drop, tmp_path):
    csv_drop("profiles_ec.csv", rows_csv(2))
    key = keygen(tmp_path / "id_ecdsa", kind="ecdsa")
    authorize(sshd, key)
    cfg = xpconfig(extra=site(private_key_file=key))
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert posted_user_ids(fakeapi) == ["u000000", "u000001"]
    assert "Accepted publickey" in sshd.log() and "ECDSA" in sshd.log()


def test_rsa_key_refused_with_an_explanation(sshd, fakeapi, xpconfig, state_dir, csv_drop,
                                             tmp_path):
    csv_drop("profiles_rsa.csv", rows_csv(2))
    key = keygen(tmp_path / "id_rsa", kind="rsa")
    authorize(sshd, key)
    cfg = xpconfig(extra=site(private_key_file=key))
    r = once(cfg, state_dir)
    assert r.returncode == 1, r.stderr
    assert f"private key {key} is an RSA key, which xpimportd cannot use" in r.stderr
    assert "ssh-keygen -t ed25519" in r.stderr
    assert fakeapi.imports() == []
    assert not auth_attempted(sshd.log())


def test_passphrase_protected_key(sshd, fakeapi, xpconfig, state_dir, csv_drop, tmp_path):
    csv_drop("profiles_pp.csv", rows_csv(2))
    key = keygen(tmp_path / "id_pp", passphrase="correct horse 7")
    authorize(sshd, key)
    good = harness.write_secret(tmp_path / "pp.good", "correct horse 7\n")
    bad = harness.write_secret(tmp_path / "pp.bad", "wrong horse 8\n")
    cfg = xpconfig(extra=site(private_key_file=key, passphrase_file=str(bad)))
    r = once(cfg, state_dir)
    assert r.returncode == 1, r.stderr
    assert f"cannot use private key {key}: wrong passphrase" in r.stderr
    assert "wrong horse" not in r.stderr + r.stdout
    assert fakeapi.imports() == []
    cfg = xpconfig(extra=site(private_key_file=key, passphrase_file=str(good)))
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert posted_user_ids(fakeapi) == ["u000000", "u000001"]
    assert "correct horse" not in r.stderr + r.stdout


def test_silent_server_times_out(sshd, fakeapi, xpconfig, state_dir):
    """A server that accepts the connection and says nothing: the run ends at auth_timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []

    def accept():
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return
    threading.Thread(target=accept, daemon=True).start()
    try:
        port = srv.getsockname()[1]
        cfg = xpconfig(extra=site(port=port, auth_timeout="1s"))
        t0 = time.monotonic()
        r = once(cfg, state_dir, timeout=30)
        took = time.monotonic() - t0
    finally:
        srv.close()
        for c in held:
            c.close()
    assert r.returncode == 1, r.stderr
    assert took < 6
    assert f"cannot complete the SSH handshake on 127.0.0.1:{port}: no response for 1 s" \
        in r.stderr
    assert fakeapi.imports() == []


# ---------------------------------------------------------------------------------------
# 2-4. Complete files only
# ---------------------------------------------------------------------------------------

def test_growing_file_waits_until_it_settles(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    path = csv_drop("growing.csv", rows_csv(5))
    cfg = xpconfig({JOB: {"source": {"settle": "2s"}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    waits = log_lines(r.stderr, "settling")
    assert len(waits) == 1 and path in waits[0], r.stderr
    assert "unchanged for 0s of 2s" in waits[0]
    st = job_state(state_dir)
    assert [w["path"] for w in st["waiting"]] == [path]
    assert st["waiting"][0]["reason"].startswith("settling:")
    first = st["sightings"][path]
    assert first["size"] == os.path.getsize(path)
    assert fakeapi.imports() == []

    # the upload goes on: the size changes, the clock restarts
    time.sleep(1.1)
    with open(path, "a") as f:
        f.write(rows_csv(5, start=5, header=False))
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert len(log_lines(r.stderr, "settling")) == 1
    st = job_state(state_dir)
    assert [w["path"] for w in st["waiting"]] == [path]
    second = st["sightings"][path]
    assert second["size"] == os.path.getsize(path) > first["size"]
    assert second["since"] > first["since"], (first, second)
    assert "unchanged for 0s of 2s" in st["waiting"][0]["reason"]
    assert fakeapi.imports() == []

    time.sleep(2.3)
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert "settling" not in r.stderr
    assert posted_user_ids(fakeapi) == [f"u{i:06d}" for i in range(10)]
    assert job_state(state_dir)["waiting"] == []
    assert one_record(r)["files"][0]["rows_read"] == 10


def test_part_upload_is_never_taken_until_renamed(sshd, fakeapi, xpconfig, state_dir,
                                                  csv_drop):
    part = csv_drop("profiles_up.csv.part", rows_csv(3))
    for other in ("x.filepart", "y.tmp", ".hidden.csv"):
        csv_drop(other, rows_csv(1, start=90))
    cfg = xpconfig({JOB: {"source": {"include": ["*"], "exclude": ["*.never"]}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert fakeapi.imports() == []
    assert job_state(state_dir)["waiting"] == []
    assert ledger_events(state_dir) == []
    assert "no new complete files" in r.stderr
    done = part[:-len(".part")]
    os.rename(part, done)
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert posted_user_ids(fakeapi) == ["u000000", "u000001", "u000002"]
    assert [f["path"] for f in one_record(r)["files"]] == [done]


def test_done_marker(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    path = csv_drop("profiles_dm.csv", rows_csv(3))
    cfg = xpconfig({JOB: {"source": {"include": ["*"], "done_marker": ".done",
                                     "after_import": {"action": "delete"}}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    waits = log_lines(r.stderr, "waiting for done marker")
    assert len(waits) == 1, r.stderr
    assert "waiting for done marker profiles_dm.csv.done" in waits[0]
    st = job_state(state_dir)
    assert st["waiting"] == [{"path": path,
                              "reason": "waiting for done marker profiles_dm.csv.done"}]
    assert fakeapi.imports() == []

    Path(path + ".done").write_text("")
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    reqs = fakeapi.imports()
    assert len(reqs) == 1 and [row[0] for row in reqs[0]["rows"]] == \
        ["u000000", "u000001", "u000002"]
    assert [f["name"] for f in one_record(r)["files"]] == ["profiles_dm.csv"]
    # the file and its marker are gone
    assert not os.path.exists(path)
    assert not os.path.exists(path + ".done")
    assert os.listdir(outgoing(sshd)) == []
    assert all(e["path"] == path for e in ledger_events(state_dir))


def test_done_marker_moves_with_the_file(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    path = csv_drop("profiles_dmm.csv", rows_csv(2))
    Path(path + ".ok").write_text("")
    cfg = xpconfig({JOB: {"source": {"done_marker": ".ok",
                                     "after_import": {"action": "move", "to": "done"}}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(outgoing(sshd, "done"))) == ["profiles_dmm.csv",
                                                         "profiles_dmm.csv.ok"]
    assert sorted(os.listdir(outgoing(sshd))) == ["done"]


def test_min_age_waits_with_its_own_reason(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    young = csv_drop("young.csv", rows_csv(1))
    old = csv_drop("old.csv", rows_csv(1, start=1), mtime=time.time() - 7200)
    cfg = xpconfig({JOB: {"source": {"min_age": "1h"}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    waits = log_lines(r.stderr, "younger than min_age")
    assert len(waits) == 1 and young in waits[0], r.stderr
    assert job_state(state_dir)["waiting"] == [{"path": young,
                                                "reason": "younger than min_age (3600s)"}]
    assert posted_user_ids(fakeapi) == ["u000001"]
    assert [f["path"] for f in one_record(r)["files"]] == [old]


def test_each_wait_and_refusal_is_one_distinct_event(sshd, fakeapi, xpconfig, state_dir,
                                                     csv_drop, tmp_path):
    """One stderr line per waiting file, a different text per kind of wait; one line for a
    host key refusal and one for an authentication refusal, with different texts."""
    csv_drop("a_settling.csv", rows_csv(1))
    csv_drop("b_marker.csv", rows_csv(1), mtime=time.time() - 7200)
    csv_drop("c_young.csv", rows_csv(1), mtime=time.time() - 10)
    cfg = xpconfig({JOB: {"source": {"settle": "1h", "done_marker": ".done"}}})
    # settle 1h: the first two wait for settle; then settle 0 with min_age and a marker
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert len(log_lines(r.stderr, "settling")) == 3
    cfg = xpconfig({JOB: {"source": {"settle": "0", "min_age": "1m", "done_marker": ".done"}}})
    Path(outgoing(sshd, "c_young.csv.done")).write_text("")
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    marker = log_lines(r.stderr, "waiting for done marker")
    young = log_lines(r.stderr, "younger than min_age")
    assert len(marker) == 1 and "b_marker.csv" in marker[0]
    assert len(young) == 2 and all("b_marker" not in line for line in young), r.stderr
    assert fakeapi.imports() == []

    # refusals: a wrong pin, then a wrong key
    other = keygen(tmp_path / "other")
    wrong = harness.pubkey_fingerprint(Path(other + ".pub").read_text())
    cfg = xpconfig(extra=site(known_hosts_file=None, host_key_sha256=wrong))
    hk = once(cfg, state_dir)
    cfg = xpconfig(extra=site(private_key_file=other))
    au = once(cfg, state_dir)
    assert hk.returncode == au.returncode == 1
    hk_lines = log_lines(hk.stderr, "host key")
    au_lines = log_lines(au.stderr, "authentication as")
    # the refusal itself is logged once; the run's failure summary repeats the cause
    assert len([line for line in hk_lines if not RUN_LINE.search(line)]) == 1, hk.stderr
    assert len([line for line in au_lines if not RUN_LINE.search(line)]) == 1, au.stderr
    assert not log_lines(hk.stderr, "authentication as")
    assert not log_lines(au.stderr, "host key")


# ---------------------------------------------------------------------------------------
# 5-6. Import once
# ---------------------------------------------------------------------------------------

def test_same_content_under_a_new_name_is_skipped(sshd, fakeapi, xpconfig, state_dir,
                                                  csv_drop):
    text = rows_csv(4)
    first = csv_drop("profiles_1.csv", text)
    cfg = xpconfig()
    assert once(cfg, state_dir).returncode == 0
    assert len(fakeapi.imports()) == 1
    second = csv_drop("profiles_1_again.csv", text)
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    lines = log_lines(r.stderr, "duplicate content")
    assert len(lines) == 1, r.stderr
    assert f"same SHA-256 as {first}" in lines[0] and "profiles_1_again.csv" in lines[0]
    assert len(fakeapi.imports()) == 1
    f = one_record(r)["files"][0]
    assert f["path"] == second and f["outcome"] == "skipped"
    assert "duplicate content" in f["error"]
    evs = [e for e in ledger_events(state_dir) if e["path"] == second]
    assert [e["ev"] for e in evs] == ["failed"]
    assert "duplicate content" in json.dumps(evs[0])
    # and it stays skipped
    r = once(cfg, state_dir)
    assert r.returncode == 0 and len(fakeapi.imports()) == 1


def test_same_content_under_a_new_name_imported_when_configured(sshd, fakeapi, xpconfig,
                                                                state_dir, csv_drop):
    text = rows_csv(4)
    csv_drop("profiles_1.csv", text)
    cfg = xpconfig({JOB: {"source": {"duplicate_content": "import"}}})
    assert once(cfg, state_dir).returncode == 0
    csv_drop("profiles_1_again.csv", text)
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert "duplicate content" not in r.stderr
    assert len(fakeapi.imports()) == 2
    assert [e["ev"] for e in ledger_events(state_dir)].count("imported") == 2


def test_changed_content_under_an_old_name_is_imported(sshd, fakeapi, xpconfig, state_dir,
                                                       csv_drop):
    path = csv_drop("profiles_daily.csv", rows_csv(3), mtime=time.time() - 3600)
    cfg = xpconfig()
    assert once(cfg, state_dir).returncode == 0
    csv_drop("profiles_daily.csv", rows_csv(4, start=100), mtime=time.time() - 60)
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert posted_user_ids(fakeapi) == ["u000000", "u000001", "u000002",
                                        "u000100", "u000101", "u000102", "u000103"]
    assert events_for(state_dir, path).count("imported") == 2
    # listed again, unchanged, with leave: not a third time
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert len(fakeapi.imports()) == 2


def test_changed_content_same_size_and_mtime_is_not_detected(sshd, fakeapi, xpconfig,
                                                             state_dir, csv_drop):
    """Documents the identity: a rewrite that keeps size and mtime (second granularity) is
    taken for the same file; the ledger lookup by path+size+mtime skips it unfetched."""
    mtime = time.time() - 3600
    csv_drop("profiles_same.csv", rows_csv(3), mtime=mtime)
    cfg = xpconfig()
    assert once(cfg, state_dir).returncode == 0
    csv_drop("profiles_same.csv", rows_csv(3, start=5), mtime=mtime)  # same size
    assert once(cfg, state_dir).returncode == 0
    assert len(fakeapi.imports()) == 1


def test_same_content_same_path_reuploaded_is_not_imported_twice(sshd, fakeapi, xpconfig,
                                                                 state_dir, csv_drop):
    text = rows_csv(3)
    path = csv_drop("profiles_again.csv", text, mtime=time.time() - 3600)
    cfg = xpconfig()
    assert once(cfg, state_dir).returncode == 0
    # the partner uploads the very same file again (new mtime)
    csv_drop("profiles_again.csv", text, mtime=time.time() - 60)
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert len(fakeapi.imports()) == 1, "the same path with the same content imported twice"
    assert events_for(state_dir, path).count("imported") == 1


def test_failed_after_action_does_not_reimport(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    path = csv_drop("profiles_af.csv", rows_csv(2))
    # "archive" is a file, so the move cannot create the folder
    outgoing(sshd, "archive").write_text("in the way\n")
    cfg = xpconfig({JOB: {"source": {"after_import": {"action": "move", "to": "archive"}}}})
    r = once(cfg, state_dir)
    lines = log_lines(r.stderr, "after-action 'move' failed")
    assert len(lines) == 1, r.stderr
    assert "the ledger still prevents a second import" in lines[0]
    assert os.path.exists(path)
    evs = events_for(state_dir, path)
    assert "imported" in evs and "after" not in evs
    assert len(fakeapi.imports()) == 1
    # the next run does not import again; it only retries the move, which fails again
    r = once(cfg, state_dir)
    assert len(fakeapi.imports()) == 1
    assert len(log_lines(r.stderr, "after-action 'move' failed")) == 1
    # the obstacle removed, the move is done and still nothing is imported again
    outgoing(sshd, "archive").unlink()
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert len(fakeapi.imports()) == 1
    assert outgoing(sshd, "archive", "profiles_af.csv").exists()
    assert not os.path.exists(path)
    evs = events_for(state_dir, path)
    assert evs.count("imported") == 1 and evs[-1] == "after"


# ---------------------------------------------------------------------------------------
# 7. After-actions
# ---------------------------------------------------------------------------------------

def test_after_import_delete(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    path = csv_drop("profiles_del.csv", rows_csv(2))
    cfg = xpconfig({JOB: {"source": {"after_import": {"action": "delete"}}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(path)
    assert posted_user_ids(fakeapi) == ["u000000", "u000001"]
    evs = events_for(state_dir, path)
    # the remote file goes only after the import is recorded
    assert evs.index("imported") < evs.index("after"), evs
    after = [e for e in ledger_events(state_dir) if e["ev"] == "after"]
    assert "delete" in json.dumps(after[0])
    assert "after-action 'delete' done" in r.stderr
    # nothing staged is left behind
    assert os.listdir(Path(state_dir, "stage", JOB)) == []


def test_after_import_move_to_dated_folder(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    path = csv_drop("profiles_mv.csv", rows_csv(2))
    cfg = xpconfig({JOB: {"source": {"after_import": {"action": "move",
                                                      "to": "archive/%Y-%m-%d"}}}})
    days = {datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}
    r = once(cfg, state_dir)
    days.add(datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"))
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(path)
    made = sorted(os.listdir(outgoing(sshd, "archive")))
    assert len(made) == 1 and made[0] in days, made
    assert (outgoing(sshd, "archive", made[0], "profiles_mv.csv").read_text()
            == rows_csv(2))
    evs = events_for(state_dir, path)
    assert evs.index("imported") < evs.index("after"), evs


def test_after_import_move_strftime_is_utc(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_tz.csv", rows_csv(1))
    cfg = xpconfig({JOB: {"source": {"after_import": {"action": "move",
                                                      "to": "archive/%Y%m%dT%H"}}}})
    # a zone far from UTC: the folder still carries the UTC hour
    r = harness.run_xpimportd(["-c", cfg, "-S", state_dir, "--once"],
                              env={"TZ": "Pacific/Kiritimati"})
    now = datetime.datetime.now(datetime.timezone.utc)
    assert r.returncode == 0, r.stderr
    made = os.listdir(outgoing(sshd, "archive"))
    ok = {(now - datetime.timedelta(minutes=m)).strftime("%Y%m%dT%H") for m in (0, 1)}
    assert len(made) == 1 and made[0] in ok, (made, ok)


def test_after_import_move_to_absolute_folder(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    path = csv_drop("profiles_abs.csv", rows_csv(2))
    target = Path(sshd.root, "elsewhere", "done")
    cfg = xpconfig({JOB: {"source": {"after_import": {"action": "move", "to": str(target)}}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(path)
    assert (target / "profiles_abs.csv").read_text() == rows_csv(2)
    assert not outgoing(sshd, str(target).lstrip("/")).exists()


def test_after_failure_move_with_reject_report(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    bad = rows_csv(3) + ",nobody@example.com,1,No Id\n"  # line 5: no user_id
    path = csv_drop("profiles_bad.csv", bad)
    good = csv_drop("profiles_good.csv", rows_csv(2, start=10), mtime=time.time() + 60)
    cfg = xpconfig({JOB: {"source": {"after_import": {"action": "move", "to": "archive"},
                                     "after_failure": {"action": "move", "to": "failed",
                                                       "upload_rejects": True}},
                          "validation": {"max_invalid_rows": 0}}})
    r = once(cfg, state_dir)
    assert r.returncode == 1, r.stderr
    assert "over the error budget" in r.stderr
    # nothing of the bad file was posted
    assert all(not uid.startswith("u00000") for uid in posted_user_ids(fakeapi))
    assert not os.path.exists(path)
    failed = outgoing(sshd, "failed")
    assert sorted(os.listdir(failed)) == ["profiles_bad.csv", "profiles_bad.csv.rejects.csv"]
    assert (failed / "profiles_bad.csv").read_text() == bad
    report = (failed / "profiles_bad.csv.rejects.csv").read_text()
    assert report.splitlines()[0].startswith("line,column,rule")
    assert "5,user_id,required" in report, report
    assert "nobody@example.com" in report
    # the reject report is the one the run kept locally
    rec = one_record(r)
    f = rec["files"][0]
    assert f["outcome"] == "failed" and f["reject_report"]
    assert Path(f["reject_report"]).read_text() == report
    evs = events_for(state_dir, path)
    assert "failed" in evs and "imported" not in evs
    # a run stops at the first file it could not finish: the good file waits for the next
    assert os.path.exists(good)
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert posted_user_ids(fakeapi) == ["u000010", "u000011"]
    assert outgoing(sshd, "archive", "profiles_good.csv").exists()
    # the failed file is not taken again, and failed/ is outside the job's folder listing
    assert sorted(os.listdir(failed)) == ["profiles_bad.csv", "profiles_bad.csv.rejects.csv"]


def test_after_failure_leave_with_reject_report_next_to_it(sshd, fakeapi, xpconfig,
                                                            state_dir, csv_drop):
    bad = rows_csv(1) + "u9,x@example.com,maybe,Bad\n"
    path = csv_drop("profiles_bad2.csv", bad)
    cfg = xpconfig({JOB: {"source": {"after_failure": {"action": "leave",
                                                       "upload_rejects": True}}}})
    r = once(cfg, state_dir)
    assert r.returncode == 1, r.stderr
    assert Path(path).read_text() == bad
    report = Path(path + ".rejects.csv")
    assert report.exists() and "email_subscription" in report.read_text()
    # the bad file is not retried
    r = once(cfg, state_dir)
    assert fakeapi.imports() == []
    assert sorted(os.listdir(outgoing(sshd))) == ["profiles_bad2.csv",
                                                 "profiles_bad2.csv.rejects.csv"]


def test_uploaded_reject_report_is_not_imported(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    path = csv_drop("profiles_bad3.csv", rows_csv(1) + "u9,x@example.com,maybe,Bad\n")
    cfg = xpconfig({JOB: {"source": {"after_failure": {"action": "leave",
                                                       "upload_rejects": True}}}})
    assert once(cfg, state_dir).returncode == 1
    assert Path(path + ".rejects.csv").exists()
    r = once(cfg, state_dir)
    assert "rejects.csv" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    assert one_record(r)["files"] == []


def test_recursive_does_not_relist_the_archive(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    csv_drop("profiles_arch.csv", rows_csv(2))
    cfg = xpconfig({JOB: {"source": {"recursive": True,
                                     "after_import": {"action": "move", "to": "archive"}}}})
    assert once(cfg, state_dir).returncode == 0
    assert outgoing(sshd, "archive", "profiles_arch.csv").exists()
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert "duplicate content" not in r.stderr
    assert one_record(r)["files"] == [], "the archived file was fetched again"


def test_recursive_archive_not_imported_twice_with_duplicate_import(sshd, fakeapi, xpconfig,
                                                                   state_dir, csv_drop):
    csv_drop("profiles_arch2.csv", rows_csv(2))
    cfg = xpconfig({JOB: {"source": {"recursive": True, "duplicate_content": "import",
                                     "after_import": {"action": "move", "to": "archive"}}}})
    assert once(cfg, state_dir).returncode == 0
    once(cfg, state_dir)
    assert len(fakeapi.imports()) == 1, "the archived copy was imported again"


def test_no_staged_copy_kept_after_skip_or_failure(sshd, fakeapi, xpconfig, state_dir,
                                                  csv_drop):
    csv_drop("profiles_s1.csv", rows_csv(2), mtime=time.time() - 300)
    csv_drop("profiles_s2.csv", rows_csv(2), mtime=time.time() - 200)        # duplicate
    csv_drop("profiles_s3.csv", rows_csv(1) + ",x@example.com,1,No Id\n")  # fails
    r = once(xpconfig(), state_dir)
    assert r.returncode == 1
    assert [f["outcome"] for f in one_record(r)["files"]] == ["imported", "skipped", "failed"]
    left = os.listdir(Path(state_dir, "stage", JOB))
    assert left == [], f"staged copies of finished files kept: {left}"


def test_symlink_choice_is_documented():
    text = (harness.REPO / "man" / "xpimportd.yaml.5").read_text()
    assert "symlink" in text.lower() or "symbolic link" in text.lower()


# ---------------------------------------------------------------------------------------
# 8. Order
# ---------------------------------------------------------------------------------------

def test_oldest_first_one_file_at_a_time(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    now = time.time()
    # names in the opposite order of age
    csv_drop("a.csv", rows_csv(30, prefix="a"), mtime=now - 100)
    csv_drop("b.csv", rows_csv(30, prefix="b"), mtime=now - 300)
    csv_drop("c.csv", rows_csv(30, prefix="c"), mtime=now - 200)
    # same mtime: by name
    csv_drop("e.csv", rows_csv(30, prefix="e"), mtime=now - 50)
    csv_drop("d.csv", rows_csv(30, prefix="d"), mtime=now - 50)
    cfg = xpconfig({JOB: {"batch": {"size": 10}}}, projects_extra={"main": {"max_in_flight": 4}})
    fakeapi.faults([{"delay": 0.02}] * 100)
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    reqs = fakeapi.imports()
    firsts = [q["rows"][0][0][0] for q in sorted(reqs, key=lambda q: q["seq"])]
    assert len(firsts) == 15
    # every request of one file before any of the next: oldest first, then by name
    assert firsts == list("bbbcccaaadddeee"), firsts
    # and no file's requests overlap the next file's in time
    by_file = {}
    for q in reqs:
        by_file.setdefault(q["rows"][0][0][0], []).append(q["time"])
    order = "bcade"
    for x, y in zip(order, order[1:]):
        assert max(by_file[x]) <= min(by_file[y])
    assert [f["name"] for f in one_record(r)["files"]] == \
        ["b.csv", "c.csv", "a.csv", "d.csv", "e.csv"]


# ---------------------------------------------------------------------------------------
# 9. Listing
# ---------------------------------------------------------------------------------------

def test_recursive_and_globs(sshd, fakeapi, xpconfig, state_dir, csv_drop):
    top = csv_drop("profiles_top.csv", rows_csv(1, prefix="t"))
    sub = csv_drop("profiles_sub.csv", rows_csv(1, prefix="s"), subdir="outgoing/sub")
    deep = csv_drop("profiles_deep.csv", rows_csv(1, prefix="d"), subdir="outgoing/sub/deeper")
    csv_drop("profiles_x_test.csv", rows_csv(1, prefix="x"), subdir="outgoing/sub")
    csv_drop("other.csv", rows_csv(1, prefix="o"))
    csv_drop("profiles_top.txt", rows_csv(1, prefix="q"))
    # not recursive: the top folder only
    cfg = xpconfig({JOB: {"source": {"include": ["profiles_*.csv"],
                                     "exclude": ["*_test.csv"]}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert [f["path"] for f in one_record(r)["files"]] == [top]
    # recursive: the subfolders too, the same globs on the base name
    cfg = xpconfig({JOB: {"source": {"include": ["profiles_*.csv"], "exclude": ["*_test.csv"],
                                     "recursive": True}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert sorted(f["path"] for f in one_record(r)["files"]) == sorted([sub, deep])
    assert sorted(u[0] for u in posted_user_ids(fakeapi)) == ["d", "s", "t"]


def test_symlinks_are_not_taken(sshd, fakeapi, xpconfig, state_dir, csv_drop, tmp_path):
    """Documented choice (xpimportd.yaml(5) is silent; select.c: "directories, symlinks:
    never taken"): a symlink in the folder is skipped silently, whether it points to a file
    in the folder, outside it, or nowhere; a symlinked directory is not descended into."""
    outside = tmp_path / "outside.csv"
    outside.write_text(rows_csv(1, prefix="o"))
    real = csv_drop("real.csv", rows_csv(1, prefix="r"))
    d = outgoing(sshd)
    os.symlink(outside, d / "link_out.csv")
    os.symlink(real, d / "link_in.csv")
    os.symlink(tmp_path / "missing.csv", d / "dangling.csv")
    linked_dir = tmp_path / "linked_dir"
    linked_dir.mkdir()
    (linked_dir / "in_linked_dir.csv").write_text(rows_csv(1, prefix="l"))
    os.symlink(linked_dir, d / "dirlink")
    cfg = xpconfig({JOB: {"source": {"recursive": True}}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert [f["path"] for f in one_record(r)["files"]] == [real]
    assert posted_user_ids(fakeapi) == ["r000000"]
    assert job_state(state_dir)["waiting"] == []
    assert all(e["path"] == real for e in ledger_events(state_dir))
    print("symlinks: link_out.csv, link_in.csv, dangling.csv and dirlink/ were not taken, "
          "not listed as waiting and not logged")


# ---------------------------------------------------------------------------------------
# 12. A listing failure
# ---------------------------------------------------------------------------------------

def test_missing_source_path_fails_the_run(sshd, fakeapi, xpconfig, state_dir):
    missing = sshd.root + "/no-such-folder"
    cfg = xpconfig({JOB: {"source": {"path": missing}}})
    r = once(cfg, state_dir)
    assert r.returncode == 1, r.stderr
    assert f"cannot list '{missing}' on 127.0.0.1:{sshd.port}" in r.stderr
    assert "no new complete files" not in r.stderr
    rec = one_record(r)
    assert rec["outcome"] == "failed" and missing in rec["error"]
    assert job_state(state_dir)["last_run"]["outcome"] == "failed"


def test_unreadable_source_path_fails_the_run(sshd, fakeapi, xpconfig, state_dir):
    # a file where the folder should be
    notdir = outgoing(sshd, "plainfile")
    notdir.write_text("x\n")
    cfg = xpconfig({JOB: {"source": {"path": str(notdir)}}})
    r = once(cfg, state_dir)
    assert r.returncode == 1, r.stderr
    assert f"cannot list '{notdir}'" in r.stderr
    assert "no new complete files" not in r.stderr


# ---------------------------------------------------------------------------------------
# 10. A transfer cut off midway
# ---------------------------------------------------------------------------------------

PAD = 60000


def padded_csv(path, megabytes):
    """user_id,first_name,padding with ~60 KB rows: a big file of few rows (the padding
    column is not an attribute, so it is not imported)."""
    n = megabytes * 1024 * 1024 // (PAD + 20)
    with open(path, "w") as f:
        f.write("user_id,first_name,padding\n")
        for i in range(n):
            f.write(f"p{i:06d},Name {i},{chr(97 + i % 26) * PAD}\n")
    return n


def descendants(pid):
    out = []
    for k in harness._children(pid):
        out.append(k)
        out.extend(descendants(k))
    return out


def signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def start_once(cfg, state_dir, tmp_path, name):
    out = open(tmp_path / f"{name}.out", "w+")
    err = open(tmp_path / f"{name}.err", "w+")
    p = subprocess.Popen([str(harness.XPIMPORTD), "-c", cfg, "-S", state_dir, "--once"],
                         env=harness.program_env(), stdin=subprocess.DEVNULL, stdout=out,
                         stderr=err)
    p.out, p.err = out, err
    return p


def wait_partial_stage(p, state_dir, at_least=512 * 1024, timeout=30):
    """Wait until the staging file of the fetch in progress has `at_least` bytes; its size."""
    stage = Path(state_dir, "stage", JOB)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            break
        for f in stage.glob("*.part") if stage.exists() else ():
            try:
                size = f.stat().st_size
            except FileNotFoundError:
                continue
            if size >= at_least:
                return size
        time.sleep(0.002)
    p.err.seek(0)
    raise AssertionError("the fetch was not caught in progress (finished or never "
                         f"started): rc={p.poll()} {p.err.read()[-2000:]}")


def assert_nothing_staged_as_complete(state_dir, path):
    stage = Path(state_dir, "stage", JOB)
    left = sorted(os.listdir(stage)) if stage.exists() else []
    assert left == [], f"staging files left behind: {left}"
    assert "fetched" not in events_for(state_dir, path)
    assert "imported" not in events_for(state_dir, path)


def test_stalled_transfer_fails_fast_and_is_fetched_again(sshd, fakeapi, xpconfig, state_dir,
                                                          csv_drop, tmp_path):
    path = str(outgoing(sshd, "big_stall.csv"))
    n = padded_csv(path, 30)
    size = os.path.getsize(path)
    cfg = xpconfig(extra=site(stall_timeout="2s"))
    p = start_once(cfg, state_dir, tmp_path, "stall")
    kids = []
    try:
        got = wait_partial_stage(p, state_dir)
        kids = descendants(sshd.proc.pid)
        assert kids, "no per-connection sshd process"
        signal_all(kids, signal.SIGSTOP)
        t0 = time.monotonic()
        rc = p.wait(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        signal_all(kids, signal.SIGCONT)
        signal_all(kids, signal.SIGTERM)
    p.err.seek(0)
    err = p.err.read()
    print(f"stalled after {got} of {size} bytes; the run ended {elapsed:.1f}s later")
    assert rc == 1, err
    assert got < size
    assert elapsed < 8, f"the run took {elapsed:.1f}s to notice a 2s stall"
    line = log_lines(err, "fetch failed")
    assert line and f"cannot read '{path}' on 127.0.0.1:{sshd.port}: no response for 2 s" \
        in line[0], err
    assert_nothing_staged_as_complete(state_dir, path)
    assert fakeapi.imports() == []

    # the server is back: the next run fetches the whole file and imports it
    r = once(cfg, state_dir, timeout=120)
    assert r.returncode == 0, r.stderr
    f = one_record(r)["files"][0]
    assert f["outcome"] == "imported" and f["rows_read"] == n
    assert f["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert sum(q["n_rows"] for q in fakeapi.imports()) == n
    assert events_for(state_dir, path).count("imported") == 1


def test_server_gone_midway_then_restarted(sshd, fakeapi, xpconfig, state_dir, csv_drop,
                                           tmp_path):
    path = str(outgoing(sshd, "big_gone.csv"))
    n = padded_csv(path, 30)
    cfg = xpconfig(extra=site(stall_timeout="2s"))
    p = start_once(cfg, state_dir, tmp_path, "gone")
    try:
        wait_partial_stage(p, state_dir)
        sshd.stop()          # the listener and every per-connection process
        t0 = time.monotonic()
        rc = p.wait(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    p.err.seek(0)
    err = p.err.read()
    assert rc == 1, err
    assert elapsed < 8
    line = log_lines(err, "fetch failed")
    assert line and f"cannot read '{path}' on 127.0.0.1:{sshd.port}" in line[0], err
    assert_nothing_staged_as_complete(state_dir, path)
    assert fakeapi.imports() == []
    # the same port again (with a new host key, trusted again)
    sshd.restart_with_new_host_key()
    sshd.write_known_hosts()
    r = once(cfg, state_dir, timeout=120)
    assert r.returncode == 0, r.stderr
    assert one_record(r)["files"][0]["rows_read"] == n
    assert sum(q["n_rows"] for q in fakeapi.imports()) == n


# ---------------------------------------------------------------------------------------
# 11. A 200 MB file in bounded memory
# ---------------------------------------------------------------------------------------

RSS_LIMIT_KIB = 64 * 1024


def write_simple_rows(path, target_bytes):
    n = 0
    with open(path, "w") as f:
        f.write("user_id,first_name\n")
        written = 19
        chunk = 200000
        while written < target_bytes:
            text = "".join(f"u{i:07d},Name {i}\n" for i in range(n + 1, n + chunk + 1))
            f.write(text)
            written += len(text)
            n += chunk
    return n


@pytest.mark.timeout(300)
def test_200mb_file_streams_in_bounded_memory(sshd, xpconfig, state_dir, tmp_path, certs):
    api = harness.FakeAPI.start(tmp_path / "api-light", certs_dir=certs["dir"], task_delay=0,
                                extra_args=("--no-store", "--no-rows"))
    try:
        path = str(outgoing(sshd, "huge.csv"))
        t0 = time.monotonic()
        n = write_simple_rows(path, 200 * 1024 * 1024)
        size = os.path.getsize(path)
        assert size >= 200 * 1024 * 1024
        gen = time.monotonic() - t0
        cfg = harness.write_config(tmp_path, sshd, api,
                                   {JOB: {"mapping": {"auto": False,
                                                      "columns": {"user_id": "user_id",
                                                                  "first_name": "first_name"}}}})
        t0 = time.monotonic()
        r = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KIB=%M",
                            str(harness.XPIMPORTD), "-c", cfg, "-S", state_dir, "--once"],
                           env=harness.program_env(), text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=280)
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr[-3000:]
        m = re.search(r"MAXRSS_KIB=(\d+)", r.stderr)
        assert m, r.stderr[-2000:]
        rss = int(m.group(1))
        reqs = [q for q in api.imports(rows=False) if q["status"] in (200, 202)]
        total = sum(q["n_rows"] for q in reqs)
        print(f"200 MB file: {size} bytes, {n} rows generated in {gen:.1f}s, imported in "
              f"{took:.1f}s, {len(reqs)} requests, peak RSS of xpimportd {rss} KiB "
              f"({rss / 1024:.1f} MiB)")
        assert total == n
        assert rss < RSS_LIMIT_KIB, f"peak RSS {rss} KiB"
        evs = [e["ev"] for e in ledger_events(state_dir)]
        assert evs.count("imported") == 1
        assert os.listdir(Path(state_dir, "stage", JOB)) == []
    finally:
        api.stop()
