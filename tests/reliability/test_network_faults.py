"""Part 2: network faults on both legs through tests/faultproxy.py: latency, a bandwidth
limit, a reset after N bytes and a black hole, between xpimportd and sshd and between
xpimportd and the API. Small timeouts; every run must end within its bound (wall clock), a
failing one with a clear message, and the next run without faults completes with all rows."""


import pytest

import relutil as R
from faultproxy import FaultProxy

SITE_TIMEOUTS = {"connect_timeout": "3s", "auth_timeout": "3s", "stall_timeout": "3s"}
PROJECT_TIMEOUTS = {"connect_timeout": "2s", "request_timeout": "5s",
                    "retry": {"max_attempts": 2, "initial_backoff": "500ms", "max_backoff": "1s"}}
ROWS = 20000
BATCH = 2000

# (leg, fault name, FaultProxy.set kwargs, must succeed, message expected on failure, bound s)
CASES = [
    ("sftp", "latency 100 ms each way (200 ms round trip)", {"latency": 0.1}, True, None, 45),
    # ~9 round trips of 400 ms from TCP connect to the SFTP subsystem: over auth_timeout (3 s,
    # for the whole handshake + authentication + subsystem start), so it must fail
    ("sftp", "latency 200 ms each way", {"latency": 0.2}, False, "no response for 3 s", 12),
    ("sftp", "bandwidth 1 MB/s", {"bandwidth": 1_000_000}, True, None, 30),
    ("sftp", "reset after 200000 bytes (during the fetch)", {"reset_after": 200_000}, False,
     "fetch failed: cannot read ", 12),
    ("sftp", "black hole", {"blackhole": True}, False,
     "cannot complete the SSH handshake on 127.0.0.1:", 12),
    ("api", "latency 100 ms each way (200 ms round trip)", {"latency": 0.1}, True, None, 45),
    ("api", "latency 200 ms each way", {"latency": 0.2}, True, None, 45),
    ("api", "bandwidth 1 MB/s", {"bandwidth": 1_000_000}, True, None, 30),
    ("api", "reset after 50000 bytes", {"reset_after": 50_000}, False,
     "not accepted after 2 attempts: network error", 20),
    # 2 attempts x connect_timeout 2 s + a backoff of at most 1 s
    ("api", "black hole", {"blackhole": True}, False,
     "not accepted after 2 attempts: timeout", 20),
]


def _setup(env, leg):
    e = env()
    target = ("127.0.0.1", e.sshd.port) if leg == "sftp" else ("127.0.0.1", e.api.port)
    proxy = FaultProxy(target)
    site = dict(SITE_TIMEOUTS)
    projects = {"main": dict(PROJECT_TIMEOUTS)}
    if leg == "sftp":
        kh = e.tmp / "known_hosts_proxy"
        kh.write_text(f"[127.0.0.1]:{proxy.port} {e.sshd.host_pubkey}\n")
        site.update(port=proxy.port, known_hosts_file=str(kh))
    else:
        projects["main"]["url"] = f"https://127.0.0.1:{proxy.port}"
    e.config({"batch": {"size": BATCH}}, projects_extra=projects,
             extra={"sites": {"partner-a": site}})
    return e, proxy


@pytest.mark.parametrize("leg", ["sftp", "api"])
@pytest.mark.timeout(400)
def test_network_faults(env, leg):
    e, proxy = _setup(env, leg)
    try:
        n = 0
        lines = []
        for cleg, name, kw, ok, msg, bound in CASES:
            if cleg != leg:
                continue
            text, expect = R.gen_file(f"{leg}{n}", ROWS)
            e.drop(f"profiles_{leg}_{n}.csv", text, mtime=1700000300 + n)
            n += 1
            e.api.reset()
            proxy.set(**kw)
            before = proxy.stats()
            r, secs = e.once(timeout=bound + 60)
            st = proxy.stats()
            R.add("faults injected")
            # the fault really engaged
            d = {k: st[k] - before[k] for k in st}
            if kw.get("reset_after"):
                assert d["resets"] >= 1, (leg, name, d)
            if kw.get("blackhole"):
                assert d["blackholed"] >= 1, (leg, name, d)
            if kw.get("bandwidth"):
                floor = max(d["bytes_up"], d["bytes_down"]) / kw["bandwidth"]
                assert floor > 1.0 and secs >= 0.9 * floor, (leg, name, secs, d)
            if kw.get("latency"):
                assert secs >= 10 * kw["latency"], (leg, name, secs)
            assert secs < bound, f"{leg} {name}: the run took {secs:.1f}s, bound {bound}s\n" \
                f"{r.stderr[-3000:]}"
            if ok:
                assert r.returncode == 0, f"{leg} {name}: exit {r.returncode}\n{r.stderr[-3000:]}"
                outcome = "succeeded"
            else:
                assert r.returncode == 1, f"{leg} {name}: exit {r.returncode}\n{r.stderr[-3000:]}"
                assert msg in r.stderr, f"{leg} {name}: {msg!r} not in\n{r.stderr[-3000:]}"
                err = [x for x in r.stderr.splitlines() if x.startswith("<3>")]
                outcome = f"failed: {err[0][3:] if err else '?'}"
            # the next run without the fault completes with every row
            proxy.set()
            r2, secs2 = e.once(timeout=120)
            assert r2.returncode == 0, f"{leg} {name}: the run after the fault: exit " \
                f"{r2.returncode}\n{r2.stderr[-3000:]}"
            missing, extra, wrong = R.compare_profiles(e.api.profiles(), expect)
            R.add("rows lost", len(missing) + len(wrong))
            assert not missing and not wrong and not extra, (leg, name, len(missing), len(wrong))
            assert R.imported_counts(e.state)[str(e.outgoing / f"profiles_{leg}_{n - 1}.csv")] == 1
            lines.append(f"{leg} leg, {name}: {secs:.1f} s (bound {bound} s), {outcome}; "
                         f"{d['connections']} connections, {d['bytes_up']} bytes up, "
                         f"{d['bytes_down']} down, "
                         f"{st['resets'] - before['resets']} resets, "
                         f"{st['blackholed'] - before['blackholed']} black-holed; next run "
                         f"{secs2:.1f} s, {len(expect)} rows at the API")
        for x in lines:
            R.part("network faults", x)
    finally:
        proxy.close()


@pytest.mark.timeout(120)
def test_reset_during_authentication_is_not_an_authentication_failure(env):
    e, proxy = _setup(env, "sftp")
    try:
        text, expect = R.gen_file("authreset", 10)
        e.drop("profiles_authreset.csv", text)
        # past the key exchange (about 2 KB both ways), inside the userauth exchange
        proxy.set(reset_after=3000)
        r, secs = e.once(timeout=60)
        R.add("faults injected")
        assert proxy.stats()["resets"] == 1
        assert r.returncode == 1 and secs < 12
        assert "authentication as" not in r.stderr, r.stderr
        assert "connection was lost" in r.stderr, r.stderr
    finally:
        proxy.close()
