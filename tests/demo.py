#!/usr/bin/python3
"""`make demo`: one real import, end to end, on this machine.

Starts a loopback sshd and the Xtremepush API double, drops the sample CSV of the product
documentation on the SFTP folder, runs `src/xpimportd -c CONFIG -S STATE --once`, prints its
output, the run record and the profiles the API double now holds, and stops everything.
Exit status 0 only when xpimportd succeeded and both profiles arrived.

    /usr/bin/python3 tests/demo.py [--keep]     (--keep: leave the temporary directory)
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

SAMPLE_CSV = (
    "user_id,email,email_subscription,mobile_number,sms_subscription,language,timezone,"
    "first_name\n"
    "fe56bc676be78,sam@example.com,1,353850123456,1,en,Europe/Dublin,Sam\n"
    "fe56bc676be79,laura@example.com,1,353850123457,1,en,Europe/London,Laura\n"
)
EXPECTED_USERS = ("fe56bc676be78", "fe56bc676be79")
JOB = "crm-daily"


def project_attributes():
    """The attributes of project `main` in etc/xpimportd.yaml, else first_name:string."""
    import yaml
    try:
        doc = yaml.safe_load((harness.REPO / "etc" / "xpimportd.yaml").read_text())
        attrs = doc["projects"]["main"]["attributes"]
        if isinstance(attrs, dict) and attrs and \
                all(isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()):
            return dict(attrs)
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        pass
    return {"first_name": "string"}


def pick(d, *names):
    """The first of `names` present in dict d (a name may be a dotted path)."""
    for name in names:
        v = d
        for part in name.split("."):
            if not isinstance(v, dict) or part not in v:
                break
            v = v[part]
        else:
            return v
    return None


def print_run_summary(state_dir):
    runs = sorted(Path(state_dir, "runs", JOB).glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        print(f"(no run record under {state_dir}/runs/{JOB}/)")
        return
    try:
        rec = json.loads(runs[-1].read_text())
    except (OSError, ValueError) as e:
        print(f"(cannot read {runs[-1]}: {e})")
        return
    if not isinstance(rec, dict):
        print(f"(unexpected run record in {runs[-1]})")
        return
    print(f"run record: {runs[-1]}")
    for key in ("job", "trigger", "outcome"):
        v = rec.get(key)
        print(f"  {key}: {v if v is not None else '?'}")
    files = rec.get("files")
    if not isinstance(files, list):
        return
    for f in files:
        if not isinstance(f, dict):
            continue
        name = pick(f, "path", "name", "file", "remote_path") or "?"
        counts = []
        for what in ("read", "valid", "rejected", "posted"):
            v = pick(f, f"rows_{what}", f"rows.{what}", what)
            counts.append(f"{what} {v if v is not None else '?'}")
        print(f"  file {name}: rows " + ", ".join(counts))


def main(argv):
    keep = "--keep" in argv
    tmp = Path(tempfile.mkdtemp(prefix="xpimportd-demo-"))
    sshd = api = None
    ok = False
    try:
        attrs = project_attributes()
        print(f"== demo directory {tmp}")
        sshd = harness.Sshd.start(tmp / "sshd")
        print(f"== sshd on 127.0.0.1:{sshd.port} (host key {sshd.host_fingerprint}), "
              f"SFTP folder {sshd.root}")
        api = harness.FakeAPI.start(tmp / "api", attributes=attrs)
        print(f"== Xtremepush API double at {api.url}, attributes: "
              + ", ".join(f"{k}:{v}" for k, v in attrs.items()))
        csv_path = Path(sshd.root, "outgoing", "profiles_demo.csv")
        csv_path.write_text(SAMPLE_CSV)
        print(f"== dropped {csv_path}")
        config = harness.write_config(tmp, sshd, api, {
            JOB: {"source": {"include": ["profiles_*.csv"], "settle": "0s"}}})
        state = tmp / "state"
        state.mkdir(mode=0o700)
        cmd = ["-c", config, "-S", str(state), "--once"]
        print(f"== xpimportd {' '.join(cmd)}", flush=True)
        try:
            r = harness.run_xpimportd(cmd, timeout=120)
        except harness.HarnessError as e:
            print(f"demo: {e}", file=sys.stderr)
            return 1
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        print(f"== xpimportd exited with {r.returncode}")
        print_run_summary(state)
        profiles = api.profiles()
        print("== profiles held by the API double:")
        print(json.dumps(profiles, indent=2, sort_keys=True))
        missing = [u for u in EXPECTED_USERS if u not in profiles]
        if missing:
            print(f"demo: FAILED: profiles not imported: {', '.join(missing)}", file=sys.stderr)
        elif r.returncode != 0:
            print("demo: FAILED: xpimportd did not succeed", file=sys.stderr)
        else:
            ok = True
            print("demo: OK: both profiles imported")
    finally:
        if sshd is not None:
            sshd.stop()
        if api is not None:
            api.stop()
        if keep:
            print(f"== kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
