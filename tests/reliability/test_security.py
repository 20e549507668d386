"""Part 7: security. Forged/unknown host keys and bad TLS certificates are refused before any
credential or row is sent; canary secrets never leave where they belong; every file the daemon
creates is 0600 and every directory 0700 (whatever the umask); the unit's systemd-analyze
exposure is <= 1.5."""

import os
import re
import secrets
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

import harness
import relutil as R

SEED_CSV = ("user_id,email,email_subscription,first_name\n"
            "sec1,sec1@example.com,1,One\nsec2,sec2@example.com,1,Two\n")
AUTH_WORDS = ("publickey", "Accepted", "Failed", "Postponed", "userauth", "password")


def _sshd_auth_lines(sshd, since):
    return [x for x in sshd.log()[since:].splitlines() if any(w in x for w in AUTH_WORDS)]


@pytest.mark.parametrize("case", ["unknown (empty known_hosts)", "changed (new host key)",
                                  "pin mismatch (host_key_sha256)"])
def test_host_key_refused_before_authentication(env, case):
    e = env()
    e.drop("profiles_hk.csv", SEED_CSV)
    extra = None
    if case.startswith("unknown"):
        empty = e.tmp / "empty_known_hosts"
        empty.write_text("")
        extra = {"sites": {"partner-a": {"known_hosts_file": str(empty)}}}
    elif case.startswith("pin"):
        extra = {"sites": {"partner-a": {"known_hosts_file": None,
                                         "host_key_sha256": "SHA256:" + "A" * 43}}}
    e.config({}, extra=extra)
    if case.startswith("changed"):
        e.sshd.restart_with_new_host_key()
    mark = len(e.sshd.log())
    r, secs = e.once(timeout=60)
    R.add("faults injected")
    assert r.returncode == 1, r.stderr
    assert "SHA256:" in r.stderr and ("not known" in r.stderr or "changed" in r.stderr or
                                      "pin" in r.stderr or "does not match" in r.stderr), r.stderr
    auth = _sshd_auth_lines(e.sshd, mark)
    assert auth == [], f"the client got as far as authentication: {auth}"
    assert e.api.requests() == [], "the API was contacted"
    err = [x[3:] for x in r.stderr.splitlines() if x.startswith("<3>")][0]
    R.part("security", f"host key {case}: refused in {secs:.1f} s, 0 auth attempts in the "
           f"sshd log, 0 API requests: {err}")


@pytest.mark.parametrize("kind,ca", [("expired", True), ("wronghost", True),
                                     ("selfsigned", False), ("selfsigned", True)])
def test_bad_tls_certificate_refused_before_any_request(env, kind, ca):
    e = env(cert=kind)
    e.drop("profiles_tls.csv", SEED_CSV)
    projects = {"main": {"retry": {"max_attempts": 2, "initial_backoff": "100ms",
                                   "max_backoff": "200ms"}}}
    if not ca:
        projects["main"]["ca_file"] = None       # the system trust store
    e.config({}, projects_extra=projects)
    r, secs = e.once(timeout=60)
    R.add("faults injected")
    assert r.returncode == 1, r.stderr
    reqs = e.api.requests()
    assert reqs == [], f"the API double received {len(reqs)} requests"
    assert re.search(r"certificate|SSL|TLS", r.stderr), r.stderr
    assert R.imported_counts(e.state) == {}
    err = [x[3:] for x in r.stderr.splitlines() if x.startswith("<3>")][0]
    R.part("security", f"TLS {kind} {'with the harness CA as ca_file' if ca else 'without ca_file'}: "
           f"refused in {secs:.1f} s, 0 requests at the API: {err}")


def _modes(root):
    bad = []
    for d, dirs, files in os.walk(root):
        for n in dirs:
            m = stat.S_IMODE(os.lstat(os.path.join(d, n)).st_mode)
            if m != 0o700:
                bad.append((os.path.join(d, n), oct(m)))
        for n in files:
            m = stat.S_IMODE(os.lstat(os.path.join(d, n)).st_mode)
            if m != 0o600:
                bad.append((os.path.join(d, n), oct(m)))
    m = stat.S_IMODE(os.stat(root).st_mode)
    if m != 0o700:
        bad.append((root, oct(m)))
    return bad


