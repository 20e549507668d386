"""Fixtures for integration tests: a loopback sshd, the API double, a config writer and a
state directory. Every process is ended after the test, pass or fail.

    def test_x(sshd, fakeapi, xpconfig, state_dir):
        cfg = xpconfig({"crm-daily": {"source": {"include": ["profiles_*.csv"]}}})
        r = harness.run_xpimportd(["-c", cfg, "-S", state_dir, "--once"])

Each test gets a 120 s pytest-timeout unless it sets its own.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents and \
                item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(120))


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """One CA and every certificate kind for the session (see harness.make_ca)."""
    return harness.make_ca(tmp_path_factory.mktemp("pki"), kinds=harness.CERT_KINDS)


@pytest.fixture
def sshd(tmp_path):
    s = harness.Sshd.start(tmp_path / "sshd")
    yield s
    s.stop()


@pytest.fixture
def fakeapi(tmp_path, certs):
    api = harness.FakeAPI.start(tmp_path / "api", attributes=harness.DEFAULT_ATTRIBUTES,
                                certs_dir=certs["dir"])
    yield api
    api.stop()


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return str(d)


@pytest.fixture
def xpconfig(tmp_path, sshd, fakeapi):
    """xpconfig(jobs=None, projects_extra=None, extra=None) -> path of xpimportd.yaml;
    jobs defaults to {"crm-daily": {}} (the default job, see harness.write_config)."""
    def write(jobs=None, projects_extra=None, extra=None):
        return harness.write_config(tmp_path, sshd, fakeapi,
                                    {"crm-daily": {}} if jobs is None else jobs,
                                    projects_extra=projects_extra, extra=extra)
    return write


@pytest.fixture
def daemons(tmp_path):
    """start(args, env=None) -> harness.Daemon running in the background; each one started
    is stopped (SIGTERM, then SIGKILL after 10 s) after the test."""
    started = []

    def start(args, env=None):
        env = dict(env or {})
        # each daemon its own control socket (never the system's /run/xpimportd)
        if "RUNTIME_DIRECTORY" not in env:
            run_dir = tmp_path / f"run-{len(started)}"
            run_dir.mkdir(mode=0o755, exist_ok=True)
            env["RUNTIME_DIRECTORY"] = str(run_dir)
        d = harness.Daemon(args, tmp_path / f"xpimportd-{len(started)}.log", env=env)
        started.append(d)
        return d
    yield start
    for d in started:
        d.stop()


@pytest.fixture
def csv_drop(sshd):
    """csv_drop(name, text, subdir="outgoing", mtime=None) -> local path of a file put in
    the SFTP folder (absolute remote path = local path)."""
    def drop(name, text, subdir="outgoing", mtime=None):
        d = Path(sshd.root) / subdir
        d.mkdir(parents=True, exist_ok=True)
        p = d / name
        p.write_bytes(text.encode() if isinstance(text, str) else text)
        if mtime is not None:
            os.utime(p, (mtime, mtime))
        return str(p)
    return drop
