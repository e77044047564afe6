//! The command side of the engine: load -> decide -> append(expected
//! version) -> call PayKKa -> decide(outcome) -> append.
//!
//! One room per capability, all methods of one [`Engine`]:
//!
//! * [`runner`]: execute with conflict retries, PayKKa calls, spans.
//! * [`idempotency`]: fingerprints and idempotency records.
//! * [`payments`]: place, capture, void, refund, 3DS return.
//! * [`observations`]: notifications and query results.
//! * [`checkout`]: checkout sessions.
//! * [`agreements`]: recurring agreements and their charges.
//! * [`passthrough`]: token query/remove, Apple Pay session.
//! * [`views`]: the current view of an order and its events.
//! * [`paykka_requests`]: building PayKKa requests, mapping answers.
//!
//! * Optimistic concurrency: a `Conflict` on append reloads the stream and
//!   decides again, at most [`EngineConfig::max_conflict_retries`] times.
//! * Merchant commands carry an idempotency key: one record per (merchant,
//!   key), begun with the command's first events and completed with the
//!   executing request's response and its outcome events; a repeat gets
//!   that stored response (see [`idempotency`]).
//! * A command that continues a command (the outcome after the request)
//!   keeps the state and version in memory: only a conflict reloads, and a
//!   fact a racing notification already recorded appends nothing.
//! * Card data (PAN, CVV, encrypted fields) lives only in the
//!   [`PlacePaymentRequest`] and the `InitiateRequest` built from it, in
//!   memory, for the duration of the call; events keep brand/BIN/last 4.
//! * Gateway observations (webhooks, query results) are commands too
//!   ([`Engine::apply_observation`]); duplicates and late arrivals emit
//!   nothing.
//! * Each command runs in a `command` span and each PayKKa call in a
//!   `paykka_call` span with order id, merchant id, trans_id and
//!   correlation id.

use std::sync::Arc;
use std::time::Duration;

use payorch_schemas::Money;
use payorch_schemas::events::order::TokenRequest;
use payorch_schemas::events::{
    Annotations, AuthorisationKind, CaptureMode, MerchantId, PaymentKind,
};
use payorch_schemas::paykka::{Browser, PaymentRequest, SessionMode};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::agreement::AgreementError;
use crate::checkout::CheckoutError;
use crate::codec::CodecError;
use crate::gateway::PaymentGateway;
use crate::order::DomainError;
use crate::read::ReadError;
use crate::store::{Clock, EventMetadata, EventStore, IdempotencyStore, StoreError};
use crate::view::OrderView;

pub mod agreements;
pub mod checkout;
pub mod idempotency;
pub mod observations;
pub mod passthrough;
pub mod paykka_requests;
pub mod payments;
pub mod runner;
pub mod views;

/// Errors of the engine's public API. Domain refusals, idempotency misuse,
/// contention and infrastructure failures are separate variants so callers
/// can map them (HTTP 422 / 409 / 503 ...).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The order refused the command (fix the request).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The agreement refused the command (fix the request).
    #[error(transparent)]
    Agreement(#[from] AgreementError),
    /// The checkout session refused the command (fix the request).
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    /// No such order/agreement/session for this merchant.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key {key:?} was already used with a different request")]
    IdempotencyConflict { key: String },
    /// Another request with this idempotency key is still executing; ask
    /// again after `retry_after` (its answer will be returned then).
    #[error("a request with idempotency key {key:?} is still in progress; retry later")]
    IdempotencyInProgress { key: String, retry_after: Duration },
    /// Too many concurrent writers on one stream; retry later.
    #[error("stream {stream} stayed contended after {attempts} attempts; retry later")]
    Contention { stream: String, attempts: u32 },
    /// The store failed (see [`StoreError`]: retry on `Unavailable`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be read (corrupt data; page someone).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A PayKKa call that records no events (token query, Apple Pay
    /// session...) did not succeed.
    #[error("PayKKa {operation} failed ({kind}): {code} {description}")]
    Gateway {
        operation: &'static str,
        kind: &'static str,
        code: String,
        description: String,
    },
    /// The request is incomplete for this operation (fix the request).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// PayKKa's schema rules would refuse the request built from this one
    /// (`field` is its path in the PayKKa request, e.g. `payment.card_no`,
    /// `return_url`). Checked before anything is written: nothing was
    /// recorded; fix the request.
    #[error("invalid request: {field}: {problem}")]
    InvalidField { field: String, problem: String },
    /// PayKKa could not be reached and the request provably never left
    /// (connection refused, DNS or TLS failure), after the engine's bounded
    /// resends. Nothing reached PayKKa, so no money moved; the attempt is
    /// recorded as declined with code [`NOT_SENT_CODE`] and the
    /// idempotency key is released: retry later with the same key.
    #[error("PayKKa is unreachable ({operation}): {reason}; retry later")]
    PaykkaUnreachable {
        operation: &'static str,
        reason: String,
    },
    /// A PayKKa notification names another merchant, currency or amount
    /// than the order it is about. Nothing was recorded; alert someone (a
    /// mix-up of merchants or keys, or a forgery signed with a real key).
    #[error(
        "notification for order {order_id} contradicts it: {field} is {observed}, the order has {expected}"
    )]
    NotificationContradicts {
        order_id: payorch_schemas::events::OrderId,
        field: &'static str,
        expected: String,
        observed: String,
    },
}

