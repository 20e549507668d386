"""Fixtures of the reliability and security suite and its summary table.

The integration fixtures (sshd, fakeapi, xpconfig, state_dir, csv_drop, daemons, certs) are
re-exported from tests/integration/conftest.py; `env` is relutil.Env (sshd + API double +
state directory), stopped after the test. At the end of the session one table of figures is
printed; after a full run (the whole directory, no -k/-m) it is also written to
tests/RELIABILITY.md.
"""

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import relutil  # noqa: E402
from integration.conftest import (  # noqa: E402,F401
    certs, csv_drop, daemons, fakeapi, sshd, state_dir, xpconfig)

_T0 = time.monotonic()


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        if HERE not in Path(str(item.fspath)).resolve().parents:
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(300))
        m = item.get_closest_marker("xfail")
        if m is not None:
            reason = m.kwargs.get("reason", "")
            if reason.startswith("BUG:") and reason not in seen:
                seen.add(reason)
                relutil.BUGS.append(f"`{item.nodeid}`: {reason}")


def pytest_sessionstart(session):
    print(f"\nreliability suite: XP_SEED={relutil.SEED} (set XP_SEED to repeat this run)",
          flush=True)


@pytest.fixture
def env(tmp_path, certs):
    made = []

    def make(**kw):
        e = relutil.Env(tmp_path / f"env{len(made)}", certs=certs, **kw)
        made.append(e)
        return e
    yield make
    for e in made:
        e.stop()


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _table():
    rows = list(relutil.FIG.items())
    w = max(len(k) for k, _ in rows)
    out = ["+" + "-" * (w + 2) + "+----------+",
           f"| {'figure'.ljust(w)} |    value |",
           "+" + "-" * (w + 2) + "+----------+"]
    for k, v in rows:
        out.append(f"| {k.ljust(w)} | {str(v).rjust(8)} |")
    out.append("+" + "-" * (w + 2) + "+----------+")
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    elapsed = time.monotonic() - _T0
    tr.write_line("")
    tr.write_line(f"xpimportd reliability and security summary (XP_SEED={relutil.SEED}, "
                  f"{elapsed:.0f} s)")
    for line in _table():
        tr.write_line(line)
    counts = {k: len(tr.stats.get(k, [])) for k in ("passed", "failed", "error", "skipped",
                                                     "xfailed", "xpassed")}
    tr.write_line("tests: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    full = (not config.option.keyword and not config.option.markexpr and
            not config.getoption("deselect", None) and
            all(Path(a).resolve() == HERE for a in config.args))
    if full and os.environ.get("XP_NO_REPORT") != "1":
        _write_report(tr, elapsed, counts)


def _write_report(tr, elapsed, counts):
    try:
        rev = subprocess.run(["git", "-C", str(relutil.REPO), "rev-parse", "--short", "HEAD"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True).stdout.strip()
    except OSError:
        rev = "?"
    lines = ["# xpimportd reliability and security figures", "",
             "Written by `make check-reliability` (tests/reliability/conftest.py) after its "
             "last full run; figures, not adjectives.", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             f"- commit: {rev} (plus the working tree of that moment)",
             f"- machine: nproc {os.cpu_count()}, CPU {_cpu_model()}, "
             f"kernel {platform.release()}",
             f"- XP_SEED={relutil.SEED}; knobs: "
             + ", ".join(f"{k}={os.environ.get(k, '(default)')}"
                         for k in ("XP_CRASH_LOOPS", "XP_SWEEP_POINTS", "XP_SAN_TESTS",
                                   "XP_FUZZ_SECONDS", "XP_SKIP_SLOW", "XP_BIN_DIR")),
             f"- total runtime: {elapsed:.0f} s; tests: "
             + ", ".join(f"{v} {k}" for k, v in counts.items() if v), "",
             "## Summary", "", "| figure | value |", "|---|---:|"]
    for k, v in relutil.FIG.items():
        lines.append(f"| {k} | {v} |")
    lines.append("")
    for name, items in relutil.PARTS.items():
        lines += [f"## {name}", ""]
        lines += [f"- {x}" for x in items]
        lines.append("")
    if relutil.BUGS:
        lines += ["## Known product bugs (tests marked xfail until fixed)", ""]
        lines += [f"- {b}" for b in relutil.BUGS]
        lines.append("")
    manual = HERE / "manual-runs.md"
    if manual.exists():
        lines += [manual.read_text()]
    out = relutil.TESTS / "RELIABILITY.md"
    out.write_text("\n".join(lines))
    tr.write_line(f"figures written to {out}")
