//! The PaymentGateway port: every PayKKa v1.2 operation, with typed
//! outcomes.
//!
//! An adapter (`payorch-paykka`) signs, sends and classifies per
//! codes.md §5 into a [`GatewayOutcome`]:
//!
//! * `Success` — PayKKa accepted the request (`ret_code 000000`); the data
//!   may still say `FAILURE` (a decline inside a 200), which the engine reads.
//! * `Declined` — PayKKa or the issuer refused (FINAL_DECLINE).
//! * `NotSent` — the request provably never left (connection refused, DNS
//!   or TLS failure, connect timeout): PayKKa cannot have acted. Safe to
//!   resend; after the engine's bounded resends the attempt is recorded
//!   declined with code `PAYKKA_UNREACHABLE`, never as unknown.
//! * `Retryable` — PayKKa answered that nothing was processed
//!   (RETRY_BACKOFF, RETRY_ONCE, HTTP 429): safe to resend.
//! * `Unknown` — we cannot know whether PayKKa acted (UNKNOWN_QUERY):
//!   never treated as a failure; the engine records `*OutcomeUnknown` and
//!   the reconciler queries.
//! * `Rejected` — our request or configuration is wrong (FINAL_REQUEST,
//!   FINAL_CONFIG, NEED_NEW_CARD_DATA, NOT_FOUND); do not resend unchanged.
//!
//! The codes.md §5 table itself (which `ret_code` is which [`OutcomeClass`])
//! lives in the PayKKa adapter (`payorch-paykka`, `client/outcome.rs`,
//! `classify_code`, with a table-driven test over every code of codes.md):
//! one copy, next to the HTTP handling it belongs to. The engine only
//! names the classes.
//! [`fake::FakeGateway`] is a scriptable in-memory gateway for tests.

use async_trait::async_trait;
use payorch_schemas::Money;
use payorch_schemas::events::{
    CardSummary, GatewayOrderId, GatewayRefundId, RecurringAgreementRef, RefundId,
};
use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionQueryResponse, CheckoutSessionRequest, CheckoutSessionResponse, InitiateRequest,
    PaymentNotification, PaymentResponse, QueryRequest, RecurringCancelRequest, RefundNotification,
    RefundQueryRequest, RefundRequest, RefundResponse, TokenQueryRequest, TokenQueryResponse,
    TokenRemoveRequest, VoidRequest,
};

use crate::order::{
    Balances, ObservationSource, ObservedRefundStatus, ObservedStatus, PaymentObservation,
    RefundObservation,
};

pub mod fake;

/// Why a request was rejected for good (codes.md §5 classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectionClass {
    /// FINAL_REQUEST: our request is wrong; fix the data.
    Request,
    /// FINAL_CONFIG: keys, merchant, path or permission; alert operations.
    Config,
    /// NEED_NEW_CARD_DATA: the (encrypted) card data is unusable.
    NeedNewCardData,
    /// NOT_FOUND: PayKKa does not know the id (206024 / 206011).
    NotFound,
}

impl RejectionClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionClass::Request => "FINAL_REQUEST",
            RejectionClass::Config => "FINAL_CONFIG",
            RejectionClass::NeedNewCardData => "NEED_NEW_CARD_DATA",
            RejectionClass::NotFound => "NOT_FOUND",
        }
    }
}

/// The outcome of one PayKKa call.
#[derive(Clone, Debug, PartialEq)]
pub enum GatewayOutcome<T> {
    Success(T),
    Declined {
        code: String,
        description: String,
    },
    /// The request never left this process's connection attempt (see
    /// the module docs).
    NotSent {
        reason: String,
    },
    Retryable {
        reason: String,
    },
    Unknown {
        reason: String,
    },
    Rejected {
        class: RejectionClass,
        code: String,
        description: String,
    },
}

impl<T> GatewayOutcome<T> {
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayOutcome::Success(_) => "success",
            GatewayOutcome::Declined { .. } => "declined",
            GatewayOutcome::NotSent { .. } => "not_sent",
            GatewayOutcome::Retryable { .. } => "retryable",
            GatewayOutcome::Unknown { .. } => "unknown",
            GatewayOutcome::Rejected { .. } => "rejected",
        }
    }
}

/// The class of a PayKKa answer (codes.md §5), for adapters (the table
/// that maps codes to classes is the adapter's, see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeClass {
    Ok,
    FinalDecline,
    Rejected(RejectionClass),
    RetryBackoff,
    RetryOnce,
    UnknownQuery,
}

/// Every PayKKa v1.2 operation (endpoints.md §0). Implementations never
/// panic and never return `Declined` or `Rejected` when PayKKa may have
/// acted: that is `Unknown`.
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    async fn initiate(&self, req: &InitiateRequest) -> GatewayOutcome<PaymentResponse>;
    async fn query(&self, req: &QueryRequest) -> GatewayOutcome<PaymentResponse>;
    async fn capture(&self, req: &CaptureRequest) -> GatewayOutcome<PaymentResponse>;
    async fn void(&self, req: &VoidRequest) -> GatewayOutcome<PaymentResponse>;
    async fn refund(&self, req: &RefundRequest) -> GatewayOutcome<RefundResponse>;
    async fn refund_query(&self, req: &RefundQueryRequest) -> GatewayOutcome<RefundResponse>;
    async fn token_query(&self, req: &TokenQueryRequest) -> GatewayOutcome<TokenQueryResponse>;
    async fn token_remove(&self, req: &TokenRemoveRequest) -> GatewayOutcome<()>;
    async fn recurring_cancel(&self, req: &RecurringCancelRequest) -> GatewayOutcome<()>;
    async fn apple_pay_session(
        &self,
        req: &ApplePaySessionRequest,
    ) -> GatewayOutcome<ApplePaySessionResponse>;
    async fn checkout_session_create(
        &self,
        req: &CheckoutSessionRequest,
    ) -> GatewayOutcome<CheckoutSessionResponse>;
    async fn checkout_session_query(
        &self,
        req: &CheckoutSessionQueryRequest,
    ) -> GatewayOutcome<CheckoutSessionQueryResponse>;
}

