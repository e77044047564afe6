//! Settings of the PayKKa HTTP client, one [`MerchantConfig`] per merchant.
//!
//! Every point the spec tags \[INFERRED\] is a setting here with the spec's
//! value as default: the base URL prefix (`/apis`, README §2), each
//! operation's relative path (endpoints.md §0), the signature
//! percent-encoding and the body `version` field ([`SigningConfig`],
//! authentication.md §2–§3) and how strictly PayKKa's response signature
//! is checked ([`SignatureMode`], authentication.md §5).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keys::{MerchantPrivateKey, PaykkaPublicKey};
use crate::signing::SigningConfig;

/// Default base URL: the v1.2 sandbox host plus the \[INFERRED\] `/apis`
/// prefix (README §2). Use the host PayKKa gives you with your credentials.
pub const DEFAULT_BASE_URL: &str = "https://sandbox.aq.paykka.com/apis";

/// How strictly a PayKKa signature (response or notification) is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    /// A signature that does not verify makes the message untrusted: a
    /// response to a mutating call becomes `Unknown`, to a read
    /// `Retryable`; a notification is rejected.
    Enforce,
    /// Report-only: verify and log pass/fail (with the field candidate that
    /// matched), then use the message anyway. The default for responses
    /// while the response-signature scheme is unconfirmed
    /// (authentication.md §5).
    Warn,
    /// Do not verify.
    Off,
}

/// The relative path of each operation, appended to
/// [`MerchantConfig::base_url`]. Defaults: endpoints.md §0 "v1.2 path".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperationPaths {
    /// Initiate transaction (\[CODE\] `/payments`).
    pub initiate: String,
    /// Query transaction (\[INFERRED\] `/payments/query`).
    pub query: String,
    /// Capture (\[INFERRED\] `/payments/capture`).
    pub capture: String,
    /// Void (\[INFERRED\] `/payments/void`; alternative `/payments/cancel`).
    pub void: String,
    /// Token query (\[INFERRED\] `/payments/token/query`).
    pub token_query: String,
    /// Token remove (\[DOC\] `/payments/token/remove`).
    pub token_remove: String,
    /// Recurring agreement cancel (\[INFERRED\] `/payments/recurring/cancel`).
    pub recurring_cancel: String,
    /// Apple Pay session (\[INFERRED\] `/payments/apple-pay/create-session`).
    pub apple_pay_session: String,
    /// Checkout session create (\[CODE\] `/session`).
    pub session_create: String,
    /// Checkout session query (\[INFERRED\] `/session/query`).
    pub session_query: String,
    /// Refund (\[INFERRED\] `/refund`; alternative `/payments/refund`).
    pub refund: String,
    /// Refund query (\[INFERRED\] `/refund/query`).
    pub refund_query: String,
}

impl Default for OperationPaths {
    fn default() -> Self {
        Self {
            initiate: "/payments".into(),
            query: "/payments/query".into(),
            capture: "/payments/capture".into(),
            void: "/payments/void".into(),
            token_query: "/payments/token/query".into(),
            token_remove: "/payments/token/remove".into(),
            recurring_cancel: "/payments/recurring/cancel".into(),
            apple_pay_session: "/payments/apple-pay/create-session".into(),
            session_create: "/session".into(),
            session_query: "/session/query".into(),
            refund: "/refund".into(),
            refund_query: "/refund/query".into(),
        }
    }
}

impl OperationPaths {
    /// The configured path of `op`.
    pub fn get(&self, op: Operation) -> &str {
        match op {
            Operation::Initiate => &self.initiate,
            Operation::Query => &self.query,
            Operation::Capture => &self.capture,
            Operation::Void => &self.void,
            Operation::TokenQuery => &self.token_query,
            Operation::TokenRemove => &self.token_remove,
            Operation::RecurringCancel => &self.recurring_cancel,
            Operation::ApplePaySession => &self.apple_pay_session,
            Operation::SessionCreate => &self.session_create,
            Operation::SessionQuery => &self.session_query,
            Operation::Refund => &self.refund,
            Operation::RefundQuery => &self.refund_query,
        }
    }
}

/// Total time allowed per operation (send + wait + read the body), in
/// milliseconds. The connect timeout is client-wide
/// ([`super::ClientSettings::connect_timeout`]) because reqwest sets it per
/// connection pool, not per request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperationTimeouts {
    /// Initiate transaction (issuer + maybe 3DS lookup): 30 s.
    pub initiate_ms: u64,
    /// Capture: 20 s.
    pub capture_ms: u64,
    /// Void: 20 s.
    pub void_ms: u64,
    /// Refund: 20 s.
    pub refund_ms: u64,
    /// Token remove and recurring cancel: 20 s.
    pub token_and_agreement_ms: u64,
    /// Checkout session create: 20 s.
    pub session_create_ms: u64,
    /// Every read (transaction, refund, token and session query, Apple Pay
    /// session): 10 s.
    pub query_ms: u64,
}

