#!/usr/bin/python3
"""Deterministic profiles CSV for the benchmark and the integration tests.

usage: gen_profiles.py ROWS SEED OUTPUT

Columns: the 8 seed columns (user_id, email, email_subscription,
mobile_number, sms_subscription, language, timezone, first_name) and 4
custom ones (loyalty_tier: string, lifetime_value: number, last_deposit:
date, vip: boolean). About 2% of the fields are quoted, some of them with
embedded commas, doubled quotes and newlines; first names include UTF-8.
Every row is valid for a job with validation.default_country_code 353, so a
clean file reaches the API row for row. The same ROWS and SEED always give
the same bytes.
"""
import random
import sys

HEADER = ["user_id", "email", "email_subscription", "mobile_number", "sms_subscription",
          "language", "timezone", "first_name", "loyalty_tier", "lifetime_value",
          "last_deposit", "vip"]
FIRST = ["Sam", "Aoife", "Seán", "Zoë", "Björn", "José", "Łukasz", "Ngozi", "Mei", "Oisín",
         "François", "Renée", "Dmitrí", "Ana", "Tomás", "Chloé", "Jürgen", "Siobhán",
         "Ólafur", "Ségolène", "Ivan", "Ľudmila", "Marta", "Yuki", "Hélène"]
TIERS = ["bronze", "silver", "gold", "platinum"]
LANGS = ["en", "en-IE", "en-GB", "ga", "fr", "de", "es", "pl", "pt-BR"]
ZONES = ["Europe/Dublin", "Europe/London", "Europe/Paris", "America/New_York", "UTC",
         "Asia/Tokyo", "Europe/Warsaw"]
DOMAINS = ["example.com", "example.ie", "mail.example.org", "example.co.uk"]


def quote(s):
    return '"' + s.replace('"', '""') + '"'


def mobile(rng):
    k = rng.randrange(4)
    n = rng.randrange(10000000)
    if k == 0:
        return "08%d%07d" % (rng.choice([3, 5, 6, 7, 9]), n)        # national, cc 353
    if k == 1:
        return "+353 8%d %03d %04d" % (rng.choice([3, 5, 6, 7, 9]), n // 10000, n % 10000)
    if k == 2:
        return "4474%08d" % rng.randrange(100000000)                 # already E.164
    return "0044 (0)7400 %06d" % rng.randrange(1000000)


def row(rng, i):
    uid = "u%08d" % i
    has_email = rng.random() < 0.9
    has_mobile = rng.random() < 0.7
    name = rng.choice(FIRST)
    fields = [
        uid,
        "%s.%d@%s" % (name.lower().encode("ascii", "ignore").decode() or "x", i,
                      rng.choice(DOMAINS)) if has_email else "",
        rng.choice(["1", "0", "true", "false", "yes", "no"]) if has_email else "",
        mobile(rng) if has_mobile else "",
        rng.choice(["1", "0", "Yes", "No"]) if has_mobile else "",
        rng.choice(LANGS),
        rng.choice(ZONES),
        name,
        rng.choice(TIERS),
        "%d.%02d" % (rng.randrange(100000), rng.randrange(100)),
        "20%02d-%02d-%02d" % (rng.randrange(10, 25), rng.randrange(1, 13), rng.randrange(1, 29))
        + (" %02d:%02d:%02d" % (rng.randrange(24), rng.randrange(60), rng.randrange(60))
           if rng.random() < 0.5 else ""),
        rng.choice(["true", "false", "1", "0"]),
    ]
    out = []
    for j, f in enumerate(fields):
        if rng.random() < 0.02:
            if j == 7:
                f = rng.choice([f + ", Jr.", f + ' "the great"', f + "\nand partner", f])
            elif j == 8:
                f = rng.choice([f + ",plus", f + "\r\nline2", f])
            out.append(quote(f))
        else:
            out.append(f)
    return ",".join(out)


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: gen_profiles.py ROWS SEED OUTPUT")
    rows, seed, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(HEADER) + "\n")
        buf = []
        for i in range(1, rows + 1):
            buf.append(row(rng, i))
            if len(buf) == 10000:
                f.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            f.write("\n".join(buf) + "\n")


if __name__ == "__main__":
    main()
