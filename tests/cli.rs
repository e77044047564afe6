//! End-to-end tests of the `payorch` binary: keygen, sign, verify, checked
//! against the openssl CLI. Keys are generated at test time.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const MID: &str = "10000000000001";
const TS: &str = "1704067200000";
// Pretty-printed with a trailing newline on purpose: the CLI must sign the
// file's bytes as they are.
const BODY: &str = "{\n  \"merchant_id\": \"10000000000001\",\n  \"timestamp\": 1704067200000,\n  \"token\": \"TK10000000000000001\"\n}\n";

fn payorch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_payorch"))
        .args(args)
        .output()
        .expect("run payorch")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl_sign_b64(key: &Path, message: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl CLI must be installed");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let mut b64 = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    b64.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    String::from_utf8(b64.wait_with_output().unwrap().stdout).unwrap()
}

fn percent_encode(b64: &str) -> String {
    b64.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[test]
fn keygen_writes_three_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys/nested");
    let out = payorch(&["keygen", "--out", keys.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for name in [
        "merchant_private.pem",
        "merchant_public.pem",
        "merchant_public.b64",
    ] {
        assert!(keys.join(name).is_file(), "{name} missing");
        assert!(text.contains(name), "output does not name {name}: {text}");
    }
    let mode = std::fs::metadata(keys.join("merchant_private.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let private = std::fs::read_to_string(keys.join("merchant_private.pem")).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let public = std::fs::read_to_string(keys.join("merchant_public.pem")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let b64 = std::fs::read_to_string(keys.join("merchant_public.b64")).unwrap();
    assert_eq!(b64.trim_end().lines().count(), 1);
    let pem_body: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(b64.trim_end(), pem_body);

    // openssl agrees the files are an RSA-2048 pair.
    let check = Command::new("openssl")
        .args(["rsa", "-check", "-noout", "-in"])
        .arg(keys.join("merchant_private.pem"))
        .output()
        .unwrap();
    assert!(check.status.success());
    let derived = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(keys.join("merchant_private.pem"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&derived.stdout), public);

    // A second run refuses and names the file; nothing changes.
    let again = payorch(&["keygen", "--out", keys.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("merchant_private.pem") && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(keys.join("merchant_private.pem")).unwrap(),
        private
    );

    // Any one existing file is enough to refuse.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("merchant_public.b64"), "x").unwrap();
    let refused = payorch(&["keygen", "--out", other.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("merchant_public.b64"));
    assert!(!other.join("merchant_private.pem").exists());
}

#[test]
fn sign_matches_openssl_and_verify_names_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    assert!(
        payorch(&["keygen", "--out", keys.to_str().unwrap()])
            .status
            .success()
    );
    let private = keys.join("merchant_private.pem");
    let public = keys.join("merchant_public.pem");
    let body = dir.path().join("body.json");
    std::fs::write(&body, BODY).unwrap();

    let message = format!("merchantId={MID}&timestamp={TS}&requestBody={BODY}");
    let expected_b64 = openssl_sign_b64(&private, message.as_bytes());
    let expected_header = percent_encode(&expected_b64);

    // Text output.
    let out = payorch(&[
        "sign",
        "--key",
        private.to_str().unwrap(),
        "--merchant",
        MID,
        "--timestamp",
        TS,
        body.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains(&message),
        "string to sign not printed verbatim:\n{text}"
    );
    assert!(
        text.contains(&format!("signature: {expected_header}\n")),
        "{text}"
    );
    assert!(text.contains("type: RSA256\n"));
    assert!(text.contains("version: v1.2\n"));
    assert!(text.contains(&expected_b64));

    // JSON output, with the global flag before or after the subcommand.
    for args in [vec!["--json", "sign"], vec!["sign", "--json"]] {
        let mut full = args.clone();
        full.extend([
            "--key",
            private.to_str().unwrap(),
            "--merchant",
            MID,
            "--timestamp",
            TS,
            body.to_str().unwrap(),
        ]);
        let out = payorch(&full);
        assert!(out.status.success());
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["headers"]["signature"], expected_header.as_str());
        assert_eq!(json["headers"]["type"], "RSA256");
        assert_eq!(json["headers"]["version"], "v1.2");
        assert_eq!(json["signature_base64"], expected_b64.as_str());
        assert_eq!(json["string_to_sign"], message.as_str());
        assert_eq!(json["timestamp"], 1_704_067_200_000u64);
    }

    // Default timestamp is "now" in ms.
    let out = payorch(&[
        "--json",
        "sign",
        "--key",
        private.to_str().unwrap(),
        "--merchant",
        MID,
        body.to_str().unwrap(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ts = json["timestamp"].as_u64().unwrap();
    assert!(ts > 1_700_000_000_000 && ts < 9_999_999_999_999, "{ts}");

    let verify = |sig: &str, body: &Path, ts: &str| {
        payorch(&[
            "verify",
            "--public-key",
            public.to_str().unwrap(),
            "--signature",
            sig,
            "--merchant",
            MID,
            "--timestamp",
            ts,
            body.to_str().unwrap(),
        ])
    };
    let ok = verify(&expected_header, &body, TS);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert_eq!(stdout(&ok).trim(), "valid");
    assert_eq!(verify(&expected_b64, &body, TS).status.code(), Some(0));

    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, BODY.replace("TK1", "TK2")).unwrap();
    let bad = verify(&expected_header, &tampered, TS);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("does not match"), "{}", stdout(&bad));

    let bad = verify(&expected_header, &body, "1704067200001");
    assert_eq!(bad.status.code(), Some(1));

    let short = verify(&expected_b64[..340], &body, TS);
    assert_eq!(short.status.code(), Some(1));
    assert!(
        stdout(&short).contains("bytes, expected 256"),
        "{}",
        stdout(&short)
    );

    let out = payorch(&[
        "--json",
        "verify",
        "--public-key",
        public.to_str().unwrap(),
        "--signature",
        "@@@",
        "--merchant",
        MID,
        "--timestamp",
        TS,
        body.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert!(json["reason"].as_str().unwrap().contains("base64"));

    // A private key passed as the public key is an input error (exit 2) that says so.
    let out = verify_with_key(&private, &expected_header, &body);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("expected a public key but got a private key")
    );
}

fn verify_with_key(key: &Path, sig: &str, body: &Path) -> Output {
    payorch(&[
        "verify",
        "--public-key",
        key.to_str().unwrap(),
        "--signature",
        sig,
        "--merchant",
        MID,
        "--timestamp",
        TS,
        body.to_str().unwrap(),
    ])
}
