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
//!
//! [`MerchantWebhookVerifier`] implements the engine's
//! [`WebhookVerifier`] port on top of one [`WebhookReceiver`] per merchant
//! (the key and signature mode of the merchant the body names); payorch's
//! HTTP layer takes it as `Arc<dyn WebhookVerifier>`.

use std::collections::HashMap;

use payorch_engine::webhook::{WebhookRejection, WebhookVerifier};
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

/// The engine's [`WebhookVerifier`] port for every merchant this instance
/// serves: each notification is checked by a [`WebhookReceiver`] with the
/// PayKKa key and settings of the merchant the body names (`merchant_id`,
/// a string or a number). A notification naming no merchant, or one this
/// instance does not serve, is refused
/// ([`WebhookRejection::Unauthenticated`]) in every mode and nothing is
/// recorded.
///
/// Per merchant, the [`SignatureMode`] decides what a notification whose
/// signature or timestamp does not check out becomes: `Enforce` refuses it
/// ([`WebhookRejection::Unauthenticated`]); `Warn` (report-only) hands it
/// on as [`WebhookRejection::Unverified`], a hint that makes payorch query
/// PayKKa and never records the body's claims; `Off` skips the signature
/// check (the timestamp is still checked unless its tolerance is `0`).
#[derive(Debug, Default)]
pub struct MerchantWebhookVerifier {
    merchants: HashMap<String, MerchantWebhook>,
}

#[derive(Debug)]
struct MerchantWebhook {
    receiver: WebhookReceiver,
    mode: SignatureMode,
}

impl MerchantWebhookVerifier {
    /// Adds a merchant: its PayKKa public key, signature mode and
    /// timestamp tolerance in ms (`None`: the default ±5 min; `0`: off).
    pub fn merchant(
        mut self,
        merchant_id: &str,
        key: PaykkaPublicKey,
        mode: SignatureMode,
        tolerance_ms: Option<u64>,
    ) -> Self {
        let mut config = WebhookConfig {
            // Report-only is decided here, not by the receiver, so that a
            // failed check is known and the body is only a hint.
            signature: match mode {
                SignatureMode::Off => SignatureMode::Off,
                SignatureMode::Enforce | SignatureMode::Warn => SignatureMode::Enforce,
            },
            ..WebhookConfig::default()
        };
        if let Some(t) = tolerance_ms {
            config.timestamp_tolerance_ms = t;
        }
        self.merchants.insert(
            merchant_id.to_owned(),
            MerchantWebhook {
                receiver: WebhookReceiver::new(key, config),
                mode,
            },
        );
        self
    }
}

