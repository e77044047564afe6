//! Shared harness of the service tests that run `payorch` as a process on
//! Postgres and RabbitMQ (`blackbox.rs`, `many_nodes.rs`): service URLs,
//! skipping when a service is down (failing under
//! `PAYORCH_REQUIRE_SERVICES=1`), throw-away databases, `payorch serve`
//! children killed on drop, and polling with a deadline.
#![allow(dead_code)] // each test crate uses its own part of it

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, Executor, PgConnection};
use tokio::time::Instant;

pub fn database_url() -> String {
    std::env::var("PAYORCH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("PAYORCH_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn services_required() -> bool {
    std::env::var("PAYORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

pub fn skip(test: &str, what: &str, url: &str, e: &dyn std::fmt::Display) {
    if services_required() {
        panic!("{what} at {url} unreachable and PAYORCH_REQUIRE_SERVICES=1: {e}");
    }
    eprintln!(
        "\n*** SKIP {test}: {what} at {url} unreachable ({e}); set PAYORCH_REQUIRE_SERVICES=1 to fail instead ***\n"
    );
}

pub async fn admin() -> Result<PgConnection, String> {
    let opts = PgConnectOptions::from_str(&database_url()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".into()),
    }
}

/// `database_url()` with the database name replaced by `db`.
pub fn url_of_database(db: &str) -> String {
    let base = database_url();
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h.to_owned(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => &head[..],
    };
    format!("{host_part}/{db}{query}")
}

/// The test database; dropped (forcefully) on drop.
pub struct Database {
    pub name: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A fresh runtime on a plain thread: drop may run inside the test's
        // runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(mut c) = admin().await {
                        let _ = c
                            .execute(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Kills (SIGKILL) and reaps the child on drop.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn payorch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_payorch"))
        .args(args)
        .env_remove("PAYORCH_STORE_URL")
        .env_remove("PAYORCH_CONFIG")
        .output()
        .expect("run payorch")
}

pub fn sha256_hex(text: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_owned()
}

/// Starts `payorch --config cfg serve` and returns it with its URL (from the
/// banner). Its stderr goes to `log`.
pub fn start_serve(cfg: &Path, log: &Path) -> (Child, String) {
    let log = std::fs::File::create(log).expect("log file");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args(["--config", cfg.to_str().expect("utf-8 path"), "serve"])
            .env_remove("PAYORCH_CONFIG")
            .env_remove("PAYORCH_STORE_URL")
            .env_remove("PAYORCH_AMQP_URL")
            .env_remove("PAYORCH_ADDR")
            .env_remove("PAYORCH_PUBLIC_URL")
            .env_remove("PAYORCH_RECONCILE_INTERVAL_SECS")
            .env_remove("PAYORCH_PAYKKA_BASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn serve"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let url = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("serve printed its banner in time");
        if let Some(u) = line.strip_prefix("payorch listening on ") {
            break u.trim().to_owned();
        }
    };
    (child, url)
}

/// Polls `f` every 25 ms until it returns `Some` or the deadline passes.
pub async fn until<T, F, Fut>(wait: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A throw-away database and its URL; `None` (after saying so, see
/// [`skip`]) when Postgres is down. `prefix` names the database.
pub async fn database(test: &str, prefix: &str) -> Option<(Database, String)> {
    let mut pg = match admin().await {
        Ok(c) => c,
        Err(e) => {
            skip(test, "Postgres", &database_url(), &e);
            return None;
        }
    };
    let db = Database {
        name: format!("payorch_{prefix}_{}", uuid::Uuid::now_v7().simple()),
    };
    pg.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", db.name)))
        .await
        .expect("create database");
    let url = url_of_database(&db.name);
    Some((db, url))
}

/// What a service test runs on: a throw-away database, a broker
/// connection, and a durable queue bound to every event (`#`) before any
/// `payorch` starts, so it sees everything published.
pub struct Services {
    pub db: Database,
    pub store_url: String,
    pub amqp: payorch_rabbitmq::lapin::Connection,
    pub channel: payorch_rabbitmq::lapin::Channel,
    pub queue: String,
}

/// Connects to Postgres and RabbitMQ and sets up [`Services`]; `None`
/// (after saying so, see [`skip`]) when a service is down. `prefix` names
/// the test's database and queue.
pub async fn services(test: &str, prefix: &str) -> Option<Services> {
    use payorch_rabbitmq::lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use payorch_rabbitmq::lapin::types::{AMQPValue, FieldTable, ShortString};
    use payorch_rabbitmq::lapin::{Connection, ConnectionProperties};

    let mut pg = match admin().await {
        Ok(c) => c,
        Err(e) => {
            skip(test, "Postgres", &database_url(), &e);
            return None;
        }
    };
    let amqp = match tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&amqp_url(), ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            skip(test, "RabbitMQ", &amqp_url(), &e);
            return None;
        }
        Err(_) => {
            skip(test, "RabbitMQ", &amqp_url(), &"connect timed out");
            return None;
        }
    };
    let db = Database {
        name: format!("payorch_{prefix}_{}", uuid::Uuid::now_v7().simple()),
    };
    pg.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", db.name)))
        .await
        .expect("create database");
    let store_url = url_of_database(&db.name);

    let channel = amqp.create_channel().await.expect("channel");
    payorch_rabbitmq::topology::declare_exchange(&channel, "payorch.events")
        .await
        .expect("exchange");
    let queue = format!("payorch-{prefix}-{}", uuid::Uuid::now_v7().simple());
    // The test deletes the queue at the end; if it fails first, the broker
    // drops the unused queue after 5 minutes.
    let mut queue_args = FieldTable::default();
    queue_args.insert("x-expires".into(), AMQPValue::LongLongInt(300_000));
    channel
        .queue_declare(
            ShortString::from(queue.clone()),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            queue_args,
        )
        .await
        .expect("queue");
    channel
        .queue_bind(
            ShortString::from(queue.clone()),
            ShortString::from("payorch.events"),
            ShortString::from("#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    Some(Services {
        db,
        store_url,
        amqp,
        channel,
        queue,
    })
}

/// `payorch keygen` into `dir/keys`: the keys folder and the merchant's
/// public key (PEM).
pub fn keygen(dir: &Path) -> (std::path::PathBuf, String) {
    let keys = dir.join("keys");
    let out = payorch(&["keygen", "--out", keys.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(keys.join("merchant_public.pem")).expect("public key");
    (keys, public)
}
