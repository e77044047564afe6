//! # payorch-sandbox
//!
//! A faithful PayKKa v1.2 simulator: an axum server implementing every v1.2
//! operation of `shared/paykka-api/endpoints.md` and both notifications,
//! with its own ledger, PayKKa's money rules, test cards and magic amounts
//! that choose outcomes, and seeded fault injection. The README of this
//! crate has the outcome table, the codes and the signing rules.
//!
//! ```no_run
//! # async fn demo(merchant_public_key_pem: String) -> Result<(), payorch_sandbox::SandboxError> {
//! use payorch_sandbox::{SandboxConfig, spawn};
//! let config = SandboxConfig::with_merchant("10000000000001", merchant_public_key_pem);
//! let sandbox = spawn(config, "127.0.0.1:0".parse().unwrap()).await?;
//! println!("{}", sandbox.base_url()); // http://127.0.0.1:PORT/apis
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Modules: [`config`] (settings), [`ledger`] (the books, public snapshot
//! types), [`notify`] (delivery records). Signing is implemented here
//! independently of `payorch-paykka` on purpose (see `crypto`).

pub mod config;
mod crypto;
mod error;
mod ids;
pub mod ledger;
pub mod notify;
mod ops;
mod outcomes;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    BehaviourConfig, FaultConfig, NotifyConfig, OperationPaths, PlatformKey, RefundMode,
    ReleaseMode, SandboxConfig, SandboxDialect, SandboxMerchant,
};
pub use crypto::{percent_decode, percent_encode_base64, string_to_sign};
pub use error::SandboxError;
pub use ledger::{
    AgreementRecord, LedgerSnapshot, MerchantLedger, OrderRecord, RefundRecord, SessionRecord,
    TokenRecord,
};
pub use notify::{DeliveryOutcome, NotificationRecord};

use crate::crypto::MerchantKey;
use crate::ids::IdGen;
use crate::notify::{Notifier, Rng};
use crate::ops::TickScope;
use crate::server::{Shared, lock};

/// Test cards of the outcome table (README), for tests and demos.
pub mod cards {
    /// VISA, approved.
    pub const VISA_SUCCESS: &str = "4111111111111111";
    /// MASTERCARD, approved.
    pub const MASTERCARD_SUCCESS: &str = "5555555555554444";
    /// AMEX, approved.
    pub const AMEX_SUCCESS: &str = "378282246310005";
    /// `FAILURE`, `2099` Invalid Card.
    pub const DECLINE_INVALID_CARD: &str = "4000000000000002";
    /// ret_code `206022`, `FAILURE` / `2006`.
    pub const NOT_SUPPORTED: &str = "4000000000000010";
    /// `PROCESSING` with a 3DS challenge.
    pub const CHALLENGE_3DS: &str = "4000000000003220";
    /// `PROCESSING`, then approved asynchronously.
    pub const ASYNC_SUCCESS: &str = "4000000000000036";
    /// `PROCESSING`, then declined (`2099`) asynchronously.
    pub const ASYNC_DECLINE: &str = "4000000000000044";
    /// `FAILURE`, `1016` Route does not exist.
    pub const DECLINE_NO_ROUTE: &str = "4000000000000051";
    /// `FAILURE`, `1022` This merchant is not allowed to pay.
    pub const DECLINE_NOT_ALLOWED: &str = "4000000000000069";
}

/// Magic amounts (last three digits of the minor-unit amount), see README.
pub mod amounts {
    /// `...991`: committed, answer delayed by `FaultConfig::slow_response`.
    pub const SLOW_RESPONSE: i64 = 991;
    /// `...992`: committed, then HTTP 500 / `999999`.
    pub const ERROR_AFTER_COMMIT: i64 = 992;
    /// `...993`: initiate answers with a 3DS challenge whatever the card.
    pub const CHALLENGE: i64 = 993;
    /// `...994`: initiate / capture / refund commits, answers
    /// `FaultConfig::late_answer` later, and queries do not show it (nor
    /// notifications announce it) until then.
    pub const LATE_HIDDEN: i64 = 994;
    /// `...995`: the refund settles to `FAILURE`.
    pub const REFUND_FAILURE: i64 = 995;
}

/// A running sandbox. Dropping it without [`RunningSandbox::shutdown`]
/// leaves the server running until the runtime ends.
pub struct RunningSandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    ticker: JoinHandle<()>,
}

/// Starts the sandbox on `addr` (`127.0.0.1:0` for an ephemeral port).
pub async fn spawn(
    config: SandboxConfig,
    addr: SocketAddr,
) -> Result<RunningSandbox, SandboxError> {
    let mut merchants = HashMap::new();
    for m in &config.merchants {
        merchants.insert(
            m.merchant_id.clone(),
            MerchantKey::parse(&m.merchant_id, &m.public_key)?,
        );
    }
    let platform = match config.platform_key {
        Some(k) => k,
        None => PlatformKey::generate()?,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| SandboxError::HttpClient(e.to_string()))?;
    let notifier = Notifier::start(
        platform.clone(),
        config.faults.clone(),
        config.notify.clone(),
        client,
    );
    let ledger: BTreeMap<String, ledger::MerchantLedger> = merchants
        .keys()
        .map(|m| (m.clone(), ledger::MerchantLedger::default()))
        .collect();
    let shared = Arc::new(Shared {
        dialect: config.dialect,
        error_rng: Mutex::new(Rng::new(config.faults.seed ^ 0xE440_5E11)),
        faults: config.faults,
        behaviour: config.behaviour,
        default_notify_url: config.notify.default_url,
        merchants,
        platform,
        ledger: Mutex::new(ledger),
        ids: IdGen::new(),
        notifier,
        host_url: format!("http://{addr}"),
    });
    let router = server::router(shared.clone())?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "sandbox server stopped");
        }
    });
    let tick_shared = shared.clone();
    let ticker = tokio::spawn(async move {
        let mut interval =
            tokio::time::interval(tick_shared.behaviour.tick.max(Duration::from_millis(1)));
        loop {
            interval.tick().await;
            tick_shared.tick(TickScope {
                force_payments: false,
                force_refunds: false,
                force_expiry: false,
            });
        }
    });
    tracing::info!(%addr, "PayKKa sandbox listening");
    Ok(RunningSandbox {
        addr,
        shared,
        stop: Some(stop_tx),
        server,
        ticker,
    })
}

