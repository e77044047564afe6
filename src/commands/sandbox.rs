//! `payorch sandbox --port P [--merchant-id M --merchant-public-key FILE ...]`:
//! runs the PayKKa v1.2 simulator (`payorch-sandbox`) standalone until
//! interrupted. Prints the base URL to configure a client with and the
//! platform public key to verify responses and notifications with.
//!
//! `--merchant-id` and `--merchant-public-key` pair up in order.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use payorch_sandbox::{PlatformKey, SandboxConfig, SandboxMerchant};

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
    let addr = SocketAddr::new(args.host, args.port);

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
