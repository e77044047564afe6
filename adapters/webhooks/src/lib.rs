//! # payorch-webhooks
//!
//! Merchant webhooks out (issue 15 point 6): every committed event of a
//! merchant is POSTed to each of the merchant's [`Endpoint`]s whose event
//! filter matches, signed, retried with exponential backoff for up to a day,
//! in order per stream (a payment's later events wait for its earlier
//! ones), with a delivery log per endpoint (attempts, HTTP status, latency).
//!
//! ## Source and checkpoint
//!
//! The [`Dispatcher`] tails the event log (`read_all`) like the relay and
//! keeps its own checkpoint ([`CHECKPOINT`]). The checkpoint only passes an
//! event once every delivery of it is settled (delivered, or given up after
//! [`DeliveryConfig::give_up_after`]), so nothing committed is missed across
//! restarts; a restart may deliver an event again (at-least-once): receivers
//! dedupe by the `Payorch-Event-Id` header (the event id).
//!
//! ## Signature
//!
//! Each delivery carries
//!
//! ```text
//! Payorch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//! Payorch-Event-Id: <event uuid>
//! ```
//!
//! The body is the event as a subscriber receives it (`EventEnvelope`
//! JSON). To verify (Python):
//!
//! ```text
//! import hmac, hashlib, time
//! def verify(secret: bytes, header: str, body: bytes, tolerance=300) -> bool:
//!     parts = dict(p.split("=", 1) for p in header.split(","))
//!     t, sig = parts["t"], parts["v1"]
//!     mac = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
//!     return hmac.compare_digest(mac, sig) and abs(time.time() - int(t)) <= tolerance
//! ```
//!
//! ([`verify`] is the same check in Rust.) Any 2xx answer is a delivery;
//! anything else, a timeout or a connection error is retried.
//!
//! ## Delivery log
//!
//! Every attempt is written to the engine's [`WebhookDeliveryLog`] port
//! (Postgres/SQLite tables of migration 0006, in memory in tests): one write
//! per attempt with the HTTP status or error class (`timeout`, `connect`,
//! `other`), the latency and the delivery's state after it (`delivered`,
//! `failed_retrying` with the next attempt's time, `given_up`). A restarted
//! dispatcher reads the events after its checkpoint again and asks the log
//! what it already did with them (one query per batch, only up to the
//! log's last position): settled deliveries are not sent again, and a
//! delivery being retried keeps its attempt count, first attempt time (the
//! day of retries counts from it) and next attempt time.
//!
//! ## Manual redelivery
//!
//! The API (`POST /v1/webhook-endpoints/{id}/deliveries/{event_id}/redeliver`)
//! and `payorch webhooks redeliver` queue a redelivery in the log (a
//! `redelivery_requested_at` on the delivery's row); every pass of the
//! dispatcher (once a second in `serve`) picks up the queued ones of its
//! endpoints, sends the same event body newly signed, and records the
//! attempt as manual, which clears the request. A redelivery is a single
//! attempt outside the per-payment order (the payment's later events were
//! delivered already); if it fails the delivery keeps its state and can be
//! queued again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use payorch_engine::store::{
    CheckpointStore, Clock, EventStore, Position, RecordedEvent, StoreError, StreamId,
};
pub use payorch_engine::webhook_out::{
    Attempt, Delivery, DeliveryQuery, DeliveryState, EndpointInfo, ErrorClass, WebhookDeliveryLog,
};
use payorch_engine::webhook_out::{AttemptWrite, DeliveryTarget};
use time::OffsetDateTime;
use uuid::Uuid;

/// Checkpoint name of the dispatcher.
pub const CHECKPOINT: &str = "webhooks_out";
/// Signature header.
pub const SIGNATURE_HEADER: &str = "payorch-signature";
/// Event id header (dedupe key).
pub const EVENT_ID_HEADER: &str = "payorch-event-id";

/// An endpoint's signing secret; never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One merchant endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Stable id (names the endpoint in the delivery log).
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    pub secret: Secret,
    /// Event filters on `<stream_type>.<event_type>`: `*` (everything),
    /// `order.*`, `order.captured`... Empty means everything.
    pub events: Vec<String>,
}

