//! `payorch migrate`: applies the embedded migrations of the configured
//! store (`sqlite:` or `postgres://`). Idempotent.

use std::process::ExitCode;

use crate::Globals;
use crate::output::Output;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, globals: &Globals, out: &Output) -> anyhow::Result<ExitCode> {
    let config = globals.config()?;
    crate::block_on(async {
        let store = Store::open_migrated(&config.store_url).await?;
        store.close().await;
        out.emit(
            &serde_json::json!({"migrated": true, "store": store.kind()}),
            || {
                format!(
                    "migrations applied to {} store {}",
                    store.kind(),
                    config.store_url
                )
            },
        );
        Ok(ExitCode::SUCCESS)
    })
}
