//! Card secrets that must reach PayKKa but never a log line.
//!
//! [`CardNumber`] (PAN), [`Cvv`] and [`SecretString`] (Encrypted Card
//! payloads, wallet `token_data`, 3DS `cryptogram`) serialize their real
//! value, because the request body must carry it (endpoints.md §1), while
//! `Debug` and `Display` print a mask. Read the value with `expose()`, which
//! is easy to grep for in review. ARCHITECTURE.md §2 "No card data at rest".

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A primary account number. `Debug`/`Display` show at most the BIN and the
/// last four digits (`CardNumber(411111******1111)`), and nothing at all for
/// a value that is not 13–19 digits (a malformed value could be anything).
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    pub fn new(pan: impl Into<String>) -> Self {
        CardNumber(pan.into())
    }

    /// The real PAN. Only for building the request body.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn well_formed(&self) -> bool {
        (13..=19).contains(&self.0.len()) && self.0.bytes().all(|b| b.is_ascii_digit())
    }

    /// First six digits (the BIN events may keep), if the PAN is 13–19 digits.
    pub fn bin(&self) -> Option<&str> {
        self.well_formed().then(|| &self.0[..6])
    }

    /// Last four digits, if the PAN is 13–19 digits.
    pub fn last4(&self) -> Option<&str> {
        self.well_formed().then(|| &self.0[self.0.len() - 4..])
    }

    /// The display mask: `411111******1111`, or `****` when malformed.
    pub fn masked(&self) -> String {
        match (self.bin(), self.last4()) {
            (Some(bin), Some(last4)) => {
                format!("{bin}{}{last4}", "*".repeat(self.0.len() - 10))
            }
            _ => "****".to_owned(),
        }
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber({})", self.masked())
    }
}

impl fmt::Display for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Card verification value. `Debug` prints `Cvv(***)`, `Display` `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Cvv(String);

impl Cvv {
    pub fn new(cvv: impl Into<String>) -> Self {
        Cvv(cvv.into())
    }

    /// The real CVV. Only for building the request body.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvv(***)")
    }
}

impl fmt::Display for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Any other sensitive text: Encrypted Card values, wallet `token_data`,
/// 3DS `cryptogram`. `Debug` prints `SecretString(***)` (with the length,
/// which helps debugging without revealing content), `Display` `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The real value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes (safe to show).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretString(*** {} bytes)", self.0.len())
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

macro_rules! string_serde {
    ($($t:ident),+) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($t)
            }
        }

        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                $t(s.to_owned())
            }
        }

        impl From<String> for $t {
            fn from(s: String) -> Self {
                $t(s)
            }
        }
    )+};
}

string_serde!(CardNumber, Cvv, SecretString);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pan_mask_shows_at_most_bin_and_last4() {
        let pan = CardNumber::new("4111111111111111");
        assert_eq!(format!("{pan:?}"), "CardNumber(411111******1111)");
        assert_eq!(pan.to_string(), "411111******1111");
        assert_eq!(pan.bin(), Some("411111"));
        assert_eq!(pan.last4(), Some("1111"));
        let odd = CardNumber::new("4111 1111 1111 1111");
        assert_eq!(format!("{odd:?}"), "CardNumber(****)");
        assert_eq!(odd.bin(), None);
        assert_eq!(serde_json::to_string(&pan).unwrap(), "\"4111111111111111\"");
    }

    #[test]
    fn cvv_and_secret_strings_are_masked() {
        let cvv = Cvv::new("123");
        assert_eq!(format!("{cvv:?}"), "Cvv(***)");
        assert_eq!(cvv.to_string(), "***");
        assert_eq!(serde_json::to_string(&cvv).unwrap(), "\"123\"");
        let s = SecretString::new("eyJzZWNyZXQi");
        assert!(!format!("{s:?}").contains("eyJ"));
        assert!(!s.to_string().contains("eyJ"));
    }
}
