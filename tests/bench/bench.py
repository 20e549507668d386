#!/usr/bin/python3
"""`make bench`: xpimportd's performance side by side with the floor (what the libraries
alone do on this machine) and with what a user would run instead, in one run (issue 9).

Knobs (environment):
  BENCH_ROWS=N           rows of the main profiles file (default 1,000,000)
  BENCH_RUNS=N           repetitions of every measurement (default 5)
  BENCH_BIG=1            add the 5,000,000-row memory measurement (automatic when
                         BENCH_ROWS >= 5,000,000)
  BENCH_IDLE_SECONDS=S   the idle measurement's length (default 60)
  BENCH_SFTP_MB=N        size of the SFTP download file (default 100)
  BENCH_REQUESTS=N       requests per HTTP delivery run (default 300)
  BENCH_ONLY=1,3         run only these sections (development)
Prints one table and writes it to tests/bench/RESULTS.md. Helper programs are built into
tests/bench/out/ (gitignored) with the project's flags, as are the generated files.
Standard library plus tests/harness.py (PyYAML).
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TESTS = BENCH.parent
REPO = TESTS.parent
OUT = BENCH / "out"
sys.path.insert(0, str(TESTS))
import harness  # noqa: E402

PY = "/usr/bin/python3"
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
RUNS = max(1, int(os.environ.get("BENCH_RUNS", "5")))
BIG = os.environ.get("BENCH_BIG") == "1" or ROWS >= 5000000
IDLE_S = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
SFTP_MB = int(os.environ.get("BENCH_SFTP_MB", "100"))
N_REQ = int(os.environ.get("BENCH_REQUESTS", "300"))
ONLY = {int(x) for x in os.environ.get("BENCH_ONLY", "").split(",") if x.strip()}
SEED = 1
# libssh2 1.10 has neither AES-GCM nor chacha20-poly1305 nor the -etm MACs, so the one
# cipher both clients can use is AES-CTR; the bench sshd offers only this pair.
CIPHER, MAC = "aes128-ctr", "hmac-sha2-256"

ROWS_OUT = []        # (section, name, median, lo, hi, unit, target, verdict)
NOTES = []


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def want(section):
    return not ONLY or section in ONLY


# ---------------------------------------------------------------------------------------
# running and measuring
# ---------------------------------------------------------------------------------------

class Result:
    def __init__(self, rc, out, err, wall, ru):
        self.rc, self.out, self.err, self.wall = rc, out, err, wall
        self.cpu = ru.ru_utime + ru.ru_stime
        self.maxrss_kb = ru.ru_maxrss


def run(cmd, check=True, env=None, stdin=subprocess.DEVNULL, timeout=600, cwd=None):
    """Run cmd -> Result with its wall time (no rusage: see run_rusage)."""
    t0 = time.monotonic()
    p = subprocess.Popen([str(c) for c in cmd], stdin=stdin, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=cwd)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise
    wall = time.monotonic() - t0
    r = Result(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
               wall, _ZeroRU())
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}:\n{r.out[-2000:]}\n{r.err[-2000:]}")
    return r


class _ZeroRU:
    ru_utime = ru_stime = 0.0
    ru_maxrss = 0


def run_rusage(cmd, check=True, env=None, stdin_data=None, line_cb=None, timeout=900):
    """Like run() but with the child's own rusage (os.wait4). stdout goes to a temp file;
    stderr is read line by line and each line passed to line_cb(monotonic_time, line)."""
    with tempfile.TemporaryFile() as outf:
        t0 = time.monotonic()
        p = subprocess.Popen([str(c) for c in cmd],
                             stdin=subprocess.PIPE if stdin_data is not None
                             else subprocess.DEVNULL,
                             stdout=outf, stderr=subprocess.PIPE, env=env)
        if stdin_data is not None:
            p.stdin.write(stdin_data.encode())
            p.stdin.close()
        err_lines = []
        deadline = t0 + timeout
        for raw in p.stderr:
            now = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            err_lines.append(line)
            if line_cb:
                line_cb(now, line)
            if now > deadline:
                p.kill()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        outf.seek(0)
        r = Result(p.returncode, outf.read().decode(errors="replace"), "\n".join(err_lines),
                   wall, ru)
    if check and r.rc != 0:
        raise RuntimeError(f"{cmd[0]} exited {r.rc}:\n{r.out[-2000:]}\n{r.err[-3000:]}")
    return r


def kv(text, key):
    """The value after KEY= (or 'KEY ') in a program's output, as a float."""
    m = re.search(re.escape(key) + r"[= ]([0-9.eE+-]+)", text)
    if not m:
        raise RuntimeError(f"no {key} in output:\n{text[-1500:]}")
    return float(m.group(1))


