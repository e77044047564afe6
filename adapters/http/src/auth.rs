//! Per-merchant API keys: `Authorization: Bearer <key>`.
//!
//! Only the SHA-256 (hex) of each key is configured (`api_key_sha256`):
//! keys are high-entropy random strings, so a plain hash is enough and a
//! leaked config does not leak keys. The presented key is hashed and
//! compared with every configured hash in constant time, so neither the
//! match position nor the number of equal leading bytes shows in timing.
//! The key itself is never logged or kept.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use payorch_engine::orchestrator::CommandContext;
use payorch_schemas::events::MerchantId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// Why a key table entry could not be built from config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// `api_key_sha256` is not 64 hex digits: fix the config.
    #[error("api_key_sha256 of merchant {merchant_id} must be 64 hex digits")]
    BadHash {
        /// The merchant whose entry is wrong.
        merchant_id: String,
    },
    /// The merchant id is empty: fix the config.
    #[error("an API key entry has an empty merchant_id")]
    EmptyMerchant,
}

/// One configured key: the merchant it authenticates and the SHA-256 of
/// the key.
#[derive(Clone)]
struct Entry {
    merchant_id: MerchantId,
    hash: [u8; 32],
}

/// The merchant API-key table. `Debug` prints merchant ids only.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Vec<Entry>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.merchant_id.as_str()))
            .finish()
    }
}

/// SHA-256 of a key, lower-case hex: what goes into `api_key_sha256`.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// An empty table (every request is 401).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a merchant with the hex SHA-256 of its key (`api_key_sha256`).
    /// A merchant may have several keys (rotation).
    pub fn with_hashed_key(
        mut self,
        merchant_id: impl Into<String>,
        api_key_sha256: &str,
    ) -> Result<Self, ApiKeyError> {
        let merchant_id = merchant_id.into();
        if merchant_id.is_empty() {
            return Err(ApiKeyError::EmptyMerchant);
        }
        let bytes = hex::decode(api_key_sha256.trim()).map_err(|_| ApiKeyError::BadHash {
            merchant_id: merchant_id.clone(),
        })?;
        let hash: [u8; 32] = bytes.try_into().map_err(|_| ApiKeyError::BadHash {
            merchant_id: merchant_id.clone(),
        })?;
        self.entries.push(Entry {
            merchant_id: MerchantId::new(merchant_id),
            hash,
        });
        Ok(self)
    }

    /// Adds a merchant with a plain key (hashed here; for tests and
    /// generated dev keys).
    pub fn with_plain_key(self, merchant_id: impl Into<String>, key: &str) -> Self {
        let merchant_id = merchant_id.into();
        let mut me = self;
        me.entries.push(Entry {
            merchant_id: MerchantId::new(merchant_id),
            hash: Sha256::digest(key.as_bytes()).into(),
        });
        me
    }

    /// The merchant a presented key belongs to. Every entry is compared
    /// (no early exit) in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<MerchantId> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&MerchantId> = None;
        for e in &self.entries {
            let eq: bool = e.hash.ct_eq(&digest).into();
            if eq && found.is_none() {
                found = Some(&e.merchant_id);
            }
        }
        found.cloned()
    }
}

/// The authenticated merchant of a request. Extracting it answers 401 when
/// the `Authorization` header is missing, malformed or unknown.
#[derive(Clone, Debug)]
pub struct Merchant(pub MerchantId);

impl Merchant {
    /// A command context for this merchant.
    pub fn context(&self) -> CommandContext {
        CommandContext::new(self.0.as_str())
    }
}

impl FromRequestParts<AppState> for Merchant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "header `Authorization: Bearer <api key>` is missing",
            ));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("header `Authorization` must be `Bearer <api key>`")
            })?;
        state
            .api_keys()
            .authenticate(key)
            .map(Merchant)
            .ok_or_else(|| ApiError::unauthorized("the API key is not valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_and_plain_keys_authenticate_their_merchant_only() {
        let keys = ApiKeys::new()
            .with_hashed_key("m1", &hash_api_key("secret-one"))
            .unwrap()
            .with_plain_key("m2", "secret-two");
        assert_eq!(keys.authenticate("secret-one").unwrap().as_str(), "m1");
        assert_eq!(keys.authenticate("secret-two").unwrap().as_str(), "m2");
        assert!(keys.authenticate("secret-three").is_none());
        assert!(keys.authenticate("").is_none());
        let dbg = format!("{keys:?}");
        assert!(!dbg.contains("secret"));
        assert!(!dbg.contains(&hash_api_key("secret-one")));
    }

    #[test]
    fn bad_hashes_are_config_errors() {
        assert!(matches!(
            ApiKeys::new().with_hashed_key("m", "abc"),
            Err(ApiKeyError::BadHash { .. })
        ));
        assert!(matches!(
            ApiKeys::new().with_hashed_key("", &hash_api_key("k")),
            Err(ApiKeyError::EmptyMerchant)
        ));
    }
}
