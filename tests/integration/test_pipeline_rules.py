"""Every pipeline rule family (issue 3) through the real daemon: `xpimportd --once` from the
loopback sshd to the API double, asserting what the API received (columns, rows, exact JSON
values) and what the state directory holds (run record counts, the reject report's rows, file
outcome) and the exit status.

Several cases of one family run as separate jobs of one daemon run where they need different
settings (a run stops at the first file it cannot import, so every failing case has a job of
its own). Job NAME imports from the SFTP folder outgoing/NAME.
"""

import csv
import glob
import gzip
import io
import json
import os
import re
from pathlib import Path

import pytest

import harness

# the example project's attributes plus an integer one
ATTRIBUTES = dict(harness.DEFAULT_ATTRIBUTES, visits="integer")
REPORT_HEADER = ["line", "column", "rule", "value", "raw_row", "formula_risk"]
BUDGET = {"max_invalid_rows": 100}


@pytest.fixture
def fakeapi(tmp_path, certs):
    """The API double with ATTRIBUTES (overrides conftest's; xpconfig uses this one)."""
    api = harness.FakeAPI.start(tmp_path / "api", attributes=ATTRIBUTES, certs_dir=certs["dir"])
    yield api
    api.stop()


# ---- helpers ------------------------------------------------------------------------------

def folder(sshd, job):
    return os.path.join(sshd.root, "outgoing", job)


def drop(sshd, job, name, data):
    d = Path(folder(sshd, job))
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return str(d / name)


def jobs_for(sshd, jobs):
    """{name: overrides} -> the same with source.path = outgoing/NAME."""
    out = {}
    for name, over in jobs.items():
        over = harness.deep_merge({"source": {"path": folder(sshd, name)}}, over or {})
        Path(folder(sshd, name)).mkdir(parents=True, exist_ok=True)
        out[name] = over
    return out


def once(cfg, state_dir, *extra, timeout=60):
    return harness.run_xpimportd(["-c", cfg, "-S", state_dir, "--once", *extra], timeout=timeout)


def run_records(state_dir, job):
    out = []
    for p in sorted(glob.glob(os.path.join(state_dir, "runs", job, "*.json"))):
        with open(p) as f:
            out.append(json.load(f))
    return out


def file_record(state_dir, job, name):
    """The file's entry in the job's only run record."""
    recs = run_records(state_dir, job)
    assert len(recs) == 1, recs
    files = [f for f in recs[0]["files"] if f["name"] == name]
    assert len(files) == 1, recs[0]["files"]
    return files[0]


def counts(f):
    return (f["rows_read"], f["rows_valid"], f["rows_rejected"], f["rows_posted"])


def report(f):
    """The reject report of file record f -> [(line, column, rule, value, raw_row, risk)];
    checks its header and mode. Values are the file's bytes (invalid UTF-8 kept as
    surrogate escapes)."""
    path = f["reject_report"]
    assert path, f
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, "rb") as fh:
        text = fh.read().decode("utf-8", "surrogateescape")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == REPORT_HEADER
    out = []
    for r in rows[1:]:
        assert len(r) == 6, r
        out.append((int(r[0]), r[1], r[2], r[3], r[4], int(r[5])))
    return out


def brief(rep):
    """Report rows without raw_row and formula_risk."""
    return [r[:4] for r in rep]


def posted(fakeapi):
    """Every import request the API accepted, in the order it accepted them."""
    return [q for q in fakeapi.imports() if q["status"] in (200, 202)]


def rows_by_uid(reqs):
    """{user_id: {column: value}} over requests (later rows overwrite earlier ones)."""
    out = {}
    for q in reqs:
        ui = q["columns"].index("user_id")
        for r in q["rows"]:
            out[r[ui]] = dict(zip(q["columns"], r))
    return out


