//! Conformance cases for [`WebhookDeliveryLog`] implementations (feature
//! `testkit`). Each case takes a fresh, **empty** log and panics with a
//! message naming the broken promise.
//!
//! [`delivery_log_conformance_tests!`](crate::delivery_log_conformance_tests)
//! expands to one `#[tokio::test]` per case, calling an async factory that
//! returns `Option<impl LogFixture>` (`None` = skip):
//!
//! ```ignore
//! async fn log() -> Option<std::sync::Arc<InMemoryDeliveryLog>> {
//!     Some(std::sync::Arc::new(InMemoryDeliveryLog::new()))
//! }
//! payorch_engine::delivery_log_conformance_tests!(log);
//! ```

use std::future::Future;
use std::sync::Arc;

use uuid::Uuid;

use super::*;
use crate::store::testkit::test_instant;

/// What a factory hands to a case: an empty log plus whatever must be
/// cleaned up afterwards.
pub trait LogFixture: Send + 'static {
    type Log: WebhookDeliveryLog + 'static;
    fn log(&self) -> Arc<Self::Log>;
    /// Called after a case that passed.
    fn teardown(self) -> impl Future<Output = ()> + Send;
}

impl<L: WebhookDeliveryLog + 'static> LogFixture for Arc<L> {
    type Log = L;
    fn log(&self) -> Arc<L> {
        Arc::clone(self)
    }
    async fn teardown(self) {}
}

fn target(endpoint: &str, position: u64) -> DeliveryTarget {
    DeliveryTarget {
        endpoint_id: endpoint.to_owned(),
        merchant_id: "m1".to_owned(),
        event_id: Uuid::now_v7(),
        stream_id: format!("order-{}", position % 3),
        event_type: "captured".to_owned(),
        position,
    }
}

fn write(
    t: &DeliveryTarget,
    at_ms: i64,
    status: Option<u16>,
    error: Option<ErrorClass>,
    state: DeliveryState,
) -> AttemptWrite {
    AttemptWrite {
        target: t.clone(),
        at: test_instant(at_ms),
        status,
        error,
        latency_ms: u64::try_from(at_ms / 1000).unwrap_or(0),
        manual: false,
        state,
        next_attempt_at: (state == DeliveryState::FailedRetrying)
            .then(|| test_instant(at_ms + 10_000)),
        answers_request: None,
    }
}

async fn record<L: WebhookDeliveryLog + ?Sized>(log: &L, w: &AttemptWrite) -> u32 {
    match log.record_attempt(w).await {
        Ok(n) => n,
        Err(e) => panic!("record_attempt failed: {e}"),
    }
}

async fn get<L: WebhookDeliveryLog + ?Sized>(log: &L, t: &DeliveryTarget) -> Delivery {
    match log.delivery(&t.endpoint_id, t.event_id).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("delivery {} to {} not found", t.event_id, t.endpoint_id),
        Err(e) => panic!("delivery failed: {e}"),
    }
}

async fn page<L: WebhookDeliveryLog + ?Sized>(log: &L, q: &DeliveryQuery) -> DeliveryPage {
    match log.list(q).await {
        Ok(p) => p,
        Err(e) => panic!("list {q:?} failed: {e}"),
    }
}

fn positions(p: &DeliveryPage) -> Vec<u64> {
    p.deliveries.iter().map(|d| d.target.position).collect()
}

/// Every attempt is kept with its number, time, status or error class and
/// latency; the delivery keeps the state and next attempt time of the last
/// write, its first and last attempt times and its target.
pub async fn attempts_round_trip<L: WebhookDeliveryLog>(log: Arc<L>) {
    let t = target("ep1", 7);
    assert!(
        log.delivery("ep1", t.event_id)
            .await
            .ok()
            .flatten()
            .is_none(),
        "an unattempted delivery must not exist"
    );
    let fail = write(&t, 1_000, Some(500), None, DeliveryState::FailedRetrying);
    assert_eq!(record(&*log, &fail).await, 1, "first attempt is number 1");
    let d = get(&*log, &t).await;
    assert_eq!(d.state, DeliveryState::FailedRetrying);
    assert_eq!(d.next_attempt_at, Some(test_instant(11_000)));
    let timeout = write(
        &t,
        11_000,
        None,
        Some(ErrorClass::Timeout),
        DeliveryState::FailedRetrying,
    );
    assert_eq!(record(&*log, &timeout).await, 2);
    let ok = write(&t, 31_000, Some(200), None, DeliveryState::Delivered);
    assert_eq!(record(&*log, &ok).await, 3);

    let d = get(&*log, &t).await;
    assert_eq!(d.target, t, "the target round-trips");
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(d.attempt_count, 3);
    assert_eq!(
        d.next_attempt_at, None,
        "a delivered delivery has no next attempt"
    );
    assert_eq!(d.first_attempt_at, test_instant(1_000));
    assert_eq!(d.last_attempt_at, test_instant(31_000));
    assert_eq!(d.redelivery_requested_at, None);
    type Row = (u32, Option<u16>, Option<ErrorClass>, u64, bool);
    let got: Vec<Row> = d
        .attempts
        .iter()
        .map(|a| (a.number, a.status, a.error, a.latency_ms, a.manual))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some(500), None, 1, false),
            (2, None, Some(ErrorClass::Timeout), 11, false),
            (3, Some(200), None, 31, false),
        ],
        "attempts, oldest first"
    );
    assert_eq!(d.attempts[1].at, test_instant(11_000));
    // Another endpoint, same event: a delivery of its own.
    let other = DeliveryTarget {
        endpoint_id: "ep2".into(),
        ..t.clone()
    };
    assert_eq!(
        record(
            &*log,
            &write(
                &other,
                2_000,
                None,
                Some(ErrorClass::Connect),
                DeliveryState::GivenUp
            )
        )
        .await,
        1,
        "numbers count per (endpoint, event)"
    );
    let o = get(&*log, &other).await;
    assert_eq!((o.state, o.attempt_count), (DeliveryState::GivenUp, 1));
    assert_eq!(o.attempts[0].error, Some(ErrorClass::Connect));
    assert_eq!(
        get(&*log, &t).await.attempt_count,
        3,
        "endpoints kept apart"
    );
}

