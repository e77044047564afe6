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
use crate::read::{Loaded, StreamTimes, agreement_stream, load_timed, order_stream};
use crate::store::{
    AppendRequest, EventMetadata, ExpectedVersion, IdempotencyRecord, IdempotencyWrite, StoreError,
    StreamId, Version,
};
use serde_json::value::RawValue;

use super::idempotency::Key;

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

/// The idempotency write an [`Engine::execute`] carries with its events.
pub(crate) enum Idem<'a, S> {
    None,
    /// Begin this record with the command's first events.
    Begin(IdempotencyRecord),
    /// Complete the key with the response built from the state after the
    /// events.
    Complete(&'a Key, &'a Respond<'a, S>),
    /// Release the key's in-progress record with the events (the PayKKa
    /// call provably never left: the key may execute again).
    Release(&'a Key),
}

/// Builds a stored response from the state after an append and the
/// stream's times then (the answer of the executing request, which a
/// replay returns as it is).
pub(crate) type Respond<'a, S> =
    dyn Fn(&S, StreamTimes) -> Result<Box<RawValue>, EngineError> + Send + Sync + 'a;

impl<S> Idem<'_, S> {
    pub(crate) fn begin(rec: Option<IdempotencyRecord>) -> Self {
        rec.map_or(Idem::None, Idem::Begin)
    }
}

/// What [`Engine::execute`] did: the state and version after it, the
/// recorded times of the stream's first and latest events, and the events
/// it appended (empty: nothing to do).
pub(crate) struct Executed<A: Aggregate> {
    pub state: A::State,
    pub version: Version,
    pub times: StreamTimes,
    pub events: Vec<A::Event>,
}

impl<A: Aggregate> Executed<A> {
    /// The stream as the command leaves it, for a command that continues.
    pub fn held(self) -> Loaded<A::State> {
        Loaded {
            state: self.state,
            version: self.version,
            times: self.times,
        }
    }
}

impl Engine {
    /// The time recorded with new events: the clock's, in UTC, to the
    /// microsecond (what Postgres keeps), so that the answer of the command
    /// that appended them shows the times a later read shows.
    pub(crate) fn recorded_now(&self) -> time::OffsetDateTime {
        let t = self.clock.now().to_offset(time::UtcOffset::UTC);
        let ns = t.nanosecond();
        t.replace_nanosecond(ns - ns % 1_000).unwrap_or(t)
    }

    /// decide -> append with conflict retries, from `start` (the stream as
    /// the caller holds it, e.g. from its previous append) or from a load.
    /// Only a conflict reloads: a command that continues a command costs
    /// one round trip. The idempotency write goes into the same append as
    /// the events; with no events it is the caller's to store.
    pub(crate) async fn execute<A: Aggregate>(
        &self,
        stream: &StreamId,
        meta: &EventMetadata,
        idempotency: Idem<'_, A::State>,
        start: Option<Loaded<A::State>>,
        command: impl Fn(&A::State) -> A::Command,
    ) -> Result<Executed<A>, EngineError>
    where
        EngineError: From<A::Error>,
    {
        let attempts = self.config.max_conflict_retries.max(1);
        let mut start = start;
        for _ in 0..attempts {
            let Loaded {
                state,
                version,
                times,
            } = match start.take() {
                Some(held) => held,
                None => load_timed::<A>(self.store.as_ref(), stream).await?,
            };
            let events = A::decide(&state, command(&state))?;
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    version,
                    times,
                    events,
                });
            }
            let next = events.iter().fold(state, A::evolve);
            let meta = with_merchant::<A>(meta, &next);
            let now = self.recorded_now();
            let new_events = events
                .iter()
                .map(|e| codec::encode(e, Uuid::now_v7(), meta.clone(), now))
                .collect::<Result<Vec<_>, _>>()?;
            let write = match &idempotency {
                Idem::None => None,
                Idem::Begin(rec) => Some(IdempotencyWrite::Begin(rec.clone())),
                Idem::Complete(key, respond) => Some(IdempotencyWrite::Complete(
                    key.completion(respond(&next, times.after(now))?),
                )),
                Idem::Release(key) => Some(IdempotencyWrite::Release {
                    scope: key.scope.clone(),
                    key: key.key.clone(),
                }),
            };
            let completes = matches!(
                write,
                Some(IdempotencyWrite::Complete(_) | IdempotencyWrite::Release { .. })
            );
            let request = AppendRequest {
                stream_id: stream.clone(),
                stream_type: A::Event::STREAM_TYPE.to_owned(),
                expected: ExpectedVersion::Exact(version),
                events: new_events,
                idempotency: write,
            };
            match self.store.append(request).await {
                Ok(out) => {
                    if completes {
                        self.idempotency_done.notify_waiters();
                    }
                    return Ok(Executed {
                        state: next,
                        version: out.version,
                        times: times.after(now),
                        events,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contention {
            stream: stream.to_string(),
            attempts,
        })
    }

    /// Runs one order command (with conflict retries) and its follow-ups.
    pub(crate) async fn order_command(
        &self,
        order_id: OrderId,
        meta: &EventMetadata,
        idempotency: Idem<'_, OrderState>,
        start: Option<Loaded<OrderState>>,
        cmd: impl Fn(&OrderState) -> OrderCommand,
    ) -> Result<Executed<OrderAggregate>, EngineError> {
        let done = self
            .execute::<OrderAggregate>(&order_stream(order_id), meta, idempotency, start, cmd)
            .await?;
        self.after_order_change(&done.state, &done.events, meta)
            .await?;
        Ok(done)
    }

    /// Follow-ups owned by other aggregates: a first recurring payment that
    /// stored a token creates its agreement.
    pub(crate) async fn after_order_change(
        &self,
        state: &OrderState,
        events: &[OrderEvent],
        meta: &EventMetadata,
    ) -> Result<(), EngineError> {
        // The token arrives with PayKKa's answer or its notification,
        // whichever is recorded first. The path that records nothing (the
        // fact was already there) still makes sure the agreement exists
        // before it answers: the racing path may not have created it yet,
        // and a merchant charging right after the answer must find it.
        let t = match events.iter().find_map(|e| match e {
            OrderEvent::TokenStored(t) => Some(t),
            _ => None,
        }) {
            Some(t) => t,
            None if events.is_empty() => match state.token() {
                Some(t) => t,
                None => return Ok(()),
            },
            None => return Ok(()),
        };
        let Some(p) = state.placed() else {
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
            annotations: Box::new(payorch_schemas::events::Annotations {
                merchant_reference: p.merchant_reference.clone(),
                metadata: p.metadata.clone(),
            }),
        };
        self.execute::<AgreementAggregate>(
            &agreement_stream(agreement_id),
            meta,
            Idem::None,
            None,
            |_| cmd.clone(),
        )
        .await?;
        Ok(())
    }

    /// Calls PayKKa, resending `Retryable` and `NotSent` answers with
    /// backoff, at most [`EngineConfig::retryable_attempts`] attempts.
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
                    // Safe to resend: PayKKa did not act on it.
                    GatewayOutcome::Retryable { .. } | GatewayOutcome::NotSent { .. }
                        if attempt < attempts =>
                    {
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
