"""xpimportd as a systemd service: sd_notify protocol (READY, STATUS, WATCHDOG, RELOADING,
STOPPING) over a fake NOTIFY_SOCKET, SIGHUP reloads, SIGTERM, and `-n`."""

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

import harness


class NotifyListener:
    """A fake systemd notify socket: records (monotonic time, message) pairs."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def keys(self):
        return [m.split("=", 1)[0] for _, m in self.messages]

    def wait_for(self, text, timeout=15):
        return harness.wait_for(lambda: any(m.startswith(text) for _, m in self.messages),
                                timeout=timeout, what=f"notify {text}")

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = NotifyListener(tmp_path / "notify.sock")
    yield n
    n.close()


def test_check_config_ok_and_errors(sshd, fakeapi, xpconfig, tmp_path):
    cfg = xpconfig()
    r = harness.run_xpimportd(["-n", "-c", cfg])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("configuration OK")
    job = Path(cfg).parent / "jobs.d" / "crm-daily.yaml"
    job.write_text(job.read_text().replace("settle: 0s", "settle: soon\n  sttle: 1s"))
    r = harness.run_xpimportd(["-n", "-c", cfg])
    assert r.returncode == 3
    lines = r.stdout.splitlines()
    assert any(l.startswith(f"{job}:") and "settle" in l for l in lines), r.stdout
    assert any("unknown key 'sttle'" in l for l in lines), r.stdout
    assert lines[-1] == "configuration invalid: 2 errors"


def test_notify_ready_status_watchdog_reload_stop(sshd, fakeapi, xpconfig, state_dir, notify,
                                                  daemons):
    cfg = xpconfig()
    d = daemons(["-c", cfg, "-S", state_dir],
                env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    notify.wait_for("READY=1")
    notify.wait_for("STATUS=")
    status = [m for _, m in notify.messages if m.startswith("STATUS=")][-1]
    assert "1 jobs" in status and "next run" in status
    # the watchdog is pinged at half of WATCHDOG_USEC from the loop
    time.sleep(1.0)
    pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
    assert len(pings) >= 3, notify.messages
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < 0.4, gaps

    # a broken configuration is rejected with its errors; the old one keeps running
    main = Path(cfg)
    good = main.read_text()
    main.write_text(good + "bogus_key: 1\n")
    n_before = len(notify.messages)
    d.signal(signal.SIGHUP)
    d.wait_log("configuration reload rejected")
    log = d.log()
    assert f"{main}:" in log and "unknown key 'bogus_key'" in log
    notify.wait_for("RELOADING=1")
    after = [m for _, m in notify.messages[n_before:]]
    assert after.index(next(m for m in after if m.startswith("RELOADING=1"))) < \
        len(after) - 1 - after[::-1].index("READY=1")
    # a good one is applied
    main.write_text(good)
    d.signal(signal.SIGHUP)
    d.wait_log("configuration reloaded")
    assert d.proc.poll() is None

    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    assert time.monotonic() - t0 < 5
    assert "STOPPING=1" in [m for _, m in notify.messages]
    assert "internal error" not in d.log()  # every handle closed at exit


def test_sigterm_during_import_exits_and_resumes(sshd, fakeapi, xpconfig, state_dir, csv_drop,
                                                 daemons):
    lines = ["user_id,first_name"] + [f"u{i:05d},N{i}" for i in range(5000)]
    csv_drop("slow.csv", "\n".join(lines) + "\n")
    fakeapi.faults([{"delay": 0.3}] * 100)
    cfg = xpconfig({"crm-daily": {"batch": {"size": 250},
                                  "schedule": {"every": "1h", "run_at_start": True}}},
                   projects_extra={"main": {"max_in_flight": 1}})
    d = daemons(["-c", cfg, "-S", state_dir])
    harness.wait_for(lambda: len(fakeapi.imports()) >= 2, timeout=20, what="two batches")
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    assert time.monotonic() - t0 < 3, "stop must not wait for the whole file"
    posted_before = len(fakeapi.imports())
    assert posted_before < 20
    fakeapi.faults([])
    r = harness.run_xpimportd(["-c", cfg, "-S", state_dir, "--once"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert len(fakeapi.profiles()) == 5000
    assert len(fakeapi.imports()) <= 20 + 1


SEED = ("user_id,email,email_subscription,first_name\n"
        "fe56bc676be78,sam@example.com,1,Sam\n")


def test_every_schedule_runs_and_disabled_job_never(sshd, fakeapi, xpconfig, state_dir, csv_drop,
                                                    daemons):
    cfg = xpconfig({"crm-daily": {"schedule": {"every": "1s"}},
                    "off": {"enabled": False, "schedule": {"every": "1s"},
                            "source": {"include": ["never_*.csv"]}}})
    d = daemons(["-c", cfg, "-S", state_dir, "-v"])
    d.wait_log("started")
    csv_drop("profiles_late.csv", SEED)   # dropped after start: a scheduled run takes it
    harness.wait_for(lambda: fakeapi.profiles().get("fe56bc676be78"), timeout=15,
                     what="scheduled import")
    time.sleep(1.5)
    assert not (Path(state_dir) / "runs" / "off").exists(), "a disabled job must not run"
    assert len(fakeapi.imports()) == 1


def test_overlapping_runs_are_coalesced_and_parallel_jobs_bounded(sshd, fakeapi, xpconfig,
                                                                  state_dir, csv_drop, daemons):
    csv_drop("profiles_1.csv", SEED)
    csv_drop("other_1.csv", SEED.replace("fe56bc676be78", "other1"))
    fakeapi.faults([{"delay": 2.5}, {"delay": 2.5}])
    cfg = xpconfig({"crm-daily": {"schedule": {"every": "1s", "run_at_start": True},
                                  "source": {"include": ["profiles_*.csv"]}},
                    "second": {"schedule": {"every": "1h", "run_at_start": True},
                               "source": {"include": ["other_*.csv"]}}},
                   extra={"max_parallel_jobs": 1})
    d = daemons(["-c", cfg, "-S", state_dir])
    d.wait_log("waiting for a free slot", timeout=10)
    d.wait_log("coalesced", timeout=10)
    harness.wait_for(lambda: len(fakeapi.profiles()) == 2, timeout=20, what="both jobs")
    reqs = fakeapi.imports()
    # never two runs at once with max_parallel_jobs 1: the requests do not overlap
    assert len(reqs) == 2
