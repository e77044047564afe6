//! Read models of the merchant API: what the HTTP API, the CLI and replay
//! show of an order, an agreement and a checkout session.

use std::collections::BTreeMap;

use payorch_schemas::Money;
use payorch_schemas::events::{
    AgreementId, CaptureMode, CardSummary, CheckoutId, MerchantId, OrderId, PaymentKind,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::agreement::{AgreementPhase, AgreementState};
use crate::checkout::{CheckoutPhase, CheckoutState};
use crate::order::{CallProgress, CaptureEntry, OrderState, Phase, RefundEntry};

/// What every resource view shows beside its own fields: the merchant's
/// labels and the recorded times of the resource's first and latest
/// events. Flattened into the views, so their JSON carries the four fields
/// at the top level, each left out when empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    /// The merchant's own reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_reference: Option<String>,
    /// The merchant's key/value labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Recorded time of the first event (the engine's commands and queries
    /// set it; [`crate::orchestrator::Engine::stamp`] otherwise).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub created_at: Option<OffsetDateTime>,
    /// Recorded time of the event at the view's `version`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub updated_at: Option<OffsetDateTime>,
}

impl Labels {
    /// The merchant's labels, no times yet.
    pub fn new(merchant_reference: Option<String>, metadata: BTreeMap<String, String>) -> Labels {
        Labels {
            merchant_reference,
            metadata,
            created_at: None,
            updated_at: None,
        }
    }
}

/// What the HTTP API and the CLI show of an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderView {
    pub order_id: OrderId,
    pub merchant_id: MerchantId,
    pub trans_id: String,
    pub status: Phase,
    pub amount: Money,
    pub authorised: Money,
    pub captured: Money,
    pub refunded: Money,
    pub payment_type: PaymentKind,
    pub capture_method: CaptureMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement_id: Option<AgreementId>,
    pub captures: Vec<CaptureEntry>,
    pub refunds: Vec<RefundEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub void: Option<CallProgress>,
    /// The merchant's labels and the recorded times (flattened: the JSON
    /// keeps the four fields at this level).
    #[serde(flatten)]
    pub labels: Labels,
    /// Stream version the view was built from.
    pub version: u64,
}

impl OrderView {
    /// `None` for an order with no events.
    pub fn from_state(s: &OrderState) -> Option<OrderView> {
        let o = s.order()?;
        let p = &*o.placed;
        Some(OrderView {
            order_id: p.order_id,
            merchant_id: p.merchant_id.clone(),
            trans_id: p.trans_id.as_str().to_owned(),
            status: o.phase(),
            amount: p.amount,
            authorised: o.money(o.authorised),
            captured: o.money(o.captured),
            refunded: o.money(o.refunded),
            payment_type: p.payment_type,
            capture_method: p.capture_method,
            gateway_order_id: o.gateway_order_id.as_ref().map(|g| g.as_str().to_owned()),
            authentication_url: o.authentication_url.clone(),
            decline_code: o.decline.as_ref().map(|d| d.0.clone()),
            decline_description: o.decline.as_ref().map(|d| d.1.clone()),
            card: o.card.as_ref().or(p.instrument.card.as_ref()).cloned(),
            token: o.token.as_ref().map(|t| t.token.clone()),
            // A charge names its agreement; a first recurring payment that
            // stored its card created the agreement with its own id (see
            // `after_order_change`).
            agreement_id: p.agreement_id.or_else(|| {
                (p.payment_type == PaymentKind::Recurring && o.token.is_some())
                    .then_some(AgreementId(p.order_id.0))
            }),
            captures: o.captures.clone(),
            refunds: o.refunds.clone(),
            void: o.void,
            labels: Labels::new(p.merchant_reference.clone(), p.metadata.clone()),
            version: o.version,
        })
    }
}

/// What the API shows of an agreement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgreementView {
    pub agreement_id: AgreementId,
    pub merchant_id: MerchantId,
    pub status: AgreementPhase,
    pub first_order_id: OrderId,
    pub shopper_reference: String,
    pub charges: Vec<OrderId>,
    /// The merchant's labels and the recorded times (flattened: the JSON
    /// keeps the four fields at this level).
    #[serde(flatten)]
    pub labels: Labels,
    pub version: u64,
}

/// What the API shows of a checkout session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckoutView {
    pub checkout_id: CheckoutId,
    pub merchant_id: MerchantId,
    pub status: CheckoutPhase,
    pub amount: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    /// When the session expires (the request's, or the default resolved
    /// when it was created).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The merchant's labels and the recorded times (flattened: the JSON
    /// keeps the four fields at this level).
    #[serde(flatten)]
    pub labels: Labels,
    pub version: u64,
}

impl AgreementView {
    /// `None` for an agreement with no events.
    pub fn from_state(s: &AgreementState) -> Option<AgreementView> {
        let c = s.created.as_ref()?;
        Some(AgreementView {
            agreement_id: c.agreement_id,
            merchant_id: c.merchant_id.clone(),
            status: s.phase,
            first_order_id: c.first_order_id,
            shopper_reference: c.shopper_reference.clone(),
            charges: s.charges.iter().map(|(o, _)| *o).collect(),
            labels: Labels::new(c.merchant_reference.clone(), c.metadata.clone()),
            version: s.version,
        })
    }
}

impl CheckoutView {
    /// `None` for a session with no events.
    pub fn from_state(s: &CheckoutState) -> Option<CheckoutView> {
        let r = s.requested.as_ref()?;
        Some(CheckoutView {
            checkout_id: r.checkout_id,
            merchant_id: r.merchant_id.clone(),
            status: s.phase,
            amount: r.amount,
            session_id: s.created.as_ref().map(|c| c.session_id.as_str().to_owned()),
            session_url: s.created.as_ref().and_then(|c| c.session_url.clone()),
            order_id: s.order_id,
            expires_at: r.expires_at,
            labels: Labels::new(r.merchant_reference.clone(), r.metadata.clone()),
            version: s.version,
        })
    }
}
