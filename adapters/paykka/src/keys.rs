//! RSA keys for PayKKa v1.2 signing: the merchant private key and the PayKKa
//! platform public key (authentication.md §4).
//!
//! Keys are parsed **once** at load into the selected backend's native form;
//! signing and verification never re-parse. Accepted inputs (surrounding
//! whitespace is ignored):
//!
//! | Key | Accepted forms |
//! | --- | --- |
//! | private | PEM PKCS#8 (`BEGIN PRIVATE KEY`), PEM PKCS#1 (`BEGIN RSA PRIVATE KEY`), bare base64 of PKCS#8 (or PKCS#1) DER on one line or wrapped |
//! | public | PEM SPKI (`BEGIN PUBLIC KEY`), PEM PKCS#1 (`BEGIN RSA PUBLIC KEY`), bare base64 of SPKI (or PKCS#1) DER |
//!
//! The structure and algorithm are sniffed by a small DER reader before any
//! backend sees the bytes, so errors name the exact problem (not RSA, too
//! small, a public key where a private one was expected, ...) the same way for
//! both backends. Key material never appears in `Debug`/`Display` output or in
//! error messages.

mod der;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::signing::SignError;
use crate::signing::backend::{self, SignerBackend, VerifierBackend};
use der::{Reader, TAG_BIT_STRING, TAG_INTEGER, TAG_NULL, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE};

/// Smallest accepted modulus, in bits (PayKKa uses RSA-2048).
pub const MIN_KEY_BITS: usize = 2048;
/// Largest accepted modulus, in bits (the aws-lc-rs verification limit).
pub const MAX_KEY_BITS: usize = 8192;

/// Why a key could not be loaded. Every variant means "fix the key
/// configuration"; none is retryable. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The input was empty or whitespace only.
    #[error("key is empty")]
    Empty,
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The file that was read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The text looks like PEM (`-----BEGIN`) but the armor or its body is broken.
    #[error("malformed PEM: {reason}")]
    MalformedPem {
        /// What is wrong with the armor or body.
        reason: String,
    },
    /// The text is neither PEM nor valid standard base64.
    #[error("malformed base64 key: {reason}")]
    MalformedBase64 {
        /// The decoder's complaint (position, not content).
        reason: String,
    },
    /// The decoded bytes are not a DER key structure of the expected kind.
    #[error("not a DER-encoded key: {reason}")]
    MalformedDer {
        /// Which structural check failed.
        reason: &'static str,
    },
    /// A PEM block type we do not read (certificate, OpenSSH key, ...).
    #[error("unsupported key format: {what}")]
    UnsupportedFormat {
        /// The PEM label and, where useful, how to convert it.
        what: String,
    },
    /// The private key is password-protected; provide it unencrypted.
    #[error("encrypted private key: decrypt it first (openssl pkcs8 -in key.pem -out plain.pem)")]
    Encrypted,
    /// A well-formed key of another algorithm (EC, Ed25519, DSA, ...).
    #[error("not an RSA key: found {algorithm}")]
    NotRsa {
        /// The algorithm found.
        algorithm: String,
    },
    /// The RSA modulus is below [`MIN_KEY_BITS`].
    #[error("RSA key too small: {bits} bits (minimum {MIN_KEY_BITS})")]
    TooSmall {
        /// The modulus size found.
        bits: usize,
    },
    /// The RSA modulus is above [`MAX_KEY_BITS`].
    #[error("RSA key too large: {bits} bits (maximum {MAX_KEY_BITS})")]
    TooLarge {
        /// The modulus size found.
        bits: usize,
    },
    /// A public key was supplied where the merchant private key belongs.
    #[error("expected a private key but got a public key")]
    PublicKeyGivenWherePrivateExpected,
    /// A private key was supplied where a public key belongs (the key text is
    /// not echoed; consider it exposed if it was pasted somewhere shared).
    #[error("expected a public key but got a private key")]
    PrivateKeyGivenWherePublicExpected,
    /// The structure parsed, but the crypto backend rejected the key
    /// (inconsistent CRT values, bad exponent, ...).
    #[error("the {backend} backend rejected the key: {reason}")]
    Rejected {
        /// Backend name.
        backend: &'static str,
        /// The backend's reason.
        reason: String,
    },
    /// The requested backend was not compiled in (enable its cargo feature).
    #[error("signing backend {0} is not compiled in (enable its cargo feature)")]
    BackendUnavailable(Backend),
    /// Key generation failed in the crypto library.
    #[error("key generation failed: {0}")]
    Generation(String),
}

