//! The sandbox's own, independent implementation of PayKKa v1.2 signing
//! (authentication.md §3 and §5), on aws-lc-rs.
//!
//! It deliberately shares no code with `payorch-paykka` (ARCHITECTURE.md §1:
//! an adapter never depends on another adapter). Being "the other side of
//! the wire", a second implementation catches symmetric bugs that a shared
//! one would hide.
//!
//! * [`MerchantKey`] is a merchant's public key (PEM SPKI, PEM PKCS#1 or bare
//!   base64 SPKI/PKCS#1 DER), parsed once; verifies request signatures.
//! * [`PlatformKey`] is the sandbox's RSA private key ("PayKKa platform key");
//!   signs responses and notifications.
//! * [`string_to_sign`] builds
//!   `merchantId=<id>&timestamp=<ts>&requestBody=<body>` as bytes.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::SandboxError;

/// `merchantId=<merchant_id>&timestamp=<timestamp>&requestBody=<body bytes>`
/// (authentication.md §3.1), as bytes.
pub fn string_to_sign(merchant_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut msg =
        format!("merchantId={merchant_id}&timestamp={timestamp}&requestBody=").into_bytes();
    msg.extend_from_slice(body);
    msg
}

/// Percent-encodes the three base64 characters that need it (`+ / =`), as
/// PHP `rawurlencode` does for base64 text (authentication.md §3.3).
pub fn percent_encode_base64(b64: &str) -> String {
    let mut out = String::with_capacity(b64.len() + 16);
    for c in b64.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` on a malformed escape or non-UTF-8 result.
pub fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes a `signature` header value: percent-decoded when it contains `%`
/// (the client behaviour), then standard base64. `None` when malformed.
pub fn decode_signature_header(value: &str) -> Option<Vec<u8>> {
    let value = value.trim();
    let b64 = if value.contains('%') {
        percent_decode(value)?
    } else {
        value.to_owned()
    };
    STANDARD.decode(b64.as_bytes()).ok()
}

/// Extracts the DER payload of a PEM block, or decodes bare base64.
fn der_from_text(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    let body: String = if t.starts_with("-----BEGIN") {
        t.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat()
    } else {
        t.to_owned()
    };
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(compact.as_bytes()).ok()
}

/// Wraps DER in a PEM block with 64-column lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A merchant's registered RSA public key, parsed once.
#[derive(Clone)]
pub struct MerchantKey {
    key: ParsedPublicKey,
}

impl fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MerchantKey(RSA)")
    }
}

impl MerchantKey {
    /// Parses PEM SPKI (`BEGIN PUBLIC KEY`), PEM PKCS#1 (`BEGIN RSA PUBLIC
    /// KEY`) or bare base64 of either DER form.
    pub fn parse(merchant_id: &str, text: &str) -> Result<Self, SandboxError> {
        let bad = |reason: &str| SandboxError::BadMerchantKey {
            merchant_id: merchant_id.to_owned(),
            reason: reason.to_owned(),
        };
        let der = der_from_text(text).ok_or_else(|| bad("not PEM or base64"))?;
        // aws-lc-rs accepts both RFC 8017 (PKCS#1) and RFC 5280 (SPKI) DER.
        let key = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|e| bad(&format!("not an RSA public key: {e}")))?;
        Ok(MerchantKey { key })
    }

    /// RSASSA-PKCS1-v1_5 SHA-256 verification of `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// The sandbox's platform private key (the "PayKKa platform key" whose
/// public half merchants use to verify responses and notifications).
/// `Debug` never prints key material.
#[derive(Clone)]
pub struct PlatformKey {
    pair: Arc<KeyPair>,
    public_pem: String,
}

impl fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlatformKey(***)")
    }
}

impl PlatformKey {
    /// A fresh RSA-2048 key.
    pub fn generate() -> Result<Self, SandboxError> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| SandboxError::PlatformKey("RSA key generation failed".into()))?;
        Self::from_pair(pair)
    }

    /// Loads a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE
    /// KEY`) PEM, or bare base64 of either DER form.
    pub fn from_pem(text: &str) -> Result<Self, SandboxError> {
        let der = der_from_text(text)
            .ok_or_else(|| SandboxError::PlatformKey("not PEM or base64".into()))?;
        let pair = KeyPair::from_pkcs8(&der)
            .or_else(|_| KeyPair::from_der(&der))
            .map_err(|e| SandboxError::PlatformKey(format!("not an RSA private key: {e}")))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: KeyPair) -> Result<Self, SandboxError> {
        let spki = pair
            .public_key()
            .as_der()
            .map_err(|_| SandboxError::PlatformKey("cannot encode the public key".into()))?;
        let public_pem = pem("PUBLIC KEY", spki.as_ref());
        Ok(PlatformKey {
            pair: Arc::new(pair),
            public_pem,
        })
    }

    /// The public key as PEM SPKI (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Signs `merchantId=..&timestamp=..&requestBody=<body>` and returns the
    /// percent-encoded base64 signature header value.
    pub fn sign_header(&self, merchant_id: &str, timestamp: i64, body: &[u8]) -> String {
        let msg = string_to_sign(merchant_id, timestamp, body);
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        // Signing with a valid key into a correctly sized buffer cannot fail;
        // an empty header would surface as a verification failure anyway.
        if self
            .pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                &msg,
                &mut sig,
            )
            .is_err()
        {
            return String::new();
        }
        percent_encode_base64(&STANDARD.encode(sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_roundtrip_in_both_header_forms() {
        let key = PlatformKey::generate().unwrap();
        let merchant = MerchantKey::parse("m", key.public_key_pem()).unwrap();
        let body = br#"{"a":1}"#;
        let header = key.sign_header("m", 1_700_000_000_000, body);
        let sig = decode_signature_header(&header).unwrap();
        let msg = string_to_sign("m", 1_700_000_000_000, body);
        assert!(merchant.verify(&msg, &sig));
        assert!(!merchant.verify(&string_to_sign("m", 1_700_000_000_001, body), &sig));
        // Raw base64 (not percent-encoded) decodes to the same bytes.
        let raw = percent_decode(&header).unwrap();
        assert_eq!(decode_signature_header(&raw).unwrap(), sig);
    }

    #[test]
    fn percent_codec() {
        assert_eq!(percent_encode_base64("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(percent_decode("a%2Bb%2Fc%3D%3D").unwrap(), "a+b/c==");
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%2").is_none());
    }

    #[test]
    fn debug_hides_keys() {
        let key = PlatformKey::generate().unwrap();
        assert_eq!(format!("{key:?}"), "PlatformKey(***)");
    }
}
