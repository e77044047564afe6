//! Payments: place (initiate), capture, void, refund, 3DS return.
//!
//! Each command that calls PayKKa is two appends: the request events with
//! the idempotency record begun, then PayKKa's outcome with the record
//! completed (the state and version stay in memory in between).

use payorch_schemas::Money;
use payorch_schemas::events::{AgreementId, CaptureId, OrderId, RefundId};
use payorch_schemas::paykka::{CaptureRequest, Reason, RefundRequest, VoidRequest};
use tracing::Instrument;
use uuid::Uuid;

use super::idempotency::*;
use super::paykka_requests::*;
use super::runner::{Idem, Respond};
use super::views::stamped_view_of;
use super::*;
use crate::gateway::{self, GatewayOutcome};
use crate::order::{
    CallOutcome, CapturePayment, ObservationSource, OrderCommand, OrderState, PlacePayment,
    RefundEntry, RefundPayment,
};
use crate::read::{Loaded, StreamTimes, order_stream};
use crate::store::{EventMetadata, StoreError};
use crate::view::OrderView;

/// What [`Engine::begin_order_call`] leaves to do.
// Transient, one per command: the size gap is harmless.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Begun {
    /// Answer with this view; PayKKa is not called.
    Done(OrderView),
    /// The request events are appended: call PayKKa, then record.
    Call {
        held: Loaded<OrderState>,
        meta: EventMetadata,
    },
}

/// Who places an order in [`Engine::place_inner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A merchant's payment: the key's record is begun with the placement.
    Payment,
    /// A charge on an agreement, whose `agreement_charged` began the key's
    /// record. `send: false`: the agreement is no longer active (a charge
    /// resumed after a crash): recorded declined with
    /// [`CHARGE_NOT_SENT_CODE`], PayKKa is not called.
    Charge { send: bool },
}

/// The `final_capture` field of a capture request: `Some(true)` for a
/// final capture when PayKKa releases the remainder on the flag
/// ([`ReleaseMode::CaptureFlag`]); omitted otherwise (in the other modes
/// PayKKa ignores it, and a capture that is not final says nothing).
pub(crate) fn capture_flag(mode: ReleaseMode, final_capture: bool) -> Option<bool> {
    (mode == ReleaseMode::CaptureFlag && final_capture).then_some(true)
}

/// What a non-success gateway answer said, for a reason text.
fn outcome_detail<T>(o: &GatewayOutcome<T>) -> String {
    match o {
        GatewayOutcome::Success(_) => String::new(),
        GatewayOutcome::Declined { code, description }
        | GatewayOutcome::Rejected {
            code, description, ..
        } => format!("{code} {description}"),
        GatewayOutcome::NotSent { reason }
        | GatewayOutcome::Retryable { reason }
        | GatewayOutcome::Unknown { reason } => reason.clone(),
    }
}

/// The reason of an answer that never left, if it is one.
fn not_sent_reason<T>(o: &GatewayOutcome<T>) -> Option<String> {
    match o {
        GatewayOutcome::NotSent { reason } => Some(reason.clone()),
        _ => None,
    }
}

/// The stored response of an order command: the order's view, with the
/// times of its stream (what the executing request answers).
pub(crate) fn order_response(
    order_id: OrderId,
) -> impl Fn(&OrderState, StreamTimes) -> Result<Box<serde_json::value::RawValue>, EngineError>
+ Send
+ Sync {
    move |s, t| to_raw(&stamped_view_of(s, order_id, t)?)
}

impl Engine {
    /// Places an order and asks PayKKa to authorise it (initiate). Returns
    /// the order after PayKKa's answer (Authorised, Captured,
    /// ChallengeRequired with `authentication_url`, Declined, or
    /// AuthorisationUnknown for the reconciler).
    pub async fn place_payment(
        &self,
        ctx: &CommandContext,
        req: PlacePaymentRequest,
    ) -> Result<OrderView, EngineError> {
        let order_id = OrderId(Uuid::now_v7());
        let key = Key::of(ctx, place_fingerprint(&req, None));
        self.place_inner(ctx, order_id, req, None, key, Placement::Payment)
            .instrument(self.command_span("place_payment", ctx, Some(order_id)))
            .await
    }

