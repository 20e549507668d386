"""Part 6: sanitizers and leaks.

1. An --enable-sanitizers (ASan + UBSan) copy of the tree is built out of place (the working
   tree is copied to a temporary directory: sources, build files, tests; no build products),
   and a subset of tests/integration runs against it through harness.py's XP_BIN_DIR, with
   LeakSanitizer on: any ASan/UBSan/LSan report fails the test (reports go to files that are
   counted afterwards, and ASan's exit code 86 fails the programs' own assertions).
   XP_SAN_TESTS selects the integration tests: a space-separated list of pytest arguments
   relative to the repository ("all" = tests/integration); default SAN_DEFAULT below.
2. Representative runs of the normal build under valgrind memcheck (--leak-check=full
   --errors-for-leak-kinds=definite --error-exitcode=99): an import with 202 tasks, retries
   after 500s, a host key refusal, a dry run, and xpimportctl import: zero definite leaks,
   zero errors.

XP_SKIP_SLOW=1 skips both (say so in the figures)."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import harness
import relutil as R

SAN_DEFAULT = ("tests/integration/test_e2e.py tests/integration/test_service.py "
               "tests/integration/test_delivery.py tests/integration/test_journal.py "
               "tests/integration/test_ctl.py")
# integration tests that fail under the sanitizers because of a product bug reported (and
# reproduced by its own xfail test below); deselected so that the rest stays a strict check
KNOWN_SAN_FAILURES = {}
SKIP_SLOW = os.environ.get("XP_SKIP_SLOW") == "1"
VALGRIND = shutil.which("valgrind") or "/usr/bin/valgrind"

_COPY_IGNORE = shutil.ignore_patterns(
    ".git", "*.o", "*.a", "__pycache__", "autom4te.cache", "config.log", "config.status",
    "config.mk", "bin", "xpimportd", "xpimportctl", "reliability", "corpus")


def _copy_tree(dst):
    dst.mkdir()
    for name in os.listdir(R.REPO):
        src = R.REPO / name
        if name in (".git", "autom4te.cache", "config.log", "config.status", "config.mk"):
            continue
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=_COPY_IGNORE, symlinks=True)
        else:
            shutil.copy2(src, dst / name)
    # unit test binaries are not needed; keep the sources only
    for p in (dst / "tests" / "unit").glob("test_*"):
        if p.suffix != ".c":
            p.unlink()


@pytest.fixture(scope="module")
def san_tree(tmp_path_factory):
    if SKIP_SLOW:
        pytest.skip("XP_SKIP_SLOW=1")
    d = tmp_path_factory.mktemp("san") / "tree"
    t0 = time.monotonic()
    _copy_tree(d)
    log = d.parent / "build.log"
    with open(log, "w") as lf:
        r = subprocess.run(["./configure", "--enable-sanitizers", "-q"], cwd=d, stdout=lf,
                           stderr=subprocess.STDOUT, timeout=300)
        assert r.returncode == 0, log.read_text()[-3000:]
        r = subprocess.run(["make", "-j2", "src/xpimportd", "src/xpimportctl"], cwd=d,
                           stdout=lf, stderr=subprocess.STDOUT, timeout=600)
    assert r.returncode == 0, f"sanitizer build failed:\n{log.read_text()[-4000:]}"
    mk = (d / "config.mk").read_text()
    assert "-fsanitize=address,undefined" in mk, "configure did not enable the sanitizers"
    secs = time.monotonic() - t0
    R.part("sanitizers", f"out-of-place --enable-sanitizers build (ASan+UBSan, copy of the "
           f"working tree): {secs:.0f} s")
    return d


@pytest.mark.timeout(900)
def test_integration_suite_under_asan_ubsan(san_tree, tmp_path):
    sel = os.environ.get("XP_SAN_TESTS") or SAN_DEFAULT
    args = ["tests/integration"] if sel == "all" else sel.split()
    logs = tmp_path / "san-logs"
    logs.mkdir()
    env = dict(os.environ)
    env.update({
        "XP_BIN_DIR": str(san_tree / "src"),
        "ASAN_OPTIONS": f"detect_leaks=1:halt_on_error=1:exitcode=86:log_path={logs}/asan",
        "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:log_path={logs}/ubsan",
        "LSAN_OPTIONS": "report_objects=0",
    })
    env.pop("PYTEST_ADDOPTS", None)
    t0 = time.monotonic()
    desel = []
    for nodeid in KNOWN_SAN_FAILURES:
        desel += ["--deselect", nodeid]

    def pytest_run(targets):
        return subprocess.run(["/usr/bin/python3", "-m", "pytest", "-q", "-rf",
                               "-p", "no:cacheprovider", *targets], cwd=R.REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=850)
    p = pytest_run([*args, *desel])
    secs = time.monotonic() - t0
    failed = re.findall(r"^FAILED (\S+)", p.stdout, re.M)
    retried = ""
    if failed and p.returncode == 1:
        # a test that fails and then passes on its own is flaky, not a sanitizer finding
        p2 = pytest_run(failed)
        retried = f"; {len(failed)} failed and were rerun: " + \
            ("all passed (flaky: " + ", ".join(failed) + ")" if p2.returncode == 0
             else "still failing")
        if p2.returncode != 0:
            p = p2
        else:
            p = subprocess.CompletedProcess(p.args, 0, p.stdout + p2.stdout)
    reports = sorted(logs.iterdir())
    # reports that reached a test's output instead of the log files
    inline = re.findall(r"runtime error: .*|ERROR: (?:Address|Leak)Sanitizer.*", p.stdout)
    summary = [x for x in p.stdout.splitlines() if re.search(r"\d+ (passed|failed)", x)]
    R.part("sanitizers", f"integration tests under ASan+UBSan+LSan ({' '.join(args)}; "
           f"{len(KNOWN_SAN_FAILURES)} deselected for a reported bug): "
           f"{summary[0] if summary else '?'} in {secs:.0f} s{retried}; "
           f"{len(reports) + len(inline)} sanitizer reports")
    text = "\n".join(f"--- {r.name}\n{r.read_text(errors='replace')[:3000]}" for r in reports[:5])
    assert not reports, f"sanitizer reports:\n{text}"
    assert not inline, "sanitizer reports:\n" + "\n".join(inline[:10])
    assert p.returncode == 0, p.stdout[-6000:]


def test_history_without_runs_under_ubsan(san_tree, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = tmp_path / "xpimportd.yaml"
    cfg.write_text("projects: {}\n")
    p = subprocess.run([str(san_tree / "src" / "xpimportctl"), "-c", str(cfg), "-S", str(state),
                        "history", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60, env=harness.program_env())
    assert "runtime error" not in p.stderr, p.stderr
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------------------------------
# valgrind
# ---------------------------------------------------------------------------------------

def _valgrind(cmd, logfile, timeout=240, suppress=False):
    vg = [VALGRIND, "--leak-check=full", "--errors-for-leak-kinds=definite",
          "--error-exitcode=99", "--show-leak-kinds=definite", "--num-callers=40",
          f"--log-file={logfile}"]
    t0 = time.monotonic()
    p = subprocess.run([*vg, *cmd], env=harness.program_env(), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       errors="replace", timeout=timeout)
    return p, time.monotonic() - t0


@pytest.mark.timeout(900)
def test_valgrind_memcheck_representative_runs(env, tmp_path):
    if SKIP_SLOW:
        pytest.skip("XP_SKIP_SLOW=1")
    e = env(task_delay=0.05)
    text, expect = R.gen_file("vg", 450, 90)
    e.drop("profiles_vg.csv", text)
    e.config({"batch": {"size": 200}, "validation": {"max_invalid_rows": 10}},
             projects_extra={"main": {"max_in_flight": 2,
                                      "retry": {"initial_backoff": "100ms",
                                                "max_backoff": "200ms"}}})
    runs = []

    def check(name, p, secs, want_rc, log):
        vg = Path(log).read_text(errors="replace")
        definite = re.findall(r"definitely lost: ([\d,]+) bytes", vg)
        errors = re.findall(r"ERROR SUMMARY: (\d+) errors from \d+ contexts \(suppressed: "
                            r"(\d+) from", vg)
        assert errors, f"{name}: no valgrind summary:\n{vg[-3000:]}"
        runs.append(f"{name}: exit {p.returncode}, {secs:.0f} s under valgrind, "
                    f"{errors[-1][0]} errors ({errors[-1][1]} suppressed)")
        assert p.returncode != 99, f"{name}: valgrind found errors or definite leaks:\n{vg[-5000:]}"
        assert p.returncode == want_rc, f"{name}: exit {p.returncode}\n{p.stderr[-3000:]}\n{vg[-3000:]}"
        assert "definitely lost" not in vg or all(x == "0" for x in definite), vg[-5000:]
        assert errors[-1][0] == "0", vg[-5000:]
        assert "Invalid read" not in vg and "Invalid write" not in vg and \
            "uninitialised" not in vg, vg[-5000:]

    # 1. dry run (connect, list, fetch, parse, validate; nothing posted)
    log = tmp_path / "vg-dry.log"
    p, s = _valgrind(e.argv("--dry-run"), log)
    check("dry run", p, s, 0, log)
    # 2. import with retries: two 500s, then accepted; 202 tasks polled
    e.api.faults([{"status": 500}, {"status": 500}])
    log = tmp_path / "vg-import.log"
    p, s = _valgrind(e.argv(), log)
    check("import (3 batches, 2 retries after HTTP 500, async tasks)", p, s, 0, log)
    missing, extra, wrong = R.compare_profiles(e.api.profiles(), expect)
    assert not missing and not wrong and not extra
    # 3. host key refusal (the key changed)
    e.sshd.restart_with_new_host_key()
    e.drop("profiles_vg2.csv", "user_id,first_name\nvg2,X\n")
    log = tmp_path / "vg-hostkey.log"
    p, s = _valgrind(e.argv(), log)
    check("host key refusal", p, s, 1, log)
    assert "changed" in p.stderr.lower()
    # 4. xpimportctl import of a local file with a rejected row
    up = tmp_path / "upload.csv"
    up.write_text("user_id,first_name,lifetime_value\nup1,A,1\nup2,B,x\n")
    log = tmp_path / "vg-ctl.log"
    p, s = _valgrind([str(harness.XPIMPORTCTL), "-c", e.cfg, "-S", e.state, "import", "--job",
                      "crm-daily", str(up)], log)
    check("xpimportctl import (1 row rejected)", p, s, 0, log)
    # 5. the configuration check with errors
    bad = Path(e.cfg).parent / "jobs.d" / "crm-daily.yaml"
    bad.write_text(bad.read_text() + "bogus: 1\n")
    log = tmp_path / "vg-check.log"
    p, s = _valgrind([str(harness.XPIMPORTD), "-n", "-c", e.cfg], log)
    check("xpimportd -n with an error", p, s, 3, log)
    for x in runs:
        R.part("valgrind", x + ", 0 bytes definitely lost, no suppressions")


@pytest.mark.timeout(300)
def test_valgrind_without_suppressions(env, tmp_path):
    if SKIP_SLOW:
        pytest.skip("XP_SKIP_SLOW=1")
    e = env(task_delay=0.05)
    e.drop("profiles_vg.csv", "user_id,first_name\nv1,A\n")
    e.config({})
    log = tmp_path / "vg-nosupp.log"
    p, _ = _valgrind(e.argv("--dry-run"), log, suppress=False)
    vg = log.read_text(errors="replace")
    assert p.returncode == 0 and "definitely lost" not in vg, vg[-3000:]
