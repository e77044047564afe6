//! Recurring agreements: view, merchant-initiated charges, cancel and the
//! reconciler's cancel resend.

use payorch_schemas::Money;
use payorch_schemas::events::{AgreementId, AuthorisationKind, CaptureMode, OrderId, PaymentKind};
use payorch_schemas::paykka::{PaymentRequest, RecurringCancelRequest, TokenUsage};
use tracing::Instrument;
use uuid::Uuid;

use super::idempotency::*;
use super::paykka_requests::*;
use super::*;
use crate::aggregate::AgreementAggregate;
use crate::agreement::{self, AgreementCommand, AgreementError, AgreementPhase};
use crate::gateway::GatewayOutcome;
use crate::order::CallOutcome;
use crate::read::{agreement_stream, load};
use crate::view::{AgreementView, OrderView};

impl Engine {
    /// The current view of an agreement of this merchant.
    pub async fn get_agreement(
        &self,
        ctx: &CommandContext,
        agreement_id: AgreementId,
    ) -> Result<AgreementView, EngineError> {
        let (s, _) =
            load::<AgreementAggregate>(self.store.as_ref(), &agreement_stream(agreement_id))
                .await?;
        let not_found = || EngineError::NotFound {
            what: "agreement",
            id: agreement_id.to_string(),
        };
        let c = s.created.as_ref().ok_or_else(not_found)?;
        if c.merchant_id != ctx.merchant_id {
            return Err(not_found());
        }
        Ok(AgreementView {
            agreement_id,
            merchant_id: c.merchant_id.clone(),
            status: s.phase,
            first_order_id: c.first_order_id,
            shopper_reference: c.shopper_reference.clone(),
            charges: s.charges.iter().map(|(o, _)| *o).collect(),
            version: s.version,
        })
    }

    /// A merchant-initiated charge on an active agreement: a new order
    /// paying with the agreement's token (`mit: true`).
    pub async fn charge_agreement(
        &self,
        ctx: &CommandContext,
        agreement_id: AgreementId,
        amount: Money,
    ) -> Result<OrderView, EngineError> {
        let stream = agreement_stream(agreement_id);
        let (s, _) = load::<AgreementAggregate>(self.store.as_ref(), &stream).await?;
        let Some(c) = s
            .created
            .clone()
            .filter(|c| c.merchant_id == ctx.merchant_id)
        else {
            return Err(EngineError::NotFound {
                what: "agreement",
                id: agreement_id.to_string(),
            });
        };
        if s.phase != AgreementPhase::Active {
            return Err(AgreementError::IllegalCommand {
                state: s.phase,
                command: "charge",
            }
            .into());
        }
        let order_id = OrderId(Uuid::now_v7());
        let req = PlacePaymentRequest {
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
        };
        // A repeated request (same idempotency key and body) returns the
        // order it created, without recording a second charge.
        let fp = place_fingerprint(&req, &instrument_summary(&req.payment), Some(agreement_id));
        if let Some(stream) = self.check_idempotency(ctx, &fp).await? {
            return self.view_of_stream(ctx, &stream).await;
        }
        // Record the charge on the agreement first: a cancelled agreement
        // refuses it (conflict-checked against a concurrent cancel).
        self.execute::<AgreementAggregate>(&stream, &ctx.metadata(), None, |_| {
            AgreementCommand::Charge { order_id, amount }
        })
        .await?;
        let reference = c
            .recurring_agreement_ref
            .as_ref()
            .map(|r| r.as_str().to_owned());
        self.place_inner(ctx, order_id, req, Some((agreement_id, reference)))
            .instrument(self.command_span("charge_agreement", ctx, Some(order_id)))
            .await
    }

    /// Cancels an agreement at PayKKa: no further charges.
    pub async fn cancel_agreement(
        &self,
        ctx: &CommandContext,
        agreement_id: AgreementId,
        reason: Option<String>,
    ) -> Result<AgreementView, EngineError> {
        let stream = agreement_stream(agreement_id);
        let view = self.get_agreement(ctx, agreement_id).await?;
        let meta = ctx.metadata();
        let (s, events) = self
            .execute::<AgreementAggregate>(&stream, &meta, None, |_| AgreementCommand::Cancel {
                reason: reason.clone(),
            })
            .await?;
        if events.is_empty() && s.phase == AgreementPhase::Cancelled {
            return Ok(view);
        }
        let reference = s
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
        self.execute::<AgreementAggregate>(&stream, &meta, None, |_| {
            AgreementCommand::RecordCancelOutcome(outcome.clone())
        })
        .await?;
        self.get_agreement(ctx, agreement_id).await
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
        let (_, events) = self
            .execute::<AgreementAggregate>(&stream, &ctx.metadata(), None, |_| {
                AgreementCommand::RecordCancelOutcome(outcome.clone())
            })
            .await?;
        Ok(!events.is_empty())
    }
}
