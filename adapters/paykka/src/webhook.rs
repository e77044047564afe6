//! PayKKa notifications (endpoints.md §13–§14, flows.md §9) as a library
//! function for the HTTP layer: [`WebhookReceiver::handle`] takes the
//! headers, the raw body and the current time and returns a verified,
//! routed [`VerifiedNotification`] or a [`WebhookError`] that says which
//! HTTP status to answer.
//!
//! Checks, in order:
//!
//! 1. body size ≤ [`WebhookConfig::max_body_bytes`] (default 64 KiB);
//! 2. the `signature` header over
//!    `merchantId=<merchant_id>&timestamp=<timestamp>&requestBody=<raw body>`
//!    with PayKKa's public key, merchant id and timestamp taken from the top
//!    level of the body (authentication.md §5 hypothesis). Mode
//!    [`SignatureMode::Enforce`] by default: a bad signature is an error the
//!    caller turns into 401 with nothing recorded;
//! 3. parse and route: `notify_type` starting with `REFUND.` (or, without
//!    one, a `refund_order_id`) is a refund, anything else a payment;
//! 4. the body `timestamp` (seconds or milliseconds, models.md §15) within
//!    ± [`WebhookConfig::timestamp_tolerance_ms`] (default 5 min) of `now`.
//!
//! Deduplication and ordering are the engine's job (duplicates and late
//! deliveries change nothing once the state reflects them); this module
//! only proves the message is PayKKa's and fresh. Answer a verified
//! notification with [`ack_body`] (HTTP 200), a [`WebhookError`] with
//! [`WebhookError::http_status`] and [`reject_body`].

use payorch_schemas::paykka::{Notification, PaymentNotification, RefundNotification};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::client::SignatureMode;
use crate::keys::PaykkaPublicKey;
use crate::signing::{SIGNATURE_HEADER, VerifyError, verify_notification};

/// The acknowledgement PayKKa expects with HTTP 200.
pub const ACK_BODY: &str = r#"{"ret_code":"000000","ret_msg":"Success"}"#;
/// The answer to a notification whose signature did not verify (HTTP 401),
/// as the reference client sends it.
pub const REJECT_BODY: &str = r#"{"ret_code":"401","ret_msg":"Invalid signature"}"#;

/// `{"ret_code":"000000","ret_msg":"Success"}`: answer with HTTP 200.
pub fn ack_body() -> &'static str {
    ACK_BODY
}

/// `{"ret_code":"401","ret_msg":"Invalid signature"}`: answer with HTTP 401.
pub fn reject_body() -> &'static str {
    REJECT_BODY
}

/// Webhook settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Signature check; default [`SignatureMode::Enforce`].
    pub signature: SignatureMode,
    /// Accepted distance between the body `timestamp` and now, in ms
    /// (default 300 000 = ±5 min, authentication.md §6). `0` disables the
    /// check.
    pub timestamp_tolerance_ms: u64,
    /// Largest accepted body (default 65 536 bytes).
    pub max_body_bytes: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            signature: SignatureMode::Enforce,
            timestamp_tolerance_ms: 300_000,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Why a notification was refused. Nothing from it may be recorded as a
/// payment fact; answer [`WebhookError::http_status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The body is larger than the limit (HTTP 413). Either an attack or a
    /// limit set too low.
    #[error("notification body has {actual} bytes, limit {limit}")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
        /// The body size.
        actual: usize,
    },
    /// No `signature` header (HTTP 401).
    #[error("notification has no signature header")]
    MissingSignature,
    /// The signature does not verify with PayKKa's key (HTTP 401): forged,
    /// tampered, or the wrong platform key is configured.
    #[error("notification signature rejected: {0}")]
    BadSignature(#[source] VerifyError),
    /// The body is not a notification (not JSON, wrong field types) (HTTP 400).
    #[error("notification body is malformed: {reason}")]
    Malformed {
        /// The parser's complaint.
        reason: String,
    },
    /// The body has no `timestamp`, so freshness cannot be checked (HTTP 400).
    #[error("notification has no timestamp")]
    MissingTimestamp,
    /// The `timestamp` is outside the accepted window (HTTP 401): a replay
    /// or a badly skewed clock.
    #[error(
        "notification timestamp {timestamp_ms} ms is {skew_ms} ms away from now (tolerance {tolerance_ms} ms)"
    )]
    StaleTimestamp {
        /// The notification time, normalised to ms.
        timestamp_ms: i64,
        /// |timestamp − now| in ms.
        skew_ms: u64,
        /// The configured tolerance.
        tolerance_ms: u64,
    },
}

