//! Payments: place (initiate), capture, void, refund, 3DS return.

use payorch_schemas::Money;
use payorch_schemas::events::{
    AgreementId, AuthorisationKind, CaptureId, OrderEvent, OrderId, PaymentKind, RefundId,
    TokenPurpose,
};
use payorch_schemas::paykka::{
    AuthorisationType, CaptureRequest, InitiateRequest, Reason, RefundRequest, TokenUsage,
    VoidRequest,
};
use tracing::Instrument;
use uuid::Uuid;

use super::idempotency::*;
use super::paykka_requests::*;
use super::views::view_of;
use super::*;
use crate::gateway::{self, GatewayOutcome};
use crate::order::{
    CallOutcome, CapturePayment, ObservationSource, OrderCommand, OrderState, PlacePayment,
    RefundPayment,
};
use crate::read::order_stream;
use crate::store::{EventMetadata, StoreError};
use crate::view::OrderView;

/// What [`Engine::begin_order_call`] leaves to do.
pub(crate) enum Begun {
    /// Answer with this view; PayKKa is not called.
    Done(OrderView),
    /// The request events are appended: call PayKKa, then record.
    Call {
        state: OrderState,
        events: Vec<OrderEvent>,
        meta: EventMetadata,
    },
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
        self.place_inner(ctx, order_id, req, None)
            .instrument(self.command_span("place_payment", ctx, Some(order_id)))
            .await
    }

    pub(crate) async fn place_inner(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        req: PlacePaymentRequest,
        agreement: Option<(AgreementId, Option<String>)>,
    ) -> Result<OrderView, EngineError> {
        let summary = instrument_summary(&req.payment);
        let fp = place_fingerprint(&req, &summary, agreement.as_ref().map(|a| a.0));
        if let Some(stream) = self.check_idempotency(ctx, &fp).await? {
            return self.view_of_stream(ctx, &stream).await;
        }
        let stream = order_stream(order_id);
        let idem = self.idempotency_record(
            ctx,
            fp.clone(),
            &stream,
            &serde_json::json!({ "order_id": order_id }),
        )?;
        let place = PlacePayment {
            order_id,
            merchant_id: ctx.merchant_id.clone(),
            amount: req.amount,
            payment_type: req.payment_type,
            authorisation_type: req.authorisation_type,
            capture_method: req.capture_method,
            instrument: summary,
            store_token: req.store_token.clone(),
            agreement_id: agreement.as_ref().map(|a| a.0),
            checkout: None,
        };
        let meta = ctx.metadata();
        match self
            .order_command(order_id, &meta, idem, |_| {
                OrderCommand::Place(Box::new(place.clone()))
            })
            .await
        {
            Ok(_) => {}
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => {
                return self.replay_after_race(ctx, &fp).await;
            }
            Err(e) => return Err(e),
        }

        // The PayKKa call: card data goes from `req` into the request here.
        let mut initiate = InitiateRequest::new(
            ctx.merchant_id.as_str(),
            self.now_ms(),
            payment_type(req.payment_type),
            order_id.trans_id().as_str(),
            req.amount,
            req.payment,
        );
        initiate.capture_method = Some(capture_method(req.capture_method));
        initiate.authorisation_type = Some(match req.authorisation_type {
            AuthorisationKind::FinalAuth => AuthorisationType::FinalAuth,
            AuthorisationKind::PreAuth => AuthorisationType::PreAuth,
        });
        initiate.notify_url.clone_from(&self.config.notify_url);
        initiate.browser = req.browser;
        if let Some(t) = &req.store_token {
            initiate.payment.store_payment_method = Some(true);
            initiate.payment.token_usage = Some(match t.purpose {
                TokenPurpose::CardOnFile => TokenUsage::CardOnFile,
                TokenPurpose::Subscription => TokenUsage::Subscription,
            });
            initiate.payment.shopper_reference = Some(t.shopper_reference.clone());
        }
        match (&agreement, req.payment_type) {
            (Some((_, reference)), _) => {
                initiate.mit = Some(true);
                initiate.recurring_agreement_id.clone_from(reference);
            }
            (None, PaymentKind::Recurring) => initiate.mit = Some(false),
            (None, PaymentKind::Purchase) => {}
        }
        if agreement.is_none() {
            initiate.return_url = req
                .return_url
                .or_else(|| self.config.default_return_url.clone());
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
        let outcome = payment_outcome(outcome);
        let (state, _) = self
            .order_command(order_id, &meta, None, |_| {
                OrderCommand::RecordInitiateOutcome(outcome.clone())
            })
            .await?;
        OrderView::from_state(&state).ok_or(EngineError::NotFound {
            what: "order",
            id: order_id.to_string(),
        })
    }

    /// The first half of a merchant order command that calls PayKKa:
    /// idempotency check -> load -> decide + append the `*Requested` event
    /// (with the key's record). `Done` when there is nothing to call
    /// (repeated request, or an idempotency race another request won).
    pub(crate) async fn begin_order_call(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        fp: String,
        receipt: serde_json::Value,
        cmd: OrderCommand,
    ) -> Result<Begun, EngineError> {
        if let Some(stream) = self.check_idempotency(ctx, &fp).await? {
            return Ok(Begun::Done(self.view_of_stream(ctx, &stream).await?));
        }
        self.load_order(ctx, order_id).await?;
        let stream = order_stream(order_id);
        let idem = self.idempotency_record(ctx, fp.clone(), &stream, &receipt)?;
        let meta = ctx.metadata();
        match self
            .order_command(order_id, &meta, idem, |_| cmd.clone())
            .await
        {
            Ok((state, events)) => Ok(Begun::Call {
                state,
                events,
                meta,
            }),
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => {
                Ok(Begun::Done(self.replay_after_race(ctx, &fp).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// The second half: decide + append PayKKa's outcome, return the view.
    pub(crate) async fn finish_order_call(
        &self,
        order_id: OrderId,
        meta: &EventMetadata,
        cmd: OrderCommand,
    ) -> Result<OrderView, EngineError> {
        let (state, _) = self
            .order_command(order_id, meta, None, |_| cmd.clone())
            .await?;
        view_of(&state, order_id)
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
            let fp = fingerprint(&format!("capture|{order_id}|{amount:?}|{final_capture}"));
            let capture_id = CaptureId(Uuid::now_v7());
            let cmd = OrderCommand::Capture(CapturePayment {
                capture_id,
                amount,
                final_capture,
            });
            let receipt = serde_json::json!({ "capture_id": capture_id });
            let (state, meta) = match self
                .begin_order_call(ctx, order_id, fp, receipt, cmd)
                .await?
            {
                Begun::Done(view) => return Ok(view),
                Begun::Call { state, meta, .. } => (state, meta),
            };
            let Some(entry) = state.captures.iter().find(|c| c.capture_id == capture_id) else {
                return view_of(&state, order_id);
            };
            let req = CaptureRequest {
                merchant_id: ctx.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                order_id: gateway_order_id(&state),
                amount: Some(entry.amount.minor),
                currency: Some(entry.amount.currency),
                final_capture: None,
            };
            let gw = self.gateway.clone();
            let outcome = payment_outcome(
                self.call("capture", self.call_span("capture", ctx, order_id), || {
                    gw.capture(&req)
                })
                .await,
            );
            let cmd = OrderCommand::RecordCaptureOutcome {
                capture_id,
                outcome,
            };
            self.finish_order_call(order_id, &meta, cmd).await
        }
        .instrument(self.command_span("capture", ctx, Some(order_id)))
        .await
    }

    /// Voids (releases) an authorisation with nothing captured.
    pub async fn void(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        reason: Option<String>,
    ) -> Result<OrderView, EngineError> {
        async {
            let fp = fingerprint(&format!("void|{order_id}|{reason:?}"));
            let cmd = OrderCommand::Void {
                reason: reason.clone(),
            };
            let receipt = serde_json::json!({ "void": order_id });
            let (state, meta) = match self
                .begin_order_call(ctx, order_id, fp, receipt, cmd)
                .await?
            {
                Begun::Done(view) => return Ok(view),
                Begun::Call { state, events, .. } if events.is_empty() => {
                    return view_of(&state, order_id);
                }
                Begun::Call { state, meta, .. } => (state, meta),
            };
            let req = VoidRequest {
                merchant_id: ctx.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                order_id: gateway_order_id(&state),
                reason: reason.as_deref().map(Reason::parse),
            };
            let gw = self.gateway.clone();
            let outcome = payment_outcome(
                self.call("void", self.call_span("void", ctx, order_id), || {
                    gw.void(&req)
                })
                .await,
            );
            self.finish_order_call(order_id, &meta, OrderCommand::RecordVoidOutcome(outcome))
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
            let fp = fingerprint(&format!("refund|{order_id}|{amount:?}|{reason:?}"));
            let refund_id = RefundId(Uuid::now_v7());
            let cmd = OrderCommand::Refund(RefundPayment {
                refund_id,
                amount,
                reason: reason.clone(),
            });
            let receipt = serde_json::json!({ "refund_id": refund_id });
            let (state, meta) = match self
                .begin_order_call(ctx, order_id, fp, receipt, cmd)
                .await?
            {
                Begun::Done(view) => return Ok(view),
                Begun::Call { state, meta, .. } => (state, meta),
            };
            let Some(entry) = state.refunds.iter().find(|r| r.refund_id == refund_id) else {
                return view_of(&state, order_id);
            };
            let req = RefundRequest {
                merchant_id: ctx.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                refund_trans_id: entry.refund_trans_id.as_str().to_owned(),
                ori_order_id: gateway_order_id(&state),
                refund_amount: entry.amount.minor,
                currency: entry.amount.currency,
                reason: reason.as_deref().map(Reason::parse),
                notify_url: self.config.refund_notify_url.clone(),
            };
            let gw = self.gateway.clone();
            let outcome =
                match self
                    .call("refund", self.call_span("refund", ctx, order_id), || {
                        gw.refund(&req)
                    })
                    .await
                {
                    GatewayOutcome::Success(r) => CallOutcome::Accepted(
                        gateway::refund_observation(&r, refund_id, ObservationSource::Response),
                    ),
                    other => non_success(other),
                };
            let cmd = OrderCommand::RecordRefundOutcome {
                refund_id,
                outcome: Box::new(outcome),
            };
            self.finish_order_call(order_id, &meta, cmd).await
        }
        .instrument(self.command_span("refund", ctx, Some(order_id)))
        .await
    }

    /// The shopper is back from the 3DS page; the result follows by
    /// notification or query.
    pub async fn complete_challenge(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        self.load_order(ctx, order_id).await?;
        let (state, _) = self
            .order_command(order_id, &ctx.metadata(), None, |_| {
                OrderCommand::CompleteChallenge
            })
            .await?;
        OrderView::from_state(&state).ok_or(EngineError::NotFound {
            what: "order",
            id: order_id.to_string(),
        })
    }
}
