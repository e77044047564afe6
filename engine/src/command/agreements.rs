//! Recurring agreements: view, merchant-initiated charges, cancel and the
//! reconciler's cancel resend.

use payorch_schemas::Money;
use payorch_schemas::events::{AgreementId, AuthorisationKind, CaptureMode, OrderId, PaymentKind};
use payorch_schemas::paykka::{PaymentRequest, RecurringCancelRequest, TokenUsage};
use tracing::Instrument;
use uuid::Uuid;

use super::idempotency::*;
use super::paykka_requests::*;
use super::payments::Placement;
use super::runner::{Idem, Respond};
use super::views::Stamped;
use super::*;
use crate::aggregate::{AgreementAggregate, OrderAggregate};
use crate::agreement::{self, AgreementCommand, AgreementPhase, AgreementState};
use crate::gateway::GatewayOutcome;
use crate::order::CallOutcome;
use crate::read::{StreamTimes, agreement_stream, load, load_timed, order_stream};
use crate::store::StoreError;
use crate::store::Version;
use crate::view::{AgreementView, OrderView};

impl Engine {
    /// The current view of an agreement of this merchant.
    pub async fn get_agreement(
        &self,
        ctx: &CommandContext,
        agreement_id: AgreementId,
    ) -> Result<AgreementView, EngineError> {
        let l =
            load_timed::<AgreementAggregate>(self.store.as_ref(), &agreement_stream(agreement_id))
                .await?;
        let view = AgreementView::from_state(&l.state)
            .filter(|v| v.merchant_id == ctx.merchant_id)
            .ok_or_else(|| EngineError::NotFound {
                what: "agreement",
                id: agreement_id.to_string(),
            })?;
        Ok(view.with_times(l.times))
    }

    /// A merchant-initiated charge on an active agreement: a new order
    /// paying with the agreement's token (`mit: true`). The key's record is
    /// begun with the `agreement_charged` event: N identical concurrent
    /// charges make one charge, one order, one event.
    pub async fn charge_agreement(
        &self,
        ctx: &CommandContext,
        agreement_id: AgreementId,
        amount: Money,
    ) -> Result<OrderView, EngineError> {
        let key = Key::of(ctx, charge_fingerprint(agreement_id, amount));
        let stream = agreement_stream(agreement_id);
        let held = load_timed::<AgreementAggregate>(self.store.as_ref(), &stream).await?;
        let Some(c) = held
            .state
            .created
            .clone()
            .filter(|c| c.merchant_id == ctx.merchant_id)
        else {
            return Err(EngineError::NotFound {
                what: "agreement",
                id: agreement_id.to_string(),
            });
        };
        let order_id = OrderId(Uuid::now_v7());
        // Refused before anything is written, like a payment: the labels,
        // and what PayKKa's schema rules refuse in the charge's Initiate
        // (once `agreement_charged` is recorded, a refusal would leave a
        // charge without its order).
        ctx.checked_annotations()?;
        let reference = agreement_reference(&c);
        if let Err(e) = self
            .initiate_request(
                ctx,
                order_id,
                charge_request(&c, amount),
                Some(&(agreement_id, reference.clone())),
            )
            .validate()
        {
            return Err(EngineError::InvalidField {
                field: e.field,
                problem: e.problem.to_string(),
            });
        }
        // Record the charge on the agreement first, with the key: a
        // cancelled agreement refuses it (conflict-checked against a
        // concurrent cancel), a twin request finds the key taken.
        let idem = Idem::begin(
            key.as_ref()
                .map(|k| k.begin(Some(&order_stream(order_id)), self.clock.now())),
        );
        match self
            .execute::<AgreementAggregate>(&stream, &ctx.metadata(), idem, Some(held), |_| {
                AgreementCommand::Charge { order_id, amount }
            })
            .await
        {
            Ok(_) => {}
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => match &key {
                Some(k) => return self.replay(ctx, k, Resolves::Charge(agreement_id)).await,
                None => {
                    return Err(EngineError::Contention {
                        stream: stream.to_string(),
                        attempts: 1,
                    });
                }
            },
            Err(e @ EngineError::Agreement(_)) => {
                return self
                    .replay_or_refuse(ctx, key.as_ref(), Resolves::Charge(agreement_id), e)
                    .await;
            }
            Err(e) => return Err(e),
        }
        self.place_inner(
            ctx,
            order_id,
            charge_request(&c, amount),
            Some((agreement_id, reference)),
            key,
            Placement::Charge { send: true },
        )
        .instrument(self.command_span("charge_agreement", ctx, Some(order_id)))
        .await
    }

