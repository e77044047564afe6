//! Signing and verification against OpenSSL and between backends, plus the
//! key-format matrix. Keys are generated at test time; none is committed.
//!
//! Run with both backends: `cargo test -p payorch-paykka --all-features`.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{OpensslKeys, openssl_genpkey, openssl_sign, openssl_stdout, pem_body_lines};
use payorch_paykka::keys::{Backend, KeyError, MerchantPrivateKey, PaykkaPublicKey};
use payorch_paykka::signing::{
    FieldSource, RequestSigner, SignError, SigningConfig, VerifyError, percent_encode_base64,
    string_to_sign, verify, verify_notification, verify_response,
};
use std::sync::OnceLock;

const MID: &str = "10000000000001";
const TS: u64 = 1_704_067_200_000;
const BODY: &[u8] = br#"{"merchant_id":"10000000000001","timestamp":1704067200000,"token":"TK10000000000000001","shopper_reference":"cust-0001"}"#;

fn keys() -> &'static OpensslKeys {
    static KEYS: OnceLock<OpensslKeys> = OnceLock::new();
    KEYS.get_or_init(|| OpensslKeys::generate(2048))
}

fn other_keys() -> &'static OpensslKeys {
    static KEYS: OnceLock<OpensslKeys> = OnceLock::new();
    KEYS.get_or_init(|| OpensslKeys::generate(2048))
}

fn signer(backend: Backend, pem: &str, config: SigningConfig) -> RequestSigner {
    RequestSigner::new(
        MerchantPrivateKey::parse_with(pem, backend).expect("key parses"),
        config,
    )
}

// ---------- OpenSSL cross-checks ----------

#[test]
fn signature_equals_openssl_for_pkcs8_and_pkcs1_keys() {
    let k = keys();
    let expected = openssl_sign(&k.path("pkcs8.pem"), &string_to_sign(MID, TS, BODY));
    let expected_b64 = STANDARD.encode(&expected);
    for file in ["pkcs8.pem", "pkcs1.pem"] {
        // Both PEM forms of the same key give the same openssl signature.
        assert_eq!(
            openssl_sign(&k.path(file), &string_to_sign(MID, TS, BODY)),
            expected
        );
        for &backend in Backend::available() {
            let s = signer(backend, &k.read(file), SigningConfig::default());
            let signed = s.sign_raw_body(MID, TS, BODY.to_vec()).unwrap();
            assert_eq!(signed.signature_base64(), expected_b64, "{backend} {file}");
            assert_eq!(
                signed.signature_header(),
                percent_encode_base64(&expected_b64)
            );
            assert_eq!(signed.body(), BODY);
        }
    }
}

#[test]
fn verifies_openssl_signature_with_every_public_form() {
    let k = keys();
    let sig = openssl_sign(&k.path("pkcs8.pem"), &string_to_sign(MID, TS, BODY));
    let b64 = STANDARD.encode(&sig);
    let spki_pem = k.read("spki.pem");
    let bare_spki = pem_body_lines(&spki_pem).concat();
    let forms = [spki_pem.clone(), k.read("pkcs1_pub.pem"), bare_spki];
    for form in &forms {
        for &backend in Backend::available() {
            let pk = PaykkaPublicKey::parse_with(form, backend).unwrap();
            assert_eq!(pk.bits(), 2048);
            verify(&pk, MID, TS, BODY, &b64).unwrap();
            verify(&pk, MID, TS, BODY, &percent_encode_base64(&b64)).unwrap();
        }
    }
}

#[test]
fn our_signature_verifies_with_openssl() {
    let k = keys();
    let s = signer(
        Backend::default(),
        &k.read("pkcs8.pem"),
        SigningConfig::default(),
    );
    let signed = s.sign_raw_body(MID, TS, BODY.to_vec()).unwrap();
    let sig_path = k.path("sig.bin");
    std::fs::write(
        &sig_path,
        STANDARD.decode(signed.signature_base64()).unwrap(),
    )
    .unwrap();
    let out = openssl_stdout(
        &[
            "dgst",
            "-sha256",
            "-verify",
            k.path("spki.pem").to_str().unwrap(),
            "-signature",
            sig_path.to_str().unwrap(),
        ],
        &signed.string_to_sign(),
    );
    assert_eq!(String::from_utf8_lossy(&out).trim(), "Verified OK");
}

