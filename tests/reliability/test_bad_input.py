"""Part 4: the bad input corpus (tests/corpus/). Each input NAME has NAME.expected (JSON, see
tests/corpus/README.md); generated inputs (gen_*) are built at test time and not committed.

CSV inputs go through `xpimportctl import --job crm-daily FILE` (the UI's Upload: the same
pipeline as a scheduled run, without the SFTP transfer of a 100 MiB file); the big field also
goes through `xpimportd --once` from the loopback sshd. Peak RSS is measured with
/usr/bin/time -f %M. YAML inputs go through `xpimportd -n`."""

import csv
import gzip
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

import harness
import relutil as R

CORPUS = R.TESTS / "corpus"
TIME = "/usr/bin/time"
DEFAULT_RSS_MIB = 64
csv.field_size_limit(1 << 30)


def _load(kind):
    out = []
    for exp in sorted((CORPUS / kind).glob("*.expected")):
        spec = json.loads(exp.read_text())
        stem = exp.name[:-len(".expected")]
        marks = []
        if spec.get("xfail"):
            marks.append(pytest.mark.xfail(strict=True, reason=spec["xfail"]))
        out.append(pytest.param(stem, spec, id=stem, marks=marks))
    return out


# ---------------------------------------------------------------------------------------
# generators (inputs too big to commit)
# ---------------------------------------------------------------------------------------

