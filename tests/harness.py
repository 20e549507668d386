"""Test harness for xpimportd: certificates, the Xtremepush API double, a loopback sshd,
configuration writing and running the programs.

Importable by pytest (tests/integration/conftest.py, tests/fakeapi/conftest.py), by
tests/demo.py and by benchmarks: put tests/ on sys.path and `import harness`.
Standard library plus PyYAML only. Every process started here has a stop() that ends it.
"""

import base64
import copy
import hashlib
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import yaml

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
# XP_BIN_DIR runs the tests against another build (e.g. an --enable-sanitizers tree).
BIN_DIR = Path(os.environ.get("XP_BIN_DIR") or (REPO / "src"))
XPIMPORTD = BIN_DIR / "xpimportd"
XPIMPORTCTL = BIN_DIR / "xpimportctl"
FAKEAPI_PY = TESTS_DIR / "fakeapi" / "fakeapi.py"
PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"

# The custom attributes of design.md's example project.
DEFAULT_ATTRIBUTES = {
    "first_name": "string",
    "loyalty_tier": "string",
    "lifetime_value": "number",
    "last_deposit": "date",
    "vip": "boolean",
    "preferences": "array",
}

CERT_KINDS = ("good", "expired", "wronghost", "selfsigned")


class HarnessError(RuntimeError):
    pass


