//! Refunds (endpoints.md §11–§12): [`RefundRequest`], [`RefundQueryRequest`]
//! and the refund object [`RefundResponse`] both answer with. Refunds are
//! asynchronous: `REVIEWING`/`PROCESSING` first, then `SUCCESS`/`FAILURE`.

use serde::{Deserialize, Serialize};

use super::enums::{Reason, RefundStatus};
use super::objects::wire_money;
use super::wire;
use crate::money::{Currency, Money, MoneyError};

/// Refund (退款), `POST /refund` (endpoints.md §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    /// Your unique refund number, ≤ 64; idempotency key, never reuse.
    #[serde(deserialize_with = "wire::string_or_number")]
    pub refund_trans_id: String,
    /// The original payment `order_id` (`GW…`).
    #[serde(deserialize_with = "wire::string_or_number")]
    pub ori_order_id: String,
    /// Minor units, > 0, ≤ refundable balance.
    #[serde(with = "wire::amount")]
    pub refund_amount: i64,
    /// The original currency.
    pub currency: Currency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
}

impl RefundRequest {
    /// `refund_amount` + `currency` as [`Money`].
    pub fn amount_money(&self) -> Money {
        Money::new(self.refund_amount, self.currency)
    }
}

/// Refund query (退款查询), `POST /refund/query` (endpoints.md §12):
/// `refund_trans_id` and/or `refund_order_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundQueryRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub refund_trans_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub refund_order_id: Option<String>,
}

/// The refund object (`data` of refund and refund query, endpoints.md
/// §11–§12). `currency` is text, like every response (see
/// [`super::payment`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefundResponse {
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub merchant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub refund_trans_id: Option<String>,
    /// PayKKa refund number (`RG…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub refund_order_id: Option<String>,
    /// Original payment order (`GW…`), when echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub ori_order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RefundStatus>,
    /// Refunded amount in minor units.
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Fields this version does not know, kept verbatim (read liberally:
    /// a newer PayKKa answer loses nothing). Empty for what we build.
    #[serde(flatten, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

impl RefundResponse {
    /// `amount` + `currency` as [`Money`]; `Ok(None)` when either is absent.
    pub fn amount_money(&self) -> Result<Option<Money>, MoneyError> {
        wire_money(self.amount, self.currency.as_deref())
    }
}
