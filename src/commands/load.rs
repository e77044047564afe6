//! `payorch load`: an HTTP load generator for the merchant API, and the
//! end-to-end yardstick of the project (see docs/BENCHMARKS.md, "End to
//! end").
//!
//! It drives a running `payorch serve` (`--url`, `--api-key`) or, with
//! `--spawn`, starts `payorch serve --json --addr 127.0.0.1:0` itself (a
//! child process of this binary, on the configured store), reads the URL
//! and the demo API key from its banner, and stops it (SIGTERM) at the end.
//!
//! Flows (`--mix NAME[=WEIGHT],...`): `purchase` (automatic capture),
//! `preauth-capture`, `capture-refund`, `3ds` (challenge completed on the
//! sandbox page, captured by the notification), `recurring` (first payment
//! storing a token, then a charge on the agreement), `checkout` (session
//! created, paid on the sandbox's hosted page, completed by the
//! notification). `3ds` and `checkout` play the shopper through
//! sandbox-only pages; they are refused unless the target's PayKKa is a
//! payorch sandbox: the in-process one of a spawned serve, or
//! `--sandbox-hooks` (the operator says so, e.g. `payorch sandbox` as its
//! own process). Even then a shopper page is only followed when its path is
//! a sandbox page (`/sandbox/3ds/`, `/sandbox/checkout/`).
//!
//! Every POST carries its own Idempotency-Key. Closed loop (`--concurrency
//! N` workers, each starting its next flow when the last one ends) or open
//! loop (`--rate R/s`: flows start on a fixed schedule, at most
//! `--concurrency` in flight, latency counted from the scheduled start so
//! that a slow server is not hidden). `--duration` or `--count` bound the
//! measured phase; `--warmup` runs first and is not counted.
//!
//! The report: flows/s and orders/s; p50/p90/p99/max latency per operation
//! (one HTTP call kind) and per flow, from all samples sorted; errors by
//! class (operation + HTTP status + error code, or transport kind, or an
//! unexpected state); with a Postgres store, the database's transactions
//! per order (`pg_stat_database` `xact_commit + xact_rollback`, all
//! sessions of the database, so the relay's and reconciler's background
//! work is included) and, when `pg_stat_statements` is installed in it,
//! statements per order; the relay lag (`payorch_relay_lag_events` of
//! `/metrics`) when the load stopped and how long it took to reach 0; CPU
//! seconds of the spawned serve, of this process and of `--cpu-process`
//! names (from /proc), per flow until the database is quiet again (work
//! such as notifications still queued when the load stops counts); the
//! spawned serve's resident memory (start, end, max, one sample a
//! minute). With `--rsa-speed SIGNS/VERIFIES` (e.g. from
//! `openssl speed rsa2048`) it also reports the cryptographic floor of the
//! mix and the ratio to it.

use std::collections::BTreeMap;
use std::io::{BufReader, IsTerminal};
use std::process::{Child, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Globals;
use crate::output::Output;

/// Drives `payorch serve` through the merchant API with a mix of payment
/// flows and reports throughput, latency percentiles, errors, Postgres
/// transactions per order, relay lag and CPU.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of a running `payorch serve` (e.g. http://127.0.0.1:8080).
    #[arg(long, value_name = "URL", required_unless_present = "spawn")]
    url: Option<String>,
    /// Merchant API key for --url (or PAYORCH_LOAD_API_KEY); with --spawn
    /// the demo merchant's key is read from the serve banner.
    #[arg(
        long,
        value_name = "KEY",
        env = "PAYORCH_LOAD_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Start `payorch serve` on the configured store (port chosen
    /// automatically) and stop it at the end.
    #[arg(long, conflicts_with = "url")]
    spawn: bool,
    /// RabbitMQ URL for the spawned serve (events out through the relay).
    #[arg(long, value_name = "URL", requires = "spawn")]
    amqp_url: Option<String>,
    /// Where the spawned serve's log (stderr) goes (default: a file in the
    /// temp dir, named in the report).
    #[arg(long, value_name = "FILE", requires = "spawn")]
    serve_log: Option<std::path::PathBuf>,
    /// Flows and weights: `purchase`, or e.g.
    /// `purchase=4,preauth-capture=1,capture-refund=1,3ds=1,recurring=1,checkout=1`;
    /// `full` is every flow with weight 1.
    #[arg(long, default_value = "purchase")]
    mix: String,
    /// Closed loop: number of workers (connections). With --rate: the most
    /// flows in flight (default 1024).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Open loop: flows started per second (`200` or `200/s`, `6000/m`).
    #[arg(long, value_name = "R/s")]
    rate: Option<String>,
    /// Length of the measured phase (`30s`, `2m`, `500ms`).
    #[arg(long, value_name = "DURATION", conflicts_with = "count")]
    duration: Option<String>,
    /// Number of flows of the measured phase.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Unmeasured load before the measured phase (`5s`).
    #[arg(long, value_name = "DURATION")]
    warmup: Option<String>,
    /// The target's PayKKa is a payorch sandbox: allow the flows that play
    /// the shopper on sandbox-only pages (3ds, checkout). Implied with
    /// --spawn when the configuration has no PayKKa (in-process sandbox).
    #[arg(long)]
    sandbox_hooks: bool,
    /// Postgres URL to read pg_stat_database from (default: the configured
    /// store URL when it is a Postgres one).
    #[arg(long, value_name = "URL")]
    pg_stats_url: Option<String>,
    /// Also report the CPU seconds of every process with this command name
    /// (e.g. `postgres`, `beam.smp`), repeatable.
    #[arg(long = "cpu-process", value_name = "NAME")]
    cpu_processes: Vec<String>,
    /// Also report the CPU seconds of this process id (e.g. a standalone
    /// `payorch sandbox`), repeatable.
    #[arg(long = "cpu-pid", value_name = "PID")]
    cpu_pids: Vec<u32>,
    /// RSA-2048 signs/s and verifies/s measured on this machine (e.g. from
    /// `openssl speed rsa2048`), as `SIGNS/VERIFIES`: adds the
    /// cryptographic floor of the mix and the ratio to it.
    #[arg(long, value_name = "SIGNS/VERIFIES")]
    rsa_speed: Option<String>,
    /// Cores available to the floor (default: this machine's).
    #[arg(long, value_name = "N")]
    cores: Option<f64>,
    /// Timeout of one HTTP call, and the longest wait for an asynchronous
    /// outcome (notification) or for the relay lag to drain.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    timeout: String,
}

// ---------------------------------------------------------------- flows

/// One payment flow of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flow {
    Purchase,
    PreauthCapture,
    CaptureRefund,
    ThreeDs,
    Recurring,
    Checkout,
}