/// Which RSA implementation signs and verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// aws-lc-rs (cargo feature `aws-lc`, default): OpenSSL-class speed.
    AwsLc,
    /// The pure-Rust `rsa` crate (cargo feature `rsa-backend`).
    RustCrypto,
}

impl Backend {
    /// Backends compiled into this build, default first.
    pub fn available() -> &'static [Backend] {
        &[
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc,
            #[cfg(feature = "rsa-backend")]
            Backend::RustCrypto,
        ]
    }

    /// Stable short name (`aws-lc` / `rsa`), also accepted by [`str::parse`].
    pub fn name(self) -> &'static str {
        match self {
            Backend::AwsLc => "aws-lc",
            Backend::RustCrypto => "rsa",
        }
    }
}

impl Default for Backend {
    /// aws-lc-rs when compiled in, otherwise the `rsa` crate.
    fn default() -> Self {
        if cfg!(feature = "aws-lc") {
            Backend::AwsLc
        } else {
            Backend::RustCrypto
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aws-lc" | "aws-lc-rs" => Ok(Backend::AwsLc),
            "rsa" | "rust-crypto" | "rsa-backend" => Ok(Backend::RustCrypto),
            other => Err(format!(
                "unknown signing backend {other:?} (use aws-lc or rsa)"
            )),
        }
    }
}

/// Bytes that are zeroed when dropped and never printed.
pub(crate) struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, exclusive reference into our own buffer;
            // volatile so the wipe is not optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// The merchant's RSA private key, parsed once into its backend.
///
/// Cheap to clone (shared). `Debug`/`Display` print `MerchantPrivateKey(RSA-2048, ***)`.
#[derive(Clone)]
pub struct MerchantPrivateKey {
    bits: usize,
    signer: Arc<dyn SignerBackend>,
    public: PaykkaPublicKey,
}

impl MerchantPrivateKey {
    /// Parses a private key in any accepted form with the default backend.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Self::parse_with(text, Backend::default())
    }

    /// Parses a private key in any accepted form into the given backend.
    pub fn parse_with(text: &str, backend: Backend) -> Result<Self, KeyError> {
        let pkcs1 = decode_private(text)?;
        Self::from_pkcs1_der(pkcs1, backend)
    }

    /// Reads and parses a private key file with the default backend.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::from_file_with(path, Backend::default())
    }

    /// Reads and parses a private key file into the given backend.
    pub fn from_file_with(path: impl AsRef<Path>, backend: Backend) -> Result<Self, KeyError> {
        // Keep the file contents in a wiped-on-drop buffer.
        let text = SecretBytes(read_text(path.as_ref())?.into_bytes());
        // Cannot fail: the bytes came from a String.
        let text = std::str::from_utf8(text.as_slice()).unwrap_or_default();
        Self::parse_with(text, backend)
    }

    fn from_pkcs1_der(pkcs1: SecretBytes, backend: Backend) -> Result<Self, KeyError> {
        let info = inspect_pkcs1_private(pkcs1.as_slice())?;
        check_size(info.bits)?;
        let public = PaykkaPublicKey::from_pkcs1_der(info.public_pkcs1, backend)?;
        let signer = backend::signer(backend, pkcs1.as_slice())?;
        Ok(Self {
            bits: info.bits,
            signer,
            public,
        })
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Signature length in bytes (256 for RSA-2048).
    pub fn signature_len(&self) -> usize {
        self.bits.div_ceil(8)
    }

    /// The backend this key was loaded into.
    pub fn backend(&self) -> Backend {
        self.signer.backend()
    }

    /// The matching public key (what the merchant registers with PayKKa).
    pub fn public_key(&self) -> &PaykkaPublicKey {
        &self.public
    }

    /// Raw RSASSA-PKCS1-v1_5 / SHA-256 signature of `message`.
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signer.sign(message)
    }
}

impl fmt::Debug for MerchantPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerchantPrivateKey(RSA-{}, ***)", self.bits)
    }
}