def test_canaries_never_leak_and_modes_are_private(env, tmp_path):
    canary_token = "xp-CANARY-" + secrets.token_hex(16)
    canary_mail = f"canary-{secrets.token_hex(6)}@example.com"
    e = env()
    # the canary apptoken (the API double accepts it)
    e.api.stop()
    e.api = harness.FakeAPI.start(e.tmp / "api2", token=canary_token, task_delay=0.05,
                                  certs_dir=e.api.certs["dir"])
    key_text = Path(e.sshd.client_key).read_text()
    key_lines = [x for x in key_text.splitlines() if x and not x.startswith("-----")]
    canary_key = max(key_lines, key=len)          # a line of the private key's base64 body
    # a valid file of 300 rows (async 202 + task polling) and a row with the canary e-mail
    # rejected for its subscription value
    rows = ["user_id,email,email_subscription,first_name"]
    rows += [f"c{i:04d},c{i}@example.com,1,Name {i}" for i in range(300)]
    rows.append(f"c-canary,{canary_mail},7,Canary")
    e.drop("profiles_canary.csv", "\n".join(rows) + "\n")
    os.chmod(e.state, 0o755)    # the daemon must tighten it
    e.config({"batch": {"size": 100}, "validation": {"max_invalid_rows": 1},
              "schedule": {"every": "1h", "run_at_start": True}},
             projects_extra={"main": {"max_in_flight": 1}})
    e.api.faults([{"delay": 0.4}] * 3)      # keep the daemon busy while /proc is read
    log = e.tmp / "daemon.log"
    with open(log, "wb") as lf:
        d = subprocess.Popen([str(harness.XPIMPORTD), "-c", e.cfg, "-S", e.state],
                             env=harness.program_env(), stdin=subprocess.DEVNULL, stdout=lf,
                             stderr=lf, umask=0)
    try:
        harness.wait_for(lambda: len(e.api.imports()) >= 1, timeout=30, what="first batch")
        proc = {}
        for name in ("cmdline", "environ"):
            proc[name] = Path(f"/proc/{d.pid}/{name}").read_bytes().decode(errors="replace")
        harness.wait_for(lambda: "imported 300 rows" in log.read_text(errors="replace"),
                         timeout=60, what="import")
        time.sleep(0.3)
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait(20)
    # xpimportctl's views of the same state
    ctl = []
    for args in (["status", "--json"], ["history", "crm-daily", "--json"]):
        p = harness.run_xpimportctl(["-c", e.cfg, "-S", e.state, *args])
        ctl.append(p.stdout + p.stderr)
    rid = R.run_records(e.state)[-1]["run_id"]
    p = harness.run_xpimportctl(["-c", e.cfg, "-S", e.state, "show", rid, "--json"])
    ctl.append(p.stdout + p.stderr)

    places = {"daemon stdout+stderr": log.read_text(errors="replace"),
              "/proc/PID/cmdline": proc["cmdline"], "/proc/PID/environ": proc["environ"],
              "xpimportctl status/history/show": "\n".join(ctl)}
    reject_reports = []
    for f in Path(e.state).rglob("*"):
        if not f.is_file():
            continue
        text = f.read_bytes().decode(errors="replace")
        if f.name.endswith(".rejects.csv"):
            reject_reports.append(text)
            places[f"reject report {f.name} (token, key only)"] = text.replace(canary_mail, "")
        elif "/stage/" in str(f):
            continue    # a staged copy of the partner's file holds its data by definition
        else:
            places[str(f.relative_to(e.state))] = text
    leaks = [(where, what) for where, text in places.items()
             for what, c in (("apptoken", canary_token), ("ssh key", canary_key),
                             ("e-mail", canary_mail)) if c in text]
    R.add("secrets leaked", len(leaks))
    assert reject_reports and canary_mail in reject_reports[0], \
        "the rejected row (with the e-mail) belongs in the reject report"
    assert leaks == [], f"canaries found: {leaks}"
    bad = _modes(e.state)
    assert bad == [], f"not 0600/0700 (daemon started with umask 000): {bad}"
    n_files = sum(1 for f in Path(e.state).rglob("*") if f.is_file())
    n_dirs = sum(1 for f in Path(e.state).rglob("*") if f.is_dir()) + 1
    R.part("security", f"canaries (apptoken, a line of the SSH private key, an e-mail in a "
           f"rejected row) searched in {len(places)} places (output, /proc cmdline and "
           f"environ while running, xpimportctl status/history/show, every state file): "
           f"{len(leaks)} found; the e-mail is in the reject report as intended")
    R.part("security", f"modes with umask 000 and a 0755 state directory: {n_files} files all "
           f"0600, {n_dirs} directories all 0700")


def test_systemd_analyze_security_exposure(tmp_path):
    unit = (R.REPO / "systemd" / "xpimportd.service").read_text().replace("@sbindir@",
                                                                           "/usr/sbin")
    path = tmp_path / "xpimportd.service"
    path.write_text(unit)
    p = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout)
    assert m, p.stdout[-2000:]
    level = float(m.group(1))
    R.part("security", f"systemd-analyze security --offline=yes: exposure {level} (bound 1.5)")
    assert level <= 1.5, p.stdout[-3000:]
