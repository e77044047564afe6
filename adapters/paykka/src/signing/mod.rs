//! PayKKa v1.2 request signing and signature verification
//! (authentication.md §3 and §5).
//!
//! String to sign (UTF-8 bytes, no trailing newline):
//!
//! ```text
//! merchantId=<merchant_id>&timestamp=<timestamp>&requestBody=<exact body bytes>
//! ```
//!
//! signed with RSASSA-PKCS1-v1_5 / SHA-256, standard base64 with padding, then
//! (setting [`SigningConfig::percent_encode_signature`], default on)
//! percent-encoded (`+`→`%2B`, `/`→`%2F`, `=`→`%3D`). Headers: `signature`,
//! `type: RSA256`, `version: v1.2`.
//!
//! **Serialize once, sign those bytes, send those bytes.** The only way to get
//! a [`SignedRequest`] is from [`RequestSigner`], which serializes the body
//! itself and keeps the bytes private; the HTTP layer sends
//! [`SignedRequest::body`] and [`SignedRequest::headers`], so a different
//! serialization can never be sent under the signature.

pub(crate) mod backend;
mod fields;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::keys::{MerchantPrivateKey, PaykkaPublicKey};

pub use fields::{
    FieldSource, FieldsError, SignedFields, notification_signed_fields, response_signed_fields,
};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "signature";
/// Header carrying the signature type.
pub const TYPE_HEADER: &str = "type";
/// Header carrying the API version.
pub const VERSION_HEADER: &str = "version";
/// Value of the `type` header.
pub const SIGNATURE_TYPE: &str = "RSA256";
/// Value of the `version` header (and of the optional body `version` field).
pub const API_VERSION: &str = "v1.2";

/// Signing settings for the points authentication.md leaves open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// Percent-encode the base64 signature in the `signature` header
    /// (`+`→`%2B`, `/`→`%2F`, `=`→`%3D`), as the working client does.
    /// \[INFERRED\] default `true` (authentication.md §3.3).
    pub percent_encode_signature: bool,
    /// Add `"version":"v1.2"` to the JSON body before serializing and signing.
    /// Only needed if the sandbox answers `206001` without it.
    /// \[INFERRED\] default `false` (authentication.md §2).
    pub body_version_field: bool,
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self {
            percent_encode_signature: true,
            body_version_field: false,
        }
    }
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The body could not be serialized to JSON (a bug in the DTO, not retryable).
    #[error("cannot serialize request body: {0}")]
    Serialize(#[from] serde_json::Error),
    /// `body_version_field` is on but the body is not a JSON object.
    #[error("cannot add the body version field: the body is not a JSON object")]
    BodyNotObject,
    /// The body already has a `version` field with another value.
    #[error("body already has version field {found:?}, expected {API_VERSION:?}")]
    ConflictingVersionField {
        /// The value found in the body.
        found: String,
    },
    /// The crypto library failed to sign (should not happen with a loaded key;
    /// page someone).
    #[error("the {backend} backend failed to sign: {reason}")]
    Crypto {
        /// Backend name.
        backend: &'static str,
        /// The library's reason.
        reason: String,
    },
}

/// Why a signature did not verify. Every variant means "do not trust this
/// message"; the variant says which check failed, for logs and alerts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The `signature` header is empty or missing.
    #[error("signature header is empty")]
    MissingSignature,
    /// The header contains `%` but is not valid percent-encoding.
    #[error("signature header has invalid percent-encoding at byte {position}")]
    BadPercentEncoding {
        /// Byte offset of the bad `%` sequence.
        position: usize,
    },
    /// The (percent-decoded) header is not standard base64 with padding.
    #[error("signature is not valid base64: {reason}")]
    BadBase64 {
        /// The decoder's complaint.
        reason: String,
    },
    /// The decoded signature has the wrong length for the key.
    #[error("signature has {actual} bytes, expected {expected} for this key")]
    WrongLength {
        /// Modulus length of the public key.
        expected: usize,
        /// Length found.
        actual: usize,
    },
    /// Well-formed signature that does not match the key and the string to
    /// sign (tampered body, wrong merchant id or timestamp, wrong key).
    #[error("signature does not match (tampered body, wrong merchant id/timestamp, or wrong key)")]
    Mismatch,
    /// The merchant id / timestamp could not be taken from the body.
    #[error("cannot determine the signed fields: {0}")]
    Fields(#[from] FieldsError),
}

