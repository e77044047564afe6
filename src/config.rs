//! Service configuration: `payorch.toml` (or `--config FILE`), then
//! `PAYORCH_*` environment overrides, then command-line flags.
//!
//! Every setting has a default that makes a fresh machine work: SQLite in
//! `./payorch.db`, the in-process bus, and (no `[paykka]` section) an
//! in-process PayKKa sandbox with a generated demo merchant.
//!
//! Errors name the key at fault (`store_url`, `PAYORCH_ADDR`,
//! `merchants[0].private_key_path`...).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use payorch_engine::orchestrator::ReleaseMode;
use payorch_engine::reconciler::ReconcilerConfig;
use serde::Deserialize;

/// The default store: a SQLite file in the working directory.
pub const DEFAULT_STORE_URL: &str = "sqlite://payorch.db";
/// The default listen address of `payorch serve`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// The file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "payorch.toml";

/// Why the configuration could not be loaded. Always a fix-the-input error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has a bad/unknown key (the
    /// message names the key and line).
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A setting (file key, env variable or flag named in `key`) has an
    /// invalid value.
    #[error("invalid value for {key}: {message}")]
    Invalid { key: String, message: String },
}

/// Format of `serve`'s log lines (on stderr).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the request span's fields
    /// (`request_id`...), for log collectors.
    Json,
}

/// The PayKKa connection (absent: in-process sandbox).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PaykkaSection {
    /// Host plus prefix, e.g. `https://api.paykka.example/apis` [INFERRED prefix].
    pub base_url: Option<String>,
    /// Response signature check: `enforce`, `warn` (default) or `off`.
    #[serde(default)]
    pub response_signature: Option<String>,
    /// Percent-encode the base64 signature header (spec default true) [INFERRED].
    #[serde(default)]
    pub percent_encode_signature: Option<bool>,
    /// Send the `version` field in the body (spec default false) [INFERRED].
    #[serde(default)]
    pub body_version_field: Option<bool>,
    /// Notification timestamp tolerance in ms (default 300 000; 0 turns
    /// the freshness check off).
    #[serde(default)]
    pub webhook_tolerance_ms: Option<u64>,
    /// Notification signature check [INFERRED scheme, authentication.md
    /// §5]: `warn` (default: report-only, as the spec asks until the scheme
    /// is confirmed; a notification that fails the signature or freshness
    /// check is never recorded as a fact, it only makes payorch ask PayKKa
    /// about the order with Transaction Query), `enforce` (401, nothing
    /// done) or `off` (no signature check; freshness still checked).
    #[serde(default)]
    pub webhook_signature: Option<String>,
    /// Total timeout of every PayKKa call, in seconds (default: the
    /// client's per-operation defaults).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Relative path per operation ([INFERRED] paths; defaults from the spec).
    #[serde(default)]
    pub paths: Option<payorch_paykka::OperationPaths>,
    /// How PayKKa releases the uncaptured rest of a final partial capture
    /// ([INFERRED]): `capture_flag` (default), `void_after_capture` or
    /// `on_expiry` (`payorch_engine::orchestrator::ReleaseMode`).
    #[serde(default)]
    pub release_mode: Option<String>,
}

/// One merchant served by this instance.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MerchantSection {
    /// PayKKa merchant number.
    pub merchant_id: String,
    /// The merchant's RSA private key (PEM) that signs requests.
    pub private_key_path: PathBuf,
    /// PayKKa's platform public key (PEM or bare base64).
    pub paykka_public_key_path: PathBuf,
    /// Hex SHA-256 of the merchant's payorch API key.
    pub api_key_sha256: String,
    /// This merchant's own PayKKa settings (`[merchants.paykka]`): any key
    /// of `[paykka]`, overriding it for this merchant only (base URL,
    /// paths, signing dialect, signature modes, timeouts).
    #[serde(default)]
    pub paykka: Option<PaykkaSection>,
}

