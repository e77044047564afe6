//! PayKKa v1.2 adapter for payorch.
//!
//! * [`keys`]: merchant private key and PayKKa public key loading (PEM or bare
//!   base64, parsed once), key generation.
//! * [`signing`]: request signing ("serialize once, sign those bytes, send
//!   those bytes" via [`SignedRequest`]) and verification of PayKKa's
//!   signatures on responses and notifications.
//! * [`client`]: the HTTP client [`PaykkaClient`], implementing the engine's
//!   `PaymentGateway` port for every operation.
//! * [`webhook`]: [`WebhookReceiver`], verification and routing of PayKKa
//!   notifications, and [`MerchantWebhookVerifier`], the engine's webhook
//!   verification port for every merchant served (what the HTTP layer
//!   calls).
//!
//! Cargo features: `aws-lc` (default, aws-lc-rs backend) and `rsa-backend`
//! (pure-Rust `rsa` crate). At least one must be enabled; both may be.

#[cfg(not(any(feature = "aws-lc", feature = "rsa-backend")))]
compile_error!(
    "payorch-paykka needs at least one signing backend: enable `aws-lc` or `rsa-backend`"
);

pub mod client;
pub mod keys;
pub mod signing;
pub mod webhook;

pub use client::{
    ClientError, ClientSettings, MerchantConfig, Operation, OperationPaths, OperationTimeouts,
    PaykkaClient, RetryPolicy, SignatureMode,
};
pub use keys::{Backend, KeyError, MerchantPrivateKey, PaykkaPublicKey};
pub use signing::{
    RequestSigner, SignError, SignedRequest, SigningConfig, VerifyError, verify,
    verify_notification, verify_response,
};
pub use webhook::{
    MerchantWebhookVerifier, VerifiedNotification, WebhookConfig, WebhookError, WebhookReceiver,
};