impl Flow {
    pub const ALL: [Flow; 6] = [
        Flow::Purchase,
        Flow::PreauthCapture,
        Flow::CaptureRefund,
        Flow::ThreeDs,
        Flow::Recurring,
        Flow::Checkout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flow::Purchase => "purchase",
            Flow::PreauthCapture => "preauth-capture",
            Flow::CaptureRefund => "capture-refund",
            Flow::ThreeDs => "3ds",
            Flow::Recurring => "recurring",
            Flow::Checkout => "checkout",
        }
    }

    fn from_name(s: &str) -> Option<Flow> {
        Flow::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Needs the sandbox's shopper pages.
    pub fn needs_sandbox_hooks(self) -> bool {
        matches!(self, Flow::ThreeDs | Flow::Checkout)
    }

    /// Orders (PayKKa payments) one flow creates.
    pub fn orders(self) -> u64 {
        match self {
            Flow::Recurring => 2,
            _ => 1,
        }
    }

    /// RSA-2048 signatures and verifications of one flow, both sides
    /// together: every PayKKa call is signed by payorch and verified by
    /// PayKKa, its answer signed by PayKKa and verified by payorch (2 + 2);
    /// every notification is signed by PayKKa and verified by payorch
    /// (1 + 1). Purchase: initiate + PAYMENT.SUCCESS = 3 + 3.
    /// Pre-auth + capture: 2 calls + 2 notifications. Capture + refund:
    /// 3 calls + 3 notifications (AUTHORIZATION, SUCCESS, REFUND.SUCCESS).
    /// 3-D Secure: initiate (PROCESSING, no notification) + PAYMENT.SUCCESS
    /// after the challenge. Recurring: first payment + charge, each with
    /// its notification. Checkout: session create (no notification) +
    /// PAYMENT.SUCCESS after the page is paid.
    pub fn rsa_ops(self) -> (u32, u32) {
        let (calls, notifications) = match self {
            Flow::Purchase => (1, 1),
            Flow::PreauthCapture => (2, 2),
            Flow::CaptureRefund => (3, 3),
            Flow::ThreeDs => (1, 1),
            Flow::Recurring => (2, 2),
            Flow::Checkout => (1, 1),
        };
        let n = 2 * calls + notifications;
        (n, n)
    }
}

/// One HTTP call kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Op {
    CreatePayment,
    Capture,
    Refund,
    ChargeAgreement,
    CreateCheckout,
    Shopper3ds,
    ShopperCheckout,
    GetPayment,
    GetCheckout,
    GetAgreement,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::CreatePayment => "create_payment",
            Op::Capture => "capture",
            Op::Refund => "refund",
            Op::ChargeAgreement => "charge_agreement",
            Op::CreateCheckout => "create_checkout_session",
            Op::Shopper3ds => "shopper_3ds_page",
            Op::ShopperCheckout => "shopper_checkout_page",
            Op::GetPayment => "get_payment",
            Op::GetCheckout => "get_checkout_session",
            Op::GetAgreement => "get_agreement",
        }
    }
}

/// A parsed `--mix`: flows with positive weights, in `Flow::ALL` order.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    pub weights: Vec<(Flow, u32)>,
    /// One cycle of flows, each repeated by its weight, interleaved.
    schedule: Vec<Flow>,
}

/// Parses `--mix` (`full` = every flow once).
pub fn parse_mix(s: &str) -> anyhow::Result<Mix> {
    let names = || {
        Flow::ALL
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut weights: BTreeMap<Flow, u32> = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.split_once('=') {
            Some((n, w)) => {
                let w: u32 = w.trim().parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--mix: weight {w:?} of {n:?} is not a whole number (write e.g. purchase=4)"
                    )
                })?;
                (n.trim(), w)
            }
            None => (part, 1),
        };
        if name == "full" {
            for f in Flow::ALL {
                *weights.entry(f).or_default() += weight;
            }
            continue;
        }
        let flow = Flow::from_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "--mix: unknown flow {name:?}; the flows are {} (or full)",
                names()
            )
        })?;
        *weights.entry(flow).or_default() += weight;
    }
    let weights: Vec<(Flow, u32)> = weights.into_iter().filter(|(_, w)| *w > 0).collect();
    if weights.is_empty() {
        bail!(
            "--mix {s:?} names no flow with a weight above 0; the flows are {}",
            names()
        );
    }
    // Interleave: round r takes every flow whose weight exceeds r.
    let max = weights.iter().map(|(_, w)| *w).max().unwrap_or(0);
    let mut schedule = Vec::new();
    for r in 0..max {
        for (f, w) in &weights {
            if *w > r {
                schedule.push(*f);
            }
        }
    }
    Ok(Mix { weights, schedule })
}

impl Mix {
    fn nth(&self, n: u64) -> Flow {
        self.schedule[(n % self.schedule.len() as u64) as usize]
    }

    fn needs_sandbox_hooks(&self) -> Vec<&'static str> {
        self.weights
            .iter()
            .filter(|(f, _)| f.needs_sandbox_hooks())
            .map(|(f, _)| f.name())
            .collect()
    }
}

/// `30s`, `2m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(s: &str, flag: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag}: {s:?} is not a duration (e.g. 30s, 2m, 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("{flag}: unit {unit:?} of {s:?} is not one of ms, s, m, h"),
    };
    if !secs.is_finite() || secs < 0.0 {
        bail!("{flag}: {s:?} is not a duration");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `200`, `200/s`, `6000/m` → flows per second.
pub fn parse_rate(s: &str) -> anyhow::Result<f64> {
    let t = s.trim();
    let (num, per) = match t.split_once('/') {
        Some((n, u)) => (n.trim(), u.trim()),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--rate: {s:?} is not a rate (e.g. 200/s)"))?;
    let r = match per {
        "s" => n,
        "m" => n / 60.0,
        _ => bail!("--rate: unit {per:?} of {s:?} is not s or m"),
    };
    if !(r.is_finite() && r > 0.0) {
        bail!("--rate: {s:?} must be above 0");
    }
    Ok(r)
}

fn parse_rsa_speed(s: &str) -> anyhow::Result<(f64, f64)> {
    let (a, b) = s
        .split_once('/')
        .context("--rsa-speed: write SIGNS/VERIFIES, e.g. 2583/42752")?;
    let sign: f64 = a
        .trim()
        .parse()
        .context("--rsa-speed: signs/s is not a number")?;
    let verify: f64 = b
        .trim()
        .parse()
        .context("--rsa-speed: verifies/s is not a number")?;
    if !(sign > 0.0 && verify > 0.0) {
        bail!("--rsa-speed: both rates must be above 0");
    }
    Ok((sign, verify))
}

// ---------------------------------------------------------------- client

const VISA: &str = "4111111111111111";
const MASTERCARD: &str = "5555555555554444";
/// The sandbox card that asks for a 3-D Secure challenge.
const CHALLENGE_CARD: &str = "4000000000003220";

fn card(pan: &str) -> Value {
    json!({"type": "card", "number": pan, "exp_month": "07", "exp_year": "2031", "cvv": "123"})
}

fn eur(minor: i64) -> Value {
    json!({"minor": minor, "currency": "EUR"})
}

/// What went wrong in a flow; `class()` is the key of the error table.
#[derive(Debug)]
enum FlowError {
    Http { op: Op, status: u16, code: String },
    Transport { op: Op, kind: &'static str },
    Unexpected { op: Op, what: String },
}

impl FlowError {
    fn class(&self) -> String {
        match self {
            FlowError::Http { op, status, code } => {
                format!("{}: http {status} {code}", op.name())
            }
            FlowError::Transport { op, kind } => format!("{}: transport {kind}", op.name()),
            FlowError::Unexpected { op, what } => format!("{}: {what}", op.name()),
        }
    }
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "other"
    }
}

/// The target service and what every flow shares.
struct Target {
    http: reqwest::Client,
    url: String,
    auth: HeaderValue,
    /// Unique prefix of this run's Idempotency-Keys and shopper references.
    run: String,
    seq: AtomicU64,
    timeout: Duration,
}

/// One flow's calls and their latencies.
struct FlowRun<'a> {
    t: &'a Target,
    samples: Vec<(Op, u32)>,
}

fn status_of(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("?")
}

fn str_field(op: Op, v: &Value, field: &str) -> Result<String, FlowError> {
    v[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| FlowError::Unexpected {
            op,
            what: format!("no {field} in the answer"),
        })
}

/// The pauses between two polls of one flow: 5 ms, doubling up to 50 ms
/// (fine latency resolution for quick outcomes without flooding a slow
/// service with GETs).
struct Poll(Duration);

impl Default for Poll {
    fn default() -> Self {
        Poll(Duration::from_millis(5))
    }
}

impl Poll {
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_millis(50));
    }
}

