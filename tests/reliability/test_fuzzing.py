"""Part 5: fuzzing. `make check-fuzz` (build the libFuzzer targets tests/fuzz/fuzz_*.c with
ASan + UBSan if needed, replay every kept corpus and crash input), then a short fresh session
of each target (XP_FUZZ_SECONDS, default 10) into a temporary corpus seeded from the kept one:
new inputs stay in the temporary directory; a crash input is copied into
tests/fuzz/corpus/NAME/ (kept and replayed by `make check` from then on) and fails the test.
The long sessions are `make fuzz FUZZ_SECONDS=N` (see tests/RELIABILITY.md for the last one)."""

import os
import re
import shutil
import subprocess
import time

import pytest

import relutil as R

FUZZ_SECONDS = int(os.environ.get("XP_FUZZ_SECONDS") or 10)
FUZZ_DIR = R.TESTS / "fuzz"


@pytest.fixture(scope="module")
def fuzz_targets():
    if not shutil.which(os.environ.get("FUZZ_CC", "clang")):
        pytest.skip("clang is not installed")
    t0 = time.monotonic()
    p = subprocess.run(["make", "-j2", "check-fuzz"], cwd=R.REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600)
    if p.returncode != 0:
        errs = [x.strip() for x in p.stdout.splitlines() if ": error:" in x]
        R.part("fuzzing", "make check-fuzz FAILED: " + (errs[0] if errs else p.stdout[-300:]))
    assert p.returncode == 0, p.stdout[-4000:]
    replays = re.findall(r"== replay \S+/fuzz_(\w+): (\d+) inputs", p.stdout)
    R.part("fuzzing", "make check-fuzz: " + ", ".join(f"{n} {c} inputs replayed"
                                                       for n, c in replays)
           + f", no crash ({time.monotonic() - t0:.0f} s, build included)")
    return sorted(FUZZ_DIR.glob("bin/fuzz_*"))


def test_fuzz_each_target_briefly(fuzz_targets, tmp_path):
    assert fuzz_targets, "no fuzz target was built"
    for t in fuzz_targets:
        if not os.access(t, os.X_OK) or t.suffix:
            continue
        name = t.name[len("fuzz_"):]
        work = tmp_path / name
        work.mkdir()
        crashes = tmp_path / f"{name}-artifacts"
        crashes.mkdir()
        kept = FUZZ_DIR / "corpus" / name
        p = subprocess.run([str(t), f"-max_total_time={FUZZ_SECONDS}", "-max_len=65536",
                            f"-artifact_prefix={crashes}/", "-print_final_stats=1",
                            str(work), str(kept)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", timeout=FUZZ_SECONDS + 120)
        found = sorted(crashes.iterdir())
        for c in found:
            shutil.copy2(c, kept / c.name)
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", p.stdout)
        cov = re.findall(r"#\d+\s+DONE\s+cov: (\d+)", p.stdout)
        R.add("bad inputs tried", int(runs[-1]) if runs else 0)
        R.part("fuzzing", f"fuzz_{name} {FUZZ_SECONDS} s: {runs[-1] if runs else '?'} inputs "
               f"executed, coverage {cov[-1] if cov else '?'}, {len(list(work.iterdir()))} new "
               f"corpus inputs (not kept), {len(found)} crashes")
        assert not found and p.returncode == 0, \
            f"fuzz_{name} crashed; input kept in {kept}:\n{p.stdout[-4000:]}"
