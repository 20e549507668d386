#!/usr/bin/python3
"""The script a user would write instead of xpimportd: Python 3's csv and json modules,
header mapping, minimal validation, 10,000-row import/profile batches.

usage: naive_import.py CSV [--out FILE] [--url URL --ca CA --token-file FILE]

Without --url the batches (the JSON request bodies) are written to --out (default
/dev/null). With --url each batch is POSTed over one kept-alive HTTPS connection. Prints
"naive rows=N valid=V rejected=R batches=B json_bytes=J seconds=S" on stdout.
The validation is what such a script usually does, far less than xpimportd's: user_id
present, an @ in the email, subscriptions as 0/1, the mobile number's punctuation stripped
and a national trunk 0 replaced by 353, numbers parsed as floats. Standard library only.
"""
import argparse
import csv
import http.client
import json
import re
import ssl
import sys
import time
from urllib.parse import urlsplit

SYSTEM = ["user_id", "email", "email_subscription", "mobile_number", "sms_subscription",
          "language", "timezone"]
CUSTOM = {"first_name": "string", "loyalty_tier": "string", "lifetime_value": "number",
          "last_deposit": "date", "vip": "boolean"}
BATCH = 10000
FLAGS = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0}
PUNCT = re.compile(r"[\s\-\.\(\)]")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$")


def flag(v):
    return FLAGS[v.strip().lower()]


def mobile(v):
    v = PUNCT.sub("", v.replace("(0)", ""))
    if v.startswith("+"):
        v = v[1:]
    elif v.startswith("00"):
        v = v[2:]
    elif v.startswith("0"):
        v = "353" + v[1:]
    if not v.isdigit() or len(v) > 15:
        raise ValueError("bad mobile number")
    return v


def convert(col, v):
    if v == "":
        return None
    if col in ("email_subscription", "sms_subscription", "vip"):
        return flag(v)
    if col == "email":
        if "@" not in v or " " in v:
            raise ValueError("bad email")
        return v
    if col == "mobile_number":
        return mobile(v)
    if col == "lifetime_value":
        return float(v)
    if col == "last_deposit":
        if not DATE.match(v):
            raise ValueError("bad date")
        return v
    return v


class Poster:
    def __init__(self, url, ca, token):
        u = urlsplit(url)
        ctx = ssl.create_default_context(cafile=ca)
        self.conn = http.client.HTTPSConnection(u.hostname, u.port or 443, context=ctx)
        self.path = u.path.rstrip("/") + "/api/external/import/profile"
        self.token = token

    def send(self, body):
        self.conn.request("POST", self.path, body=body,
                          headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status not in (200, 202):
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--out", default="/dev/null")
    ap.add_argument("--url")
    ap.add_argument("--ca")
    ap.add_argument("--token-file")
    a = ap.parse_args()
    token = open(a.token_file).read().strip() if a.token_file else "xp-bench-token"
    poster = Poster(a.url, a.ca, token) if a.url else None
    out = None if poster else open(a.out, "w", encoding="utf-8")

    t0 = time.monotonic()
    rows = valid = rejected = batches = json_bytes = 0
    with open(a.csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        keep = [i for i, h in enumerate(header) if h in SYSTEM or h in CUSTOM]
        columns = [header[i] for i in keep]
        if "user_id" not in columns:
            sys.exit("no user_id column")
        uid = columns.index("user_id")
        batch = []

        def flush():
            nonlocal batches, json_bytes
            body = json.dumps({"apptoken": token, "columns": columns, "rows": batch})
            json_bytes += len(body)
            batches += 1
            if poster:
                poster.send(body.encode())
            else:
                out.write(body)

        for rec in reader:
            rows += 1
            if len(rec) != len(header):
                rejected += 1
                continue
            try:
                values = [convert(header[i], rec[i].strip()) for i in keep]
            except (ValueError, KeyError):
                rejected += 1
                continue
            if not values[uid]:
                rejected += 1
                continue
            valid += 1
            batch.append(values)
            if len(batch) == BATCH:
                flush()
                batch = []
        if batch:
            flush()
    if out:
        out.close()
    dt = time.monotonic() - t0
    print(f"naive rows={rows} valid={valid} rejected={rejected} batches={batches} "
          f"json_bytes={json_bytes} seconds={dt:.3f}")


if __name__ == "__main__":
    main()
