//! Replay (fold to version / time, explain, projections) and the
//! reconciler's never-fail-what-may-have-succeeded rule.

use std::time::Duration;

use payorch_engine::gateway::GatewayOutcome;
use payorch_engine::gateway::fake::{Op, Step};
use payorch_engine::orchestrator::{OrderAggregate, PlacePaymentRequest, order_stream};
use payorch_engine::order::Phase;
use payorch_engine::reconciler::{Reconciler, ReconcilerConfig};
use payorch_engine::replay::{
    FoldTo, OrderPhases, OrderSummary, ProjectionRunner, StreamState, explain, fold_stream,
    fold_to_time, fold_to_version, verify_all,
};
use payorch_engine::store::{
    AppendRequest, Clock, EventMetadata, EventStore, ExpectedVersion, NewEvent, Version,
};
use payorch_engine::stream::StreamRef;
use payorch_schemas::events::{AuthorisationKind, CaptureMode, OrderId, PaymentKind};
use payorch_schemas::paykka::PaymentRequest;
use payorch_schemas::{Currency, Money};
use uuid::Uuid;

mod common;
use common::{ctx, world};

fn eur(m: i64) -> Money {
    Money::new(m, Currency::EUR)
}

fn payment() -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: eur(1000),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: CaptureMode::Manual,
        payment: PaymentRequest::card("4111111111111111", "07", "2031", "123"),
        store_token: None,
        return_url: None,
        browser: None,
    }
}

#[tokio::test]
async fn fold_to_version_and_time_and_explain() {
    let w = world();
    let order = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    w.clock.advance(Duration::from_secs(60));
    let t_authorised = w.clock.now();
    w.clock.advance(Duration::from_secs(60));
    w.engine
        .capture(&ctx(), order.order_id, None, false)
        .await
        .unwrap();
    let stream = order_stream(order.order_id);

    let at3 = fold_to_version::<OrderAggregate>(w.store.as_ref(), &stream, Version(3))
        .await
        .unwrap();
    assert_eq!((at3.phase(), at3.version()), (Phase::Authorised, 3));
    let then = fold_to_time::<OrderAggregate>(w.store.as_ref(), &stream, t_authorised)
        .await
        .unwrap();
    assert_eq!(then.phase(), Phase::Authorised);
    let now = fold_to_version::<OrderAggregate>(w.store.as_ref(), &stream, Version(99))
        .await
        .unwrap();
    assert_eq!(now.phase(), Phase::Captured);

    let steps = explain(w.store.as_ref(), &stream).await.unwrap();
    let lines: Vec<(String, Phase)> = steps
        .iter()
        .map(|s| (s.event_type.clone(), s.phase_after))
        .collect();
    assert_eq!(
        lines,
        [
            ("payment_placed".to_string(), Phase::AuthorisationPending),
            (
                "authorisation_requested".to_string(),
                Phase::AuthorisationPending
            ),
            ("authorised".to_string(), Phase::Authorised),
            ("capture_requested".to_string(), Phase::Authorised),
            ("captured".to_string(), Phase::Captured),
        ]
    );
    assert_eq!(
        steps[4].order_after.as_ref().map(|v| v.captured),
        Some(eur(1000))
    );
}

#[tokio::test]
async fn projections_resume_from_their_checkpoint_and_rebuild_from_zero() {
    let w = world();
    let runner = ProjectionRunner::new(w.store.as_ref(), w.store.as_ref()).with_batch(2);
    let mut phases = OrderPhases::default();
    let a = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    assert_eq!(runner.run_once(&mut phases).await.unwrap(), 3);
    w.engine
        .capture(&ctx(), a.order_id, None, false)
        .await
        .unwrap();
    assert_eq!(
        runner.run_once(&mut phases).await.unwrap(),
        2,
        "only the new events"
    );
    assert_eq!(
        phases.phase(&order_stream(a.order_id)),
        Some(Phase::Captured)
    );

    let mut fresh = OrderPhases::default();
    assert_eq!(runner.rebuild(&mut fresh).await.unwrap(), 5);
    assert_eq!(fresh.states, phases.states);
}