/// Payment statuses that may still become the expected one.
fn payment_may_progress(status: &str) -> bool {
    !matches!(status, "declined" | "voided" | "refunded")
}

impl<'a> FlowRun<'a> {
    fn new(t: &'a Target) -> Self {
        FlowRun {
            t,
            samples: Vec::with_capacity(4),
        }
    }

    fn key(&self) -> String {
        format!(
            "{}-{}",
            self.t.run,
            self.t.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// One HTTP call; records its latency when it answers 2xx.
    async fn call(
        &mut self,
        op: Op,
        req: reqwest::RequestBuilder,
        body: Option<&Value>,
    ) -> Result<Value, FlowError> {
        let req = match body {
            Some(b) => req
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default()),
            None => req,
        };
        let start = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| FlowError::Transport {
            op,
            kind: transport_kind(&e),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| FlowError::Transport {
            op,
            kind: transport_kind(&e),
        })?;
        let micros = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let code = v["error"]["code"]
                .as_str()
                .or_else(|| v["ret_code"].as_str())
                .unwrap_or("-")
                .to_owned();
            return Err(FlowError::Http { op, status, code });
        }
        self.samples.push((op, micros));
        Ok(v)
    }

    async fn post(&mut self, op: Op, path: &str, body: Value) -> Result<Value, FlowError> {
        let req = self
            .t
            .http
            .post(format!("{}{path}", self.t.url))
            .header(AUTHORIZATION, self.t.auth.clone())
            .header("Idempotency-Key", self.key());
        self.call(op, req, Some(&body)).await
    }

    async fn get(&mut self, op: Op, path: &str) -> Result<Value, FlowError> {
        let req = self
            .t
            .http
            .get(format!("{}{path}", self.t.url))
            .header(AUTHORIZATION, self.t.auth.clone());
        self.call(op, req, None).await
    }

    /// A shopper's POST on a sandbox page (no API key); only sandbox pages.
    async fn shopper(&mut self, op: Op, page: &str, query: &str) -> Result<(), FlowError> {
        let marker = match op {
            Op::Shopper3ds => "/sandbox/3ds/",
            _ => "/sandbox/checkout/",
        };
        if !page.contains(marker) {
            return Err(FlowError::Unexpected {
                op,
                what: "the shopper page is not a payorch sandbox page (real PayKKa?)".into(),
            });
        }
        let req = self.t.http.post(format!("{page}?{query}"));
        self.call(op, req, None).await.map(|_| ())
    }

    /// `v` (a payment) when its status is `want`, else polls it until it
    /// is, fails when it cannot get there any more, or times out.
    async fn until_payment(&mut self, v: Value, want: &str, op: Op) -> Result<Value, FlowError> {
        if status_of(&v) == want {
            return Ok(v);
        }
        let id = str_field(op, &v, "id")?;
        let deadline = Instant::now() + self.t.timeout;
        let mut pause = Poll::default();
        let mut last = v;
        loop {
            let s = status_of(&last);
            if s == want {
                return Ok(last);
            }
            if !payment_may_progress(s) {
                return Err(FlowError::Unexpected {
                    op,
                    what: format!("payment {s}, expected {want}"),
                });
            }
            if Instant::now() >= deadline {
                return Err(FlowError::Unexpected {
                    op,
                    what: format!("payment still {s} after the timeout, expected {want}"),
                });
            }
            pause.wait().await;
            last = self
                .get(Op::GetPayment, &format!("/v1/payments/{id}"))
                .await?;
        }
    }

    /// Polls the agreement until it exists and is `active` (404 while
    /// it does not exist yet).
    async fn until_agreement_active(&mut self, agreement: &str) -> Result<(), FlowError> {
        let deadline = Instant::now() + self.t.timeout;
        let mut pause = Poll::default();
        loop {
            let what = match self
                .get(
                    Op::GetAgreement,
                    &format!("/v1/recurring-agreements/{agreement}"),
                )
                .await
            {
                Ok(a) if status_of(&a) == "active" => return Ok(()),
                Ok(a) => format!("agreement {}", status_of(&a)),
                Err(FlowError::Http { status: 404, .. }) => "agreement not found".to_owned(),
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(FlowError::Unexpected {
                    op: Op::GetAgreement,
                    what: format!("{what} after the timeout, expected active"),
                });
            }
            pause.wait().await;
        }
    }