/// The decline code recorded on an attempt whose PayKKa call provably
/// never left (see [`EngineError::PaykkaUnreachable`]).
pub const NOT_SENT_CODE: &str = "PAYKKA_UNREACHABLE";

/// The decline code recorded on a charge whose order is placed after a
/// crash (see [`Engine::resume_charge`]) when its agreement is no longer
/// active: PayKKa was never asked, no money moved.
pub const CHARGE_NOT_SENT_CODE: &str = "AGREEMENT_NOT_ACTIVE";

/// Settings of the engine (\[INFERRED\] spec facts are settings).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// `notify_url` sent with payments and sessions.
    pub notify_url: Option<String>,
    /// `notify_url` sent with refunds.
    pub refund_notify_url: Option<String>,
    /// `return_url` when the request has none (needed for 3DS).
    pub default_return_url: Option<String>,
    /// Reload-and-redecide attempts on optimistic concurrency conflicts.
    pub max_conflict_retries: u32,
    /// Attempts for a `Retryable` gateway answer before recording the
    /// outcome as unknown (which the reconciler resolves).
    pub retryable_attempts: u32,
    /// Backoff between retryable attempts (doubles each time).
    pub retry_backoff: Duration,
    /// How long a request waits for a twin with the same idempotency key
    /// to finish before answering "in progress".
    pub idempotency_wait: Duration,
    /// After this long an in-progress idempotency record counts as left by
    /// a crash (see [`idempotency`]); longer than any live execution.
    pub idempotency_stale_after: Duration,
    /// A checkout session's lifetime when the request names no
    /// `expires_at` (resolved once, by the first execution).
    pub checkout_ttl: Duration,
    /// How PayKKa releases the uncaptured remainder after a final partial
    /// capture (\[INFERRED\], flows.md): see [`ReleaseMode`]. Default
    /// [`ReleaseMode::CaptureFlag`], as the sandbox.
    pub release_mode: ReleaseMode,
    /// Per-merchant overrides of [`EngineConfig::release_mode`], by PayKKa
    /// merchant id.
    pub merchant_release_modes: std::collections::HashMap<String, ReleaseMode>,
}

impl EngineConfig {
    /// The release mode for `merchant_id` (its override, else the default).
    pub fn release_mode_for(&self, merchant_id: &str) -> ReleaseMode {
        self.merchant_release_modes
            .get(merchant_id)
            .copied()
            .unwrap_or(self.release_mode)
    }
}

/// How PayKKa releases what is left of an authorisation after a final
/// partial capture. The spec does not say (\[INFERRED\]): a setting, per
/// merchant. In every mode payorch shows the remainder released only when
/// PayKKa confirms it (balances in an answer, a query or a notification:
/// `voided_amount` grown or `able_to_capture_amount` 0), never because
/// of its own request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReleaseMode {
    /// The capture request carries `final_capture: true` and PayKKa
    /// releases the rest with it (the sandbox's default).
    #[default]
    CaptureFlag,
    /// PayKKa ignores the flag: after a final partial capture is
    /// confirmed, payorch sends a Void for the remainder.
    VoidAfterCapture,
    /// Nothing is sent: PayKKa releases the rest when the authorisation
    /// expires, which a query or notification reports.
    OnExpiry,
}

impl ReleaseMode {
    /// Every mode, in the order of [`ReleaseMode::as_str`]'s names.
    pub const ALL: [ReleaseMode; 3] = [
        ReleaseMode::CaptureFlag,
        ReleaseMode::VoidAfterCapture,
        ReleaseMode::OnExpiry,
    ];

    /// The setting's spelling: `capture_flag`, `void_after_capture`,
    /// `on_expiry`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseMode::CaptureFlag => "capture_flag",
            ReleaseMode::VoidAfterCapture => "void_after_capture",
            ReleaseMode::OnExpiry => "on_expiry",
        }
    }

    /// Parses [`ReleaseMode::as_str`]'s spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<ReleaseMode> {
        ReleaseMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for ReleaseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            notify_url: None,
            refund_notify_url: None,
            default_return_url: None,
            max_conflict_retries: 8,
            retryable_attempts: 3,
            retry_backoff: Duration::from_millis(100),
            idempotency_wait: Duration::from_secs(5),
            idempotency_stale_after: Duration::from_secs(300),
            checkout_ttl: Duration::from_secs(30 * 60),
            release_mode: ReleaseMode::default(),
            merchant_release_modes: Default::default(),
        }
    }
}

