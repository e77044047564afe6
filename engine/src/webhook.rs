//! The webhook verification port: how a PayKKa delivery (the `signature`
//! header and the raw body) becomes a [`Notification`] the engine may apply
//! (`Engine::apply_payment_notification`, `Engine::apply_refund_notification`),
//! or a [`WebhookRejection`] that says why not.
//!
//! The HTTP layer (payorch-http) receives the delivery and answers PayKKa;
//! payorch-paykka implements the port (`MerchantWebhookVerifier`: the key
//! and signature mode of the merchant the body names). Neither adapter
//! depends on the other: both depend on this trait.

use payorch_schemas::paykka::Notification;
use time::OffsetDateTime;

/// Why a delivery was refused by the verifier. Nothing from its body is
/// recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookRejection {
    /// Missing or bad signature, or a timestamp outside the window
    /// (HTTP 401). A forgery, a replay or a wrong platform key.
    #[error("notification not authenticated: {0}")]
    Unauthenticated(String),
    /// Signed correctly but not a notification we can read (HTTP 400).
    #[error("notification malformed: {0}")]
    Malformed(String),
    /// Body over the verifier's own limit (HTTP 413).
    #[error("notification body too large")]
    TooLarge,
    /// Readable, but its signature or freshness did not check out while the
    /// verifier runs report-only (authentication.md §5: the signing scheme
    /// is \[INFERRED\]). The body is never recorded as a fact: it is a hint,
    /// and payorch asks PayKKa about the order it names (Transaction
    /// Query) and records PayKKa's answer instead. HTTP 200 once asked.
    #[error("notification not authenticated ({reason}); treated as a hint")]
    Unverified {
        notification: Box<Notification>,
        reason: String,
    },
}

/// Verifies a PayKKa delivery (signature over the exact raw body,
/// timestamp freshness) and parses it. Implemented by payorch-paykka;
/// tests may use any implementation.
pub trait WebhookVerifier: Send + Sync {
    /// `signature`: the `signature` header as received (`None` when
    /// absent; a value that is not valid UTF-8 is passed as a string that
    /// cannot verify, e.g. `"\u{fffd}"`). `raw_body`: byte for byte as
    /// received. `now`: the caller's clock, for the freshness check.
    fn verify(
        &self,
        signature: Option<&str>,
        raw_body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Notification, WebhookRejection>;
}