/// The `merchant_id` a notification body names (string or number), read
/// before the signature can be checked (the key depends on it).
fn named_merchant(raw_body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        merchant_id: Option<serde_json::Value>,
    }
    let peek: Peek = serde_json::from_slice(raw_body).ok()?;
    match peek.merchant_id? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl WebhookVerifier for MerchantWebhookVerifier {
    fn verify(
        &self,
        signature: Option<&str>,
        raw_body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Notification, WebhookRejection> {
        let Some(merchant_id) = named_merchant(raw_body) else {
            return Err(WebhookRejection::Unauthenticated(
                "notification names no merchant_id".into(),
            ));
        };
        let Some(m) = self.merchants.get(&merchant_id) else {
            return Err(WebhookRejection::Unauthenticated(format!(
                "notification names merchant {merchant_id}, which this instance does not serve"
            )));
        };
        let e = match m.receiver.handle_parts(signature, raw_body, now) {
            Ok(VerifiedNotification::Payment(p)) => return Ok(Notification::Payment(p)),
            Ok(VerifiedNotification::Refund(r)) => return Ok(Notification::Refund(r)),
            Err(e) => e,
        };
        // Exhaustive on purpose: a new WebhookError must be sorted here.
        match e {
            WebhookError::BodyTooLarge { .. } => Err(WebhookRejection::TooLarge),
            WebhookError::Malformed { .. } | WebhookError::MissingTimestamp => {
                Err(WebhookRejection::Malformed(e.to_string()))
            }
            WebhookError::MissingSignature
            | WebhookError::BadSignature(_)
            | WebhookError::StaleTimestamp { .. } => match m.mode {
                SignatureMode::Warn => match Notification::from_slice(raw_body) {
                    Ok(n) => Err(WebhookRejection::Unverified {
                        notification: Box::new(n),
                        reason: e.to_string(),
                    }),
                    Err(parse) => Err(WebhookRejection::Malformed(parse.to_string())),
                },
                SignatureMode::Enforce | SignatureMode::Off => {
                    Err(WebhookRejection::Unauthenticated(e.to_string()))
                }
            },
        }
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

#[cfg(all(test, feature = "aws-lc"))]
mod merchant_verifier_tests {
    use super::*;
    use crate::keys::generate_merchant_key_pair;
    use crate::signing::{RequestSigner, SigningConfig};

    const A: &str = "18356675194960";
    const B: &str = "29999999999999";

    struct Platform {
        signer: RequestSigner,
        public: PaykkaPublicKey,
    }

    fn platform() -> Platform {
        let pair = generate_merchant_key_pair().expect("key pair");
        Platform {
            signer: RequestSigner::new(
                pair.private_key().expect("private key"),
                SigningConfig::default(),
            ),
            public: pair.public.clone(),
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn now_ms() -> u64 {
        u64::try_from(now().unix_timestamp_nanos() / 1_000_000).expect("after 1970")
    }

    fn body(merchant: serde_json::Value, timestamp: u64) -> Vec<u8> {
        serde_json::json!({
            "notify_type": "PAYMENT.SUCCESS", "timestamp": timestamp, "merchant_id": merchant,
            "trans_id": "T1", "order_id": "GW1", "status": "SUCCESS", "amount": 1000,
            "currency": "EUR"
        })
        .to_string()
        .into_bytes()
    }

    /// The `signature` header value for `body` signed by `p` as `merchant`.
    fn signed(p: &Platform, merchant: &str, body: &[u8]) -> String {
        let timestamp =
            serde_json::from_slice::<serde_json::Value>(body).expect("json")["timestamp"]
                .as_u64()
                .expect("timestamp");
        let s = p
            .signer
            .sign_raw_body(merchant, timestamp, body.to_vec())
            .expect("sign");
        s.signature_header().to_owned()
    }

    fn verifier(mode: SignatureMode, a: &Platform, b: &Platform) -> MerchantWebhookVerifier {
        MerchantWebhookVerifier::default()
            .merchant(A, a.public.clone(), mode, None)
            .merchant(B, b.public.clone(), mode, None)
    }

    #[test]
    fn each_notification_is_verified_with_the_key_of_the_merchant_it_names() {
        let (pa, pb) = (platform(), platform());
        let v = verifier(SignatureMode::Enforce, &pa, &pb);
        let for_a = body(A.into(), now_ms());
        let for_b = body(B.into(), now_ms());
        assert!(
            v.verify(Some(&signed(&pa, A, &for_a)), &for_a, now())
                .is_ok()
        );
        assert!(
            v.verify(Some(&signed(&pb, B, &for_b)), &for_b, now())
                .is_ok()
        );
        // B's body signed with A's key: refused.
        assert!(matches!(
            v.verify(Some(&signed(&pa, B, &for_b)), &for_b, now()),
            Err(WebhookRejection::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_numeric_merchant_id_names_the_merchant_too() {
        // PayKKa's v1.0 example sends merchant_id as a JSON number.
        let (pa, pb) = (platform(), platform());
        let v = verifier(SignatureMode::Enforce, &pa, &pb);
        let numeric = body(serde_json::json!(18_356_675_194_960_u64), now_ms());
        let r = v.verify(Some(&signed(&pa, A, &numeric)), &numeric, now());
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn an_unknown_or_missing_merchant_is_refused_in_every_mode() {
        let (pa, pb) = (platform(), platform());
        for mode in [
            SignatureMode::Enforce,
            SignatureMode::Warn,
            SignatureMode::Off,
        ] {
            let v = verifier(mode, &pa, &pb);
            let other = body("77777777777777".into(), now_ms());
            assert!(
                matches!(
                    v.verify(Some(&signed(&pa, "77777777777777", &other)), &other, now()),
                    Err(WebhookRejection::Unauthenticated(_))
                ),
                "{mode:?}"
            );
            let none = body(serde_json::Value::Null, now_ms());
            assert!(
                matches!(
                    v.verify(None, &none, now()),
                    Err(WebhookRejection::Unauthenticated(_))
                ),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn report_only_turns_a_failed_check_into_a_hint_never_a_fact() {
        let (pa, pb) = (platform(), platform());
        let v = verifier(SignatureMode::Warn, &pa, &pb);
        let forged = body(A.into(), now_ms());
        assert!(matches!(
            v.verify(Some(&signed(&pb, A, &forged)), &forged, now()),
            Err(WebhookRejection::Unverified { .. })
        ));
        // No signature at all: a hint too.
        assert!(matches!(
            v.verify(None, &forged, now()),
            Err(WebhookRejection::Unverified { .. })
        ));
        // Stale but correctly signed: a hint in report-only mode...
        let stale = body(A.into(), now_ms() - 3_600_000);
        assert!(matches!(
            v.verify(Some(&signed(&pa, A, &stale)), &stale, now()),
            Err(WebhookRejection::Unverified { .. })
        ));
        // ...refused when enforcing.
        let v = verifier(SignatureMode::Enforce, &pa, &pb);
        assert!(matches!(
            v.verify(Some(&signed(&pa, A, &stale)), &stale, now()),
            Err(WebhookRejection::Unauthenticated(_))
        ));
        // Off: no signature needed.
        let v = verifier(SignatureMode::Off, &pa, &pb);
        assert!(v.verify(None, &forged, now()).is_ok());
    }

    #[test]
    fn the_caller_clock_decides_freshness() {
        let (pa, pb) = (platform(), platform());
        let v = verifier(SignatureMode::Enforce, &pa, &pb);
        let fresh = body(A.into(), now_ms());
        let sig = signed(&pa, A, &fresh);
        assert!(v.verify(Some(&sig), &fresh, now()).is_ok());
        let an_hour_later = now() + time::Duration::hours(1);
        assert!(matches!(
            v.verify(Some(&sig), &fresh, an_hour_later),
            Err(WebhookRejection::Unauthenticated(_))
        ));
    }

    #[test]
    fn errors_are_sorted_by_kind_not_status_number() {
        let (pa, pb) = (platform(), platform());
        // No timestamp, signature not checked: malformed (freshness cannot
        // be decided), not unauthenticated.
        let v = verifier(SignatureMode::Off, &pa, &pb);
        let no_ts = serde_json::json!({
            "notify_type": "PAYMENT.SUCCESS", "merchant_id": A, "trans_id": "T1",
            "status": "SUCCESS", "amount": 1000, "currency": "EUR"
        })
        .to_string()
        .into_bytes();
        let r = v.verify(None, &no_ts, now());
        assert!(matches!(r, Err(WebhookRejection::Malformed(_))), "{r:?}");
        // Over the receiver's 64 KiB limit: too large, in every mode.
        let mut big = body(A.into(), now_ms());
        big.pop();
        big.extend_from_slice(format!(r#","pad":"{}"}}"#, "x".repeat(70_000)).as_bytes());
        for mode in [
            SignatureMode::Enforce,
            SignatureMode::Warn,
            SignatureMode::Off,
        ] {
            let v = verifier(mode, &pa, &pb);
            let r = v.verify(Some(&signed(&pa, A, &big)), &big, now());
            assert!(
                matches!(r, Err(WebhookRejection::TooLarge)),
                "{mode:?}: {r:?}"
            );
        }
    }
}
