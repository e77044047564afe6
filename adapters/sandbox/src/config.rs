//! Sandbox configuration: merchants, the wire dialect (paths, prefix,
//! version handling, timestamp window), fault injection and notification
//! delivery. Every [INFERRED] fact of the spec is a setting here with the
//! spec's value as default.

use std::time::Duration;

pub use crate::crypto::PlatformKey;

/// Everything [`crate::spawn`] needs. `Default` gives a sandbox with no
/// merchants, a generated platform key, the spec's dialect, no faults and
/// asynchronous refunds.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// Merchants allowed to call, each with its registered public key.
    pub merchants: Vec<SandboxMerchant>,
    /// The platform key that signs responses and notifications; an RSA-2048
    /// key is generated when `None`.
    pub platform_key: Option<PlatformKey>,
    pub dialect: SandboxDialect,
    pub faults: FaultConfig,
    pub notify: NotifyConfig,
    pub behaviour: BehaviourConfig,
}

impl SandboxConfig {
    /// A config with one merchant and defaults for everything else.
    pub fn with_merchant(merchant_id: impl Into<String>, public_key: impl Into<String>) -> Self {
        SandboxConfig {
            merchants: vec![SandboxMerchant::new(merchant_id, public_key)],
            ..SandboxConfig::default()
        }
    }
}

/// A merchant known to the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxMerchant {
    pub merchant_id: String,
    /// PEM SPKI (`BEGIN PUBLIC KEY`), PEM PKCS#1 (`BEGIN RSA PUBLIC KEY`) or
    /// bare base64 SPKI DER.
    pub public_key: String,
}

impl SandboxMerchant {
    pub fn new(merchant_id: impl Into<String>, public_key: impl Into<String>) -> Self {
        SandboxMerchant {
            merchant_id: merchant_id.into(),
            public_key: public_key.into(),
        }
    }
}

/// Relative paths of the twelve v1.2 operations (endpoints.md §0, column
/// "v1.2 path"), appended to [`SandboxDialect::prefix`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationPaths {
    pub initiate: String,
    pub query: String,
    pub capture: String,
    pub void: String,
    pub token_query: String,
    pub token_remove: String,
    pub recurring_cancel: String,
    pub apple_pay_session: String,
    pub session_create: String,
    pub session_query: String,
    pub refund: String,
    pub refund_query: String,
}

impl Default for OperationPaths {
    fn default() -> Self {
        OperationPaths {
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

/// The [INFERRED] transport details of v1.2 (README §2, authentication.md
/// §2 and §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxDialect {
    /// Path prefix of every API operation, `/apis` by default.
    pub prefix: String,
    pub paths: OperationPaths,
    /// When true a body `"version":"v1.2"` is required (the WooCommerce
    /// client's style); when false (default) the `version: v1.2` header is
    /// required, or a body `version` of `v1.2` is accepted instead of it.
    pub require_body_version: bool,
    /// Accepted distance between the body `timestamp` and the sandbox clock
    /// (±, milliseconds); 5 minutes like v3 documents.
    pub timestamp_window_ms: i64,
    /// Largest accepted request body; larger ones get HTTP 413.
    pub max_body_bytes: usize,
}

impl Default for SandboxDialect {
    fn default() -> Self {
        SandboxDialect {
            prefix: "/apis".into(),
            paths: OperationPaths::default(),
            require_body_version: false,
            timestamp_window_ms: 300_000,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Seeded fault injection. Probabilities are in `[0, 1]`; every random
/// decision comes from one generator seeded with `seed`, taken in the order
/// notifications are produced, so a run with the same requests is
/// deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    pub seed: u64,
    /// A notification is sent twice (the same signed body).
    pub notify_duplicate: f64,
    /// A notification is held back and sent after the next one (or after
    /// `reorder_hold` when no other one comes).
    pub notify_reorder: f64,
    /// A notification's first attempt waits `notify_delay` extra.
    pub notify_delay_probability: f64,
    pub notify_delay: Duration,
    /// A notification is never sent (recorded as dropped).
    pub notify_drop: f64,
    pub reorder_hold: Duration,
    /// Probability that a mutating operation (initiate, capture, void,
    /// refund) answers HTTP 500 / `999999` **after** committing.
    pub error_after_commit: f64,
    /// Probability that a mutating operation answers HTTP 500 / `999999`
    /// **without** doing anything (the ledger is untouched).
    pub error_before_commit: f64,
    /// Probability that an initiate with an approving instrument is
    /// declined instead (`FAILURE`, `2099` Invalid Card).
    pub decline_probability: f64,
    /// Extra latency added to every API answer.
    pub extra_latency: Duration,
    /// Delay of the "slow response" magic amounts (see README): the
    /// operation is committed, the answer comes this much later.
    pub slow_response: Duration,
    /// Probability that an initiate, capture or refund is answered late
    /// **and hidden**: it commits, the answer comes `late_answer` later
    /// (after a client's timeout), and until then queries do not show it
    /// (query / refund query answer as before the operation) and its
    /// notifications are held back. Magic amount `...994` does the same
    /// deterministically.
    pub late_answer_probability: f64,
    /// How late a "late and hidden" answer comes (and how long the
    /// operation stays invisible to queries). Default 3 s.
    pub late_answer: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            notify_duplicate: 0.0,
            notify_reorder: 0.0,
            notify_delay_probability: 0.0,
            notify_delay: Duration::from_millis(500),
            notify_drop: 0.0,
            reorder_hold: Duration::from_millis(500),
            error_after_commit: 0.0,
            error_before_commit: 0.0,
            decline_probability: 0.0,
            extra_latency: Duration::ZERO,
            slow_response: Duration::from_secs(5),
            late_answer_probability: 0.0,
            late_answer: Duration::from_secs(3),
        }
    }
}

/// Notification delivery: retry until acknowledged (HTTP 200 with
/// `ret_code` `000000`), with exponential backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// Used when neither the request nor the order has a `notify_url`
    /// (PayKKa's back-office setting).
    pub default_url: Option<String>,
    /// Attempts per notification, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Timeout of one delivery attempt.
    pub attempt_timeout: Duration,
    /// Every notification's first attempt waits this long after the status
    /// change (PayKKa's real delay is unknown; default 0: the same
    /// millisecond as the API answer). The `notify_delay` fault adds to it.
    pub delay: Duration,
    /// Deliveries in flight at once (PayKKa notifies many orders in
    /// parallel; the real figure is unknown). One payment's notifications
    /// always share a lane and keep their order; 1 delivers everything in
    /// one queue.
    pub lanes: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            default_url: None,
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(5),
            delay: Duration::ZERO,
            lanes: 16,
        }
    }
}

