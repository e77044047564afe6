//! The one error type of the sandbox's public API.

/// What went wrong when starting or driving the sandbox. None of these come
/// from the simulated PayKKa protocol (those are HTTP answers with a
/// `ret_code`); they are setup or test-hook mistakes.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A configured merchant public key could not be parsed. Fix the config.
    #[error("merchant {merchant_id}: bad public key: {reason}")]
    BadMerchantKey { merchant_id: String, reason: String },
    /// The configuration is inconsistent (e.g. two operations on one path).
    #[error("bad sandbox config: {0}")]
    BadConfig(String),
    /// The platform key could not be generated or loaded. Fix the config.
    #[error("platform key: {0}")]
    PlatformKey(String),
    /// Binding or serving the listening socket failed (port in use, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client for notifications could not be built.
    #[error("notification client: {0}")]
    HttpClient(String),
    /// A test hook named a merchant the sandbox does not know.
    #[error("unknown merchant {0}")]
    UnknownMerchant(String),
    /// A test hook named an order the merchant does not have.
    #[error("merchant {merchant_id} has no order {order_id}")]
    UnknownOrder {
        merchant_id: String,
        order_id: String,
    },
    /// A test hook asked for something the order's state does not allow
    /// (e.g. completing a challenge that is not pending).
    #[error("not allowed: {0}")]
    InvalidState(String),
}
