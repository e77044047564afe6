//! Deliveries to a real HTTP receiver that fails, times out and recovers:
//! signed, retried with backoff (a manual clock moves time), in order per
//! stream, logged per endpoint, and the checkpoint never passes an
//! unsettled event.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{
    AppendRequest, CheckpointStore, Clock, EventStore, ExpectedVersion, NewEvent, Position,
    StreamId,
};
use payorch_engine::testing::ManualClock;
use payorch_engine::webhook_out::{
    Delivery, DeliveryQuery, ErrorClass, InMemoryDeliveryLog, RedeliveryRequest, WebhookDeliveryLog,
};
use payorch_schemas::events::EventMetadata;
use payorch_webhooks::{
    CHECKPOINT, DeliveryConfig, DeliveryState, Dispatcher, EVENT_ID_HEADER, Endpoint,
    SIGNATURE_HEADER, Secret, verify,
};
use serde_json::value::RawValue;
use uuid::Uuid;

const SECRET: &str = "whsec_test_0123";

#[derive(Clone, Copy, Debug)]
enum Plan {
    Fail,
    Hang,
    Ok,
}

#[derive(Default)]
struct Receiver {
    plan: Mutex<VecDeque<Plan>>,
    /// (event id, signature valid) of every request, in arrival order.
    seen: Mutex<Vec<(String, bool, Plan)>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let plan = r.plan.lock().unwrap().pop_front().unwrap_or(Plan::Ok);
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // The dispatcher signs with its (manual) clock: a wide tolerance.
    let valid = verify(&Secret::new(SECRET), sig, &body, now, 10 * 365 * 24 * 3600);
    let id = headers
        .get(EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    r.seen.lock().unwrap().push((id, valid, plan));
    match plan {
        Plan::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Plan::Hang => {
            // Slower than the dispatcher's timeout: the attempt times out.
            tokio::time::sleep(Duration::from_secs(3)).await;
            StatusCode::OK
        }
        Plan::Ok => StatusCode::OK,
    }
}

async fn append(
    store: &InMemoryStore,
    stream: &str,
    n: u64,
    merchant: &str,
    at: time::OffsetDateTime,
) -> Uuid {
    let id = Uuid::now_v7();
    store
        .append(AppendRequest {
            stream_id: StreamId::new(stream),
            stream_type: "order".into(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                event_id: id,
                event_type: format!("step_{n}"),
                schema_version: 1,
                payload: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
                metadata: EventMetadata {
                    merchant_id: Some(merchant.into()),
                    ..EventMetadata::default()
                },
                recorded_at: at,
            }],
            idempotency: None,
        })
        .await
        .expect("append");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_times_out_recovers_in_order_and_logs_every_attempt() {
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let store = Arc::new(InMemoryStore::default());
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let now = clock.now();
    // Stream A: two events; stream B: one; another merchant's event.
    let a1 = append(&store, "order-a", 1, "m1", now).await;
    let a2 = append(&store, "order-a", 2, "m1", now).await;
    let b1 = append(&store, "order-b", 1, "m1", now).await;
    append(&store, "order-c", 1, "m2", now).await;

    // Stream A's first event: 500, then a timeout, then accepted. Stream
    // B's event is independent and goes through at once.
    *receiver.plan.lock().unwrap() = VecDeque::from([Plan::Fail, Plan::Ok]);
    let endpoint = Endpoint {
        id: "ep1".into(),
        merchant_id: "m1".into(),
        url,
        secret: Secret::new(SECRET),
        events: vec!["order.*".into()],
    };
    let config = DeliveryConfig {
        timeout: Duration::from_millis(500),
        initial_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(60),
        give_up_after: Duration::from_secs(24 * 3600),
        batch: 2,
    };
    let log = Arc::new(InMemoryDeliveryLog::new());
    let d = Dispatcher::new(
        store.clone(),
        store.clone(),
        clock.clone(),
        log.clone(),
        vec![endpoint],
        config,
    )
    .expect("client");

    // Pass 1: a1 fails (500), b1 is delivered; a2 waits behind a1.
    let r = d.run_once().await.unwrap();
    assert_eq!(r.enqueued, 3, "the other merchant's event is not for ep1");
    assert_eq!(r.attempted, 2);
    assert_eq!(r.delivered, 1);
    let cp = store.load_checkpoint(CHECKPOINT).await.unwrap().unwrap();
    assert!(
        cp < Position(3),
        "checkpoint {cp:?} passed the unsettled a1"
    );

    // Not due yet: nothing is attempted.
    let r = d.run_once().await.unwrap();
    assert_eq!(r.attempted, 0);

    // Backoff elapsed: a1 now hangs past the timeout.
    *receiver.plan.lock().unwrap() = VecDeque::from([Plan::Hang]);
    clock.advance(Duration::from_secs(10));
    let r = d.run_once().await.unwrap();
    assert_eq!((r.attempted, r.delivered), (1, 0));
    // The next wait doubled: 10 s is not enough, 20 s is.
    clock.advance(Duration::from_secs(10));
    assert_eq!(d.run_once().await.unwrap().attempted, 0);
    clock.advance(Duration::from_secs(10));
    let r = d.run_once().await.unwrap();
    assert_eq!((r.attempted, r.delivered), (1, 1), "a1 recovers");
    // a2 follows a1.
    let r = d.run_once().await.unwrap();
    assert_eq!((r.attempted, r.delivered), (1, 1));
    let cp = store.load_checkpoint(CHECKPOINT).await.unwrap().unwrap();
    assert_eq!(cp, Position(4), "everything settled: checkpoint at the end");

    // What the receiver saw: all signed, a1 three times, a2 after a1's success.
    let seen = receiver.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(_, valid, _)| *valid), "{seen:?}");
    let ids: Vec<String> = seen.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(ids.iter().filter(|i| **i == a1.to_string()).count(), 3);
    let last_a1 = ids.iter().rposition(|i| *i == a1.to_string()).unwrap();
    let first_a2 = ids.iter().position(|i| *i == a2.to_string()).unwrap();
    assert!(first_a2 > last_a1, "a2 before a1 was delivered: {ids:?}");
    assert!(ids.contains(&b1.to_string()));

    // The log: attempts with status / timeout and latency.
    let page = log.list(&DeliveryQuery::new("ep1", 10)).await.unwrap();
    assert_eq!(page.deliveries.len(), 3);
    let a1_log = page
        .deliveries
        .iter()
        .find(|x| x.target.event_id == a1)
        .unwrap();
    assert_eq!(a1_log.state, DeliveryState::Delivered);
    let statuses: Vec<Option<u16>> = a1_log.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![Some(500), None, Some(200)]);
    assert_eq!(a1_log.attempts[1].error, Some(ErrorClass::Timeout));
    assert!(
        a1_log.attempts[1].latency_ms >= 400,
        "{:?}",
        a1_log.attempts[1]
    );

    // Redelivery by hand sends it once more, newly signed, logged as manual.
    let queued = log
        .request_redelivery("ep1", b1, clock.now())
        .await
        .unwrap();
    assert!(matches!(queued, RedeliveryRequest::Queued(_)), "{queued:?}");
    let r = d.run_once().await.unwrap();
    assert_eq!((r.attempted, r.redelivered), (0, 1));
    let b1_log = log.delivery("ep1", b1).await.unwrap().unwrap();
    assert_eq!(b1_log.attempts.len(), 2);
    assert!(b1_log.attempts[1].manual && b1_log.redelivery_requested_at.is_none());
    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.last().map(|s| s.0.clone()), Some(b1.to_string()));
    assert!(seen.last().is_some_and(|s| s.1), "redelivery signed");
    assert_eq!(d.run_once().await.unwrap().redelivered, 0, "sent once");
    assert_eq!(
        log.request_redelivery("ep1", Uuid::now_v7(), clock.now())
            .await
            .unwrap(),
        RedeliveryRequest::NotFound
    );
}

