"""Shared helpers of the reliability and security suite (tests/reliability).

The figures every part adds to (FIG) are printed as one table at the end of the session by
conftest.py and written to tests/RELIABILITY.md after a full run. Knobs (environment):

  XP_SEED          seed of every random choice (default: the current time; always printed)
  XP_CRASH_LOOPS   SIGKILLs of the crash loop (default 50)
  XP_SWEEP_POINTS  cap of the strace kill sweep (default 60)
  XP_SAN_TESTS     the integration tests run against the --enable-sanitizers build: pytest
                   arguments relative to the repository ("all" = tests/integration; default:
                   test_e2e, test_service, test_delivery, test_journal, test_ctl)
  XP_FUZZ_SECONDS  seconds of the short fuzz session per target (default 10)
  XP_SKIP_SLOW     1 = skip the sanitizer build and valgrind (for quick local runs)
  XP_NO_REPORT     1 = do not rewrite tests/RELIABILITY.md after a full run
  XP_BIN_DIR       (harness.py) run against the programs of another build
"""

import glob
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter, OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent

SEED = int(os.environ.get("XP_SEED") or int(time.time()) % 1000000)

# the figures of the summary table (names as printed)
FIG = OrderedDict([
    ("crashes survived", 0),
    ("faults injected", 0),
    ("bad inputs tried", 0),
    ("rows lost", 0),
    ("files imported twice", 0),
    ("duplicate batches", 0),
    ("secrets leaked", 0),
])
# per part: list of "name: figures" lines for the report
PARTS = OrderedDict()
BUGS = []


def add(name, n=1):
    FIG[name] += n


def part(name, line):
    """Record and print one line of figures of a part."""
    PARTS.setdefault(name, []).append(line)
    print(f"[{name}] {line}", flush=True)


def rng(tag):
    """A random.Random of its own for one part, derived from SEED."""
    return random.Random(f"{SEED}:{tag}")


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------

HEADER = "user_id,email,email_subscription,first_name,lifetime_value"


def gen_file(tag, n, invalid_every=0):
    """CSV text of n data rows for file `tag` and the profiles the API must hold afterwards
    ({user_id: {email, email_subscription, first_name}}). Every invalid_every-th row has a
    bad email (rejected by validation, within the job's budget)."""
    lines = [HEADER]
    expect = {}
    for i in range(n):
        uid = f"{tag}-{i:06d}"
        name = f"Name {tag} {i}"
        if invalid_every and i % invalid_every == invalid_every - 1:
            lines.append(f"{uid},not-an-email-{i},1,{name},{i}.5")
            continue
        email = f"user{i}.{tag}@example.com"
        lines.append(f"{uid},{email},1,\"{name}\",{i}.5")
        expect[uid] = {"email": email, "email_subscription": 1, "first_name": name}
    return "\n".join(lines) + "\n", expect


def compare_profiles(profiles, expect):
    """-> (missing, extra, wrong): user ids not at the API, at the API but not expected,
    and expected with another value."""
    missing = [u for u in expect if u not in profiles]
    extra = [u for u in profiles if u not in expect]
    wrong = [u for u, want in expect.items() if u in profiles and
             any(profiles[u].get(k) != v for k, v in want.items())]
    return missing, extra, wrong


# ---------------------------------------------------------------------------------------
# State directory
# ---------------------------------------------------------------------------------------

def ledger_events(state_dir, job="crm-daily"):
    p = Path(state_dir) / "ledger" / f"{job}.log"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line.split(" ", 1)[1]))
    return out


def imported_counts(state_dir, job="crm-daily"):
    """Counter path -> number of `imported` events in the ledger."""
    return Counter(e["path"] for e in ledger_events(state_dir, job) if e["ev"] == "imported")


def run_records(state_dir, job="crm-daily"):
    out = []
    for p in sorted(glob.glob(os.path.join(state_dir, "runs", job, "*.json"))):
        with open(p) as f:
            out.append(json.load(f))
    return out


def accepted_batches(api):
    """(accepted import requests, distinct batches among them): a batch is known by its
    first and last user_id."""
    reqs = [q for q in api.imports() if q["status"] in (200, 202)]
    keys = Counter((q["rows"][0][0], q["rows"][-1][0], q["n_rows"]) for q in reqs)
    return len(reqs), len(keys)


# ---------------------------------------------------------------------------------------
# An environment: sshd + API double + config + state directory
# ---------------------------------------------------------------------------------------

class Env:
    """What one test drives: Env(tmp_path, certs) starts a loopback sshd and the API
    double; .config(...) writes the configuration; .drop(name, text) puts a file in the
    SFTP folder; .once(...) runs xpimportd --once."""

    def __init__(self, tmp, certs=None, task_delay=0.3, cert="good", sshd=True):
        self.tmp = Path(tmp)
        self.sshd = harness.Sshd.start(self.tmp / "sshd") if sshd else None
        try:
            self.api = harness.FakeAPI.start(self.tmp / "api", task_delay=task_delay, cert=cert,
                                             certs_dir=certs["dir"] if certs else None)
        except Exception:
            if self.sshd:
                self.sshd.stop()
            raise
        self.state = str(self.tmp / "state")
        os.makedirs(self.state, mode=0o700, exist_ok=True)
        self.cfg = None

    def config(self, job=None, projects_extra=None, extra=None, name="crm-daily"):
        self.cfg = harness.write_config(self.tmp, self.sshd, self.api, {name: job or {}},
                                        projects_extra=projects_extra, extra=extra)
        return self.cfg

    @property
    def outgoing(self):
        return Path(self.sshd.root) / "outgoing"

    def drop(self, name, data, mtime=None):
        p = self.outgoing / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        if mtime is not None:
            os.utime(p, (mtime, mtime))
        return str(p)

    def argv(self, *extra, state=None):
        return [str(harness.XPIMPORTD), "-c", self.cfg, "-S", state or self.state, "--once",
                *map(str, extra)]

    def once(self, *extra, timeout=120, state=None, prefix=(), env=None):
        """Run (prefix +) xpimportd --once -> (CompletedProcess, wall seconds)."""
        t0 = time.monotonic()
        p = subprocess.run([*prefix, *self.argv(*extra, state=state)],
                           env=harness.program_env(env), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           errors="replace", timeout=timeout)
        return p, time.monotonic() - t0

    def reset_state(self):
        """A fresh state directory (the old one is renamed aside) and a fresh API double."""
        old = Path(self.state)
        if old.exists():
            n = 0
            while Path(f"{old}.old{n}").exists():
                n += 1
            old.rename(f"{old}.old{n}")
        os.makedirs(self.state, mode=0o700)
        self.api.reset()

    def stop(self):
        if self.sshd:
            self.sshd.stop()
        self.api.stop()


def kill_landed(rc):
    return rc in (-9, 137)