impl WebhookError {
    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            WebhookError::BodyTooLarge { .. } => 413,
            WebhookError::Malformed { .. } | WebhookError::MissingTimestamp => 400,
            WebhookError::MissingSignature
            | WebhookError::BadSignature(_)
            | WebhookError::StaleTimestamp { .. } => 401,
        }
    }

    /// A `{ret_code, ret_msg}` body for the answer.
    pub fn response_body(&self) -> String {
        match self {
            WebhookError::MissingSignature | WebhookError::BadSignature(_) => REJECT_BODY.into(),
            other => serde_json::json!({
                "ret_code": other.http_status().to_string(),
                "ret_msg": other.to_string(),
            })
            .to_string(),
        }
    }
}

/// A notification that passed the checks, routed by flows.md §9 step 4.
/// Boxed like [`Notification`] (the payment struct is ~800 bytes).
#[derive(Debug, Clone, PartialEq)]
pub enum VerifiedNotification {
    /// `PAYMENT.*` (transaction result, endpoints.md §13).
    Payment(Box<PaymentNotification>),
    /// `REFUND.*` (refund result, endpoints.md §14).
    Refund(Box<RefundNotification>),
}

impl VerifiedNotification {
    /// The `merchant_id` in the body.
    pub fn merchant_id(&self) -> Option<&str> {
        match self {
            VerifiedNotification::Payment(p) => p.merchant_id.as_deref(),
            VerifiedNotification::Refund(r) => r.merchant_id.as_deref(),
        }
    }

    /// The notification time in epoch ms (seconds are scaled up).
    pub fn timestamp_ms(&self) -> Option<i64> {
        match self {
            VerifiedNotification::Payment(p) => p.timestamp_ms(),
            VerifiedNotification::Refund(r) => r.timestamp_ms(),
        }
    }

    /// The authentication.md §6 dedupe key:
    /// `(notify_type, order_id | refund_order_id, status)`, joined by `|`.
    pub fn dedupe_key(&self) -> String {
        match self {
            VerifiedNotification::Payment(p) => format!(
                "{}|{}|{}",
                p.kind().map(|k| k.as_str()).unwrap_or(""),
                p.order_id
                    .as_deref()
                    .or(p.trans_id.as_deref())
                    .unwrap_or(""),
                p.effective_status()
                    .as_ref()
                    .map(|s| s.as_str())
                    .unwrap_or(""),
            ),
            VerifiedNotification::Refund(r) => format!(
                "{}|{}|{}",
                r.kind().map(|k| k.as_str()).unwrap_or(""),
                r.refund_order_id
                    .as_deref()
                    .or(r.refund_trans_id())
                    .unwrap_or(""),
                r.effective_status()
                    .as_ref()
                    .map(|s| s.as_str())
                    .unwrap_or(""),
            ),
        }
    }
}

/// Verifies and parses PayKKa notifications (see the module docs).
#[derive(Clone, Debug)]
pub struct WebhookReceiver {
    public_key: PaykkaPublicKey,
    config: WebhookConfig,
}

impl WebhookReceiver {
    /// A receiver verifying with PayKKa's platform `public_key`.
    pub fn new(public_key: PaykkaPublicKey, config: WebhookConfig) -> Self {
        Self { public_key, config }
    }

    /// The settings in use.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Checks and parses one delivery. `headers` as received (the
    /// `signature` header is read), `raw_body` exactly as received, `now`
    /// from the caller's clock.
    pub fn handle(
        &self,
        headers: &reqwest::header::HeaderMap,
        raw_body: &[u8],
        now: OffsetDateTime,
    ) -> Result<VerifiedNotification, WebhookError> {
        let signature = headers
            .get(SIGNATURE_HEADER)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        self.handle_parts(signature, raw_body, now)
    }