impl PaykkaSection {
    /// These settings with every key `over` sets taking precedence.
    pub fn overlaid(&self, over: Option<&PaykkaSection>) -> PaykkaSection {
        let Some(o) = over else {
            return self.clone();
        };
        PaykkaSection {
            base_url: o.base_url.clone().or_else(|| self.base_url.clone()),
            response_signature: o
                .response_signature
                .clone()
                .or_else(|| self.response_signature.clone()),
            percent_encode_signature: o.percent_encode_signature.or(self.percent_encode_signature),
            body_version_field: o.body_version_field.or(self.body_version_field),
            webhook_tolerance_ms: o.webhook_tolerance_ms.or(self.webhook_tolerance_ms),
            webhook_signature: o
                .webhook_signature
                .clone()
                .or_else(|| self.webhook_signature.clone()),
            timeout_secs: o.timeout_secs.or(self.timeout_secs),
            paths: o.paths.clone().or_else(|| self.paths.clone()),
            release_mode: o.release_mode.clone().or_else(|| self.release_mode.clone()),
        }
    }
}

/// One merchant webhook endpoint (`[[webhooks]]`): payorch POSTs the
/// merchant's events there, signed with `secret` (payorch-webhooks).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// Stable id naming the endpoint in logs (default `<merchant_id>-<n>`).
    #[serde(default)]
    pub id: Option<String>,
    /// The merchant whose events go there.
    pub merchant_id: String,
    /// `https://...` (or `http://` for tests).
    pub url: String,
    /// Signing secret (HMAC-SHA256), shared with the merchant.
    pub secret: String,
    /// Filters on `<stream_type>.<event_type>` (`order.*`, `order.captured`,
    /// `*`); empty or absent: every event.
    #[serde(default)]
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSection")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("url", &self.url)
            .field("secret", &"***")
            .field("events", &self.events)
            .finish()
    }
}

/// The whole configuration. See the module docs for precedence.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://FILE` or `postgres://...`.
    pub store_url: String,
    /// `amqp://...`; `None` uses the in-process bus.
    pub amqp_url: Option<String>,
    /// Listen address of `serve`.
    pub addr: String,
    /// The URL PayKKa reaches this service at (for `notify_url`); default
    /// `http://<addr>`.
    pub public_url: Option<String>,
    /// Seconds between reconciler passes.
    pub reconcile_interval_secs: u64,
    /// Age in seconds of an order's last event before the reconciler
    /// queries PayKKa about its open call (default 5; 0 queries at once).
    pub reconcile_threshold_secs: u64,
    /// Seconds after a call was requested from which "not found" / "not
    /// applied" answers count as definitive (default 86 400).
    pub reconcile_grace_secs: u64,
    /// First backoff in seconds between two queries of one order (doubles
    /// after each query; default 5).
    pub reconcile_backoff_base_secs: u64,
    /// Longest backoff in seconds between two queries of one order
    /// (default 3 600; at least `reconcile_backoff_base_secs`).
    pub reconcile_backoff_max_secs: u64,
    /// Re-sends of one refund PayKKa keeps not knowing before the
    /// reconciler stops re-sending it (it stays unknown, is queried at the
    /// longest backoff and counted in `payorch_reconciler_needs_attention`;
    /// default 24).
    pub reconcile_max_refund_resends: u32,
    /// `serve`'s log format: `text` (default) or `json`.
    pub log_format: LogFormat,
    pub paykka: Option<PaykkaSection>,
    pub merchants: Vec<MerchantSection>,
    /// Merchant webhook endpoints (`[[webhooks]]`).
    pub webhooks: Vec<WebhookSection>,
    /// Per-attempt timeout of a webhook delivery, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// Wait after a webhook delivery's first failure, in milliseconds
    /// (doubles after each failure).
    pub webhook_backoff_base_ms: u64,
    /// Longest wait between two attempts of one delivery, in milliseconds.
    pub webhook_backoff_max_ms: u64,
    /// Seconds after a delivery's first attempt when retries stop (the
    /// delivery is then `given_up`).
    pub webhook_give_up_after_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store_url: DEFAULT_STORE_URL.into(),
            amqp_url: None,
            addr: DEFAULT_ADDR.into(),
            public_url: None,
            reconcile_interval_secs: 5,
            reconcile_threshold_secs: 5,
            reconcile_grace_secs: 24 * 3600,
            reconcile_backoff_base_secs: 5,
            reconcile_backoff_max_secs: 3600,
            reconcile_max_refund_resends: 24,
            log_format: LogFormat::Text,
            paykka: None,
            merchants: Vec::new(),
            webhooks: Vec::new(),
            webhook_timeout_ms: 10_000,
            webhook_backoff_base_ms: 10_000,
            webhook_backoff_max_ms: 3_600_000,
            webhook_give_up_after_secs: 24 * 3600,
        }
    }
}

