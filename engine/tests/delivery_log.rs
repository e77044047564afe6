//! The in-memory webhook delivery log passes the conformance kit every
//! store runs (`cargo test -p payorch-engine --features testkit --test delivery_log`).

use std::sync::Arc;

use payorch_engine::webhook_out::InMemoryDeliveryLog;

async fn log() -> Option<Arc<InMemoryDeliveryLog>> {
    Some(Arc::new(InMemoryDeliveryLog::new()))
}

payorch_engine::delivery_log_conformance_tests!(log);

mod redelivery_idempotency {
    use std::sync::Arc;

    use payorch_engine::gateway::fake::FakeGateway;
    use payorch_engine::orchestrator::{CommandContext, Engine, EngineConfig, EngineError};
    use payorch_engine::store::memory::InMemoryStore;
    use payorch_engine::testing::ManualClock;
    use payorch_engine::webhook_out::{
        AttemptWrite, DeliveryState, DeliveryTarget, InMemoryDeliveryLog, RedeliveryError,
        WebhookDeliveryLog,
    };
    use uuid::Uuid;

    fn engine() -> Engine {
        let store = Arc::new(InMemoryStore::default());
        Engine::new(
            store.clone(),
            store,
            Arc::new(FakeGateway::new()),
            Arc::new(ManualClock::at_epoch_2026()),
            EngineConfig::default(),
        )
    }

    async fn delivered(log: &InMemoryDeliveryLog, state: DeliveryState) -> Uuid {
        let event_id = Uuid::now_v7();
        let at = time::OffsetDateTime::UNIX_EPOCH;
        log.record_attempt(&AttemptWrite {
            target: DeliveryTarget {
                endpoint_id: "ep1".into(),
                merchant_id: "m1".into(),
                event_id,
                stream_id: "order-1".into(),
                event_type: "captured".into(),
                position: 1,
            },
            at,
            status: Some(200),
            error: None,
            latency_ms: 3,
            manual: false,
            state,
            next_attempt_at: None,
            answers_request: None,
        })
        .await
        .expect("record");
        event_id
    }

    /// One key, one request: a replay answers the first answer (even after
    /// the redelivery was sent and dequeued); the key with another event is
    /// a conflict; refusals (unknown, busy) store nothing, so the key stays
    /// usable.
    #[tokio::test]
    async fn one_key_one_redelivery() {
        let engine = engine();
        let log = InMemoryDeliveryLog::new();
        let e1 = delivered(&log, DeliveryState::Delivered).await;
        let busy = delivered(&log, DeliveryState::FailedRetrying).await;
        let ctx = CommandContext::new("m1").with_idempotency_key("k1");

        match engine
            .request_webhook_redelivery(&ctx, &log, "ep1", busy)
            .await
        {
            Err(RedeliveryError::Busy(DeliveryState::FailedRetrying)) => {}
            other => panic!("a retrying delivery is Busy, got {other:?}"),
        }
        match engine
            .request_webhook_redelivery(&ctx, &log, "ep1", Uuid::now_v7())
            .await
        {
            Err(RedeliveryError::NotFound { .. }) => {}
            other => panic!("an unknown event is NotFound, got {other:?}"),
        }
        let first = engine
            .request_webhook_redelivery(&ctx, &log, "ep1", e1)
            .await
            .expect("queued after refusals: the key was free");
        assert!(first.redelivery_requested_at.is_some());

        // The dispatcher sends it and dequeues it; the replay still answers
        // the first answer, and queues nothing new.
        let mut sent = AttemptWrite {
            target: first.target.clone(),
            at: time::OffsetDateTime::UNIX_EPOCH,
            status: Some(200),
            error: None,
            latency_ms: 1,
            manual: true,
            state: DeliveryState::Delivered,
            next_attempt_at: None,
            answers_request: first.redelivery_requested_at,
        };
        sent.manual = true;
        log.record_attempt(&sent).await.expect("record");
        let replay = engine
            .request_webhook_redelivery(&ctx, &log, "ep1", e1)
            .await
            .expect("replay");
        assert_eq!(replay, first, "a replay answers the stored answer");
        assert!(
            log.queued_redeliveries(10).await.expect("queue").is_empty(),
            "a replay queues nothing"
        );

        let other = delivered(&log, DeliveryState::GivenUp).await;
        match engine
            .request_webhook_redelivery(&ctx, &log, "ep1", other)
            .await
        {
            Err(RedeliveryError::Engine(EngineError::IdempotencyConflict { key })) => {
                assert_eq!(key, "k1")
            }
            other => panic!("the key with another event is a conflict, got {other:?}"),
        }
        // Without a key every request queues (or keeps the queued one).
        let plain = CommandContext::new("m1");
        let d = engine
            .request_webhook_redelivery(&plain, &log, "ep1", other)
            .await
            .expect("queued");
        assert_eq!(d.state, DeliveryState::GivenUp);
    }
}