/// Who asks, for scoping, idempotency and tracing, and the merchant's
/// labels for what the command creates.
#[derive(Clone, Debug)]
pub struct CommandContext {
    pub merchant_id: MerchantId,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub actor: Option<String>,
    /// `merchant_reference` and `metadata` recorded on the resource the
    /// command creates (a payment, a charge, a checkout session); commands
    /// that create nothing ignore them. Checked against the limits of
    /// [`Annotations::validate`] before anything is written, and part of
    /// the idempotency fingerprint when set.
    pub annotations: Annotations,
}

impl CommandContext {
    pub fn new(merchant_id: impl Into<String>) -> Self {
        CommandContext {
            merchant_id: MerchantId::new(merchant_id),
            idempotency_key: None,
            correlation_id: None,
            actor: None,
            annotations: Annotations::default(),
        }
    }

    /// Labels the resource the command creates.
    pub fn with_annotations(mut self, annotations: Annotations) -> Self {
        self.annotations = annotations;
        self
    }

    /// The labels, checked (an [`EngineError::InvalidRequest`] naming the
    /// field otherwise).
    pub(crate) fn checked_annotations(&self) -> Result<Annotations, EngineError> {
        self.annotations
            .validate()
            .map_err(|e| EngineError::InvalidRequest(e.to_string()))?;
        Ok(self.annotations.clone())
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    pub(crate) fn metadata(&self) -> EventMetadata {
        EventMetadata {
            correlation_id: self.correlation_id,
            causation_id: None,
            merchant_id: Some(self.merchant_id.as_str().to_owned()),
            actor: self.actor.clone(),
        }
    }
}

/// A merchant's request to pay. `payment` carries the instrument (card
/// data stays in memory; only its summary is stored).
#[derive(Clone, Debug)]
pub struct PlacePaymentRequest {
    pub amount: Money,
    pub payment_type: PaymentKind,
    pub authorisation_type: AuthorisationKind,
    pub capture_method: CaptureMode,
    pub payment: PaymentRequest,
    /// Ask PayKKa to store the card (token).
    pub store_token: Option<TokenRequest>,
    pub return_url: Option<String>,
    pub browser: Option<Browser>,
}

/// A merchant's request to open a checkout session.
#[derive(Clone, Debug)]
pub struct CheckoutSessionCreate {
    pub amount: Money,
    pub payment_type: PaymentKind,
    pub capture_method: CaptureMode,
    pub session_mode: SessionMode,
    pub return_url: Option<String>,
    /// `None`: now + [`EngineConfig::checkout_ttl`], fixed by the first
    /// execution (an identical retry is the same request).
    pub expires_at: Option<OffsetDateTime>,
}

/// What a Checkout Session Query showed about a checkout session's payment
/// ([`Engine::check_checkout_payment`]).
#[derive(Clone, Debug, PartialEq)]
pub enum SessionPaymentCheck {
    /// PayKKa shows a payment that holds or may still hold money: the
    /// order is started (as from the notification), the session completed
    /// and the answer applied to the order, whose view this is (boxed:
    /// the other answers carry nothing).
    Paid(Box<OrderView>),
    /// A definitive "no money": no transaction yet, or it ended without
    /// money (FAILURE, CANCELED), or (past the grace period) PayKKa does not
    /// know the session. Nothing is written.
    NotPaid,
    /// No definitive answer (timeout, 5xx, refusal): nothing is written.
    NoAnswer,
}

/// The engine: see the module docs.
pub struct Engine {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) idempotency: Arc<dyn IdempotencyStore>,
    pub(crate) gateway: Arc<dyn PaymentGateway>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    /// Woken whenever this process completes an idempotency record.
    pub(crate) idempotency_done: Arc<tokio::sync::Notify>,
}

/// The name the brief also uses.
pub type Orchestrator = Engine;

impl Engine {
    pub fn new(
        store: Arc<dyn EventStore>,
        idempotency: Arc<dyn IdempotencyStore>,
        gateway: Arc<dyn PaymentGateway>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Self {
        Engine {
            store,
            idempotency,
            gateway,
            clock,
            config,
            idempotency_done: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn gateway(&self) -> &Arc<dyn PaymentGateway> {
        &self.gateway
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub(crate) fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }
}

impl From<ReadError> for EngineError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Store(e) => EngineError::Store(e),
            ReadError::Codec(e) => EngineError::Codec(e),
        }
    }
}
