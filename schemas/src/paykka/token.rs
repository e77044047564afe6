//! Stored payment methods and agreements (endpoints.md §5–§8):
//! [`TokenQueryRequest`] / [`TokenQueryResponse`] / [`TokenInfo`],
//! [`TokenRemoveRequest`], [`RecurringCancelRequest`] and the Apple Pay
//! merchant-validation call [`ApplePaySessionRequest`] /
//! [`ApplePaySessionResponse`].
//!
//! Token remove and recurring cancel answer with `ret_code`/`ret_msg` only:
//! read them as [`super::Ack`] (or `Envelope<serde_json::Value>`).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::enums::{PaymentMethod, TokenUsage};
use super::objects::CardInfo;
use super::wire;

/// Token query (token查询), `POST /payments/token/query` (endpoints.md §5,
/// fields \[INFERRED\]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenQueryRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    /// ≤ 64, required.
    #[serde(deserialize_with = "wire::string_or_number")]
    pub shopper_reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub token: Option<String>,
}

/// One stored payment method (`TokenRespDto`, fields \[INFERRED\]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub shopper_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<PaymentMethod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_usage: Option<TokenUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_info: Option<CardInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp_year: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp_month: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub recurring_agreement_id: Option<String>,
}

/// `data` of a token query. The shape was not captured \[INFERRED\], so
/// parsing accepts a bare array of tokens, a single token object, or an
/// object holding the array under `tokens`, `token_list`, `list` or
/// `records`. It serializes as `{"shopper_reference":…,"tokens":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TokenQueryResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub shopper_reference: Option<String>,
    pub tokens: Vec<TokenInfo>,
}

const TOKEN_LIST_KEYS: [&str; 4] = ["tokens", "token_list", "list", "records"];

impl<'de> Deserialize<'de> for TokenQueryResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let parse_list = |v: serde_json::Value| {
            serde_json::from_value::<Vec<TokenInfo>>(v).map_err(D::Error::custom)
        };
        match value {
            serde_json::Value::Array(_) => Ok(TokenQueryResponse {
                shopper_reference: None,
                tokens: parse_list(value)?,
            }),
            serde_json::Value::Object(mut map) => {
                let shopper_reference = map
                    .get("shopper_reference")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                if let Some(key) = TOKEN_LIST_KEYS
                    .iter()
                    .find(|k| map.get(**k).is_some_and(serde_json::Value::is_array))
                {
                    let list = map.remove(*key).unwrap_or_default();
                    return Ok(TokenQueryResponse {
                        shopper_reference,
                        tokens: parse_list(list)?,
                    });
                }
                let single: TokenInfo = serde_json::from_value(serde_json::Value::Object(map))
                    .map_err(D::Error::custom)?;
                // A bare object is one token only if it names a token.
                let tokens = if single.token.is_some() {
                    vec![single]
                } else {
                    Vec::new()
                };
                Ok(TokenQueryResponse {
                    shopper_reference,
                    tokens,
                })
            }
            serde_json::Value::Null => Ok(TokenQueryResponse::default()),
            other => Err(D::Error::custom(format!(
                "token query data must be an object or an array, got {other}"
            ))),
        }
    }
}

/// Token remove (token删除), `POST /payments/token/remove` (endpoints.md §6,
/// \[DOC\]). The answer has no `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRemoveRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    /// ≤ 64.
    #[serde(deserialize_with = "wire::string_or_number")]
    pub token: String,
    /// ≤ 64.
    #[serde(deserialize_with = "wire::string_or_number")]
    pub shopper_reference: String,
}

/// Recurring agreement cancel (循环交易协议取消),
/// `POST /payments/recurring/cancel` (endpoints.md §7). No `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringCancelRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    #[serde(deserialize_with = "wire::string_or_number")]
    pub recurring_agreement_id: String,
}

/// Get Apple Pay session (获取ApplePay会话),
/// `POST /payments/apple-pay/create-session` (endpoints.md §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplePaySessionRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    /// ≤ 75; PayKKa default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Domain without scheme and port, e.g. `www.your-domain.com`.
    pub domain_name: String,
}

/// `data` of the Apple Pay session call: Apple's opaque merchant-session
/// object, which PayKKa documents as a string holding JSON (v3 sample)
/// \[INFERRED for v1.2\]. Kept as the raw JSON value (string or object) and
/// re-serialized unchanged; [`ApplePaySessionResponse::merchant_session`]
/// gives the object to hand to `completeMerchantValidation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApplePaySessionResponse(pub serde_json::Value);

impl ApplePaySessionResponse {
    /// The merchant session as JSON: a string payload is parsed, an object
    /// is returned as is.
    pub fn merchant_session(&self) -> Result<serde_json::Value, serde_json::Error> {
        match &self.0 {
            serde_json::Value::String(s) => serde_json::from_str(s),
            other => Ok(other.clone()),
        }
    }
}
