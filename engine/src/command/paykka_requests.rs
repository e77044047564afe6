//! Building PayKKa requests from commands and mapping PayKKa's answers to
//! call outcomes.

use payorch_schemas::events::order::InstrumentSummary;
use payorch_schemas::events::{CaptureMode, CardSummary, PaymentKind};
use payorch_schemas::paykka::{CaptureMethod, PaymentRequest, PaymentResponse, PaymentType};

use super::*;
use crate::gateway::{self, GatewayOutcome};
use crate::order::{self, CallOutcome, ObservationSource, OrderState};

pub(crate) fn instrument_summary(p: &PaymentRequest) -> InstrumentSummary {
    let card = p.card_no.as_ref().map(|n| CardSummary {
        brand: None,
        bin: n.bin().map(str::to_owned),
        last4: n.last4().map(str::to_owned),
        exp_month: p.exp_month.as_deref().and_then(|m| m.parse().ok()),
        exp_year: p.exp_year.as_deref().and_then(|y| y.parse().ok()),
    });
    InstrumentSummary {
        method: p.payment_method.as_str().to_owned(),
        card,
        token: p.token.clone(),
    }
}

pub(crate) fn payment_type(k: PaymentKind) -> PaymentType {
    match k {
        PaymentKind::Purchase => PaymentType::Purchase,
        PaymentKind::Recurring => PaymentType::Recurring,
    }
}

pub(crate) fn capture_method(c: CaptureMode) -> CaptureMethod {
    match c {
        CaptureMode::Automatic => CaptureMethod::Automatic,
        CaptureMode::Manual => CaptureMethod::Manual,
    }
}

pub(crate) fn payment_outcome(
    o: GatewayOutcome<PaymentResponse>,
) -> CallOutcome<order::PaymentObservation> {
    match o {
        GatewayOutcome::Success(r) => CallOutcome::Accepted(gateway::payment_observation(
            &r,
            ObservationSource::Response,
        )),
        other => non_success(other),
    }
}

pub(crate) fn non_success<T, U>(o: GatewayOutcome<T>) -> CallOutcome<U> {
    match o {
        GatewayOutcome::Success(_) => CallOutcome::Unknown {
            reason: "unexpected success mapping".into(),
        },
        GatewayOutcome::Declined { code, description } => {
            CallOutcome::Declined { code, description }
        }
        GatewayOutcome::Rejected {
            class,
            code,
            description,
        } => CallOutcome::Declined {
            code,
            description: format!("{}: {description}", class.as_str()),
        },
        // Nothing left this process: PayKKa cannot have acted, so the
        // attempt is over without money (see `EngineError::PaykkaUnreachable`).
        GatewayOutcome::NotSent { reason } => CallOutcome::Declined {
            code: NOT_SENT_CODE.to_owned(),
            description: format!("not sent: {reason}"),
        },
        GatewayOutcome::Retryable { reason } => CallOutcome::Unknown {
            reason: format!("not confirmed after retries: {reason}"),
        },
        GatewayOutcome::Unknown { reason } => CallOutcome::Unknown { reason },
    }
}

/// PayKKa's order id of an order (empty before PayKKa assigned one).
pub(crate) fn gateway_order_id(state: &OrderState) -> String {
    state
        .gateway_order_id()
        .map(|g| g.as_str().to_owned())
        .unwrap_or_default()
}

pub(crate) fn passthrough<T>(
    operation: &'static str,
    o: GatewayOutcome<T>,
) -> Result<T, EngineError> {
    let kind = o.kind();
    match o {
        GatewayOutcome::Success(t) => Ok(t),
        GatewayOutcome::Declined { code, description }
        | GatewayOutcome::Rejected {
            code, description, ..
        } => Err(EngineError::Gateway {
            operation,
            kind,
            code,
            description,
        }),
        GatewayOutcome::NotSent { reason } => {
            Err(EngineError::PaykkaUnreachable { operation, reason })
        }
        GatewayOutcome::Retryable { reason } | GatewayOutcome::Unknown { reason } => {
            Err(EngineError::Gateway {
                operation,
                kind,
                code: String::new(),
                description: reason,
            })
        }
    }
}

impl Engine {
    /// The Initiate request of a payment: card data moves from `req` into
    /// it (and leaves memory with it after the call).
    pub(crate) fn initiate_request(
        &self,
        ctx: &CommandContext,
        order_id: payorch_schemas::events::OrderId,
        req: PlacePaymentRequest,
        agreement: Option<&(payorch_schemas::events::AgreementId, Option<String>)>,
    ) -> payorch_schemas::paykka::InitiateRequest {
        use payorch_schemas::events::{AuthorisationKind, PaymentKind, TokenPurpose};
        use payorch_schemas::paykka::{AuthorisationType, InitiateRequest, TokenUsage};
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
        match (agreement, req.payment_type) {
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
        initiate
    }
}
