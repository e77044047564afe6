//! The PayKKa v1.2 HTTP client: [`PaykkaClient`] implements the engine's
//! [`PaymentGateway`] port for every operation.
//!
//! Per HTTP attempt: a fresh millisecond timestamp is written into the
//! request DTO, the body is serialized once and signed
//! ([`RequestSigner::sign_json`]), **those bytes** are sent, the raw answer
//! is read, PayKKa's signature is checked per [`SignatureMode`], and only
//! then is the envelope parsed and classified (the `outcome` module has the table).
//!
//! The client never sends a money-moving call twice (ARCHITECTURE.md §2
//! "Only the engine re-sends"). Initiate, capture, void, refund, session
//! create, token remove and recurring cancel go out **once** per call; what
//! the client saw is what it reports: a timeout, a reset or a 5xx after
//! sending stays `Unknown`, and the engine's reconciler resolves it by
//! querying after its grace period (a query answering "not found" right
//! after a timeout proves nothing: PayKKa may still be processing). The only
//! automatic repeats ([`RetryPolicy`]) are on reads:
//!
//! * reads (transaction, refund, token and session query, Apple Pay session)
//!   retry `Retryable` answers with exponential backoff and jitter, bounded;
//! * a read answered `206004` / `2001` (stale timestamp) is re-signed with a
//!   fresh timestamp and sent once more.
//!
//! A mutating call refused before anything reached PayKKa (connection
//! refused, DNS, TLS) or answered `206004` / `2001` comes back `Retryable`:
//! nothing happened at PayKKa, and whether to send it again is the
//! engine's decision.
//!
//! One [`reqwest::Client`] (rustls, connection pool) serves every merchant.
//! Each call runs in a `paykka_call` tracing span carrying the merchant id,
//! operation, trans_id / order_id, outcome, attempts and latency. Bodies are
//! never logged (an initiate carries card data), nor keys or signatures.

mod config;
mod outcome;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway, RejectionClass};
use payorch_engine::store::{Clock, SystemClock};
use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionQueryResponse, CheckoutSessionRequest, CheckoutSessionResponse, InitiateRequest,
    PaymentResponse, QueryRequest, RecurringCancelRequest, RefundQueryRequest, RefundRequest,
    RefundResponse, TokenQueryRequest, TokenQueryResponse, TokenRemoveRequest, VoidRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use crate::signing::{RequestSigner, SIGNATURE_HEADER, VerifyError, verify_response};

pub use config::{
    DEFAULT_BASE_URL, MerchantConfig, Operation, OperationPaths, OperationTimeouts, RetryPolicy,
    SignatureMode,
};
use outcome::{Verdict, classify_answer, lost};

/// Client-wide HTTP settings (shared by every merchant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// TCP + TLS connect timeout. A failure inside it is `Retryable`
    /// (nothing reached PayKKa). Default 5 s.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host. Default 32.
    pub pool_max_idle_per_host: usize,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 32,
            user_agent: concat!("payorch-paykka/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Why a [`PaykkaClient`] could not be built. All are configuration
/// errors: fix the settings, nothing to retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The HTTP client (TLS roots, pool) could not be created.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// Two configurations for the same merchant id.
    #[error("merchant {0} is configured twice")]
    DuplicateMerchant(String),
    /// No merchant configured.
    #[error("no merchant configured")]
    NoMerchants,
    /// A base URL that is not `http(s)://host[:port][/prefix]`.
    #[error("merchant {merchant_id}: base_url {base_url:?} must start with http:// or https://")]
    InvalidBaseUrl {
        /// The merchant concerned.
        merchant_id: String,
        /// The configured value.
        base_url: String,
    },
}

struct Merchant {
    config: MerchantConfig,
    signer: RequestSigner,
}