    /// The order a charge on `agreement_id` recorded for `stream` (the
    /// stream an idempotency record of the charge points at), if the
    /// agreement belongs to the merchant of `ctx` and records it.
    pub(crate) async fn charge_of(
        &self,
        agreement_id: AgreementId,
        stream: &crate::store::StreamId,
        ctx: &CommandContext,
    ) -> Result<Option<OrderId>, EngineError> {
        let (s, _) =
            load::<AgreementAggregate>(self.store.as_ref(), &agreement_stream(agreement_id))
                .await?;
        if s.merchant_id() != Some(&ctx.merchant_id) {
            return Ok(None);
        }
        Ok(s.charges
            .iter()
            .map(|(o, _)| *o)
            .find(|o| order_stream(*o) == *stream))
    }

    /// The charges of an agreement whose order has no events: a crash came
    /// between the agreement's `agreement_charged` and the order's
    /// placement (or the placement is on its way). One stream version read
    /// per charge: the reconciler asks only for agreements the open-work
    /// index lists.
    pub(crate) async fn unplaced_charges(
        &self,
        s: &AgreementState,
    ) -> Result<Vec<OrderId>, EngineError> {
        let mut out = Vec::new();
        for (order_id, _) in &s.charges {
            if self.store.stream_version(&order_stream(*order_id)).await? == Version::NONE {
                out.push(*order_id);
            }
        }
        Ok(out)
    }

    /// Completes a charge interrupted between the agreement's
    /// `agreement_charged` and its order's placement (nothing reached
    /// PayKKa): while the agreement is active the order is placed and
    /// PayKKa asked to authorise it, as the interrupted request would have
    /// done; once it is cancelling or cancelled, the order is placed and
    /// recorded declined with [`CHARGE_NOT_SENT_CODE`] without calling
    /// PayKKa. The one that appends the placement makes the call; an order
    /// placed meanwhile is left to whoever placed it (its view is
    /// returned). The reconciler calls this for charges it finds without an
    /// order; a request with the charge's idempotency key does the same
    /// once the record is stale (see [`super::idempotency`]). The merchant's
    /// labels of the interrupted request are not recorded (they are not
    /// stored with the charge).
    pub async fn resume_charge(
        &self,
        agreement_id: AgreementId,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        self.resume_charge_keyed(agreement_id, order_id, None).await
    }

    /// [`Engine::resume_charge`], completing `key` with the answer.
    pub(crate) async fn resume_charge_keyed(
        &self,
        agreement_id: AgreementId,
        order_id: OrderId,
        key: Option<&Key>,
    ) -> Result<OrderView, EngineError> {
        let not_found = || EngineError::NotFound {
            what: "charge",
            id: format!("{agreement_id}/{order_id}"),
        };
        let (s, _) =
            load::<AgreementAggregate>(self.store.as_ref(), &agreement_stream(agreement_id))
                .await?;
        let Some(c) = s.created.clone() else {
            return Err(not_found());
        };
        let Some(amount) = s
            .charges
            .iter()
            .find(|(o, _)| *o == order_id)
            .map(|(_, m)| *m)
        else {
            return Err(not_found());
        };
        let (order, _) =
            load::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        if order.placed().is_some() {
            return super::views::view_of(&order, order_id);
        }
        let ctx = CommandContext::new(c.merchant_id.as_str());
        let send = s.phase == AgreementPhase::Active;
        self.place_inner(
            &ctx,
            order_id,
            charge_request(&c, amount),
            Some((agreement_id, agreement_reference(&c))),
            key.cloned(),
            Placement::Charge { send },
        )
        .instrument(self.command_span("resume_charge", &ctx, Some(order_id)))
        .await
    }