impl Endpoint {
    /// The endpoint as the API shows it (no secret).
    pub fn info(&self) -> EndpointInfo {
        EndpointInfo {
            id: self.id.clone(),
            merchant_id: self.merchant_id.clone(),
            url: self.url.clone(),
            events: self.events.clone(),
        }
    }

    /// Whether this endpoint wants `e`.
    pub fn wants(&self, e: &RecordedEvent) -> bool {
        if e.metadata.merchant_id.as_deref() != Some(self.merchant_id.as_str()) {
            return false;
        }
        let name = format!("{}.{}", e.stream_type, e.event_type);
        self.events.is_empty()
            || self.events.iter().any(|f| {
                f == "*"
                    || f == &name
                    || f.strip_suffix(".*")
                        .is_some_and(|prefix| name.starts_with(&format!("{prefix}.")))
            })
    }
}

/// The signature header value for `body` sent at unix second `t`.
pub fn sign(secret: &Secret, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.0.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Checks a signature header over `body` (constant-time) and that its
/// timestamp is within `tolerance` of `now`.
pub fn verify(secret: &Secret, header: &str, body: &[u8], now: i64, tolerance: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.trim().parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v.trim()).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.0.as_bytes());
    let mut msg = t.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    hmac::verify(&key, &msg, &sig).is_ok()
}

/// Retry and timeout settings.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Per-attempt HTTP timeout.
    pub timeout: Duration,
    /// Wait after the first failure (doubles after each).
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Stop retrying a delivery this long after its first attempt.
    pub give_up_after: Duration,
    /// Events read per `read_all` page.
    pub batch: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            batch: 256,
        }
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The event store or the delivery log failed; the pass is retried
    /// (an attempt whose record failed is made again: at-least-once).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A delivery state lock was poisoned (a bug).
    #[error("webhook delivery state poisoned")]
    Poisoned,
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub enqueued: usize,
    pub attempted: usize,
    pub delivered: usize,
    pub failed: usize,
    /// Manual redeliveries sent (successful or not).
    pub redelivered: usize,
}

/// A delivery not settled yet (in memory; its attempts are in the log).
#[derive(Clone, Debug)]
struct Pending {
    target: DeliveryTarget,
    attempts: u32,
    first_attempt_at: Option<OffsetDateTime>,
    next_attempt: Option<OffsetDateTime>,
}

#[derive(Default)]
struct State {
    /// Per (endpoint, stream): deliveries in stream order, head first.
    queues: BTreeMap<(String, StreamId), VecDeque<Pending>>,
    /// Last event read from the log.
    read_to: Position,
    loaded: bool,
    /// Up to this position the log may hold deliveries made before this
    /// dispatcher started (a restart re-reads from its checkpoint).
    recover_upto: Option<Position>,
}

/// Tails the event log and delivers to the endpoints.
pub struct Dispatcher {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    clock: Arc<dyn Clock>,
    log: Arc<dyn WebhookDeliveryLog>,
    endpoints: Vec<Endpoint>,
    config: DeliveryConfig,
    http: reqwest::Client,
    state: Mutex<State>,
    pass: tokio::sync::Mutex<()>,
}

/// Manual redeliveries handled per pass at most.
const REDELIVERIES_PER_PASS: usize = 64;