impl Default for OperationTimeouts {
    fn default() -> Self {
        Self {
            initiate_ms: 30_000,
            capture_ms: 20_000,
            void_ms: 20_000,
            refund_ms: 20_000,
            token_and_agreement_ms: 20_000,
            session_create_ms: 20_000,
            query_ms: 10_000,
        }
    }
}

impl OperationTimeouts {
    /// The same total timeout for every operation (tests, benches).
    pub fn uniform(total: Duration) -> Self {
        let ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX);
        Self {
            initiate_ms: ms,
            capture_ms: ms,
            void_ms: ms,
            refund_ms: ms,
            token_and_agreement_ms: ms,
            session_create_ms: ms,
            query_ms: ms,
        }
    }

    /// The total timeout of `op`.
    pub fn get(&self, op: Operation) -> Duration {
        let ms = match op {
            Operation::Initiate => self.initiate_ms,
            Operation::Capture => self.capture_ms,
            Operation::Void => self.void_ms,
            Operation::Refund => self.refund_ms,
            Operation::TokenRemove | Operation::RecurringCancel => self.token_and_agreement_ms,
            Operation::SessionCreate => self.session_create_ms,
            Operation::Query
            | Operation::RefundQuery
            | Operation::TokenQuery
            | Operation::SessionQuery
            | Operation::ApplePaySession => self.query_ms,
        };
        Duration::from_millis(ms)
    }
}

/// When the client itself sends a request again (codes.md §5). Only reads
/// are ever repeated: a money-moving call (initiate, capture, void, refund,
/// session create, token remove, recurring cancel) is sent once per call,
/// and re-sending one is the engine's decision (its reconciler, after a
/// grace period, with the same `trans_id` / `refund_trans_id`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in total for a read that answers `Retryable` (429, 5xx,
    /// connection failure, `999999`), with exponential backoff and full
    /// jitter. `1` disables read retries. Default 3.
    pub read_attempts: u32,
    /// First backoff delay (ms); doubled per attempt. Default 200.
    pub backoff_base_ms: u64,
    /// Upper bound of one backoff delay (ms). Default 2000.
    pub backoff_max_ms: u64,
    /// On `206004`/`2001` (signature expired: PayKKa rejected the request,
    /// nothing happened) re-sign a **read** with a fresh timestamp and send
    /// it once more. A mutating call answered so comes back `Retryable`
    /// for the engine to decide. Default on.
    pub retry_once_on_stale_timestamp: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            read_attempts: 3,
            backoff_base_ms: 200,
            backoff_max_ms: 2_000,
            retry_once_on_stale_timestamp: true,
        }
    }
}

impl RetryPolicy {
    /// No client-side repeats at all, not even of reads.
    pub fn none() -> Self {
        Self {
            read_attempts: 1,
            backoff_base_ms: 0,
            backoff_max_ms: 0,
            retry_once_on_stale_timestamp: false,
        }
    }
}

/// Everything the client needs to call PayKKa for one merchant.
///
/// Keys are parsed once ([`MerchantPrivateKey`], [`PaykkaPublicKey`]) and
/// never printed (`Debug` masks the private key).
#[derive(Clone, Debug)]
pub struct MerchantConfig {
    /// PayKKa merchant number (digit string, ≤ 32).
    pub merchant_id: String,
    /// Signs every request.
    pub private_key: MerchantPrivateKey,
    /// PayKKa's platform key: verifies responses.
    pub paykka_public_key: PaykkaPublicKey,
    /// Host plus prefix, without trailing slash (default
    /// [`DEFAULT_BASE_URL`]).
    pub base_url: String,
    /// Relative path per operation.
    pub paths: OperationPaths,
    /// Percent-encoding of the signature header (on) and body `version`
    /// field (off).
    pub signing: SigningConfig,
    /// Response signature check (default [`SignatureMode::Warn`]).
    pub response_signature: SignatureMode,
    /// Total timeout per operation.
    pub timeouts: OperationTimeouts,
    /// Client-side repeats of reads.
    pub retry: RetryPolicy,
}

