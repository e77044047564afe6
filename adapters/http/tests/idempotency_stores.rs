//! Idempotency over HTTP on the real stores, SQLite and Postgres (issue 12
//! point 5): 20 parallel requests with one key for payments, captures,
//! refunds, agreement charges and checkout creates each execute once (one
//! PayKKa call, one agreement charge), all get the same status and body,
//! and a later replay gets the stored answer (not the current state). The
//! fingerprint over HTTP: the same key with any changed field is 409; the
//! checkout retry without `expires_at` is the same request.
//!
//! Postgres: PAYORCH_TEST_DATABASE_URL (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), a fresh schema per test;
//! unreachable -> loud SKIP, or failure with PAYORCH_REQUIRE_SERVICES=1.

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use payorch_postgres::PostgresStore;
use payorch_sqlite::SqliteStore;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};

const N: usize = 20;

fn database_url() -> String {
    std::env::var("PAYORCH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn sqlite() -> (Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("payorch.db").display()
    );
    let store = SqliteStore::open(&url).await.expect("open sqlite");
    store.migrate().await.expect("migrate");
    (Arc::new(store), dir)
}

/// A migrated Postgres store in a fresh schema, and the schema's name.
async fn postgres() -> Option<(Arc<PostgresStore>, String)> {
    let opts = PgConnectOptions::from_str(&database_url()).expect("url");
    let admin =
        tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts)).await;
    let mut admin = match admin {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return skip(&e.to_string()),
        Err(_) => return skip("connect timed out"),
    };
    let schema = format!("test_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .expect("create schema");
    let path = schema.clone();
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .after_connect(move |conn, _| {
            let sql = format!("SET search_path TO {path}");
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                Ok(())
            })
        })
        .connect_with(PostgresStore::tune(opts))
        .await
        .expect("pool");
    let store = PostgresStore::from_pool(pool);
    store.migrate().await.expect("migrate");
    Some((Arc::new(store), schema))
}

fn skip<T>(why: &str) -> Option<T> {
    if std::env::var("PAYORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!(
            "Postgres at {} unreachable and PAYORCH_REQUIRE_SERVICES=1: {why}",
            database_url()
        );
    }
    eprintln!(
        "\n*** SKIP: Postgres at {} unreachable ({why}); set PAYORCH_REQUIRE_SERVICES=1 to fail instead ***\n",
        database_url()
    );
    None
}

async fn drop_schema(store: Arc<PostgresStore>, schema: &str) {
    store.pool().close().await;
    let opts = PgConnectOptions::from_str(&database_url()).expect("url");
    if let Ok(mut admin) = PgConnection::connect_with(&opts).await {
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .await;
    }
}

