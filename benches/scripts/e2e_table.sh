#!/usr/bin/env bash
# The "End to end" table of docs/BENCHMARKS.md, unattended (issue 11).
#
# Builds nothing: give it a built `payorch` (release, for numbers worth
# quoting). For each sandbox mode (in-process, then `payorch sandbox` as its
# own process), each mix (purchase, full) and each concurrency (4, 16, 64)
# it makes a fresh Postgres database, runs
#   payorch --json load --spawn --amqp-url ... --mix M --concurrency N \
#     --duration 20s --warmup 3s --rsa-speed S/V --cores 2 --cpu-process postgres --cpu-process beam.smp
# and, inside the measured phase, samples the CPU of serve, the load tool,
# the standalone sandbox, RabbitMQ and only the Postgres backends of the
# run's database (benches/scripts/cpu_per_order.py). `openssl speed -seconds
# 3 rsa2048` (CPU time, so load on the host does not move it) gives the
# cryptographic floor. At the end it prints the markdown rows the docs use;
# every report is kept as JSON in the output directory.
#
# Usage:
#   benches/scripts/e2e_table.sh --bin target/release/payorch [--duration 20s] [--warmup 3s]
#       [--concurrency 4,16,64] [--mixes purchase,full] [--modes inproc,sandbox]
#       [--pg postgres://postgres@127.0.0.1:5432] [--amqp 'amqp://guest:guest@127.0.0.1:5672/%2f']
#       [--out DIR] [--keep-databases]
#   (a quick check that it works: --duration 3s --warmup 1s --concurrency 4)
#
# Needs: python3, psql, openssl, a Postgres (trust auth for the user in --pg)
# and RabbitMQ. Environment variables are passed to the spawned serve (e.g.
# RUST_LOG, or a setting under test).
set -euo pipefail
exec python3 - "$(cd "$(dirname "$0")" && pwd)" "$@" <<'PYTHON'
import argparse
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time

here = sys.argv[1]
p = argparse.ArgumentParser(prog="e2e_table.sh")
p.add_argument("--bin", required=True, help="the payorch binary to measure (built beforehand)")
p.add_argument("--duration", default="20s")
p.add_argument("--warmup", default="3s")
p.add_argument("--concurrency", default="4,16,64")
p.add_argument("--mixes", default="purchase,full")
p.add_argument("--modes", default="inproc,sandbox", help="inproc and/or sandbox (separate process)")
p.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
p.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2f")
p.add_argument("--cores", default="2")
p.add_argument("--out", default=None, help="directory for the JSON reports (default: a new temp dir)")
p.add_argument("--keep-databases", action="store_true")
a = p.parse_args(sys.argv[2:])

binary = os.path.abspath(a.bin)
if not os.access(binary, os.X_OK):
    sys.exit(f"--bin {a.bin}: not an executable; build it first (this script builds nothing)")
out_dir = a.out or tempfile.mkdtemp(prefix="e2e_table_")
os.makedirs(out_dir, exist_ok=True)
m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", a.duration)
if not m:
    sys.exit(f"--duration {a.duration}: write e.g. 20s")
duration_s = float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m[2]]
m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", a.warmup)
if not m:
    sys.exit(f"--warmup {a.warmup}: write e.g. 3s")
warmup_s = float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m[2]]
pg_host = re.match(r"postgres(?:ql)?://([^@/]+@)?([^:/]+)(?::(\d+))?", a.pg)
if not pg_host:
    sys.exit(f"--pg {a.pg}: write e.g. postgres://postgres@127.0.0.1:5432")
