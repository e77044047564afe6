//! `payorch sandbox --port P [--merchant-id M --merchant-public-key FILE ...]
//! [fault and behaviour flags] [--config FILE]`: runs the PayKKa v1.2
//! simulator (`payorch-sandbox`) standalone until interrupted. Prints the
//! base URL to configure a client with and the platform public key to
//! verify responses and notifications with.
//!
//! `--merchant-id` and `--merchant-public-key` pair up in order. Every fault
//! the sandbox library has is a flag here and a key of the `[sandbox]`
//! section of `--config FILE` (same names, `-` → `_`); a flag wins over the
//! file. Probabilities are in `[0, 1]`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use payorch_sandbox::{PlatformKey, RefundMode, ReleaseMode, SandboxConfig, SandboxMerchant};
use serde::Deserialize;

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8089)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// A merchant id allowed to call (repeatable; pairs with --merchant-public-key).
    #[arg(long = "merchant-id", value_name = "ID")]
    merchant_ids: Vec<String>,
    /// That merchant's public key file (PEM SPKI/PKCS#1 or bare base64 SPKI).
    #[arg(long = "merchant-public-key", value_name = "FILE")]
    merchant_keys: Vec<PathBuf>,
    /// Platform private key (PKCS#8/PKCS#1 PEM) to sign with; a fresh
    /// RSA-2048 key is generated when absent.
    #[arg(long, value_name = "FILE")]
    platform_key: Option<PathBuf>,
    /// Notify URL used when a request carries none.
    #[arg(long, value_name = "URL")]
    notify_url: Option<String>,
    /// TOML file with a `[sandbox]` section holding any of the settings
    /// below (keys with `_`, e.g. `notify_drop = 0.1`); flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Box<Settings>,
}

/// Faults and behaviour: each a flag and a `[sandbox]` key.
#[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Seed of every fault dice roll (same seed + same requests = same faults).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Slow answers: extra latency added to every API answer (ms).
    #[arg(long, value_name = "MS")]
    extra_latency_ms: Option<u64>,
    /// Slow answers: delay of the magic amounts ending in 991, which commit
    /// and answer this much later (ms; default 5000).
    #[arg(long, value_name = "MS")]
    slow_response_ms: Option<u64>,
    /// Timeouts: probability that an initiate/capture/refund commits,
    /// answers `--late-answer-ms` later (after a client's timeout) and stays
    /// invisible to queries and notifications until then (as amount ...994).
    #[arg(long, value_name = "P")]
    late_answer: Option<f64>,
    /// How late such an answer comes (ms; default 3000).
    #[arg(long, value_name = "MS")]
    late_answer_ms: Option<u64>,
    /// Probability of HTTP 500 / 999999 to a mutating call BEFORE it commits
    /// (nothing booked).
    #[arg(long, value_name = "P")]
    error_before_commit: Option<f64>,
    /// Probability of HTTP 500 / 999999 to a mutating call AFTER it commits
    /// (as amount ...992).
    #[arg(long, value_name = "P")]
    error_after_commit: Option<f64>,
    /// Probability that an approving card is declined (FAILURE, 2099).
    /// Declines by card and amount: see the test cards in the sandbox README.
    #[arg(long, value_name = "P")]
    decline: Option<f64>,
    /// Probability that a notification is dropped (never sent).
    #[arg(long, value_name = "P")]
    notify_drop: Option<f64>,
    /// Probability that a notification is sent twice (same signed body).
    #[arg(long, value_name = "P")]
    notify_duplicate: Option<f64>,
    /// Probability that a notification is delayed by `--notify-delay-ms`.
    #[arg(long, value_name = "P")]
    notify_delay: Option<f64>,
    /// Extra delay of a delayed notification (ms; default 500).
    #[arg(long, value_name = "MS")]
    notify_delay_ms: Option<u64>,
    /// Probability that a notification is held back and sent after the
    /// next one (reordered).
    #[arg(long, value_name = "P")]
    notify_reorder: Option<f64>,
    /// How long a reordered notification waits for a next one (ms; default 500).
    #[arg(long, value_name = "MS")]
    reorder_hold_ms: Option<u64>,
    /// Every notification waits this long after the status change (ms;
    /// default 0: the same millisecond as the API answer).
    #[arg(long, value_name = "MS")]
    notify_after_ms: Option<u64>,
    /// Delivery attempts per notification until acknowledged (default 6).
    #[arg(long, value_name = "N")]
    notify_max_attempts: Option<u32>,
    /// Notifications delivered in parallel (default 16); one payment's
    /// notifications always keep their order. 1: one queue for all.
    #[arg(long, value_name = "N")]
    notify_lanes: Option<usize>,
    /// How an uncaptured remainder is released: capture_flag (default),
    /// void_after_capture or on_expiry.
    #[arg(long, value_name = "MODE")]
    release_mode: Option<String>,
    /// Refunds settle after this many ms (default 200); 0 answers them
    /// SUCCESS/FAILURE at once.
    #[arg(long, value_name = "MS")]
    refund_settle_ms: Option<u64>,
    /// Asynchronous test cards (and the interim AUTHORIZED card) settle
    /// after this many ms (default 200).
    #[arg(long, value_name = "MS")]
    async_settle_ms: Option<u64>,
}