impl fmt::Display for MerchantPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An RSA public key used to verify v1.2 signatures: PayKKa's platform key
/// (responses, notifications), or a merchant key (tests, the sandbox, the CLI).
///
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct PaykkaPublicKey {
    bits: usize,
    /// PKCS#1 `RSAPublicKey` DER, kept for re-encoding (SPKI/PEM export).
    pkcs1: Arc<[u8]>,
    verifier: Arc<dyn VerifierBackend>,
}

impl PaykkaPublicKey {
    /// Parses a public key in any accepted form with the default backend.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Self::parse_with(text, Backend::default())
    }

    /// Parses a public key in any accepted form into the given backend.
    pub fn parse_with(text: &str, backend: Backend) -> Result<Self, KeyError> {
        let pkcs1 = decode_public(text)?;
        Self::from_pkcs1_der(pkcs1, backend)
    }

    /// Reads and parses a public key file with the default backend.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::from_file_with(path, Backend::default())
    }

    /// Reads and parses a public key file into the given backend.
    pub fn from_file_with(path: impl AsRef<Path>, backend: Backend) -> Result<Self, KeyError> {
        let text = read_text(path.as_ref())?;
        Self::parse_with(&text, backend)
    }

    fn from_pkcs1_der(pkcs1: Vec<u8>, backend: Backend) -> Result<Self, KeyError> {
        let bits = inspect_pkcs1_public(&pkcs1)?;
        check_size(bits)?;
        let verifier = backend::verifier(backend, &pkcs1)?;
        Ok(Self {
            bits,
            pkcs1: pkcs1.into(),
            verifier,
        })
    }

    /// The same key loaded into another backend.
    pub fn with_backend(&self, backend: Backend) -> Result<Self, KeyError> {
        Self::from_pkcs1_der(self.pkcs1.to_vec(), backend)
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Expected signature length in bytes.
    pub fn signature_len(&self) -> usize {
        self.bits.div_ceil(8)
    }

    /// The backend this key was loaded into.
    pub fn backend(&self) -> Backend {
        self.verifier.backend()
    }

    /// Checks a raw RSASSA-PKCS1-v1_5 / SHA-256 signature over `message`.
    pub fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify(message, signature)
    }

    /// X.509 SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut alg = Vec::with_capacity(15);
        der::write_tlv(&mut alg, TAG_OID, der::OID_RSA_ENCRYPTION);
        der::write_tlv(&mut alg, TAG_NULL, &[]);
        let mut bits = Vec::with_capacity(self.pkcs1.len() + 1);
        bits.push(0); // no unused bits
        bits.extend_from_slice(&self.pkcs1);
        let mut body = Vec::with_capacity(bits.len() + 24);
        der::write_tlv(&mut body, TAG_SEQUENCE, &alg);
        der::write_tlv(&mut body, TAG_BIT_STRING, &bits);
        let mut out = Vec::with_capacity(body.len() + 4);
        der::write_tlv(&mut out, TAG_SEQUENCE, &body);
        out
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM (SPKI), 64-column lines, trailing newline.
    pub fn to_spki_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.to_spki_der())
    }

    /// The SPKI DER as one bare standard-base64 line (the form the PayKKa
    /// portal takes), without newline.
    pub fn to_spki_base64(&self) -> String {
        STANDARD.encode(self.to_spki_der())
    }
}

impl fmt::Debug for PaykkaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaykkaPublicKey(RSA-{})", self.bits)
    }
}

impl fmt::Display for PaykkaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl PartialEq for PaykkaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.pkcs1 == other.pkcs1
    }
}

impl Eq for PaykkaPublicKey {}

/// A freshly generated merchant key pair (see [`generate_merchant_key_pair`]).
pub struct GeneratedKeyPair {
    private_pem: SecretBytes,
    /// The public half.
    pub public: PaykkaPublicKey,
}

impl GeneratedKeyPair {
    /// The private key as PKCS#8 PEM (`BEGIN PRIVATE KEY`). Handle with care.
    pub fn private_pkcs8_pem(&self) -> &str {
        // The buffer was built from an ASCII PEM string.
        std::str::from_utf8(self.private_pem.as_slice()).unwrap_or_default()
    }

    /// The private key loaded for signing with the default backend.
    pub fn private_key(&self) -> Result<MerchantPrivateKey, KeyError> {
        MerchantPrivateKey::parse(self.private_pkcs8_pem())
    }
}