/// The PayKKa v1.2 client (see the module docs). Cheap to share behind an
/// `Arc`; all methods take `&self`.
pub struct PaykkaClient {
    http: reqwest::Client,
    merchants: HashMap<String, Arc<Merchant>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PaykkaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.merchants.keys().collect();
        ids.sort();
        f.debug_struct("PaykkaClient")
            .field("merchants", &ids)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PaykkaClient`].
pub struct PaykkaClientBuilder {
    settings: ClientSettings,
    merchants: Vec<MerchantConfig>,
    clock: Arc<dyn Clock>,
}

impl PaykkaClientBuilder {
    /// Client-wide HTTP settings.
    pub fn settings(mut self, settings: ClientSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Adds a merchant; requests are routed by their `merchant_id`.
    pub fn merchant(mut self, config: MerchantConfig) -> Self {
        self.merchants.push(config);
        self
    }

    /// The clock request timestamps come from (default: system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Validates the configuration and creates the HTTP client.
    pub fn build(self) -> Result<PaykkaClient, ClientError> {
        if self.merchants.is_empty() {
            return Err(ClientError::NoMerchants);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.settings.connect_timeout)
            .pool_idle_timeout(self.settings.pool_idle_timeout)
            .pool_max_idle_per_host(self.settings.pool_max_idle_per_host)
            .user_agent(self.settings.user_agent.clone())
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(ClientError::Http)?;
        let mut merchants = HashMap::new();
        for config in self.merchants {
            let base = config.base_url.to_ascii_lowercase();
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(ClientError::InvalidBaseUrl {
                    merchant_id: config.merchant_id.clone(),
                    base_url: config.base_url.clone(),
                });
            }
            let id = config.merchant_id.clone();
            let signer = RequestSigner::new(config.private_key.clone(), config.signing.clone());
            if merchants
                .insert(id.clone(), Arc::new(Merchant { config, signer }))
                .is_some()
            {
                return Err(ClientError::DuplicateMerchant(id));
            }
        }
        Ok(PaykkaClient {
            http,
            merchants,
            clock: self.clock,
        })
    }
}

/// A request DTO the client can send: it names its merchant and takes the
/// fresh timestamp of each attempt.
pub trait WireRequest: Serialize + Clone + Send + Sync {
    /// The `merchant_id` field (selects the [`MerchantConfig`]).
    fn merchant_id(&self) -> &str;
    /// Writes the attempt's timestamp (epoch ms) into the body.
    fn set_timestamp(&mut self, timestamp_ms: i64);
    /// The merchant-side id for logs (`trans_id`, `refund_trans_id`).
    fn trans_id(&self) -> Option<&str> {
        None
    }
    /// The PayKKa-side id for logs (`order_id`, `ori_order_id`, `session_id`).
    fn order_id(&self) -> Option<&str> {
        None
    }
}

macro_rules! wire_request {
    ($ty:ty, |$r:ident| trans: $trans:expr, order: $order:expr) => {
        impl WireRequest for $ty {
            fn merchant_id(&self) -> &str {
                &self.merchant_id
            }
            fn set_timestamp(&mut self, timestamp_ms: i64) {
                self.timestamp = timestamp_ms;
            }
            #[allow(unused_variables)]
            fn trans_id(&self) -> Option<&str> {
                let $r = self;
                $trans
            }
            #[allow(unused_variables)]
            fn order_id(&self) -> Option<&str> {
                let $r = self;
                $order
            }
        }
    };
}

wire_request!(InitiateRequest, |r| trans: Some(&r.trans_id), order: None);
wire_request!(QueryRequest, |r| trans: r.trans_id.as_deref(), order: r.order_id.as_deref().or(r.session_id.as_deref()));
wire_request!(CaptureRequest, |r| trans: None, order: Some(&r.order_id));
wire_request!(VoidRequest, |r| trans: None, order: Some(&r.order_id));
wire_request!(RefundRequest, |r| trans: Some(&r.refund_trans_id), order: Some(&r.ori_order_id));
wire_request!(RefundQueryRequest, |r| trans: r.refund_trans_id.as_deref(), order: r.refund_order_id.as_deref());
wire_request!(TokenQueryRequest, |r| trans: None, order: r.token.as_deref());
wire_request!(TokenRemoveRequest, |r| trans: None, order: Some(&r.token));
wire_request!(RecurringCancelRequest, |r| trans: None, order: Some(&r.recurring_agreement_id));
wire_request!(ApplePaySessionRequest, |r| trans: None, order: None);
wire_request!(CheckoutSessionRequest, |r| trans: Some(&r.trans_id), order: None);
wire_request!(CheckoutSessionQueryRequest, |r| trans: r.trans_id.as_deref(), order: r.session_id.as_deref());

impl PaykkaClient {
    /// A builder with default [`ClientSettings`] and the system clock.
    pub fn builder() -> PaykkaClientBuilder {
        PaykkaClientBuilder {
            settings: ClientSettings::default(),
            merchants: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// A client for one merchant with default settings.
    pub fn new(config: MerchantConfig) -> Result<Self, ClientError> {
        Self::builder().merchant(config).build()
    }

    /// The configured merchant ids.
    pub fn merchant_ids(&self) -> impl Iterator<Item = &str> {
        self.merchants.keys().map(String::as_str)
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// Sends `req` as `op` and returns the classified outcome. A mutating
    /// `op` is sent exactly once; a read may be repeated per
    /// [`RetryPolicy`] (stale-timestamp re-sign, backoff on `Retryable`).
    pub async fn call<R: WireRequest, T: DeserializeOwned>(
        &self,
        op: Operation,
        req: &R,
    ) -> GatewayOutcome<T> {
        let Some(merchant) = self.merchants.get(req.merchant_id()) else {
            tracing::warn!(
                operation = op.name(),
                merchant_id = req.merchant_id(),
                "no configuration for this merchant"
            );
            return GatewayOutcome::Rejected {
                class: RejectionClass::Config,
                code: "UNKNOWN_MERCHANT".into(),
                description: format!("no PayKKa configuration for merchant {}", req.merchant_id()),
            };
        };
        let span = tracing::info_span!(
            "paykka_call",
            operation = op.name(),
            merchant_id = %merchant.config.merchant_id,
            trans_id = tracing::field::Empty,
            order_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
            code = tracing::field::Empty,
            attempts = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        if let Some(t) = req.trans_id() {
            span.record("trans_id", t);
        }
        if let Some(o) = req.order_id() {
            span.record("order_id", o);
        }
        self.run(merchant, op, req).instrument(span).await
    }

    async fn run<R: WireRequest, T: DeserializeOwned>(
        &self,
        merchant: &Merchant,
        op: Operation,
        req: &R,
    ) -> GatewayOutcome<T> {
        let started = Instant::now();
        let policy = &merchant.config.retry;
        let mut attempts = 0u32;
        let mut read_attempts = 0u32;
        let mut stale_retried = false;
        let outcome = loop {
            attempts += 1;
            match self.attempt::<R, T>(merchant, op, req).await {
                Verdict::RetryOnce { code, message } => {
                    // Reads only: a money-moving call is never sent twice by
                    // the client, even after a definite refusal.
                    if !op.is_mutating() && policy.retry_once_on_stale_timestamp && !stale_retried {
                        stale_retried = true;
                        tracing::warn!(
                            code = %code,
                            "PayKKa says the signature expired; re-signing with a fresh timestamp"
                        );
                        continue;
                    }
                    break GatewayOutcome::Retryable {
                        reason: format!(
                            "ret_code {code} ({message}): timestamp refused; check the clock"
                        ),
                    };
                }
                Verdict::Done(
                    GatewayOutcome::Retryable { reason } | GatewayOutcome::NotSent { reason },
                ) if !op.is_mutating() && read_attempts + 1 < policy.read_attempts.max(1) => {
                    read_attempts += 1;
                    let delay = backoff(policy, read_attempts);
                    tracing::debug!(
                        reason = %reason,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "read answered retryable; backing off"
                    );
                    tokio::time::sleep(delay).await;
                }
                Verdict::Done(outcome) => break outcome,
            }
        };
        let span = tracing::Span::current();
        span.record("outcome", outcome.kind());
        match &outcome {
            GatewayOutcome::Declined { code, .. } | GatewayOutcome::Rejected { code, .. } => {
                span.record("code", code.as_str());
            }
            _ => {}
        }
        span.record("attempts", attempts);
        span.record(
            "latency_ms",
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        match &outcome {
            GatewayOutcome::Unknown { reason }
            | GatewayOutcome::Retryable { reason }
            | GatewayOutcome::NotSent { reason } => {
                tracing::warn!(outcome = outcome.kind(), reason = %reason, "paykka call");
            }
            _ => tracing::info!(outcome = outcome.kind(), "paykka call"),
        }
        outcome
    }

    /// One signed HTTP exchange.
    async fn attempt<R: WireRequest, T: DeserializeOwned>(
        &self,
        merchant: &Merchant,
        op: Operation,
        req: &R,
    ) -> Verdict<T> {
        let config = &merchant.config;
        let timestamp = self.now_ms().max(0);
        let signed = {
            let mut body = req.clone();
            body.set_timestamp(timestamp);
            match merchant
                .signer
                .sign_json(&config.merchant_id, timestamp.unsigned_abs(), &body)
            {
                Ok(s) => s,
                Err(e) => {
                    return Verdict::Done(GatewayOutcome::Rejected {
                        class: RejectionClass::Request,
                        code: "CLIENT_SIGN".into(),
                        description: e.to_string(),
                    });
                }
            }
        };
        let mut request = self
            .http
            .post(config.url(op))
            .timeout(config.timeouts.get(op))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        let response = match request.body(signed.body_bytes()).send().await {
            Ok(r) => r,
            Err(e) => return Verdict::Done(transport_error(op, &e)),
        };
        let status = response.status().as_u16();
        let signature = response
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Verdict::Done(lost(
                    op,
                    format!("reading the response failed: {}", describe(&e)),
                ));
            }
        };
        if config.response_signature != SignatureMode::Off {
            let checked = match signature.as_deref() {
                None => Err(VerifyError::MissingSignature),
                Some(s) => verify_response(
                    &config.paykka_public_key,
                    &body,
                    s,
                    &config.merchant_id,
                    timestamp.unsigned_abs(),
                ),
            };
            match checked {
                Ok(fields) => {
                    tracing::debug!(candidate = ?fields.source, "response signature verified");
                }
                Err(e) if config.response_signature == SignatureMode::Warn => {
                    tracing::warn!(error = %e, http_status = status, "response signature did not verify (report-only)");
                }
                Err(e) => {
                    tracing::warn!(error = %e, http_status = status, "response signature did not verify (enforced)");
                    return Verdict::Done(lost(
                        op,
                        format!("response signature did not verify: {e}"),
                    ));
                }
            }
        }
        classify_answer(op, status, &body)
    }
}

/// A transport failure before any HTTP answer (codes.md §2).
fn transport_error<T>(op: Operation, e: &reqwest::Error) -> GatewayOutcome<T> {
    if e.is_builder() {
        return GatewayOutcome::Rejected {
            class: RejectionClass::Config,
            code: "CLIENT_CONFIG".into(),
            description: describe(e),
        };
    }
    if e.is_connect() {
        // Connect, DNS or TLS failure (or the connect timeout): the request
        // never left, PayKKa cannot have acted on it.
        return GatewayOutcome::NotSent {
            reason: format!("connection failed before sending: {}", describe(e)),
        };
    }
    if e.is_timeout() {
        return lost(op, format!("timed out after sending: {}", describe(e)));
    }
    lost(
        op,
        format!("connection failed after sending: {}", describe(e)),
    )
}

/// An error with its source chain, on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Exponential backoff with equal jitter: half the capped delay plus a
/// random part of the other half.
fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let exp = policy
        .backoff_base_ms
        .saturating_mul(1u64 << retry.saturating_sub(1).min(30));
    let capped = exp.min(policy.backoff_max_ms);
    let half = capped / 2;
    let jitter = if capped > half {
        random_u64() % (capped - half + 1)
    } else {
        0
    };
    Duration::from_millis(half + jitter)
}

fn random_u64() -> u64 {
    // RandomState is seeded randomly per instance: enough for jitter.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[async_trait]
impl PaymentGateway for PaykkaClient {
    async fn initiate(&self, req: &InitiateRequest) -> GatewayOutcome<PaymentResponse> {
        self.call(Operation::Initiate, req).await
    }

    async fn query(&self, req: &QueryRequest) -> GatewayOutcome<PaymentResponse> {
        self.call(Operation::Query, req).await
    }

    async fn capture(&self, req: &CaptureRequest) -> GatewayOutcome<PaymentResponse> {
        self.call(Operation::Capture, req).await
    }

    async fn void(&self, req: &VoidRequest) -> GatewayOutcome<PaymentResponse> {
        self.call(Operation::Void, req).await
    }

    async fn refund(&self, req: &RefundRequest) -> GatewayOutcome<RefundResponse> {
        self.call(Operation::Refund, req).await
    }

    async fn refund_query(&self, req: &RefundQueryRequest) -> GatewayOutcome<RefundResponse> {
        self.call(Operation::RefundQuery, req).await
    }

    async fn token_query(&self, req: &TokenQueryRequest) -> GatewayOutcome<TokenQueryResponse> {
        self.call(Operation::TokenQuery, req).await
    }

    async fn token_remove(&self, req: &TokenRemoveRequest) -> GatewayOutcome<()> {
        self.call(Operation::TokenRemove, req).await
    }

    async fn recurring_cancel(&self, req: &RecurringCancelRequest) -> GatewayOutcome<()> {
        self.call(Operation::RecurringCancel, req).await
    }

    async fn apple_pay_session(
        &self,
        req: &ApplePaySessionRequest,
    ) -> GatewayOutcome<ApplePaySessionResponse> {
        self.call(Operation::ApplePaySession, req).await
    }

    async fn checkout_session_create(
        &self,
        req: &CheckoutSessionRequest,
    ) -> GatewayOutcome<CheckoutSessionResponse> {
        self.call(Operation::SessionCreate, req).await
    }

    async fn checkout_session_query(
        &self,
        req: &CheckoutSessionQueryRequest,
    ) -> GatewayOutcome<CheckoutSessionQueryResponse> {
        self.call(Operation::SessionQuery, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let d1 = backoff(&p, 1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = backoff(&p, 3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d30 = backoff(&p, 30);
            assert!(d30 >= Duration::from_millis(500) && d30 <= Duration::from_millis(1_000));
        }
    }

    #[cfg(feature = "aws-lc")]
    #[test]
    fn url_joins_base_and_path() {
        let keys = crate::keys::generate_merchant_key_pair().unwrap();
        let c = MerchantConfig::new("1", keys.private_key().unwrap(), keys.public.clone())
            .with_base_url("http://127.0.0.1:9/apis/");
        assert_eq!(
            c.url(Operation::Query),
            "http://127.0.0.1:9/apis/payments/query"
        );
        assert_eq!(c.response_signature, SignatureMode::Warn);
        assert!(format!("{c:?}").contains("***"));
    }
}