#[test]
fn derived_public_key_matches_openssl_spki() {
    let k = keys();
    let private = MerchantPrivateKey::parse(&k.read("pkcs1.pem")).unwrap();
    let spki_pem = k.read("spki.pem");
    assert_eq!(private.public_key().to_spki_pem(), spki_pem);
    assert_eq!(
        private.public_key().to_spki_base64(),
        pem_body_lines(&spki_pem).concat()
    );
    assert_eq!(
        private.public_key(),
        &PaykkaPublicKey::parse(&k.read("pkcs1_pub.pem")).unwrap()
    );
}

// ---------- failures ----------

#[test]
fn verification_failures_say_why() {
    let k = keys();
    let s = signer(
        Backend::default(),
        &k.read("pkcs8.pem"),
        SigningConfig::default(),
    );
    let signed = s.sign_raw_body(MID, TS, BODY.to_vec()).unwrap();
    let header = signed.signature_header();
    for &backend in Backend::available() {
        let pk = PaykkaPublicKey::parse_with(&k.read("spki.pem"), backend).unwrap();
        let wrong_pk =
            PaykkaPublicKey::parse_with(&other_keys().read("spki.pem"), backend).unwrap();
        verify(&pk, MID, TS, BODY, header).unwrap();

        let mut tampered = BODY.to_vec();
        tampered[20] ^= 1;
        assert_eq!(
            verify(&pk, MID, TS, &tampered, header),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&wrong_pk, MID, TS, BODY, header),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&pk, MID, TS + 1, BODY, header),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&pk, "10000000000002", TS, BODY, header),
            Err(VerifyError::Mismatch)
        );

        let raw = STANDARD.decode(signed.signature_base64()).unwrap();
        let truncated = STANDARD.encode(&raw[..255]);
        assert_eq!(
            verify(&pk, MID, TS, BODY, &truncated),
            Err(VerifyError::WrongLength {
                expected: 256,
                actual: 255
            })
        );
        assert!(matches!(
            verify(&pk, MID, TS, BODY, "not base64!"),
            Err(VerifyError::BadBase64 { .. })
        ));
        // Truncating the base64 text itself breaks the padding.
        assert!(matches!(
            verify(&pk, MID, TS, BODY, &signed.signature_base64()[..301]),
            Err(VerifyError::BadBase64 { .. })
        ));
        assert_eq!(
            verify(&pk, MID, TS, BODY, "   "),
            Err(VerifyError::MissingSignature)
        );
        assert!(matches!(
            verify(&pk, MID, TS, BODY, "abc%2"),
            Err(VerifyError::BadPercentEncoding { .. })
        ));
        let msg = verify(&pk, MID, TS, &tampered, header)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("does not match"), "{msg}");
    }
}

// ---------- settings ----------

#[test]
fn percent_encoding_setting() {
    let k = keys();
    let pk = PaykkaPublicKey::parse(&k.read("spki.pem")).unwrap();
    let on = signer(
        Backend::default(),
        &k.read("pkcs8.pem"),
        SigningConfig::default(),
    );
    let off = signer(
        Backend::default(),
        &k.read("pkcs8.pem"),
        SigningConfig {
            percent_encode_signature: false,
            ..SigningConfig::default()
        },
    );
    let a = on.sign_raw_body(MID, TS, BODY.to_vec()).unwrap();
    let b = off.sign_raw_body(MID, TS, BODY.to_vec()).unwrap();
    assert_eq!(a.signature_base64(), b.signature_base64());
    assert_eq!(b.signature_header(), b.signature_base64());
    assert!(!a.signature_header().contains(['+', '/', '=']));
    assert!(
        a.signature_header().contains("%3D"),
        "2048-bit base64 ends in '='"
    );
    assert_eq!(
        a.signature_header(),
        percent_encode_base64(a.signature_base64())
    );
    verify(&pk, MID, TS, BODY, a.signature_header()).unwrap();
    verify(&pk, MID, TS, BODY, b.signature_header()).unwrap();
    assert_eq!(
        a.headers(),
        [
            ("signature", a.signature_header()),
            ("type", "RSA256"),
            ("version", "v1.2")
        ]
    );
}

#[derive(serde::Serialize)]
struct TokenRemove<'a> {
    merchant_id: &'a str,
    timestamp: u64,
    token: &'a str,
}