    /// Cancels an agreement at PayKKa: no further charges.
    pub async fn cancel_agreement(
        &self,
        ctx: &CommandContext,
        agreement_id: AgreementId,
        reason: Option<String>,
    ) -> Result<AgreementView, EngineError> {
        let key = Key::of(ctx, cancel_fingerprint(agreement_id, &reason));
        let stream = agreement_stream(agreement_id);
        let held = load_timed::<AgreementAggregate>(self.store.as_ref(), &stream).await?;
        if AgreementView::from_state(&held.state).is_none_or(|v| v.merchant_id != ctx.merchant_id) {
            return Err(EngineError::NotFound {
                what: "agreement",
                id: agreement_id.to_string(),
            });
        }
        let meta = ctx.metadata();
        let idem = Idem::begin(
            key.as_ref()
                .map(|k| k.begin(Some(&stream), self.clock.now())),
        );
        let begun = match self
            .execute::<AgreementAggregate>(&stream, &meta, idem, Some(held), |_| {
                AgreementCommand::Cancel {
                    reason: reason.clone(),
                }
            })
            .await
        {
            Ok(done) => done,
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => match &key {
                Some(k) => return self.replay(ctx, k, Resolves::Agreement).await,
                None => {
                    return Err(EngineError::Contention {
                        stream: stream.to_string(),
                        attempts: 1,
                    });
                }
            },
            Err(e @ EngineError::Agreement(_)) => {
                return self
                    .replay_or_refuse(ctx, key.as_ref(), Resolves::Agreement, e)
                    .await;
            }
            Err(e) => return Err(e),
        };
        let view_of = |s: &AgreementState, t: StreamTimes| {
            AgreementView::from_state(s)
                .map(|v| v.with_times(t))
                .ok_or_else(|| EngineError::NotFound {
                    what: "agreement",
                    id: agreement_id.to_string(),
                })
        };
        if begun.events.is_empty() {
            // Already cancelled or cancelling: nothing to send.
            let view = view_of(&begun.state, begun.times)?;
            return self
                .record_alone(ctx, key.as_ref(), Some(&stream), Resolves::Agreement, view)
                .await;
        }
        let reference = begun
            .state
            .created
            .as_ref()
            .and_then(|c| c.recurring_agreement_ref.clone())
            .map(|r| r.0)
            .unwrap_or_default();
        let req = RecurringCancelRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            recurring_agreement_id: reference,
        };
        let gw = self.gateway.clone();
        let outcome = match self
            .call(
                "recurring_cancel",
                self.call_span("recurring_cancel", ctx, OrderId(agreement_id.0)),
                || gw.recurring_cancel(&req),
            )
            .await
        {
            GatewayOutcome::Success(()) => CallOutcome::Accepted(()),
            other => non_success(other),
        };
        let respond = |s: &AgreementState, t: StreamTimes| to_raw(&view_of(s, t)?);
        let idem = match &key {
            Some(k) => Idem::Complete(k, &respond as &Respond<'_, AgreementState>),
            None => Idem::None,
        };
        let done = self
            .execute::<AgreementAggregate>(&stream, &meta, idem, Some(begun.held()), |_| {
                AgreementCommand::RecordCancelOutcome(outcome.clone())
            })
            .await?;
        let view = view_of(&done.state, done.times)?;
        if done.events.is_empty() {
            return self.complete_alone(key.as_ref(), view).await;
        }
        Ok(view)
    }

    /// Resolves an agreement cancel that is in flight or whose outcome is
    /// unknown (the reconciler uses this). PayKKa has no agreement query,
    /// and a cancel is idempotent in effect (a cancelled agreement answers
    /// 2016, an unknown one 2015), so the cancel is sent again. Only a proof
    /// is recorded: success, 2015 or 2016 cancel the agreement; any other
    /// answer (refusal, timeout, 5xx) does not show that the first send
    /// failed and changes nothing. `Ok(true)` when the state changed.
    pub async fn resend_agreement_cancel(
        &self,
        agreement_id: AgreementId,
    ) -> Result<bool, EngineError> {
        let stream = agreement_stream(agreement_id);
        let (s, _) = load::<AgreementAggregate>(self.store.as_ref(), &stream).await?;
        let Some(c) = s.created.as_ref() else {
            return Ok(false);
        };
        if s.phase != AgreementPhase::Cancelling {
            return Ok(false);
        }
        let ctx = CommandContext::new(c.merchant_id.as_str());
        let req = RecurringCancelRequest {
            merchant_id: c.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            recurring_agreement_id: c
                .recurring_agreement_ref
                .as_ref()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
        };
        let gw = self.gateway.clone();
        let outcome = match self
            .call(
                "recurring_cancel",
                self.call_span("recurring_cancel", &ctx, OrderId(agreement_id.0)),
                || gw.recurring_cancel(&req),
            )
            .await
        {
            GatewayOutcome::Success(()) => CallOutcome::Accepted(()),
            GatewayOutcome::Declined { code, description }
            | GatewayOutcome::Rejected {
                code, description, ..
            } if agreement::proves_inactive(&code) => CallOutcome::Declined { code, description },
            _ => return Ok(false),
        };
        let events = self
            .execute::<AgreementAggregate>(&stream, &ctx.metadata(), Idem::None, None, |_| {
                AgreementCommand::RecordCancelOutcome(outcome.clone())
            })
            .await?
            .events;
        Ok(!events.is_empty())
    }
}

/// The payment a charge places: the agreement's token, merchant-initiated.
fn charge_request(
    c: &payorch_schemas::events::agreement::AgreementCreated,
    amount: Money,
) -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount,
        payment_type: PaymentKind::Recurring,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: CaptureMode::Automatic,
        payment: PaymentRequest::token(
            c.token.clone(),
            TokenUsage::Subscription,
            c.shopper_reference.clone(),
        ),
        store_token: None,
        return_url: None,
        browser: None,
    }
}

/// The agreement's PayKKa reference, sent with each charge.
fn agreement_reference(c: &payorch_schemas::events::agreement::AgreementCreated) -> Option<String> {
    c.recurring_agreement_ref
        .as_ref()
        .map(|r| r.as_str().to_owned())
}