/// Pages run newest event first through `starting_after`; filters by state
/// and event id; other endpoints never show; an unknown cursor is an error.
pub async fn list_pages_and_filters<L: WebhookDeliveryLog>(log: Arc<L>) {
    let mut ts = Vec::new();
    for p in 1..=5u64 {
        let t = target("ep1", p * 10);
        let state = if p == 3 {
            DeliveryState::GivenUp
        } else {
            DeliveryState::Delivered
        };
        record(&*log, &write(&t, 1_000, Some(200), None, state)).await;
        ts.push(t);
    }
    let foreign = target("ep2", 60);
    record(
        &*log,
        &write(&foreign, 1_000, Some(200), None, DeliveryState::Delivered),
    )
    .await;

    let mut q = DeliveryQuery::new("ep1", 2);
    let p1 = page(&*log, &q).await;
    assert_eq!(positions(&p1), vec![50, 40]);
    assert!(p1.has_more);
    assert_eq!(
        p1.deliveries[0].attempts.len(),
        1,
        "list items carry attempts"
    );
    q.starting_after = Some(ts[3].event_id);
    let p2 = page(&*log, &q).await;
    assert_eq!(positions(&p2), vec![30, 20]);
    assert!(p2.has_more);
    q.starting_after = Some(ts[1].event_id);
    let p3 = page(&*log, &q).await;
    assert_eq!(positions(&p3), vec![10]);
    assert!(!p3.has_more, "last page");

    let mut by_state = DeliveryQuery::new("ep1", 10);
    by_state.state = Some(DeliveryState::GivenUp);
    assert_eq!(positions(&page(&*log, &by_state).await), vec![30]);
    by_state.state = Some(DeliveryState::FailedRetrying);
    assert!(page(&*log, &by_state).await.deliveries.is_empty());

    let mut by_event = DeliveryQuery::new("ep1", 10);
    by_event.event_id = Some(ts[0].event_id);
    assert_eq!(positions(&page(&*log, &by_event).await), vec![10]);
    by_event.event_id = Some(foreign.event_id);
    assert!(
        page(&*log, &by_event).await.deliveries.is_empty(),
        "another endpoint's delivery never shows"
    );

    let mut bad = DeliveryQuery::new("ep1", 10);
    bad.starting_after = Some(foreign.event_id);
    match log.list(&bad).await {
        Err(DeliveryListError::UnknownCursor(c)) => assert_eq!(c, foreign.event_id),
        other => panic!("a cursor of another endpoint must be UnknownCursor, got {other:?}"),
    }
    let all = page(&*log, &DeliveryQuery::new("ep2", 10)).await;
    assert_eq!(positions(&all), vec![60]);
}