def typed(v):
    """v with every scalar paired with its type, so that 1 != True != 1.0 when compared:
    the API must get JSON numbers, booleans and strings exactly."""
    if isinstance(v, dict):
        return {k: typed(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [typed(x) for x in v]
    return (type(v).__name__, v)


def rejected_lines(stdout):
    """The dry run's 'rejected: line N: MESSAGE' lines -> [(N, MESSAGE)]."""
    return [(int(m.group(1)), m.group(2))
            for m in re.finditer(r"^  rejected: line (\d+): (.*)$", stdout, re.M)]


def dry_blocks(stdout):
    """A dry run's output -> {file name: its block of lines} (jobs run in parallel, so the
    blocks of different jobs come in any order; each is printed at once)."""
    out, cur = {}, None
    for line in stdout.splitlines():
        m = re.match(r"^[\w.-]+: (/\S+) \(\d+ bytes, sha256 [0-9a-f]{64}\)$", line)
        if m:
            cur = os.path.basename(m.group(1))
            out[cur] = ""
        elif cur is not None and line.startswith("  "):
            out[cur] += line + "\n"
        else:
            cur = None
    return out


def yaml_pos(path, needle):
    """1-based (line, column) of the first occurrence of needle in a file."""
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        c = line.find(needle)
        if c >= 0:
            return i, c + 1
    raise AssertionError(f"{needle!r} not in {path}")


HDR = "user_id,email,email_subscription,first_name"


# ---- 1. RFC 4180 ----------------------------------------------------------------------------

def test_rfc4180_quoting_line_ends_bom_delimiters_and_gzip(sshd, fakeapi, xpconfig, state_dir):
    # BOM, CRLF header, quoted comma, doubled quotes, embedded LF and CRLF newlines, mixed
    # line ends, a rejected row after the multi-line ones, a last line without a newline
    a = ("\ufeff" + HDR + "\r\n"                          # 1
         'r1,r1@example.com,1,"Smith, John"\n'            # 2
         'r2,r2@example.com,1,"say ""hi"""\r\n'           # 3
         'r3,r3@example.com,1,"line one\nline two"\n'     # 4-5
         'r4,r4@example.com,1,"crlf one\r\ncrlf two"\r\n'  # 6-7
         "r5,not-an-address,1,Five\r\n"                   # 8 rejected
         '"r6",r6@example.com,"1",Six\n'                  # 9
         "r7,r7@example.com,1,Seven")                     # 10, no newline
    drop(sshd, "rfc", "a.csv", a)
    # blank trailing lines are not rows
    drop(sshd, "rfc", "b.csv", HDR + "\nr8,r8@example.com,1,Eight\n\n\n\r\n")
    drop(sshd, "semi", "s.csv", 'user_id;first_name\ns1;"a;b"\ns2;c,d\n')
    drop(sshd, "tab", "t.csv", 'user_id\tfirst_name\nt1\t"a\tb"\nt2\tc;d,e\n')
    drop(sshd, "pipe", "p.csv", 'user_id|first_name\np1|"a|b"\np2|c,d\n')
    # more than one read chunk (256 KiB) of CSV once decompressed, rows across the boundary
    many = "".join(f'zz{i:05d},zz{i}@example.com,1,"Name, {i}"\n' for i in range(7000))
    drop(sshd, "gz", "z.csv.gz",
         gzip.compress((HDR + '\nz1,z1@example.com,1,"Zed, Z"\nz2,z2@example.com,0,Zoe\n'
                        + many).encode()))
    drop(sshd, "gz", "plain.csv", HDR + "\nnot1,not1@example.com,1,NotIncluded\n")
    cfg = xpconfig(jobs_for(sshd, {
        "rfc": {"validation": {"max_invalid_rows": 1}},
        "semi": {"csv": {"delimiter": ";"}},
        "tab": {"csv": {"delimiter": "\t"}},
        "pipe": {"csv": {"delimiter": "|"}},
        "gz": {"source": {"include": ["*.csv.gz"]}},
    }))
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    got = rows_by_uid(posted(fakeapi))
    zz = {k: got.pop(k) for k in list(got) if k.startswith("zz")}
    assert typed(zz) == typed({f"zz{i:05d}": {"user_id": f"zz{i:05d}",
                                              "email": f"zz{i}@example.com",
                                              "email_subscription": 1,
                                              "first_name": f"Name, {i}"} for i in range(7000)})
    assert typed(got) == typed({
        "r1": {"user_id": "r1", "email": "r1@example.com", "email_subscription": 1,
               "first_name": "Smith, John"},
        "r2": {"user_id": "r2", "email": "r2@example.com", "email_subscription": 1,
               "first_name": 'say "hi"'},
        "r3": {"user_id": "r3", "email": "r3@example.com", "email_subscription": 1,
               "first_name": "line one\nline two"},
        "r4": {"user_id": "r4", "email": "r4@example.com", "email_subscription": 1,
               "first_name": "crlf one\r\ncrlf two"},
        "r6": {"user_id": "r6", "email": "r6@example.com", "email_subscription": 1,
               "first_name": "Six"},
        "r7": {"user_id": "r7", "email": "r7@example.com", "email_subscription": 1,
               "first_name": "Seven"},
        "r8": {"user_id": "r8", "email": "r8@example.com", "email_subscription": 1,
               "first_name": "Eight"},
        "s1": {"user_id": "s1", "first_name": "a;b"},
        "s2": {"user_id": "s2", "first_name": "c,d"},
        "t1": {"user_id": "t1", "first_name": "a\tb"},
        "t2": {"user_id": "t2", "first_name": "c;d,e"},
        "p1": {"user_id": "p1", "first_name": "a|b"},
        "p2": {"user_id": "p2", "first_name": "c,d"},
        "z1": {"user_id": "z1", "email": "z1@example.com", "email_subscription": 1,
               "first_name": "Zed, Z"},
        "z2": {"user_id": "z2", "email": "z2@example.com", "email_subscription": 0,
               "first_name": "Zoe"},
    })
    # the BOM is not part of the first header name
    assert all(q["columns"][0] == "user_id" for q in posted(fakeapi))
    fa = file_record(state_dir, "rfc", "a.csv")
    assert counts(fa) == (7, 6, 1, 6) and fa["outcome"] == "imported"
    assert fa["first_rejects"] == [{"line": 8, "column": "email", "rule": "email"}]
    assert report(fa) == [(8, "email", "email", "not-an-address",
                           "r5,not-an-address,1,Five", 0)]
    fb = file_record(state_dir, "rfc", "b.csv")
    assert counts(fb) == (1, 1, 0, 1) and fb["reject_report"] is None
    for job, name, n in (("semi", "s.csv", 2), ("tab", "t.csv", 2), ("pipe", "p.csv", 2),
                         ("gz", "z.csv.gz", 7002)):
        f = file_record(state_dir, job, name)
        assert counts(f) == (n, n, 0, n) and f["outcome"] == "imported", (job, f)
    # only *.csv.gz was taken in the gz job
    assert [f["name"] for f in run_records(state_dir, "gz")[0]["files"]] == ["z.csv.gz"]


# ---- 2. strict parsing --------------------------------------------------------------------

STRICT = (HDR + "\n"                                        # 1
          'u1,u1@example.com,1,"closed" junk\n'             # 2 after the closing quote
          'u2,u2@example.com,1,in"side\n'                   # 3 quote in an unquoted field
          "u3,u3@example.com,1\n"                           # 4 ragged: 3 fields
          "u4,u4@example.com,1,x,extra\n"                   # 5 ragged: 5 fields
          'u5,u5@example.com,1,"multi\nline"\n'             # 6-7 valid
          "u6,u6@example.com,1,caf\xe9\n"                   # 8 invalid UTF-8 (Latin-1)
          "u7,u7@example.com,1,nu\x00l\n"                   # 9 NUL byte
          "u8,u8@example.com,1,ok\n"                        # 10 valid
          'u9,u9@example.com,1,"never closed\n'             # 11 unterminated, last line
          ).encode("latin-1")


def test_strict_parsing_row_errors_with_line_numbers(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "strict", "s.csv", STRICT)
    cfg = xpconfig(jobs_for(sshd, {"strict": {"validation": BUDGET}}))
    # the dry run names the reasons
    r = once(cfg, state_dir, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "rows read 9, valid 2, rejected 7" in r.stdout
    assert rejected_lines(r.stdout) == [
        (2, "unexpected character after the closing quote in column 'first_name'"),
        (3, "quote inside an unquoted field in column 'first_name'"),
        (4, "3 fields, header has 4"),
        (5, "5 fields, header has 4"),
        (8, "invalid UTF-8 in column 'first_name'"),
        (9, "NUL byte in column 'first_name'"),
        (11, "quoted field in column 'first_name' is not closed"),
    ]
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert typed([q["rows"] for q in posted(fakeapi)]) == typed([
        [["u5", "u5@example.com", 1, "multi\nline"], ["u8", "u8@example.com", 1, "ok"]]])
    f = file_record(state_dir, "strict", "s.csv")
    assert counts(f) == (9, 2, 7, 2)
    assert report(f) == [
        (2, "first_name", "csv", "", 'u1,u1@example.com,1,"closed" junk', 0),
        (3, "first_name", "csv", "", 'u2,u2@example.com,1,in"side', 0),
        (4, "", "fields", "", "u3,u3@example.com,1", 0),
        (5, "", "fields", "", "u4,u4@example.com,1,x,extra", 0),
        (8, "first_name", "utf8", "caf\udce9", "u6,u6@example.com,1,caf\udce9", 0),
        (9, "first_name", "nul", "nu\x00l", "u7,u7@example.com,1,nu\x00l", 0),
        (11, "first_name", "csv", "", 'u9,u9@example.com,1,"never closed', 0),
    ]


def test_unterminated_quote_mid_file_and_limits(sshd, fakeapi, xpconfig, state_dir):
    # an open quote that swallows the rest of the file: rows would be lost silently, so the
    # file fails naming the line, and nothing of it is posted
    drop(sshd, "unterm", "u.csv", HDR + '\nm1,m1@example.com,1,ok\nm2,m2@example.com,1,"open\n'
         "m3,m3@example.com,1,three\nm4,m4@example.com,1,four\n")
    lim = ("user_id,first_name\n"
           "f1," + "x" * 17 + "\n"                          # 2 field over 16 bytes
           "f2," + "y" * 16 + "\n"                          # 3 exactly 16: fine
           'f3,"' + "z" * 17 + '"\n'                        # 4 quoted field over 16 bytes
           "f4,short,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,\n"   # 5 line > 60
           "f5,fine\n")                                     # 6
    drop(sshd, "limits", "l.csv", lim)
    drop(sshd, "cols", "c.csv", "user_id,first_name,loyalty_tier,vip\nc1,a,b,true\n")
    cfg = xpconfig(jobs_for(sshd, {
        "unterm": {"validation": BUDGET},
        "limits": {"validation": BUDGET, "csv": {"max_field_bytes": 16, "max_line_bytes": 60}},
        "cols": {"validation": BUDGET, "csv": {"max_columns": 3}},
    }))
    # the dry run says which limit
    r = once(cfg, state_dir, "--dry-run", "--job", "limits")
    assert rejected_lines(r.stdout) == [
        (2, "column 'first_name' is longer than 16 bytes (csv.max_field_bytes)"),
        (4, "column 'first_name' is longer than 16 bytes (csv.max_field_bytes)"),
        (5, "row is longer than 60 bytes (csv.max_line_bytes)"),
    ]
    r = once(cfg, state_dir)
    assert r.returncode == 1
    fu = file_record(state_dir, "unterm", "u.csv")
    assert fu["outcome"] == "failed"
    assert fu["error"] == ("line 3: quoted field in column 'first_name' is not closed before "
                           "the end of the file")
    fc = file_record(state_dir, "cols", "c.csv")
    assert fc["outcome"] == "failed"
    assert fc["error"] == "the header has 4 columns, more than csv.max_columns (3)"
    assert [q["rows"] for q in posted(fakeapi)] == [[["f2", "y" * 16], ["f5", "fine"]]]
    fl = file_record(state_dir, "limits", "l.csv")
    assert counts(fl) == (5, 2, 3, 2) and fl["outcome"] == "imported"
    assert [r[:3] for r in report(fl)] == [(2, "first_name", "limit"), (4, "first_name", "limit"),
                                           (5, "", "limit")]


# ---- 3. header rules ----------------------------------------------------------------------

def test_header_rules_are_file_errors_naming_the_column(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "empty", "e.csv", "")
    drop(sshd, "blank", "b.csv", "\ufeff\n\n")
    drop(sshd, "noname", "n.csv", "user_id,,first_name\nh1,x,y\n")
    # trimmed, " first_name " is the same name as "first_name"
    drop(sshd, "dup", "d.csv", "user_id,first_name, first_name \nh2,x,y\n")
    drop(sshd, "trim", "t.csv", " user_id ,\tfirst_name  ,  loyalty_tier\nh3,Ann,gold\n")
    cfg = xpconfig(jobs_for(sshd, {j: {} for j in ("empty", "blank", "noname", "dup", "trim")}))
    r = once(cfg, state_dir)
    assert r.returncode == 1
    errors = {}
    for job, name in (("empty", "e.csv"), ("blank", "b.csv"), ("noname", "n.csv"),
                      ("dup", "d.csv")):
        f = file_record(state_dir, job, name)
        assert f["outcome"] == "failed" and counts(f) == (0, 0, 0, 0), f
        errors[job] = f["error"]
        assert f"{job}: {name}: {f['error']}" in r.stderr
    assert errors == {
        "empty": "the file is empty (no header row)",
        "blank": "the file is empty (no header row)",
        "noname": "column 2 has an empty header",
        "dup": "column 3 'first_name' duplicates column 2",
    }
    reqs = posted(fakeapi)
    assert [(q["columns"], q["rows"]) for q in reqs] == [
        (["user_id", "first_name", "loyalty_tier"], [["h3", "Ann", "gold"]])]
    f = file_record(state_dir, "trim", "t.csv")
    assert counts(f) == (1, 1, 0, 1) and f["columns_ignored"] == []


# ---- 4. mapping ---------------------------------------------------------------------------

MAPPED = ("user_id,E-mail,email_subscription,Phone,sms_subscription,Internal ref,first_name,"
          "vip,Notes,Email\n"
          "k1,k1@example.com,yes,+353 85 012 3456,no,ref-1,Kay,true,note,other@example.com\n")


def test_mapping_auto_columns_and_not_imported(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "map", "m.csv", MAPPED)
    # auto off: only the columns entries count
    drop(sshd, "manual", "m.csv", "customer,first_name,email\nk2,Kim,k2@example.com\n")
    drop(sshd, "nouid", "m.csv", "id,first_name\nk3,Kit\n")
    cfg = xpconfig(jobs_for(sshd, {
        "map": {"mapping": {"columns": {"E-mail": "email", "Phone": "mobile_number",
                                        "Internal ref": "skip"}}},
        "manual": {"mapping": {"auto": False, "columns": {"customer": "user_id",
                                                          "first_name": "first_name"}}},
        "nouid": {},
    }))
    r = once(cfg, state_dir)
    assert r.returncode == 1            # nouid failed
    by_cols = {tuple(q["columns"]): q["rows"] for q in posted(fakeapi)}
    assert typed(by_cols) == typed({
        ("user_id", "email", "email_subscription", "mobile_number", "sms_subscription",
         "first_name", "vip"):
            [["k1", "k1@example.com", 1, "353850123456", 0, "Kay", True]],
        ("user_id", "first_name"): [["k2", "Kim"]],
    })
    f = file_record(state_dir, "map", "m.csv")
    assert f["columns"] == ["user_id", "email", "email_subscription", "mobile_number",
                            "sms_subscription", "first_name", "vip"]
    assert "Notes" in f["columns_ignored"] and "Email" in f["columns_ignored"]
    assert set(f["columns_ignored"]) <= {"Notes", "Email", "Internal ref"}
    # reported once per file, in the log too
    lines = [ln for ln in r.stderr.splitlines() if "map: m.csv: columns not imported" in ln]
    assert len(lines) == 1, r.stderr
    assert "'Notes'" in lines[0] and "'Email'" in lines[0]
    fm = file_record(state_dir, "manual", "m.csv")
    assert fm["columns"] == ["user_id", "first_name"] and fm["columns_ignored"] == ["email"]
    fn = file_record(state_dir, "nouid", "m.csv")
    assert fn["outcome"] == "failed" and counts(fn) == (0, 0, 0, 0)
    assert fn["error"] == "no column maps to user_id (header: id,first_name)"


def test_mapping_skip_is_not_reported_as_not_imported(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "map", "m.csv", MAPPED)
    cfg = xpconfig(jobs_for(sshd, {
        "map": {"mapping": {"columns": {"E-mail": "email", "Phone": "mobile_number",
                                        "Internal ref": "skip"}}}}))
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert len(posted(fakeapi)) == 1
    f = file_record(state_dir, "map", "m.csv")
    assert f["columns_ignored"] == ["Notes", "Email"]
    line, = [ln for ln in r.stderr.splitlines() if "columns not imported" in ln]
    assert line.endswith(": 'Notes', 'Email'")


def test_mapping_configuration_errors(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "crm-daily", "m.csv", "user_id,Tier\nk1,gold\n")
    cases = [
        ({"mapping": {"columns": {"Tier": "loyalty_level"}}}, "loyalty_level",
         "mapping.columns: 'Tier' maps to 'loyalty_level' which is not an attribute of "
         "project 'main'"),
        ({"mapping": {"auto": False, "columns": {"Tier": "loyalty_tier"}}}, "mapping:",
         "mapping: no column maps to user_id (auto is off)"),
        ({"mapping": {"columns": {"user_id": "loyalty_tier"}}}, "mapping:",
         "mapping: no column maps to user_id (the 'user_id' header is remapped by "
         "mapping.columns)"),
    ]
    for job, needle, msg in cases:
        cfg = xpconfig(jobs_for(sshd, {"crm-daily": job}))
        job_file = str(Path(cfg).parent / "jobs.d" / "crm-daily.yaml")
        line, col = yaml_pos(job_file, needle)
        r = harness.run_xpimportd(["-c", cfg, "-n"])
        assert r.returncode == 3, r.stdout
        assert r.stdout.splitlines() == [f"{job_file}:{line}:{col}: {msg}",
                                         "configuration invalid: 1 error"]
        # the daemon refuses the configuration: nothing is fetched or posted
        r = once(cfg, state_dir)
        assert r.returncode == 3
        assert f"{job_file}:{line}:{col}: {msg}" in r.stderr
    assert fakeapi.imports() == []
    assert run_records(state_dir, "crm-daily") == []


# ---- 5. validation ------------------------------------------------------------------------

SYS_HDR = "user_id,email,email_subscription,mobile_number,sms_subscription,language,timezone"
SYS_OK = [  # (row, expected JSON row)
    ("v01,v01@example.com,1,0850123456,TRUE,en,Europe/Dublin",
     ["v01", "v01@example.com", 1, "353850123456", 1, "en", "Europe/Dublin"]),
    ("v02,,,+353 (85) 012-3456,yes,en-IE,",
     ["v02", None, None, "353850123456", 1, "en-IE", None]),
    ("v03,,,00353.85.012.3456,No,,", ["v03", None, None, "353850123456", 0, None, None]),
    ("v04,v04@example.com,false,+44 7400 123456,False,,",
     ["v04", "v04@example.com", 0, "447400123456", 0, None, None]),
    ("  v05  ,,,,YES,,", ["v05", None, None, None, 1, None, None]),
    ("y" * 101 + ",,,,,,", ["y" * 101, None, None, None, None, None, None]),
]
SYS_BAD_IDS = [  # user_id and e-mail rules (line, column, rule, value, message)
    (",v@example.com,1,,,,", (8, "user_id", "required", ""), "user_id is empty"),
    ("   ,v@example.com,1,,,,", (9, "user_id", "required", ""), "user_id is empty"),
    ("x" * 102 + ",,,,,,", (10, "user_id", "length", "x" * 102),
     "user_id is longer than 101 characters"),
    ("v11,not an email,1,,,,", (11, "email", "email", "not an email"),
     "email 'not an email' is not a valid address"),
    ("v12,a@@example.com,1,,,,", (12, "email", "email", "a@@example.com"),
     "email 'a@@example.com' is not a valid address"),
    ("v13,Sam <sam@example.com>,1,,,,", (13, "email", "email", "Sam <sam@example.com>"),
     "email 'Sam <sam@example.com>' is not a valid address"),
    ("v14,v14@example.com,,,,,", (14, "email_subscription", "required", ""),
     "email is set but email_subscription is empty"),
    ("v15,,,0850123456,,,", (15, "sms_subscription", "required", ""),
     "mobile_number is set but sms_subscription is empty"),
    ("v16,v16@example.com,maybe,,,,", (16, "email_subscription", "subscription", "maybe"),
     "email_subscription 'maybe' is not 1/0, true/false or yes/no"),
]
SYS_BAD_OTHER = [  # mobile, subscriptions, language, timezone
    ("w01,,,+999 123 456 789,1,,", (2, "mobile_number", "mobile_number", "+999 123 456 789"),
     "mobile_number '+999 123 456 789' does not start with a known country calling code"),
    ("w02,,,+3538501234567890123,1,,",
     (3, "mobile_number", "mobile_number", "+3538501234567890123"),
     "mobile_number '+3538501234567890123' is not a valid number"),
    ("w03,,,085 012,1,,", (4, "mobile_number", "mobile_number", "085 012"),
     "mobile_number '085 012' is not a valid number"),
    ("w04,,,0850123456x,1,,", (5, "mobile_number", "mobile_number", "0850123456x"),
     "mobile_number '0850123456x' is not a valid number"),
    ("w05,,,,2,,", (6, "sms_subscription", "subscription", "2"),
     "sms_subscription '2' is not 1/0, true/false or yes/no"),
    ("w06,,,,,xx,", (7, "language", "language", "xx"),
     "language 'xx' is not an ISO 639-1 language code (like en or en-IE)"),
    ("w07,,,,,english,", (8, "language", "language", "english"),
     "language 'english' is not an ISO 639-1 language code (like en or en-IE)"),
    ("w08,,,,,,Mars/Olympus", (9, "timezone", "timezone", "Mars/Olympus"),
     "timezone 'Mars/Olympus' is not a known IANA time zone"),
    ("w09,,,,,,../etc/passwd", (10, "timezone", "timezone", "../etc/passwd"),
     "timezone '../etc/passwd' is not a known IANA time zone"),
]


def _csv(header, rows):
    return header + "\n" + "\n".join(rows) + "\n"


def test_validation_of_system_attributes(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "ie", "a.csv",
         _csv(SYS_HDR, [r for r, _ in SYS_OK] + [r for r, _, _ in SYS_BAD_IDS]))
    drop(sshd, "ie2", "b.csv", _csv(SYS_HDR, [r for r, _, _ in SYS_BAD_OTHER]))
    # the UK default turns a national number into 44...; without one it is rejected
    drop(sshd, "uk", "c.csv", _csv(SYS_HDR, ["g1,,,07400123456,1,,"]))
    drop(sshd, "nocc", "d.csv", _csv(SYS_HDR, ["n1,,,07400123456,1,,", "n2,,,447400123456,1,,"]))
    ie = {"validation": dict(BUDGET, default_country_code=353)}
    cfg = xpconfig(jobs_for(sshd, {"ie": ie, "ie2": ie,
                                   "uk": {"validation": {"default_country_code": 44}},
                                   "nocc": {"validation": BUDGET}}))
    r = once(cfg, state_dir, "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    dry = dry_blocks(r.stdout)
    assert rejected_lines(dry["a.csv"]) == [(exp[0], msg) for _, exp, msg in SYS_BAD_IDS]
    assert rejected_lines(dry["b.csv"]) == [(exp[0], msg) for _, exp, msg in SYS_BAD_OTHER]
    assert rejected_lines(dry["c.csv"]) == []
    assert rejected_lines(dry["d.csv"]) == [
        (2, "mobile_number '07400123456' is a national number but no default_country_code "
         "is set")]
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    got = {}
    for q in posted(fakeapi):
        assert q["columns"] == SYS_HDR.split(",")
        for row in q["rows"]:
            got[row[0]] = row
    assert typed(got) == typed({exp[0]: exp for _, exp in SYS_OK} | {
        "g1": ["g1", None, None, "447400123456", 1, None, None],
        "n2": ["n2", None, None, "447400123456", 1, None, None]})
    fa = file_record(state_dir, "ie", "a.csv")
    assert counts(fa) == (15, 6, 9, 6)
    assert brief(report(fa)) == [exp for _, exp, _ in SYS_BAD_IDS]
    assert fa["first_rejects"] == [{"line": e[0], "column": e[1], "rule": e[2]}
                                   for _, e, _ in SYS_BAD_IDS]
    fb = file_record(state_dir, "ie2", "b.csv")
    assert counts(fb) == (9, 0, 9, 0)
    assert brief(report(fb)) == [exp for _, exp, _ in SYS_BAD_OTHER]
    fd = file_record(state_dir, "nocc", "d.csv")
    assert brief(report(fd)) == [(2, "mobile_number", "mobile_number", "07400123456")]


CUSTOM_HDR = "user_id,first_name,lifetime_value,visits,last_deposit,vip,preferences"
CUSTOM_OK = [
    ('c01,Ann,12.5,3,2026-02-28,true,"[1,""a""]"',
     ["c01", "Ann", 12.5, 3, "2026-02-28", True, '[1,"a"]']),
    ("c02," + "é" * 101 + ',-3e2,-7,2024-02-29 10:00:00,No,"{""k"": {""x"": null}}"',
     ["c02", "é" * 101, -300.0, -7, "2024-02-29 10:00:00", False, '{"k": {"x": null}}']),
    ("c03,,0,0,2026-01-31T23:59:59Z,YES,[]",
     ["c03", None, 0, 0, "2026-01-31T23:59:59Z", True, "[]"]),
    ("c04,,,,2026-01-31T23:59:59+01:00,0,",
     ["c04", None, None, None, "2026-01-31T23:59:59+01:00", False, None]),
    ("c05,,,,2026-01-31 23:59:59-05:30,,",
     ["c05", None, None, None, "2026-01-31 23:59:59-05:30", None, None]),
]
CUSTOM_BAD = [
    ("d01," + "a" * 102 + ",,,,,", ("first_name", "length", "a" * 102)),
    ("d02,,12abc,,,,", ("lifetime_value", "number", "12abc")),
    ("d03,,NaN,,,,", ("lifetime_value", "number", "NaN")),
    ("d04,,01,,,,", ("lifetime_value", "number", "01")),
    ("d05,,,1.5,,,", ("visits", "integer", "1.5")),
    ("d06,,,9223372036854775808,,,", ("visits", "integer", "9223372036854775808")),
    ("d07,,,,2026-02-30,,", ("last_deposit", "date", "2026-02-30")),
    ("d08,,,,2025-02-29,,", ("last_deposit", "date", "2025-02-29")),
    ("d09,,,,2026-13-01,,", ("last_deposit", "date", "2026-13-01")),
    ("d10,,,,2026-01-01 25:00:00,,", ("last_deposit", "date", "2026-01-01 25:00:00")),
    ("d11,,,,31/12/2026,,", ("last_deposit", "date", "31/12/2026")),
    ("d12,,,,,maybe,", ("vip", "boolean", "maybe")),
    ('d13,,,,,,"[1,2"', ("preferences", "array", "[1,2")),
    ("d14,,,,,,not json", ("preferences", "array", "not json")),
    ("d15,,,,,,42", ("preferences", "array", "42")),
]


def test_validation_of_custom_attribute_types(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "custom", "c.csv", _csv(CUSTOM_HDR, [r for r, _ in CUSTOM_OK]
                                       + [r for r, _ in CUSTOM_BAD]))
    cfg = xpconfig(jobs_for(sshd, {"custom": {"validation": BUDGET}}))
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    reqs = posted(fakeapi)
    assert len(reqs) == 1 and reqs[0]["columns"] == CUSTOM_HDR.split(",")
    rows = reqs[0]["rows"]
    # JSON types, not only values: numbers and booleans unquoted, arrays as strings
    assert typed(rows) == typed([exp for _, exp in CUSTOM_OK])
    f = file_record(state_dir, "custom", "c.csv")
    n_ok = len(CUSTOM_OK)
    assert counts(f) == (n_ok + len(CUSTOM_BAD), n_ok, len(CUSTOM_BAD), n_ok)
    assert brief(report(f)) == [(n_ok + 2 + i,) + exp for i, (_, exp) in enumerate(CUSTOM_BAD)]


# ---- 6. empty cells -----------------------------------------------------------------------

def test_empty_cells_null_keeps_stored_value_empty_and_reject(sshd, fakeapi, xpconfig,
                                                            state_dir):
    hdr = "user_id,first_name,loyalty_tier,vip"
    cfg = xpconfig(jobs_for(sshd, {"crm": {}}))
    drop(sshd, "crm", "1.csv", _csv(hdr, ["e1,Ann,gold,true"]))
    assert once(cfg, state_dir).returncode == 0
    assert typed(fakeapi.profiles()["e1"]) == typed({"first_name": "Ann",
                                                    "loyalty_tier": "gold", "vip": True})
    # default: the column is still sent, as JSON null, and the stored value is kept
    drop(sshd, "crm", "2.csv", _csv(hdr, ["e1,,silver,"]))
    assert once(cfg, state_dir).returncode == 0
    assert posted(fakeapi)[-1]["columns"] == hdr.split(",")
    assert typed(posted(fakeapi)[-1]["rows"]) == typed([["e1", None, "silver", None]])
    assert typed(fakeapi.profiles()["e1"]) == typed({"first_name": "Ann",
                                                    "loyalty_tier": "silver", "vip": True})
    fakeapi.reset()
    drop(sshd, "empty", "e.csv", _csv(hdr, ["e2,,bronze,"]))
    drop(sshd, "reject", "r.csv", _csv(hdr, ["e3,,bronze,true", "e4,Eve,bronze,false",
                                             "e5,Eda,,true"]))
    cfg = xpconfig(jobs_for(sshd, {
        "empty": {"validation": {"empty_cells": "empty"}},
        "reject": {"validation": {"empty_cells": "reject", "max_invalid_rows": 2}}}))
    r = once(cfg, state_dir, "--job", "empty", "--job", "reject")
    assert r.returncode == 0, r.stderr
    assert typed(rows_by_uid(posted(fakeapi))) == typed({
        "e2": {"user_id": "e2", "first_name": "", "loyalty_tier": "bronze", "vip": ""},
        "e4": {"user_id": "e4", "first_name": "Eve", "loyalty_tier": "bronze", "vip": False}})
    f = file_record(state_dir, "reject", "r.csv")
    assert counts(f) == (3, 1, 2, 1)
    assert brief(report(f)) == [(2, "first_name", "empty", ""), (4, "loyalty_tier", "empty", "")]


# ---- 7. the same user_id twice ------------------------------------------------------------

DUPS = _csv("user_id,first_name,loyalty_tier",
            ["d1,A,1", "d2,B,1", "d1,C,2", "d3,D,1", "d1,E,3"])


def test_same_user_id_twice_sent_in_file_order_last_wins(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "crm", "d.csv", DUPS)
    cfg = xpconfig(jobs_for(sshd, {"crm": {}}), projects_extra={"main": {"max_in_flight": 1}})
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    # a repeat within one batch starts a new batch: three requests, rows in file order
    assert [q["rows"] for q in posted(fakeapi)] == [
        [["d1", "A", "1"], ["d2", "B", "1"]],
        [["d1", "C", "2"], ["d3", "D", "1"]],
        [["d1", "E", "3"]]]
    assert fakeapi.profiles()["d1"] == {"first_name": "E", "loyalty_tier": "3"}
    f = file_record(state_dir, "crm", "d.csv")
    assert counts(f) == (5, 5, 0, 5)
    assert f["duplicates"] == 2 and f["batches_total"] == 3

def test_same_user_id_last_row_wins_with_batches_in_flight(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "crm", "d.csv", DUPS)
    # the first request to arrive is answered (and applied) a second late
    fakeapi.faults([{"delay": 1.0}])
    cfg = xpconfig(jobs_for(sshd, {"crm": {}}))     # max_in_flight: default 4
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert [q["rows"][0][0:2] for q in posted(fakeapi)] == [["d1", "A"], ["d1", "C"],
                                                            ["d1", "E"]]
    assert fakeapi.profiles()["d1"]["first_name"] == "E"


# ---- 8. error budget ----------------------------------------------------------------------

def _budget_file(prefix, bad):
    """7 rows, `bad` of them (rows 3, 5, 7, ...) with an invalid e-mail."""
    rows = []
    for i in range(7):
        ok = not (i % 2 == 1 and (i // 2) < bad)
        rows.append(f"{prefix}{i},{prefix}{i}@example.com,1,N{i}" if ok
                    else f"{prefix}{i},bad{i},1,N{i}")
    return _csv(HDR, rows)


def test_error_budget(sshd, fakeapi, xpconfig, state_dir):
    man = (harness.REPO / "man" / "xpimportd.yaml.5").read_text()
    assert "When neither is set the budget is 0 rows: one rejected row fails the file." in man
    jobs = {
        "rows2-bad3": ({"max_invalid_rows": 2}, 3),
        "rows2-bad2": ({"max_invalid_rows": 2}, 2),
        "pct40-bad3": ({"max_invalid_percent": 40}, 3),      # 42.9 % > 40
        "pct50-bad3": ({"max_invalid_percent": 50}, 3),
        "pct0-bad0": ({"max_invalid_percent": 0}, 0),
        "default-bad1": ({}, 1),
        "default-bad0": ({}, 0),
    }
    for i, (job, (_, bad)) in enumerate(jobs.items()):
        drop(sshd, job, "f.csv", _budget_file(chr(ord("a") + i), bad))
    cfg = xpconfig(jobs_for(sshd, {j: {"validation": v} if v else {}
                                   for j, (v, _) in jobs.items()}))
    # the dry run already says so
    r = once(cfg, state_dir, "--dry-run", "--job", "rows2-bad3")
    assert r.returncode == 1
    assert "over the error budget: nothing of this file would be posted" in r.stdout
    r = once(cfg, state_dir)
    assert r.returncode == 1
    sent = {q["rows"][0][0][0] for q in posted(fakeapi)}
    assert sent == {"b", "d", "e", "g"}
    for i, (job, (_, bad)) in enumerate(jobs.items()):
        f = file_record(state_dir, job, "f.csv")
        p = chr(ord("a") + i)
        if p in sent:
            assert f["outcome"] == "imported" and counts(f) == (7, 7 - bad, bad, 7 - bad), job
            rows = [q["rows"] for q in posted(fakeapi) if q["rows"][0][0][0] == p]
            assert [r[0] for r in rows[0]] == [f"{p}{k}" for k in range(7)
                                              if not (k % 2 == 1 and k // 2 < bad)]
        else:
            assert f["outcome"] == "failed" and counts(f) == (7, 7 - bad, bad, 0), job
            assert f["error"] == (f"{bad} of 7 rows are invalid, over the error budget; "
                                  "nothing of this file was posted")
            assert brief(report(f)) == [(2 * k + 3, "email", "email", f"bad{2 * k + 1}")
                                        for k in range(bad)]
    assert not any(q["rows"][0][0][0] in "acf" for q in fakeapi.imports())


# ---- 9. batches ---------------------------------------------------------------------------

def _prefs_row(uid, json_bytes):
    body = ",".join(["1"] * ((json_bytes - 2) // 2))
    return f'{uid},"[{body}]"'


def test_batches_by_size_and_bytes(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "size", "s.csv", _csv("user_id,first_name", [f"s{i:02d},N{i}" for i in range(10)]))
    # ~30 KB a row: two fit under 64 KiB, a row of 70 KB fits nowhere
    big = [_prefs_row(f"b{i}", 30000) for i in range(5)] + [_prefs_row("b9", 70000)]
    drop(sshd, "bytes", "b.csv", _csv("user_id,preferences", big))
    cfg = xpconfig(jobs_for(sshd, {
        "size": {"batch": {"size": 3}},
        "bytes": {"batch": {"max_bytes": 65536}, "csv": {"max_field_bytes": 100000},
                  "validation": {"max_invalid_rows": 1}}}),
        projects_extra={"main": {"max_in_flight": 1}})
    r = once(cfg, state_dir, "--job", "size")
    assert r.returncode == 0, r.stderr
    assert [[row[0] for row in q["rows"]] for q in posted(fakeapi)] == [
        ["s00", "s01", "s02"], ["s03", "s04", "s05"], ["s06", "s07", "s08"], ["s09"]]
    f = file_record(state_dir, "size", "s.csv")
    assert f["batches_total"] == 4
    assert [b["rows"] for b in sorted(f["batches"], key=lambda b: b["index"])] == [3, 3, 3, 1]
    fakeapi.reset()
    r = once(cfg, state_dir, "--dry-run", "--job", "bytes")
    assert "rows read 6, valid 5, rejected 1, duplicates 0, batches 3" in r.stdout
    b9 = json.dumps(["b9", "[" + ",".join(["1"] * 34999) + "]"], separators=(",", ":"))
    assert rejected_lines(r.stdout) == [
        (7, f"row is {len(b9)} bytes as JSON, more than batch.max_bytes (65536)")]
    r = once(cfg, state_dir, "--job", "bytes")
    assert r.returncode == 0, r.stderr
    reqs = posted(fakeapi)
    assert [[row[0] for row in q["rows"]] for q in reqs] == [["b0", "b1"], ["b2", "b3"], ["b4"]]
    assert all(q["rows"][0][1] == "[" + ",".join(["1"] * 14999) + "]" for q in reqs)
    f = file_record(state_dir, "bytes", "b.csv")
    assert counts(f) == (6, 5, 1, 5)
    (line, column, rule, value, raw, _), = report(f)
    assert (line, column, rule, value) == (7, "", "limit", "")
    assert raw == _prefs_row("b9", 70000)


# ---- 10. dry run --------------------------------------------------------------------------

DRY = _csv(HDR + ",Notes", ["d1,d1@example.com,1,Ann,n1",
                            "d2,d2@example.com,yes,,n2",
                            "d3,not-an-address,1,Cy,n3",
                            "d4,d4@example.com,maybe,Di,n4",
                            "d5,d5@example.com,0,Ed,n5"])


def _state_files(state_dir):
    return sorted(os.path.relpath(os.path.join(root, n), state_dir)
                  for root, _, names in os.walk(state_dir) for n in names)


def test_dry_run_prints_what_would_be_posted_and_changes_nothing(sshd, fakeapi, xpconfig,
                                                                state_dir):
    path = drop(sshd, "crm", "d.csv", DRY)
    cfg = xpconfig(jobs_for(sshd, {"crm": {"validation": {"max_invalid_rows": 2},
                                           "batch": {"size": 2},
                                           "source": {"after_import": {"action": "delete"}}}}))
    r = once(cfg, state_dir, "--dry-run")
    assert r.returncode == 0, r.stderr
    first = [{"user_id": "d1", "email": "d1@example.com", "email_subscription": 1,
              "first_name": "Ann"},
             {"user_id": "d2", "email": "d2@example.com", "email_subscription": 1,
              "first_name": None},
             {"user_id": "d5", "email": "d5@example.com", "email_subscription": 0,
              "first_name": "Ed"}]
    block = dry_blocks(r.stdout)["d.csv"]
    assert block.splitlines() == [
        "  rows read 5, valid 3, rejected 2, duplicates 0, batches 2",
        "  columns sent: user_id email email_subscription first_name",
        "  columns not imported: Notes",
        "  first rows: " + json.dumps(first, separators=(",", ":")),
        "  rejected: line 4: email 'not-an-address' is not a valid address",
        "  rejected: line 5: email_subscription 'maybe' is not 1/0, true/false or yes/no",
        "  dry run: nothing posted, nothing moved, nothing recorded",
    ]
    assert f"crm: {path} ({len(DRY)} bytes, sha256 " in r.stdout
    # nothing changed: no request at all, no run record, no ledger entry, no reject report,
    # the remote file untouched
    assert fakeapi.requests() == []
    assert run_records(state_dir, "crm") == []
    assert not [p for p in _state_files(state_dir)
                if p.startswith(("runs", "jobs")) or (p.startswith("ledger")
                                                      and os.path.getsize(
                                                          os.path.join(state_dir, p)))]
    assert Path(path).read_text() == DRY
    # a real run afterwards does it
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert sorted([row[0] for row in q["rows"]] for q in posted(fakeapi)) == [["d1", "d2"],
                                                                              ["d5"]]
    assert not os.path.exists(path)


def test_dry_run_leaves_no_staged_copy(sshd, fakeapi, xpconfig, state_dir):
    drop(sshd, "crm", "d.csv", DRY)
    cfg = xpconfig(jobs_for(sshd, {"crm": {"validation": {"max_invalid_rows": 2}}}))
    r = once(cfg, state_dir, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert [p for p in _state_files(state_dir) if p.startswith("stage")] == []


# ---- 11. formula injection ----------------------------------------------------------------

FORMULA = "=cmd|' /C calc'!A0"


def test_formula_values_kept_verbatim_and_flagged_when_rejected(sshd, fakeapi, xpconfig,
                                                               state_dir):
    text = _csv(HDR, [f"x1,x1@example.com,1,{FORMULA}",          # 2 valid: posted as is
                      f"x2,x2@example.com,1,@SUM(1+1)*{FORMULA}",  # 3 valid
                      f"x3,{FORMULA},1,Three",                     # 4 the formula rejected
                      f"x4,x4@example.com,1,{FORMULA}{'x' * 90}",  # 5 too long a formula
                      "x5,x5@example.com,1,-2+3"])                 # 6 valid
    drop(sshd, "crm", "f.csv", text)
    cfg = xpconfig(jobs_for(sshd, {"crm": {"validation": BUDGET}}))
    r = once(cfg, state_dir)
    assert r.returncode == 0, r.stderr
    assert typed([q["rows"] for q in posted(fakeapi)]) == typed([[
        ["x1", "x1@example.com", 1, FORMULA],
        ["x2", "x2@example.com", 1, f"@SUM(1+1)*{FORMULA}"],
        ["x5", "x5@example.com", 1, "-2+3"]]])
    f = file_record(state_dir, "crm", "f.csv")
    assert report(f) == [
        (4, "email", "email", FORMULA, f"x3,{FORMULA},1,Three", 1),
        (5, "first_name", "length", FORMULA + "x" * 90,
         f"x4,x4@example.com,1,{FORMULA}{'x' * 90}", 1),
    ]


def test_formula_in_another_cell_of_a_rejected_row_is_flagged(sshd, fakeapi, xpconfig,
                                                              state_dir):
    drop(sshd, "crm", "f.csv", _csv(HDR, [f"x6,not-an-address,1,{FORMULA}"]))
    cfg = xpconfig(jobs_for(sshd, {"crm": {"validation": BUDGET}}))
    assert once(cfg, state_dir).returncode == 0
    f = file_record(state_dir, "crm", "f.csv")
    assert report(f) == [(2, "email", "email", "not-an-address",
                          f"x6,not-an-address,1,{FORMULA}", 1)]


# ---- 12. personal data in logs ------------------------------------------------------------

SECRET_EMAIL = "jane.private.person@localhost"


def test_rejected_values_stay_out_of_logs(sshd, fakeapi, xpconfig, state_dir):
    text = _csv(HDR, ["s1,s1@example.com,1,Sam", f"s2,{SECRET_EMAIL},1,Jane"])
    drop(sshd, "within", "p.csv", text)
    drop(sshd, "over", "p.csv", text)          # default budget: the file fails
    cfg = xpconfig(jobs_for(sshd, {"within": {"validation": {"max_invalid_rows": 1}},
                                   "over": {}}))
    r = once(cfg, state_dir, "-v")
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert SECRET_EMAIL not in out and "Jane" not in out
    assert fakeapi.token not in out
    # the operator is told where to look: line, column and rule
    for job in ("within", "over"):
        f = file_record(state_dir, job, "p.csv")
        assert (f"{job}: p.csv: 1 rows rejected; first at line 3, column 'email' (email); "
                f"see the reject report {f['reject_report']}") in r.stderr
        assert f["first_rejects"] == [{"line": 3, "column": "email", "rule": "email"}]
        assert SECRET_EMAIL not in json.dumps(run_records(state_dir, job))
        assert report(f) == [(3, "email", "email", SECRET_EMAIL, f"s2,{SECRET_EMAIL},1,Jane", 0)]
    assert typed(rows_by_uid(posted(fakeapi))) == typed({
        "s1": {"user_id": "s1", "email": "s1@example.com", "email_subscription": 1,
               "first_name": "Sam"}})