/// `N` copies of one request at once; every answer.
async fn storm(h: &Harness, path: &str, key: &str, body: &str) -> Vec<Resp> {
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let router = h.router.clone();
            let req = post(path, Some(KEY_A), Some(key), body);
            tokio::spawn(async move { send(&router, req).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// All answers identical and successful; returns the first.
fn one_answer(what: &str, answers: Vec<Resp>) -> Resp {
    let first = &answers[0];
    assert!(
        first.status.is_success(),
        "{what}: {} {}",
        first.status,
        first.text
    );
    for a in &answers {
        assert_eq!(
            (a.status, &a.body),
            (first.status, &first.body),
            "{what}: every caller gets the executing request's answer"
        );
    }
    answers.into_iter().next().expect("answers")
}

fn calls(h: &Harness, op: &str) -> usize {
    h.gateway.calls().iter().filter(|c| *c == op).count()
}

/// A change to a request body.
type Change = fn(&mut serde_json::Value);

/// The whole scenario on one store.
async fn same_key_storms(h: &Harness) {
    // Payments: one initiate.
    let pay = card_payment("MANUAL");
    let p = one_answer("payment", storm(h, "/v1/payments", "s-pay", &pay).await);
    assert_eq!(p.status, StatusCode::CREATED);
    assert_eq!(calls(h, "initiate"), 1, "one payment executed");
    let id = p.body["id"].as_str().expect("id").to_owned();

    // Captures: one capture call.
    let cap_path = format!("/v1/payments/{id}/capture");
    let cap_body = r#"{"amount":{"minor":600,"currency":"EUR"}}"#;
    let c = one_answer("capture", storm(h, &cap_path, "s-cap", cap_body).await);
    assert_eq!(c.body["captured"]["minor"], 600, "{}", c.text);
    assert_eq!(calls(h, "capture"), 1, "one capture executed");

    // Refunds: one refund call, one refund entry.
    let ref_path = format!("/v1/payments/{id}/refunds");
    let ref_body = r#"{"amount":{"minor":200,"currency":"EUR"}}"#;
    let r = one_answer("refund", storm(h, &ref_path, "s-ref", ref_body).await);
    assert_eq!(r.body["refunds"].as_array().map(Vec::len), Some(1));
    assert_eq!(calls(h, "refund"), 1, "one refund executed");

    // Later replays answer what was stored, though the payment changed.
    let now = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(now.body["refunded"]["minor"], 200);
    let again = h.post_a("/v1/payments", "s-pay", &pay).await;
    assert_eq!((again.status, &again.body), (p.status, &p.body));
    assert_ne!(
        again.body, now.body,
        "the stored answer, not the current state"
    );
    let again = h.post_a(&cap_path, "s-cap", cap_body).await;
    assert_eq!((again.status, &again.body), (c.status, &c.body));
    let again = h.post_a(&ref_path, "s-ref", ref_body).await;
    assert_eq!((again.status, &again.body), (r.status, &r.body));

    // Agreement charges: one charge, one order, one agreement_charged.
    let first = h
        .post_a(
            "/v1/payments",
            "s-rec",
            &json!({
                "amount": {"minor": 999, "currency": "EUR"},
                "payment_type": "RECURRING",
                "payment_method": {"type": "card", "number": "4111111111111111",
                    "exp_month": "07", "exp_year": "2031", "cvv": "737"},
                "store_token": {"purpose": "SUBSCRIPTION", "shopper_reference": "shopper-9"},
                "return_url": "https://shop.example/return"
            })
            .to_string(),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let agreement = first.body["id"].as_str().expect("id").to_owned();
    let initiates = calls(h, "initiate");
    let charge_path = format!("/v1/recurring-agreements/{agreement}/charges");
    let charge = r#"{"amount":{"minor":500,"currency":"EUR"}}"#;
    let ch = one_answer("charge", storm(h, &charge_path, "s-charge", charge).await);
    assert_eq!(calls(h, "initiate"), initiates + 1, "one charge executed");
    let a = h
        .get_a(&format!("/v1/recurring-agreements/{agreement}"))
        .await;
    assert_eq!(
        a.body["charges"].as_array().map(Vec::len),
        Some(1),
        "{}",
        a.text
    );
    assert_eq!(a.body["charges"][0], ch.body["id"]);
    let again = h.post_a(&charge_path, "s-charge", charge).await;
    assert_eq!((again.status, &again.body), (ch.status, &ch.body));

    // Checkout creates without expires_at: one session, the expiry fixed
    // by the first execution and replayed.
    let co = r#"{"amount":{"minor":2500,"currency":"EUR"}}"#;
    let s = one_answer(
        "checkout",
        storm(h, "/v1/checkout-sessions", "s-co", co).await,
    );
    assert_eq!(
        calls(h, "checkout_session_create"),
        1,
        "one session created"
    );
    assert!(s.body["expires_at"].is_string(), "{}", s.text);
    let again = h.post_a("/v1/checkout-sessions", "s-co", co).await;
    assert_eq!((again.status, &again.body), (s.status, &s.body));

    // The fingerprint over HTTP: the same key with any field changed is 409.
    let base = json!({
        "amount": {"minor": 1000, "currency": "EUR"},
        "capture_method": "MANUAL",
        "payment_method": {"type": "card", "number": "4111111111111111",
            "exp_month": "07", "exp_year": "2031", "cvv": "737", "holder_name": "A B"},
        "return_url": "https://shop.example/return"
    });
    let r0 = h.post_a("/v1/payments", "s-fp", &base.to_string()).await;
    assert_eq!(r0.status, StatusCode::CREATED, "{}", r0.text);
    let variants: [(&str, Change); 8] = [
        ("amount", |v| v["amount"]["minor"] = json!(1001)),
        ("capture_method", |v| {
            v["capture_method"] = json!("AUTOMATIC")
        }),
        ("number", |v| {
            v["payment_method"]["number"] = json!("5555555555554444")
        }),
        ("cvv", |v| v["payment_method"]["cvv"] = json!("123")),
        ("exp_month", |v| {
            v["payment_method"]["exp_month"] = json!("08")
        }),
        ("holder_name", |v| {
            v["payment_method"]["holder_name"] = json!("C D")
        }),
        ("return_url", |v| {
            v["return_url"] = json!("https://shop.example/other")
        }),
        ("browser", |v| {
            v["browser"] = json!({"user_agent": "UA/2", "language": "de"})
        }),
    ];
    for (field, change) in variants {
        let mut body = base.clone();
        change(&mut body);
        let r = h.post_a("/v1/payments", "s-fp", &body.to_string()).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{field}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "idempotency_key_reused", "{field}");
    }
    let same = h.post_a("/v1/payments", "s-fp", &base.to_string()).await;
    assert_eq!((same.status, &same.body), (r0.status, &r0.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_storms_on_sqlite() {
    let (store, _dir) = sqlite().await;
    let h = harness_over(store.clone());
    same_key_storms(&h).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_storms_on_postgres() {
    let Some((store, schema)) = postgres().await else {
        return;
    };
    let h = harness_over(store.clone());
    same_key_storms(&h).await;
    drop(h);
    drop_schema(store, &schema).await;
}
