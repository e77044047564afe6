//! `payorch load`: a short `--spawn` run of the full mix against a new
//! SQLite store and the in-process sandbox, checked through its `--json`
//! report and the store it wrote (`payorch export`), plus the refusals
//! (an unknown flow, sandbox-only flows against `--url`).
//!
//! No timing is asserted here (timing lives in docs/BENCHMARKS.md): only
//! counts, the absence of errors and that every flow and operation has
//! latency samples.

use std::collections::HashSet;
use std::process::{Command, Output};

use serde_json::Value;

fn payorch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_payorch"))
        .args(args)
        .env_remove("PAYORCH_STORE_URL")
        .env_remove("PAYORCH_CONFIG")
        .env_remove("PAYORCH_AMQP_URL")
        .env_remove("PAYORCH_PAYKKA_BASE_URL")
        .env_remove("PAYORCH_LOAD_API_KEY")
        .output()
        .expect("run payorch")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

const FLOWS: [&str; 6] = [
    "purchase",
    "preauth-capture",
    "capture-refund",
    "3ds",
    "recurring",
    "checkout",
];

#[test]
fn spawned_full_mix_on_sqlite_reports_every_flow_without_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("load.db");
    let store = format!("sqlite://{}", db.display());
    let log = dir.path().join("serve.log");
    // 4 rounds of the 6 flows; one weight of 2 to check the interleaving.
    let out = payorch(&[
        "--store-url",
        &store,
        "--json",
        "load",
        "--spawn",
        "--serve-log",
        log.to_str().expect("utf-8"),
        "--mix",
        "full,purchase",
        "--count",
        "28",
        "--concurrency",
        "4",
        "--rsa-speed",
        "2000/40000",
        "--cores",
        "2",
    ]);
    let r = json_of(&out);
    assert!(
        out.status.success(),
        "exit {:?}: {r:#}\nserve log:\n{}",
        out.status,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(r["target"]["spawned"], true, "{r:#}");
    assert_eq!(r["target"]["store"], "sqlite", "{r:#}");
    assert!(
        r["target"]["gateway"]
            .as_str()
            .is_some_and(|g| g.starts_with("in-process sandbox")),
        "{r:#}"
    );
    assert_eq!(r["flows"]["completed"], 28, "{r:#}");
    assert_eq!(r["flows"]["failed"], 0, "{r:#}");
    assert_eq!(r["errors"]["total"], 0, "{r:#}");
    assert_eq!(
        r["errors"]["by_class"].as_object().map(|m| m.len()),
        Some(0),
        "{r:#}"
    );
    // purchase has weight 2: 8 of 28; every other flow 4.
    for flow in FLOWS {
        let f = &r["per_flow"][flow];
        let want = if flow == "purchase" { 8 } else { 4 };
        assert_eq!(f["completed"], want, "{flow}: {f:#}");
        assert_eq!(f["failed"], 0, "{flow}: {f:#}");
        let l = &f["latency"];
        assert_eq!(l["count"], want, "{flow}: {l:#}");
        let (p50, p99, max) = (
            l["p50_ms"].as_f64().expect("p50"),
            l["p99_ms"].as_f64().expect("p99"),
            l["max_ms"].as_f64().expect("max"),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{flow}: {l:#}");
    }
    // Orders: recurring makes two (first payment + charge).
    assert_eq!(r["orders"]["count"], 28 + 4, "{r:#}");
    // Calls per operation follow from the flows.
    let ops = &r["per_operation"];
    for (op, n) in [
        ("create_payment", 8 + 4 + 4 + 4 + 4),
        ("capture", 8),
        ("refund", 4),
        ("charge_agreement", 4),
        ("create_checkout_session", 4),
        ("shopper_3ds_page", 4),
        ("shopper_checkout_page", 4),
    ] {
        assert_eq!(ops[op]["count"], n, "{op}: {ops:#}");
    }
    // The 3-D Secure and checkout flows end by polling for the notification.
    assert!(
        ops["get_checkout_session"]["count"].as_u64() >= Some(4),
        "{ops:#}"
    );
    assert!(ops["get_payment"]["count"].as_u64() >= Some(4), "{ops:#}");
    // Recurring charges wait for the agreement to be active.
    assert!(ops["get_agreement"]["count"].as_u64() >= Some(4), "{ops:#}");
    // SQLite, no broker: no Postgres counters, no relay.
    assert!(r["postgres"].is_null(), "{r:#}");
    assert!(r["relay"].is_null(), "{r:#}");
    assert!(
        r["cpu"]["serve"]["cpu_secs"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "{r:#}"
    );
    assert!(
        r["serve_memory"]["rss_kib_end"]
            .as_u64()
            .is_some_and(|k| k > 0),
        "{r:#}"
    );
    assert_eq!(r["serve_stop"]["stopped"], true, "{r:#}");
    let floor = &r["crypto"]["floor"];
    assert!(
        floor["floor_flows_per_s"].as_f64().is_some_and(|f| f > 0.0),
        "{r:#}"
    );

    // The store holds exactly the orders the report counts.
    let export = payorch(&["--store-url", &store, "export"]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let orders: HashSet<String> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["stream_id"].as_str().map(str::to_owned))
        .filter(|s| s.starts_with("order-"))
        .collect();
    assert_eq!(orders.len(), 32, "order streams in the store");
}

#[test]
fn an_unknown_flow_is_refused_naming_it() {
    let out = payorch(&[
        "--json",
        "load",
        "--spawn",
        "--mix",
        "purchase,refundz=2",
        "--count",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let r = json_of(&out);
    let e = r["error"].as_str().expect("error message");
    assert!(e.contains("--mix") && e.contains("\"refundz\""), "{e}");
    assert!(e.contains("preauth-capture"), "lists the flows: {e}");
}

#[test]
fn sandbox_only_flows_against_a_url_need_the_sandbox_flag() {
    let out = payorch(&[
        "--json",
        "load",
        "--url",
        "http://127.0.0.1:9",
        "--api-key",
        "k",
        "--mix",
        "purchase,3ds,checkout",
        "--count",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let e = json_of(&out)["error"]
        .as_str()
        .expect("error message")
        .to_owned();
    assert!(
        e.contains("3ds, checkout") && e.contains("--sandbox-hooks"),
        "{e}"
    );
}
