#!/usr/bin/env bash
# Idle cost of `payorch serve` on Postgres + RabbitMQ (issue 14, "idle is idle").
#
# Usage: benches/scripts/idle.sh <database> [seconds=60] [payorch binary=target/debug/payorch]
#   e.g. benches/scripts/idle.sh payorch_bench_scale        (100k orders, made by
#        `cargo bench -p payorch-benches --bench scale`)
#        benches/scripts/idle.sh payorch_bench_scale_empty
#
# Starts serve (relay on, reconciler every 5 s) on postgres://postgres@127.0.0.1:5432/<database>,
# waits until it holds both leases and its first reconciler pass is done, then measures over
# <seconds>:
#   * CPU of serve and of the Postgres backends connected to <database> (utime+stime deltas from
#     /proc/<pid>/stat; cluster background processes are shared with other databases: not counted),
#     as % of one core;
#   * transactions/s on <database> (pg_stat_database xact_commit+xact_rollback; every payorch
#     statement is its own transaction, so this counts statements).
set -euo pipefail
DB=${1:?database}
SECS=${2:-60}
BIN=${3:-target/debug/payorch}
PG="psql -h 127.0.0.1 -U postgres -d postgres -Atc"
PORT=18099
TICK=$(getconf CLK_TCK)

# The bench history is synthetic: mark it published (the relay would otherwise spend minutes
# publishing it before it is idle).
psql -h 127.0.0.1 -U postgres -d "$DB" -qAtc "INSERT INTO checkpoints (name, position) \
  SELECT 'relay:payorch.events', COALESCE(max(global_position), 0) FROM events \
  ON CONFLICT (name) DO UPDATE SET position = GREATEST(checkpoints.position, excluded.position)"

PAYORCH_STORE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
PAYORCH_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f" \
PAYORCH_ADDR="127.0.0.1:$PORT" RUST_LOG=warn "$BIN" serve >/tmp/payorch-idle.out 2>/tmp/payorch-idle.err &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  m=$(curl -sf "http://127.0.0.1:$PORT/metrics" || true)
  if grep -q 'payorch_role{role="reconciler"} 1' <<<"$m" && grep -q 'payorch_role{role="relay"} 1' <<<"$m" \
     && grep -q '^payorch_relay_lag_events 0' <<<"$m"; then break; fi
  sleep 1
done
sleep 10 # first reconciler pass (catch-up) and relay catch-up

cpu() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
backends() { $PG "select pid from pg_stat_activity where datname = '$DB'"; }
xacts() { $PG "select xact_commit + xact_rollback from pg_stat_database where datname = '$DB'"; }

PIDS=$(backends)
s0=$(cpu $SERVE); p0=0; for p in $PIDS; do p0=$((p0 + $(cpu $p))); done; x0=$(xacts)
sleep "$SECS"
s1=$(cpu $SERVE); p1=0; for p in $PIDS; do p1=$((p1 + $(cpu $p))); done; x1=$(xacts)

awk -v s=$((s1 - s0)) -v p=$((p1 - p0)) -v x=$((x1 - x0)) -v t="$TICK" -v secs="$SECS" -v n="$(wc -w <<<"$PIDS")" 'BEGIN {
  printf "idle %s s on %s: serve %.2f%% of a core, postgres (%d backends) %.2f%%, together %.2f%%; %.2f transactions/s\n",
    secs, ENVIRON["DB"], 100*s/t/secs, n, 100*p/t/secs, 100*(s+p)/t/secs, x/secs }'
