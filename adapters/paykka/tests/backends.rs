//! The aws-lc-rs and `rsa` crate backends must produce byte-identical
//! signatures (PKCS#1 v1.5 is deterministic) and accept each other's.
//!
//! Needs both features: `cargo test -p payorch-paykka --all-features`.

#![cfg(all(feature = "aws-lc", feature = "rsa-backend"))]

use std::sync::OnceLock;

use payorch_paykka::keys::{Backend, MerchantPrivateKey, generate_merchant_key_pair};
use payorch_paykka::signing::{RequestSigner, SigningConfig, verify};
use proptest::prelude::*;

/// A few RSA-2048 keys, generated once per test run, loaded into both backends.
fn key_pairs() -> &'static [(MerchantPrivateKey, MerchantPrivateKey)] {
    static KEYS: OnceLock<Vec<(MerchantPrivateKey, MerchantPrivateKey)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..3)
            .map(|_| {
                let pair = generate_merchant_key_pair().expect("keygen");
                let pem = pair.private_pkcs8_pem();
                (
                    MerchantPrivateKey::parse_with(pem, Backend::AwsLc).expect("aws-lc key"),
                    MerchantPrivateKey::parse_with(pem, Backend::RustCrypto).expect("rsa key"),
                )
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn backends_sign_byte_identically(
        key_index in 0usize..3,
        merchant_id in "[0-9]{1,20}",
        timestamp in 0u64..=9_999_999_999_999,
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let (aws, rust) = &key_pairs()[key_index];
        let a = RequestSigner::new(aws.clone(), SigningConfig::default())
            .sign_raw_body(&merchant_id, timestamp, body.clone())
            .unwrap();
        let r = RequestSigner::new(rust.clone(), SigningConfig::default())
            .sign_raw_body(&merchant_id, timestamp, body.clone())
            .unwrap();
        prop_assert_eq!(a.signature_base64(), r.signature_base64());
        prop_assert_eq!(a.signature_header(), r.signature_header());

        // Each backend's verifier accepts the signature, and rejects a flipped body.
        for backend in [Backend::AwsLc, Backend::RustCrypto] {
            let pk = aws.public_key().with_backend(backend).unwrap();
            prop_assert!(verify(&pk, &merchant_id, timestamp, &body, a.signature_header()).is_ok());
            let mut tampered = body.clone();
            tampered.push(b'x');
            prop_assert!(verify(&pk, &merchant_id, timestamp, &tampered, a.signature_header()).is_err());
        }
    }
}