impl Dispatcher {
    pub fn new(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        clock: Arc<dyn Clock>,
        log: Arc<dyn WebhookDeliveryLog>,
        endpoints: Vec<Endpoint>,
        config: DeliveryConfig,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Dispatcher {
            store,
            checkpoints,
            clock,
            log,
            endpoints,
            config,
            http,
            state: Mutex::new(State::default()),
            pass: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, WebhookError> {
        self.state.lock().map_err(|_| WebhookError::Poisoned)
    }

    /// The delivery log this dispatcher writes.
    pub fn log(&self) -> &Arc<dyn WebhookDeliveryLog> {
        &self.log
    }

    /// One pass: read new events, attempt every due delivery (the head of
    /// each (endpoint, stream) queue), send the queued manual redeliveries,
    /// then advance the checkpoint to just before the oldest unsettled
    /// event.
    pub async fn run_once(&self) -> Result<PassReport, WebhookError> {
        let _one = self.pass.lock().await;
        let mut report = PassReport::default();
        self.read_new(&mut report).await?;

        // Due heads.
        let now = self.clock.now();
        let due: Vec<(String, StreamId, Pending)> = {
            let st = self.lock()?;
            st.queues
                .iter()
                .filter_map(|((ep, stream), q)| {
                    q.front()
                        .filter(|d| d.next_attempt.is_none_or(|t| t <= now))
                        .map(|d| (ep.clone(), stream.clone(), d.clone()))
                })
                .collect()
        };
        for (ep_id, stream, d) in due {
            let Some(ep) = self.endpoints.iter().find(|e| e.id == ep_id) else {
                continue;
            };
            let attempt = self.attempt(ep, &d.target).await?;
            report.attempted += 1;
            let first = d.first_attempt_at.unwrap_or(attempt.at);
            let (state, next) = if attempt.ok() {
                report.delivered += 1;
                (DeliveryState::Delivered, None)
            } else if attempt.at - first >= self.config.give_up_after {
                report.failed += 1;
                tracing::warn!(
                    endpoint = ep_id.as_str(),
                    event_id = %d.target.event_id,
                    attempts = d.attempts + 1,
                    "webhook delivery given up"
                );
                (DeliveryState::GivenUp, None)
            } else {
                let n = d.attempts.min(30);
                let wait = self
                    .config
                    .initial_backoff
                    .saturating_mul(2u32.saturating_pow(n))
                    .min(self.config.max_backoff);
                (DeliveryState::FailedRetrying, Some(attempt.at + wait))
            };
            self.log
                .record_attempt(&attempt.write(&d.target, state, next, false, None))
                .await?;
            let mut st = self.lock()?;
            let key = (ep_id, stream);
            let Some(q) = st.queues.get_mut(&key) else {
                continue;
            };
            if state.is_settled() {
                q.pop_front();
                if q.is_empty() {
                    st.queues.remove(&key);
                }
            } else if let Some(head) = q.front_mut() {
                head.attempts += 1;
                head.first_attempt_at = Some(first);
                head.next_attempt = next;
            }
        }

        self.redeliver_queued(&mut report).await?;

        // Checkpoint: before the oldest unsettled delivery, else the read end.
        let safe = {
            let st = self.lock()?;
            st.queues
                .values()
                .filter_map(|q| q.front().map(|d| d.target.position))
                .min()
                .map(|p| Position(p.saturating_sub(1)))
                .unwrap_or(st.read_to)
        };
        self.checkpoints.save_checkpoint(CHECKPOINT, safe).await?;
        Ok(report)
    }

    /// Reads the events after what was read (after the checkpoint on the
    /// first pass) and queues their deliveries; past the checkpoint, what
    /// the log says was done before a restart is kept.
    async fn read_new(&self, report: &mut PassReport) -> Result<(), WebhookError> {
        let from = {
            let st = self.lock()?;
            st.loaded.then_some((st.read_to, st.recover_upto))
        };
        let (mut position, mut recover_upto) = match from {
            Some(p) => p,
            None => {
                let cp = self
                    .checkpoints
                    .load_checkpoint(CHECKPOINT)
                    .await?
                    .unwrap_or(Position::START);
                let last = self.log.last_position().await?;
                (cp, last.filter(|l| *l > cp))
            }
        };
        loop {
            let batch = self.store.read_all(position, self.config.batch).await?;
            let Some(last) = batch.last() else { break };
            let last = last.global_position;
            let known: HashMap<(String, Uuid), Delivery> = match recover_upto {
                Some(r) if position < r => self
                    .log
                    .deliveries_between(position, last.min(r))
                    .await?
                    .into_iter()
                    .map(|d| ((d.target.endpoint_id.clone(), d.target.event_id), d))
                    .collect(),
                _ => HashMap::new(),
            };
            if recover_upto.is_some_and(|r| last >= r) {
                recover_upto = None;
            }
            let mut st = self.lock()?;
            for e in &batch {
                for ep in self.endpoints.iter().filter(|ep| ep.wants(e)) {
                    let mut pending = Pending {
                        target: DeliveryTarget {
                            endpoint_id: ep.id.clone(),
                            merchant_id: ep.merchant_id.clone(),
                            event_id: e.event_id,
                            stream_id: e.stream_id.to_string(),
                            event_type: e.event_type.clone(),
                            position: e.global_position.0,
                        },
                        attempts: 0,
                        first_attempt_at: None,
                        next_attempt: None,
                    };
                    if let Some(d) = known.get(&(ep.id.clone(), e.event_id)) {
                        if d.state.is_settled() {
                            continue;
                        }
                        pending.attempts = d.attempt_count;
                        pending.first_attempt_at = Some(d.first_attempt_at);
                        pending.next_attempt = d.next_attempt_at;
                    }
                    st.queues
                        .entry((ep.id.clone(), e.stream_id.clone()))
                        .or_default()
                        .push_back(pending);
                    report.enqueued += 1;
                }
            }
            position = last;
            st.read_to = position;
            st.recover_upto = recover_upto;
            st.loaded = true;
        }
        let mut st = self.lock()?;
        st.read_to = position;
        st.recover_upto = recover_upto;
        st.loaded = true;
        Ok(())
    }

    /// Sends the queued manual redeliveries of this dispatcher's endpoints.
    async fn redeliver_queued(&self, report: &mut PassReport) -> Result<(), WebhookError> {
        let queued = self.log.queued_redeliveries(REDELIVERIES_PER_PASS).await?;
        for d in queued {
            let Some(ep) = self.endpoints.iter().find(|e| e.id == d.target.endpoint_id) else {
                continue;
            };
            let attempt = self.attempt(ep, &d.target).await?;
            report.redelivered += 1;
            let state = if attempt.ok() {
                DeliveryState::Delivered
            } else {
                d.state
            };
            self.log
                .record_attempt(&attempt.write(
                    &d.target,
                    state,
                    None,
                    true,
                    d.redelivery_requested_at,
                ))
                .await?;
            tracing::info!(
                endpoint = ep.id.as_str(),
                event_id = %d.target.event_id,
                status = attempt.status,
                "webhook redelivered"
            );
        }
        Ok(())
    }

    async fn attempt(&self, ep: &Endpoint, t: &DeliveryTarget) -> Result<Sent, WebhookError> {
        let at = self.clock.now();
        let body = self.body(t).await?;
        let sig = sign(&ep.secret, at.unix_timestamp(), &body);
        let started = Instant::now();
        let sent = self
            .http
            .post(&ep.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sig)
            .header(EVENT_ID_HEADER, t.event_id.to_string())
            .body(body)
            .send()
            .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(match sent {
            Ok(resp) => Sent {
                at,
                status: Some(resp.status().as_u16()),
                error: None,
                latency_ms,
            },
            Err(e) => Sent {
                at,
                status: None,
                error: Some(if e.is_timeout() {
                    ErrorClass::Timeout
                } else if e.is_connect() {
                    ErrorClass::Connect
                } else {
                    ErrorClass::Other
                }),
                latency_ms,
            },
        })
    }

    /// The delivered body: the stored event as JSON (same fields as a
    /// RabbitMQ subscriber's message).
    async fn body(&self, t: &DeliveryTarget) -> Result<Vec<u8>, WebhookError> {
        let events = self
            .store
            .read_all(Position(t.position.saturating_sub(1)), 1)
            .await?;
        let e = events
            .into_iter()
            .find(|e| e.event_id == t.event_id)
            .ok_or_else(|| StoreError::Corrupt(format!("event {} vanished", t.event_id)))?;
        serde_json::to_vec(&e).map_err(|err| StoreError::Corrupt(err.to_string()).into())
    }
}

/// What one HTTP attempt saw.
struct Sent {
    at: OffsetDateTime,
    status: Option<u16>,
    error: Option<ErrorClass>,
    latency_ms: u64,
}

impl Sent {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn write(
        &self,
        target: &DeliveryTarget,
        state: DeliveryState,
        next_attempt_at: Option<OffsetDateTime>,
        manual: bool,
        answers_request: Option<OffsetDateTime>,
    ) -> AttemptWrite {
        AttemptWrite {
            target: target.clone(),
            at: self.at,
            status: self.status,
            error: self.error,
            latency_ms: self.latency_ms,
            manual,
            state,
            next_attempt_at,
            answers_request,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering() {
        let s = Secret::new("whsec_test");
        let h = sign(&s, 1_700_000_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify(&s, &h, b"{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify(&s, &h, b"{\"a\":2}", 1_700_000_010, 300));
        assert!(!verify(
            &Secret::new("other"),
            &h,
            b"{\"a\":1}",
            1_700_000_010,
            300
        ));
        assert!(!verify(&s, &h, b"{\"a\":1}", 1_700_001_000, 300));
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
