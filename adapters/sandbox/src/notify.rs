//! Notification delivery (endpoints.md §13–§14, flows.md §9): every status
//! change is POSTed, signed with the platform key, to the `notify_url`
//! until acknowledged (HTTP 200 with `ret_code` `000000`), with exponential
//! backoff, at most `NotifyConfig::max_attempts` times.
//!
//! Faults (duplicate, reorder, delay, drop) are decided when a notification
//! is queued, from one generator seeded by `FaultConfig::seed`, so the same
//! sequence of notifications gets the same faults. Like PayKKa, which
//! notifies many merchants' orders at once, deliveries run in parallel
//! lanes ([`NotifyConfig::lanes`]); each payment's notifications (its
//! refunds' included: the lane is chosen by `trans_id`) share one lane, where
//! first attempts go out one at a time in queue order (so "reordered" means
//! exactly what the fault decided for that payment). Retries run in the
//! background.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{FaultConfig, NotifyConfig};
use crate::crypto::PlatformKey;
use crate::ops::Outgoing;

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Not acknowledged yet (attempts may still follow).
    Pending,
    /// The receiver answered HTTP 200 with `ret_code` `000000`.
    Acknowledged,
    /// Every attempt failed.
    GaveUp,
    /// The drop fault ate it; never sent.
    Dropped,
}

/// One queued notification (a duplicate is its own record).
#[derive(Debug, Clone)]
pub struct NotificationRecord {
    /// Queue order, from 1.
    pub seq: u64,
    pub url: String,
    /// `PAYMENT.SUCCESS`, `REFUND.FAILURE`, ...
    pub notify_type: String,
    /// `order_id` of a payment notification, `refund_order_id` of a refund one.
    pub subject_id: String,
    /// The exact body bytes sent (UTF-8 JSON).
    pub body: String,
    /// The `signature` header sent (percent-encoded base64).
    pub signature: String,
    pub attempts: u32,
    pub outcome: DeliveryOutcome,
    /// Set on the second copy made by the duplicate fault.
    pub duplicate_of: Option<u64>,
    pub delayed: bool,
    pub reordered: bool,
}

/// SplitMix64: tiny, seedable, good enough for fault dice.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[derive(Debug)]
struct Job {
    seq: u64,
    /// Picks the delivery lane: the payment's `trans_id` (its order id when
    /// absent), so one payment's notifications keep their queue order.
    lane_key: String,
    url: String,
    body: Bytes,
    signature: String,
    delay: Duration,
    hold: bool,
}