/// Overrides from command-line flags (highest precedence).
#[derive(Clone, Debug, Default)]
pub struct FlagOverrides {
    pub store_url: Option<String>,
    pub amqp_url: Option<String>,
    pub addr: Option<String>,
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Parses TOML text (`path` only names the source in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Loads: defaults < file (`file`, else `PAYORCH_CONFIG`, else
    /// `./payorch.toml` if present) < `PAYORCH_*` from `env` < `flags`.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &FlagOverrides,
    ) -> Result<Config, ConfigError> {
        let path: Option<PathBuf> = match file {
            Some(p) => Some(p.to_owned()),
            None => match env("PAYORCH_CONFIG") {
                Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
                _ => {
                    let p = PathBuf::from(DEFAULT_CONFIG_FILE);
                    p.exists().then_some(p)
                }
            },
        };
        let mut config = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                Config::from_toml(&text, p)?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.apply_flags(flags);
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        if let Some(v) = get("PAYORCH_STORE_URL") {
            self.store_url = v;
        }
        if let Some(v) = get("PAYORCH_AMQP_URL") {
            self.amqp_url = if v == "none" { None } else { Some(v) };
        }
        if let Some(v) = get("PAYORCH_ADDR") {
            self.addr = v;
        }
        if let Some(v) = get("PAYORCH_LOG_FORMAT") {
            self.log_format = match v.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "PAYORCH_LOG_FORMAT".into(),
                        message: format!("{other:?} is not one of text, json"),
                    });
                }
            };
        }
        if let Some(v) = get("PAYORCH_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        let secs = |key: &str, target: &mut u64| -> Result<(), ConfigError> {
            if let Some(v) = get(key) {
                *target = v.trim().parse().map_err(|e| ConfigError::Invalid {
                    key: key.into(),
                    message: format!("{v:?} is not a whole number of seconds: {e}"),
                })?;
            }
            Ok(())
        };
        secs(
            "PAYORCH_RECONCILE_INTERVAL_SECS",
            &mut self.reconcile_interval_secs,
        )?;
        secs(
            "PAYORCH_RECONCILE_THRESHOLD_SECS",
            &mut self.reconcile_threshold_secs,
        )?;
        secs(
            "PAYORCH_RECONCILE_GRACE_SECS",
            &mut self.reconcile_grace_secs,
        )?;
        secs(
            "PAYORCH_RECONCILE_BACKOFF_BASE_SECS",
            &mut self.reconcile_backoff_base_secs,
        )?;
        secs(
            "PAYORCH_RECONCILE_BACKOFF_MAX_SECS",
            &mut self.reconcile_backoff_max_secs,
        )?;
        if let Some(v) = get("PAYORCH_RECONCILE_MAX_REFUND_RESENDS") {
            self.reconcile_max_refund_resends =
                v.trim().parse().map_err(|e| ConfigError::Invalid {
                    key: "PAYORCH_RECONCILE_MAX_REFUND_RESENDS".into(),
                    message: format!("{v:?} is not a whole number: {e}"),
                })?;
        }
        let ms = |key: &str, target: &mut u64| -> Result<(), ConfigError> {
            if let Some(v) = get(key) {
                *target = v.trim().parse().map_err(|e| ConfigError::Invalid {
                    key: key.into(),
                    message: format!("{v:?} is not a whole number of milliseconds: {e}"),
                })?;
            }
            Ok(())
        };
        ms("PAYORCH_WEBHOOK_TIMEOUT_MS", &mut self.webhook_timeout_ms)?;
        ms(
            "PAYORCH_WEBHOOK_BACKOFF_BASE_MS",
            &mut self.webhook_backoff_base_ms,
        )?;
        ms(
            "PAYORCH_WEBHOOK_BACKOFF_MAX_MS",
            &mut self.webhook_backoff_max_ms,
        )?;
        secs(
            "PAYORCH_WEBHOOK_GIVE_UP_AFTER_SECS",
            &mut self.webhook_give_up_after_secs,
        )?;
        if let Some(v) = get("PAYORCH_PAYKKA_BASE_URL") {
            self.paykka.get_or_insert_with(Default::default).base_url = Some(v);
        }
        if let Some(v) = get("PAYORCH_PAYKKA_RESPONSE_SIGNATURE") {
            self.paykka
                .get_or_insert_with(Default::default)
                .response_signature = Some(v);
        }
        if let Some(v) = get("PAYORCH_PAYKKA_WEBHOOK_SIGNATURE") {
            self.paykka
                .get_or_insert_with(Default::default)
                .webhook_signature = Some(v);
        }
        if let Some(v) = get("PAYORCH_PAYKKA_RELEASE_MODE") {
            self.paykka
                .get_or_insert_with(Default::default)
                .release_mode = Some(v);
        }
        Ok(())
    }

    fn apply_flags(&mut self, flags: &FlagOverrides) {
        if let Some(v) = &flags.store_url {
            self.store_url = v.clone();
        }
        if let Some(v) = &flags.amqp_url {
            self.amqp_url = Some(v.clone());
        }
        if let Some(v) = &flags.addr {
            self.addr = v.clone();
        }
        if let Some(v) = flags.log_format {
            self.log_format = v;
        }
    }

    /// Checks values whose errors should name the key before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if !(self.store_url.starts_with("sqlite:")
            || self.store_url.starts_with("postgres://")
            || self.store_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "store_url",
                format!(
                    "{:?} must start with sqlite: or postgres://",
                    redact_url(&self.store_url)
                ),
            ));
        }
        if let Some(a) = &self.amqp_url
            && !(a.starts_with("amqp://") || a.starts_with("amqps://"))
        {
            return Err(invalid(
                "amqp_url",
                "must start with amqp:// or amqps://".into(),
            ));
        }
        self.addr
            .parse::<SocketAddr>()
            .map_err(|e| invalid("addr", format!("{:?}: {e}", self.addr)))?;
        if self.reconcile_backoff_base_secs == 0 {
            return Err(invalid(
                "reconcile_backoff_base_secs",
                "must be at least 1 (0 would query an unanswered order on every pass)".into(),
            ));
        }
        if self.reconcile_backoff_max_secs < self.reconcile_backoff_base_secs {
            return Err(invalid(
                "reconcile_backoff_max_secs",
                format!(
                    "{} is below reconcile_backoff_base_secs ({})",
                    self.reconcile_backoff_max_secs, self.reconcile_backoff_base_secs
                ),
            ));
        }
        let check_modes = |key: &str, p: &PaykkaSection| -> Result<(), ConfigError> {
            for (name, mode) in [
                ("response_signature", &p.response_signature),
                ("webhook_signature", &p.webhook_signature),
            ] {
                if let Some(mode) = mode
                    && !matches!(mode.as_str(), "enforce" | "warn" | "off")
                {
                    return Err(invalid(
                        &format!("{key}.{name}"),
                        format!("{mode:?} is not one of enforce, warn, off"),
                    ));
                }
            }
            if let Some(mode) = &p.release_mode
                && ReleaseMode::parse(mode).is_none()
            {
                return Err(invalid(
                    &format!("{key}.release_mode"),
                    format!("{mode:?} is not one of capture_flag, void_after_capture, on_expiry"),
                ));
            }
            Ok(())
        };
        if let Some(p) = &self.paykka {
            check_modes("paykka", p)?;
            if p.base_url.is_some() && self.merchants.is_empty() {
                return Err(invalid(
                    "merchants",
                    "paykka.base_url is set but no [[merchants]] are configured".into(),
                ));
            }
        }
        let global = self.paykka.clone().unwrap_or_default();
        for (i, m) in self.merchants.iter().enumerate() {
            if let Some(p) = &m.paykka {
                check_modes(&format!("merchants[{i}].paykka"), p)?;
            }
        }
        for (i, m) in self.merchants.iter().enumerate() {
            if m.merchant_id.is_empty() {
                return Err(invalid(
                    &format!("merchants[{i}].merchant_id"),
                    "empty".into(),
                ));
            }
            if m.api_key_sha256.len() != 64
                || !m.api_key_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(invalid(
                    &format!("merchants[{i}].api_key_sha256"),
                    "must be 64 hex digits (SHA-256 of the API key)".into(),
                ));
            }
            if global.overlaid(m.paykka.as_ref()).base_url.is_none() {
                return Err(invalid(
                    &format!("merchants[{i}]"),
                    "no PayKKa base URL: set paykka.base_url (or merchants[i].paykka.base_url); \
                     without [[merchants]] payorch runs against its in-process sandbox"
                        .into(),
                ));
            }
        }
        if self.webhook_timeout_ms == 0 {
            return Err(invalid("webhook_timeout_ms", "must be above 0".into()));
        }
        if self.webhook_backoff_base_ms == 0 {
            return Err(invalid("webhook_backoff_base_ms", "must be above 0".into()));
        }
        if self.webhook_backoff_max_ms < self.webhook_backoff_base_ms {
            return Err(invalid(
                "webhook_backoff_max_ms",
                format!(
                    "{} is below webhook_backoff_base_ms ({})",
                    self.webhook_backoff_max_ms, self.webhook_backoff_base_ms
                ),
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, id) in self.webhook_ids().into_iter().enumerate() {
            if !ids.insert(id.clone()) {
                return Err(invalid(
                    &format!("webhooks[{i}].id"),
                    format!("{id:?} names two endpoints; ids must be unique"),
                ));
            }
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                return Err(invalid(
                    &format!("webhooks[{i}].url"),
                    "must start with https:// or http://".into(),
                ));
            }
            if w.secret.len() < 16 {
                return Err(invalid(
                    &format!("webhooks[{i}].secret"),
                    "must be at least 16 characters".into(),
                ));
            }
            if w.merchant_id.is_empty() {
                return Err(invalid(
                    &format!("webhooks[{i}].merchant_id"),
                    "empty".into(),
                ));
            }
        }
        Ok(())
    }

    /// The `[[webhooks]]` entries with their ids.
    pub fn webhook_ids(&self) -> Vec<String> {
        self.webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| {
                w.id.clone()
                    .unwrap_or_else(|| format!("{}-{i}", w.merchant_id))
            })
            .collect()
    }

    /// The configured PayKKa base URL, if any (`None`: in-process sandbox):
    /// `[paykka] base_url`, else the first merchant's own.
    pub fn paykka_base_url(&self) -> Option<&str> {
        self.paykka
            .as_ref()
            .and_then(|p| p.base_url.as_deref())
            .or_else(|| {
                self.merchants
                    .iter()
                    .find_map(|m| m.paykka.as_ref().and_then(|p| p.base_url.as_deref()))
            })
    }

    /// The engine's release mode ([`ReleaseMode`]) when nothing names a
    /// merchant: `[paykka] release_mode`, else the default. Call after
    /// [`Config::validate`] (an unknown name reads as the default).
    pub fn release_mode(&self) -> ReleaseMode {
        self.paykka
            .as_ref()
            .and_then(|p| p.release_mode.as_deref())
            .and_then(ReleaseMode::parse)
            .unwrap_or_default()
    }

    /// Merchant `i`'s release mode: its own `[merchants.paykka]
    /// release_mode`, else `[paykka]`'s, else the default.
    pub fn merchant_release_mode(&self, i: usize) -> ReleaseMode {
        self.merchant_paykka(i)
            .release_mode
            .as_deref()
            .and_then(ReleaseMode::parse)
            .unwrap_or_default()
    }

    /// The PayKKa settings of merchant `i`: `[paykka]` overlaid with its
    /// own `[merchants.paykka]`.
    pub fn merchant_paykka(&self, i: usize) -> PaykkaSection {
        self.paykka
            .clone()
            .unwrap_or_default()
            .overlaid(self.merchants.get(i).and_then(|m| m.paykka.as_ref()))
    }

    /// The reconciler settings of `serve` (page size: the engine default).
    pub fn reconciler(&self) -> ReconcilerConfig {
        ReconcilerConfig {
            threshold: Duration::from_secs(self.reconcile_threshold_secs),
            grace: Duration::from_secs(self.reconcile_grace_secs),
            backoff_base: Duration::from_secs(self.reconcile_backoff_base_secs),
            backoff_max: Duration::from_secs(self.reconcile_backoff_max_secs),
            max_refund_resends: self.reconcile_max_refund_resends,
            ..ReconcilerConfig::default()
        }
    }
}

