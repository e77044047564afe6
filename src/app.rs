//! The composition root: from a [`Config`] to a running set of parts
//! (store, PayKKa gateway or in-process sandbox, engine, API keys, webhook
//! verifier, health checks: store, and broker when `amqp_url` is set). Used
//! by `serve` and `demo`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use payorch_engine::gateway::PaymentGateway;
use payorch_engine::orchestrator::{Engine, EngineConfig, ReleaseMode};
use payorch_engine::store::{StreamId, SystemClock};
use payorch_engine::webhook::WebhookVerifier;
use payorch_http::{ApiKeys, HealthCheck, MeteredGateway, Metrics, TcpReachability};
use payorch_paykka::keys::generate_merchant_key_pair;
use payorch_paykka::{
    MerchantConfig, MerchantPrivateKey, MerchantWebhookVerifier, OperationTimeouts, PaykkaClient,
    PaykkaPublicKey, SignatureMode, SigningConfig,
};
use payorch_rabbitmq::BrokerHealth;
use payorch_sandbox::{RunningSandbox, SandboxConfig, SandboxMerchant};

use crate::config::Config;
use crate::store::Store;

/// Merchant id of the generated demo merchant (in-process sandbox).
pub const DEMO_MERCHANT: &str = "10000000000001";

/// The generated demo merchant's API key (shown once, never logged).
pub struct DemoMerchant {
    pub merchant_id: String,
    pub api_key: String,
}

impl std::fmt::Debug for DemoMerchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DemoMerchant({}, api_key ***)", self.merchant_id)
    }
}

/// Everything built from the configuration.
pub struct App {
    pub store: Store,
    pub engine: Arc<Engine>,
    pub api_keys: ApiKeys,
    pub verifier: Arc<dyn WebhookVerifier>,
    pub metrics: Metrics,
    /// Present when no PayKKa is configured.
    pub sandbox: Option<RunningSandbox>,
    /// The broker probe of `/healthz`, when `amqp_url` is configured.
    pub broker: Option<Arc<BrokerHealth>>,
    pub demo: Option<DemoMerchant>,
    /// `/healthz`: PayKKa reachability (degrading, not critical).
    pub paykka_health: Arc<TcpReachability>,
}

/// Where PayKKa posts notifications for a service reachable at `public_url`.
pub fn notify_urls(public_url: &str) -> (String, String) {
    let base = public_url.trim_end_matches('/');
    (
        format!("{base}/webhooks/paykka/payments"),
        format!("{base}/webhooks/paykka/refunds"),
    )
}

fn signature_mode(s: Option<&str>) -> SignatureMode {
    match s {
        Some("enforce") => SignatureMode::Enforce,
        Some("off") => SignatureMode::Off,
        _ => SignatureMode::Warn,
    }
}

/// The sandbox's model of the engine's [`ReleaseMode`].
fn sandbox_release_mode(mode: ReleaseMode) -> payorch_sandbox::ReleaseMode {
    match mode {
        ReleaseMode::CaptureFlag => payorch_sandbox::ReleaseMode::CaptureFlag,
        ReleaseMode::VoidAfterCapture => payorch_sandbox::ReleaseMode::VoidAfterCapture,
        ReleaseMode::OnExpiry => payorch_sandbox::ReleaseMode::OnExpiry,
    }
}

/// The start-up warning for a real PayKKa host (`*.paykka.com`) whose
/// response signatures are not enforced: a forged or altered answer would
/// be trusted. `None` when enforced or when the host is not PayKKa's.
pub fn unverified_responses_warning(base_url: &str, mode: SignatureMode) -> Option<String> {
    let host = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let real = host == "paykka.com" || host.ends_with(".paykka.com");
    let how = match mode {
        SignatureMode::Enforce => return None,
        SignatureMode::Warn => "only warned about (report-only)",
        SignatureMode::Off => "NOT checked at all",
    };
    real.then(|| {
        format!(
            "WARNING: PayKKa base URL {host} is a real PayKKa host, but its response signatures are {how}: \
             a forged or altered answer would be trusted. Set paykka.response_signature = \"enforce\" \
             (or PAYORCH_PAYKKA_RESPONSE_SIGNATURE=enforce) once the signature scheme is confirmed \
             (authentication.md §5)."
        )
    })
}

