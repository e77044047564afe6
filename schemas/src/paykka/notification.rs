//! Notifications PayKKa POSTs to our `notify_url` (endpoints.md §13–§14):
//! [`PaymentNotification`], [`RefundNotification`] and the router
//! [`Notification`]. Answer each with [`super::Ack::success`].
//!
//! `timestamp` may be seconds or milliseconds (models.md §15): read it via
//! `timestamp_ms()`.

use serde::{Deserialize, Serialize};

use super::enums::{GatewayOrderStatus, NotifyType, RefundStatus};
use super::objects::{AuthenticationResult, CardInfo, PaymentInfo, wire_money};
use super::wire::{self, PaykkaDateTime, normalize_timestamp_ms};
use crate::money::{Money, MoneyError};

/// Transaction result notification (交易结果通知, endpoints.md §13).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaymentNotification {
    /// Seconds or milliseconds; see [`Self::timestamp_ms`].
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Read it via [`Self::kind`], which falls back to `event_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_type: Option<NotifyType>,
    /// The v3 name of `notify_type` (kept apart, not aliased, so a body with
    /// both keys still parses and re-serializes unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<NotifyType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub merchant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub trans_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<GatewayOrderStatus>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_finish_time: Option<PaykkaDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<PaykkaDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub recurring_agreement_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub shopper_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_result: Option<AuthenticationResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_info: Option<CardInfo>,
    /// Fields this version does not know, kept verbatim (read liberally:
    /// a newer PayKKa answer loses nothing). Empty for what we build.
    #[serde(flatten, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

impl PaymentNotification {
    /// `timestamp` in epoch milliseconds (seconds are scaled up).
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp.map(normalize_timestamp_ms)
    }

    /// `status`, or the status `notify_type` (or `event_type`) implies when `status` is
    /// absent (models.md §3).
    pub fn effective_status(&self) -> Option<GatewayOrderStatus> {
        self.status
            .clone()
            .or_else(|| self.kind().and_then(NotifyType::payment_status))
    }

    /// `notify_type`, else the v3 `event_type`.
    pub fn kind(&self) -> Option<&NotifyType> {
        self.notify_type.as_ref().or(self.event_type.as_ref())
    }

    /// `amount` + `currency` as [`Money`]; `Ok(None)` when either is absent.
    pub fn amount_money(&self) -> Result<Option<Money>, MoneyError> {
        wire_money(self.amount, self.currency.as_deref())
    }
}

/// Refund result notification (退款结果通知, endpoints.md §14).
///
/// Pitfall (endpoints.md §14): `trans_id` is **our refund number** (the
/// `refund_trans_id` of the refund request) and `order_id` is the
/// **original payment's** `GW…`; the v3 names `refund_trans_id` /
/// `ori_order_id` are kept in their own fields; read the ids via
/// [`RefundNotification::refund_trans_id`] and
/// [`RefundNotification::original_order_id`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefundNotification {
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Read it via [`Self::kind`], which falls back to `event_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_type: Option<NotifyType>,
    /// The v3 name of `notify_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<NotifyType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub merchant_id: Option<String>,
    /// Our `refund_trans_id` (read via [`Self::refund_trans_id`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub trans_id: Option<String>,
    /// v3 name of `trans_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub refund_trans_id: Option<String>,
    /// PayKKa refund number (`RG…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub refund_order_id: Option<String>,
    /// The original payment `GW…` (read via [`Self::original_order_id`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub order_id: Option<String>,
    /// v3 name of `order_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub ori_order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RefundStatus>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_finish_time: Option<PaykkaDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<PaykkaDateTime>,
    /// Fields this version does not know, kept verbatim (read liberally:
    /// a newer PayKKa answer loses nothing). Empty for what we build.
    #[serde(flatten, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

impl RefundNotification {
    /// `timestamp` in epoch milliseconds (seconds are scaled up).
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp.map(normalize_timestamp_ms)
    }

    /// `status`, or the status `notify_type` (or `event_type`) implies when it is absent.
    pub fn effective_status(&self) -> Option<RefundStatus> {
        self.status
            .clone()
            .or_else(|| self.kind().and_then(NotifyType::refund_status))
    }

    /// `notify_type`, else the v3 `event_type`.
    pub fn kind(&self) -> Option<&NotifyType> {
        self.notify_type.as_ref().or(self.event_type.as_ref())
    }

    /// Our refund number: `trans_id`, else the v3 `refund_trans_id`.
    pub fn refund_trans_id(&self) -> Option<&str> {
        self.trans_id.as_deref().or(self.refund_trans_id.as_deref())
    }

    /// The original payment's `GW…`: `order_id`, else the v3 `ori_order_id`.
    pub fn original_order_id(&self) -> Option<&str> {
        self.order_id.as_deref().or(self.ori_order_id.as_deref())
    }

    /// `amount` + `currency` as [`Money`]; `Ok(None)` when either is absent.
    pub fn amount_money(&self) -> Result<Option<Money>, MoneyError> {
        wire_money(self.amount, self.currency.as_deref())
    }
}

/// A notification body routed by flows.md §9 step 4: `notify_type`
/// starting with `REFUND.` (or, without a `notify_type`, the presence of
/// `refund_order_id`) is a refund; anything else a payment.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// Boxed to keep the enum small (the structs are hundreds of bytes).
    Payment(Box<PaymentNotification>),
    Refund(Box<RefundNotification>),
}

impl Notification {
    /// Parses and routes a raw notification body.
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(body)?;
        Notification::from_value(value)
    }

    /// Routes an already parsed JSON body.
    pub fn from_value(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        let kind = value
            .get("notify_type")
            .or_else(|| value.get("event_type"))
            .and_then(|v| v.as_str())
            .map(NotifyType::parse);
        let is_refund = match kind {
            Some(kind) => kind.is_refund(),
            None => value.get("refund_order_id").is_some(),
        };
        if is_refund {
            serde_json::from_value(value).map(|r| Notification::Refund(Box::new(r)))
        } else {
            serde_json::from_value(value).map(|p| Notification::Payment(Box::new(p)))
        }
    }
}
