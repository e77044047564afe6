//! The command runner: load -> decide -> append(expected version) with
//! conflict retries, PayKKa calls with `Retryable` resends, and the
//! tracing spans of commands and calls.

use payorch_schemas::events::{AgreementId, OrderEvent, OrderId, PaymentKind};
use tracing::Instrument;
use uuid::Uuid;

use super::*;
use crate::aggregate::{Aggregate, AgreementAggregate, OrderAggregate};
use crate::agreement::AgreementCommand;
use crate::codec::{self, DomainEvent};
use crate::gateway::GatewayOutcome;
use crate::order::{OrderCommand, OrderState};
use crate::read::{agreement_stream, load, order_stream};
use crate::store::{
    AppendRequest, EventMetadata, ExpectedVersion, IdempotencyRecord, StoreError, StreamId,
};

/// The metadata of a stream's new events: the caller's, with the merchant
/// the aggregate belongs to when the caller named none (a notification, a
/// query result, a follow-up). Every event names its merchant, so a
/// subscriber bound to `*.*.<merchant>` sees all of its orders' events.
fn with_merchant<A: Aggregate>(meta: &EventMetadata, state: &A::State) -> EventMetadata {
    let mut meta = meta.clone();
    if meta.merchant_id.as_deref().is_none_or(str::is_empty) {
        meta.merchant_id = A::merchant_id(state).map(|m| m.as_str().to_owned());
    }
    meta
}

impl Engine {
    /// load -> decide -> append with conflict retries. Returns the state
    /// after the append and the events appended (empty: nothing to do).
    pub(crate) async fn execute<A: Aggregate>(
        &self,
        stream: &StreamId,
        meta: &EventMetadata,
        idempotency: Option<IdempotencyRecord>,
        command: impl Fn(&A::State) -> A::Command,
    ) -> Result<(A::State, Vec<A::Event>), EngineError>
    where
        EngineError: From<A::Error>,
    {
        let attempts = self.config.max_conflict_retries.max(1);
        for _ in 0..attempts {
            let (state, version) = load::<A>(self.store.as_ref(), stream).await?;
            let events = A::decide(&state, command(&state))?;
            if events.is_empty() {
                if let Some(rec) = idempotency.clone() {
                    // Nothing to append: keep the key's promise on its own.
                    match self.idempotency.put_idempotency(rec).await {
                        Ok(()) | Err(StoreError::IdempotencyKeyTaken { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                return Ok((state, events));
            }
            let next = events.iter().fold(state, A::evolve);
            let meta = with_merchant::<A>(meta, &next);
            let now = self.clock.now();
            let new_events = events
                .iter()
                .map(|e| codec::encode(e, Uuid::now_v7(), meta.clone(), now))
                .collect::<Result<Vec<_>, _>>()?;
            let request = AppendRequest {
                stream_id: stream.clone(),
                stream_type: A::Event::STREAM_TYPE.to_owned(),
                expected: ExpectedVersion::Exact(version),
                events: new_events,
                idempotency: idempotency.clone(),
            };
            match self.store.append(request).await {
                Ok(_) => return Ok((next, events)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contention {
            stream: stream.to_string(),
            attempts,
        })
    }

    /// Runs one order command (with conflict retries).
    pub(crate) async fn order_command(
        &self,
        order_id: OrderId,
        meta: &EventMetadata,
        idempotency: Option<IdempotencyRecord>,
        cmd: impl Fn(&OrderState) -> OrderCommand,
    ) -> Result<(OrderState, Vec<OrderEvent>), EngineError> {
        let (state, events) = self
            .execute::<OrderAggregate>(&order_stream(order_id), meta, idempotency, cmd)
            .await?;
        self.after_order_change(&state, &events, meta).await?;
        Ok((state, events))
    }

    /// Follow-ups owned by other aggregates: a first recurring payment that
    /// stored a token creates its agreement.
    pub(crate) async fn after_order_change(
        &self,
        state: &OrderState,
        events: &[OrderEvent],
        meta: &EventMetadata,
    ) -> Result<(), EngineError> {
        let Some(OrderEvent::TokenStored(t)) = events
            .iter()
            .find(|e| matches!(e, OrderEvent::TokenStored(_)))
        else {
            return Ok(());
        };
        let Some(p) = state.placed.as_deref() else {
            return Ok(());
        };
        if p.payment_type != PaymentKind::Recurring || p.agreement_id.is_some() {
            return Ok(());
        }
        // The agreement id is the first order's uuid: creating it twice is
        // the same command.
        let agreement_id = AgreementId(p.order_id.0);
        let cmd = AgreementCommand::Create {
            agreement_id,
            merchant_id: p.merchant_id.clone(),
            first_order_id: p.order_id,
            token: t.token.clone(),
            shopper_reference: t.shopper_reference.clone(),
            recurring_agreement_ref: t.recurring_agreement_ref.clone(),
            card: state.card().cloned(),
        };
        self.execute::<AgreementAggregate>(&agreement_stream(agreement_id), meta, None, |_| {
            cmd.clone()
        })
        .await?;
        Ok(())
    }

    /// Calls PayKKa, resending `Retryable` answers with backoff.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        span: tracing::Span,
        f: F,
    ) -> GatewayOutcome<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = GatewayOutcome<T>>,
    {
        async {
            let mut backoff = self.config.retry_backoff;
            let attempts = self.config.retryable_attempts.max(1);
            let mut attempt = 1;
            loop {
                let out = f().await;
                tracing::info!(operation, outcome = out.kind(), attempt, "paykka call");
                match out {
                    GatewayOutcome::Retryable { .. } if attempt < attempts => {
                        tokio::time::sleep(backoff).await;
                        backoff = backoff.saturating_mul(2);
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        }
        .instrument(span)
        .await
    }

    pub(crate) fn call_span(
        &self,
        operation: &'static str,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> tracing::Span {
        tracing::info_span!(
            "paykka_call",
            operation,
            order_id = %order_id,
            merchant_id = %ctx.merchant_id,
            trans_id = %order_id.trans_id(),
            correlation_id = ?ctx.correlation_id,
        )
    }

    pub(crate) fn command_span(
        &self,
        command: &'static str,
        ctx: &CommandContext,
        order_id: Option<OrderId>,
    ) -> tracing::Span {
        tracing::info_span!(
            "command",
            command,
            order_id = ?order_id.map(|o| o.to_string()),
            merchant_id = %ctx.merchant_id,
            trans_id = ?order_id.map(|o| o.trans_id().to_string()),
            correlation_id = ?ctx.correlation_id,
        )
    }
}