/// A random API key (128 bits from the OS RNG through uuid v4).
pub fn random_api_key() -> String {
    format!(
        "pk_demo_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl App {
    /// Builds the parts. `public_url` is where this service's webhook
    /// endpoints are reachable (the in-process sandbox posts there).
    pub async fn build(config: &Config, public_url: &str) -> anyhow::Result<App> {
        let store = Store::open_migrated(&config.store_url).await?;
        let metrics = Metrics::new();
        let (notify, refund_notify) = notify_urls(public_url);
        let mut api_keys = ApiKeys::new();
        let mut sandbox = None;
        let mut demo = None;

        // Every PayKKa base URL, for the `/healthz` reachability check.
        let mut paykka_urls: Vec<String> = Vec::new();
        let (client, verifier) = match config.paykka_base_url() {
            Some(_) => {
                let mut builder = PaykkaClient::builder();
                let mut verifier = MerchantWebhookVerifier::default();
                for (i, m) in config.merchants.iter().enumerate() {
                    // `[paykka]` overlaid with `[merchants.paykka]`; validation
                    // made sure every merchant has a base URL.
                    let section = config.merchant_paykka(i);
                    let base_url = section
                        .base_url
                        .as_deref()
                        .with_context(|| format!("merchants[{i}]: no PayKKa base URL"))?;
                    paykka_urls.push(base_url.to_owned());
                    let key =
                        MerchantPrivateKey::from_file(&m.private_key_path).with_context(|| {
                            format!(
                                "merchants[{i}].private_key_path ({})",
                                m.private_key_path.display()
                            )
                        })?;
                    let pk = PaykkaPublicKey::from_file(&m.paykka_public_key_path).with_context(
                        || {
                            format!(
                                "merchants[{i}].paykka_public_key_path ({})",
                                m.paykka_public_key_path.display()
                            )
                        },
                    )?;
                    let response_mode = signature_mode(section.response_signature.as_deref());
                    if let Some(w) = unverified_responses_warning(base_url, response_mode) {
                        // Loud on purpose: on stderr whatever the log
                        // filter, and in the logs.
                        eprintln!("\n{}\n{w}\n{}\n", "!".repeat(78), "!".repeat(78));
                        tracing::warn!(
                            setting = "paykka.response_signature",
                            merchant = m.merchant_id.as_str(),
                            "{w}"
                        );
                    }
                    let signing = SigningConfig {
                        percent_encode_signature: section.percent_encode_signature.unwrap_or(true),
                        body_version_field: section.body_version_field.unwrap_or(false),
                    };
                    let mut merchant = MerchantConfig::new(m.merchant_id.clone(), key, pk.clone())
                        .with_base_url(base_url)
                        .with_signing(signing)
                        .with_response_signature(response_mode);
                    if let Some(paths) = &section.paths {
                        merchant = merchant.with_paths(paths.clone());
                    }
                    if let Some(t) = section.timeout_secs {
                        merchant = merchant.with_timeouts(OperationTimeouts::uniform(
                            Duration::from_secs(t.max(1)),
                        ));
                    }
                    builder = builder.merchant(merchant);
                    verifier = verifier.merchant(
                        &m.merchant_id,
                        pk,
                        signature_mode(section.webhook_signature.as_deref()),
                        section.webhook_tolerance_ms,
                    );
                    api_keys = api_keys
                        .with_hashed_key(m.merchant_id.clone(), &m.api_key_sha256)
                        .with_context(|| format!("merchants[{i}].api_key_sha256"))?;
                }
                anyhow::ensure!(!config.merchants.is_empty(), "merchants: none configured");
                let client = builder.build().context("cannot build the PayKKa client")?;
                (client, verifier)
            }
            None => {
                let keys = generate_merchant_key_pair().context("cannot generate demo keys")?;
                let mut sb_config = SandboxConfig {
                    merchants: vec![SandboxMerchant::new(
                        DEMO_MERCHANT,
                        keys.public.to_spki_pem(),
                    )],
                    ..SandboxConfig::default()
                };
                // The in-process PayKKa releases a remainder the way the
                // engine is told it does.
                sb_config.behaviour.release_mode = sandbox_release_mode(config.release_mode());
                let running = payorch_sandbox::spawn(sb_config, ([127, 0, 0, 1], 0).into())
                    .await
                    .context("cannot start the in-process sandbox")?;
                let platform = PaykkaPublicKey::parse(&running.platform_public_key_pem())
                    .context("sandbox platform key")?;
                let client = PaykkaClient::new(
                    MerchantConfig::new(
                        DEMO_MERCHANT,
                        keys.private_key().context("demo private key")?,
                        platform.clone(),
                    )
                    .with_base_url(running.base_url())
                    .with_response_signature(SignatureMode::Enforce),
                )
                .context("cannot build the PayKKa client")?;
                paykka_urls.push(running.base_url());
                let key = random_api_key();
                api_keys = api_keys.with_plain_key(DEMO_MERCHANT, &key);
                demo = Some(DemoMerchant {
                    merchant_id: DEMO_MERCHANT.into(),
                    api_key: key,
                });
                sandbox = Some(running);
                // The sandbox signs with the scheme we implement: enforce.
                let verifier = MerchantWebhookVerifier::default().merchant(
                    DEMO_MERCHANT,
                    platform,
                    SignatureMode::Enforce,
                    None,
                );
                (client, verifier)
            }
        };

        let gateway: Arc<dyn PaymentGateway> =
            Arc::new(MeteredGateway::new(client, metrics.clone()));
        let engine = Arc::new(Engine::new(
            store.events(),
            store.idempotency(),
            gateway,
            Arc::new(SystemClock),
            EngineConfig {
                notify_url: Some(notify),
                refund_notify_url: Some(refund_notify),
                default_return_url: Some(format!("{}/", public_url.trim_end_matches('/'))),
                release_mode: config.release_mode(),
                merchant_release_modes: config
                    .merchants
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.merchant_id.clone(), config.merchant_release_mode(i)))
                    .collect(),
                ..EngineConfig::default()
            },
        ));
        let verifier: Arc<dyn WebhookVerifier> = Arc::new(verifier);
        // Connects lazily (first /healthz), so a down broker does not stop
        // the service from starting: the relay retries, /healthz says 503.
        let broker = config
            .amqp_url
            .as_ref()
            .map(|url| Arc::new(BrokerHealth::new(url.clone(), BROKER_PROBE_TIMEOUT)));
        let paykka_health = Arc::new(
            TcpReachability::from_urls("paykka", paykka_urls.iter().map(String::as_str))
                .map_err(|e| anyhow::anyhow!("paykka.base_url: {e}"))?,
        );
        Ok(App {
            paykka_health,
            store,
            engine,
            api_keys,
            verifier,
            metrics,
            sandbox,
            broker,
            demo,
        })
    }

    /// Health checks of the parts: `store`, `broker` when `amqp_url` is
    /// configured, and `paykka` (TCP reachability of the PayKKa base
    /// URLs; degrading, not critical: see [`TcpReachability`]).
    pub fn health_checks(&self) -> Vec<Arc<dyn HealthCheck>> {
        let mut checks: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(StoreHealth {
            store: self.store.clone(),
        })];
        if let Some(b) = &self.broker {
            checks.push(Arc::new(BrokerCheck(b.clone())));
        }
        checks.push(self.paykka_health.clone());
        checks
    }

    /// Stops the sandbox, closes the broker probe and the store.
    pub async fn shutdown(self) {
        if let Some(b) = &self.broker {
            b.close().await;
        }
        if let Some(s) = self.sandbox {
            s.shutdown().await;
        }
        self.store.close().await;
    }
}

