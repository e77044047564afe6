//! One module per `payorch` subcommand. Each has `Args` (clap derive) and
//! `run(&Args, &Output) -> anyhow::Result<ExitCode>`.

pub mod demo;
pub mod export;
pub mod keygen;
pub mod load;
pub mod migrate;
pub mod replay;
pub mod sandbox;
pub mod serve;
pub mod sign;
pub mod verify;
pub mod webhooks;

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (the v1.2 body `timestamp`).
pub fn now_millis() -> anyhow::Result<u64> {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    Ok(u64::try_from(ms)?)
}