/// `url` with any password replaced by `***` (for printing). Works on
/// any text shaped like `[scheme://]user:password@host...`, so a URL with
/// a misspelt scheme (or none) never prints its password either.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let prefix = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{prefix}{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("payorch.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn log_format_from_file_env_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "log_format = \"json\"\n");
        let c = Config::load(Some(&p), &env_of(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        let flags = FlagOverrides {
            log_format: Some(LogFormat::Text),
            ..FlagOverrides::default()
        };
        let c = Config::load(Some(&p), &env_of(&[]), &flags).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        let c = Config::load(
            Some(&write(&dir, "")),
            &env_of(&[("PAYORCH_LOG_FORMAT", "json")]),
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        let e = Config::load(
            Some(&p),
            &env_of(&[("PAYORCH_LOG_FORMAT", "xml")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("PAYORCH_LOG_FORMAT"), "{e}");
        let e = Config::load(
            Some(&write(&dir, "log_format = \"xml\"\n")),
            &env_of(&[]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("log_format"), "{e}");
    }

    #[test]
    fn defaults_without_file_env_or_flags() {
        let c = Config::load(
            Some(Path::new("/nonexistent/none.toml")),
            &env_of(&[]),
            &FlagOverrides::default(),
        );
        assert!(matches!(c, Err(ConfigError::Read { .. })));
        let mut c = Config::default();
        c.apply_env(&env_of(&[])).unwrap();
        assert_eq!(c.store_url, DEFAULT_STORE_URL);
        assert_eq!(c.addr, DEFAULT_ADDR);
        assert_eq!(c.amqp_url, None);
        assert_eq!(c.paykka_base_url(), None);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "store_url = \"sqlite://file.db\"\naddr = \"127.0.0.1:1111\"\namqp_url = \"amqp://file\"\n",
        );
        let none = FlagOverrides::default();
        let c = Config::load(Some(&p), &env_of(&[]), &none).unwrap();
        assert_eq!(
            (c.store_url.as_str(), c.addr.as_str()),
            ("sqlite://file.db", "127.0.0.1:1111")
        );
        let env = env_of(&[
            ("PAYORCH_STORE_URL", "sqlite://env.db"),
            ("PAYORCH_ADDR", "127.0.0.1:2222"),
        ]);
        let c = Config::load(Some(&p), &env, &none).unwrap();
        assert_eq!(
            (c.store_url.as_str(), c.addr.as_str()),
            ("sqlite://env.db", "127.0.0.1:2222")
        );
        assert_eq!(c.amqp_url.as_deref(), Some("amqp://file"));
        let flags = FlagOverrides {
            store_url: Some("sqlite://flag.db".into()),
            amqp_url: None,
            addr: Some("127.0.0.1:3333".into()),
            log_format: None,
        };
        let c = Config::load(Some(&p), &env, &flags).unwrap();
        assert_eq!(
            (c.store_url.as_str(), c.addr.as_str()),
            ("sqlite://flag.db", "127.0.0.1:3333")
        );
        // "none" in the env turns a file's broker off.
        let c = Config::load(Some(&p), &env_of(&[("PAYORCH_AMQP_URL", "none")]), &none).unwrap();
        assert_eq!(c.amqp_url, None);
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "stor_url = \"x\"\n");
        let e = Config::load(Some(&p), &env_of(&[]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("stor_url"), "{e}");
        let p = write(&dir, "addr = 5\n");
        let e = Config::load(Some(&p), &env_of(&[]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("addr"), "{e}");
        let e = Config::load(
            Some(&write(&dir, "")),
            &env_of(&[("PAYORCH_ADDR", "nope")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("addr"), "{e}");
        let p = write(
            &dir,
            "[[merchants]]\nmerchant_id = \"1\"\nprivate_key_path = \"k\"\npaykka_public_key_path = \"p\"\napi_key_sha256 = \"zz\"\n",
        );
        let e = Config::load(Some(&p), &env_of(&[]), &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("merchants[0].api_key_sha256"), "{e}");
        // A store URL with a misspelt scheme names the key, not the password.
        let e = Config::load(
            Some(&write(&dir, "")),
            &env_of(&[("PAYORCH_STORE_URL", "postgress://app:hunter2@db/pay")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("store_url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn urls_print_without_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
        assert_eq!(redact_url("sqlite://payorch.db"), "sqlite://payorch.db");
        assert_eq!(
            redact_url("postgress://u:secret@h:5432/db"),
            "postgress://u:***@h:5432/db"
        );
        assert_eq!(redact_url("u:secret@h:5432/db"), "u:***@h:5432/db");
        assert_eq!(
            redact_url("amqp://guest:p%40ss@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
    }

    #[test]
    fn paykka_dialect_settings_parse() {
        let c = Config::from_toml(
            "[paykka]\nbase_url = \"https://x/apis\"\npercent_encode_signature = false\ntimeout_secs = 9\n[paykka.paths]\nvoid = \"/payments/cancel\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let p = c.paykka.unwrap();
        assert_eq!(p.percent_encode_signature, Some(false));
        assert_eq!(p.timeout_secs, Some(9));
        let paths = p.paths.unwrap();
        assert_eq!(paths.void, "/payments/cancel");
        assert_eq!(
            paths.initiate,
            payorch_paykka::OperationPaths::default().initiate
        );
        let e = Config::from_toml("[paykka.paths]\nvoidd = \"/x\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("voidd"), "{e}");
    }

    const MERCHANT: &str = "[[merchants]]\nmerchant_id = \"1\"\nprivate_key_path = \"k\"\npaykka_public_key_path = \"p\"\napi_key_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

    #[test]
    fn merchants_without_a_paykka_base_url_are_an_error_naming_the_key() {
        let c = Config::from_toml(MERCHANT, Path::new("t.toml")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("merchants[0]"), "{e}");
        assert!(e.contains("base_url"), "{e}");
    }

    #[test]
    fn a_merchant_overrides_the_paykka_section_for_itself() {
        let text = format!(
            "[paykka]\nbase_url = \"https://global/apis\"\nwebhook_signature = \"enforce\"\ntimeout_secs = 9\n{MERCHANT}[merchants.paykka]\nbase_url = \"https://own/apis\"\nwebhook_signature = \"warn\"\n{}",
            MERCHANT.replace("\"1\"", "\"2\"")
        );
        let c = Config::from_toml(&text, Path::new("t.toml")).unwrap();
        c.validate().unwrap();
        let first = c.merchant_paykka(0);
        assert_eq!(first.base_url.as_deref(), Some("https://own/apis"));
        assert_eq!(first.webhook_signature.as_deref(), Some("warn"));
        assert_eq!(first.timeout_secs, Some(9), "inherited");
        let second = c.merchant_paykka(1);
        assert_eq!(second.base_url.as_deref(), Some("https://global/apis"));
        assert_eq!(second.webhook_signature.as_deref(), Some("enforce"));
        // A merchant's own base URL is enough without a [paykka] section.
        let own_only = format!("{MERCHANT}[merchants.paykka]\nbase_url = \"https://own/apis\"\n");
        let c = Config::from_toml(&own_only, Path::new("t.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.paykka_base_url(), Some("https://own/apis"));
        // Bad modes name their key.
        let bad = format!(
            "{MERCHANT}[merchants.paykka]\nbase_url = \"https://own/apis\"\nwebhook_signature = \"strict\"\n"
        );
        let e = Config::from_toml(&bad, Path::new("t.toml"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("merchants[0].paykka.webhook_signature"), "{e}");
    }

    #[test]
    fn release_mode_is_a_setting_per_merchant_with_the_sandbox_default() {
        // Nothing set: capture_flag, the sandbox's default.
        let c = Config::from_toml("", Path::new("t.toml")).unwrap();
        assert_eq!(c.release_mode(), ReleaseMode::CaptureFlag);
        let text = format!(
            "[paykka]\nbase_url = \"https://global/apis\"\nrelease_mode = \"on_expiry\"\n{MERCHANT}[merchants.paykka]\nrelease_mode = \"void_after_capture\"\n{}",
            MERCHANT.replace("\"1\"", "\"2\"")
        );
        let c = Config::from_toml(&text, Path::new("t.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.release_mode(), ReleaseMode::OnExpiry);
        assert_eq!(c.merchant_release_mode(0), ReleaseMode::VoidAfterCapture);
        assert_eq!(
            c.merchant_release_mode(1),
            ReleaseMode::OnExpiry,
            "inherited"
        );
        // The environment sets the shared one.
        let mut c = Config::default();
        c.apply_env(&env_of(&[(
            "PAYORCH_PAYKKA_RELEASE_MODE",
            "void_after_capture",
        )]))
        .unwrap();
        assert_eq!(c.release_mode(), ReleaseMode::VoidAfterCapture);
        // An unknown mode names its key and the valid ones.
        for (text, key) in [
            (
                "[paykka]\nrelease_mode = \"final\"\n".to_owned(),
                "paykka.release_mode",
            ),
            (
                format!(
                    "{MERCHANT}[merchants.paykka]\nbase_url = \"https://own/apis\"\nrelease_mode = \"flag\"\n"
                ),
                "merchants[0].paykka.release_mode",
            ),
        ] {
            let e = Config::from_toml(&text, Path::new("t.toml"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("void_after_capture"), "{e}");
        }
    }

    #[test]
    fn paykka_env_override_creates_the_section() {
        let mut c = Config::default();
        c.apply_env(&env_of(&[("PAYORCH_PAYKKA_BASE_URL", "https://x/apis")]))
            .unwrap();
        assert_eq!(c.paykka_base_url(), Some("https://x/apis"));
        assert!(c.validate().is_err(), "base_url without merchants");
    }

    #[test]
    fn reconciler_settings_parse_override_and_validate() {
        // Defaults are the engine's.
        let d = Config::default().reconciler();
        let e = ReconcilerConfig::default();
        assert_eq!(
            (d.threshold, d.grace, d.backoff_base, d.backoff_max, d.page),
            (e.threshold, e.grace, e.backoff_base, e.backoff_max, e.page)
        );
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "reconcile_threshold_secs = 30\nreconcile_grace_secs = 7200\nreconcile_backoff_base_secs = 10\nreconcile_backoff_max_secs = 600\n",
        );
        let none = FlagOverrides::default();
        let c = Config::load(Some(&p), &env_of(&[]), &none).unwrap();
        let r = c.reconciler();
        assert_eq!(r.threshold, Duration::from_secs(30));
        assert_eq!(r.grace, Duration::from_secs(7200));
        assert_eq!(r.backoff_base, Duration::from_secs(10));
        assert_eq!(r.backoff_max, Duration::from_secs(600));
        // The environment wins over the file.
        let env = env_of(&[
            ("PAYORCH_RECONCILE_THRESHOLD_SECS", "0"),
            ("PAYORCH_RECONCILE_GRACE_SECS", "60"),
            ("PAYORCH_RECONCILE_BACKOFF_BASE_SECS", "2"),
            ("PAYORCH_RECONCILE_BACKOFF_MAX_SECS", "4"),
        ]);
        let r = Config::load(Some(&p), &env, &none).unwrap().reconciler();
        assert_eq!(r.threshold, Duration::ZERO);
        assert_eq!(r.grace, Duration::from_secs(60));
        assert_eq!(r.backoff_base, Duration::from_secs(2));
        assert_eq!(r.backoff_max, Duration::from_secs(4));
        // Invalid values name the key.
        let e = Config::load(
            Some(&p),
            &env_of(&[("PAYORCH_RECONCILE_GRACE_SECS", "1d")]),
            &none,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("PAYORCH_RECONCILE_GRACE_SECS"), "{e}");
        let e = Config::load(
            Some(&write(&dir, "reconcile_threshold_secs = -1\n")),
            &env_of(&[]),
            &none,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("reconcile_threshold_secs"), "{e}");
        let e = Config::load(
            Some(&write(&dir, "reconcile_backoff_base_secs = \"5s\"\n")),
            &env_of(&[]),
            &none,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("reconcile_backoff_base_secs"), "{e}");
        let e = Config::load(
            Some(&write(
                &dir,
                "reconcile_backoff_base_secs = 60\nreconcile_backoff_max_secs = 10\n",
            )),
            &env_of(&[]),
            &none,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("reconcile_backoff_max_secs"), "{e}");
        let e = Config::load(
            Some(&p),
            &env_of(&[("PAYORCH_RECONCILE_BACKOFF_BASE_SECS", "0")]),
            &none,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("reconcile_backoff_base_secs"), "{e}");
    }
}
