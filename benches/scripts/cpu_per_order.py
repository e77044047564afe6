#!/usr/bin/env python3
"""CPU per order of each process of a running `payorch load`, over a window (issue 11).

Usage: benches/scripts/cpu_per_order.py <database> <seconds> <serve pid> <load pid> [sandbox pid]

Run it while `payorch load` is in its measured phase against the Postgres database <database>.
Over <seconds> it takes utime+stime deltas from /proc/<pid>/stat of serve, the load tool, a
standalone `payorch sandbox` and RabbitMQ (beam.smp), and of the Postgres backends connected to
<database> only (pg_stat_activity), so other databases on a shared server do not count (the load
tool's `--cpu-process postgres` counts every process named postgres). Orders are counted in the
store (first events of order streams) at both ends; it prints one JSON line: ms of CPU per order
per process and Postgres transactions per order. CPU per order depends little on how much of the
machine the run got, unlike orders/s.
"""
import json
import os
import subprocess
import sys
import time

db, window = sys.argv[1], float(sys.argv[2])
pids = dict(zip(["serve", "load", "sandbox"], [int(p) for p in sys.argv[3:]]))
tck = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, TypeError, IndexError, ValueError):
        return None


def psql(database, query):
    cmd = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-Atc", query]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()


def backends():
    q = f"SELECT pid FROM pg_stat_activity WHERE datname = '{db}'"
    return {int(p): ticks(int(p)) for p in psql("postgres", q)}


def beam():
    out = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def sample():
    s = {k: ticks(p) for k, p in pids.items()}
    s["pg"] = backends()
    s["beam"] = ticks(beam())
    q = "SELECT count(*) FROM events WHERE version = 1 AND stream_type = 'order'"
    s["orders"] = int(psql(db, q)[0])
    q = f"SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{db}'"
    s["xact"] = int(psql(db, q)[0])
    s["t"] = time.time()
    return s


a = sample()
time.sleep(window)
b = sample()
n = b["orders"] - a["orders"]
if n <= 0:
    sys.exit("no orders in the window")
secs = b["t"] - a["t"]
res = {"orders": n, "secs": round(secs, 2), "orders_per_s": round(n / secs, 1)}
for k in ["serve", "load", "sandbox", "beam"]:
    if a.get(k) is not None and b.get(k) is not None:
        res[k + "_ms"] = round((b[k] - a[k]) * 1000 / tck / n, 3)
pg = sum(v - a["pg"].get(p, 0) for p, v in b["pg"].items() if v is not None)
res["pg_ms"] = round(pg * 1000 / tck / n, 3)
res["pg_backends"] = len(b["pg"])
res["pg_xact_per_order"] = round((b["xact"] - a["xact"]) / n, 2)
print(json.dumps(res))