    /// Places the order and calls Initiate. The key's record is begun with
    /// the placement for a payment; a charge began it on its agreement.
    /// Only the request that appends the placement calls PayKKa (a charge
    /// resumed after a crash may race the interrupted request).
    pub(crate) async fn place_inner(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        req: PlacePaymentRequest,
        agreement: Option<(AgreementId, Option<String>)>,
        key: Option<Key>,
        placement: Placement,
    ) -> Result<OrderView, EngineError> {
        let begin = placement == Placement::Payment;
        let stream = order_stream(order_id);
        let annotations = ctx.checked_annotations()?;
        let place = PlacePayment {
            order_id,
            merchant_id: ctx.merchant_id.clone(),
            amount: req.amount,
            payment_type: req.payment_type,
            authorisation_type: req.authorisation_type,
            capture_method: req.capture_method,
            instrument: instrument_summary(&req.payment),
            store_token: req.store_token.clone(),
            agreement_id: agreement.as_ref().map(|a| a.0),
            checkout: None,
            annotations,
        };
        // Everything PayKKa's schema rules refuse is refused here, before
        // anything is written (a charge's request comes from its stored
        // agreement, already recorded: its rare refusal stays PayKKa's).
        let initiate = self.initiate_request(ctx, order_id, req, agreement.as_ref());
        if begin && let Err(e) = initiate.validate() {
            return Err(EngineError::InvalidField {
                field: e.field,
                problem: e.problem.to_string(),
            });
        }
        let idem = match (&key, begin) {
            (Some(k), true) => Idem::Begin(k.begin(Some(&stream), self.clock.now())),
            _ => Idem::None,
        };
        let meta = ctx.metadata();
        // A new stream: nothing to load.
        let placed = match self
            .order_command(order_id, &meta, idem, Some(Loaded::empty()), |_| {
                OrderCommand::Place(place.clone())
            })
            .await
        {
            Ok(done) => done,
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => {
                if let Some(k) = &key {
                    return self.replay(ctx, k, Resolves::Order).await;
                }
                return Err(EngineError::Contention {
                    stream: stream.to_string(),
                    attempts: 1,
                });
            }
            Err(e) => return Err(e),
        };
        if placed.events.is_empty() {
            // Placed by another request (a resumed charge and the one it
            // resumed): that one calls PayKKa and completes the key.
            return match &key {
                Some(k) => Err(EngineError::IdempotencyInProgress {
                    key: k.key.clone(),
                    retry_after: std::time::Duration::from_secs(1),
                }),
                None => stamped_view_of(&placed.state, order_id, placed.times),
            };
        }
        if placement == (Placement::Charge { send: false }) {
            drop(initiate);
            let outcome = CallOutcome::Declined {
                code: CHARGE_NOT_SENT_CODE.to_owned(),
                description: "the agreement is no longer active; the charge was not sent".into(),
            };
            return self
                .finish_order_call(
                    order_id,
                    &meta,
                    key.as_ref(),
                    placed.held(),
                    OrderCommand::RecordInitiateOutcome(outcome),
                )
                .await;
        }

        let gw = self.gateway.clone();
        let outcome = self
            .call(
                "initiate",
                self.call_span("initiate", ctx, order_id),
                || gw.initiate(&initiate),
            )
            .await;
        drop(initiate); // card data leaves memory here
        let not_sent = not_sent_reason(&outcome);
        let outcome = payment_outcome(outcome);
        self.finish_or_unreachable(
            "initiate",
            not_sent,
            order_id,
            &meta,
            key.as_ref(),
            placed.held(),
            OrderCommand::RecordInitiateOutcome(outcome),
        )
        .await
    }