impl MerchantConfig {
    /// A configuration with every setting at its spec default.
    pub fn new(
        merchant_id: impl Into<String>,
        private_key: MerchantPrivateKey,
        paykka_public_key: PaykkaPublicKey,
    ) -> Self {
        Self {
            merchant_id: merchant_id.into(),
            private_key,
            paykka_public_key,
            base_url: DEFAULT_BASE_URL.into(),
            paths: OperationPaths::default(),
            signing: SigningConfig::default(),
            response_signature: SignatureMode::Warn,
            timeouts: OperationTimeouts::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// Sets the base URL (host + prefix).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Sets the response signature mode.
    pub fn with_response_signature(mut self, mode: SignatureMode) -> Self {
        self.response_signature = mode;
        self
    }

    /// Sets the timeouts.
    pub fn with_timeouts(mut self, timeouts: OperationTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the paths.
    pub fn with_paths(mut self, paths: OperationPaths) -> Self {
        self.paths = paths;
        self
    }

    /// Sets the signing settings.
    pub fn with_signing(mut self, signing: SigningConfig) -> Self {
        self.signing = signing;
        self
    }

    /// The full URL of `op`.
    pub fn url(&self, op: Operation) -> String {
        let base = self.base_url.trim_end_matches('/');
        let path = self.paths.get(op);
        if path.starts_with('/') {
            format!("{base}{path}")
        } else {
            format!("{base}/{path}")
        }
    }
}

/// One PayKKa v1.2 operation (endpoints.md §0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// §1 initiate transaction.
    Initiate,
    /// §2 query transaction.
    Query,
    /// §3 capture.
    Capture,
    /// §4 void.
    Void,
    /// §5 token query.
    TokenQuery,
    /// §6 token remove.
    TokenRemove,
    /// §7 recurring agreement cancel.
    RecurringCancel,
    /// §8 Apple Pay session.
    ApplePaySession,
    /// §9 checkout session create.
    SessionCreate,
    /// §10 checkout session query.
    SessionQuery,
    /// §11 refund.
    Refund,
    /// §12 refund query.
    RefundQuery,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 12] = [
        Operation::Initiate,
        Operation::Query,
        Operation::Capture,
        Operation::Void,
        Operation::TokenQuery,
        Operation::TokenRemove,
        Operation::RecurringCancel,
        Operation::ApplePaySession,
        Operation::SessionCreate,
        Operation::SessionQuery,
        Operation::Refund,
        Operation::RefundQuery,
    ];

    /// Name used in logs and spans.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Initiate => "initiate",
            Operation::Query => "query",
            Operation::Capture => "capture",
            Operation::Void => "void",
            Operation::TokenQuery => "token_query",
            Operation::TokenRemove => "token_remove",
            Operation::RecurringCancel => "recurring_cancel",
            Operation::ApplePaySession => "apple_pay_session",
            Operation::SessionCreate => "checkout_session_create",
            Operation::SessionQuery => "checkout_session_query",
            Operation::Refund => "refund",
            Operation::RefundQuery => "refund_query",
        }
    }

    /// A call that may change state at PayKKa (codes.md §5 "mutating":
    /// initiate, capture, void, refund, cancel, session create; token remove
    /// too). Its lost answer is `Unknown`, never `Retryable`.
    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            Operation::Initiate
                | Operation::Capture
                | Operation::Void
                | Operation::Refund
                | Operation::RecurringCancel
                | Operation::SessionCreate
                | Operation::TokenRemove
        )
    }

    /// The answer has no `data` (token remove, recurring cancel).
    pub(crate) fn has_no_data(self) -> bool {
        matches!(self, Operation::TokenRemove | Operation::RecurringCancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let p = OperationPaths::default();
        assert_eq!(p.initiate, "/payments");
        assert_eq!(p.token_remove, "/payments/token/remove");
        assert_eq!(p.session_create, "/session");
        assert_eq!(p.refund_query, "/refund/query");
        let parsed: OperationPaths =
            serde_json::from_str(r#"{"void":"/payments/cancel"}"#).unwrap();
        assert_eq!(parsed.void, "/payments/cancel");
        assert_eq!(parsed.query, "/payments/query");
        let t = OperationTimeouts::default();
        assert_eq!(t.get(Operation::Initiate), Duration::from_secs(30));
        assert_eq!(t.get(Operation::Refund), Duration::from_secs(20));
        assert_eq!(t.get(Operation::RefundQuery), Duration::from_secs(10));
        let mode: SignatureMode = serde_json::from_str(r#""enforce""#).unwrap();
        assert_eq!(mode, SignatureMode::Enforce);
    }

    #[test]
    fn mutating_set() {
        let mutating: Vec<_> = Operation::ALL
            .iter()
            .filter(|o| o.is_mutating())
            .map(|o| o.name())
            .collect();
        assert_eq!(
            mutating,
            [
                "initiate",
                "capture",
                "void",
                "token_remove",
                "recurring_cancel",
                "checkout_session_create",
                "refund"
            ]
        );
    }
}