impl Settings {
    /// `self` with every unset value taken from `file`.
    fn or(self, file: Settings) -> Settings {
        Settings {
            seed: self.seed.or(file.seed),
            extra_latency_ms: self.extra_latency_ms.or(file.extra_latency_ms),
            slow_response_ms: self.slow_response_ms.or(file.slow_response_ms),
            late_answer: self.late_answer.or(file.late_answer),
            late_answer_ms: self.late_answer_ms.or(file.late_answer_ms),
            error_before_commit: self.error_before_commit.or(file.error_before_commit),
            error_after_commit: self.error_after_commit.or(file.error_after_commit),
            decline: self.decline.or(file.decline),
            notify_drop: self.notify_drop.or(file.notify_drop),
            notify_duplicate: self.notify_duplicate.or(file.notify_duplicate),
            notify_delay: self.notify_delay.or(file.notify_delay),
            notify_delay_ms: self.notify_delay_ms.or(file.notify_delay_ms),
            notify_reorder: self.notify_reorder.or(file.notify_reorder),
            reorder_hold_ms: self.reorder_hold_ms.or(file.reorder_hold_ms),
            notify_after_ms: self.notify_after_ms.or(file.notify_after_ms),
            notify_max_attempts: self.notify_max_attempts.or(file.notify_max_attempts),
            notify_lanes: self.notify_lanes.or(file.notify_lanes),
            release_mode: self.release_mode.or(file.release_mode),
            refund_settle_ms: self.refund_settle_ms.or(file.refund_settle_ms),
            async_settle_ms: self.async_settle_ms.or(file.async_settle_ms),
        }
    }

    /// Writes the settings into `config`; a probability outside `[0, 1]` or
    /// an unknown release mode is an error naming the setting.
    fn apply(&self, config: &mut SandboxConfig) -> anyhow::Result<()> {
        let ms = Duration::from_millis;
        let f = &mut config.faults;
        let prob = |name: &str, v: Option<f64>, slot: &mut f64| -> anyhow::Result<()> {
            if let Some(p) = v {
                if !(0.0..=1.0).contains(&p) {
                    bail!("{name} = {p}: a probability must be between 0 and 1");
                }
                *slot = p;
            }
            Ok(())
        };
        prob(
            "late_answer",
            self.late_answer,
            &mut f.late_answer_probability,
        )?;
        prob(
            "error_before_commit",
            self.error_before_commit,
            &mut f.error_before_commit,
        )?;
        prob(
            "error_after_commit",
            self.error_after_commit,
            &mut f.error_after_commit,
        )?;
        prob("decline", self.decline, &mut f.decline_probability)?;
        prob("notify_drop", self.notify_drop, &mut f.notify_drop)?;
        prob(
            "notify_duplicate",
            self.notify_duplicate,
            &mut f.notify_duplicate,
        )?;
        prob(
            "notify_delay",
            self.notify_delay,
            &mut f.notify_delay_probability,
        )?;
        prob("notify_reorder", self.notify_reorder, &mut f.notify_reorder)?;
        if let Some(v) = self.seed {
            f.seed = v;
        }
        if let Some(v) = self.extra_latency_ms {
            f.extra_latency = ms(v);
        }
        if let Some(v) = self.slow_response_ms {
            f.slow_response = ms(v);
        }
        if let Some(v) = self.late_answer_ms {
            f.late_answer = ms(v);
        }
        if let Some(v) = self.notify_delay_ms {
            f.notify_delay = ms(v);
        }
        if let Some(v) = self.reorder_hold_ms {
            f.reorder_hold = ms(v);
        }
        if let Some(v) = self.notify_after_ms {
            config.notify.delay = ms(v);
        }
        if let Some(v) = self.notify_max_attempts {
            if v == 0 {
                bail!("notify_max_attempts must be at least 1");
            }
            config.notify.max_attempts = v;
        }
        if let Some(v) = self.notify_lanes {
            if v == 0 {
                bail!("notify_lanes must be at least 1");
            }
            config.notify.lanes = v;
        }
        if let Some(mode) = &self.release_mode {
            config.behaviour.release_mode = mode
                .parse::<ReleaseMode>()
                .map_err(|e| anyhow::anyhow!("release_mode: {e}"))?;
        }
        if let Some(v) = self.refund_settle_ms {
            config.behaviour.refunds = if v == 0 {
                RefundMode::Immediate
            } else {
                RefundMode::Async {
                    settle_after: Some(ms(v)),
                }
            };
        }
        if let Some(v) = self.async_settle_ms {
            config.behaviour.async_settle_after = Some(ms(v));
        }
        Ok(())
    }
}

