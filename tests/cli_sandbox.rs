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
    let dir = std::env::temp_dir().join(format!("payorch-sb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sandbox.toml");
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