    /// [`Self::handle`] for HTTP layers with another header type: pass the
    /// `signature` header value, if any.
    pub fn handle_parts(
        &self,
        signature: Option<&str>,
        raw_body: &[u8],
        now: OffsetDateTime,
    ) -> Result<VerifiedNotification, WebhookError> {
        if raw_body.len() > self.config.max_body_bytes {
            return Err(WebhookError::BodyTooLarge {
                limit: self.config.max_body_bytes,
                actual: raw_body.len(),
            });
        }
        self.check_signature(signature, raw_body)?;
        let notification =
            Notification::from_slice(raw_body).map_err(|e| WebhookError::Malformed {
                reason: e.to_string(),
            })?;
        let verified = match notification {
            Notification::Payment(p) => VerifiedNotification::Payment(p),
            Notification::Refund(r) => VerifiedNotification::Refund(r),
        };
        self.check_timestamp(&verified, now)?;
        tracing::info!(
            merchant_id = verified.merchant_id().unwrap_or(""),
            key = %verified.dedupe_key(),
            "PayKKa notification accepted"
        );
        Ok(verified)
    }

    fn check_signature(
        &self,
        signature: Option<&str>,
        raw_body: &[u8],
    ) -> Result<(), WebhookError> {
        let mode = self.config.signature;
        if mode == SignatureMode::Off {
            return Ok(());
        }
        let result = match signature.map(str::trim).filter(|s| !s.is_empty()) {
            None => Err(WebhookError::MissingSignature),
            Some(s) => verify_notification(&self.public_key, raw_body, s)
                .map(|_| ())
                .map_err(WebhookError::BadSignature),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if mode == SignatureMode::Warn => {
                tracing::warn!(error = %e, "notification signature did not verify (report-only)");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "notification signature rejected");
                Err(e)
            }
        }
    }

    fn check_timestamp(
        &self,
        n: &VerifiedNotification,
        now: OffsetDateTime,
    ) -> Result<(), WebhookError> {
        let tolerance_ms = self.config.timestamp_tolerance_ms;
        if tolerance_ms == 0 {
            return Ok(());
        }
        let timestamp_ms = n.timestamp_ms().ok_or(WebhookError::MissingTimestamp)?;
        let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let skew_ms = timestamp_ms.abs_diff(now_ms);
        if skew_ms > tolerance_ms {
            return Err(WebhookError::StaleTimestamp {
                timestamp_ms,
                skew_ms,
                tolerance_ms,
            });
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "aws-lc"))]
mod tests {
    use super::*;
    use crate::keys::generate_merchant_key_pair;
    use crate::signing::{RequestSigner, SigningConfig};

    fn signed(body: &str) -> (PaykkaPublicKey, String) {
        let keys = generate_merchant_key_pair().unwrap();
        let signer = RequestSigner::new(keys.private_key().unwrap(), SigningConfig::default());
        let fields = crate::signing::notification_signed_fields(body.as_bytes()).unwrap();
        let s = signer
            .sign_raw_body(
                &fields.merchant_id,
                fields.timestamp,
                body.as_bytes().to_vec(),
            )
            .unwrap();
        (keys.public.clone(), s.signature_header().to_owned())
    }

    #[test]
    fn seconds_timestamp_and_refund_routing() {
        let body = r#"{"timestamp":1700000000,"notify_type":"REFUND.SUCCESS","merchant_id":"m1","trans_id":"r1","refund_order_id":"RG1","order_id":"GW1","status":"SUCCESS","amount":5,"currency":"EUR"}"#;
        let (key, sig) = signed(body);
        let rx = WebhookReceiver::new(key, WebhookConfig::default());
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_060).unwrap();
        match rx.handle_parts(Some(&sig), body.as_bytes(), now).unwrap() {
            VerifiedNotification::Refund(r) => assert_eq!(r.refund_trans_id(), Some("r1")),
            other => panic!("{other:?}"),
        }
        let late = OffsetDateTime::from_unix_timestamp(1_700_000_400).unwrap();
        assert!(matches!(
            rx.handle_parts(Some(&sig), body.as_bytes(), late),
            Err(WebhookError::StaleTimestamp {
                skew_ms: 400_000,
                ..
            })
        ));
        assert_eq!(
            rx.handle_parts(None, body.as_bytes(), now)
                .unwrap_err()
                .http_status(),
            401
        );
    }

    #[test]
    fn reject_body_literal() {
        assert_eq!(ack_body(), r#"{"ret_code":"000000","ret_msg":"Success"}"#);
        assert_eq!(
            WebhookError::MissingSignature.response_body(),
            r#"{"ret_code":"401","ret_msg":"Invalid signature"}"#
        );
    }
}
