//! Signing bench: PayKKa v1.2 request signing and signature verification,
//! for both backends (aws-lc-rs and the `rsa` crate), against OpenSSL.
//!
//! Run: `cargo bench -p payorch-benches --bench signing`
//!
//! Measured by criterion, per backend:
//! * `sign_request`: serialize a realistic ~1.8 KB initiate request
//!   (`serde_json::Value`) + build the string to sign + RSA-2048 PKCS#1 v1.5
//!   SHA-256 sign + base64 + percent-encode (`RequestSigner::sign_json`);
//! * `sign_raw`: the RSA signature alone over the prepared string to sign;
//! * `verify`: percent-decode + base64-decode + rebuild the string to sign +
//!   RSA verify (`payorch_paykka::signing::verify`).
//!
//! Reference: before and after criterion, the same process runs
//! `openssl speed -elapsed -seconds 3 rsa2048`, parses sign/s and verify/s, keeps the
//! faster of the two runs and prints our ops/s (from criterion's mean
//! estimates) divided by OpenSSL's, with the load average for context. OpenSSL's
//! numbers are bare RSA operations on a pre-hashed digest, so `sign_request`
//! and `verify` also pay for hashing ~1.6 KB and encoding; `sign_raw` is the
//! like-for-like sign figure. If openssl is missing the reference is skipped.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use payorch_paykka::keys::{Backend, MerchantPrivateKey, generate_merchant_key_pair};
use payorch_paykka::signing::{RequestSigner, SigningConfig, string_to_sign, verify};
use serde_json::json;

const MERCHANT_ID: &str = "18356675194960";
const TIMESTAMP: u64 = 1_704_067_200_000;
const GROUP: &str = "signing";

/// A realistic token-based initiate request (`POST /payments`), 1,841 bytes compact.
fn initiate_request() -> serde_json::Value {
    json!({
        "merchant_id": MERCHANT_ID,
        "payment_type": "PURCHASE",
        "authorisation_type": "FINAL_AUTH",
        "capture_method": "MANUAL",
        "trans_id": "ORD-2024-01-01-000000123456-A1",
        "timestamp": TIMESTAMP,
        "currency": "EUR",
        "amount": 12_999,
        "notify_url": "https://merchant.example.com/paykka/notify/payments",
        "return_url": "https://shop.example.com/checkout/return?order=ORD-2024-01-01-000000123456",
        "expire_time": "2024-01-01T00:05:00Z",
        "payment": {
            "payment_method": "BANKCARD",
            "store_payment_method": false,
            "token_usage": "CARD_ON_FILE",
            "shopper_reference": "cust-0001-7f3a9c",
            "token": "TK10000000000000001"
        },
        "authentication": { "challenge_indicator": "NO_PREFERENCE", "three_ds_mode": "PREFER_3DS" },
        "browser": {
            "accept_header": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
            "language": "en-GB",
            "color_depth": 24,
            "screen_height": 1080,
            "screen_width": 1920,
            "time_zone_offset": -60,
            "java_enabled": false,
            "ip": "203.0.113.17"
        },
        "goods": [
            { "name": "Merino wool jumper", "sku": "MWJ-BLU-M", "quantity": 1, "price": 8_999, "category": "apparel" },
            { "name": "Cotton socks (3 pack)", "sku": "CS3-GRY", "quantity": 2, "price": 1_500, "category": "apparel" },
            { "name": "Express shipping", "sku": "SHIP-EXP", "quantity": 1, "price": 1_000, "category": "shipping" }
        ],
        "bill": {
            "first_name": "Alex", "last_name": "Example", "email": "alex@example.com",
            "phone": "+33123456789", "country": "FR", "state": "IDF", "city": "Paris",
            "address_line1": "10 Rue de Rivoli", "postal_code": "75001"
        },
        "shipping": {
            "first_name": "Alex", "last_name": "Example", "phone": "+33123456789",
            "country": "FR", "state": "IDF", "city": "Paris",
            "address_line1": "10 Rue de Rivoli", "postal_code": "75001", "method": "EXPRESS"
        },
        "customer": {
            "customer_id": "cust-0001-7f3a9c", "email": "alex@example.com",
            "registration_time": "2021-06-01T10:00:00Z", "order_count": 7
        }
    })
}

fn bench_signing(c: &mut Criterion) -> Vec<(Backend, MerchantPrivateKey)> {
    let pair = generate_merchant_key_pair().expect("generate RSA-2048 key");
    let keys: Vec<(Backend, MerchantPrivateKey)> = [Backend::AwsLc, Backend::RustCrypto]
        .into_iter()
        .map(|b| {
            let key = MerchantPrivateKey::parse_with(pair.private_pkcs8_pem(), b).expect("key");
            (b, key)
        })
        .collect();

    let body = initiate_request();
    let body_len = serde_json::to_vec(&body).expect("serialize").len();
    println!("signing bench: initiate request body is {body_len} bytes (compact JSON)");

    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for (backend, key) in &keys {
        let signer = RequestSigner::new(key.clone(), SigningConfig::default());
        let signed = signer
            .sign_json(MERCHANT_ID, TIMESTAMP, &body)
            .expect("sign");
        let message = string_to_sign(MERCHANT_ID, TIMESTAMP, signed.body());
        let public = key.public_key().clone();
        verify(
            &public,
            MERCHANT_ID,
            TIMESTAMP,
            signed.body(),
            signed.signature_header(),
        )
        .expect("own signature verifies");

        group.bench_function(BenchmarkId::new("sign_request", backend.name()), |b| {
            b.iter(|| {
                signer
                    .sign_json(
                        black_box(MERCHANT_ID),
                        black_box(TIMESTAMP),
                        black_box(&body),
                    )
                    .expect("sign")
            })
        });
        group.bench_function(BenchmarkId::new("sign_raw", backend.name()), |b| {
            b.iter(|| key.sign_raw(black_box(&message)).expect("sign"))
        });
        group.bench_function(BenchmarkId::new("verify", backend.name()), |b| {
            b.iter(|| {
                verify(
                    black_box(&public),
                    black_box(MERCHANT_ID),
                    black_box(TIMESTAMP),
                    black_box(signed.body()),
                    black_box(signed.signature_header()),
                )
                .expect("verify")
            })
        });
    }
    group.finish();
    keys
}