/// Time budget of one broker probe (below the HTTP layer's 2 s per check,
/// so the answer names the broker's own error).
const BROKER_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// `/healthz`: the broker opens a channel on the probe's kept connection.
struct BrokerCheck(Arc<BrokerHealth>);

#[async_trait]
impl HealthCheck for BrokerCheck {
    fn name(&self) -> &str {
        "broker"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.check().await.map_err(|e| e.to_string())
    }
}

/// `/healthz`: the store answers a read.
struct StoreHealth {
    store: Store,
}

#[async_trait]
impl HealthCheck for StoreHealth {
    fn name(&self) -> &str {
        "store"
    }

    async fn check(&self) -> Result<(), String> {
        let events = self.store.events();
        tokio::time::timeout(
            Duration::from_secs(2),
            events.stream_version(&StreamId::new("healthz")),
        )
        .await
        .map_err(|_| "timeout".to_owned())?
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod warning_tests {
    use super::*;

    #[test]
    fn a_real_paykka_host_without_enforced_signatures_is_warned_about() {
        for url in [
            "https://sandbox.aq.paykka.com/apis",
            "https://API.PayKKa.com:443/apis",
            "https://user:pw@sandbox.aq.paykka.com/apis",
        ] {
            let w = unverified_responses_warning(url, SignatureMode::Warn).expect(url);
            assert!(w.contains("paykka.response_signature"), "{w}");
            assert!(!w.contains("pw@"), "{w}");
            assert!(unverified_responses_warning(url, SignatureMode::Off).is_some());
            assert!(unverified_responses_warning(url, SignatureMode::Enforce).is_none());
        }
        for url in [
            "http://127.0.0.1:8089/apis",
            "http://localhost/apis",
            "https://paykka.com.evil.example/apis",
        ] {
            assert!(
                unverified_responses_warning(url, SignatureMode::Warn).is_none(),
                "{url}"
            );
        }
    }
}
