"""Structured journal entries: under systemd (JOURNAL_STREAM names our stderr) xpimportd
sends native journal entries with MESSAGE_ID, JOB, RUN_ID, SITE, FILE and counts. A fake
journald socket at /run/systemd/journal/socket receives them (only where no real journald
runs, as root)."""

import os
import socket
import struct
import subprocess
from pathlib import Path

import pytest

import harness

JOURNAL_DIR = Path("/run/systemd/journal")
SOCKET = JOURNAL_DIR / "socket"

SEED = ("user_id,email,email_subscription,first_name\n"
        "fe56bc676be78,sam@example.com,1,Sam\n"
        "fe56bc676be79,laura@example.com,1,Laura\n")


def parse_native(data):
    """The journal's native protocol: KEY=value\\n, or KEY\\n<le64 size><value>\\n."""
    fields = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            size = struct.unpack("<Q", data[nl + 1:nl + 9])[0]
            v = data[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields.setdefault(k.decode(), []).append(v.decode())
    return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}


@pytest.fixture
def fake_journald():
    if os.geteuid() != 0:
        pytest.skip("needs root to create /run/systemd/journal/socket")
    if SOCKET.exists():
        pytest.skip("a journald is running here; not replacing its socket")
    created = not JOURNAL_DIR.exists()
    JOURNAL_DIR.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(SOCKET))
    s.settimeout(0.5)
    yield s
    s.close()
    SOCKET.unlink()
    if created:
        JOURNAL_DIR.rmdir()


def test_events_are_structured_journal_entries(sshd, fakeapi, xpconfig, state_dir, csv_drop,
                                               fake_journald, tmp_path):
    csv_drop("profiles_j.csv", SEED)
    cfg = xpconfig()
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        st = os.fstat(err.fileno())
        env = harness.program_env({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        p = subprocess.run([str(harness.XPIMPORTD), "-c", cfg, "-S", state_dir, "--once"],
                           env=env, stdout=subprocess.PIPE, stderr=err, timeout=60)
    assert p.returncode == 0, err_path.read_text()
    entries = []
    while True:
        try:
            entries.append(parse_native(fake_journald.recv(1 << 20)))
        except socket.timeout:
            break
    assert entries, "no journal entries received"
    assert err_path.read_text() == "", "under the journal nothing goes to stderr"
    by_id = {}
    for e in entries:
        assert e["SYSLOG_IDENTIFIER"] == "xpimportd"
        if "MESSAGE_ID" in e:
            by_id.setdefault(e["MESSAGE_ID"], []).append(e)
    ids = dict(l.split()[1:3] for l in Path(harness.REPO, "src/log.h").read_text().splitlines()
               if l.startswith("#define XP_MSG_"))
    started = by_id[ids["XP_MSG_RUN_STARTED"].strip('"')][0]
    imported = by_id[ids["XP_MSG_FILE_IMPORTED"].strip('"')][0]
    finished = by_id[ids["XP_MSG_RUN_FINISHED"].strip('"')][0]
    assert started["JOB"] == "crm-daily" and started["SITE"] == "partner-a"
    assert started["RUN_ID"] == imported["RUN_ID"] == finished["RUN_ID"]
    assert imported["FILE"].endswith("/profiles_j.csv")
    assert imported["ROWS_IMPORTED"] == "2"
    assert finished["ROWS_POSTED"] == "2" and finished["PRIORITY"] == "6"
    # the catalog documents every MESSAGE_ID the code can send
    catalog = Path(harness.REPO, "systemd/xpimportd.catalog").read_text()
    for name, mid in ids.items():
        assert f"-- {mid.strip(chr(34))}" in catalog, name
    everything = "".join(str(e) for e in entries)
    assert fakeapi.token not in everything