pg_user = (pg_host[1] or "postgres@").rstrip("@")
psql_base = ["psql", "-h", pg_host[2], "-p", pg_host[3] or "5432", "-U", pg_user, "-v", "ON_ERROR_STOP=1", "-Atq"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def psql(db, sql):
    return subprocess.run(psql_base + ["-d", db, "-c", sql], capture_output=True, text=True, check=True).stdout


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- floor
log("openssl speed -seconds 3 rsa2048 (CPU time)")
speed = subprocess.run(["openssl", "speed", "-seconds", "3", "rsa2048"], capture_output=True, text=True, check=True).stdout
row = next((l for l in speed.splitlines() if re.match(r"\s*rsa\s+2048\s+bits", l)), None)
head = next((l for l in speed.splitlines() if "sign/s" in l and "verify/s" in l), None)
if row is None or head is None:
    sys.exit("openssl speed printed no 'sign/s verify/s' header and 'rsa 2048 bits' row:\n" + speed)
# Columns after "bits" match the header (OpenSSL 3.2+ adds encrypt/decrypt ones).
cols, vals = head.split(), row.split("bits", 1)[1].split()
signs, verifies = float(vals[cols.index("sign/s")]), float(vals[cols.index("verify/s")])
log(f"RSA-2048: {signs} signs/s, {verifies} verifies/s per core")

# ---------------------------------------------------------------- separate sandbox
sandbox = None
sb_keys = None


def start_sandbox(work):
    """`payorch sandbox` as its own process, with a merchant key pair and an
    API key for serve (`sb.toml` of docs/BENCHMARKS.md)."""
    keys = os.path.join(work, "keys")
    subprocess.run([binary, "--json", "keygen", "--out", keys], check=True, capture_output=True)
    proc = subprocess.Popen(
        [binary, "--json", "sandbox", "--port", "0", "--merchant-id", "10000000000009",
         "--merchant-public-key", os.path.join(keys, "merchant_public.pem")],
        stdout=subprocess.PIPE, stderr=open(os.path.join(work, "sandbox.log"), "w"), text=True)
    text = ""
    deadline = time.time() + 60
    banner = None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        text += line
        try:
            banner = json.loads(text)
            break
        except json.JSONDecodeError:
            continue
    if banner is None:
        proc.kill()
        sys.exit(f"the sandbox printed no JSON banner: {text!r}")
    # Keep draining stdout so the sandbox never blocks on a full pipe.
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    platform = os.path.join(work, "platform.pem")
    with open(platform, "w") as f:
        f.write(banner["platform_public_key_pem"])
    api_key = "sk_test_e2e_" + secrets.token_hex(16)
    return proc, banner["base_url"], keys, platform, api_key


def sb_config(work, db_url, base_url, keys, platform, api_key):
    path = os.path.join(work, "sb.toml")
    with open(path, "w") as f:
        f.write(f'''store_url = "{db_url}"
[paykka]
base_url = "{base_url}"
response_signature = "enforce"
[[merchants]]
merchant_id = "10000000000009"
private_key_path = "{os.path.join(keys, 'merchant_private.pem')}"
paykka_public_key_path = "{platform}"
api_key_sha256 = "{hashlib.sha256(api_key.encode()).hexdigest()}"
''')
    return path


# ---------------------------------------------------------------- one run
def cpu_window(db, load_proc, sandbox_pid, result):
    """cpu_per_order.py over the middle of the measured phase."""
    deadline = time.time() + 60
    serve_pid = None
    while time.time() < deadline and load_proc.poll() is None:
        kids = subprocess.run(["pgrep", "-P", str(load_proc.pid)], capture_output=True, text=True).stdout.split()
        if kids:
            serve_pid = int(kids[0])
            break
        time.sleep(0.1)
    if serve_pid is None:
        return
    # serve start-up (~1 s), warm-up, the tool's 1.5 s pause, then skip the
    # first fifth of the measured phase; sample 60 % of it.
    time.sleep(1.0 + warmup_s + 1.5 + 0.2 * duration_s)
    window = max(0.5, 0.6 * duration_s)
    cmd = [sys.executable, os.path.join(here, "cpu_per_order.py"), db, f"{window:.2f}", str(serve_pid), str(load_proc.pid)]
    if sandbox_pid:
        cmd.append(str(sandbox_pid))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.strip():
        result.update(json.loads(r.stdout.strip().splitlines()[-1]))
    else:
        result["error"] = (r.stderr or r.stdout).strip()[-300:]


def run(mode, mix, conc, work):
    stamp = time.strftime("%H%M%S")
    db = f"e2e_{mode}_{mix}_c{conc}_{stamp}_{secrets.token_hex(2)}"
    psql("postgres", f"CREATE DATABASE {db}")
    db_url = f"{a.pg.rstrip('/')}/{db}"
    cmd = [binary]
    extra = []
    sandbox_pid = None
    if mode == "sandbox":
        proc, base_url, keys, platform, api_key = sandbox
        sandbox_pid = proc.pid
        cmd += ["--config", sb_config(work, db_url, base_url, keys, platform, api_key)]
        extra = ["--api-key", api_key, "--sandbox-hooks", "--cpu-pid", str(sandbox_pid)]
    else:
        cmd += ["--store-url", db_url]
    cmd += ["--json", "load", "--spawn", "--amqp-url", a.amqp, "--mix", mix,
            "--concurrency", str(conc), "--duration", a.duration, "--warmup", a.warmup,
            "--rsa-speed", f"{signs}/{verifies}", "--cores", a.cores,
            "--cpu-process", "postgres", "--cpu-process", "beam.smp",
            "--serve-log", os.path.join(out_dir, f"{mode}_{mix}_c{conc}.serve.log")] + extra
    before = loadavg()
    log(f"{mode} {mix} c{conc} on {db} (load average {before})")
    started = time.time()
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu = {}
    sampler = threading.Thread(target=cpu_window, args=(db, load, sandbox_pid, cpu), daemon=True)
    sampler.start()
    stdout, stderr = load.communicate()
    sampler.join(timeout=5)
    after = loadavg()
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        report = {"error": "no JSON report", "exit_code": load.returncode, "stderr": stderr[-2000:]}
    report["e2e_table"] = {"mode": mode, "mix": mix, "concurrency": conc, "database": db,
                           "load_average_before": before, "load_average_after": after,
                           "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
                           "cpu_window": cpu, "exit_code": load.returncode}
    with open(os.path.join(out_dir, f"{mode}_{mix}_c{conc}.json"), "w") as f:
        json.dump(report, f, indent=1)
    if not a.keep_databases:
        try:
            psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        except subprocess.CalledProcessError as e:
            log(f"could not drop {db}: {e.stderr.strip()}")
    if load.returncode != 0:
        log(f"  load exited {load.returncode}: {stderr.strip()[-500:]}")
    return report


def f(x, nd=1):
    return "-" if x is None else (f"{x:,.{nd}f}" if isinstance(x, (int, float)) else str(x))


def row_of(r):
    t = r.get("e2e_table", {})
    name = f"{t.get('mode')}_{t.get('mix')}_c{t.get('concurrency')}"
    if "flows" not in r:
        return f"| {name} | {t.get('concurrency')} | failed: {r.get('error')} (exit {t.get('exit_code')}) |"
    flows = r["flows"]
    ops = r.get("per_operation", {})
    cp = ops.get("create_payment", {})
    pf = r.get("per_flow", {})
    if len(pf) == 1:
        flow_p99 = f(next(iter(pf.values()))["latency"].get("p99_ms"), 0)
    else:
        flow_p99 = ", ".join(f"{k} {f(v['latency'].get('p99_ms'), 0)}" for k, v in sorted(pf.items()))
    floor = (r.get("crypto") or {}).get("floor") or {}
    cq = r.get("cpu_until_quiet") or {}
    procs = cq.get("processes") or {}
    sb = next((v for k, v in procs.items() if k.startswith("pid ")), {})
    per = [cq.get("serve", {}).get("ms_per_flow"), sb.get("ms_per_flow") if sb else None,
           procs.get("postgres", {}).get("ms_per_flow"), procs.get("beam.smp", {}).get("ms_per_flow"),
           cq.get("load_tool", {}).get("ms_per_flow")]
    total = sum(x for x in per if x)
    est = 1000.0 * float(a.cores) / total if total else None
    fl = floor.get("floor_flows_per_s")
    w = t.get("cpu_window") or {}
    # cpu_per_order.py counts orders; per flow = per order x orders/flow.
    opf = (r["orders"]["count"] / flows["completed"]) if flows.get("completed") else 1.0
    wf = lambda k: None if w.get(k) is None else w[k] * opf
    window = " / ".join(f(wf(k), 2) for k in ["serve_ms", "sandbox_ms", "pg_ms"]) if "serve_ms" in w else "-"
    pg = r.get("postgres") or {}
    relay = r.get("relay") or {}
    lag = f"{relay.get('lag_at_end_events', '-')} → {f(relay.get('drain_secs'), 2)} s" if relay else "-"
    return (f"| {name} | {t.get('concurrency')} | {f(flows.get('per_second'), 0)} | {f(r['orders'].get('per_second'), 0)} "
            f"| {flows.get('failed', 0) + flows.get('not_started', 0)} "
            f"| {f(cp.get('p50_ms'))} / {f(cp.get('p99_ms'))} | {flow_p99} "
            f"| {f(floor.get('ratio'), 2)} of {f(fl, 0)} "
            f"| {' / '.join(f(x, 2) for x in per)} | {f(est, 0)} ({f(est / fl if est and fl else None, 2)}) "
            f"| {window} | {f(pg.get('transactions_per_order'), 2)} | {lag} | {t.get('load_average_before')} |")


header = ("| run | conc. | flows/s | orders/s | errors | create_payment p50 / p99 ms | flow p99 ms | ratio to floor "
          "| CPU ms per flow until quiet: serve / sandbox / postgres (all) / rabbitmq / load | 2-core CPU-bound estimate flows/s (ratio) "
          "| CPU ms per flow in the window: serve / sandbox / pg backends of the db | pg tx/order | relay lag at end → 0 after | load avg |\n"
          "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- | --- | --- | ---: | --- | --- |")

reports = []
work = tempfile.mkdtemp(prefix="e2e_work_")
try:
    for mode in [m.strip() for m in a.modes.split(",") if m.strip()]:
        if mode not in ("inproc", "sandbox"):
            sys.exit(f"--modes: {mode!r} is not inproc or sandbox")
        if mode == "sandbox" and sandbox is None:
            sandbox = start_sandbox(work)
            log(f"sandbox pid {sandbox[0].pid} at {sandbox[1]}")
        for mix in [m.strip() for m in a.mixes.split(",") if m.strip()]:
            for conc in [int(c) for c in a.concurrency.split(",") if c.strip()]:
                r = run(mode, mix, conc, work)
                reports.append(r)
                print(row_of(r), file=sys.stderr, flush=True)
finally:
    if sandbox is not None:
        sandbox[0].terminate()
        try:
            sandbox[0].wait(timeout=10)
        except subprocess.TimeoutExpired:
            sandbox[0].kill()

print(f"\nRSA-2048 (openssl speed -seconds 3 rsa2048, CPU time): {signs} signs/s, {verifies} verifies/s per core; "
      f"binary {binary}; duration {a.duration}, warm-up {a.warmup}; reports in {out_dir}\n")
print(header)
for r in reports:
    print(row_of(r))
failed = sum(1 for r in reports if "flows" not in r or r["flows"].get("failed") or r.get("e2e_table", {}).get("exit_code"))
sys.exit(1 if failed else 0)
PYTHON