    /// [`Engine::finish_order_call`], unless the call never left
    /// (`not_sent`): then the declined-style outcome ([`NOT_SENT_CODE`]) is
    /// recorded and the key released **in the same append** (a crash
    /// cannot leave the decline with the key still held, which the crash
    /// rule would complete with the declined view), and the answer is
    /// [`EngineError::PaykkaUnreachable`], so the same request with the
    /// same key executes afresh once PayKKa is reachable.
    ///
    /// Why a decline and not "no events": the intent (`*Requested`) is
    /// already appended before the call (a crash must leave it visible);
    /// withdrawing it would need a new order phase. A decline is true (no
    /// money moved, PayKKa never saw the request) and final, so the
    /// reconciler has nothing to chase; the retry is a new attempt with a
    /// new `trans_id` (a payment) or a new call id (capture, refund).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn finish_or_unreachable(
        &self,
        operation: &'static str,
        not_sent: Option<String>,
        order_id: OrderId,
        meta: &EventMetadata,
        key: Option<&Key>,
        held: Loaded<OrderState>,
        cmd: OrderCommand,
    ) -> Result<OrderView, EngineError> {
        let Some(reason) = not_sent else {
            return self.finish_order_call(order_id, meta, key, held, cmd).await;
        };
        let idem = key.map_or(Idem::None, Idem::Release);
        let done = self
            .order_command(order_id, meta, idem, Some(held), |_| cmd.clone())
            .await?;
        if let (Some(k), true) = (key, done.events.is_empty()) {
            // Nothing appended (the state already showed an outcome): the
            // release goes alone.
            self.idempotency
                .release_idempotency(&k.scope, &k.key)
                .await?;
            self.idempotency_done.notify_waiters();
        }
        Err(EngineError::PaykkaUnreachable { operation, reason })
    }

    /// The first half of a merchant order command that calls PayKKa:
    /// load -> decide + append the `*Requested` event with the key's
    /// record begun. `Done` when there is nothing to call (the state
    /// already shows it, or a twin request holds the key).
    pub(crate) async fn begin_order_call(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        key: Option<&Key>,
        cmd: OrderCommand,
    ) -> Result<Begun, EngineError> {
        let held = self.load_order(ctx, order_id).await?;
        let stream = order_stream(order_id);
        let idem = Idem::begin(key.map(|k| k.begin(Some(&stream), self.clock.now())));
        let meta = ctx.metadata();
        match self
            .order_command(order_id, &meta, idem, Some(held), |_| cmd.clone())
            .await
        {
            Ok(done) if done.events.is_empty() => {
                // Nothing to ask PayKKa (e.g. a void of a voided order):
                // the answer is the current view.
                let view = stamped_view_of(&done.state, order_id, done.times)?;
                let view = self
                    .record_alone(ctx, key, Some(&stream), Resolves::Order, view)
                    .await?;
                Ok(Begun::Done(view))
            }
            Ok(done) => Ok(Begun::Call {
                held: done.held(),
                meta,
            }),
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => match key {
                Some(k) => Ok(Begun::Done(self.replay(ctx, k, Resolves::Order).await?)),
                None => Err(EngineError::Contention {
                    stream: stream.to_string(),
                    attempts: 1,
                }),
            },
            Err(e @ (EngineError::Domain(_) | EngineError::NotFound { .. })) => Ok(Begun::Done(
                self.replay_or_refuse(ctx, key, Resolves::Order, e).await?,
            )),
            Err(e) => Err(e),
        }
    }

    /// The second half: decide + append PayKKa's outcome from the state
    /// held since the first half, completing the key with the view; if a
    /// notification recorded the fact first, nothing is appended and the
    /// key is completed on its own.
    pub(crate) async fn finish_order_call(
        &self,
        order_id: OrderId,
        meta: &EventMetadata,
        key: Option<&Key>,
        held: Loaded<OrderState>,
        cmd: OrderCommand,
    ) -> Result<OrderView, EngineError> {
        let respond = order_response(order_id);
        let idem = match key {
            Some(k) => Idem::Complete(k, &respond as &Respond<'_, OrderState>),
            None => Idem::None,
        };
        let done = self
            .order_command(order_id, meta, idem, Some(held), |_| cmd.clone())
            .await?;
        let view = stamped_view_of(&done.state, order_id, done.times)?;
        if done.events.is_empty() {
            return self.complete_alone(key, view).await;
        }
        Ok(view)
    }

    /// Captures (part of) an authorised order with manual capture.
    pub async fn capture(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        amount: Option<Money>,
        final_capture: bool,
    ) -> Result<OrderView, EngineError> {
        async {
            let key = Key::of(ctx, capture_fingerprint(order_id, amount, final_capture));
            let capture_id = CaptureId(Uuid::now_v7());
            let cmd = OrderCommand::Capture(CapturePayment {
                capture_id,
                amount,
                final_capture,
            });
            let (held, meta) = match self
                .begin_order_call(ctx, order_id, key.as_ref(), cmd)
                .await?
            {
                Begun::Done(view) => return Ok(view),
                Begun::Call { held, meta } => (held, meta),
            };
            let Some(entry) = held
                .state
                .captures()
                .iter()
                .find(|c| c.capture_id == capture_id)
            else {
                let view = stamped_view_of(&held.state, order_id, held.times)?;
                return self.complete_alone(key.as_ref(), view).await;
            };
            let req = CaptureRequest {
                merchant_id: ctx.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                order_id: gateway_order_id(&held.state),
                amount: Some(entry.amount.minor),
                currency: Some(entry.amount.currency),
                final_capture: capture_flag(
                    self.config.release_mode_for(ctx.merchant_id.as_str()),
                    entry.final_capture,
                ),
            };
            let gw = self.gateway.clone();
            let answer = self
                .call("capture", self.call_span("capture", ctx, order_id), || {
                    gw.capture(&req)
                })
                .await;
            let not_sent = not_sent_reason(&answer);
            let outcome = payment_outcome(answer);
            let cmd = OrderCommand::RecordCaptureOutcome {
                capture_id,
                outcome,
            };
            let void_after = self.config.release_mode_for(ctx.merchant_id.as_str())
                == ReleaseMode::VoidAfterCapture;
            if !void_after || not_sent.is_some() {
                return self
                    .finish_or_unreachable(
                        "capture",
                        not_sent,
                        order_id,
                        &meta,
                        key.as_ref(),
                        held,
                        cmd,
                    )
                    .await;
            }
            // void_after_capture: PayKKa releases the rest of a final
            // partial capture on a Void. Until PayKKa confirms it the order
            // awaits the release (reconciler work), so a crash here leaves
            // the intent visible and the reconciler sends the Void. The key
            // is completed with what this request answers (the view after
            // the Void), so a replay answers the same.
            let view = self
                .finish_order_call(order_id, &meta, None, held, cmd)
                .await?;
            if view.status == crate::order::Phase::PartiallyCaptured {
                return self.release_remainder_keyed(order_id, key.as_ref()).await;
            }
            self.complete_alone(key.as_ref(), view).await
        }
        .instrument(self.command_span("capture", ctx, Some(order_id)))
        .await
    }

    /// `void_after_capture` release mode: sends the Void that releases the
    /// rest of a final partial capture PayKKa has not shown released yet
    /// (recorded as `void_requested`, then the answer: `remainder_released`
    /// when its balances show it, `void_declined` / `void_outcome_unknown`
    /// otherwise; an answer that does not show it leaves the void open for
    /// the reconciler). Sent again while it is open (a Void of a released
    /// rest changes nothing at PayKKa). Nothing to do for an order that
    /// does not await a release.
    pub async fn release_remainder(&self, order_id: OrderId) -> Result<OrderView, EngineError> {
        self.release_remainder_keyed(order_id, None).await
    }

    /// [`Engine::release_remainder`], completing `key` (a capture's) with
    /// the view it answers.
    async fn release_remainder_keyed(
        &self,
        order_id: OrderId,
        key: Option<&Key>,
    ) -> Result<OrderView, EngineError> {
        let held = crate::read::load_timed::<crate::aggregate::OrderAggregate>(
            self.store.as_ref(),
            &order_stream(order_id),
        )
        .await?;
        let Some(merchant) = held.state.merchant_id().cloned() else {
            return Err(EngineError::NotFound {
                what: "order",
                id: order_id.to_string(),
            });
        };
        if !held.state.awaits_release() {
            let view = stamped_view_of(&held.state, order_id, held.times)?;
            return self.complete_alone(key, view).await;
        }
        let ctx = CommandContext::new(merchant.as_str());
        let meta = ctx.metadata();
        let reason = "release the rest of a final partial capture";
        let done = self
            .order_command(order_id, &meta, Idem::None, Some(held), |_| {
                OrderCommand::ReleaseRemainder
            })
            .await?;
        let req = VoidRequest {
            merchant_id: merchant.as_str().to_owned(),
            timestamp: self.now_ms(),
            order_id: gateway_order_id(&done.state),
            reason: Some(Reason::parse(reason)),
        };
        let gw = self.gateway.clone();
        let outcome = payment_outcome(
            self.call("void", self.call_span("void", &ctx, order_id), || {
                gw.void(&req)
            })
            .await,
        );
        let respond = order_response(order_id);
        let idem = match key {
            Some(k) => Idem::Complete(k, &respond as &Respond<'_, OrderState>),
            None => Idem::None,
        };
        let done = self
            .order_command(order_id, &meta, idem, Some(done.held()), |_| {
                OrderCommand::RecordVoidOutcome(outcome.clone())
            })
            .await?;
        let view = stamped_view_of(&done.state, order_id, done.times)?;
        if done.events.is_empty() {
            return self.complete_alone(key, view).await;
        }
        Ok(view)
    }

    /// Voids (releases) an authorisation with nothing captured.
    pub async fn void(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        reason: Option<String>,
    ) -> Result<OrderView, EngineError> {
        async {
            let key = Key::of(ctx, void_fingerprint(order_id, &reason));
            let cmd = OrderCommand::Void {
                reason: reason.clone(),
            };
            let (held, meta) = match self
                .begin_order_call(ctx, order_id, key.as_ref(), cmd)
                .await?
            {
                Begun::Done(view) => return Ok(view),
                Begun::Call { held, meta } => (held, meta),
            };
            let req = VoidRequest {
                merchant_id: ctx.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                order_id: gateway_order_id(&held.state),
                reason: reason.as_deref().map(Reason::parse),
            };
            let gw = self.gateway.clone();
            let answer = self
                .call("void", self.call_span("void", ctx, order_id), || {
                    gw.void(&req)
                })
                .await;
            let not_sent = not_sent_reason(&answer);
            let outcome = payment_outcome(answer);
            self.finish_or_unreachable(
                "void",
                not_sent,
                order_id,
                &meta,
                key.as_ref(),
                held,
                OrderCommand::RecordVoidOutcome(outcome),
            )
            .await
        }
        .instrument(self.command_span("void", ctx, Some(order_id)))
        .await
    }

    /// Refunds part or all of the captured amount; each call is a new
    /// refund with its own refund id and `refund_trans_id`.
    pub async fn refund(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        amount: Money,
        reason: Option<String>,
    ) -> Result<OrderView, EngineError> {
        async {
            let key = Key::of(ctx, refund_fingerprint(order_id, amount, &reason));
            let refund_id = RefundId(Uuid::now_v7());
            let cmd = OrderCommand::Refund(RefundPayment {
                refund_id,
                amount,
                reason: reason.clone(),
            });
            let (held, meta) = match self
                .begin_order_call(ctx, order_id, key.as_ref(), cmd)
                .await?
            {
                Begun::Done(view) => return Ok(view),
                Begun::Call { held, meta } => (held, meta),
            };
            let Some(entry) = held
                .state
                .refunds()
                .iter()
                .find(|r| r.refund_id == refund_id)
            else {
                let view = stamped_view_of(&held.state, order_id, held.times)?;
                return self.complete_alone(key.as_ref(), view).await;
            };
            let req = RefundRequest {
                merchant_id: ctx.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                refund_trans_id: entry.refund_trans_id.as_str().to_owned(),
                ori_order_id: gateway_order_id(&held.state),
                refund_amount: entry.amount.minor,
                currency: entry.amount.currency,
                reason: reason.as_deref().map(Reason::parse),
                notify_url: self.config.refund_notify_url.clone(),
            };
            let gw = self.gateway.clone();
            let answer = self
                .call("refund", self.call_span("refund", ctx, order_id), || {
                    gw.refund(&req)
                })
                .await;
            let not_sent = not_sent_reason(&answer);
            let outcome =
                match answer {
                    GatewayOutcome::Success(r) => CallOutcome::Accepted(
                        gateway::refund_observation(&r, refund_id, ObservationSource::Response),
                    ),
                    other => non_success(other),
                };
            let cmd = OrderCommand::RecordRefundOutcome { refund_id, outcome };
            self.finish_or_unreachable("refund", not_sent, order_id, &meta, key.as_ref(), held, cmd)
                .await
        }
        .instrument(self.command_span("refund", ctx, Some(order_id)))
        .await
    }

    /// Sends an open refund again, with its own `refund_trans_id` (PayKKa
    /// takes a known `refund_trans_id` as the same refund, not a new one).
    /// Only the reconciler calls this, past the grace period and when
    /// Refund Query still does not know the refund. PayKKa's answer is
    /// recorded as for the first send, except that a non-success answer
    /// (timeout, 5xx, refusal, decline code) is recorded as unknown, never
    /// as declined: the first send may still be in PayKKa's books under
    /// the same id, and a declined refund frees its amount for another
    /// refund. The refund's reason is not sent again (it is not in the
    /// state; PayKKa does not need it to identify the refund).
    pub(crate) async fn resend_refund(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        refund: &RefundEntry,
        gateway_order_id: String,
    ) -> Result<OrderView, EngineError> {
        let req = RefundRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            refund_trans_id: refund.refund_trans_id.as_str().to_owned(),
            ori_order_id: gateway_order_id,
            refund_amount: refund.amount.minor,
            currency: refund.amount.currency,
            reason: None,
            notify_url: self.config.refund_notify_url.clone(),
        };
        let refund_id = refund.refund_id;
        tracing::info!(
            %order_id,
            %refund_id,
            refund_trans_id = refund.refund_trans_id.as_str(),
            "refund unknown to PayKKa after the grace period: sending it again"
        );
        let gw = self.gateway.clone();
        let outcome = match self
            .call("refund", self.call_span("refund", ctx, order_id), || {
                gw.refund(&req)
            })
            .await
        {
            GatewayOutcome::Success(r) => CallOutcome::Accepted(gateway::refund_observation(
                &r,
                refund_id,
                ObservationSource::Response,
            )),
            other => CallOutcome::Unknown {
                reason: format!(
                    "re-sent refund not confirmed ({}): {}",
                    other.kind(),
                    outcome_detail(&other)
                ),
            },
        };
        let held = self.load_order(ctx, order_id).await?;
        let done = self
            .order_command(order_id, &ctx.metadata(), Idem::None, Some(held), |_| {
                OrderCommand::RecordRefundOutcome {
                    refund_id,
                    outcome: outcome.clone(),
                }
            })
            .await?;
        stamped_view_of(&done.state, order_id, done.times)
    }

    /// The shopper is back from the 3DS page; the result follows by
    /// notification or query.
    pub async fn complete_challenge(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        let held = self.load_order(ctx, order_id).await?;
        let done = self
            .order_command(order_id, &ctx.metadata(), Idem::None, Some(held), |_| {
                OrderCommand::CompleteChallenge
            })
            .await?;
        stamped_view_of(&done.state, order_id, done.times)
    }
}
