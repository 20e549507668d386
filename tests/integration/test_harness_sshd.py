"""The loopback sshd of tests/harness.py, checked with OpenSSH's own sftp client."""

import os
import stat
from pathlib import Path

import harness


def test_sftp_put_and_list(sshd, tmp_path):
    local = tmp_path / "profiles_1.csv"
    local.write_text("user_id,first_name\nu1,Sam\n")
    remote = sshd.root + "/outgoing"
    r = sshd.sftp_batch([f"put {local} {remote}/profiles_1.csv", f"ls -l {remote}"])
    assert r.returncode == 0, r.stderr
    assert "profiles_1.csv" in r.stdout
    # absolute remote paths are local paths: the file landed in sshd.root
    assert (Path(remote) / "profiles_1.csv").read_text() == "user_id,first_name\nu1,Sam\n"
    assert "Accepted publickey for " + sshd.user in sshd.log()


def test_host_key_check_fails_with_another_known_hosts(sshd, tmp_path):
    other = harness.Sshd.start(tmp_path / "other")     # only for its (different) host key
    try:
        wrong = tmp_path / "wrong_known_hosts"
        wrong.write_text(f"[127.0.0.1]:{sshd.port} {other.host_pubkey}\n")
        r = sshd.sftp_batch([f"ls {sshd.root}"], known_hosts=str(wrong))
        assert r.returncode != 0
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr
        empty = tmp_path / "empty_known_hosts"
        empty.write_text("")
        r = sshd.sftp_batch([f"ls {sshd.root}"], known_hosts=str(empty))
        assert r.returncode != 0
        assert "Host key verification failed" in r.stderr
        assert sshd.sftp_batch([f"ls {sshd.root}"]).returncode == 0
    finally:
        other.stop()


def test_restart_with_new_host_key(sshd, tmp_path):
    old, port = sshd.host_pubkey, sshd.port
    sshd.restart_with_new_host_key()
    assert sshd.port == port and sshd.host_pubkey != old and sshd.old_host_pubkey == old
    r = sshd.sftp_batch([f"ls {sshd.root}"])          # known_hosts still holds the old key
    assert r.returncode != 0 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr
    sshd.write_known_hosts()
    assert sshd.sftp_batch([f"ls {sshd.root}"]).returncode == 0


def test_sshd_files_and_fingerprint(sshd):
    assert stat.S_IMODE(os.stat(sshd.client_key).st_mode) == 0o600
    line = Path(sshd.known_hosts).read_text()
    assert line == f"[127.0.0.1]:{sshd.port} {sshd.host_pubkey}\n"
    assert line.split()[1] == "ssh-ed25519"
    r = harness.subprocess.run([harness.SSH_KEYGEN, "-l", "-f", sshd.host_key + ".pub"],
                               capture_output=True, text=True, check=True)
    assert sshd.host_fingerprint in r.stdout


def test_stop_ends_sshd(tmp_path):
    s = harness.Sshd.start(tmp_path / "s")
    pid = s.proc.pid
    s.stop()
    assert not os.path.exists(f"/proc/{pid}") or \
        open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_write_config_shapes(sshd, fakeapi, xpconfig, tmp_path):
    import yaml
    cfg = xpconfig({"crm-daily": {"source": {"include": ["profiles_*.csv"]},
                                  "batch": {"size": 500}},
                    "other": {"mapping": None}},
                   projects_extra={"main": {"max_in_flight": 2}})
    doc = yaml.safe_load(Path(cfg).read_text())
    assert doc["jobs_directory"] == "jobs.d"
    main = doc["projects"]["main"]
    assert main["url"] == fakeapi.url and main["max_in_flight"] == 2
    assert main["apptoken_file"] == fakeapi.token_file and main["ca_file"] == fakeapi.ca_file
    assert main["attributes"] == harness.DEFAULT_ATTRIBUTES
    assert doc["sites"]["partner-a"] == {"host": "127.0.0.1", "port": sshd.port,
                                         "user": sshd.user,
                                         "private_key_file": sshd.client_key,
                                         "known_hosts_file": sshd.known_hosts}
    job = yaml.safe_load((tmp_path / "etc/jobs.d/crm-daily.yaml").read_text())
    assert job == {"project": "main", "schedule": {"every": "15m"}, "mapping": {"auto": True},
                   "source": {"site": "partner-a", "path": sshd.root + "/outgoing",
                              "include": ["profiles_*.csv"], "settle": "0s"},
                   "batch": {"size": 500}}
    assert "mapping" not in yaml.safe_load((tmp_path / "etc/jobs.d/other.yaml").read_text())
    assert stat.S_IMODE(os.stat(fakeapi.token_file).st_mode) == 0o600
    assert fakeapi.token not in Path(cfg).read_text()
    xpconfig()                                           # rewriting drops stale job files
    assert sorted(p.name for p in (tmp_path / "etc/jobs.d").iterdir()) == ["crm-daily.yaml"]
