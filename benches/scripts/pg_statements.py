#!/usr/bin/env python3
"""Statements per order of one database, from the Postgres server log (issue 11).

Usage:
  benches/scripts/pg_statements.py <database> <server log> <start byte> [orders]

Before the run: `ALTER DATABASE <database> SET log_statement = 'all'` (that database only)
and note the log's size (`stat -c %s <log>`) as <start byte>. The log line prefix must name
the database (`%u@%d`, the Debian default here). Counts every statement that database's
sessions executed after <start byte>, by kind: append (the events insert), read_stream,
read_all, checkpoint, idempotency, lease (pg_locks / advisory locks) and other; with
[orders] (default: order streams created in the database) it divides by the orders.
Prints one JSON line.
"""
import json
import re
import subprocess
import sys

db, log, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
if len(sys.argv) > 4:
    orders = int(sys.argv[4])
else:
    q = "SELECT count(*) FROM events WHERE version = 1 AND stream_type = 'order'"
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atc", q],
                         capture_output=True, text=True, check=True).stdout
    orders = int(out.strip())

head = re.compile(r"^\S+ \S+ \S+ \[\d+\] (\S*)@(\S*) LOG:  (?:execute [^:]*|statement): ?(.*)$")
counts = {}
current = None


def kind(sql):
    s = " ".join(sql.split())
    if "INSERT INTO events" in s:
        return "append"
    if "version >= $2" in s:
        return "read_stream"
    if "global_position > $1" in s:
        return "read_all"
    if "checkpoint" in s:
        return "checkpoint"
    if "idempotency" in s:
        return "idempotency"
    if "pg_locks" in s or "advisory" in s:
        return "lease"
    if "pg_notify" in s:
        return "notify"
    if s.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
        return "transaction control"
    return "other"


def flush():
    global current
    if current is not None:
        k = kind(current)
        counts[k] = counts.get(k, 0) + 1
    current = None


with open(log, "rb") as f:
    f.seek(start)
    for raw in f:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        m = head.match(line)
        if m:
            flush()
            if m[2] == db:
                current = m[3]
        elif current is not None and (line.startswith("\t") or not re.match(r"^\d{4}-\d\d-\d\d ", line)):
            current += " " + line
        else:
            flush()
flush()
total = sum(counts.values())
res = {"database": db, "orders": orders, "statements": total,
       "per_order": round(total / orders, 3) if orders else None,
       "by_kind_per_order": {k: round(v / orders, 3) for k, v in sorted(counts.items())} if orders else counts}
print(json.dumps(res))