/// The exact bytes that are signed: `merchantId=…&timestamp=…&requestBody=<body>`.
pub fn string_to_sign(merchant_id: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(48 + merchant_id.len() + body.len());
    msg.extend_from_slice(b"merchantId=");
    msg.extend_from_slice(merchant_id.as_bytes());
    msg.extend_from_slice(b"&timestamp=");
    msg.extend_from_slice(timestamp.to_string().as_bytes());
    msg.extend_from_slice(b"&requestBody=");
    msg.extend_from_slice(body);
    msg
}

/// Percent-encodes base64 text the way the PayKKa client does
/// (`+`→`%2B`, `/`→`%2F`, `=`→`%3D`; everything else unchanged).
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

/// Decodes `%XX` sequences (any hex pair). Values without `%` are returned as is.
pub fn percent_decode(value: &str) -> Result<String, VerifyError> {
    if !value.contains('%') {
        return Ok(value.to_owned());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(VerifyError::BadPercentEncoding { position: i })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| VerifyError::BadPercentEncoding { position: 0 })
}

/// A request body together with the signature over exactly those bytes.
///
/// Only [`RequestSigner`] constructs it; body and headers are read-only.
/// `Debug` shows neither the body (it may carry card data) nor the full
/// signature.
#[derive(Clone)]
pub struct SignedRequest {
    body: Bytes,
    merchant_id: String,
    timestamp: u64,
    signature_base64: String,
    signature_header: String,
}

impl SignedRequest {
    /// The body bytes to send, exactly as signed.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as a cheaply clonable [`Bytes`] (for HTTP clients), exactly as signed.
    pub fn body_bytes(&self) -> Bytes {
        self.body.clone()
    }

    /// The merchant id that was signed.
    pub fn merchant_id(&self) -> &str {
        &self.merchant_id
    }

    /// The timestamp (ms since the epoch) that was signed.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The `signature` header value (percent-encoded if so configured).
    pub fn signature_header(&self) -> &str {
        &self.signature_header
    }

    /// The raw standard-base64 signature.
    pub fn signature_base64(&self) -> &str {
        &self.signature_base64
    }

    /// All three signing headers as `(name, value)`: `signature`, `type`, `version`.
    pub fn headers(&self) -> [(&'static str, &str); 3] {
        [
            (SIGNATURE_HEADER, &self.signature_header),
            (TYPE_HEADER, SIGNATURE_TYPE),
            (VERSION_HEADER, API_VERSION),
        ]
    }

    /// The string that was signed (rebuilt; for diagnostics and the CLI).
    pub fn string_to_sign(&self) -> Vec<u8> {
        string_to_sign(&self.merchant_id, self.timestamp, &self.body)
    }
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix: String = self.signature_base64.chars().take(8).collect();
        f.debug_struct("SignedRequest")
            .field("merchant_id", &self.merchant_id)
            .field("timestamp", &self.timestamp)
            .field("body_len", &self.body.len())
            .field("signature", &format_args!("{prefix}…"))
            .finish()
    }
}

/// Signs v1.2 requests (or, in the sandbox, responses and notifications)
/// with one private key and one [`SigningConfig`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RequestSigner {
    key: MerchantPrivateKey,
    config: SigningConfig,
}

impl RequestSigner {
    /// A signer for `key` with `config`.
    pub fn new(key: MerchantPrivateKey, config: SigningConfig) -> Self {
        Self { key, config }
    }

    /// The settings in use.
    pub fn config(&self) -> &SigningConfig {
        &self.config
    }

    /// The key in use.
    pub fn key(&self) -> &MerchantPrivateKey {
        &self.key
    }

    /// Serializes `body` to compact JSON once (adding `"version":"v1.2"` if
    /// [`SigningConfig::body_version_field`] is on), signs those bytes and
    /// returns them with the headers.
    ///
    /// `merchant_id` and `timestamp` must be the values inside `body`.
    pub fn sign_json<T: Serialize + ?Sized>(
        &self,
        merchant_id: &str,
        timestamp: u64,
        body: &T,
    ) -> Result<SignedRequest, SignError> {
        let bytes = if self.config.body_version_field {
            let mut value = serde_json::to_value(body)?;
            let object = value.as_object_mut().ok_or(SignError::BodyNotObject)?;
            match object.get("version") {
                None => {
                    object.insert("version".to_owned(), API_VERSION.into());
                }
                Some(serde_json::Value::String(v)) if v == API_VERSION => {}
                Some(other) => {
                    return Err(SignError::ConflictingVersionField {
                        found: other.to_string(),
                    });
                }
            }
            serde_json::to_vec(&value)?
        } else {
            serde_json::to_vec(body)?
        };
        self.sign_raw_body(merchant_id, timestamp, bytes)
    }

