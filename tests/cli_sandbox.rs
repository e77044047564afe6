//! `payorch sandbox` starts the simulator, prints where it listens and its
//! platform key, and answers PayKKa-style envelopes over HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

/// Kills the child even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sandbox_subcommand_serves_and_prints_base_url_and_key() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args(["--json", "sandbox", "--port", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run payorch sandbox"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut json = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        json.push_str(&line);
        json.push('\n');
        if line == "}" {
            break;
        }
    }
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
    let base = v["base_url"].as_str().expect("base_url");
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/apis"),
        "{base}"
    );
    assert!(
        v["platform_public_key_pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );

    let hostport = base.trim_start_matches("http://").trim_end_matches("/apis");
    let mut stream = TcpStream::connect(hostport).expect("connect");
    let body = r#"{"merchant_id":"1","timestamp":1}"#;
    write!(
        stream,
        "POST /apis/payments HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nversion: v1.2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains(r#""ret_code":"206005""#), "{answer}");
}

#[test]
fn every_fault_is_a_documented_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_payorch"))
        .args(["sandbox", "--help"])
        .output()
        .expect("run payorch sandbox --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--seed",
        "--extra-latency-ms",
        "--slow-response-ms",
        "--late-answer",
        "--late-answer-ms",
        "--error-before-commit",
        "--error-after-commit",
        "--decline",
        "--notify-drop",
        "--notify-duplicate",
        "--notify-delay",
        "--notify-delay-ms",
        "--notify-reorder",
        "--reorder-hold-ms",
        "--notify-after-ms",
        "--notify-max-attempts",
        "--release-mode",
        "--refund-settle-ms",
        "--async-settle-ms",
        "--config",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn fault_flags_and_the_config_file_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sandbox.toml");
    std::fs::write(
        &file,
        "[sandbox]\nnotify_drop = 0.5\nrelease_mode = \"void_after_capture\"\n",
    )
    .unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args([
                "--json",
                "sandbox",
                "--port",
                "0",
                "--error-after-commit",
                "0.25",
            ])
            .arg("--config")
            .arg(&file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run payorch sandbox"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut json = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        json.push_str(&line);
        json.push('\n');
        if line == "}" {
            break;
        }
    }
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
    assert_eq!(v["faults"]["notify_drop"], 0.5);
    assert_eq!(v["faults"]["error_after_commit"], 0.25);
    assert_eq!(v["release_mode"], "void_after_capture");

    let bad = Command::new(env!("CARGO_BIN_EXE_payorch"))
        .args(["sandbox", "--port", "0", "--notify-drop", "2"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("notify_drop"));
}

/// Starts `payorch sandbox` for one merchant key; returns the child and
/// `host:port`.
fn sandbox_for(merchant: &str, public_pem: &str, dir: &std::path::Path) -> (Child, String) {
    let key = dir.join("merchant_public.pem");
    std::fs::write(&key, public_pem).unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args([
                "--json",
                "sandbox",
                "--port",
                "0",
                "--merchant-id",
                merchant,
            ])
            .arg("--merchant-public-key")
            .arg(&key)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run payorch sandbox"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut json = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        json.push_str(&line);
        json.push('\n');
        if line == "}" {
            break;
        }
    }
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
    let base = v["base_url"].as_str().expect("base_url");
    let hostport = base
        .trim_start_matches("http://")
        .trim_end_matches("/apis")
        .to_owned();
    (child, hostport)
}

/// One HTTP/1.1 POST; returns (status line, body).
fn post(hostport: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(hostport).expect("connect");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let status = String::from_utf8_lossy(&answer[..split])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    (status, answer[split + 4..].to_vec())
}

/// Issue 17.6: a request shaped like a real PHP v1.2 client's (integer ids,
/// explicit nulls, pretty-printed, body `version`, offset-less time) is
/// accepted by `payorch sandbox`, and its answer parses as the client's
/// response type.
#[test]
fn a_php_clients_request_is_accepted_by_payorch_sandbox() {
    use payorch_paykka::keys::generate_merchant_key_pair;
    use payorch_paykka::{RequestSigner, SigningConfig};
    use payorch_schemas::paykka::{Envelope, GatewayOrderStatus, PaymentResponse};

    let dir = tempfile::tempdir().unwrap();
    let keys = generate_merchant_key_pair().unwrap();
    let merchant = "10000000000001";
    let (_child, hostport) = sandbox_for(merchant, &keys.public.to_spki_pem(), dir.path());
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let body = serde_json::to_vec_pretty(&serde_json::json!({
        "version": "v1.2",
        "merchant_id": 10000000000001u64,
        "timestamp": ts,
        "payment_type": "PURCHASE",
        "capture_method": "MANUAL",
        "authorisation_type": null,
        "trans_id": 4242,
        "currency": "EUR",
        "amount": "1299",
        "notify_url": null,
        "return_url": "https://shop.example/return",
        "expire_time": "2099-12-06 12:02:35",
        "payment": {"payment_method": "BANKCARD", "card_no": "4111111111111111",
                    "exp_month": "07", "exp_year": "2031", "cvv": "123", "holder_name": null},
        "goods": [{"id": 37, "name": "Hat", "price": "1299", "quantity": 1, "description": null}],
        "customer": {"id": 12, "gender": null},
        "shipping": null
    }))
    .unwrap();
    let signer = RequestSigner::new(keys.private_key().unwrap(), SigningConfig::default());
    let signed = signer.sign_raw_body(merchant, ts, body.clone()).unwrap();
    let (status, answer) = post(
        &hostport,
        "/apis/payments",
        &[("signature", signed.signature_header()), ("type", "RSA256")],
        &body,
    );
    assert!(
        status.contains(" 200 "),
        "{status}: {}",
        String::from_utf8_lossy(&answer)
    );
    let env: Envelope<PaymentResponse> = serde_json::from_slice(&answer).expect("client parses");
    assert_eq!(env.ret_code, "000000");
    let data = env.data.expect("data");
    assert_eq!(data.status, Some(GatewayOrderStatus::Authorized));
    assert_eq!(data.trans_id.as_deref(), Some("4242"));
    assert_eq!(data.amount, Some(1299));
}