/// Redelivery: unknown is NotFound, a delivery being retried is Busy with
/// its state, a settled one is queued once (asking again keeps the first
/// request); the queue lists it; a manual attempt answering the request
/// clears it, one answering an older request does not.
pub async fn redelivery_queue<L: WebhookDeliveryLog>(log: Arc<L>) {
    let done = target("ep1", 1);
    let retrying = target("ep1", 2);
    record(
        &*log,
        &write(&done, 1_000, Some(200), None, DeliveryState::Delivered),
    )
    .await;
    record(
        &*log,
        &write(
            &retrying,
            1_000,
            Some(503),
            None,
            DeliveryState::FailedRetrying,
        ),
    )
    .await;
    let req = |ep: &'static str, id: Uuid, ms: i64| {
        let log = log.clone();
        async move {
            match log.request_redelivery(ep, id, test_instant(ms)).await {
                Ok(r) => r,
                Err(e) => panic!("request_redelivery failed: {e}"),
            }
        }
    };
    assert_eq!(
        req("ep1", Uuid::now_v7(), 5_000).await,
        RedeliveryRequest::NotFound
    );
    assert_eq!(
        req("ep2", done.event_id, 5_000).await,
        RedeliveryRequest::NotFound,
        "the event was never delivered to ep2"
    );
    assert_eq!(
        req("ep1", retrying.event_id, 5_000).await,
        RedeliveryRequest::Busy(DeliveryState::FailedRetrying)
    );
    match req("ep1", done.event_id, 5_000).await {
        RedeliveryRequest::Queued(d) => {
            assert_eq!(d.redelivery_requested_at, Some(test_instant(5_000)));
            assert_eq!(d.state, DeliveryState::Delivered);
        }
        other => panic!("a delivered delivery must queue, got {other:?}"),
    }
    match req("ep1", done.event_id, 6_000).await {
        RedeliveryRequest::Queued(d) => assert_eq!(
            d.redelivery_requested_at,
            Some(test_instant(5_000)),
            "asking again keeps the queued request"
        ),
        other => panic!("asking again must answer Queued, got {other:?}"),
    }
    let queued = match log.queued_redeliveries(10).await {
        Ok(q) => q,
        Err(e) => panic!("queued_redeliveries failed: {e}"),
    };
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].target, done);
    assert_eq!(queued[0].attempt_count, 1);

    // A manual attempt answering an older request leaves the queued one.
    let mut stale = write(&done, 7_000, Some(200), None, DeliveryState::Delivered);
    stale.manual = true;
    stale.answers_request = Some(test_instant(4_000));
    record(&*log, &stale).await;
    assert_eq!(
        get(&*log, &done).await.redelivery_requested_at,
        Some(test_instant(5_000))
    );
    let mut answer = write(&done, 8_000, Some(200), None, DeliveryState::Delivered);
    answer.manual = true;
    answer.answers_request = Some(test_instant(5_000));
    assert_eq!(record(&*log, &answer).await, 3);
    let d = get(&*log, &done).await;
    assert_eq!(d.redelivery_requested_at, None, "answered: dequeued");
    assert!(d.attempts[2].manual && !d.attempts[0].manual);
    assert!(
        log.queued_redeliveries(10)
            .await
            .map(|q| q.is_empty())
            .unwrap_or(false),
        "the queue is empty"
    );
}

/// `deliveries_between` covers `(after, upto]` over every endpoint;
/// `last_position` is the highest position logged.
pub async fn ranges_and_last_position<L: WebhookDeliveryLog>(log: Arc<L>) {
    assert_eq!(log.last_position().await.ok(), Some(None), "empty log");
    for (ep, p) in [("ep1", 5u64), ("ep2", 5), ("ep1", 9), ("ep1", 12)] {
        record(
            &*log,
            &write(
                &target(ep, p),
                1_000,
                Some(200),
                None,
                DeliveryState::Delivered,
            ),
        )
        .await;
    }
    let got = match log.deliveries_between(Position(5), Position(12)).await {
        Ok(v) => v,
        Err(e) => panic!("deliveries_between failed: {e}"),
    };
    let mut ps: Vec<u64> = got.iter().map(|d| d.target.position).collect();
    ps.sort();
    assert_eq!(ps, vec![9, 12], "(5, 12]");
    let got = log
        .deliveries_between(Position(4), Position(5))
        .await
        .unwrap_or_default();
    assert_eq!(got.len(), 2, "both endpoints at position 5");
    assert!(
        got.iter()
            .all(|d| d.attempts.is_empty() && d.attempt_count == 1)
    );
    assert_eq!(log.last_position().await.ok(), Some(Some(Position(12))));
}

/// Expands to one `#[tokio::test]` per case, in a module
/// `delivery_log_conformance`. The argument names an `async fn() ->
/// Option<impl LogFixture>` visible from the calling module.
#[macro_export]
macro_rules! delivery_log_conformance_tests {
    ($factory:ident) => {
        mod delivery_log_conformance {
            $crate::delivery_log_conformance_tests!(@cases $factory;
                attempts_round_trip,
                list_pages_and_filters,
                redelivery_queue,
                ranges_and_last_position,
            );
        }
    };
    (@cases $factory:ident; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $crate::webhook_out::testkit::LogFixture as _;
                let Some(fx) = super::$factory().await else {
                    eprintln!(concat!("SKIP: delivery log case ", stringify!($case), ": no log"));
                    return;
                };
                $crate::webhook_out::testkit::$case(fx.log()).await;
                fx.teardown().await;
            }
        )*
    };
}