impl fmt::Debug for GeneratedKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeneratedKeyPair({:?}, private ***)", self.public)
    }
}

/// Generates a new RSA-2048 merchant key pair (aws-lc-rs).
#[cfg(feature = "aws-lc")]
pub fn generate_merchant_key_pair() -> Result<GeneratedKeyPair, KeyError> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    let pair =
        KeyPair::generate(KeySize::Rsa2048).map_err(|e| KeyError::Generation(e.to_string()))?;
    let pkcs8 = pair
        .as_der()
        .map_err(|e| KeyError::Generation(e.to_string()))?;
    let private_pem = SecretBytes(pem_encode("PRIVATE KEY", pkcs8.as_ref()).into_bytes());
    let pkcs1 = decode_private(
        std::str::from_utf8(private_pem.as_slice())
            .map_err(|e| KeyError::Generation(e.to_string()))?,
    )?;
    let info = inspect_pkcs1_private(pkcs1.as_slice())?;
    let public = PaykkaPublicKey::from_pkcs1_der(info.public_pkcs1, Backend::default())?;
    Ok(GeneratedKeyPair {
        private_pem,
        public,
    })
}

/// PEM-encodes DER under `label` with 64-column lines and a trailing newline.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

fn check_size(bits: usize) -> Result<(), KeyError> {
    if bits < MIN_KEY_BITS {
        Err(KeyError::TooSmall { bits })
    } else if bits > MAX_KEY_BITS {
        Err(KeyError::TooLarge { bits })
    } else {
        Ok(())
    }
}

/// What the text form says about the key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Armor {
    /// `PRIVATE KEY` / `RSA PRIVATE KEY` PEM.
    PrivatePem,
    /// `PUBLIC KEY` / `RSA PUBLIC KEY` PEM.
    PublicPem,
    /// No PEM armor: bare base64 DER, structure decides.
    Bare,
}

/// Unwraps PEM or bare base64 into DER bytes.
fn unwrap_text(text: &str) -> Result<(Armor, SecretBytes), KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    if let Some(begin) = text.find("-----BEGIN ") {
        return unwrap_pem(&text[begin..]);
    }
    if text.contains("-----") {
        return Err(KeyError::MalformedPem {
            reason: "found '-----' but no '-----BEGIN ' line".to_owned(),
        });
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let compact = SecretBytes(compact.into_bytes());
    let der = STANDARD
        .decode(compact.as_slice())
        .map_err(|e| KeyError::MalformedBase64 {
            reason: e.to_string(),
        })?;
    Ok((Armor::Bare, SecretBytes(der)))
}

fn unwrap_pem(text: &str) -> Result<(Armor, SecretBytes), KeyError> {
    let mut lines = text.lines().map(str::trim);
    let first = lines.next().unwrap_or_default();
    let label = first
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.strip_suffix("-----"))
        .ok_or_else(|| KeyError::MalformedPem {
            reason: "BEGIN line is not of the form '-----BEGIN <LABEL>-----'".to_owned(),
        })?;
    let armor = match label {
        "PRIVATE KEY" | "RSA PRIVATE KEY" => Armor::PrivatePem,
        "PUBLIC KEY" | "RSA PUBLIC KEY" => Armor::PublicPem,
        "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
        "EC PRIVATE KEY" | "EC PARAMETERS" | "EC PUBLIC KEY" => {
            return Err(KeyError::NotRsa {
                algorithm: "EC".to_owned(),
            });
        }
        "DSA PRIVATE KEY" | "DSA PUBLIC KEY" => {
            return Err(KeyError::NotRsa {
                algorithm: "DSA".to_owned(),
            });
        }
        "OPENSSH PRIVATE KEY" => {
            return Err(KeyError::UnsupportedFormat {
                what: "OpenSSH private key (convert: ssh-keygen -p -m PKCS8 -f KEY)".to_owned(),
            });
        }
        "CERTIFICATE" => {
            return Err(KeyError::UnsupportedFormat {
                what: "X.509 certificate (extract the key: openssl x509 -pubkey -noout -in CERT)"
                    .to_owned(),
            });
        }
        other => {
            return Err(KeyError::UnsupportedFormat {
                what: format!("PEM block {other:?}"),
            });
        }
    };
    let end_line = format!("-----END {label}-----");
    let mut body = String::new();
    let mut found_end = false;
    for line in lines {
        if line.starts_with("-----END ") {
            if line != end_line {
                return Err(KeyError::MalformedPem {
                    reason: format!("BEGIN {label} closed by a different END line"),
                });
            }
            found_end = true;
            break;
        }
        if line.contains(':') {
            // RFC 1421 headers appear only on legacy encrypted PEM.
            if line.contains("ENCRYPTED") || line.starts_with("DEK-Info") {
                return Err(KeyError::Encrypted);
            }
            continue;
        }
        body.push_str(line);
    }
    let body = SecretBytes(body.into_bytes());
    if !found_end {
        return Err(KeyError::MalformedPem {
            reason: format!("missing '-----END {label}-----' line"),
        });
    }
    if body.as_slice().is_empty() {
        return Err(KeyError::MalformedPem {
            reason: "no base64 body between BEGIN and END".to_owned(),
        });
    }
    let der = STANDARD
        .decode(body.as_slice())
        .map_err(|e| KeyError::MalformedPem {
            reason: format!("body is not valid base64: {e}"),
        })?;
    Ok((armor, SecretBytes(der)))
}

