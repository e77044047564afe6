#!/usr/bin/env bash
# `payorch import` / `export` throughput on Postgres (issue 14 point 6;
# docs/BENCHMARKS.md "Import and export"). Self-contained:
#   1. `payorch demo` into a temp SQLite store, exported (52 events of
#      every flow), copied ORDERS times by gen_export.py (fresh ids);
#   2. a fresh Postgres database; `payorch import` of the file (an empty
#      store: one transaction, indexes re-created at the end);
#   3. optionally the same import again (all present: per batch);
#   4. `payorch export` of the store.
# For each step: wall time, events/s, payorch CPU (user+sys, from
# /usr/bin/time) and the CPU of the Postgres backends serving this
# database (sampled from /proc: Postgres on this host only; WAL writer and
# checkpointer not included). Load average printed first and last.
#
# Usage (from the repository root, after
#   CARGO_INCREMENTAL=0 nice cargo build --release --bin payorch):
#   benches/scripts/import_bench.sh
# Knobs (environment): B=target/release/payorch  U=postgres://postgres@127.0.0.1:5432
#   COPIES=20000 (x 52 events = 1,040,000)  REIMPORT=0|1
#   IMPORT_FLAGS="--per-batch" (compare with one transaction per batch)
#   KEEP=1 (keep the database and files)
set -euo pipefail

B=${B:-target/release/payorch}
U=${U:-postgres://postgres@127.0.0.1:5432}
COPIES=${COPIES:-20000}
REIMPORT=${REIMPORT:-0}
IMPORT_FLAGS=${IMPORT_FLAGS:-}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
db=payorch_import_bench_$$
[ -x "$B" ] || { echo "no binary at $B: build it first (see the header)" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql is needed" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed (apt-get install time)" >&2; exit 1; }

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    psql -q "$U/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
  else
    echo "kept database $db and files in $work"
  fi
}
trap cleanup EXIT

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)  cores: $(nproc)"
"$B" --json demo --store "sqlite://$work/demo.db" >/dev/null
"$B" --store-url "sqlite://$work/demo.db" export --out "$work/demo.jsonl" >/dev/null
python3 "$here/gen_export.py" "$work/demo.jsonl" "$COPIES" "$work/export.jsonl"
events=$(wc -l < "$work/export.jsonl")
echo "file: $events events, $(du -m "$work/export.jsonl" | cut -f1) MB"
psql -q "$U/postgres" -c "CREATE DATABASE $db" >/dev/null
"$B" --store-url "$U/$db" migrate >/dev/null

# The sampler: sums utime+stime (seconds) of the processes whose command
# line names the database (its Postgres backends), sampling every 0.1 s
# until SIGTERM; then prints the total.
cat > "$work/backend_cpu.py" <<'PY'
import os, signal, sys, time
db, seen, hz = sys.argv[1].encode(), {}, os.sysconf("SC_CLK_TCK")
def done(*_):
    print(f"{sum(seen.values()) / hz:.2f}", flush=True); os._exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    for pid in os.listdir("/proc"):
        if not pid.isdigit(): continue
        try:
            if db not in open(f"/proc/{pid}/cmdline", "rb").read(): continue
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            seen[pid] = max(seen.get(pid, 0), int(f[11]) + int(f[12]))
        except OSError:
            pass
    time.sleep(0.1)
PY

# run LABEL ARGS...: one timed payorch run and its figures.
run() {
  local label=$1; shift
  python3 "$work/backend_cpu.py" "$db" > "$work/pg_cpu" 2>/dev/null < /dev/null &
  local sampler=$!
  sleep 0.3
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$work/cpu" "$B" --json --store-url "$U/$db" "$@" > "$work/out.json"
  t1=$(date +%s.%N)
  sleep 0.3
  kill -TERM "$sampler"; wait "$sampler" || true
  python3 - "$label" "$events" "$t0" "$t1" "$work/cpu" "$work/pg_cpu" "$work/out.json" <<'PY'
import json, sys
label, n, t0, t1, cpu, pg, out = sys.argv[1:]
n, wall = int(n), float(t1) - float(t0)
u, s = map(float, open(cpu).read().split()[-2:])
print(f"{label:<28} {n:>9} events {wall:7.2f} s {n / wall / 1000:7.1f}k events/s"
      f"  payorch CPU {u + s:5.2f} s  postgres backend CPU {float(open(pg).read() or 0):5.2f} s"
      f"  {json.dumps(json.load(open(out)))}")
PY
}

# shellcheck disable=SC2086
run "import (empty store)" import $IMPORT_FLAGS "$work/export.jsonl"
if [ "$REIMPORT" = 1 ]; then
  run "import again (all present)" import "$work/export.jsonl"
fi
run "export" export --out "$work/back.jsonl"
back=$(wc -l < "$work/back.jsonl")
[ "$back" = "$events" ] || { echo "export wrote $back events, expected $events" >&2; exit 1; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