/// A dispatcher restarted mid-retry (a new one over the same store and
/// log) keeps the attempt count and backoff of the delivery it was
/// retrying, does not resend what was delivered, and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_retry_keeps_the_log_and_completes() {
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let store = Arc::new(InMemoryStore::default());
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let log = Arc::new(InMemoryDeliveryLog::new());
    let a1 = append(&store, "order-a", 1, "m1", clock.now()).await;
    let b1 = append(&store, "order-b", 1, "m1", clock.now()).await;
    let endpoint = Endpoint {
        id: "ep1".into(),
        merchant_id: "m1".into(),
        url,
        secret: Secret::new(SECRET),
        events: vec![],
    };
    let config = DeliveryConfig {
        timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(600),
        give_up_after: Duration::from_secs(24 * 3600),
        batch: 10,
    };
    let dispatcher = || {
        Dispatcher::new(
            store.clone(),
            store.clone(),
            clock.clone(),
            log.clone(),
            vec![endpoint.clone()],
            config.clone(),
        )
        .expect("client")
    };
    // a1 fails twice (backoff now 20 s), b1 is delivered.
    *receiver.plan.lock().unwrap() = VecDeque::from([Plan::Fail, Plan::Ok]);
    let first = dispatcher();
    first.run_once().await.unwrap();
    *receiver.plan.lock().unwrap() = VecDeque::from([Plan::Fail]);
    clock.advance(Duration::from_secs(10));
    assert_eq!(first.run_once().await.unwrap().attempted, 1);
    drop(first);

    // Restart: b1 is not sent again; a1 waits out its 20 s backoff.
    let second = dispatcher();
    let r = second.run_once().await.unwrap();
    assert_eq!(r.attempted, 0, "nothing due, nothing resent: {r:?}");
    clock.advance(Duration::from_secs(10));
    assert_eq!(second.run_once().await.unwrap().attempted, 0);
    clock.advance(Duration::from_secs(10));
    let r = second.run_once().await.unwrap();
    assert_eq!((r.attempted, r.delivered), (1, 1));
    let d: Delivery = log.delivery("ep1", a1).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Delivered);
    let statuses: Vec<Option<u16>> = d.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![Some(500), Some(500), Some(200)]);
    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|s| s.0 == b1.to_string()).count(),
        1,
        "b1 delivered once: {seen:?}"
    );
    assert_eq!(
        store.load_checkpoint(CHECKPOINT).await.unwrap(),
        Some(Position(2))
    );
}