fn card_summary(info: Option<&payorch_schemas::paykka::CardInfo>) -> Option<CardSummary> {
    info.map(|c| CardSummary {
        brand: c.card_brand.as_ref().map(|b| b.as_str().to_owned()),
        bin: c.bin.clone(),
        last4: c.last4.clone(),
        exp_month: None,
        exp_year: None,
    })
}

fn balances(b: Option<&payorch_schemas::paykka::Balances>) -> Option<Balances> {
    b.map(|b| Balances {
        authed: b.authed_amount.unwrap_or(0),
        captured: b.captured_amount.unwrap_or(0),
        refunded: b.refunded_amount.unwrap_or(0),
        voided: b.voided_amount.unwrap_or(0),
    })
}

/// A payment response (initiate, query, capture, void) in engine terms.
pub fn payment_observation(r: &PaymentResponse, source: ObservationSource) -> PaymentObservation {
    PaymentObservation {
        source,
        status: r
            .status
            .as_ref()
            .map(|s| ObservedStatus::parse(s.as_str()))
            .unwrap_or(ObservedStatus::Other(String::new())),
        gateway_order_id: r.order_id.clone().map(GatewayOrderId::from),
        amount: r.amount_money().ok().flatten(),
        card: card_summary(r.card_info.as_ref()),
        past_grace: false,
        balances: balances(r.balances.as_ref()),
        authentication_url: r.pending_challenge_url().map(str::to_owned),
        error_code: r.error_code.clone().filter(|c| c != "0000"),
        error_description: r.error_description.clone(),
        token: r.token.clone(),
        shopper_reference: r.shopper_reference.clone(),
        recurring_agreement_ref: r.recurring_agreement_id.clone().map(RecurringAgreementRef),
    }
}

/// The payment a Checkout Session Query answer shows, in engine terms
/// (source `Query`). The answer carries the transaction's fields next to
/// the session's (endpoints.md §10); they are empty while the shopper has
/// not paid ("no transaction exists", flows.md §8). `Some` when there is a
/// transaction (`status` or `order_id`) that holds or may still hold money:
/// PROCESSING, AUTHORIZED, SUCCESS, the refund/reversal states, or a
/// status this version does not know (non-final, models.md §3). `None`
/// when there is none, or it ended without money (FAILURE, CANCELED).
pub fn session_payment_observation(q: &CheckoutSessionQueryResponse) -> Option<PaymentObservation> {
    if q.order.status.is_none() && q.order.order_id.is_none() {
        return None;
    }
    let obs = payment_observation(&q.order, ObservationSource::Query);
    match obs.status {
        ObservedStatus::Failure | ObservedStatus::Canceled => None,
        _ => Some(obs),
    }
}

/// A payment notification in engine terms.
pub fn notification_observation(n: &PaymentNotification) -> PaymentObservation {
    PaymentObservation {
        source: ObservationSource::Notification,
        status: n
            .effective_status()
            .map(|s| ObservedStatus::parse(s.as_str()))
            .unwrap_or(ObservedStatus::Other(String::new())),
        gateway_order_id: n.order_id.clone().map(GatewayOrderId::from),
        amount: n.amount_money().ok().flatten(),
        card: card_summary(n.card_info.as_ref()),
        past_grace: false,
        balances: None,
        authentication_url: n
            .authentication_result
            .as_ref()
            .and_then(|a| a.pending_challenge_url())
            .map(str::to_owned),
        error_code: n.error_code.clone().filter(|c| c != "0000"),
        error_description: n.error_description.clone(),
        token: n.token.clone(),
        shopper_reference: n.shopper_reference.clone(),
        recurring_agreement_ref: n.recurring_agreement_id.clone().map(RecurringAgreementRef),
    }
}

/// A refund response or query result in engine terms.
pub fn refund_observation(
    r: &RefundResponse,
    refund_id: RefundId,
    source: ObservationSource,
) -> RefundObservation {
    RefundObservation {
        source,
        refund_id,
        status: r
            .status
            .as_ref()
            .map(|s| ObservedRefundStatus::parse(s.as_str()))
            .unwrap_or(ObservedRefundStatus::Other(String::new())),
        gateway_refund_id: r.refund_order_id.clone().map(GatewayRefundId),
        error_code: r.error_code.clone().filter(|c| c != "0000"),
        error_description: r.error_description.clone(),
    }
}

/// A refund notification in engine terms.
pub fn refund_notification_observation(
    n: &RefundNotification,
    refund_id: RefundId,
) -> RefundObservation {
    RefundObservation {
        source: ObservationSource::Notification,
        refund_id,
        status: n
            .effective_status()
            .map(|s| ObservedRefundStatus::parse(s.as_str()))
            .unwrap_or(ObservedRefundStatus::Other(String::new())),
        gateway_refund_id: n.refund_order_id.clone().map(GatewayRefundId),
        error_code: n.error_code.clone().filter(|c| c != "0000"),
        error_description: n.error_description.clone(),
    }
}

/// Helper for fakes and tests: a payment response with a status, order id
/// and amount.
pub fn payment_response(status: &str, order_id: &str, amount: Money) -> PaymentResponse {
    let json = serde_json::json!({
        "status": status,
        "order_id": order_id,
        "amount": amount.minor,
        "currency": amount.currency.code(),
        "error_code": "0000",
    });
    serde_json::from_value(json).unwrap_or_default()
}