/// How refunds settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundMode {
    /// Answer `REVIEWING`; settle to `SUCCESS`/`FAILURE` after the delay
    /// (`None`: only through [`crate::RunningSandbox::settle_refunds`]).
    Async { settle_after: Option<Duration> },
    /// Answer `SUCCESS` (or `FAILURE` for the failure magic amount) at once.
    Immediate,
}

/// How PayKKa releases the uncaptured remainder of a partially captured
/// authorisation. The spec does not say (\[INFERRED\]), so the sandbox
/// models each candidate; see the README "Releasing a remainder".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReleaseMode {
    /// A Void after a partial capture releases the remainder
    /// (`voided_amount` = remainder, `able_to_capture_amount` 0, status
    /// stays `SUCCESS`). A capture's `final_capture` flag is ignored.
    VoidAfterCapture,
    /// A capture with `"final_capture": true` releases the remainder; a
    /// Void after any capture is refused (`010000`). The default (the
    /// sandbox's behaviour before the setting existed).
    #[default]
    CaptureFlag,
    /// Neither: the remainder is released only when the authorisation
    /// expires ([`crate::RunningSandbox::expire_authorisation`] or
    /// `POST /sandbox/orders/{order_id}/expire`). Void after a capture is
    /// refused and the flag ignored.
    OnExpiry,
}

impl ReleaseMode {
    /// The setting's name: `void_after_capture`, `capture_flag`, `on_expiry`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseMode::VoidAfterCapture => "void_after_capture",
            ReleaseMode::CaptureFlag => "capture_flag",
            ReleaseMode::OnExpiry => "on_expiry",
        }
    }
}

impl std::str::FromStr for ReleaseMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "void_after_capture" => Ok(ReleaseMode::VoidAfterCapture),
            "capture_flag" => Ok(ReleaseMode::CaptureFlag),
            "on_expiry" => Ok(ReleaseMode::OnExpiry),
            _ => Err(format!(
                "release mode {s:?}: expected void_after_capture, capture_flag or on_expiry"
            )),
        }
    }
}

/// Simulated PayKKa behaviour that is not a fault.
#[derive(Debug, Clone, PartialEq)]
pub struct BehaviourConfig {
    pub refunds: RefundMode,
    /// When asynchronous payments (`PROCESSING` test cards) settle by
    /// themselves; `None`: only through
    /// [`crate::RunningSandbox::settle_pending`].
    pub async_settle_after: Option<Duration>,
    /// Lifetime of a pending 3DS challenge when the request has no
    /// `expire_time`.
    pub challenge_expiry: Duration,
    /// How often the background task looks for due settlements/expiries.
    pub tick: Duration,
    /// How an uncaptured remainder is released (\[INFERRED\]).
    pub release_mode: ReleaseMode,
    /// The offset of a date-time sent without one (`expire_time:
    /// "2026-12-06 12:02:35"`, as a real PHP client sends it): PayKKa local
    /// time, +08:00 by default (\[INFERRED\]).
    pub local_offset: time::UtcOffset,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        BehaviourConfig {
            refunds: RefundMode::Async {
                settle_after: Some(Duration::from_millis(200)),
            },
            async_settle_after: Some(Duration::from_millis(200)),
            challenge_expiry: Duration::from_secs(15 * 60),
            tick: Duration::from_millis(50),
            release_mode: ReleaseMode::default(),
            local_offset: payorch_schemas::paykka::PAYKKA_LOCAL_OFFSET,
        }
    }
}