#[tokio::test]
async fn the_reconciler_resolves_a_lost_answer_by_query() {
    let w = world();
    w.gateway.script(Op::Initiate, Step::ProcessThenTimeout);
    let order = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    assert_eq!(order.status, Phase::AuthorisationUnknown);
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());

    let r = rec.run_once().await.unwrap();
    assert_eq!((r.scanned, r.candidates), (1, 0), "too fresh to query");
    w.clock.advance(Duration::from_secs(10));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 1));
    assert_eq!(
        w.engine
            .get_order(&ctx(), order.order_id)
            .await
            .unwrap()
            .status,
        Phase::Authorised
    );
    w.clock.advance(Duration::from_secs(3600));
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.candidates, 0, "nothing open any more");
}

#[tokio::test]
async fn not_found_is_no_proof_of_failure_until_the_grace_period() {
    let w = world();
    w.gateway.script(
        Op::Initiate,
        Step::Return(GatewayOutcome::Unknown {
            reason: "read timeout".into(),
        }),
    );
    let order = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    let rec = Reconciler::new(
        w.engine.clone(),
        ReconcilerConfig {
            grace: Duration::from_secs(3600),
            ..ReconcilerConfig::default()
        },
    );
    w.clock.advance(Duration::from_secs(10));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 0));
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.backed_off, 1, "backoff between queries of one stream");
    assert_eq!(
        w.engine
            .get_order(&ctx(), order.order_id)
            .await
            .unwrap()
            .status,
        Phase::AuthorisationUnknown
    );

    // PayKKa is down: no answer, no change, even past the grace period.
    w.clock.advance(Duration::from_secs(7200));
    w.gateway.script(
        Op::Query,
        Step::Return(GatewayOutcome::Unknown {
            reason: "502".into(),
        }),
    );
    rec.run_once().await.unwrap();
    assert_eq!(
        w.engine
            .get_order(&ctx(), order.order_id)
            .await
            .unwrap()
            .status,
        Phase::AuthorisationUnknown
    );

    w.clock.advance(Duration::from_secs(7200));
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.resolved, 1);
    let v = w.engine.get_order(&ctx(), order.order_id).await.unwrap();
    assert_eq!(
        (v.status, v.decline_code.as_deref()),
        (Phase::Declined, Some("206024"))
    );
}

/// The whole-store pieces of `payorch_engine::replay` (what `payorch
/// replay` prints): `fold_stream` by stream reference, `verify_all`, and
/// the `OrderSummary` projection.
#[tokio::test]
async fn folds_verifies_and_summarises_the_store() {
    let w = world();
    let order = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    w.engine
        .capture(&ctx(), order.order_id, None, false)
        .await
        .unwrap();
    let r = StreamRef::Order(order.order_id);
    assert_eq!(r.stream_id(), order_stream(order.order_id));

    let StreamState::Order(at3) = fold_stream(w.store.as_ref(), r, FoldTo::Version(Version(3)))
        .await
        .unwrap()
    else {
        panic!("an order stream folds to an order");
    };
    assert_eq!(at3.phase(), Phase::Authorised);

    let (checked, failures) = verify_all(w.store.as_ref(), || {}).await.unwrap();
    assert_eq!((checked, failures.len()), (1, 0), "{failures:?}");

    // A payload today's code does not read: verify names the stream and
    // the version.
    let bad = StreamRef::Order(OrderId(Uuid::from_u128(7)));
    w.store
        .append(AppendRequest {
            stream_id: bad.stream_id(),
            stream_type: bad.stream_type().to_owned(),
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent {
                event_id: Uuid::from_u128(8),
                event_type: "payment_placed".into(),
                schema_version: 1,
                payload: serde_json::value::RawValue::from_string(r#"{"nonsense":1}"#.into())
                    .unwrap(),
                metadata: EventMetadata::default(),
                recorded_at: time::OffsetDateTime::UNIX_EPOCH,
            }],
            idempotency: None,
        })
        .await
        .unwrap();
    let (checked, failures) = verify_all(w.store.as_ref(), || {}).await.unwrap();
    assert_eq!(checked, 2);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].stream, bad.to_string());
    assert_eq!(failures[0].version, Some(1));

    // The summary counts the readable order (the runner stops at the bad
    // payload, so summarise before it: a fresh store).
    let w = world();
    let order = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    w.engine
        .capture(&ctx(), order.order_id, None, false)
        .await
        .unwrap();
    let mut summary = OrderSummary::default();
    ProjectionRunner::new(w.store.as_ref(), w.store.as_ref())
        .rebuild(&mut summary)
        .await
        .unwrap();
    let (by_status, totals) = summary.report();
    assert_eq!(summary.orders(), 1);
    assert_eq!(by_status.values().sum::<usize>(), 1);
    assert_eq!(totals["EUR"].authorised, 1000);
}
