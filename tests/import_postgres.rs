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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join("demo.jsonl");
    let out = payorch(&[
        "--store-url",
        &store,
        "export",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
            // The same instant, whatever offset the source wrote, to the
            // microsecond (Postgres's precision; SQLite keeps nanoseconds).
            let t = time::OffsetDateTime::parse(
                v["recorded_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            v["recorded_at"] = (t.unix_timestamp_nanos() / 1000).to_string().into();
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

    let out = payorch(&[
        "--json",
        "--store-url",
        &url,
        "import",
        file.to_str().unwrap(),
    ]);
    let r = json_of(&out);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["mode"], "one_transaction");
    assert_eq!(r["imported"].as_u64().unwrap() as usize, lines.len());
    assert_eq!(count_and_schema(&url).await, (lines.len() as i64, 4, 3));

    let out = payorch(&[
        "--json",
        "--store-url",
        &url,
        "import",
        file.to_str().unwrap(),
    ]);
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: Vec<String> = std::fs::read_to_string(&back)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let (got, want) = (events_of(&exported), events_of(&lines));
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "event {i}: the same events, versions and order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_import_leaves_the_postgres_store_empty_with_its_constraints() {
    let test = "a_refused_import_leaves_the_postgres_store_empty";
    let Some((_db, url)) = support::database(test, "impref").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lines = demo_export(dir.path());
    let out = payorch(&["--store-url", &url, "migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert!(
        err.contains(&id) && err.contains("nothing was stored"),
        "{err}"
    );
    assert_eq!(
        count_and_schema(&url).await,
        fresh,
        "unchanged, constraints in place"
    );

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
    assert_eq!(
        count_and_schema(&url).await,
        fresh,
        "unchanged, constraints in place"
    );
}

/// An export includes every event committed before it started, even while
/// a transaction that began earlier is still open on the server (which
/// makes `read_all` hold the newer events back): it waits instead of
/// stopping early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_waits_for_events_held_back_by_an_older_open_transaction() {
    let test = "export_waits_for_events_held_back";
    let Some((db, url)) = support::database(test, "exphold").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lines = demo_export(dir.path());
    let file = dir.path().join("demo.jsonl");
    let out = payorch(&["--store-url", &url, "import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An older transaction stays open while a newer one commits an event.
    let mut holder = PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id()")
        .execute(&mut holder)
        .await
        .unwrap();
    let holding: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() \
         AND backend_xid IS NOT NULL",
    )
    .fetch_one(&mut holder)
    .await
    .unwrap();
    assert_eq!(holding, 1, "the old transaction is open and has an id");
    let mut extra: Value = serde_json::from_str(&lines[0]).unwrap();
    extra["stream_id"] = format!("order-{}", uuid::Uuid::now_v7()).into();
    extra["event_id"] = uuid::Uuid::now_v7().to_string().into();
    let extra_file = dir.path().join("extra.jsonl");
    write_lines(&extra_file, &[extra.to_string()]);
    let out = payorch(&["--store-url", &url, "import", extra_file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let back = dir.path().join("back.jsonl");
    let export = support::Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args([
                "--store-url",
                &url,
                "export",
                "--out",
                back.to_str().unwrap(),
            ])
            .env_remove("PAYORCH_STORE_URL")
            .env_remove("PAYORCH_CONFIG")
            .spawn()
            .expect("spawn export"),
    );
    // Once the export has read (and found the new event held back), the
    // old transaction ends.
    let probe = sqlx::PgPool::connect(&url).await.expect("connect");
    support::until(
        std::time::Duration::from_secs(60),
        "the export reading while the old transaction is open",
        || {
            let probe = probe.clone();
            let db = db.name.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND query LIKE '%pg_snapshot_xmin%' AND pid <> pg_backend_pid()",
                )
                .bind(db)
                .fetch_one(&probe)
                .await
                .unwrap();
                (n > 0).then_some(())
            }
        },
    )
    .await;
    probe.close().await;
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    let mut export = export;
    let status = export.0.wait().expect("export");
    assert!(status.success());
    let exported = std::fs::read_to_string(&back).unwrap();
    assert_eq!(
        exported.lines().count(),
        lines.len() + 1,
        "the held-back event is exported too"
    );
}