def _run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if p.returncode != 0:
        raise HarnessError(f"{cmd[0]} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def write_secret(path, text):
    """Write a file readable by its owner only (0600), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _terminate(proc, grace=5.0):
    """End a Popen we started: SIGTERM, wait `grace` seconds, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------

_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""

_CA_CNF = """\
[ ca ]
default_ca = harness_ca
[ harness_ca ]
dir = {d}
database = {d}/ca-index.txt
new_certs_dir = {d}/ca-newcerts
serial = {d}/ca-serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
"""


def make_ca(dirpath, kinds=("good",)):
    """Create (once per directory) a CA and server certificates under `dirpath`.

    kinds: any of "good" (SAN IP:127.0.0.1, DNS:localhost, signed by the CA), "expired"
    (same names, signed by the CA, valid 2020-01-01..2020-01-02), "wronghost" (SAN
    DNS:wrong.example only, signed by the CA), "selfsigned" (127.0.0.1/localhost, not signed
    by the CA). Returns {"ca": ca.pem, "dir": dirpath, KIND: (cert.pem, key.pem), ...} with
    every kind generated so far in that directory. All keys are ECDSA P-256, 0600.
    """
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = d / "ca.pem", d / "ca.key"
    if not ca.exists():
        _run([OPENSSL, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
              "-days", "3650", "-subj", "/CN=xpimportd test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        os.chmod(ca_key, 0o600)
    out = {"ca": str(ca), "dir": str(d)}
    for kind in set(kinds) | {k for k in CERT_KINDS if (d / f"{k}.pem").exists()}:
        if kind not in CERT_KINDS:
            raise ValueError(f"make_ca: unknown certificate kind {kind!r}")
        cert, key = d / f"{kind}.pem", d / f"{kind}.key"
        if not cert.exists():
            _make_server_cert(d, kind, cert, key, ca, ca_key)
        out[kind] = (str(cert), str(key))
    return out


def _make_server_cert(d, kind, cert, key, ca, ca_key):
    san = "DNS:wrong.example" if kind == "wronghost" else "IP:127.0.0.1,DNS:localhost"
    cn = "wrong.example" if kind == "wronghost" else "127.0.0.1"
    tmp_cert = cert.with_name(cert.name + ".tmp")
    if kind == "selfsigned":
        _run([OPENSSL, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
              "-out", str(tmp_cert), "-days", "3650", "-subj", f"/CN={cn}",
              "-addext", f"subjectAltName={san}",
              "-addext", "basicConstraints=critical,CA:FALSE"])
        os.chmod(key, 0o600)
        os.replace(tmp_cert, cert)
        return
    ext = d / f"{kind}.ext"
    ext.write_text(_SERVER_EXT.format(san=san))
    csr = d / f"{kind}.csr"
    _run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
          "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}"])
    os.chmod(key, 0o600)
    if kind == "expired":
        # `openssl x509` of OpenSSL 3.0 cannot back-date; `openssl ca` can.
        (d / "ca-newcerts").mkdir(exist_ok=True)
        (d / "ca-index.txt").touch()
        serial = d / "ca-serial"
        if not serial.exists():
            serial.write_text(secrets.token_hex(8) + "\n")
        cnf = d / "ca.cnf"
        cnf.write_text(_CA_CNF.format(d=d))
        _run([OPENSSL, "ca", "-batch", "-config", str(cnf), "-cert", str(ca),
              "-keyfile", str(ca_key), "-in", str(csr), "-out", str(tmp_cert),
              "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
              "-extfile", str(ext), "-notext"])
    else:
        _run([OPENSSL, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
              "-set_serial", "0x" + secrets.token_hex(8), "-days", "3650", "-sha256",
              "-extfile", str(ext), "-out", str(tmp_cert)])
    os.replace(tmp_cert, cert)


# ---------------------------------------------------------------------------------------
# The Xtremepush API double
# ---------------------------------------------------------------------------------------

class FakeAPI:
    """tests/fakeapi/fakeapi.py as a subprocess.

    FakeAPI.start(tmpdir, attributes=..., token=None, task_delay=0.3, cert="good",
                  certs_dir=None, extra_args=())
    """

    def __init__(self):
        self.proc = None

    @classmethod
    def start(cls, tmpdir, attributes=None, token=None, task_delay=0.3, cert="good",
              certs_dir=None, extra_args=(), timeout=10.0):
        self = cls()
        d = Path(tmpdir)
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        self.attributes = dict(DEFAULT_ATTRIBUTES if attributes is None else attributes)
        self.task_delay = task_delay
        self.token = token if token is not None else "xp-" + secrets.token_hex(20)
        self.token_file = str(write_secret(d / "main.apptoken", self.token + "\n"))
        certs = make_ca(certs_dir or d / "pki", kinds=(cert,))
        self.certs = certs
        self.ca_file = certs["ca"]
        self.cert_kind = cert
        cert_file, key_file = certs[cert]
        port_file = d / "fakeapi.port"
        if port_file.exists():
            port_file.unlink()
        self.log_path = str(d / "fakeapi.log")
        attrs = ",".join(f"{k}:{v}" for k, v in self.attributes.items())
        cmd = [PYTHON, str(FAKEAPI_PY), "--cert", cert_file, "--key", key_file,
               "--token-file", self.token_file, "--attributes", attrs,
               "--port", "0", "--port-file", str(port_file),
               "--task-delay", str(task_delay), *extra_args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if port_file.exists():
                text = port_file.read_text().strip()
                if text:
                    self.port = int(text)
                    break
            if self.proc.poll() is not None:
                raise HarnessError(f"fakeapi exited with {self.proc.returncode}: "
                                   f"{Path(self.log_path).read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError("fakeapi did not write its port file within "
                                   f"{timeout:g}s")
            time.sleep(0.02)
        self.url = f"https://127.0.0.1:{self.port}"
        # always verify against the harness CA: a test server with a bad cert on purpose
        # is still administered over TLS, with the checks it is meant to fail turned off
        self._ctx = ssl.create_default_context(cafile=self.ca_file)
        if cert != "good":
            self._ctx.check_hostname = False
            self._ctx.verify_mode = ssl.CERT_NONE
        return self

    # -- raw HTTP -----------------------------------------------------------------------
    def http(self, method, path, body=None, headers=None, timeout=30.0):
        """One request on a fresh connection -> (status, headers dict, parsed JSON or bytes).
        body: bytes/str sent as is, anything else JSON-encoded."""
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ctx,
                                           timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = data
            return resp.status, hdrs, parsed
        finally:
            conn.close()

    def call(self, method_model, body):
        """POST /api/external/METHOD/MODEL with `body` (the apptoken is added unless the
        body has one) -> (status, parsed JSON)."""
        if isinstance(body, dict) and "apptoken" not in body:
            body = dict(body, apptoken=self.token)
        st, _, obj = self.http("POST", f"/api/external/{method_model}", body)
        return st, obj

    def _admin(self, method, name, body=None):
        st, _, obj = self.http(method, f"/_admin/{name}", body)
        if st != 200:
            raise HarnessError(f"fakeapi admin {name}: HTTP {st}: {obj!r}")
        return obj

    # -- admin ----------------------------------------------------------------------------
    def requests(self, since=0, rows=True):
        """Every API request received, oldest first (seq > since)."""
        q = f"requests?since={int(since)}" + ("" if rows else "&rows=0")
        return self._admin("GET", q)

    def imports(self, **kw):
        """The import/profile requests only."""
        return [r for r in self.requests(**kw) if r["path"] == "/api/external/import/profile"]

    def profiles(self):
        return self._admin("GET", "profiles")

    def faults(self, items):
        """Replace the pending faults; each following import/profile request uses one."""
        return self._admin("POST", "faults", list(items))

    def pending_faults(self):
        return self._admin("GET", "faults")

    def task_outcome(self, status, task_delay=None):
        body = {"status": status}
        if task_delay is not None:
            body["task_delay"] = task_delay
        return self._admin("POST", "task_outcome", body)

    def reset(self):
        return self._admin("POST", "reset", {})

    def health(self):
        return self._admin("GET", "health")

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def stop(self):
        _terminate(self.proc)


# ---------------------------------------------------------------------------------------
# A loopback sshd
# ---------------------------------------------------------------------------------------

_SSHD_CONFIG = """\
# written by tests/harness.py
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication {password}
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin yes
StrictModes no
UsePAM {use_pam}
UseDNS no
AllowUsers {user}
PrintMotd no
PrintLastLog no
AllowTcpForwarding no
X11Forwarding no
MaxStartups 100:30:200
MaxSessions 100
MaxAuthTries 10
LoginGraceTime 30
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""


def _children(pid):
    """pids whose parent is `pid` (the per-connection processes of an sshd we started)."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(e))
    return out


def pubkey_fingerprint(pubkey_line):
    """'ssh-ed25519 AAAA... [comment]' -> 'SHA256:...' as ssh-keygen -l prints it."""
    blob = base64.b64decode(pubkey_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


class Sshd:
    """A private OpenSSH server on 127.0.0.1 for the current user (key auth, internal-sftp).

    Sshd.start(tmpdir, password=False)

    password=True only turns PasswordAuthentication on; it can only succeed when the OS user
    has a password in /etc/shadow (as root, UsePAM no: sshd checks the shadow entry itself;
    as a normal user, UsePAM yes). The harness never sets or invents a password.
    As a normal user only that user can log in (sshd without privileges); as root, root.
    """

    def __init__(self):
        self.proc = None

    @classmethod
    def start(cls, tmpdir, password=False, timeout=10.0):
        self = cls()
        d = Path(tmpdir)
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        self.password = bool(password)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        if os.getuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.host_key = str(d / "ssh_host_ed25519_key")
        self.client_key = str(d / "client_ed25519")
        self.authorized_keys = str(d / "authorized_keys")
        self.known_hosts = str(d / "known_hosts")
        self.config_path = str(d / "sshd_config")
        self.pid_file = str(d / "sshd.pid")
        self.log_path = str(d / "sshd.log")
        self.root = str(d / "sftp")
        os.makedirs(self.root + "/outgoing", exist_ok=True)
        self._keygen(self.host_key, "xpimportd-test-host")
        self._keygen(self.client_key, "xpimportd-test-client")
        os.chmod(self.client_key, 0o600)
        self.client_pubkey = Path(self.client_key + ".pub").read_text().strip()
        Path(self.authorized_keys).write_text(self.client_pubkey + "\n")
        self.port = None
        self._launch(timeout)
        self.write_known_hosts()
        return self

    @staticmethod
    def _keygen(path, comment):
        for p in (path, path + ".pub"):
            if os.path.exists(p):
                os.unlink(p)
        _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])

    @property
    def host_pubkey(self):
        """The server's current public host key: 'ssh-ed25519 AAAA...'."""
        parts = Path(self.host_key + ".pub").read_text().split()
        return f"{parts[0]} {parts[1]}"

    @property
    def host_fingerprint(self):
        return pubkey_fingerprint(self.host_pubkey)

    def known_hosts_line(self):
        return f"[127.0.0.1]:{self.port} {self.host_pubkey}\n"

    def write_known_hosts(self, path=None):
        """Write a known_hosts file holding the current host key (default: .known_hosts)."""
        path = path or self.known_hosts
        Path(path).write_text(self.known_hosts_line())
        return path

    def _launch(self, timeout, port=None):
        last = ""
        for _ in range(8 if port is None else 40):
            p = port or free_port()
            Path(self.config_path).write_text(_SSHD_CONFIG.format(
                port=p, host_key=self.host_key, pid_file=self.pid_file,
                authorized_keys=self.authorized_keys, user=self.user,
                password="yes" if self.password else "no",
                # As root: no PAM, sshd checks the account itself. As a normal user that
                # check cannot read /etc/shadow and refused the account as "locked" (seen
                # with nobody, shadow "*"); through PAM (pam_unix's helper) it is accepted.
                use_pam="no" if os.getuid() == 0 else "yes"))
            # -e with -E: everything goes to the log file
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", self.config_path, "-E", self.log_path],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if self._wait_banner(p, timeout):
                self.port = p
                return
            last = self.log()[-1500:]
            _terminate(self.proc)
            self.proc = None
            if port is not None:
                time.sleep(0.25)        # same port wanted: wait for it to be free
        raise HarnessError(f"sshd did not start; log tail:\n{last}")

    def _wait_banner(self, port, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.settimeout(2)
                    if s.recv(256).startswith(b"SSH-2.0-"):
                        s.sendall(b"SSH-2.0-harness_probe\r\n")
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def log(self):
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        kids = _children(self.proc.pid) if self.proc.poll() is None else []
        _terminate(self.proc)
        for k in kids:
            try:
                os.kill(k, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.proc = None

    def restart_with_new_host_key(self, timeout=10.0):
        """Stop, generate a new host key, start again on the same port. .known_hosts is NOT
        rewritten (it still holds the old key): that is the point. The old public key is
        kept in .old_host_pubkey; write_known_hosts() trusts the new one."""
        self.old_host_pubkey = self.host_pubkey
        port = self.port
        self.stop()
        self._keygen(self.host_key, "xpimportd-test-host")
        self._launch(timeout, port=port)

    def sftp_batch(self, commands, known_hosts=None, timeout=30):
        """Run OpenSSH's `sftp -b -` with `commands` (a list of lines) as this user."""
        cmd = ["/usr/bin/sftp", "-b", "-", "-i", self.client_key, "-P", str(self.port),
               "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
               "-o", "GlobalKnownHostsFile=/dev/null",
               "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
               "-o", "BatchMode=yes", "-o", "UpdateHostKeys=no",
               "-F", "/dev/null", f"{self.user}@127.0.0.1"]
        return subprocess.run(cmd, input="\n".join(commands) + "\n", text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------

def deep_merge(base, over):
    """A copy of `base` with `over` merged in: dicts recursively, anything else replaced;
    a value of None removes the key."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def default_job(sshd):
    job = {"project": "main"}
    if sshd is not None:
        job["source"] = {"site": "partner-a", "path": sshd.root + "/outgoing",
                         "include": ["*.csv"], "settle": "0s"}
    job["schedule"] = {"every": "15m"}
    job["mapping"] = {"auto": True}
    return job


def write_config(tmpdir, sshd, api, jobs, projects_extra=None, extra=None):
    """Write TMPDIR/etc/xpimportd.yaml and TMPDIR/etc/jobs.d/NAME.yaml (design.md shapes).

    jobs: {name: overrides} (overrides deep-merged over default_job(sshd); None or {} = the
    default job; a key set to None is removed), or a list of names.
    projects_extra: deep-merged over the `projects` mapping ({"main": {...}} tweaks main,
    a new name adds a project). extra: deep-merged over the whole daemon document.
    sshd may be None (no sites, jobs without a default source). Job files of earlier calls
    that are not in `jobs` are removed. Returns the path of xpimportd.yaml.
    """
    etc = Path(tmpdir) / "etc"
    jobs_dir = etc / "jobs.d"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    doc = {"jobs_directory": "jobs.d",
           "projects": {"main": {"url": api.url,
                                 "apptoken_file": os.path.abspath(api.token_file),
                                 "ca_file": os.path.abspath(api.ca_file),
                                 "attributes": dict(api.attributes)}}}
    os.chmod(api.token_file, 0o600)
    if sshd is not None:
        os.chmod(sshd.client_key, 0o600)
        doc["sites"] = {"partner-a": {"host": "127.0.0.1", "port": sshd.port,
                                      "user": sshd.user,
                                      "private_key_file": os.path.abspath(sshd.client_key),
                                      "known_hosts_file": os.path.abspath(sshd.known_hosts)}}
    if projects_extra:
        doc["projects"] = deep_merge(doc["projects"], projects_extra)
    if extra:
        doc = deep_merge(doc, extra)
    if isinstance(jobs, (list, tuple)):
        jobs = {name: {} for name in jobs}
    for old in jobs_dir.glob("*.yaml"):
        if old.stem not in jobs:
            old.unlink()
    for name, over in jobs.items():
        job = deep_merge(default_job(sshd), over or {})
        (jobs_dir / f"{name}.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    path = etc / "xpimportd.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


# ---------------------------------------------------------------------------------------
# Running the programs
# ---------------------------------------------------------------------------------------

_SCRUBBED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY",
                 "STATE_DIRECTORY", "LISTEN_FDS", "LISTEN_PID", "INVOCATION_ID",
                 "JOURNAL_STREAM")


def program_env(env=None):
    """os.environ without the systemd variables, updated with `env` (None values remove)."""
    e = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    return e


def _program(path):
    if not os.access(path, os.X_OK):
        raise HarnessError(f"{path} is not built (run `make`)")
    return str(path)


def run_xpimportd(args, timeout=60, env=None, input=None):
    """Run src/xpimportd ARGS to completion -> CompletedProcess (text stdout/stderr)."""
    return subprocess.run([_program(XPIMPORTD), *map(str, args)], env=program_env(env),
                          input=input, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def run_xpimportctl(args, timeout=60, env=None, input=None):
    """Run src/xpimportctl ARGS to completion -> CompletedProcess (text stdout/stderr)."""
    return subprocess.run([_program(XPIMPORTCTL), *map(str, args)], env=program_env(env),
                          input=input, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


class Daemon:
    """src/xpimportd ARGS running in the background (stdout+stderr to a log file)."""

    def __init__(self, args, log_path, env=None):
        self.log_path = str(log_path)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([_program(XPIMPORTD), *map(str, args)],
                                         env=program_env(env), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_log(self, text, timeout=20.0):
        """Wait until `text` appears in the log; returns the log or raises HarnessError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log()
            if text in out:
                return out
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise HarnessError(f"{text!r} not in the daemon log:\n{self.log()[-3000:]}")

    def stop(self, grace=10.0):
        """SIGTERM, wait `grace` seconds, SIGKILL. Returns the exit status."""
        _terminate(self.proc, grace)
        return self.proc.returncode


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    """Poll pred() until it returns a true value (returned) or raise HarnessError."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


if __name__ == "__main__":  # a quick manual check: python3 tests/harness.py DIR
    base = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/xp-harness")
    api = FakeAPI.start(base / "api")
    ssh = Sshd.start(base / "sshd")
    try:
        print("api", api.url, api.health())
        print("sshd", ssh.port, ssh.host_fingerprint)
    finally:
        ssh.stop()
        api.stop()
