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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use payorch_engine::store::{
    CheckpointStore, Clock, EventStore, Position, RecordedEvent, StoreError, StreamId,
};
use serde::Serialize;
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

/// One HTTP attempt.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Attempt {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// HTTP status, when one came back.
    pub status: Option<u16>,
    /// Timeout or connection error, when no status came back.
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Given up after `give_up_after`; redeliver by hand.
    Failed,
}

/// The log entry of one event to one endpoint.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Delivery {
    pub endpoint_id: String,
    pub event_id: Uuid,
    pub stream_id: String,
    pub position: u64,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: Vec<Attempt>,
    #[serde(skip)]
    next_attempt: Option<OffsetDateTime>,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The event store failed; the pass is retried.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A delivery log lock was poisoned (a bug).
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
}

#[derive(Default)]
struct State {
    /// Per (endpoint, stream): deliveries in stream order, head first.
    queues: BTreeMap<(String, StreamId), VecDeque<Delivery>>,
    /// Settled deliveries per endpoint, oldest first.
    log: BTreeMap<String, Vec<Delivery>>,
    /// Last event read from the log.
    read_to: Position,
    loaded: bool,
}

/// Tails the event log and delivers to the endpoints.
pub struct Dispatcher {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    clock: Arc<dyn Clock>,
    endpoints: Vec<Endpoint>,
    config: DeliveryConfig,
    http: reqwest::Client,
    state: Mutex<State>,
    pass: tokio::sync::Mutex<()>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        clock: Arc<dyn Clock>,
        endpoints: Vec<Endpoint>,
        config: DeliveryConfig,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Dispatcher {
            store,
            checkpoints,
            clock,
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

    /// The delivery log of an endpoint: settled deliveries, then pending.
    pub fn deliveries(&self, endpoint_id: &str) -> Result<Vec<Delivery>, WebhookError> {
        let st = self.lock()?;
        let mut out = st.log.get(endpoint_id).cloned().unwrap_or_default();
        for ((e, _), q) in &st.queues {
            if e == endpoint_id {
                out.extend(q.iter().cloned());
            }
        }
        Ok(out)
    }

    /// Queues `event_id` to `endpoint_id` again (a settled delivery, e.g.
    /// one given up). Returns whether the delivery was found.
    pub fn redeliver(&self, endpoint_id: &str, event_id: Uuid) -> Result<bool, WebhookError> {
        let mut st = self.lock()?;
        let Some(log) = st.log.get_mut(endpoint_id) else {
            return Ok(false);
        };
        let Some(i) = log.iter().position(|d| d.event_id == event_id) else {
            return Ok(false);
        };
        let mut d = log.remove(i);
        d.state = DeliveryState::Pending;
        d.next_attempt = None;
        d.attempts.clear();
        let key = (endpoint_id.to_owned(), StreamId::new(&d.stream_id));
        st.queues.entry(key).or_default().push_front(d);
        Ok(true)
    }

    /// One pass: read new events, then attempt every due delivery (the
    /// head of each (endpoint, stream) queue), then advance the checkpoint
    /// to just before the oldest unsettled event.
    pub async fn run_once(&self) -> Result<PassReport, WebhookError> {
        let _one = self.pass.lock().await;
        let mut report = PassReport::default();
        let from = {
            let st = self.lock()?;
            if st.loaded { Some(st.read_to) } else { None }
        };
        let mut position = match from {
            Some(p) => p,
            None => self
                .checkpoints
                .load_checkpoint(CHECKPOINT)
                .await?
                .unwrap_or(Position::START),
        };
        loop {
            let batch = self.store.read_all(position, self.config.batch).await?;
            let Some(last) = batch.last() else { break };
            position = last.global_position;
            let mut st = self.lock()?;
            for e in &batch {
                for ep in self.endpoints.iter().filter(|ep| ep.wants(e)) {
                    st.queues
                        .entry((ep.id.clone(), e.stream_id.clone()))
                        .or_default()
                        .push_back(Delivery {
                            endpoint_id: ep.id.clone(),
                            event_id: e.event_id,
                            stream_id: e.stream_id.to_string(),
                            position: e.global_position.0,
                            event_type: e.event_type.clone(),
                            state: DeliveryState::Pending,
                            attempts: Vec::new(),
                            next_attempt: None,
                        });
                    report.enqueued += 1;
                }
            }
            st.read_to = position;
            st.loaded = true;
        }
        {
            let mut st = self.lock()?;
            st.read_to = position;
            st.loaded = true;
        }

        // Due heads.
        let now = self.clock.now();
        let due: Vec<(String, StreamId, Delivery)> = {
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
            let attempt = self.attempt(ep, &d).await?;
            report.attempted += 1;
            let ok = attempt.status.is_some_and(|s| (200..300).contains(&s));
            let mut st = self.lock()?;
            let key = (ep_id.clone(), stream);
            let Some(q) = st.queues.get_mut(&key) else {
                continue;
            };
            let Some(head) = q.front_mut() else { continue };
            head.attempts.push(attempt);
            let first = head.attempts.first().map(|a| a.at).unwrap_or(now);
            let settled = if ok {
                head.state = DeliveryState::Delivered;
                report.delivered += 1;
                true
            } else if now - first >= self.config.give_up_after {
                head.state = DeliveryState::Failed;
                report.failed += 1;
                tracing::warn!(
                    endpoint = ep_id.as_str(),
                    event_id = %head.event_id,
                    attempts = head.attempts.len(),
                    "webhook delivery given up"
                );
                true
            } else {
                let n = head.attempts.len().saturating_sub(1).min(30) as u32;
                let wait = self
                    .config
                    .initial_backoff
                    .saturating_mul(2u32.saturating_pow(n))
                    .min(self.config.max_backoff);
                head.next_attempt = Some(now + wait);
                false
            };
            if settled && let Some(done) = q.pop_front() {
                if q.is_empty() {
                    st.queues.remove(&key);
                }
                st.log.entry(ep_id).or_default().push(done);
            }
        }

        // Checkpoint: before the oldest unsettled delivery, else the read end.
        let safe = {
            let st = self.lock()?;
            st.queues
                .values()
                .filter_map(|q| q.front().map(|d| d.position))
                .min()
                .map(|p| Position(p.saturating_sub(1)))
                .unwrap_or(st.read_to)
        };
        self.checkpoints.save_checkpoint(CHECKPOINT, safe).await?;
        Ok(report)
    }

    async fn attempt(&self, ep: &Endpoint, d: &Delivery) -> Result<Attempt, WebhookError> {
        let at = self.clock.now();
        let body = self.body(d).await?;
        let sig = sign(&ep.secret, at.unix_timestamp(), &body);
        let started = Instant::now();
        let sent = self
            .http
            .post(&ep.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sig)
            .header(EVENT_ID_HEADER, d.event_id.to_string())
            .body(body)
            .send()
            .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(match sent {
            Ok(resp) => Attempt {
                at,
                status: Some(resp.status().as_u16()),
                error: None,
                latency_ms,
            },
            Err(e) => Attempt {
                at,
                status: None,
                error: Some(if e.is_timeout() {
                    "timeout".to_owned()
                } else if e.is_connect() {
                    "connection failed".to_owned()
                } else {
                    "request failed".to_owned()
                }),
                latency_ms,
            },
        })
    }

    /// The delivered body: the stored event as JSON (same fields as a
    /// RabbitMQ subscriber's message).
    async fn body(&self, d: &Delivery) -> Result<Vec<u8>, WebhookError> {
        let events = self
            .store
            .read_all(Position(d.position.saturating_sub(1)), 1)
            .await?;
        let e = events
            .into_iter()
            .find(|e| e.event_id == d.event_id)
            .ok_or_else(|| StoreError::Corrupt(format!("event {} vanished", d.event_id)))?;
        serde_json::to_vec(&e).map_err(|err| StoreError::Corrupt(err.to_string()).into())
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
