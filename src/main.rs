//! `payorch`: the command-line entry point.
//!
//! One module per subcommand under [`commands`]; each exposes an `Args`
//! struct (clap derive) and `run(&Args, &Output) -> anyhow::Result<ExitCode>`.
//! To add a subcommand: write `commands/<name>.rs`, add a variant to
//! [`Command`] and one arm to [`main`]'s dispatch.

mod app;
mod commands;
mod config;
#[cfg(test)]
mod config_reference;
mod gauges;
mod logging;
mod output;
mod store;
mod webhooks_out;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Output;

/// Event-sourced payment orchestration for the PayKKa v1.2 API.
#[derive(Debug, Parser)]
#[command(name = "payorch", version, about, propagate_version = true)]
struct Cli {
    /// Machine-readable JSON output instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// Config file (default: ./payorch.toml if present, or $PAYORCH_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Event store URL (`sqlite://FILE` or `postgres://...`); overrides
    /// the config file and PAYORCH_STORE_URL.
    #[arg(long, global = true, value_name = "URL")]
    store_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a merchant RSA-2048 key pair in the formats PayKKa asks for.
    Keygen(commands::keygen::Args),
    /// Sign a request body file the way a v1.2 request is signed.
    Sign(commands::sign::Args),
    /// Verify a v1.2 signature over a body file.
    Verify(commands::verify::Args),
    /// Run the PayKKa v1.2 sandbox (simulator) standalone.
    Sandbox(commands::sandbox::Args),
    /// Apply the embedded migrations of the configured store.
    Migrate(commands::migrate::Args),
    /// Fold a stream to a version or time, rebuild a projection, or verify every history.
    Replay(commands::replay::Args),
    /// Write events as JSON lines (the whole store or selected streams).
    Export(commands::export::ExportArgs),
    /// Append events from a JSON-lines export (idempotent by event id).
    Import(commands::export::ImportArgs),
    /// Run every payment flow against an in-process sandbox and print the event timeline.
    ///
    /// The demo runs only against the in-process PayKKa sandbox: it plays the
    /// shopper (3-D Secure, hosted checkout) through sandbox-only hooks and
    /// uses sandbox test cards. A configuration with a PayKKa base URL
    /// ([paykka] base_url or PAYORCH_PAYKKA_BASE_URL) is refused with an
    /// error; use `payorch serve` for a real PayKKa.
    Demo(commands::demo::Args),
    /// Run the HTTP service (merchant API, webhooks, relay, reconciler).
    Serve(commands::serve::Args),
    /// Drive `payorch serve` with a mix of payment flows and report
    /// throughput, latency percentiles, errors, Postgres transactions per
    /// order, relay lag and CPU (`--spawn` starts the service itself).
    Load(Box<commands::load::Args>),
    /// Merchant webhook deliveries: list an endpoint's delivery log, queue a redelivery.
    Webhooks(commands::webhooks::Args),
}

/// Global settings shared by the subcommands that need a configuration.
#[derive(Debug)]
pub struct Globals {
    config_file: Option<PathBuf>,
    store_url: Option<String>,
}

impl Globals {
    /// The configuration: file < PAYORCH_* env < global flags.
    pub fn config(&self) -> anyhow::Result<config::Config> {
        self.config_with(config::FlagOverrides::default())
    }

    /// As [`Globals::config`] with more flag overrides of a subcommand.
    pub fn config_with(&self, mut flags: config::FlagOverrides) -> anyhow::Result<config::Config> {
        if flags.store_url.is_none() {
            flags.store_url = self.store_url.clone();
        }
        Ok(config::Config::load(
            self.config_file.as_deref(),
            &|k| std::env::var(k).ok(),
            &flags,
        )?)
    }
}

/// Runs async work of a subcommand on a multi-threaded runtime.
pub fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let globals = Globals {
        config_file: cli.config.clone(),
        store_url: cli.store_url.clone(),
    };
    let result = match &cli.command {
        Command::Keygen(args) => commands::keygen::run(args, &out),
        Command::Sign(args) => commands::sign::run(args, &out),
        Command::Verify(args) => commands::verify::run(args, &out),
        Command::Sandbox(args) => commands::sandbox::run(args, &out),
        Command::Migrate(args) => commands::migrate::run(args, &globals, &out),
        Command::Replay(args) => commands::replay::run(args, &globals, &out),
        Command::Export(args) => commands::export::run_export(args, &globals, &out),
        Command::Import(args) => commands::export::run_import(args, &globals, &out),
        Command::Demo(args) => commands::demo::run(args, &globals, &out),
        Command::Serve(args) => commands::serve::run(args, &globals, &out),
        Command::Load(args) => commands::load::run(args, &globals, &out),
        Command::Webhooks(args) => commands::webhooks::run(args, &globals, &out),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            out.error(&err);
            ExitCode::from(2)
        }
    }
}