/// Decodes any accepted private-key text into PKCS#1 `RSAPrivateKey` DER.
fn decode_private(text: &str) -> Result<SecretBytes, KeyError> {
    let (armor, der) = unwrap_text(text)?;
    if armor == Armor::PublicPem {
        return Err(KeyError::PublicKeyGivenWherePrivateExpected);
    }
    match classify(der.as_slice())? {
        Structure::Pkcs8 { algorithm, inner } => {
            if algorithm != der::OID_RSA_ENCRYPTION {
                return Err(KeyError::NotRsa {
                    algorithm: der::algorithm_name(algorithm),
                });
            }
            Ok(SecretBytes(inner.to_vec()))
        }
        Structure::Pkcs1Private => Ok(der),
        Structure::Spki { .. } | Structure::Pkcs1Public => {
            Err(KeyError::PublicKeyGivenWherePrivateExpected)
        }
    }
}

/// Decodes any accepted public-key text into PKCS#1 `RSAPublicKey` DER.
fn decode_public(text: &str) -> Result<Vec<u8>, KeyError> {
    let (armor, der) = unwrap_text(text)?;
    if armor == Armor::PrivatePem {
        return Err(KeyError::PrivateKeyGivenWherePublicExpected);
    }
    match classify(der.as_slice())? {
        Structure::Spki { algorithm, inner } => {
            if algorithm != der::OID_RSA_ENCRYPTION {
                return Err(KeyError::NotRsa {
                    algorithm: der::algorithm_name(algorithm),
                });
            }
            Ok(inner.to_vec())
        }
        Structure::Pkcs1Public => Ok(der.as_slice().to_vec()),
        Structure::Pkcs8 { .. } | Structure::Pkcs1Private => {
            Err(KeyError::PrivateKeyGivenWherePublicExpected)
        }
    }
}

/// The DER structures a key can arrive in.
enum Structure<'a> {
    /// PKCS#8 `PrivateKeyInfo`: algorithm OID and the inner private key.
    Pkcs8 {
        algorithm: &'a [u8],
        inner: &'a [u8],
    },
    /// PKCS#1 `RSAPrivateKey`.
    Pkcs1Private,
    /// X.509 `SubjectPublicKeyInfo`: algorithm OID and the inner public key.
    Spki {
        algorithm: &'a [u8],
        inner: &'a [u8],
    },
    /// PKCS#1 `RSAPublicKey`.
    Pkcs1Public,
}

fn malformed(reason: &'static str) -> KeyError {
    KeyError::MalformedDer { reason }
}

