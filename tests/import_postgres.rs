//! `payorch import` and `export` on Postgres, running the binary: an
//! import into an empty store is one transaction that re-creates the
//! indexes, gives the same history as the source, and a second import
//! stores nothing; a file with a reused event id or a version gap is
//! refused and leaves the store empty with its constraints. Skips (loudly)
//! without Postgres unless PAYORCH_REQUIRE_SERVICES=1.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use sqlx::{Connection as _, PgConnection};
use support::payorch;

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `payorch export` of a `payorch demo` store, as lines.
fn demo_export(dir: &Path) -> Vec<String> {
    let store = format!("sqlite://{}", dir.join("demo.db").display());
    let out = payorch(&["--json", "demo", "--store", &store]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.join("demo.jsonl");
    let out = payorch(&[
        "--store-url",
        &store,
        "export",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Each line's event without its position (positions are the store's).
fn events_of(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("global_position");
            // The same instant, whatever offset the source wrote.
            let t = time::OffsetDateTime::parse(
                v["recorded_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            v["recorded_at"] = t.unix_timestamp_nanos().to_string().into();
            v
        })
        .collect()
}

async fn count_and_schema(url: &str) -> (i64, i64, i64) {
    let mut c = PgConnection::connect(url).await.expect("connect");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let indexes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'events'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let unique: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'events'::regclass \
         AND contype IN ('p', 'u')",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    (events, indexes, unique)
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_an_empty_postgres_store_is_one_transaction_and_idempotent() {
    let test = "import_into_an_empty_postgres_store";
    let Some((_db, url)) = support::database(test, "imp").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lines = demo_export(dir.path());
    assert!(lines.len() > 40, "the demo writes every flow");
    let file = dir.path().join("demo.jsonl");

    let out = payorch(&["--json", "--store-url", &url, "import", file.to_str().unwrap()]);
    let r = json_of(&out);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["mode"], "one_transaction");
    assert_eq!(r["imported"].as_u64().unwrap() as usize, lines.len());
    assert_eq!(count_and_schema(&url).await, (lines.len() as i64, 4, 3));

    let out = payorch(&["--json", "--store-url", &url, "import", file.to_str().unwrap()]);
    let r = json_of(&out);
    assert_eq!(r["mode"], "per_batch", "the store has events now");
    assert_eq!(r["imported"], 0, "a second import stores nothing");
    assert_eq!(r["already_present"].as_u64().unwrap() as usize, lines.len());

    let back = dir.path().join("back.jsonl");
    let out = payorch(&[
        "--json",
        "--store-url",
        &url,
        "export",
        "--out",
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported: Vec<String> = std::fs::read_to_string(&back)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        events_of(&exported),
        events_of(&lines),
        "the same events, versions and order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_import_leaves_the_postgres_store_empty_with_its_constraints() {
    let test = "a_refused_import_leaves_the_postgres_store_empty";
    let Some((_db, url)) = support::database(test, "impref").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lines = demo_export(dir.path());
    let fresh = count_and_schema(&url).await;
    assert_eq!(fresh.0, 0);

    // An event id twice (the last line reuses the first line's id).
    let mut dup = lines.clone();
    let first: Value = serde_json::from_str(&dup[0]).unwrap();
    let id = first["event_id"].as_str().unwrap().to_owned();
    let mut last: Value = serde_json::from_str(dup.last().unwrap()).unwrap();
    last["event_id"] = id.clone().into();
    *dup.last_mut().unwrap() = last.to_string();
    let file = dir.path().join("dup.jsonl");
    write_lines(&file, &dup);
    let out = payorch(&["--store-url", &url, "import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&id) && err.contains("nothing was stored"), "{err}");
    assert_eq!(count_and_schema(&url).await, fresh, "unchanged, constraints in place");

    // A version gap: a stream's second event is missing.
    let mut gap = lines.clone();
    let stream_of = |l: &String| -> String {
        serde_json::from_str::<Value>(l).unwrap()["stream_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let s0 = stream_of(&gap[0]);
    let second = gap
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, l)| stream_of(l) == s0)
        .map(|(i, _)| i)
        .expect("a stream with two events");
    gap.remove(second);
    let file = dir.path().join("gap.jsonl");
    write_lines(&file, &gap);
    let out = payorch(&["--store-url", &url, "import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&s0), "names the stream: {err}");
    assert_eq!(count_and_schema(&url).await, fresh, "unchanged, constraints in place");
}
