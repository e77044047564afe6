//! `payorch sign --key K --merchant M [--timestamp T] BODY_FILE`: signs the
//! body file's bytes exactly as they are (no re-serialization, no trimming)
//! and prints the string to sign and the v1.2 header values.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use payorch_paykka::keys::{Backend, MerchantPrivateKey};
use payorch_paykka::signing::{RequestSigner, SigningConfig};

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Merchant private key file (PEM PKCS#8/PKCS#1 or bare base64).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Merchant id (`merchant_id` in the body).
    #[arg(long, value_name = "ID")]
    merchant: String,
    /// Timestamp in ms since the epoch (`timestamp` in the body); default: now.
    #[arg(long, value_name = "MS")]
    timestamp: Option<u64>,
    /// Put the raw base64 in the `signature` header instead of the
    /// percent-encoded form.
    #[arg(long)]
    no_percent_encode: bool,
    /// Signing backend: aws-lc or rsa.
    #[arg(long, value_name = "NAME", default_value_t = Backend::default())]
    backend: Backend,
    /// The request body, used byte for byte.
    body_file: PathBuf,
}

pub fn run(args: &Args, out: &Output) -> anyhow::Result<ExitCode> {
    let key = MerchantPrivateKey::from_file_with(&args.key, args.backend)
        .with_context(|| format!("cannot load private key {}", args.key.display()))?;
    let body = std::fs::read(&args.body_file)
        .with_context(|| format!("cannot read body file {}", args.body_file.display()))?;
    let timestamp = match args.timestamp {
        Some(ts) => ts,
        None => super::now_millis()?,
    };
    let config = SigningConfig {
        percent_encode_signature: !args.no_percent_encode,
        ..SigningConfig::default()
    };
    let signed = RequestSigner::new(key, config).sign_raw_body(&args.merchant, timestamp, body)?;
    let string_to_sign = String::from_utf8_lossy(&signed.string_to_sign()).into_owned();
    let headers = signed.headers();

    let json = serde_json::json!({
        "merchant_id": signed.merchant_id(),
        "timestamp": signed.timestamp(),
        "string_to_sign": string_to_sign,
        "headers": {
            headers[0].0: headers[0].1,
            headers[1].0: headers[1].1,
            headers[2].0: headers[2].1,
        },
        "signature_base64": signed.signature_base64(),
    });
    out.emit(&json, || {
        let mut text = format!("string to sign:\n{string_to_sign}\n\nheaders:\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\n"));
        }
        text.push_str(&format!(
            "\nsignature (raw base64):\n{}\n",
            signed.signature_base64()
        ));
        text
    });
    Ok(ExitCode::SUCCESS)
}