#[tokio::test]
async fn a_delivery_is_given_up_after_a_day_and_the_checkpoint_moves_on() {
    let store = Arc::new(InMemoryStore::default());
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let e1 = append(&store, "order-x", 1, "m1", clock.now()).await;
    // Nothing listens on this port: every attempt is a connection error.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    let endpoint = Endpoint {
        id: "ep".into(),
        merchant_id: "m1".into(),
        url,
        secret: Secret::new(SECRET),
        events: vec![],
    };
    let config = DeliveryConfig {
        initial_backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(6 * 3600),
        ..DeliveryConfig::default()
    };
    let log = Arc::new(InMemoryDeliveryLog::new());
    let d = Dispatcher::new(
        store.clone(),
        store.clone(),
        clock.clone(),
        log.clone(),
        vec![endpoint],
        config,
    )
    .expect("client");
    let mut attempts = 0;
    for _ in 0..20 {
        let r = d.run_once().await.unwrap();
        attempts += r.attempted;
        if r.failed == 1 {
            break;
        }
        clock.advance(Duration::from_secs(6 * 3600));
    }
    let page = log.list(&DeliveryQuery::new("ep", 10)).await.unwrap();
    let entry = &page.deliveries[0];
    assert_eq!(entry.target.event_id, e1);
    assert_eq!(entry.state, DeliveryState::GivenUp);
    assert!(
        entry
            .attempts
            .iter()
            .all(|a| a.error == Some(ErrorClass::Connect) && a.status.is_none())
    );
    assert!(
        (5..=7).contains(&attempts),
        "{attempts} attempts over a day"
    );
    assert_eq!(
        store.load_checkpoint(CHECKPOINT).await.unwrap(),
        Some(Position(1))
    );
}