impl RunningSandbox {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Host plus API prefix, e.g. `http://127.0.0.1:PORT/apis`: the
    /// `base_url` a PayKKa client is configured with.
    pub fn base_url(&self) -> String {
        format!(
            "{}{}",
            self.shared.host_url,
            self.shared.dialect.prefix.trim_end_matches('/')
        )
    }

    /// `http://127.0.0.1:PORT` (3DS and checkout pages live under
    /// `/sandbox/...` there).
    pub fn host_url(&self) -> String {
        self.shared.host_url.clone()
    }

    /// The platform public key (PEM SPKI) merchants verify responses and
    /// notifications with.
    pub fn platform_public_key_pem(&self) -> String {
        self.shared.platform.public_key_pem().to_owned()
    }

    /// A copy of the whole ledger.
    pub fn ledger(&self) -> LedgerSnapshot {
        LedgerSnapshot {
            merchants: lock(&self.shared.ledger).clone(),
        }
    }

    /// Completes a pending 3DS challenge (what the shopper does on the
    /// `authentication_url` page) and notifies.
    pub async fn complete_challenge(
        &self,
        merchant_id: &str,
        order_id: &str,
        success: bool,
    ) -> Result<(), SandboxError> {
        self.known(merchant_id)?;
        self.shared.with_ledger(merchant_id, |ctx| {
            ops::complete_challenge(ctx, order_id, success)
        })
    }

    /// The shopper pays a checkout session on the hosted page with a test
    /// PAN; returns the new `order_id`.
    pub async fn pay_session(
        &self,
        merchant_id: &str,
        session_id: &str,
        pan: &str,
    ) -> Result<String, SandboxError> {
        self.known(merchant_id)?;
        self.shared
            .with_ledger(merchant_id, |ctx| ops::pay_session(ctx, session_id, pan))
    }

    /// The authorisation of `order_id` expires now: its uncaptured
    /// remainder is released (release mode `on_expiry`, usable in every
    /// mode); an order with nothing captured becomes `CANCELED`. Returns the
    /// released amount.
    pub fn expire_authorisation(
        &self,
        merchant_id: &str,
        order_id: &str,
    ) -> Result<i64, SandboxError> {
        self.known(merchant_id)?;
        self.shared
            .with_ledger(merchant_id, |ctx| ops::expire_authorisation(ctx, order_id))
    }

    /// Settles every pending refund now (to `SUCCESS`, or `FAILURE` for the
    /// magic amount) and notifies; returns how many settled.
    pub fn settle_refunds(&self) -> usize {
        self.shared.tick(TickScope {
            force_payments: false,
            force_refunds: true,
            force_expiry: false,
        })
    }

    /// Settles every asynchronous (`PROCESSING`, non-3DS) payment now.
    pub fn settle_pending(&self) -> usize {
        self.shared.tick(TickScope {
            force_payments: true,
            force_refunds: false,
            force_expiry: false,
        })
    }

    /// Expires every pending 3DS challenge now (`FAILURE`), as if the
    /// shopper abandoned it past `expire_time`.
    pub fn expire_challenges(&self) -> usize {
        self.shared.tick(TickScope {
            force_payments: false,
            force_refunds: false,
            force_expiry: true,
        })
    }

    /// Drops every later payment notification of this checkout session
    /// (`session_id`, as Checkout Session Create answered it): recorded as
    /// [`DeliveryOutcome::Dropped`], never sent. A targeted `notify_drop`
    /// for tests where only Checkout Session Query can tell the merchant.
    pub fn drop_session_notifications(&self, session_id: &str) {
        self.shared.notifier.drop_session(session_id);
    }

    /// Every notification queued so far, in queue order, with its delivery
    /// state.
    pub fn notifications_sent(&self) -> Vec<NotificationRecord> {
        self.shared.notifier.records()
    }

    /// Polls `condition` until it holds or `timeout` passes; returns whether
    /// it held. For tests that wait for background work.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops serving (in-flight requests finish), the background ticker and
    /// notification delivery.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.ticker.abort();
        self.shared.notifier.stop();
        let _ = (&mut self.server).await;
    }

    fn known(&self, merchant_id: &str) -> Result<(), SandboxError> {
        if self.shared.merchants.contains_key(merchant_id) {
            Ok(())
        } else {
            Err(SandboxError::UnknownMerchant(merchant_id.to_owned()))
        }
    }
}