#[test]
fn sign_json_serializes_once_and_signs_those_bytes() {
    let k = keys();
    let pk = PaykkaPublicKey::parse(&k.read("spki.pem")).unwrap();
    let body = TokenRemove {
        merchant_id: MID,
        timestamp: TS,
        token: "TK1",
    };
    let s = signer(
        Backend::default(),
        &k.read("pkcs8.pem"),
        SigningConfig::default(),
    );
    let signed = s.sign_json(MID, TS, &body).unwrap();
    assert_eq!(signed.body(), serde_json::to_vec(&body).unwrap());
    assert_eq!(signed.body_bytes().as_ref(), signed.body());
    assert_eq!(
        signed.string_to_sign(),
        string_to_sign(MID, TS, signed.body())
    );
    assert!(!signed.body().windows(9).any(|w| w == b"\"version\""));
    verify(&pk, MID, TS, signed.body(), signed.signature_header()).unwrap();
}

#[test]
fn body_version_field_setting() {
    let k = keys();
    let pk = PaykkaPublicKey::parse(&k.read("spki.pem")).unwrap();
    let s = signer(
        Backend::default(),
        &k.read("pkcs8.pem"),
        SigningConfig {
            body_version_field: true,
            ..SigningConfig::default()
        },
    );
    let body = TokenRemove {
        merchant_id: MID,
        timestamp: TS,
        token: "TK1",
    };
    let signed = s.sign_json(MID, TS, &body).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(signed.body()).unwrap();
    assert_eq!(parsed["version"], "v1.2");
    assert_eq!(parsed["token"], "TK1");
    verify(&pk, MID, TS, signed.body(), signed.signature_header()).unwrap();

    // An existing matching version is kept; a different one is refused.
    let same = serde_json::json!({"merchant_id": MID, "timestamp": TS, "version": "v1.2"});
    assert!(s.sign_json(MID, TS, &same).is_ok());
    let other = serde_json::json!({"merchant_id": MID, "timestamp": TS, "version": "v1.0"});
    assert!(matches!(
        s.sign_json(MID, TS, &other),
        Err(SignError::ConflictingVersionField { .. })
    ));
    assert!(matches!(
        s.sign_json(MID, TS, &[1, 2, 3]),
        Err(SignError::BodyNotObject)
    ));
}

// ---------- notifications and responses (§5 hypothesis) ----------

#[test]
fn notification_and_response_verification() {
    let k = keys();
    let platform = signer(
        Backend::default(),
        &k.read("pkcs8.pem"),
        SigningConfig::default(),
    );
    let pk = PaykkaPublicKey::parse(&k.read("spki.pem")).unwrap();

    let notify = br#"{"merchant_id":"18356675194960","timestamp":1700805506000,"notify_type":"PAYMENT","status":"SUCCESS"}"#;
    let signed = platform
        .sign_raw_body("18356675194960", 1_700_805_506_000, notify.to_vec())
        .unwrap();
    let fields = verify_notification(&pk, notify, signed.signature_header()).unwrap();
    assert_eq!(fields.source, FieldSource::NotificationBody);
    let mut tampered = notify.to_vec();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        verify_notification(&pk, &tampered, signed.signature_header()),
        Err(VerifyError::Mismatch)
    );
    assert!(matches!(
        verify_notification(&pk, br#"{"timestamp":1}"#, signed.signature_header()),
        Err(VerifyError::Fields(_))
    ));

    let response = br#"{"ret_code":"000000","ret_msg":"Success","data":{"merchant_id":"m1","timestamp":1700805506000}}"#;
    let by_data = platform
        .sign_raw_body("m1", 1_700_805_506_000, response.to_vec())
        .unwrap();
    let used = verify_response(&pk, response, by_data.signature_header(), "m1", 5).unwrap();
    assert_eq!(used.source, FieldSource::ResponseData);
    let by_sent = platform.sign_raw_body("m1", 5, response.to_vec()).unwrap();
    let used = verify_response(&pk, response, by_sent.signature_header(), "m1", 5).unwrap();
    assert_eq!(used.source, FieldSource::SentRequest);
    assert_eq!(
        verify_response(&pk, response, by_sent.signature_header(), "m1", 6),
        Err(VerifyError::Mismatch)
    );
}

// ---------- key formats ----------