/// Where criterion writes its estimates; set explicitly so we can read them back.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        PathBuf::from(home)
    } else if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(target).join("criterion")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
    }
}

/// Mean ops/s of one bench from this run's criterion estimates (None if the
/// bench was filtered out or its estimate predates this process).
fn criterion_ops_per_sec(
    dir: &Path,
    name: &str,
    backend: Backend,
    started: SystemTime,
) -> Option<f64> {
    let path = dir
        .join(GROUP)
        .join(name)
        .join(backend.name())
        .join("new/estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < started {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mean_ns = value["mean"]["point_estimate"].as_f64()?;
    (mean_ns > 0.0).then(|| 1e9 / mean_ns)
}

struct OpensslSpeed {
    version: String,
    sign_per_sec: f64,
    verify_per_sec: f64,
}

/// Runs `openssl speed -elapsed -seconds 3 rsa2048` and parses the `rsa 2048 bits` line.
fn openssl_speed() -> Result<OpensslSpeed, String> {
    let version = Command::new("openssl")
        .arg("version")
        .output()
        .map_err(|e| format!("openssl not runnable ({e})"))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let out = Command::new("openssl")
        .args(["speed", "-elapsed", "-seconds", "3", "rsa2048"])
        .output()
        .map_err(|e| format!("openssl speed failed to start ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl speed failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // e.g. "rsa 2048 bits 0.000735s 0.000022s   1360.5  45454.5"
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("rsa") && l.contains("2048 bits"))
        .ok_or_else(|| format!("no 'rsa 2048 bits' line in openssl speed output:\n{stdout}"))?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|t| t.parse::<f64>().ok())
        .collect();
    match numbers.as_slice() {
        [.., sign, verify] => Ok(OpensslSpeed {
            version,
            sign_per_sec: *sign,
            verify_per_sec: *verify,
        }),
        _ => Err(format!("cannot parse openssl speed line {line:?}")),
    }
}

/// The 1-minute load average, to record how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Keeps the faster of two reference runs, so background load makes our
/// ratio look worse, never better.
fn best_of(a: Option<OpensslSpeed>, b: Option<OpensslSpeed>) -> Option<OpensslSpeed> {
    match (a, b) {
        (Some(a), Some(b)) => Some(OpensslSpeed {
            version: a.version,
            sign_per_sec: a.sign_per_sec.max(b.sign_per_sec),
            verify_per_sec: a.verify_per_sec.max(b.verify_per_sec),
        }),
        (a, b) => a.or(b),
    }
}

fn run_reference(when: &str) -> Option<OpensslSpeed> {
    match openssl_speed() {
        Ok(r) => {
            println!(
                "reference ({when}, load {}): `openssl speed -elapsed -seconds 3 rsa2048` ({}): sign {:.1}/s, verify {:.1}/s",
                load_average(),
                r.version,
                r.sign_per_sec,
                r.verify_per_sec
            );
            Some(r)
        }
        Err(e) => {
            println!("reference skipped ({when}): {e}");
            None
        }
    }
}

fn report(started: SystemTime, before: Option<OpensslSpeed>) {
    let dir = criterion_dir();
    println!("\n=== signing: ours vs OpenSSL (single thread, RSA-2048, PKCS#1 v1.5 SHA-256) ===");
    let after = if before.is_some() {
        run_reference("after criterion")
    } else {
        None
    };
    let reference = best_of(before, after);
    if let Some(r) = &reference {
        println!(
            "reference used (best of runs): sign {:.1}/s, verify {:.1}/s",
            r.sign_per_sec, r.verify_per_sec
        );
    }
    println!(
        "{:<8} {:<13} {:>12} {:>12} {:>7}",
        "backend", "operation", "ours/s", "openssl/s", "ratio"
    );
    for backend in [Backend::AwsLc, Backend::RustCrypto] {
        for (name, is_sign) in [
            ("sign_request", true),
            ("sign_raw", true),
            ("verify", false),
        ] {
            let Some(ours) = criterion_ops_per_sec(&dir, name, backend, started) else {
                println!("{:<8} {:<13} {:>12}", backend.name(), name, "(not run)");
                continue;
            };
            match &reference {
                Some(r) => {
                    let theirs = if is_sign {
                        r.sign_per_sec
                    } else {
                        r.verify_per_sec
                    };
                    println!(
                        "{:<8} {:<13} {:>12.1} {:>12.1} {:>6.2}x",
                        backend.name(),
                        name,
                        ours,
                        theirs,
                        ours / theirs
                    );
                }
                None => println!("{:<8} {:<13} {:>12.1}", backend.name(), name, ours),
            }
        }
    }
}

fn main() {
    let started = SystemTime::now();
    println!("signing bench: load average at start {}", load_average());
    let before = run_reference("before criterion");
    let mut criterion = Criterion::default()
        .output_directory(&criterion_dir())
        .configure_from_args();
    let _keys = bench_signing(&mut criterion);
    criterion.final_summary();
    report(started, before);
}