pub(crate) struct Notifier {
    tx: mpsc::UnboundedSender<Job>,
    records: Arc<Mutex<Vec<NotificationRecord>>>,
    rng: Mutex<Rng>,
    faults: FaultConfig,
    /// Checkout sessions whose payment notifications are dropped (see
    /// [`Notifier::drop_session`]).
    dropped_sessions: Mutex<HashSet<String>>,
    key: PlatformKey,
    task: Mutex<Option<JoinHandle<()>>>,
    /// `NotifyConfig::delay`.
    base_delay: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Notifier {
    pub(crate) fn start(
        key: PlatformKey,
        faults: FaultConfig,
        config: NotifyConfig,
        client: reqwest::Client,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let base_delay = config.delay;
        let records = Arc::new(Mutex::new(Vec::new()));
        let delivery = Delivery {
            client,
            config,
            records: records.clone(),
        };
        let task = tokio::spawn(dispatch(rx, delivery, faults.reorder_hold));
        Arc::new(Notifier {
            tx,
            records,
            rng: Mutex::new(Rng::new(faults.seed)),
            faults,
            dropped_sessions: Mutex::new(HashSet::new()),
            key,
            task: Mutex::new(Some(task)),
            base_delay,
        })
    }

    pub(crate) fn records(&self) -> Vec<NotificationRecord> {
        lock(&self.records).clone()
    }

    /// Every later payment notification carrying this `session_id` is
    /// dropped (recorded as [`DeliveryOutcome::Dropped`], never sent).
    pub(crate) fn drop_session(&self, session_id: &str) {
        lock(&self.dropped_sessions).insert(session_id.to_owned());
    }

    pub(crate) fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    /// Serializes, signs and queues one notification, applying faults;
    /// its first attempt waits `NotifyConfig::delay` + `hold` (+ the delay
    /// fault).
    pub(crate) fn send(&self, outgoing: Outgoing, hold_for: Duration) {
        let targeted = match &outgoing {
            Outgoing::Payment { body, .. } => body
                .session_id
                .as_ref()
                .is_some_and(|s| lock(&self.dropped_sessions).contains(s)),
            Outgoing::Refund { .. } => false,
        };
        let lane_key = match &outgoing {
            Outgoing::Payment { body, .. } => body.trans_id.clone().or(body.order_id.clone()),
            Outgoing::Refund { body, .. } => body.trans_id.clone().or(body.refund_order_id.clone()),
        }
        .unwrap_or_default();
        let (url, body, merchant_id, timestamp, notify_type, subject_id) = match outgoing {
            Outgoing::Payment { url, body } => (
                url,
                serde_json::to_vec(&body),
                body.merchant_id.clone().unwrap_or_default(),
                body.timestamp.unwrap_or_default(),
                body.notify_type
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                body.order_id.clone().unwrap_or_default(),
            ),
            Outgoing::Refund { url, body } => (
                url,
                serde_json::to_vec(&body),
                body.merchant_id.clone().unwrap_or_default(),
                body.timestamp.unwrap_or_default(),
                body.notify_type
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                body.refund_order_id.clone().unwrap_or_default(),
            ),
        };
        let Ok(body) = body else {
            tracing::error!("cannot serialize a notification body");
            return;
        };
        let signature = self.key.sign_header(&merchant_id, timestamp, &body);
        let (dropped, duplicate, delay, hold) = {
            let mut rng = lock(&self.rng);
            let f = &self.faults;
            // Always roll all four dice so one fault does not shift the
            // others' sequence.
            (
                rng.chance(f.notify_drop),
                rng.chance(f.notify_duplicate),
                rng.chance(f.notify_delay_probability),
                rng.chance(f.notify_reorder),
            )
        };
        // Rolled above either way: a targeted drop does not shift the dice.
        let dropped = dropped || targeted;
        let body = Bytes::from(body);
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut records = lock(&self.records);
        let seq = records.len() as u64 + 1;
        records.push(NotificationRecord {
            seq,
            url: url.clone(),
            notify_type: notify_type.clone(),
            subject_id: subject_id.clone(),
            body: text.clone(),
            signature: signature.clone(),
            attempts: 0,
            outcome: if dropped {
                DeliveryOutcome::Dropped
            } else {
                DeliveryOutcome::Pending
            },
            duplicate_of: None,
            delayed: delay && !dropped,
            reordered: hold && !dropped,
        });
        if dropped {
            return;
        }
        let delay = if delay {
            self.faults.notify_delay
        } else {
            Duration::ZERO
        } + self.base_delay
            + hold_for;
        let mut jobs = vec![Job {
            seq,
            lane_key: lane_key.clone(),
            url: url.clone(),
            body: body.clone(),
            signature: signature.clone(),
            delay,
            hold,
        }];
        if duplicate {
            let dup_seq = seq + 1;
            records.push(NotificationRecord {
                seq: dup_seq,
                url: url.clone(),
                notify_type,
                subject_id,
                body: text,
                signature: signature.clone(),
                attempts: 0,
                outcome: DeliveryOutcome::Pending,
                duplicate_of: Some(seq),
                delayed: false,
                reordered: false,
            });
            jobs.push(Job {
                seq: dup_seq,
                lane_key,
                url,
                body,
                signature,
                delay: self.base_delay + hold_for,
                hold: false,
            });
        }
        drop(records);
        for job in jobs {
            if self.tx.send(job).is_err() {
                tracing::warn!("notification dispatcher stopped; notification not sent");
            }
        }
    }
}

#[derive(Clone)]
struct Delivery {
    client: reqwest::Client,
    config: NotifyConfig,
    records: Arc<Mutex<Vec<NotificationRecord>>>,
}

impl Delivery {
    fn set(&self, seq: u64, f: impl FnOnce(&mut NotificationRecord)) {
        let mut records = lock(&self.records);
        if let Some(r) = seq.checked_sub(1).and_then(|i| records.get_mut(i as usize)) {
            f(r);
        }
    }