    async fn run(&mut self, flow: Flow) -> Result<(), FlowError> {
        match flow {
            Flow::Purchase => {
                let p = self
                    .post(
                        Op::CreatePayment,
                        "/v1/payments",
                        json!({"amount": eur(2500), "payment_method": card(VISA)}),
                    )
                    .await?;
                self.until_payment(p, "captured", Op::CreatePayment).await?;
            }
            Flow::PreauthCapture | Flow::CaptureRefund => {
                let p = self
                    .post(
                        Op::CreatePayment,
                        "/v1/payments",
                        json!({"amount": eur(8000), "authorisation_type": "PRE_AUTH",
                               "capture_method": "MANUAL", "payment_method": card(MASTERCARD)}),
                    )
                    .await?;
                let p = self
                    .until_payment(p, "authorised", Op::CreatePayment)
                    .await?;
                let id = str_field(Op::CreatePayment, &p, "id")?;
                let c = self
                    .post(
                        Op::Capture,
                        &format!("/v1/payments/{id}/capture"),
                        json!({}),
                    )
                    .await?;
                self.until_payment(c, "captured", Op::Capture).await?;
                if flow == Flow::CaptureRefund {
                    // Accepted (REVIEWING); it settles by notification.
                    self.post(
                        Op::Refund,
                        &format!("/v1/payments/{id}/refunds"),
                        json!({"amount": eur(3000)}),
                    )
                    .await?;
                }
            }
            Flow::ThreeDs => {
                let p = self
                    .post(
                        Op::CreatePayment,
                        "/v1/payments",
                        json!({"amount": eur(4300), "payment_method": card(CHALLENGE_CARD),
                               "return_url": "https://shop.example/back"}),
                    )
                    .await?;
                let p = self
                    .until_payment(p, "challenge_required", Op::CreatePayment)
                    .await?;
                let page = p["next_action"]["url"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| FlowError::Unexpected {
                        op: Op::CreatePayment,
                        what: "challenge without next_action.url".into(),
                    })?;
                self.shopper(Op::Shopper3ds, &page, "result=success")
                    .await?;
                // Captured once the notification arrives.
                self.until_payment(p, "captured", Op::GetPayment).await?;
            }
            Flow::Recurring => {
                let n = self.t.seq.fetch_add(1, Ordering::Relaxed);
                let p = self
                    .post(
                        Op::CreatePayment,
                        "/v1/payments",
                        json!({"amount": eur(1200), "payment_type": "RECURRING",
                               "store_token": {"purpose": "SUBSCRIPTION",
                                               "shopper_reference": format!("{}-shopper-{n}", self.t.run)},
                               "payment_method": card(VISA)}),
                    )
                    .await?;
                let p = self.until_payment(p, "captured", Op::CreatePayment).await?;
                // The first payment's id is the agreement id when the view
                // does not name one (as `payorch demo` does).
                let agreement = match p["agreement_id"].as_str() {
                    Some(a) => a.to_owned(),
                    None => str_field(Op::CreatePayment, &p, "id")?,
                };
                // The agreement is created from the stored token, which may
                // come with the notification after the payment answered
                // `captured`: wait until it can be charged.
                self.until_agreement_active(&agreement).await?;
                let c = self
                    .post(
                        Op::ChargeAgreement,
                        &format!("/v1/recurring-agreements/{agreement}/charges"),
                        json!({"amount": eur(1200)}),
                    )
                    .await?;
                self.until_payment(c, "captured", Op::ChargeAgreement)
                    .await?;
            }
            Flow::Checkout => {
                let s = self
                    .post(
                        Op::CreateCheckout,
                        "/v1/checkout-sessions",
                        json!({"amount": eur(4200)}),
                    )
                    .await?;
                let id = str_field(Op::CreateCheckout, &s, "id")?;
                let page = str_field(Op::CreateCheckout, &s, "session_url")?;
                self.shopper(Op::ShopperCheckout, &page, &format!("card={VISA}"))
                    .await?;
                let deadline = Instant::now() + self.t.timeout;
                let mut pause = Poll::default();
                loop {
                    let v = self
                        .get(Op::GetCheckout, &format!("/v1/checkout-sessions/{id}"))
                        .await?;
                    let st = status_of(&v);
                    if st == "completed" && v["payment_id"].is_string() {
                        break;
                    }
                    if matches!(st, "expired" | "cancelled") || Instant::now() >= deadline {
                        return Err(FlowError::Unexpected {
                            op: Op::GetCheckout,
                            what: format!("checkout session {st}, expected completed"),
                        });
                    }
                    pause.wait().await;
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- stats

/// Latency samples (µs) and outcomes of one phase.
#[derive(Default)]
struct Stats {
    ops: BTreeMap<Op, Vec<u32>>,
    flows: BTreeMap<Flow, Vec<u32>>,
    failed: BTreeMap<Flow, u64>,
    errors: BTreeMap<String, u64>,
    /// Open loop: flows not started because --concurrency were in flight.
    not_started: u64,
}

impl Stats {
    fn record(
        &mut self,
        flow: Flow,
        micros: u32,
        samples: Vec<(Op, u32)>,
        r: Result<(), FlowError>,
    ) {
        for (op, us) in samples {
            self.ops.entry(op).or_default().push(us);
        }
        match r {
            Ok(()) => self.flows.entry(flow).or_default().push(micros),
            Err(e) => {
                *self.failed.entry(flow).or_default() += 1;
                *self.errors.entry(e.class()).or_default() += 1;
            }
        }
    }

    fn merge(&mut self, other: Stats) {
        for (k, mut v) in other.ops {
            self.ops.entry(k).or_default().append(&mut v);
        }
        for (k, mut v) in other.flows {
            self.flows.entry(k).or_default().append(&mut v);
        }
        for (k, v) in other.failed {
            *self.failed.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.not_started += other.not_started;
    }
}

/// Nearest-rank percentiles of sorted µs samples, in ms.
fn summary(samples: &mut [u32]) -> Value {
    samples.sort_unstable();
    let n = samples.len();
    if n == 0 {
        return json!({"count": 0});
    }
    let at = |p: f64| {
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        f64::from(samples[rank.clamp(1, n) - 1]) / 1000.0
    };
    let mean = samples.iter().map(|&u| u64::from(u)).sum::<u64>() as f64 / n as f64 / 1000.0;
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "count": n,
        "p50_ms": r(at(50.0)),
        "p90_ms": r(at(90.0)),
        "p99_ms": r(at(99.0)),
        "max_ms": r(f64::from(samples[n - 1]) / 1000.0),
        "mean_ms": r(mean),
    })
}

/// Live counters for the progress bar.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    failed: AtomicU64,
}

/// Where a phase stops.
#[derive(Clone, Copy)]
enum Bound {
    Count(u64),
    Until(Instant),
}

impl Bound {
    fn admits(self, n: u64) -> bool {
        match self {
            Bound::Count(c) => n < c,
            Bound::Until(t) => Instant::now() < t,
        }
    }
}

async fn one_flow(t: &Target, flow: Flow, start: Instant, stats: &mut Stats, progress: &Progress) {
    let mut run = FlowRun::new(t);
    let r = run.run(flow).await;
    let micros = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
    if r.is_ok() {
        progress.done.fetch_add(1, Ordering::Relaxed);
    } else {
        progress.failed.fetch_add(1, Ordering::Relaxed);
    }
    stats.record(flow, micros, run.samples, r);
}

/// Closed loop: `workers` tasks, each starting its next flow when the last
/// one ends.
async fn closed_phase(
    t: Arc<Target>,
    mix: Arc<Mix>,
    workers: usize,
    bound: Bound,
    progress: Arc<Progress>,
) -> Stats {
    let tickets = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (t, mix, tickets, progress) =
            (t.clone(), mix.clone(), tickets.clone(), progress.clone());
        set.spawn(async move {
            let mut stats = Stats::default();
            loop {
                let n = tickets.fetch_add(1, Ordering::Relaxed);
                if !bound.admits(n) {
                    break;
                }
                one_flow(&t, mix.nth(n), Instant::now(), &mut stats, &progress).await;
            }
            stats
        });
    }
    let mut all = Stats::default();
    while let Some(r) = set.join_next().await {
        if let Ok(s) = r {
            all.merge(s);
        }
    }
    all
}

/// Open loop: a flow every 1/rate s, latency from its scheduled start, at
/// most `max_in_flight` at once (the others are counted as not started).
async fn open_phase(
    t: Arc<Target>,
    mix: Arc<Mix>,
    rate: f64,
    max_in_flight: usize,
    bound: Bound,
    progress: Arc<Progress>,
) -> Stats {
    let shared = Arc::new(Mutex::new(Stats::default()));
    let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut set = tokio::task::JoinSet::new();
    let mut n = 0u64;
    loop {
        let scheduled = ticker.tick().await;
        if !bound.admits(n) {
            break;
        }
        let flow = mix.nth(n);
        n += 1;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Ok(mut s) = shared.lock() {
                s.not_started += 1;
            }
            continue;
        };
        let (t, shared, progress) = (t.clone(), shared.clone(), progress.clone());
        set.spawn(async move {
            let mut stats = Stats::default();
            one_flow(&t, flow, scheduled, &mut stats, &progress).await;
            drop(permit);
            if let Ok(mut s) = shared.lock() {
                s.merge(stats);
            }
        });
        // Reap finished tasks as we go (keeps the set small).
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    let mut out = Stats::default();
    if let Ok(mut s) = shared.lock() {
        out = std::mem::take(&mut *s);
    }
    out
}

// ---------------------------------------------------------------- /proc

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// (command name, utime + stime in ticks) of /proc/<pid>/stat.
fn proc_stat(path: &std::path::Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn pid_ticks(pid: u32) -> Option<u64> {
    proc_stat(std::path::Path::new(&format!("/proc/{pid}/stat"))).map(|(_, t)| t)
}

/// CPU ticks of every live process per command name in `names`.
fn ticks_by_name(names: &[String]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = names.iter().map(|n| (n.clone(), 0)).collect();
    if names.is_empty() {
        return out;
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            if let Some((comm, t)) = proc_stat(&e.path().join("stat"))
                && let Some(sum) = out.get_mut(&comm)
            {
                *sum += t;
            }
        }
    }
    out
}

/// CPU of the processes watched over the measured phase.
struct CpuProbe {
    tck: f64,
    serve_pid: Option<u32>,
    names: Vec<String>,
    pids: Vec<(u32, Option<u64>)>,
    serve: Option<u64>,
    own: Option<u64>,
    by_name: BTreeMap<String, u64>,
}

impl CpuProbe {
    fn start(serve_pid: Option<u32>, names: &[String], pids: &[u32]) -> CpuProbe {
        CpuProbe {
            tck: clock_ticks(),
            serve_pid,
            names: names.to_vec(),
            pids: pids.iter().map(|&p| (p, pid_ticks(p))).collect(),
            serve: serve_pid.and_then(pid_ticks),
            own: pid_ticks(std::process::id()),
            by_name: ticks_by_name(names),
        }
    }

    fn finish(&self, elapsed: f64) -> Value {
        let secs = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / self.tck),
            _ => None,
        };
        let share = |s: Option<f64>| s.map(|s| round3(s / elapsed.max(1e-9)));
        let serve = secs(self.serve, self.serve_pid.and_then(pid_ticks));
        let own = secs(self.own, pid_ticks(std::process::id()));
        let now = ticks_by_name(&self.names);
        let mut named = serde_json::Map::new();
        for (name, before) in &self.by_name {
            let s = now
                .get(name)
                .map(|a| a.saturating_sub(*before) as f64 / self.tck);
            named.insert(
                name.clone(),
                json!({"cpu_secs": s.map(round3), "cores": share(s)}),
            );
        }
        for (pid, before) in &self.pids {
            let s = secs(*before, pid_ticks(*pid));
            named.insert(
                format!("pid {pid}"),
                json!({"cpu_secs": s.map(round3), "cores": share(s)}),
            );
        }
        json!({
            "serve": {"cpu_secs": serve.map(round3), "cores": share(serve)},
            "load_tool": {"cpu_secs": own.map(round3), "cores": share(own)},
            "processes": named,
            "note": "utime+stime deltas from /proc over the measured phase; `cores` = cpu_secs / elapsed; processes by command name count those alive at both ends",
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------- Postgres

/// `pg_stat_database` (and `pg_stat_statements` when installed) of the
/// store's database.
struct PgProbe {
    conn: sqlx::PgConnection,
    has_statements: bool,
    /// Transactions this probe ran itself (subtracted).
    own: u64,
}

impl PgProbe {
    async fn connect(url: &str) -> anyhow::Result<PgProbe> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .context("--pg-stats-url: cannot connect")?;
        let has: bool = sqlx::query_scalar("SELECT to_regclass('pg_stat_statements') IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .context("pg_stat_statements probe")?;
        Ok(PgProbe {
            conn,
            has_statements: has,
            own: 1,
        })
    }

    /// (transactions, statements) so far.
    async fn sample(&mut self) -> anyhow::Result<(u64, Option<u64>)> {
        let x: i64 = sqlx::query_scalar(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut self.conn)
        .await
        .context("pg_stat_database")?;
        self.own += 1;
        let s = if self.has_statements {
            let s: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&mut self.conn)
            .await
            .context("pg_stat_statements")?;
            self.own += 1;
            Some(u64::try_from(s).unwrap_or(0))
        } else {
            None
        };
        Ok((u64::try_from(x).unwrap_or(0), s))
    }
}

/// Postgres counters settle about 1 s after a backend goes idle.
const PG_SETTLE: Duration = Duration::from_millis(1500);

/// Below this rate the store's database counts as quiet after a run.
const PG_QUIET_TX_PER_S: f64 = 50.0;

// ---------------------------------------------------------------- serve

/// A `payorch serve` started by `--spawn`; SIGKILLed if dropped unstopped.
struct Spawned {
    child: Option<Child>,
    pid: u32,
    banner: Value,
    log: std::path::PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Spawned {
    /// Starts serve and waits (60 s) for its JSON banner.
    fn start(args: &Args, globals: &Globals) -> anyhow::Result<Spawned> {
        let exe = std::env::current_exe().context("--spawn: cannot find this executable")?;
        let log = args.serve_log.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("payorch-load-serve-{}.log", uuid::Uuid::now_v7()))
        });
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("--serve-log: cannot create {}", log.display()))?;
        let mut cmd = std::process::Command::new(exe);
        if let Some(c) = &globals.config_file {
            cmd.arg("--config").arg(c);
        }
        if let Some(s) = &globals.store_url {
            cmd.arg("--store-url").arg(s);
        }
        cmd.args(["--json", "serve", "--addr", "127.0.0.1:0"]);
        if let Some(a) = &args.amqp_url {
            cmd.arg("--amqp-url").arg(a);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("--spawn: cannot start payorch serve")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("serve stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let first = serde_json::Deserializer::from_reader(&mut reader)
                .into_iter::<Value>()
                .next();
            let _ = tx.send(first);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut spawned = Spawned {
            child: Some(child),
            pid,
            banner: Value::Null,
            log,
        };
        let tail = |log: &std::path::Path| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(Ok(v))) if v.get("error").is_some() => {
                bail!(
                    "--spawn: payorch serve failed: {}",
                    v["error"].as_str().unwrap_or("?")
                )
            }
            Ok(Some(Ok(v))) if v["url"].is_string() => spawned.banner = v,
            Ok(other) => bail!(
                "--spawn: payorch serve printed no banner ({other:?}); its log {}:\n{}",
                spawned.log.display(),
                tail(&spawned.log)
            ),
            Err(_) => bail!(
                "--spawn: payorch serve did not start within 60 s; its log {}:\n{}",
                spawned.log.display(),
                tail(&spawned.log)
            ),
        }
        Ok(spawned)
    }

