"""Part 3: storage faults. ENOSPC and EIO injected with strace into the writes and syncs of
the ledger, the staged download, run records and job state (strace -P PATH filters the
ledger and the staged copies, whose names are fixed; run records are written under random
temporary names, so their fsync and rename faults are injected unfiltered), and a tiny tmpfs
state directory that fills up.

After every faulty run: no false "imported" (a file the ledger records imported has all its
valid rows at the API), a run that says it succeeded did import everything; then the fault is
removed and the next run opens the state fine (exit status 0, not 5) and completes with every
row, each file imported once."""

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

import relutil as R

FILES = 2
ROWS = 3000


def _stage_paths(e, paths):
    out = []
    for p in paths:
        h = hashlib.sha256(p.encode()).hexdigest()[:16]
        base = Path(e.state) / "stage" / "crm-daily" / h
        out += [str(base) + ".part", str(base)]
    return out


def _cases(e, paths):
    ledger = str(Path(e.state) / "ledger" / "crm-daily.log")
    stage = []
    for s in _stage_paths(e, paths):
        stage += ["-P", s]
    L = ["-P", ledger]
    c = [("ledger fdatasync EIO, every call", L + ["-e", "inject=fdatasync:error=EIO"])]
    c += [(f"ledger fdatasync EIO, call {n} only", L + ["-e", f"inject=fdatasync:error=EIO:when={n}"])
          for n in (2, 4, 7, 12)]
    c += [("ledger write ENOSPC, every call", L + ["-e", "inject=write:error=ENOSPC"])]
    c += [(f"ledger write ENOSPC, call {n} and later", L + ["-e", f"inject=write:error=ENOSPC:when={n}+"])
          for n in (3, 9)]
    c += [("staged download write ENOSPC, every call", stage + ["-e", "inject=write:error=ENOSPC"]),
          ("staged download write ENOSPC, call 2 and later",
           stage + ["-e", "inject=write:error=ENOSPC:when=2+"]),
          ("staged download fsync EIO", stage + ["-e", "inject=fsync:error=EIO"])]
    c += [("fsync ENOSPC, every call (stage, reject report, run record, job state, dirs)",
           ["-e", "inject=fsync:error=ENOSPC"])]
    c += [(f"fsync ENOSPC, call {n} only", ["-e", f"inject=fsync:error=ENOSPC:when={n}"])
          for n in (1, 3, 6, 10)]
    c += [(f"rename ENOSPC, call {n} only", ["-e", f"inject=rename:error=ENOSPC:when={n}"])
          for n in (1, 2, 4)]
    c += [(f"write ENOSPC (any fd), call {n} only", ["-e", f"inject=write:error=ENOSPC:when={n}"])
          for n in (5, 10, 20, 30, 40)]
    c += [(f"write ENOSPC (any fd), call {n} and later", ["-e", f"inject=write:error=ENOSPC:when={n}+"])
          for n in (15, 30)]
    return c


def _internal_fd(strace_line):
    """An injected write on a libuv-internal fd (eventfd, a pipe other than stdout/stderr)."""
    m = re.search(r"write\((\d+)<([^>]*)>", strace_line)
    return bool(m) and m.group(1) not in ("1", "2") and not m.group(2).startswith("/")


def _invariants(e, per_file, what, faulty_rc):
    """No false imported; a successful run imported everything."""
    profiles = e.api.profiles()
    counts = R.imported_counts(e.state)
    false_imported = []
    for path, expect in per_file.items():
        if counts[path]:
            missing, _, wrong = R.compare_profiles(profiles, expect)
            if missing or wrong:
                false_imported.append((path, len(missing), len(wrong)))
    assert not false_imported, f"{what}: recorded imported without all rows: {false_imported}"
    if faulty_rc == 0:
        assert all(counts[p] == 1 for p in per_file), \
            f"{what}: exit 0 but not every file imported: {dict(counts)}"


def _recover(e, per_file, what):
    r, _ = e.once(timeout=120)
    assert r.returncode != 5, f"{what}: the state is unusable after the fault:\n{r.stderr[-3000:]}"
    assert r.returncode == 0, f"{what}: no recovery: exit {r.returncode}\n{r.stderr[-3000:]}"
    profiles = e.api.profiles()
    expect_all = {}
    for ex in per_file.values():
        expect_all.update(ex)
    missing, extra, wrong = R.compare_profiles(profiles, expect_all)
    counts = R.imported_counts(e.state)
    twice = [p for p in per_file if counts[p] > 1]
    R.add("rows lost", len(missing) + len(wrong))
    R.add("files imported twice", len(twice))
    assert not missing and not wrong and not extra, (what, len(missing), len(wrong), len(extra))
    assert not twice and all(counts[p] == 1 for p in per_file), (what, dict(counts))


def _drop_files(e, tag):
    per_file = {}
    for k in range(FILES):
        text, ex = R.gen_file(f"{tag}{k}", ROWS, 100)
        per_file[e.drop(f"profiles_{tag}_{k}.csv", text, mtime=1700000500 + k)] = ex
    return per_file