#[test]
fn accepted_private_key_forms() {
    let k = keys();
    let pkcs8 = k.read("pkcs8.pem");
    let body_lines = pem_body_lines(&pkcs8);
    let one_line = body_lines.concat();
    let wrapped = body_lines.join("\n");
    let forms = [
        ("pkcs8 pem", pkcs8.clone()),
        ("pkcs1 pem", k.read("pkcs1.pem")),
        ("bare base64 one line", one_line.clone()),
        ("bare base64 wrapped", wrapped.clone()),
        ("surrounding whitespace", format!("\n\n  {one_line}  \n\t")),
        ("crlf pem", pkcs8.replace('\n', "\r\n")),
        (
            "indented pem",
            format!("   {}", pkcs8.replace('\n', "\n   ")),
        ),
        (
            "bare base64 pkcs1",
            pem_body_lines(&k.read("pkcs1.pem")).concat(),
        ),
    ];
    let reference = openssl_sign(&k.path("pkcs8.pem"), b"hello");
    for (name, text) in &forms {
        for &backend in Backend::available() {
            let key = MerchantPrivateKey::parse_with(text, backend)
                .unwrap_or_else(|e| panic!("{name} ({backend}): {e}"));
            assert_eq!(key.bits(), 2048, "{name}");
            assert_eq!(key.backend(), backend);
            assert_eq!(
                key.sign_raw(b"hello").unwrap(),
                reference,
                "{name} {backend}"
            );
        }
    }
}

fn private_err(text: &str) -> KeyError {
    match MerchantPrivateKey::parse(text) {
        Ok(k) => panic!("expected an error, got {k:?}"),
        Err(e) => e,
    }
}

fn public_err(text: &str) -> KeyError {
    match PaykkaPublicKey::parse(text) {
        Ok(k) => panic!("expected an error, got {k:?}"),
        Err(e) => e,
    }
}

#[test]
fn rejected_private_key_forms_say_why() {
    let k = keys();
    let dir = k.dir.path();

    let ec = openssl_genpkey(
        dir,
        "ec.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let e = private_err(&ec);
    assert!(
        matches!(&e, KeyError::NotRsa { algorithm } if algorithm == "EC"),
        "{e}"
    );
    assert_eq!(e.to_string(), "not an RSA key: found EC");
    let ec_bare = pem_body_lines(&ec).concat();
    assert!(matches!(private_err(&ec_bare), KeyError::NotRsa { .. }));
    let ec_traditional = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
    assert!(matches!(
        private_err(ec_traditional),
        KeyError::NotRsa { .. }
    ));

    let ed = openssl_genpkey(dir, "ed.pem", &["-algorithm", "ed25519"]);
    assert_eq!(
        private_err(&ed).to_string(),
        "not an RSA key: found Ed25519"
    );

    let small = openssl_genpkey(
        dir,
        "small.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let e = private_err(&small);
    assert!(matches!(e, KeyError::TooSmall { bits: 1024 }), "{e}");
    assert_eq!(e.to_string(), "RSA key too small: 1024 bits (minimum 2048)");

    let e = private_err(&k.read("spki.pem"));
    assert!(
        matches!(e, KeyError::PublicKeyGivenWherePrivateExpected),
        "{e}"
    );
    assert!(matches!(
        private_err(&pem_body_lines(&k.read("spki.pem")).concat()),
        KeyError::PublicKeyGivenWherePrivateExpected
    ));
    assert!(matches!(
        private_err(&k.read("pkcs1_pub.pem")),
        KeyError::PublicKeyGivenWherePrivateExpected
    ));

    let pkcs8 = k.read("pkcs8.pem");
    let no_end: String = pkcs8
        .lines()
        .filter(|l| !l.starts_with("-----END"))
        .collect::<Vec<_>>()
        .join("\n");
    let e = private_err(&no_end);
    assert!(matches!(e, KeyError::MalformedPem { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("missing '-----END PRIVATE KEY-----'"),
        "{e}"
    );

    let bad_body = pkcs8.replacen('M', "*", 1);
    assert!(matches!(
        private_err(&bad_body),
        KeyError::MalformedPem { .. }
    ));
    let mismatched = pkcs8.replace("END PRIVATE KEY", "END RSA PRIVATE KEY");
    assert!(matches!(
        private_err(&mismatched),
        KeyError::MalformedPem { .. }
    ));

    assert!(matches!(
        private_err("this is not a key"),
        KeyError::MalformedBase64 { .. }
    ));
    let e = private_err(&STANDARD.encode(b"random bytes that are not DER"));
    assert!(matches!(e, KeyError::MalformedDer { .. }), "{e}");
    assert!(matches!(private_err("  \n "), KeyError::Empty));

    let encrypted_path = k.path("enc.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:x",
            "-in",
        ])
        .arg(k.path("pkcs8.pem"))
        .arg("-out")
        .arg(&encrypted_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let enc = std::fs::read_to_string(&encrypted_path).unwrap();
    assert!(matches!(private_err(&enc), KeyError::Encrypted));

    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        private_err(cert),
        KeyError::UnsupportedFormat { .. }
    ));

    let e = MerchantPrivateKey::from_file(k.path("does-not-exist.pem")).unwrap_err();
    assert!(matches!(e, KeyError::Io { .. }), "{e}");
}

#[test]
fn rejected_public_key_forms_say_why() {
    let k = keys();
    let e = public_err(&k.read("pkcs8.pem"));
    assert!(
        matches!(e, KeyError::PrivateKeyGivenWherePublicExpected),
        "{e}"
    );
    assert!(matches!(
        public_err(&k.read("pkcs1.pem")),
        KeyError::PrivateKeyGivenWherePublicExpected
    ));
    assert!(matches!(
        public_err(&pem_body_lines(&k.read("pkcs8.pem")).concat()),
        KeyError::PrivateKeyGivenWherePublicExpected
    ));
    // The error text never echoes the key.
    let body = pem_body_lines(&k.read("pkcs8.pem")).concat();
    assert!(!format!("{e} {e:?}").contains(&body[40..60]));

    let dir = k.dir.path();
    openssl_genpkey(
        dir,
        "ec2.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let ec_pub = String::from_utf8(openssl_stdout(
        &[
            "pkey",
            "-in",
            dir.join("ec2.pem").to_str().unwrap(),
            "-pubout",
        ],
        b"",
    ))
    .unwrap();
    assert!(matches!(public_err(&ec_pub), KeyError::NotRsa { algorithm } if algorithm == "EC"));

    openssl_genpkey(
        dir,
        "small2.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let small_pub = String::from_utf8(openssl_stdout(
        &[
            "pkey",
            "-in",
            dir.join("small2.pem").to_str().unwrap(),
            "-pubout",
        ],
        b"",
    ))
    .unwrap();
    assert!(matches!(
        public_err(&small_pub),
        KeyError::TooSmall { bits: 1024 }
    ));
    assert!(matches!(
        public_err("%%%"),
        KeyError::MalformedBase64 { .. }
    ));
}