def _gen_csv(g, path):
    k = g["kind"]
    with open(path, "wb") as f:
        if k == "big_field":
            f.write(b"user_id,first_name\ng1,Before\ng2,")
            chunk = b"A" * (1 << 20)
            if g["quoted"]:
                f.write(b'"')
            for _ in range(g["mib"]):
                f.write(chunk)
            if g["quoted"]:
                f.write(b'"')
            f.write(b"\ng3,After\n")
        elif k == "wide_header":
            f.write(b"user_id," + b",".join(b"c%d" % i for i in range(1, g["columns"])) + b"\n")
            f.write(b"h1," + b",".join(b"x" for _ in range(1, g["columns"])) + b"\n")
        elif k == "wide_row":
            f.write(b"user_id,first_name\nw1,Ok\nw2," +
                    b",".join(b"y" for _ in range(g["columns"] - 1)) + b"\n")
        elif k == "many_rows":
            f.write(b"user_id,first_name\n")
            block = []
            for i in range(g["rows"]):
                block.append(b"m%07d,N%d\n" % (i, i))
                if len(block) == 100000:
                    f.write(b"".join(block))
                    block = []
            f.write(b"".join(block))
        elif k == "blank_lines":
            f.write(b"user_id,first_name,lifetime_value\n")
            f.write(b"\n" * g["blank"])
            f.write(b"x1,A,abc\nx2,B,2\n")
        elif k == "quoted_newlines":
            f.write(b"user_id,first_name,lifetime_value\nqn1,A,1\nqn2,\"" + b"\n" * g["newlines"] +
                    b"\",2\nqn3,C,abc\n")
        elif k == "gzip_truncated":
            text = "user_id,first_name\n" + "".join(f"z{i},N{i}\n" for i in range(g["rows"]))
            data = gzip.compress(text.encode())
            f.write(data[:len(data) // 2])
        else:
            raise ValueError(k)


def _timed(cmd, timeout=300, env=None):
    """Run cmd under /usr/bin/time -> (CompletedProcess, peak RSS KiB, seconds)."""
    tf = f"/tmp/xp-rss-{os.getpid()}-{time.monotonic_ns()}"
    t0 = time.monotonic()
    p = subprocess.run([TIME, "-f", "%M", "-o", tf, *cmd], env=harness.program_env(env),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, errors="replace", timeout=timeout)
    secs = time.monotonic() - t0
    try:
        rss = int(Path(tf).read_text().strip().splitlines()[-1])
    finally:
        if os.path.exists(tf):
            os.unlink(tf)
    return p, rss, secs


@pytest.fixture(scope="module")
def upload_env(tmp_path_factory, certs):
    """The API double and a configuration whose job crm-daily takes uploads (its site is
    never contacted by xpimportctl import)."""
    d = tmp_path_factory.mktemp("corpus")
    api = harness.FakeAPI.start(d / "api", certs_dir=certs["dir"], task_delay=0.05)
    yield d, api
    api.stop()


def _config(d, api, job):
    site = {"host": "127.0.0.1", "port": 9, "user": "nobody",
            "password_file": api.token_file, "known_hosts_file": str(d / "known_hosts")}
    return harness.write_config(d, None, api, {"crm-daily": harness.deep_merge(
        {"source": {"site": "upload-site", "path": "/unused"}}, job or {})},
        extra={"sites": {"upload-site": site}})


def _rejects(path):
    if not path:
        return []
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def _check_profiles(profiles, want):
    for uid, attrs in want.items():
        assert uid in profiles, f"{uid!r} not at the API"
        for k, v in attrs.items():
            got = profiles[uid].get(k)
            assert got == v, f"{uid}.{k}: {got!r} != {v!r}"


@pytest.mark.parametrize("stem,spec", _load("csv"))
def test_csv_corpus(stem, spec, upload_env, tmp_path):
    d, api = upload_env
    api.reset()
    R.add("bad inputs tried")
    if "generate" in spec:
        name = spec.get("name") or stem + ".csv"
        path = tmp_path / name
        _gen_csv(spec["generate"], path)
    else:
        path = next(p for p in (CORPUS / "csv").glob(stem + ".*") if p.suffix != ".expected")
        name = path.name
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = _config(d, api, spec.get("job"))
    cmd = [str(harness.XPIMPORTCTL), "-c", cfg, "-S", str(state), "import", "--job", "crm-daily"]
    if spec.get("dry_run"):
        cmd.append("--dry-run")
    r, rss, secs = _timed([*cmd, str(path)])
    out = r.stdout + r.stderr
    assert r.returncode >= 0, f"{stem}: crashed with signal {-r.returncode}\n{out[-3000:]}"
    size = path.stat().st_size
    rss_max = spec.get("rss_max_mib", DEFAULT_RSS_MIB)
    R.part("bad input", f"{stem} ({size} bytes): exit {r.returncode}, peak RSS "
           f"{rss / 1024:.1f} MiB (bound {rss_max}), {secs:.1f} s")
    assert r.returncode == spec["exit"], f"{stem}: exit {r.returncode}\n{out[-3000:]}"
    assert rss < rss_max * 1024, f"{stem}: peak RSS {rss} KiB over {rss_max} MiB"
    if "seconds_max" in spec:
        assert secs < spec["seconds_max"], f"{stem}: {secs:.1f}s"
    for line in spec.get("stdout", []):
        assert line in r.stdout.splitlines(), f"{stem}: {line!r} not in\n{r.stdout[-3000:]}"
    if spec.get("error"):
        want = f"<3>crm-daily: {name}: {spec['error']}"
        assert want in r.stderr.splitlines(), f"{stem}: {want!r} not in\n{r.stderr[-3000:]}"
    elif spec.get("error", "absent") is None:
        assert not [x for x in r.stderr.splitlines() if x.startswith(f"<3>crm-daily: {name}: ")], \
            r.stderr
    imports = api.imports()
    posted = sum(q["n_rows"] for q in imports if q["status"] in (200, 202))
    assert posted == spec["rows_imported"], f"{stem}: {posted} rows posted\n{out[-2000:]}"
    if spec.get("dry_run"):
        return
    recs = R.run_records(str(state))
    assert len(recs) == 1, recs
    f = recs[0]["files"][0]
    for key in ("rows_read", "rows_rejected"):
        if key in spec:
            assert f[key] == spec[key], f"{stem}: {key} {f[key]} != {spec[key]}"
    if "rows_imported" in spec and spec["exit"] == 0:
        assert f["rows_posted"] == spec["rows_imported"] and f["outcome"] == "imported", f
    if "rejects" in spec:
        got = _rejects(f["reject_report"])
        assert len(got) == len(spec["rejects"]), f"{stem}: reject report {got}"
        for g, w in zip(got, spec["rejects"]):
            for k, v in w.items():
                assert g[k] == str(v), f"{stem}: reject line {g['line']}: {k} {g[k]!r} != {v!r}"
    if "profiles" in spec:
        _check_profiles(api.profiles(), spec["profiles"])


def test_big_field_through_the_daemon(env):
    """The 100 MiB field fetched from the loopback sshd by xpimportd --once (memory bound for
    the daemon as well, fetch included)."""
    e = env(task_delay=0.05)
    e.config({"validation": {"max_invalid_rows": 5}})
    path = e.outgoing / "big.csv"
    _gen_csv({"kind": "big_field", "mib": 100, "quoted": False}, path)
    R.add("bad inputs tried")
    r, rss, secs = _timed(e.argv(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sum(q["n_rows"] for q in e.api.imports()) == 2
    assert "row is longer than 1048576 bytes" in r.stderr or \
        R.run_records(e.state)[0]["files"][0]["rows_rejected"] == 1
    R.part("bad input", f"100 MiB field via xpimportd --once (SFTP fetch + import): exit 0, "
           f"peak RSS {rss / 1024:.1f} MiB (bound {DEFAULT_RSS_MIB}), {secs:.1f} s")
    assert rss < DEFAULT_RSS_MIB * 1024, f"peak RSS {rss} KiB"


# ---------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------

_VALID_JOB = ("project: main\nsource:\n  site: partner-a\n  path: /outgoing\n"
              "schedule:\n  every: 15m\n")


def _gen_yaml(g, kind, path, valid_main):
    n = g["bytes"]
    if g.get("valid"):
        body = _VALID_JOB if kind == "job" else valid_main
        pad = n - len(body) - 2
        data = body + "#" + "x" * pad + "\n"
    else:
        line = "# " + "lorem ipsum " * 6 + "\n"
        data = (line * (n // len(line) + 1))[:n]
    assert len(data.encode()) == n
    Path(path).write_text(data)


@pytest.mark.parametrize("stem,spec", _load("yaml"))
def test_yaml_corpus(stem, spec, tmp_path, certs):
    R.add("bad inputs tried")
    api_dir = tmp_path / "api"
    api_dir.mkdir()
    token = harness.write_secret(api_dir / "main.apptoken", "xp-corpus\n")
    key = harness.write_secret(tmp_path / "client.key", "not used by -n\n")

    class _Api:     # what write_config needs; no server runs for -n
        url = "https://127.0.0.1:9"
        token_file = str(token)
        ca_file = certs["ca"]
        attributes = dict(harness.DEFAULT_ATTRIBUTES)

    class _Sshd:
        port = 22
        user = "xpimport"
        client_key = str(key)
        known_hosts = str(tmp_path / "known_hosts")
        root = "/srv"
    cfg = harness.write_config(tmp_path, _Sshd, _Api, {"crm-daily": {}})
    target = Path(cfg) if spec["kind"] == "main" else Path(cfg).parent / "jobs.d" / "crm-daily.yaml"
    if "generate" in spec:
        _gen_yaml(spec["generate"], spec["kind"], target, Path(cfg).read_text())
    else:
        target.write_bytes((CORPUS / "yaml" / f"{stem}.yaml").read_bytes())
    r, rss, secs = _timed([str(harness.XPIMPORTD), "-n", "-c", cfg], timeout=60)
    lines = [x.replace(str(target), "{file}") for x in r.stdout.splitlines()]
    R.part("bad input", f"yaml {stem} ({target.stat().st_size} bytes): exit {r.returncode}, "
           f"{len(lines)} lines, peak RSS {rss / 1024:.1f} MiB, {secs:.2f} s; "
           f"first: {lines[0] if lines else ''}")
    assert r.returncode >= 0, f"crashed: signal {-r.returncode}"
    assert r.returncode == spec["exit"], f"{stem}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    if "stdout" in spec:
        assert lines == spec["stdout"], f"{stem}:\n" + "\n".join(lines)
    for i, want in enumerate(spec.get("stdout_first", [])):
        assert lines[i] == want, f"{stem}: line {i + 1}: {lines[i]!r} != {want!r}"
    if "stdout_first_re" in spec:
        assert re.match(spec["stdout_first_re"], lines[0]), lines
    for want in spec.get("stdout_contains", []):
        assert want in lines, f"{stem}: {want!r} not in\n" + "\n".join(lines)
    if "stdout_last" in spec:
        assert lines[-1] == spec["stdout_last"], lines[-3:]
    if "stdout_last_re" in spec:
        assert re.fullmatch(spec["stdout_last_re"], lines[-1]), lines[-3:]
    for text, n in spec.get("count", {}).items():
        assert sum(1 for x in lines if x.endswith(": " + text)) == n, f"{stem}: {text!r}"
    if "max_lines" in spec:
        assert len(lines) <= spec["max_lines"], len(lines)
    if "rss_max_mib" in spec:
        assert rss < spec["rss_max_mib"] * 1024, f"peak RSS {rss} KiB"
    if "seconds_max" in spec:
        assert secs < spec["seconds_max"]
    if "no_file" in spec:
        assert not os.path.exists(spec["no_file"]), "a YAML tag ran code"