    /// Signs an already-serialized body exactly as given (no re-serialization,
    /// no trimming; [`SigningConfig::body_version_field`] is **not** applied).
    pub fn sign_raw_body(
        &self,
        merchant_id: &str,
        timestamp: u64,
        body: impl Into<Bytes>,
    ) -> Result<SignedRequest, SignError> {
        let body = body.into();
        let message = string_to_sign(merchant_id, timestamp, &body);
        let signature = self.key.sign_raw(&message)?;
        let signature_base64 = STANDARD.encode(signature);
        let signature_header = if self.config.percent_encode_signature {
            percent_encode_base64(&signature_base64)
        } else {
            signature_base64.clone()
        };
        Ok(SignedRequest {
            body,
            merchant_id: merchant_id.to_owned(),
            timestamp,
            signature_base64,
            signature_header,
        })
    }
}

/// Verifies a v1.2 `signature` header over
/// `merchantId=<merchant_id>&timestamp=<timestamp>&requestBody=<raw_body>`.
///
/// Accepts the header percent-encoded or as raw base64 (decoded first if it
/// contains `%`). `raw_body` must be the bytes as received, before any JSON
/// parsing.
pub fn verify(
    public_key: &PaykkaPublicKey,
    merchant_id: &str,
    timestamp: u64,
    raw_body: &[u8],
    signature_header: &str,
) -> Result<(), VerifyError> {
    let signature = decode_signature_header(public_key, signature_header)?;
    let message = string_to_sign(merchant_id, timestamp, raw_body);
    if public_key.verify_raw(&message, &signature) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Verifies a notification: merchant id and timestamp are taken from the
/// top-level body fields (authentication.md §5 hypothesis). Returns the
/// fields that were used.
pub fn verify_notification(
    public_key: &PaykkaPublicKey,
    raw_body: &[u8],
    signature_header: &str,
) -> Result<SignedFields, VerifyError> {
    let fields = notification_signed_fields(raw_body)?;
    verify(
        public_key,
        &fields.merchant_id,
        fields.timestamp,
        raw_body,
        signature_header,
    )?;
    Ok(fields)
}

/// Verifies a synchronous response, trying the §5 candidates in order
/// (`data.merchant_id`/`data.timestamp`, then the values we sent). Returns the
/// candidate that matched, so report-only mode can log which one it was.
pub fn verify_response(
    public_key: &PaykkaPublicKey,
    raw_body: &[u8],
    signature_header: &str,
    sent_merchant_id: &str,
    sent_timestamp: u64,
) -> Result<SignedFields, VerifyError> {
    // Decode once so format errors are reported as such, not as a mismatch.
    let signature = decode_signature_header(public_key, signature_header)?;
    for candidate in response_signed_fields(raw_body, sent_merchant_id, sent_timestamp) {
        let message = string_to_sign(&candidate.merchant_id, candidate.timestamp, raw_body);
        if public_key.verify_raw(&message, &signature) {
            return Ok(candidate);
        }
    }
    Err(VerifyError::Mismatch)
}

fn decode_signature_header(
    public_key: &PaykkaPublicKey,
    header: &str,
) -> Result<Vec<u8>, VerifyError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(VerifyError::MissingSignature);
    }
    let b64 = percent_decode(header)?;
    let signature = STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| VerifyError::BadBase64 {
            reason: e.to_string(),
        })?;
    let expected = public_key.signature_len();
    if signature.len() != expected {
        return Err(VerifyError::WrongLength {
            expected,
            actual: signature.len(),
        });
    }
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_sign_layout() {
        let body = br#"{"merchant_id":"10000000000001","timestamp":1704067200000}"#;
        let s = string_to_sign("10000000000001", 1_704_067_200_000, body);
        assert_eq!(
            s,
            br#"merchantId=10000000000001&timestamp=1704067200000&requestBody={"merchant_id":"10000000000001","timestamp":1704067200000}"#
        );
    }

    #[test]
    fn percent_round_trip() {
        let b64 = "ab+/cd==";
        let enc = percent_encode_base64(b64);
        assert_eq!(enc, "ab%2B%2Fcd%3D%3D");
        assert_eq!(percent_decode(&enc).unwrap(), b64);
        assert_eq!(percent_decode("ab%2bcd").unwrap(), "ab+cd");
        assert_eq!(percent_decode(b64).unwrap(), b64);
        assert_eq!(
            percent_decode("ab%2"),
            Err(VerifyError::BadPercentEncoding { position: 2 })
        );
        assert_eq!(
            percent_decode("%zz"),
            Err(VerifyError::BadPercentEncoding { position: 0 })
        );
    }

    #[test]
    fn config_defaults_follow_the_spec() {
        let c = SigningConfig::default();
        assert!(c.percent_encode_signature);
        assert!(!c.body_version_field);
        let parsed: SigningConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, c);
    }
}