@pytest.mark.timeout(400)
def test_enospc_and_eio_injected(env):
    e = env(task_delay=0.05)
    e.config({"batch": {"size": 500}, "validation": {"max_invalid_percent": 2}},
             projects_extra={"main": {"max_in_flight": 2}})
    per_file = _drop_files(e, "st")
    t0 = time.monotonic()
    lines = []
    artefacts = []
    injected = 0
    for name, args in _cases(e, list(per_file)):
        e.reset_state()
        log = e.tmp / "inject.strace"
        r, secs = e.once(prefix=["strace", "-f", "-qq", "-y", "-o", str(log), *args],
                         timeout=120)
        inj = [x for x in log.read_text(errors="replace").splitlines() if "(INJECTED)" in x]
        n_inj = len(inj)
        injected += n_inj
        R.add("faults injected", n_inj)
        if "every call" in name:
            assert n_inj >= 1, f"{name}: nothing was injected (strace -P path wrong?)"
        note = ""
        if r.returncode == -6 and inj and _internal_fd(inj[-1]):
            # libuv aborts when a write to its own eventfd or signal pipe fails
            # (uv__async_send, uv__signal_handler): such a write cannot fail with ENOSPC, so
            # this is an artefact of unfiltered injection, not a product bug. The state must
            # survive it like any crash.
            note = " (libuv abort on an injected write to its internal eventfd/pipe: artefact)"
            artefacts.append(name)
        else:
            assert r.returncode >= 0, f"{name}: the daemon died of signal {-r.returncode}:\n" \
                + "\n".join(inj[-3:]) + "\n" + r.stderr[-2000:]
            assert r.returncode in (0, 1, 5), f"{name}: exit {r.returncode}\n{r.stderr[-2000:]}"
        _invariants(e, per_file, name, r.returncode)
        imported = sum(1 for p in per_file if R.imported_counts(e.state)[p])
        errs = [x[3:] for x in r.stderr.splitlines() if x.startswith(("<2>", "<3>"))]
        _recover(e, per_file, name)
        lines.append(f"{name}: {n_inj} injected, exit {r.returncode}{note}, {imported}/{FILES} files "
                     f"imported by the faulty run; first error: "
                     f"{errs[0] if errs else '(none)'}; recovered")
    for x in lines:
        R.part("storage faults", x)
    assert injected >= len(lines) // 2, "too few faults landed: is strace injection working?"
    R.part("storage faults", f"{len(lines)} cases, {injected} faults injected, "
           f"{len(artefacts)} libuv aborts (artefacts of unfiltered write injection, "
           f"survived like crashes), {time.monotonic() - t0:.0f} s")


@pytest.mark.timeout(300)
def test_ledger_eio_message_is_clear(env):
    """Every fdatasync of the ledger fails: nothing is posted, the message names the ledger
    and the error."""
    e = env(task_delay=0.05)
    e.config({"batch": {"size": 500}, "validation": {"max_invalid_percent": 2}})
    per_file = _drop_files(e, "eio")
    ledger = str(Path(e.state) / "ledger" / "crm-daily.log")
    r, _ = e.once(prefix=["strace", "-f", "-qq", "-o", "/dev/null", "-P", ledger,
                          "-e", "inject=fdatasync:error=EIO"])
    R.add("faults injected")
    assert r.returncode == 1, r.stderr
    first = next(p for p in sorted(per_file))
    assert f"crm-daily: {Path(first).name}: cannot write the ledger: Input/output error" \
        in r.stderr, r.stderr
    assert e.api.imports() == [], "nothing may be posted when the ledger cannot record it"
    _recover(e, per_file, "ledger EIO")


def _mount_tmpfs(path, size):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(300)
def test_tiny_tmpfs_state_directory_fills_up(env):
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    e = env(task_delay=0.05)
    mnt = e.tmp / "tinystate"
    mnt.mkdir()
    m = _mount_tmpfs(mnt, "64k")
    if m.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused here: {m.stderr.strip()}")
    try:
        e.config({"batch": {"size": 500}, "validation": {"max_invalid_percent": 2}},
                 projects_extra={"main": {"max_in_flight": 2}})
        lines = []
        # 1: a 64 KiB file system and files of ~190 KiB: the staged download cannot fit
        per_file = _drop_files(e, "tf")
        state = str(mnt / "state")
        os.mkdir(state, 0o700)
        e.state = state
        r, _ = e.once(timeout=60)
        R.add("faults injected")
        assert r.returncode == 1, r.stderr
        assert "No space left on device" in r.stderr, r.stderr
        _invariants(e, per_file, "tmpfs 64k", r.returncode)
        errs = [x[3:] for x in r.stderr.splitlines() if x.startswith("<3>")]
        lines.append(f"64 KiB tmpfs, 2 files of {os.path.getsize(next(iter(per_file))) // 1024} "
                     f"KiB: exit 1, first error: {errs[0] if errs else '?'}")
        # 2: room for the staged copy but a file system filled to N KiB free by a filler,
        # so that the ledger, the reject report or the run record hits ENOSPC at some point
        subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)
        for free_kib in (8, 40, 200, 260, 400):
            stv = os.statvfs(mnt)
            avail = stv.f_bavail * stv.f_frsize
            filler = mnt / "filler"
            if filler.exists():
                filler.unlink()
                stv = os.statvfs(mnt)
                avail = stv.f_bavail * stv.f_frsize
            with open(filler, "wb") as f:
                f.write(b"\0" * max(avail - free_kib * 1024, 0))
            r, _ = e.once(timeout=60)
            R.add("faults injected")
            assert r.returncode in (0, 1, 5) and r.returncode >= 0, r.stderr
            _invariants(e, per_file, f"tmpfs {free_kib} KiB free", r.returncode)
            errs = [x[3:] for x in r.stderr.splitlines() if x.startswith(("<2>", "<3>"))]
            imported = sum(1 for p in per_file if R.imported_counts(e.state)[p])
            lines.append(f"{free_kib} KiB free: exit {r.returncode}, {imported}/{FILES} files "
                         f"imported; first error: {errs[0] if errs else '(none)'}")
        # space returns
        (mnt / "filler").unlink()
        _recover(e, per_file, "tmpfs after the space returned")
        lines.append("space returned: next run exit 0, every row at the API, each file "
                     "imported once")
        for x in lines:
            R.part("storage faults (tmpfs)", x)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