    async fn attempt(&self, job: &Job) -> bool {
        self.set(job.seq, |r| r.attempts += 1);
        let result = self
            .client
            .post(&job.url)
            .header("content-type", "application/json")
            .header("signature", &job.signature)
            .header("type", "RSA256")
            .header("version", "v1.2")
            .timeout(self.config.attempt_timeout)
            .body(job.body.clone())
            .send()
            .await;
        let acked = match result {
            Ok(resp) if resp.status() == reqwest::StatusCode::OK => match resp.bytes().await {
                Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                    .ok()
                    .and_then(|v| {
                        v.get("ret_code")
                            .and_then(|c| c.as_str())
                            .map(|c| c == "000000")
                    })
                    .unwrap_or(false),
                Err(_) => false,
            },
            _ => false,
        };
        if acked {
            self.set(job.seq, |r| r.outcome = DeliveryOutcome::Acknowledged);
        }
        acked
    }

    fn backoff(&self, failed_attempts: u32) -> Duration {
        let factor = 1u32 << failed_attempts.saturating_sub(1).min(16);
        self.config
            .initial_backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff)
    }

    /// Retries after a failed first attempt, in the background.
    async fn retry_loop(self, job: Job, mut done: u32) {
        while done < self.config.max_attempts {
            tokio::time::sleep(self.backoff(done)).await;
            if self.attempt(&job).await {
                return;
            }
            done += 1;
        }
        self.set(job.seq, |r| r.outcome = DeliveryOutcome::GaveUp);
    }

    /// First attempt inline (keeps queue order), retries in the background.
    async fn deliver(&self, job: Job) {
        if !job.delay.is_zero() {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(job.delay).await;
                if !me.attempt(&job).await {
                    me.retry_loop(job, 1).await;
                }
            });
            return;
        }
        if self.attempt(&job).await {
            return;
        }
        if self.config.max_attempts <= 1 {
            self.set(job.seq, |r| r.outcome = DeliveryOutcome::GaveUp);
            return;
        }
        tokio::spawn(self.clone().retry_loop(job, 1));
    }
}

/// Receives queued notifications, applies the reorder hold, and hands each
/// to its lane.
async fn dispatch(mut rx: mpsc::UnboundedReceiver<Job>, delivery: Delivery, hold_for: Duration) {
    let lanes: Vec<mpsc::UnboundedSender<Job>> = (0..delivery.config.lanes.max(1))
        .map(|_| {
            let (tx, mut lane_rx) = mpsc::unbounded_channel::<Job>();
            let delivery = delivery.clone();
            tokio::spawn(async move {
                while let Some(job) = lane_rx.recv().await {
                    delivery.deliver(job).await;
                }
            });
            tx
        })
        .collect();
    let to_lane = |job: Job| {
        let lane = &lanes[lane_of(&job.lane_key, lanes.len())];
        if lane.send(job).is_err() {
            tracing::warn!("notification lane stopped; notification not sent");
        }
    };
    let mut held: Option<Job> = None;
    loop {
        let next = if held.is_some() {
            // None: the hold expired.
            tokio::time::timeout(hold_for, rx.recv()).await.ok()
        } else {
            Some(rx.recv().await)
        };
        match next {
            Some(Some(job)) => {
                if job.hold && held.is_none() {
                    held = Some(job);
                    continue;
                }
                to_lane(job);
                if let Some(h) = held.take() {
                    to_lane(h);
                }
            }
            Some(None) => {
                if let Some(h) = held.take() {
                    to_lane(h);
                }
                return;
            }
            None => {
                if let Some(h) = held.take() {
                    to_lane(h);
                }
            }
        }
    }
}

/// The lane of a key: FNV-1a, stable across runs (no random hasher seed),
/// so a seeded run delivers in the same lanes every time.
fn lane_of(key: &str, lanes: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % lanes as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_respects_bounds() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<bool> = (0..64).map(|_| a.chance(0.5)).collect();
        let ys: Vec<bool> = (0..64).map(|_| b.chance(0.5)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().any(|x| *x) && xs.iter().any(|x| !*x));
        assert!(!Rng::new(1).chance(0.0));
        assert!(Rng::new(1).chance(1.0));
    }

    #[test]
    fn a_payment_always_gets_the_same_lane_and_payments_spread() {
        assert_eq!(lane_of("T1", 16), lane_of("T1", 16));
        let used: HashSet<usize> = (0..200).map(|i| lane_of(&format!("T{i}"), 16)).collect();
        assert_eq!(
            used.len(),
            16,
            "200 payments should reach every one of 16 lanes"
        );
        assert_eq!(lane_of("anything", 1), 0);
    }
}