#[test]
fn key_material_never_appears_in_debug_or_display() {
    let k = keys();
    let pem = k.read("pkcs8.pem");
    let key = MerchantPrivateKey::parse(&pem).unwrap();
    let debug = format!("{key:?}");
    let display = format!("{key}");
    assert_eq!(debug, "MerchantPrivateKey(RSA-2048, ***)");
    assert_eq!(display, debug);
    let s = RequestSigner::new(key.clone(), SigningConfig::default());
    let signer_debug = format!("{s:?} {s:#?}");
    let signed = s.sign_raw_body(MID, TS, BODY.to_vec()).unwrap();
    let signed_debug = format!("{signed:?}");
    for line in pem_body_lines(&pem) {
        for chunk in line.as_bytes().chunks(12) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            if chunk.len() == 12 {
                assert!(!debug.contains(chunk));
                assert!(!signer_debug.contains(chunk));
            }
        }
    }
    // The signed request shows neither body nor full signature.
    assert!(!signed_debug.contains("TK10000000000000001"));
    assert!(!signed_debug.contains(signed.signature_base64()));
    assert!(signed_debug.contains("body_len"));
}

#[cfg(feature = "aws-lc")]
#[test]
fn generated_key_pair_round_trips() {
    let pair = payorch_paykka::keys::generate_merchant_key_pair().unwrap();
    assert!(
        pair.private_pkcs8_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert!(!format!("{pair:?}").contains(&pair.private_pkcs8_pem()[40..60]));
    let key = pair.private_key().unwrap();
    assert_eq!(key.bits(), 2048);
    assert_eq!(key.public_key(), &pair.public);
    let reparsed = PaykkaPublicKey::parse(&pair.public.to_spki_base64()).unwrap();
    assert_eq!(reparsed, pair.public);
    let s = RequestSigner::new(key, SigningConfig::default());
    let signed = s.sign_raw_body(MID, TS, BODY.to_vec()).unwrap();
    verify(&pair.public, MID, TS, BODY, signed.signature_header()).unwrap();
}
