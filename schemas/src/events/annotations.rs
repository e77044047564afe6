//! The merchant's own labels on a resource (issue 15 point 2): a
//! `merchant_reference` (its order number, say) and `metadata`, bounded
//! key/value text. They are carried on the creating event of a payment
//! (`payment_placed`), a checkout session (`checkout_session_requested`)
//! and a recurring agreement (`agreement_created`), are never sent to
//! PayKKa, and are what `GET /v1/payments?merchant_reference=…&metadata[k]=v`
//! searches. Both are optional with serde defaults: events written before
//! they existed still read, and an event without labels serializes as it
//! always did.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most keys one resource's metadata may hold.
pub const MAX_METADATA_KEYS: usize = 20;
/// Longest metadata key, in characters.
pub const MAX_METADATA_KEY_CHARS: usize = 40;
/// Longest metadata value, in characters.
pub const MAX_METADATA_VALUE_CHARS: usize = 500;
/// Longest merchant reference, in characters.
pub const MAX_MERCHANT_REFERENCE_CHARS: usize = 128;

/// Labels a merchant puts on a resource it creates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct Annotations {
    /// The merchant's own reference (not unique: a search filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_reference: Option<String>,
    /// Key/value text; limits: [`MAX_METADATA_KEYS`] keys,
    /// [`MAX_METADATA_KEY_CHARS`] per key, [`MAX_METADATA_VALUE_CHARS`] per
    /// value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A label breaks a limit: `field` is the JSON path at fault
/// (`merchant_reference`, `metadata`, `metadata.<key>`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct AnnotationError {
    pub field: String,
    pub problem: String,
}

impl Annotations {
    /// No reference and no metadata.
    pub fn is_empty(&self) -> bool {
        self.merchant_reference.is_none() && self.metadata.is_empty()
    }

    /// Checks the limits (the first violation, naming its field).
    pub fn validate(&self) -> Result<(), AnnotationError> {
        let err = |field: String, problem: String| Err(AnnotationError { field, problem });
        if let Some(r) = &self.merchant_reference {
            let n = r.chars().count();
            if r.trim().is_empty() || n > MAX_MERCHANT_REFERENCE_CHARS {
                return err(
                    "merchant_reference".into(),
                    format!("must be 1 to {MAX_MERCHANT_REFERENCE_CHARS} characters"),
                );
            }
            if r.chars().any(char::is_control) {
                return err(
                    "merchant_reference".into(),
                    "must not contain control characters".into(),
                );
            }
        }
        if self.metadata.len() > MAX_METADATA_KEYS {
            return err(
                "metadata".into(),
                format!(
                    "at most {MAX_METADATA_KEYS} keys, got {}",
                    self.metadata.len()
                ),
            );
        }
        for (k, v) in &self.metadata {
            let field = format!("metadata.{k}");
            let kn = k.chars().count();
            if kn == 0 || kn > MAX_METADATA_KEY_CHARS {
                return err(
                    field,
                    format!("keys must be 1 to {MAX_METADATA_KEY_CHARS} characters"),
                );
            }
            if k.chars().any(|c| c.is_control() || c == '[' || c == ']') {
                return err(
                    field,
                    "keys must not contain control characters or brackets".into(),
                );
            }
            if v.chars().count() > MAX_METADATA_VALUE_CHARS {
                return err(
                    field,
                    format!("values must be at most {MAX_METADATA_VALUE_CHARS} characters"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(k: &str, v: &str) -> Annotations {
        Annotations {
            merchant_reference: None,
            metadata: BTreeMap::from([(k.to_owned(), v.to_owned())]),
        }
    }

    #[test]
    fn limits_name_the_field() {
        assert!(Annotations::default().validate().is_ok());
        assert!(with("shop", "berlin").validate().is_ok());
        let long_key = "k".repeat(MAX_METADATA_KEY_CHARS + 1);
        assert_eq!(
            with(&long_key, "v").validate().unwrap_err().field,
            format!("metadata.{long_key}")
        );
        let e = with("note", &"é".repeat(MAX_METADATA_VALUE_CHARS + 1))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "metadata.note");
        // Exactly at the limit (counted in characters, not bytes) is fine.
        assert!(
            with("note", &"é".repeat(MAX_METADATA_VALUE_CHARS))
                .validate()
                .is_ok()
        );
        assert_eq!(with("", "v").validate().unwrap_err().field, "metadata.");
        let many = Annotations {
            merchant_reference: None,
            metadata: (0..=MAX_METADATA_KEYS)
                .map(|i| (format!("k{i}"), "v".to_owned()))
                .collect(),
        };
        assert_eq!(many.validate().unwrap_err().field, "metadata");
        let r = Annotations {
            merchant_reference: Some(" ".into()),
            metadata: BTreeMap::new(),
        };
        assert_eq!(r.validate().unwrap_err().field, "merchant_reference");
    }

    #[test]
    fn empty_labels_serialize_as_nothing() {
        assert_eq!(
            serde_json::to_string(&Annotations::default()).unwrap(),
            "{}"
        );
        let a: Annotations = serde_json::from_str("{}").unwrap();
        assert!(a.is_empty());
    }
}
