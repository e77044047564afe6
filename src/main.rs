//! `payorch`: the command-line entry point.
//!
//! One module per subcommand under [`commands`]; each exposes an `Args`
//! struct (clap derive) and `run(&Args, &Output) -> anyhow::Result<ExitCode>`.
//! To add a subcommand: write `commands/<name>.rs`, add a variant to
//! [`Command`] and one arm to [`main`]'s dispatch.

mod commands;
mod output;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let result = match &cli.command {
        Command::Keygen(args) => commands::keygen::run(args, &out),
        Command::Sign(args) => commands::sign::run(args, &out),
        Command::Verify(args) => commands::verify::run(args, &out),
        Command::Sandbox(args) => commands::sandbox::run(args, &out),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            out.error(&err);
            ExitCode::from(2)
        }
    }
}