def spread(values):
    v = sorted(values)
    return statistics.median(v), v[0], v[-1]


def add(section, name, values, unit, target="", ok=None, fmt="{:.1f}"):
    med, lo, hi = spread(values)
    verdict = "" if ok is None else ("met" if ok(med) else "MISSED")
    ROWS_OUT.append((section, name, fmt.format(med), fmt.format(lo) + "–" + fmt.format(hi),
                     unit, target, verdict))
    log(f"{section} {name}: {fmt.format(med)} {unit} ({fmt.format(lo)}–{fmt.format(hi)}) "
        f"{verdict}")
    return med


def note(text):
    NOTES.append(text)
    log("note: " + text)


# ---------------------------------------------------------------------------------------
# building and data
# ---------------------------------------------------------------------------------------

def make_var(name):
    return subprocess.run(["make", "-s", "-C", str(REPO), f"print-{name}"], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()


def build():
    OUT.mkdir(exist_ok=True)
    cflags = re.sub(r"-DXP_VERSION=\S*", "", make_var("ALL_CFLAGS")).split()
    libs = make_var("PKG_LIBS").split()
    lib = str(REPO / "src" / "libxp.a")
    progs = {
        "csvfloor": ([BENCH / "csvfloor.c"], ["-lcsv"]),
        "pipebench": ([BENCH / "pipebench.c", lib], libs),
        "sftp_probe": ([TESTS / "sftp_probe.c", lib], libs),
        "api_probe": ([TESTS / "api_probe.c", lib], libs),
        "sink": ([BENCH / "sink.c"], ["-pthread", "-lssl", "-lcrypto"]),
    }
    for name, (srcs, extra) in progs.items():
        exe = OUT / name
        newest = max(os.path.getmtime(s) for s in srcs)
        if exe.exists() and exe.stat().st_mtime >= newest:
            continue
        log(f"building {exe.relative_to(REPO)}")
        subprocess.run(["gcc", *cflags, "-Wno-discarded-qualifiers", "-o", str(exe),
                        *map(str, srcs), *extra], check=True, cwd=REPO)
    return {n: str(OUT / n) for n in progs}


def profiles(rows):
    path = OUT / f"profiles_{rows}_s{SEED}.csv"
    if not path.exists():
        log(f"generating {path.name}")
        tmp = path.with_suffix(".tmp")
        subprocess.run([PY, str(BENCH / "gen_profiles.py"), str(rows), str(SEED), str(tmp)],
                       check=True)
        os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------
# 1 + 2: pipeline floor, pipeline, naive Python
# ---------------------------------------------------------------------------------------

def pipebench_has_spool(exe, csv_path):
    """Does this pipebench know --spool (pipeline_validate_spool, a single parse)?"""
    p = subprocess.run([exe, "--spool"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    return "--spool" in p.stderr


def section_pipeline(bins, csv_path, do_floor, do_naive):
    size = csv_path.stat().st_size
    spool = pipebench_has_spool(bins["pipebench"], csv_path)
    m = {k: [] for k in ("floor_mb", "floor_rows", "pipe_mb", "pipe_rows", "p1", "p2",
                         "sp_mb", "sp_rows", "sp1", "sp2", "naive_mb", "naive_rows")}
    for i in range(RUNS):
        if do_floor:
            r = run([bins["csvfloor"], csv_path])
            m["floor_mb"].append(kv(r.out, "MB/s"))
            m["floor_rows"].append(kv(r.out, "rows/s"))
        r = run([bins["pipebench"], csv_path])
        line = r.out.splitlines()[-1]
        if f"rows={ROWS}" not in r.out or f"rows_sent={ROWS}" not in r.out:
            raise RuntimeError("pipebench did not send every row:\n" + r.out + r.err)
        m["pipe_mb"].append(kv(line, "MB/s"))
        m["pipe_rows"].append(kv(line, "rows/s"))
        m["p1"].append(kv(line.split("pass1")[1], "MB/s"))
        m["p2"].append(kv(line.split("pass2")[1], "MB/s"))
        if spool:
            r = run([bins["pipebench"], "--spool", csv_path])
            line = r.out.splitlines()[-1]
            if f"rows_sent={ROWS}" not in r.out:
                raise RuntimeError("pipebench --spool did not send every row:\n" + r.out + r.err)
            m["sp_mb"].append(kv(line, "MB/s"))
            m["sp_rows"].append(kv(line, "rows/s"))
            m["sp1"].append(kv(line.split("pass1+spool")[1], "MB/s"))
            m["sp2"].append(kv(line.split("read_spool")[1], "MB/s"))
        if do_naive:
            r = run([PY, BENCH / "naive_import.py", csv_path])
            if f"valid={ROWS}" not in r.out:
                raise RuntimeError("naive_import.py: " + r.out + r.err)
            secs = kv(r.out, "seconds")
            m["naive_mb"].append(size / 1e6 / secs)
            m["naive_rows"].append(ROWS / secs)
    floor = m["floor_mb"]
    if do_floor:
        add("1", "libcsv alone (csvfloor), MB/s", floor, "MB/s")
        add("1", "libcsv alone (csvfloor), rows/s", m["floor_rows"], "rows/s", fmt="{:,.0f}")
    add("1", "pipeline, two parses (old path: validate, then batcher), MB/s", m["pipe_mb"],
        "MB/s")
    add("1", "  rows/s", m["pipe_rows"], "rows/s", fmt="{:,.0f}")
    add("1", "  pass 1: parse+map+validate", m["p1"], "MB/s")
    add("1", "  pass 2: parse+map+validate+encode batches", m["p2"], "MB/s")
    if do_floor:
        add("1", "ratio pipeline (two parses, old path) / libcsv",
            [a / b for a, b in zip(m["pipe_mb"], floor)], "×", fmt="{:.2f}")
        add("1", "ratio one parse (slower of pass 1, 2) / libcsv",
            [min(a, b) / c for a, b, c in zip(m["p1"], m["p2"], floor)], "×", "(≥ 0.5)",
            lambda v: v >= 0.5, fmt="{:.2f}")
    if spool:
        add("1", "pipeline as the daemon runs it: one parse + spool (pipebench --spool), MB/s",
            m["sp_mb"], "MB/s")
        add("1", "  rows/s", m["sp_rows"], "rows/s", fmt="{:,.0f}")
        add("1", "  pass 1 + spool the bodies", m["sp1"], "MB/s")
        add("1", "  read the spool back", m["sp2"], "MB/s")
        if do_floor:
            add("1", "ratio pipeline (one parse + spool) / libcsv",
                [a / b for a, b in zip(m["sp_mb"], floor)], "×", "≥ 0.5",
                lambda v: v >= 0.5, fmt="{:.2f}")
    best = m["sp_mb"] if spool else m["pipe_mb"]
    if do_naive:
        add("2", "naive Python csv+json (naive_import.py), MB/s", m["naive_mb"], "MB/s")
        add("2", "naive Python, rows/s", m["naive_rows"], "rows/s", fmt="{:,.0f}")
        add("2", "ratio pipeline (two parses, old path) / naive Python",
            [a / b for a, b in zip(m["pipe_mb"], m["naive_mb"])], "×", fmt="{:.1f}")
        if spool:
            add("2", "ratio pipeline (one parse + spool) / naive Python",
                [a / b for a, b in zip(best, m["naive_mb"])], "×", "≥ 8",
                lambda v: v >= 8, fmt="{:.1f}")
    if not spool:
        note("pipebench has no --spool mode in this tree: only the two-parse pipeline was "
             "measured.")


# ---------------------------------------------------------------------------------------
# 3: SFTP download
# ---------------------------------------------------------------------------------------

def start_sshd(tmp, restrict_cipher):
    """harness.Sshd, with its config restricted to CIPHER/MAC when asked."""
    saved = harness._SSHD_CONFIG
    if restrict_cipher:
        harness._SSHD_CONFIG = saved + f"Ciphers {CIPHER}\nMACs {MAC}\nCompression no\n"
    try:
        return harness.Sshd.start(tmp)
    finally:
        harness._SSHD_CONFIG = saved


def section_sftp(bins, tmp):
    sshd = start_sshd(tmp / "sshd3", restrict_cipher=True)
    try:
        remote = Path(sshd.root) / "outgoing" / "big.bin"
        size = SFTP_MB * 1000 * 1000
        with open(remote, "wb") as f:
            chunk = os.urandom(1 << 20)
            left = size
            while left > 0:
                f.write(chunk[:min(left, len(chunk))])
                left -= len(chunk)
        # local copies go to a tmpfs when there is one: the disk is not what is measured
        # (sftp_fetch fsyncs, OpenSSH's sftp does not)
        shm = Path("/dev/shm")
        ldir = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() and os.access(shm, os.W_OK)
                                     else tmp, prefix="xpbench-sftp."))
        sftp_cmd = ["/usr/bin/sftp", "-b", "-", "-i", sshd.client_key, "-P", str(sshd.port),
                    "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                    "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                    "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "UpdateHostKeys=no",
                    "-o", f"Ciphers={CIPHER}", "-o", f"MACs={MAC}", "-o", "Compression=no",
                    "-F", "/dev/null", f"{sshd.user}@127.0.0.1"]
        probe = [bins["sftp_probe"], "127.0.0.1", sshd.port, sshd.user, sshd.client_key,
                 sshd.known_hosts]
        ossh, xp, xp_cpu, ossh_cpu = [], [], [], []
        # OpenSSH's fixed cost (exec, key exchange, auth, sftp subsystem, exit): the median
        # of RUNS connect-only sessions, subtracted from each `get` session's wall time
        bases = [run_rusage(sftp_cmd, stdin_data="pwd\n") for _ in range(RUNS)]
        base_wall = statistics.median(b.wall for b in bases)
        base_cpu = statistics.median(b.cpu for b in bases)
        for i in range(RUNS):
            dst = ldir / f"xp{i}"
            r = run_rusage([*probe, "fetch", str(remote), str(dst), str(size)])
            secs = kv(r.out, "seconds")
            xp.append(size / 1e6 / secs)
            xp_cpu.append(r.cpu)
            dst.unlink()
            dst = ldir / f"ossh{i}"
            r = run_rusage(sftp_cmd, stdin_data=f"get {remote} {dst}\n")
            if dst.stat().st_size != size:
                raise RuntimeError("sftp get: short file")
            ossh.append(size / 1e6 / max(r.wall - base_wall, 1e-3))
            ossh_cpu.append(r.cpu - base_cpu)
            dst.unlink()
        shutil.rmtree(ldir, ignore_errors=True)
        # which cipher was used: sshd's VERBOSE log does not say; restrict-only means only
        # CIPHER/MAC can have been negotiated (a mismatch would fail the connection).
        add("3", f"OpenSSH sftp get {SFTP_MB} MB ({CIPHER}/{MAC})", ossh, "MB/s")
        add("3", "xpimportd sftp_fetch (sftp_probe fetch)", xp, "MB/s")
        add("3", "ratio xpimportd / OpenSSH sftp", [a / b for a, b in zip(xp, ossh)], "×",
            "≥ 0.9", lambda m: m >= 0.9, fmt="{:.2f}")
        add("3", "client CPU per 100 MB: OpenSSH sftp", [c * 100 / SFTP_MB for c in ossh_cpu],
            "s", fmt="{:.2f}")
        add("3", "client CPU per 100 MB: xpimportd (incl. SHA-256)",
            [c * 100 / SFTP_MB for c in xp_cpu], "s", fmt="{:.2f}")
    finally:
        sshd.stop()


# ---------------------------------------------------------------------------------------
# 4: HTTP delivery
# ---------------------------------------------------------------------------------------

class Sink:
    def __init__(self, exe, tmp, certs, tls=True):
        self.port_file = tmp / f"sink-{os.getpid()}-{time.monotonic_ns()}.port"
        cmd = [exe, "--port", "0", "--port-file", str(self.port_file)]
        if tls:
            cmd += ["--cert", certs["good"][0], "--key", certs["good"][1]]
        else:
            cmd += ["--no-tls"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        harness.wait_for(lambda: self.port_file.exists() or self.proc.poll() is not None,
                         timeout=10, what="the sink's port file")
        if self.proc.poll() is not None:
            raise RuntimeError("sink failed: " + self.proc.stderr.read().decode())
        self.port = int(self.port_file.read_text())
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def stop(self):
        """Stop it -> its counters {requests, body_bytes, connections, errors}."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        m = dict(re.findall(r"(\w+)=(\d+)", out.decode()))
        return {k: int(v) for k, v in m.items()}


def batch_body(tmp):
    """One 10,000-row import/profile body, written by naive_import.py from the same
    generator (its JSON has the same columns and values as xpimportd's batches)."""
    body = OUT / f"batch_10000_s{SEED}.json"
    if not body.exists():
        src = profiles(10000)
        run([PY, BENCH / "naive_import.py", src, "--out", body])
    return body


def section_http(bins, tmp, certs, token_file):
    body = batch_body(tmp)
    blen = body.stat().st_size
    res = {"api1": ([], [], []), "api4": ([], [], []), "curl": ([], [], []),
           "curlplain": ([], [], [])}
    conns = {}
    curl_cfg = tmp / "curl.cfg"
    for i in range(RUNS):
        for kind in ("api1", "api4", "curl", "curlplain"):
            sink = Sink(bins["sink"], tmp, certs, tls=kind != "curlplain")
            try:
                if kind.startswith("curl"):
                    entry = (f'url = "{sink.url}/api/external/import/profile"\n'
                             f'data-binary = "@{body}"\n'
                             'header = "Content-Type: application/json"\n'
                             'header = "Expect:"\n'
                             f'cacert = "{certs["ca"]}"\n'
                             'output = "/dev/null"\nsilent\nshow-error\n')
                    curl_cfg.write_text("next\n".join([entry] * N_REQ))
                    r = run_rusage(["curl", "--http1.1", "-K", curl_cfg])
                    rps = N_REQ / r.wall
                else:
                    k = "1" if kind == "api1" else "4"
                    r = run_rusage([bins["api_probe"], "--url", sink.url, "--ca", certs["ca"],
                                    "--token-file", token_file, "--body", body, "-n", N_REQ,
                                    "-k", k, "--quiet"])
                    if f"ok={N_REQ}" not in r.out:
                        raise RuntimeError("api_probe: not all OK:\n" + r.out[-1500:])
                    rps = kv(r.out, "req_per_s")
            finally:
                st = sink.stop()
            if st.get("requests") != N_REQ:
                raise RuntimeError(f"{kind}: the sink saw {st} for {N_REQ} requests")
            conns[kind] = st.get("connections")
            res[kind][0].append(rps)
            res[kind][1].append(rps * blen / 1e6)
            res[kind][2].append(r.cpu / N_REQ * 1000)
    names = {"api1": "xpimportd api client, 1 in flight (api_probe -k 1)",
             "api4": "xpimportd api client, 4 in flight (-k 4, the default max_in_flight)",
             "curl": "curl CLI, sequential keep-alive (-K, --next)",
             "curlplain": "curl CLI as above, plain HTTP (sink --no-tls): the TLS cost"}
    for kind in ("api1", "api4", "curl", "curlplain"):
        tgt = ("≥ 500", lambda m: m >= 500) if kind.startswith("api") else ("", None)
        add("4", names[kind] + f" [{conns[kind]} conn]", res[kind][0], "req/s", tgt[0], tgt[1])
        add("4", "  MB/s", res[kind][1], "MB/s")
        add("4", "  client CPU per request", res[kind][2], "ms", fmt="{:.2f}")
    add("4", "ratio xpimportd (1 in flight) / curl",
        [a / b for a, b in zip(res["api1"][0], res["curl"][0])], "×", fmt="{:.2f}")
    note(f"HTTP delivery: {N_REQ} POSTs per run of one {blen / 1e6:.2f} MB body (10,000 rows), "
         "TLS to tests/bench/sink.c (threads, TCP_NODELAY, keep-alive), Expect disabled for "
         "both clients; [N conn] = TCP connections the sink accepted in the last run.")


# ---------------------------------------------------------------------------------------
# 5 + 6: end to end and memory
# ---------------------------------------------------------------------------------------

class Api:
    """What harness.write_config needs of an API: the sink as the project's url."""

    def __init__(self, url, token_file, ca_file):
        self.url, self.token_file, self.ca_file = url, token_file, ca_file
        self.attributes = {"first_name": "string", "loyalty_tier": "string",
                           "lifetime_value": "number", "last_deposit": "date",
                           "vip": "boolean"}


def job_conf(path):
    return {"source": {"path": path, "include": ["*.csv"], "settle": "0s"},
            "validation": {"default_country_code": 353}, "batch": {"size": 10000}}


STAGE_RE = re.compile(r"run \S+: (\w+) -> (\w+)")


def e2e_once(tmp, sshd, api, csv_path, tag):
    """One xpimportd --once of csv_path from sshd to the sink -> (Result, stage seconds)."""
    d = tmp / f"e2e-{tag}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    rdir = Path(sshd.root) / f"in-{tag}"
    if rdir.exists():
        shutil.rmtree(rdir)
    rdir.mkdir()
    dst = rdir / csv_path.name
    try:
        os.link(csv_path, dst)
    except OSError:
        shutil.copyfile(csv_path, dst)
    cfg = harness.write_config(d, sshd, api, {"bench": job_conf(str(rdir))})
    state = d / "state"
    state.mkdir(mode=0o700)
    marks = []                     # (time, from, to)

    def on_line(t, line):
        m = STAGE_RE.search(line)
        if m:
            marks.append((t, m.group(1), m.group(2)))

    t_start = time.monotonic()
    r = run_rusage([harness.XPIMPORTD, "-c", cfg, "-S", state, "--once", "-v"],
                   env=harness.program_env(), line_cb=on_line)
    t_end = time.monotonic()
    stages = {}
    prev_t, cur = t_start, "startup"          # startup: exec, configuration, init
    for t, _frm, to in marks:
        stages[cur] = stages.get(cur, 0.0) + (t - prev_t)
        prev_t, cur = t, to
    stages["exit"] = stages.get("exit", 0.0) + (t_end - prev_t)   # after "done"
    shutil.rmtree(rdir, ignore_errors=True)
    if "1 file imported" not in r.out + r.err:
        raise RuntimeError("xpimportd --once did not import the file:\n" + r.out[-1500:] +
                           r.err[-2500:])
    shutil.rmtree(d, ignore_errors=True)
    return r, stages


def section_e2e(bins, tmp, certs, token_file, csv_path, do_e2e, do_mem):
    sshd = start_sshd(tmp / "sshd5", restrict_cipher=False)
    sink = Sink(bins["sink"], tmp, certs)
    api = Api(sink.url, token_file, certs["ca"])
    try:
        size = csv_path.stat().st_size
        rss = {}
        expected = 0                # POSTs the sink must have seen: one per 10,000 rows
        if do_e2e:
            mbs, rows, stage_runs, cpu = [], [], [], []
            for i in range(RUNS):
                r, stages = e2e_once(tmp, sshd, api, csv_path, f"main{i}")
                expected += -(-ROWS // 10000)
                mbs.append(size / 1e6 / r.wall)
                rows.append(ROWS / r.wall)
                cpu.append(r.cpu / r.wall * 100)
                stage_runs.append((r.wall, stages))
                rss.setdefault(ROWS, []).append(r.maxrss_kb / 1024)
            add("5", f"end to end {ROWS:,} rows sshd → xpimportd --once → sink, MB/s of CSV",
                mbs, "MB/s", "≥ 70", lambda m: m >= 70)
            add("5", "  rows/s", rows, "rows/s", fmt="{:,.0f}")
            add("5", "  daemon CPU (user+sys) / wall", cpu, "%", fmt="{:.0f}")
            # stage shares of the median run
            wall, stages = sorted(stage_runs, key=lambda x: x[0])[len(stage_runs) // 2]
            order = ["startup", "connect", "select", "fetch", "validate", "post", "confirm",
                     "record", "after", "close", "exit"]
            parts = []
            for s in order + sorted(set(stages) - set(order)):
                if s in stages and stages[s] >= 0.0005:
                    parts.append(f"{s} {stages[s]:.2f}s ({stages[s] / wall * 100:.0f}%)")
            note(f"end-to-end stages of the median run ({wall:.2f}s, from the -v state "
                 f"transitions timestamped as they arrived on stderr): " + ", ".join(parts) +
                 f". As rates over the CSV: fetch {size / 1e6 / stages.get('fetch', 1e9):.0f} "
                 f"MB/s, validate {size / 1e6 / stages.get('validate', 1e9):.0f} MB/s, post "
                 f"{size / 1e6 / stages.get('post', 1e9):.0f} MB/s; the stages run one after "
                 f"the other. 'post' is producing the batches (pass 2) overlapped with their POSTs; "
                 "'record' the run record and ledger; 'close' the SFTP disconnect.")
        if do_mem:
            sizes = [100000] + ([ROWS] if ROWS not in rss and ROWS != 100000 else []) \
                + ([5000000] if BIG and ROWS != 5000000 else [])
            for n in sizes:
                p = profiles(n)
                for i in range(RUNS if n <= 1000000 else 1):
                    r, _ = e2e_once(tmp, sshd, api, p, f"mem{n}-{i}")
                    expected += -(-n // 10000)
                    rss.setdefault(n, []).append(r.maxrss_kb / 1024)
            for n in sorted(rss):
                add("6", f"peak RSS xpimportd --once, {n:,} rows", rss[n], "MiB")
            meds = [spread(v)[0] for v in rss.values()]
            add("6", "peak RSS spread (max − min of the medians)", [max(meds) - min(meds)],
                "MiB", "≤ 16", lambda m: m <= 16)
            if not BIG:
                note("5,000,000-row memory figure skipped (BENCH_BIG=1 or BENCH_ROWS≥5000000 "
                     "adds it).")
        st = sink.stop()
        log(f"sink counters: {st}")
        if st.get("requests") != expected:
            raise RuntimeError(f"the sink saw {st.get('requests')} POSTs, expected {expected}")
        note(f"end to end / memory: the sink received all {expected} batches "
             f"({st.get('body_bytes', 0) / 1e6:.0f} MB of JSON) over {st.get('connections')} "
             f"TLS connections; every run's output said '1 file imported'.")
    finally:
        sink.stop() if sink.proc.poll() is None else None
        sshd.stop()


def section_idle(tmp, certs, token_file):
    d = tmp / "idle"
    d.mkdir()
    api = Api("https://127.0.0.1:9", token_file, certs["ca"])
    sshd_like = type("S", (), {})()
    sshd_like.port, sshd_like.user = 22, "nobody"
    key = harness.write_secret(d / "client.key", "not used: no job runs\n")
    kh = d / "known_hosts"
    kh.write_text("")
    sshd_like.client_key, sshd_like.known_hosts, sshd_like.root = str(key), str(kh), "/srv"
    jobs = {f"job{i:03d}": {"source": {"path": f"/srv/in/{i}", "include": ["*.csv"]},
                            "schedule": {"every": "1d"}} for i in range(200)}
    cfg = harness.write_config(d, sshd_like, api, jobs)
    state = d / "state"
    state.mkdir(mode=0o700)
    daemon = harness.Daemon(["-c", cfg, "-S", state], d / "daemon.log")
    try:
        daemon.wait_log("started", timeout=30)
        time.sleep(1.0)
        hz = os.sysconf("SC_CLK_TCK")

        def ticks():
            f = Path(f"/proc/{daemon.pid}/stat").read_text()
            fields = f[f.rindex(")") + 2:].split()
            return int(fields[11]) + int(fields[12])

        def status():
            out = {}
            for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0])
            return out

        t0, c0, samples = time.monotonic(), ticks(), [status()]
        while time.monotonic() - t0 < IDLE_S:
            time.sleep(min(5.0, IDLE_S))
            samples.append(status())
        rss = [x["VmRSS"] for x in samples]
        last = samples[-1]
        pss = 0
        try:
            for line in Path(f"/proc/{daemon.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
        except OSError:
            pass
        dt, dc = time.monotonic() - t0, ticks() - c0
        if daemon.proc.poll() is not None:
            raise RuntimeError("idle daemon exited:\n" + daemon.log()[-2000:])
    finally:
        daemon.stop()
    add("6", f"idle RSS, 200 jobs none due (VmRSS over {IDLE_S:.0f}s, max)",
        [max(rss) / 1024], "MiB", "< 10", lambda m: m < 10)
    add("6", f"idle CPU over {IDLE_S:.0f}s (/proc/PID/stat utime+stime)",
        [dc / hz / dt * 100], "%", "< 0.1", lambda m: m < 0.1, fmt="{:.3f}")
    note(f"idle: {dc} clock ticks (1/{hz} s) of CPU in {dt:.1f}s; VmRSS at the end "
         f"{last['VmRSS'] / 1024:.1f} MiB = RssAnon {last.get('RssAnon', 0) / 1024:.1f} MiB "
         f"(heap, stacks) + RssFile {last.get('RssFile', 0) / 1024:.1f} MiB (mapped code of "
         f"the shared libraries, shared with other processes) + RssShmem "
         f"{last.get('RssShmem', 0) / 1024:.1f} MiB; Pss (shared pages divided among their "
         f"users) {pss / 1024:.1f} MiB; one measurement, not {RUNS}.")


# ---------------------------------------------------------------------------------------

def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cpu, os.cpu_count(), os.getloadavg()


def table():
    head = ("| § | measurement | median | min–max | unit | target | |",
            "|---|---|---:|---:|---|---|---|")
    lines = list(head)
    for sec, name, med, rng, unit, tgt, verdict in ROWS_OUT:
        if name.startswith("  "):
            name = "↳ " + name.strip()
        lines.append(f"| {sec} | {name} | {med} | {rng} | {unit} | {tgt} | {verdict} |")
    return "\n".join(lines)


def main():
    cpu, ncpu, load0 = machine()
    t_begin = time.monotonic()
    log(f"{ROWS:,} rows, {RUNS} runs each; nproc {ncpu}, {cpu}; load {load0[0]:.2f}")
    bins = build()
    csv_path = profiles(ROWS)
    tmp = Path(tempfile.mkdtemp(prefix="xpbench."))
    try:
        certs = harness.make_ca(OUT / "pki")
        token_file = str(harness.write_secret(tmp / "bench.apptoken", "xp-bench-token\n"))
        if want(1) or want(2):
            section_pipeline(bins, csv_path, want(1), want(2))
        if want(3):
            section_sftp(bins, tmp)
        if want(4):
            section_http(bins, tmp, certs, token_file)
        if want(5) or want(6):
            section_e2e(bins, tmp, certs, token_file, csv_path, want(5), want(6))
        if want(6):
            section_idle(tmp, certs, token_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()
    elapsed = time.monotonic() - t_begin
    if want(1):
        note("pipeline figures: tests/bench/pipebench.c; --spool is what src/run.c does "
             "(pipeline_validate_spool: one parse that validates and encodes every batch into "
             "the spool, then pipeline_spool_open reads the bodies back); the two-parse figure "
             "is the older path (pipeline_validate, then pipeline_batcher), kept for "
             "comparison. CSV in the page cache, bodies to /dev/null. A dry run validates "
             "without spooling. naive_import.py validates far less than xpimportd (see its "
             "docstring) and parses once.")
    if want(3):
        note(f"SFTP: the bench sshd offers only {CIPHER} + {MAC} (libssh2 1.10 has no AES-GCM, "
             f"chacha20-poly1305 or -etm MACs) and the sftp client is given the same; xpimportd's "
             f"figure is sftp_fetch() alone (open, read, SHA-256, write, fsync, close) timed by "
             f"sftp_probe; OpenSSH's is the wall time of `sftp -b` get minus the median "
             f"of {RUNS} connect-only sessions' (`pwd`); local files on /dev/shm.")
    text = table()
    header = (f"Machine: {cpu}, nproc {ncpu}; load average {load0[0]:.2f} at start, "
              f"{load1[0]:.2f} at end; BENCH_ROWS={ROWS:,} ({csv_path.stat().st_size / 1e6:.1f} "
              f"MB), {RUNS} runs per figure; {time.strftime('%Y-%m-%d %H:%M %Z')}; "
              f"bench took {elapsed:.0f}s.")
    print()
    print(header)
    print()
    print(text)
    print()
    for n in NOTES:
        print("- " + n)
    if not ONLY:
        doc = ["# xpimportd benchmark results (`make bench`)", "",
               "Written by tests/bench/bench.py; see issue 9. Ratios taken in the same run are "
               "what to compare; absolute figures vary with the machine and its load.", "",
               header, "", text, "", "Notes:", ""] + ["- " + n for n in NOTES] + [""]
        (BENCH / "RESULTS.md").write_text("\n".join(doc))
        log("wrote tests/bench/RESULTS.md")
    else:
        log("BENCH_ONLY set: tests/bench/RESULTS.md not written")


if __name__ == "__main__":
    main()