fn classify(input: &[u8]) -> Result<Structure<'_>, KeyError> {
    let mut outer = Reader::new(input);
    let seq = outer
        .read(TAG_SEQUENCE, "does not start with a SEQUENCE")
        .map_err(malformed)?;
    if !outer.is_empty() {
        return Err(malformed("trailing data after the key"));
    }
    let mut r = Reader::new(seq);
    match r.peek_tag() {
        // SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
        Some(TAG_SEQUENCE) => {
            let algorithm = read_algorithm(&mut r)?;
            let bits = r
                .read(TAG_BIT_STRING, "SubjectPublicKeyInfo without BIT STRING")
                .map_err(malformed)?;
            let inner = match bits.split_first() {
                Some((0, inner)) => inner,
                _ => return Err(malformed("public key BIT STRING has unused bits")),
            };
            Ok(Structure::Spki { algorithm, inner })
        }
        Some(TAG_INTEGER) => {
            let _first = r.read(TAG_INTEGER, "expected INTEGER").map_err(malformed)?;
            match r.peek_tag() {
                // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, privateKey OCTET STRING, ... }
                Some(TAG_SEQUENCE) => {
                    let algorithm = read_algorithm(&mut r)?;
                    let inner = r
                        .read(TAG_OCTET_STRING, "PrivateKeyInfo without OCTET STRING key")
                        .map_err(malformed)?;
                    Ok(Structure::Pkcs8 { algorithm, inner })
                }
                Some(TAG_INTEGER) => {
                    let _second = r.read(TAG_INTEGER, "expected INTEGER").map_err(malformed)?;
                    if r.is_empty() {
                        // RSAPublicKey ::= SEQUENCE { modulus, publicExponent }
                        Ok(Structure::Pkcs1Public)
                    } else {
                        // RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, d, p, q, ... }
                        Ok(Structure::Pkcs1Private)
                    }
                }
                _ => Err(malformed("unrecognised key structure")),
            }
        }
        _ => Err(malformed("unrecognised key structure")),
    }
}

fn read_algorithm<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], KeyError> {
    let alg = r
        .read(TAG_SEQUENCE, "expected AlgorithmIdentifier")
        .map_err(malformed)?;
    Reader::new(alg)
        .read(TAG_OID, "AlgorithmIdentifier without OID")
        .map_err(malformed)
}

struct PrivateInfo {
    bits: usize,
    public_pkcs1: Vec<u8>,
}

/// Validates a PKCS#1 `RSAPrivateKey` and derives its `RSAPublicKey`.
fn inspect_pkcs1_private(pkcs1: &[u8]) -> Result<PrivateInfo, KeyError> {
    let mut outer = Reader::new(pkcs1);
    let seq = outer
        .read(TAG_SEQUENCE, "RSAPrivateKey is not a SEQUENCE")
        .map_err(malformed)?;
    let mut r = Reader::new(seq);
    let version = r
        .read(TAG_INTEGER, "RSAPrivateKey without version")
        .map_err(malformed)?;
    if version != [0] {
        return Err(malformed(
            "unsupported RSAPrivateKey version (multi-prime?)",
        ));
    }
    let n = r
        .read(TAG_INTEGER, "RSAPrivateKey without modulus")
        .map_err(malformed)?;
    let e = r
        .read(TAG_INTEGER, "RSAPrivateKey without public exponent")
        .map_err(malformed)?;
    for what in [
        "RSAPrivateKey without private exponent",
        "RSAPrivateKey without prime1",
        "RSAPrivateKey without prime2",
        "RSAPrivateKey without exponent1",
        "RSAPrivateKey without exponent2",
        "RSAPrivateKey without coefficient",
    ] {
        r.read(TAG_INTEGER, what).map_err(malformed)?;
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 8);
    der::write_unsigned_integer(&mut body, n);
    der::write_unsigned_integer(&mut body, e);
    let mut public_pkcs1 = Vec::with_capacity(body.len() + 4);
    der::write_tlv(&mut public_pkcs1, TAG_SEQUENCE, &body);
    Ok(PrivateInfo {
        bits: der::integer_bits(n),
        public_pkcs1,
    })
}

/// Validates a PKCS#1 `RSAPublicKey`; returns the modulus size in bits.
fn inspect_pkcs1_public(pkcs1: &[u8]) -> Result<usize, KeyError> {
    let mut outer = Reader::new(pkcs1);
    let seq = outer
        .read(TAG_SEQUENCE, "RSAPublicKey is not a SEQUENCE")
        .map_err(malformed)?;
    let mut r = Reader::new(seq);
    let n = r
        .read(TAG_INTEGER, "RSAPublicKey without modulus")
        .map_err(malformed)?;
    r.read(TAG_INTEGER, "RSAPublicKey without exponent")
        .map_err(malformed)?;
    if !r.is_empty() || !outer.is_empty() {
        return Err(malformed("trailing data in RSAPublicKey"));
    }
    Ok(der::integer_bits(n))
}
