//! `payorch demo`.
use crate::Globals;
use crate::output::Output;
use std::process::ExitCode;
#[derive(Debug, clap::Args)]
pub struct Args {}
pub fn run(_args: &Args, _globals: &Globals, _out: &Output) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
