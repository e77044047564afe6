//! The two RSA implementations behind one small pair of traits.
//!
//! Both compute RSASSA-PKCS1-v1_5 with SHA-256 (`SHA256withRSA`), which is
//! deterministic, so for the same key and message they must produce the same
//! bytes (tested). Keys arrive here as PKCS#1 DER already validated by
//! [`crate::keys`]; each backend parses them once into its native form.

use std::sync::Arc;

use crate::keys::{Backend, KeyError};
use crate::signing::SignError;

/// Signs messages with one private key.
pub(crate) trait SignerBackend: Send + Sync + 'static {
    /// Which implementation this is.
    fn backend(&self) -> Backend;
    /// RSASSA-PKCS1-v1_5 / SHA-256 signature of `message` (modulus length bytes).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Verifies signatures with one public key.
pub(crate) trait VerifierBackend: Send + Sync + 'static {
    /// Which implementation this is.
    fn backend(&self) -> Backend;
    /// `true` iff `signature` is a valid RSASSA-PKCS1-v1_5 / SHA-256 signature of `message`.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool;
}

/// Builds a signer from PKCS#1 `RSAPrivateKey` DER.
pub(crate) fn signer(backend: Backend, pkcs1: &[u8]) -> Result<Arc<dyn SignerBackend>, KeyError> {
    match backend {
        #[cfg(feature = "aws-lc")]
        Backend::AwsLc => Ok(Arc::new(aws::AwsLcSigner::new(pkcs1)?)),
        #[cfg(feature = "rsa-backend")]
        Backend::RustCrypto => Ok(Arc::new(rustcrypto::RsaCrateSigner::new(pkcs1)?)),
        #[allow(unreachable_patterns)]
        other => {
            let _ = pkcs1;
            Err(KeyError::BackendUnavailable(other))
        }
    }
}

/// Builds a verifier from PKCS#1 `RSAPublicKey` DER.
pub(crate) fn verifier(
    backend: Backend,
    pkcs1: &[u8],
) -> Result<Arc<dyn VerifierBackend>, KeyError> {
    match backend {
        #[cfg(feature = "aws-lc")]
        Backend::AwsLc => Ok(Arc::new(aws::AwsLcVerifier::new(pkcs1)?)),
        #[cfg(feature = "rsa-backend")]
        Backend::RustCrypto => Ok(Arc::new(rustcrypto::RsaCrateVerifier::new(pkcs1)?)),
        #[allow(unreachable_patterns)]
        other => {
            let _ = pkcs1;
            Err(KeyError::BackendUnavailable(other))
        }
    }
}

#[cfg(feature = "aws-lc")]
mod aws {
    //! aws-lc-rs backend: `RsaKeyPair` + `ParsedPublicKey` (parsed once).

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeyPair;
    use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};

    use super::{SignerBackend, VerifierBackend};
    use crate::keys::{Backend, KeyError};
    use crate::signing::SignError;

    pub(crate) struct AwsLcSigner {
        key: KeyPair,
        rng: SystemRandom,
    }

    impl AwsLcSigner {
        pub(crate) fn new(pkcs1: &[u8]) -> Result<Self, KeyError> {
            let key = KeyPair::from_der(pkcs1).map_err(|e| KeyError::Rejected {
                backend: "aws-lc",
                reason: e.to_string(),
            })?;
            Ok(Self {
                key,
                rng: SystemRandom::new(),
            })
        }
    }

    impl SignerBackend for AwsLcSigner {
        fn backend(&self) -> Backend {
            Backend::AwsLc
        }

        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
            let mut signature = vec![0u8; self.key.public_modulus_len()];
            self.key
                .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
                .map_err(|e| SignError::Crypto {
                    backend: "aws-lc",
                    reason: e.to_string(),
                })?;
            Ok(signature)
        }
    }

    pub(crate) struct AwsLcVerifier {
        key: ParsedPublicKey,
    }

    impl AwsLcVerifier {
        pub(crate) fn new(pkcs1: &[u8]) -> Result<Self, KeyError> {
            let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pkcs1).map_err(|e| {
                KeyError::Rejected {
                    backend: "aws-lc",
                    reason: e.to_string(),
                }
            })?;
            Ok(Self { key })
        }
    }

    impl VerifierBackend for AwsLcVerifier {
        fn backend(&self) -> Backend {
            Backend::AwsLc
        }

        fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
            self.key.verify_sig(message, signature).is_ok()
        }
    }
}

#[cfg(feature = "rsa-backend")]
mod rustcrypto {
    //! Pure-Rust backend: the `rsa` 0.10 crate.

    use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
    use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
    use rsa::sha2::Sha256;
    use rsa::signature::{SignatureEncoding, Signer, Verifier};
    use rsa::{PrivateKey, PublicKey};

    use super::{SignerBackend, VerifierBackend};
    use crate::keys::{Backend, KeyError};
    use crate::signing::SignError;

    pub(crate) struct RsaCrateSigner {
        key: SigningKey<Sha256>,
    }

    impl RsaCrateSigner {
        pub(crate) fn new(pkcs1: &[u8]) -> Result<Self, KeyError> {
            let key = PrivateKey::from_pkcs1_der(pkcs1).map_err(|e| KeyError::Rejected {
                backend: "rsa",
                reason: e.to_string(),
            })?;
            Ok(Self {
                key: SigningKey::<Sha256>::new(key),
            })
        }
    }

    impl SignerBackend for RsaCrateSigner {
        fn backend(&self) -> Backend {
            Backend::RustCrypto
        }

        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
            let signature = self.key.try_sign(message).map_err(|e| SignError::Crypto {
                backend: "rsa",
                reason: e.to_string(),
            })?;
            Ok(signature.to_vec())
        }
    }

    pub(crate) struct RsaCrateVerifier {
        key: VerifyingKey<Sha256>,
    }

    impl RsaCrateVerifier {
        pub(crate) fn new(pkcs1: &[u8]) -> Result<Self, KeyError> {
            let key = PublicKey::from_pkcs1_der(pkcs1).map_err(|e| KeyError::Rejected {
                backend: "rsa",
                reason: e.to_string(),
            })?;
            Ok(Self {
                key: VerifyingKey::<Sha256>::new(key),
            })
        }
    }

    impl VerifierBackend for RsaCrateVerifier {
        fn backend(&self) -> Backend {
            Backend::RustCrypto
        }

        fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
            match Signature::try_from(signature) {
                Ok(signature) => self.key.verify(message, &signature).is_ok(),
                Err(_) => false,
            }
        }
    }
}