    fn url(&self) -> String {
        self.banner["url"].as_str().unwrap_or_default().to_owned()
    }

    fn in_process_sandbox(&self) -> bool {
        self.banner["gateway"]
            .as_str()
            .is_some_and(|g| g.starts_with("in-process sandbox"))
    }

    /// SIGTERM, then up to 30 s for a clean exit (SIGKILL after that).
    fn stop(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(mut c) = self.child.take() else {
            return Ok(None);
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s.code());
            }
            if std::time::Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("payorch serve did not stop within 30 s of SIGTERM (killed)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Resident set size (KiB) of `pid` (VmRSS of /proc/<pid>/status).
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn rss_pid_now(pid: Option<u32>) -> Option<u64> {
    pid.and_then(rss_kib)
}

/// Records the spawned serve's RSS every second into `out` as (seconds
/// since the start, KiB); runs until aborted.
async fn sample_rss(pid: u32, out: Arc<Mutex<Vec<(u64, u64)>>>) {
    let start = Instant::now();
    loop {
        if let Some(k) = rss_kib(pid)
            && let Ok(mut v) = out.lock()
        {
            v.push((start.elapsed().as_secs(), k));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Start, end, max and one sample a minute of the serve's RSS.
fn rss_summary(samples: &[(u64, u64)], end: Option<u64>) -> Value {
    let first = samples.first().map(|s| s.1);
    let max = samples.iter().map(|s| s.1).chain(end).max();
    let per_minute: Vec<Value> = samples
        .iter()
        .filter(|(t, _)| t % 60 == 0)
        .map(|(t, k)| json!({"secs": t, "rss_kib": k}))
        .collect();
    json!({
        "rss_kib_start": first,
        "rss_kib_end": end,
        "rss_kib_max": max,
        "per_minute": per_minute,
    })
}

/// `payorch_relay_lag_events` from `/metrics`.
async fn relay_lag(http: &reqwest::Client, url: &str) -> Option<i64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("payorch_relay_lag_events "))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------- run

/// What the measured phase produced plus the probes around it.
struct Measured {
    stats: Stats,
    serve_memory: Value,
    elapsed: f64,
    cpu: Value,
    cpu_until_quiet: Value,
    relay: Value,
    postgres: Value,
}

pub fn run(args: &Args, globals: &Globals, out: &Output) -> anyhow::Result<ExitCode> {
    let mix = parse_mix(&args.mix)?;
    let rate = args.rate.as_deref().map(parse_rate).transpose()?;
    let duration = args
        .duration
        .as_deref()
        .map(|d| parse_duration(d, "--duration"))
        .transpose()?;
    let warmup = args
        .warmup
        .as_deref()
        .map(|d| parse_duration(d, "--warmup"))
        .transpose()?
        .unwrap_or(Duration::ZERO);
    let timeout = parse_duration(&args.timeout, "--timeout")?;
    if timeout.is_zero() {
        bail!("--timeout must be above 0");
    }
    let rsa = args.rsa_speed.as_deref().map(parse_rsa_speed).transpose()?;
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    let concurrency = args
        .concurrency
        .unwrap_or(if rate.is_some() { 1024 } else { 16 });
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let bound_of = |start: Instant| match (args.count, duration) {
        (Some(c), _) => Bound::Count(c),
        (None, Some(d)) => Bound::Until(start + d),
        (None, None) => Bound::Until(start + Duration::from_secs(30)),
    };
    let hooks = mix.needs_sandbox_hooks();
    if !hooks.is_empty() && !args.spawn && !args.sandbox_hooks {
        bail!(
            "--mix: the flows {} play the shopper on sandbox-only pages (3-D Secure challenge, \
             hosted checkout), which a real PayKKa does not offer; against --url they need \
             --sandbox-hooks, which says that the service's PayKKa is a payorch sandbox",
            hooks.join(", ")
        );
    }
    let config = globals.config()?;
    let pg_url = match &args.pg_stats_url {
        Some(u) => Some(u.clone()),
        None => (config.store_url.starts_with("postgres://")
            || config.store_url.starts_with("postgresql://"))
        .then(|| config.store_url.clone()),
    };

    let mut spawned = if args.spawn {
        Some(Spawned::start(args, globals)?)
    } else {
        None
    };
    let (url, api_key) = match &spawned {
        Some(s) => {
            let key = match (s.banner["api_key"].as_str(), &args.api_key) {
                (_, Some(k)) => k.clone(),
                (Some(k), None) => k.to_owned(),
                (None, None) => bail!(
                    "--api-key: the spawned serve has configured merchants (no demo merchant), \
                     so give the merchant's API key"
                ),
            };
            (s.url(), key)
        }
        None => (
            args.url
                .clone()
                .context("--url: required without --spawn")?
                .trim_end_matches('/')
                .to_owned(),
            args.api_key
                .clone()
                .context("--api-key: required with --url (or set PAYORCH_LOAD_API_KEY)")?,
        ),
    };
    if let Some(s) = &spawned
        && !hooks.is_empty()
        && !s.in_process_sandbox()
        && !args.sandbox_hooks
    {
        bail!(
            "--mix: the flows {} play the shopper on sandbox-only pages, but the spawned serve \
             talks to {}; if that is a payorch sandbox, add --sandbox-hooks",
            hooks.join(", "),
            s.banner["gateway"].as_str().unwrap_or("a PayKKa")
        );
    }
    let target_info = match &spawned {
        Some(s) => json!({
            "url": url,
            "spawned": true,
            "serve_pid": s.pid,
            "serve_log": s.log.display().to_string(),
            "store": s.banner["store"],
            "events_out": s.banner["events_out"],
            "gateway": s.banner["gateway"],
        }),
        None => json!({"url": url, "spawned": false}),
    };
    let serve_pid = spawned.as_ref().map(|s| s.pid);
    let spawned_events_out = spawned
        .as_ref()
        .and_then(|s| s.banner["events_out"].as_str().map(str::to_owned));
    let show_progress = !out.is_json() && std::io::stderr().is_terminal();

    let measured = crate::block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(concurrency.min(4096))
            .timeout(timeout)
            .build()
            .context("cannot build the HTTP client")?;
        let health = http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .with_context(|| format!("--url: {url}/healthz did not answer"))?;
        if !health.status().is_success() {
            let status = health.status();
            let body = health.text().await.unwrap_or_default();
            bail!("--url: {url}/healthz answered {status}: {body}");
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {api_key}"))
            .context("--api-key: not a valid header value")?;
        auth.set_sensitive(true);
        let target = Arc::new(Target {
            http: http.clone(),
            url: url.clone(),
            auth,
            run: format!("load-{}", uuid::Uuid::now_v7().simple()),
            seq: AtomicU64::new(0),
            timeout,
        });
        let mut pg = match &pg_url {
            Some(u) => Some(PgProbe::connect(u).await?),
            None => None,
        };
        let mix = Arc::new(mix.clone());
        let phase = |bound: Bound, progress: Arc<Progress>| {
            let (t, mix) = (target.clone(), mix.clone());
            async move {
                match rate {
                    Some(r) => open_phase(t, mix, r, concurrency, bound, progress).await,
                    None => closed_phase(t, mix, concurrency, bound, progress).await,
                }
            }
        };

        if !warmup.is_zero() {
            let bar = progress_bar(show_progress, None, "warmup");
            let progress = Arc::new(Progress::default());
            let ticker = tick_bar(bar.clone(), progress.clone(), None);
            let _ = phase(Bound::Until(Instant::now() + warmup), progress).await;
            ticker.abort();
            bar.finish_and_clear();
            // Let the relay catch up and the Postgres counters settle, so
            // that the measured phase starts from a quiet service.
            tokio::time::sleep(PG_SETTLE).await;
        }

        let pg_start = match pg.as_mut() {
            Some(p) => {
                let (x, st) = p.sample().await?;
                Some((x, st, p.own))
            }
            None => None,
        };
        let cpu_probe = CpuProbe::start(serve_pid, &args.cpu_processes, &args.cpu_pids);
        let bar_len = match (args.count, duration) {
            (Some(c), _) => Some(c),
            (None, d) => Some(d.unwrap_or(Duration::from_secs(30)).as_secs().max(1)),
        };
        let bar = progress_bar(show_progress, bar_len, "load");
        let progress = Arc::new(Progress::default());
        let start = Instant::now();
        let rss_samples = Arc::new(Mutex::new(Vec::new()));
        let rss = serve_pid.map(|pid| tokio::spawn(sample_rss(pid, rss_samples.clone())));
        let ticker = tick_bar(
            bar.clone(),
            progress.clone(),
            args.count.is_none().then_some(start),
        );
        let stats = phase(bound_of(start), progress).await;
        let ended = Instant::now();
        let elapsed = (ended - start).as_secs_f64();
        ticker.abort();
        bar.finish_and_clear();
        let cpu = cpu_probe.finish(elapsed);
        let serve_memory = match rss {
            Some(task) => {
                task.abort();
                let samples = rss_samples.lock().map(|v| v.clone()).unwrap_or_default();
                rss_summary(&samples, rss_pid_now(serve_pid))
            }
            None => Value::Null,
        };

        // Relay lag when the load stopped, then the time to 0 (a spawned
        // serve without a broker relays nothing).
        let no_broker = spawned_events_out
            .as_deref()
            .is_some_and(|e| e != "rabbitmq relay");
        let relay = match relay_lag(&http, &url).await {
            _ if no_broker => Value::Null,
            Some(at_end) => {
                let deadline = Instant::now() + timeout;
                let mut lag = at_end;
                while lag > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    lag = relay_lag(&http, &url).await.unwrap_or(lag);
                }
                json!({
                    "lag_at_end_events": at_end,
                    "drained": lag == 0,
                    "drain_secs": (lag == 0).then(|| round3(ended.elapsed().as_secs_f64())),
                    "note": "payorch_relay_lag_events of /metrics; serve refreshes it every second (so drain_secs has 1 s resolution) and keeps it 0 without a broker",
                })
            }
            None => Value::Null,
        };

        // Work the load caused still runs after it stopped (notifications
        // queued at the sandbox, the relay): with Postgres, wait until the
        // database is quiet, so that transactions and CPU per order
        // include it.
        let postgres = match (pg.as_mut(), pg_start) {
            (Some(p), Some((x0, s0, own0))) => {
                let since = ended.elapsed();
                if since < PG_SETTLE {
                    tokio::time::sleep(PG_SETTLE - since).await;
                }
                let mut last = p.sample().await?;
                let mut last_t = Instant::now();
                let quiet_deadline = Instant::now() + timeout;
                let rate = loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let own_before = p.own;
                    let cur = p.sample().await?;
                    let d = cur
                        .0
                        .saturating_sub(last.0)
                        .saturating_sub(p.own - own_before);
                    let rate = d as f64 / last_t.elapsed().as_secs_f64();
                    last = cur;
                    last_t = Instant::now();
                    if rate < PG_QUIET_TX_PER_S || Instant::now() >= quiet_deadline {
                        break rate;
                    }
                };
                let xacts = last.0.saturating_sub(x0).saturating_sub(p.own - own0);
                let orders = orders_of(&stats);
                let per = |n: u64| (orders > 0).then(|| round3(n as f64 / orders as f64));
                let statements = match (s0, last.1) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                    _ => None,
                };
                json!({
                    "transactions": xacts,
                    "transactions_per_order": per(xacts),
                    "statements": statements,
                    "statements_per_order": statements.and_then(per),
                    "quiet_after_secs": round3(ended.elapsed().as_secs_f64()),
                    "quiet_transactions_per_s": round3(rate),
                    "note": "pg_stat_database xact_commit+xact_rollback of the store's database from the start of the measured phase until the database is quiet again (below 50 transactions/s; idle serve: about 13/s), all its sessions: notifications applied after the load stopped, the relay and the reconciler are included; statements from pg_stat_statements when installed (null otherwise)",
                })
            }
            _ => Value::Null,
        };
        let cpu_until_quiet = cpu_probe.finish(ended.elapsed().as_secs_f64() + elapsed);
        Ok(Measured {
            stats,
            serve_memory,
            elapsed,
            cpu,
            cpu_until_quiet,
            relay,
            postgres,
        })
    });
    let serve_exit = spawned.as_mut().map(|s| s.stop());
    let measured = measured?;
    // A serve that does not stop in time is reported, not a reason to
    // lose the measurements.
    let serve_stop = match &serve_exit {
        None => Value::Null,
        Some(Ok(code)) => json!({"stopped": true, "exit_code": code}),
        Some(Err(e)) => json!({"stopped": false, "error": format!("{e:#}")}),
    };
    let stop_failed = matches!(serve_exit, Some(Err(_)));
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0)
    });
    let report = report(
        &mix,
        args,
        rate,
        concurrency,
        warmup,
        target_info,
        measured,
        rsa,
        cores,
    );
    let mut report = report;
    report["serve_stop"] = serve_stop;
    let failed = report["flows"]["failed"].as_u64().unwrap_or(0)
        + report["flows"]["not_started"].as_u64().unwrap_or(0);
    out.emit(&report, || render(&report));
    Ok(if failed == 0 && !stop_failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn orders_of(stats: &Stats) -> u64 {
    stats
        .flows
        .iter()
        .map(|(f, v)| f.orders() * v.len() as u64)
        .sum()
}

fn progress_bar(show: bool, len: Option<u64>, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(&format!(
        "{what} {{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Refreshes the bar 5 times a second: position = flows done (count) or
/// seconds (`by_time` = the phase start), message = flows/s and errors.
fn tick_bar(
    bar: ProgressBar,
    progress: Arc<Progress>,
    by_time: Option<Instant>,
) -> tokio::task::JoinHandle<()> {
    let start = Instant::now();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let done = progress.done.load(Ordering::Relaxed);
            let failed = progress.failed.load(Ordering::Relaxed);
            match by_time {
                Some(t) => bar.set_position(t.elapsed().as_secs()),
                None => bar.set_position(done + failed),
            }
            let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{done} flows ({rate:.0}/s), {failed} failed"));
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn report(
    mix: &Mix,
    args: &Args,
    rate: Option<f64>,
    concurrency: usize,
    warmup: Duration,
    target: Value,
    m: Measured,
    rsa: Option<(f64, f64)>,
    cores: f64,
) -> Value {
    let Measured {
        mut stats,
        serve_memory,
        elapsed,
        cpu,
        mut cpu_until_quiet,
        relay,
        postgres,
    } = m;
    let completed: u64 = stats.flows.values().map(|v| v.len() as u64).sum();
    // CPU per flow: robust to other load on the machine, unlike flows/s.
    let per_flow_ms = |v: &mut Value| {
        if let Some(s) = v["cpu_secs"].as_f64()
            && completed > 0
        {
            v["ms_per_flow"] = json!(round3(s * 1000.0 / completed as f64));
        }
    };
    per_flow_ms(&mut cpu_until_quiet["serve"]);
    per_flow_ms(&mut cpu_until_quiet["load_tool"]);
    if let Some(p) = cpu_until_quiet["processes"].as_object_mut() {
        p.values_mut().for_each(per_flow_ms);
    }
    let failed: u64 = stats.failed.values().sum();
    let orders = orders_of(&stats);
    let requests: u64 = stats.ops.values().map(|v| v.len() as u64).sum();
    let per_s = |n: u64| round3(n as f64 / elapsed.max(1e-9));
    let mut per_flow = serde_json::Map::new();
    for (flow, weight) in &mix.weights {
        let mut samples = stats.flows.remove(flow).unwrap_or_default();
        let done = samples.len() as u64;
        per_flow.insert(
            flow.name().to_owned(),
            json!({
                "weight": weight,
                "completed": done,
                "failed": stats.failed.get(flow).copied().unwrap_or(0),
                "orders": done * flow.orders(),
                "per_second": per_s(done),
                "latency": summary(&mut samples),
            }),
        );
    }
    let mut per_op = serde_json::Map::new();
    for (op, samples) in stats.ops.iter_mut() {
        per_op.insert(op.name().to_owned(), summary(samples));
    }
    let total_weight: u32 = mix.weights.iter().map(|(_, w)| w).sum();
    let (signs, verifies) = mix.weights.iter().fold((0.0, 0.0), |(s, v), (f, w)| {
        let (fs, fv) = f.rsa_ops();
        (s + f64::from(fs * w), v + f64::from(fv * w))
    });
    let (signs, verifies) = (
        signs / f64::from(total_weight),
        verifies / f64::from(total_weight),
    );
    let floor = rsa.map(|(sps, vps)| {
        let floor = cores / (signs / sps + verifies / vps);
        json!({
            "rsa2048_signs_per_s": sps,
            "rsa2048_verifies_per_s": vps,
            "cores": cores,
            "floor_flows_per_s": round3(floor),
            "ratio": round3(per_s(completed) / floor),
        })
    });
    json!({
        "target": target,
        "mix": mix.weights.iter().map(|(f, w)| json!({"flow": f.name(), "weight": w})).collect::<Vec<_>>(),
        "mode": if rate.is_some() { "open" } else { "closed" },
        "concurrency": concurrency,
        "rate_per_s": rate,
        "count": args.count,
        "warmup_secs": warmup.as_secs_f64(),
        "elapsed_secs": round3(elapsed),
        "flows": {
            "completed": completed,
            "failed": failed,
            "not_started": stats.not_started,
            "per_second": per_s(completed),
        },
        "orders": {"count": orders, "per_second": per_s(orders)},
        "requests": {"count": requests, "per_second": per_s(requests)},
        "per_flow": per_flow,
        "per_operation": per_op,
        "errors": {
            "total": failed,
            "by_class": stats.errors,
        },
        "crypto": {
            "rsa_signs_per_flow": round3(signs),
            "rsa_verifies_per_flow": round3(verifies),
            "floor": floor,
            "note": "both sides: payorch signs each PayKKa call and verifies its answer and each notification; PayKKa (the sandbox) verifies each call and signs its answers and notifications",
        },
        "postgres": postgres,
        "relay": relay,
        "cpu": cpu,
        "cpu_until_quiet": cpu_until_quiet,
        "serve_memory": serve_memory,
    })
}

fn ms(v: &Value, k: &str) -> String {
    v[k].as_f64().map_or("-".into(), |x| format!("{x:.1}"))
}

/// The text report.
fn render(r: &Value) -> String {
    let mut s = String::new();
    let t = &r["target"];
    s.push_str(&format!(
        "payorch load: {} loop, concurrency {}{}, {} s measured against {}{}\n",
        r["mode"].as_str().unwrap_or("?"),
        r["concurrency"],
        r["rate_per_s"]
            .as_f64()
            .map_or(String::new(), |x| format!(", rate {x}/s")),
        r["elapsed_secs"],
        t["url"].as_str().unwrap_or("?"),
        if t["spawned"] == true {
            format!(
                " (spawned: {} store, {}, {})",
                t["store"].as_str().unwrap_or("?"),
                t["events_out"].as_str().unwrap_or("?"),
                t["gateway"].as_str().unwrap_or("?")
            )
        } else {
            String::new()
        }
    ));
    s.push_str(&format!(
        "flows: {} completed, {} failed ({}/s); orders {} ({}/s); requests {} ({}/s)\n",
        r["flows"]["completed"],
        r["flows"]["failed"],
        r["flows"]["per_second"],
        r["orders"]["count"],
        r["orders"]["per_second"],
        r["requests"]["count"],
        r["requests"]["per_second"],
    ));
    if r["flows"]["not_started"].as_u64().unwrap_or(0) > 0 {
        s.push_str(&format!(
            "not started (in-flight limit): {}\n",
            r["flows"]["not_started"]
        ));
    }
    s.push_str(&format!(
        "\n{:<26} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
        "latency (ms)", "count", "p50", "p90", "p99", "max"
    ));
    let row = |s: &mut String, name: &str, v: &Value| {
        s.push_str(&format!(
            "{name:<26} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            v["count"].to_string(),
            ms(v, "p50_ms"),
            ms(v, "p90_ms"),
            ms(v, "p99_ms"),
            ms(v, "max_ms")
        ));
    };
    if let Some(flows) = r["per_flow"].as_object() {
        for (name, v) in flows {
            row(&mut s, &format!("flow {name}"), &v["latency"]);
        }
    }
    if let Some(ops) = r["per_operation"].as_object() {
        for (name, v) in ops {
            row(&mut s, name, v);
        }
    }
    if let Some(errors) = r["errors"]["by_class"].as_object()
        && !errors.is_empty()
    {
        s.push_str("\nerrors:\n");
        for (class, n) in errors {
            s.push_str(&format!("  {n:>8}  {class}\n"));
        }
    }
    let pg = &r["postgres"];
    if pg.is_object() {
        s.push_str(&format!(
            "\npostgres: {} transactions, {} per order; statements per order {}; idle background {} tx/s\n",
            pg["transactions"],
            pg["transactions_per_order"],
            pg["statements_per_order"],
            pg["idle_background_transactions_per_s"],
        ));
    }
    let relay = &r["relay"];
    if relay.is_null() && t["spawned"] == true {
        s.push_str("relay: none (no broker)\n");
    }
    if relay.is_object() {
        s.push_str(&format!(
            "relay lag at the end: {} events; drained to 0 after {} s\n",
            relay["lag_at_end_events"], relay["drain_secs"]
        ));
    }
    let cpu = &r["cpu"];
    s.push_str(&format!(
        "cpu: serve {} s ({} cores), load tool {} s ({} cores)",
        cpu["serve"]["cpu_secs"],
        cpu["serve"]["cores"],
        cpu["load_tool"]["cpu_secs"],
        cpu["load_tool"]["cores"]
    ));
    if let Some(p) = cpu["processes"].as_object() {
        for (name, v) in p {
            s.push_str(&format!(
                ", {name} {} s ({} cores)",
                v["cpu_secs"], v["cores"]
            ));
        }
    }
    s.push('\n');
    let mem = &r["serve_memory"];
    if mem.is_object() {
        s.push_str(&format!(
            "serve RSS: {} KiB at the start, {} KiB at the end, {} KiB max\n",
            mem["rss_kib_start"], mem["rss_kib_end"], mem["rss_kib_max"]
        ));
    }
    if r["serve_stop"]["stopped"] == false {
        s.push_str(&format!(
            "serve: {}\n",
            r["serve_stop"]["error"].as_str().unwrap_or("did not stop")
        ));
    }
    let q = &r["cpu_until_quiet"];
    s.push_str(&format!(
        "cpu per flow until quiet: serve {} ms, load tool {} ms",
        q["serve"]["ms_per_flow"], q["load_tool"]["ms_per_flow"]
    ));
    if let Some(p) = q["processes"].as_object() {
        for (name, v) in p {
            s.push_str(&format!(", {name} {} ms", v["ms_per_flow"]));
        }
    }
    s.push('\n');
    let c = &r["crypto"];
    s.push_str(&format!(
        "crypto: {} RSA signs + {} verifies per flow",
        c["rsa_signs_per_flow"], c["rsa_verifies_per_flow"]
    ));
    if c["floor"].is_object() {
        s.push_str(&format!(
            "; floor {} flows/s on {} cores; ratio {}",
            c["floor"]["floor_flows_per_s"], c["floor"]["cores"], c["floor"]["ratio"]
        ));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_interleave_and_name_bad_flows() {
        let m = parse_mix("purchase=2,3ds").unwrap();
        assert_eq!(m.weights, vec![(Flow::Purchase, 2), (Flow::ThreeDs, 1)]);
        assert_eq!(
            m.schedule,
            vec![Flow::Purchase, Flow::ThreeDs, Flow::Purchase]
        );
        assert_eq!(parse_mix("full").unwrap().weights.len(), 6);
        let e = parse_mix("purchase,refundz=2").unwrap_err().to_string();
        assert!(e.contains("\"refundz\""), "{e}");
        let e = parse_mix("purchase=x").unwrap_err().to_string();
        assert!(e.contains("\"x\""), "{e}");
        assert!(parse_mix("purchase=0").is_err());
    }

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("30s", "d").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m", "d").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("250ms", "d").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("5", "d").unwrap(), Duration::from_secs(5));
        assert!(
            parse_duration("5x", "--warmup")
                .unwrap_err()
                .to_string()
                .contains("--warmup")
        );
        assert_eq!(parse_rate("200/s").unwrap(), 200.0);
        assert_eq!(parse_rate("600/m").unwrap(), 10.0);
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).rev().map(|i| i * 1000).collect();
        let s = summary(&mut v);
        assert_eq!(s["p50_ms"], 50.0);
        assert_eq!(s["p99_ms"], 99.0);
        assert_eq!(s["max_ms"], 100.0);
        assert_eq!(summary(&mut [])["count"], 0);
    }

    #[test]
    fn purchase_floor_is_three_signs_and_three_verifies() {
        assert_eq!(Flow::Purchase.rsa_ops(), (3, 3));
        assert_eq!(Flow::CaptureRefund.rsa_ops(), (9, 9));
    }
}