/// The `[sandbox]` section of a `--config` file.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    sandbox: Settings,
}

fn read_config_file(path: &PathBuf) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let file: ConfigFile =
        toml::from_str(&text).with_context(|| format!("{}: [sandbox] section", path.display()))?;
    Ok(file.sandbox)
}

pub fn run(args: &Args, out: &Output) -> anyhow::Result<ExitCode> {
    if args.merchant_ids.len() != args.merchant_keys.len() {
        bail!(
            "--merchant-id given {} times but --merchant-public-key {} times; they pair up in order",
            args.merchant_ids.len(),
            args.merchant_keys.len()
        );
    }
    let mut merchants = Vec::new();
    for (id, path) in args.merchant_ids.iter().zip(&args.merchant_keys) {
        let key = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read public key {}", path.display()))?;
        merchants.push(SandboxMerchant::new(id.clone(), key));
    }
    let platform_key = match &args.platform_key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read platform key {}", path.display()))?;
            Some(PlatformKey::from_pem(&pem).context("cannot load the platform key")?)
        }
        None => None,
    };
    let mut config = SandboxConfig {
        merchants,
        platform_key,
        ..SandboxConfig::default()
    };
    config.notify.default_url = args.notify_url.clone();
    let settings = match &args.config {
        Some(path) => (*args.settings).clone().or(read_config_file(path)?),
        None => (*args.settings).clone(),
    };
    settings.apply(&mut config)?;
    let addr = SocketAddr::new(args.host, args.port);
    let config_summary = config.faults.clone();
    let release_mode = config.behaviour.release_mode.as_str();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let sandbox = payorch_sandbox::spawn(config, addr)
            .await
            .context("cannot start the sandbox")?;
        let base_url = sandbox.base_url();
        let pem = sandbox.platform_public_key_pem();
        out.emit(
            &serde_json::json!({
                "base_url": base_url,
                "platform_public_key_pem": pem,
                "merchants": args.merchant_ids,
                "faults": {
                    "seed": config_summary.seed,
                    "late_answer": config_summary.late_answer_probability,
                    "error_before_commit": config_summary.error_before_commit,
                    "error_after_commit": config_summary.error_after_commit,
                    "decline": config_summary.decline_probability,
                    "notify_drop": config_summary.notify_drop,
                    "notify_duplicate": config_summary.notify_duplicate,
                    "notify_delay": config_summary.notify_delay_probability,
                    "notify_reorder": config_summary.notify_reorder,
                },
                "release_mode": release_mode,
            }),
            || {
                let warn = if args.merchant_ids.is_empty() {
                    "warning: no --merchant-id given; every request will get 206005\n"
                } else {
                    ""
                };
                format!(
                    "PayKKa v1.2 sandbox listening\nbase URL: {base_url}\n{warn}platform public key:\n{pem}\nCtrl-C to stop."
                )
            },
        );
        // Serve until the process is interrupted (SIGINT ends it).
        std::future::pending::<()>().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_reach_the_sandbox_config() {
        let file: ConfigFile = toml::from_str(
            "[sandbox]\nnotify_drop = 0.25\nseed = 7\nrelease_mode = \"on_expiry\"\nrefund_settle_ms = 0\nlate_answer_ms = 900\n",
        )
        .expect("toml");
        let flags = Settings {
            seed: Some(9),
            error_before_commit: Some(0.5),
            ..Settings::default()
        };
        let mut config = SandboxConfig::default();
        flags.or(file.sandbox).apply(&mut config).expect("apply");
        assert_eq!(config.faults.seed, 9);
        assert_eq!(config.faults.notify_drop, 0.25);
        assert_eq!(config.faults.error_before_commit, 0.5);
        assert_eq!(config.faults.late_answer, Duration::from_millis(900));
        assert_eq!(config.behaviour.release_mode, ReleaseMode::OnExpiry);
        assert_eq!(config.behaviour.refunds, RefundMode::Immediate);
    }

    #[test]
    fn bad_values_are_errors_naming_the_setting() {
        let mut config = SandboxConfig::default();
        let e = Settings {
            notify_duplicate: Some(1.5),
            ..Settings::default()
        }
        .apply(&mut config)
        .unwrap_err();
        assert!(e.to_string().contains("notify_duplicate"), "{e}");
        let e = Settings {
            release_mode: Some("sometimes".into()),
            ..Settings::default()
        }
        .apply(&mut config)
        .unwrap_err();
        assert!(e.to_string().contains("release_mode"), "{e}");
        let e = toml::from_str::<ConfigFile>("[sandbox]\nnotify_dropp = 0.1\n").unwrap_err();
        assert!(e.to_string().contains("notify_dropp"), "{e}");
    }
}
