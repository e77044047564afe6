//! `payorch verify --public-key P --signature S --merchant M --timestamp T BODY_FILE`:
//! prints `valid` (exit 0) or exactly why not (exit 1). Bad inputs such as
//! an unreadable key exit 2.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use payorch_paykka::keys::{Backend, PaykkaPublicKey};
use payorch_paykka::signing::verify;

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Public key file (PEM SPKI/PKCS#1 or bare base64 SPKI).
    #[arg(long, value_name = "FILE")]
    public_key: PathBuf,
    /// The `signature` header value (percent-encoded or raw base64).
    #[arg(long, value_name = "SIG", allow_hyphen_values = true)]
    signature: String,
    /// Merchant id that was signed.
    #[arg(long, value_name = "ID")]
    merchant: String,
    /// Timestamp (ms) that was signed.
    #[arg(long, value_name = "MS")]
    timestamp: u64,
    /// Verification backend: aws-lc or rsa.
    #[arg(long, value_name = "NAME", default_value_t = Backend::default())]
    backend: Backend,
    /// The body, used byte for byte.
    body_file: PathBuf,
}

pub fn run(args: &Args, out: &Output) -> anyhow::Result<ExitCode> {
    let key = PaykkaPublicKey::from_file_with(&args.public_key, args.backend)
        .with_context(|| format!("cannot load public key {}", args.public_key.display()))?;
    let body = std::fs::read(&args.body_file)
        .with_context(|| format!("cannot read body file {}", args.body_file.display()))?;
    match verify(&key, &args.merchant, args.timestamp, &body, &args.signature) {
        Ok(()) => {
            out.emit(&serde_json::json!({ "valid": true }), || "valid".to_owned());
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            out.emit(
                &serde_json::json!({
                    "valid": false,
                    "reason": err.to_string(),
                    "kind": format!("{err:?}"),
                }),
                || format!("invalid: {err}"),
            );
            Ok(ExitCode::from(1))
        }
    }
}
