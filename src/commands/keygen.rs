//! `payorch keygen --out DIR`: a merchant RSA-2048 key pair.
//!
//! Writes `merchant_private.pem` (PKCS#8 PEM, mode 0600),
//! `merchant_public.pem` (SPKI PEM) and `merchant_public.b64` (SPKI DER as one
//! bare base64 line, the form the PayKKa portal takes). Never overwrites:
//! if any of the three exists, nothing is written.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use payorch_paykka::keys::generate_merchant_key_pair;

use crate::output::Output;

/// File names written by keygen.
pub const PRIVATE_FILE: &str = "merchant_private.pem";
pub const PUBLIC_PEM_FILE: &str = "merchant_public.pem";
pub const PUBLIC_B64_FILE: &str = "merchant_public.b64";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the key files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(args: &Args, out: &Output) -> anyhow::Result<ExitCode> {
    let private_path = args.out.join(PRIVATE_FILE);
    let public_pem_path = args.out.join(PUBLIC_PEM_FILE);
    let public_b64_path = args.out.join(PUBLIC_B64_FILE);
    // Check all three before writing any, so a refused run leaves no partial pair.
    for path in [&private_path, &public_pem_path, &public_b64_path] {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; refusing to overwrite it",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create directory {}", args.out.display()))?;

    let pair = generate_merchant_key_pair().context("key generation failed")?;
    write_new(&private_path, pair.private_pkcs8_pem().as_bytes(), 0o600)?;
    write_new(
        &public_pem_path,
        pair.public.to_spki_pem().as_bytes(),
        0o644,
    )?;
    let mut b64 = pair.public.to_spki_base64();
    b64.push('\n');
    write_new(&public_b64_path, b64.as_bytes(), 0o644)?;

    out.emit(
        &serde_json::json!({
            "algorithm": "RSA",
            "bits": pair.public.bits(),
            "private_key_pem": private_path,
            "public_key_pem": public_pem_path,
            "public_key_base64": public_b64_path,
        }),
        || {
            format!(
                "wrote RSA-{} key pair:\n  {}  (private key, PKCS#8 PEM, mode 0600; keep it secret)\n  {}  (public key, SPKI PEM)\n  {}  (public key, bare base64 line for the PayKKa portal)",
                pair.public.bits(),
                private_path.display(),
                public_pem_path.display(),
                public_b64_path.display()
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` (failing if it exists) with `mode` and writes `contents`.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
