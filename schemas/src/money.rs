//! Money in ISO 4217 minor units.
//!
//! PayKKa sends and receives integer amounts in the currency's minor unit
//! (cents for EUR, whole yen for JPY, fils for KWD). [`Money`] keeps that
//! integer and the [`Currency`], whose exponent comes from the ISO 4217 table
//! below. Conversions to and from decimals go through `rust_decimal`, never
//! floats, and refuse an amount with more decimals than the currency has.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What went wrong with an amount or currency. All variants mean "fix the
/// input"; none is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The text is not three ASCII letters.
    #[error("currency {0:?} is not a three-letter ISO 4217 code")]
    MalformedCurrency(String),
    /// Three letters, but not a code in payorch's ISO 4217 table.
    #[error("currency {0:?} is not in the ISO 4217 table")]
    UnknownCurrency(String),
    /// The decimal amount has more fraction digits than the currency allows.
    #[error("amount {amount} has {scale} decimals but {currency} allows {exponent}")]
    TooManyDecimals {
        amount: Decimal,
        currency: Currency,
        scale: u32,
        exponent: u32,
    },
    /// The amount does not fit in an i64 count of minor units.
    #[error("amount {0} is out of range")]
    OutOfRange(String),
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    /// A text amount could not be parsed as a decimal number.
    #[error("amount {0:?} is not a decimal number")]
    MalformedAmount(String),
}

/// ISO 4217 alpha-3 code with its minor-unit exponent. Copy, 4 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// ISO 4217 active codes and their exponents (minor units). Codes with no
/// minor unit ("N.A." in ISO, e.g. XAU) are left out: they are not payment
/// currencies.
#[rustfmt::skip]
const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("ANG", 2), ("AOA", 2), ("ARS", 2),
    ("AUD", 2), ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2),
    ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BRL", 2), ("BSD", 2),
    ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2), ("CHF", 2),
    ("CLF", 4), ("CLP", 0), ("CNY", 2), ("COP", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2),
    ("CZK", 2), ("DJF", 0), ("DKK", 2), ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2),
    ("ETB", 2), ("EUR", 2), ("FJD", 2), ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2),
    ("GIP", 2), ("GMD", 2), ("GNF", 0), ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2),
    ("HTG", 2), ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2), ("IQD", 3), ("IRR", 2),
    ("ISK", 0), ("JMD", 2), ("JOD", 3), ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2),
    ("KMF", 0), ("KPW", 2), ("KRW", 0), ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2),
    ("LBP", 2), ("LKR", 2), ("LRD", 2), ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2),
    ("MGA", 2), ("MKD", 2), ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2),
    ("MVR", 2), ("MWK", 2), ("MXN", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2),
    ("NIO", 2), ("NOK", 2), ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2),
    ("PGK", 2), ("PHP", 2), ("PKR", 2), ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2),
    ("RSD", 2), ("RUB", 2), ("RWF", 0), ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2),
    ("SEK", 2), ("SGD", 2), ("SHP", 2), ("SLE", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2),
    ("STN", 2), ("SVC", 2), ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2),
    ("TND", 3), ("TOP", 2), ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2),
    ("UGX", 0), ("USD", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2),
    ("VES", 2), ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XOF", 0),
    ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

/// A code's three bytes as a big-endian `u32`: sorting by it is sorting by
/// the code, so [`ISO_4217_PACKED`] is in the table's order.
const fn pack(code: [u8; 3]) -> u32 {
    ((code[0] as u32) << 16) | ((code[1] as u32) << 8) | code[2] as u32
}

/// [`ISO_4217`]'s codes packed with [`pack`], same order (sorted; checked by
/// a test), for [`Currency::new`]'s binary search.
const ISO_4217_PACKED: [u32; ISO_4217.len()] = {
    let mut packed = [0u32; ISO_4217.len()];
    let mut i = 0;
    while i < ISO_4217.len() {
        let b = ISO_4217[i].0.as_bytes();
        packed[i] = pack([b[0], b[1], b[2]]);
        i += 1;
    }
    packed
};

impl Currency {
    pub const EUR: Currency = Currency {
        code: *b"EUR",
        exponent: 2,
    };
    pub const USD: Currency = Currency {
        code: *b"USD",
        exponent: 2,
    };
    pub const GBP: Currency = Currency {
        code: *b"GBP",
        exponent: 2,
    };
    pub const HKD: Currency = Currency {
        code: *b"HKD",
        exponent: 2,
    };
    pub const CNY: Currency = Currency {
        code: *b"CNY",
        exponent: 2,
    };
    pub const JPY: Currency = Currency {
        code: *b"JPY",
        exponent: 0,
    };
    pub const KWD: Currency = Currency {
        code: *b"KWD",
        exponent: 3,
    };

    /// Parses an ISO 4217 alpha-3 code (case-insensitive, surrounding
    /// whitespace ignored).
    pub fn new(code: &str) -> Result<Self, MoneyError> {
        // Hot on every event decode: no allocation and no table scan on the
        // success path (a binary search over the packed codes).
        let bytes = code.as_bytes();
        let bytes = if bytes.len() == 3 {
            bytes
        } else {
            code.trim().as_bytes()
        };
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(MoneyError::MalformedCurrency(code.to_owned()));
        }
        let upper = [
            bytes[0].to_ascii_uppercase(),
            bytes[1].to_ascii_uppercase(),
            bytes[2].to_ascii_uppercase(),
        ];
        match ISO_4217_PACKED.binary_search(&pack(upper)) {
            Ok(i) => Ok(Currency {
                code: upper,
                exponent: ISO_4217[i].1,
            }),
            Err(_) => Err(MoneyError::UnknownCurrency(code.trim().to_owned())),
        }
    }

    /// The three upper-case letters.
    pub fn code(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Number of decimal digits of the minor unit (JPY 0, EUR 2, KWD 3).
    pub fn exponent(&self) -> u32 {
        u32::from(self.exponent)
    }

    /// Every currency payorch knows, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        ISO_4217.iter().map(|&(c, exponent)| {
            let b = c.as_bytes();
            Currency {
                code: [b[0], b[1], b[2]],
                exponent,
            }
        })
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::new(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than `String`/`Cow<str>`: the code is checked
        // straight from the input text, no allocation.
        struct CodeVisitor;
        impl serde::de::Visitor<'_> for CodeVisitor {
            type Value = Currency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 4217 currency code")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Currency, E> {
                Currency::new(v).map_err(E::custom)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Currency, E> {
                match std::str::from_utf8(v) {
                    Ok(s) => self.visit_str(s),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
                }
            }
        }
        d.deserialize_str(CodeVisitor)
    }
}

/// The serde form of [`Currency`]: the upper-case ISO 4217 alpha-3 code.
#[cfg(feature = "json-schema")]
impl schemars::JsonSchema for Currency {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Currency".into()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        "payorch_schemas::money::Currency".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Z]{3}$",
            "description": "ISO 4217 alpha-3 currency code (an active code with a minor unit), e.g. `EUR`."
        })
    }
}

/// An amount: a count of minor units of one currency.
///
/// Serialized as `{"minor": 1299, "currency": "EUR"}` in payorch's own
/// events; PayKKa DTOs carry `amount` and `currency` as separate fields.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }

    pub const fn zero(currency: Currency) -> Self {
        Money { minor: 0, currency }
    }

    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    pub fn is_positive(&self) -> bool {
        self.minor > 0
    }

    /// Exact decimal value in major units (1299 EUR -> 12.99).
    pub fn to_decimal(&self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent())
    }

    /// Converts a decimal amount in major units, refusing one with more
    /// fraction digits than the currency has (12.345 EUR is an error, not a
    /// rounding). Trailing zeros are fine (12.50 JPY is not, 1250.00 JPY is).
    pub fn from_decimal(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let normalized = amount.normalize();
        let exponent = currency.exponent();
        if normalized.scale() > exponent {
            return Err(MoneyError::TooManyDecimals {
                amount,
                currency,
                scale: normalized.scale(),
                exponent,
            });
        }
        let scaled = normalized
            .checked_mul(Decimal::from(10i64.pow(exponent)))
            .ok_or_else(|| MoneyError::OutOfRange(amount.to_string()))?;
        let minor = i64::try_from(scaled.trunc())
            .map_err(|_| MoneyError::OutOfRange(amount.to_string()))?;
        Ok(Money { minor, currency })
    }

    /// Parses a decimal string in major units ("12.99") for `currency`.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let d = Decimal::from_str(text.trim())
            .map_err(|_| MoneyError::MalformedAmount(text.to_owned()))?;
        Money::from_decimal(d, currency)
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        self.minor
            .checked_add(other.minor)
            .map(|minor| Money {
                minor,
                currency: self.currency,
            })
            .ok_or_else(|| MoneyError::OutOfRange(format!("{self} + {other}")))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        self.minor
            .checked_sub(other.minor)
            .map(|minor| Money {
                minor,
                currency: self.currency,
            })
            .ok_or_else(|| MoneyError::OutOfRange(format!("{self} - {other}")))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({} {})", self.to_decimal(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exponents_follow_iso_4217() {
        for (code, exp) in [
            ("JPY", 0),
            ("KRW", 0),
            ("USD", 2),
            ("EUR", 2),
            ("CNY", 2),
            ("KWD", 3),
            ("BHD", 3),
            ("JOD", 3),
            ("OMR", 3),
            ("TND", 3),
        ] {
            assert_eq!(Currency::new(code).unwrap().exponent(), exp, "{code}");
        }
        assert_eq!(Currency::new(" eur ").unwrap(), Currency::EUR);
        assert_eq!(Currency::new("eUr").unwrap(), Currency::EUR);
        assert_eq!(Currency::new("\tjpy\n").unwrap(), Currency::JPY);
    }

    #[test]
    fn lookup_table_is_sorted_and_finds_every_code() {
        assert!(ISO_4217_PACKED.windows(2).all(|w| w[0] < w[1]));
        for (code, exp) in ISO_4217 {
            let c = Currency::new(code).unwrap();
            assert_eq!((c.code(), c.exponent()), (*code, u32::from(*exp)));
            let lower = code.to_ascii_lowercase();
            assert_eq!(Currency::new(&lower).unwrap(), c);
            let json = format!("\"{lower}\"");
            assert_eq!(serde_json::from_str::<Currency>(&json).unwrap(), c);
        }
        // Neighbours of real codes and the ends of the table are unknown.
        for code in ["AAA", "ZZZ", "EUQ", "EUS", "ZWH", "AEC"] {
            assert_eq!(
                Currency::new(code),
                Err(MoneyError::UnknownCurrency(code.into()))
            );
        }
        assert_eq!(
            Currency::new(" xyz "),
            Err(MoneyError::UnknownCurrency("xyz".into()))
        );
        for bad in ["", "E", "EURO", "EU1", "É€", "  "] {
            assert_eq!(
                Currency::new(bad),
                Err(MoneyError::MalformedCurrency(bad.into()))
            );
        }
    }

    #[test]
    fn bad_currency_codes_are_named() {
        assert_eq!(
            Currency::new("EU"),
            Err(MoneyError::MalformedCurrency("EU".into()))
        );
        assert_eq!(
            Currency::new("XYZ"),
            Err(MoneyError::UnknownCurrency("XYZ".into()))
        );
        let err = serde_json::from_str::<Currency>("\"ABC\"").unwrap_err();
        assert!(err.to_string().contains("ABC"), "{err}");
    }

    #[test]
    fn decimal_conversions_are_exact() {
        let eur = Money::parse_major("12.99", Currency::EUR).unwrap();
        assert_eq!(eur.minor, 1299);
        assert_eq!(eur.to_decimal().to_string(), "12.99");
        assert_eq!(
            Money::parse_major("1690", Currency::JPY).unwrap().minor,
            1690
        );
        assert_eq!(
            Money::parse_major("1690.00", Currency::JPY).unwrap().minor,
            1690
        );
        assert_eq!(
            Money::parse_major("1.234", Currency::KWD).unwrap().minor,
            1234
        );
        assert_eq!(Money::new(445, Currency::EUR).to_string(), "4.45 EUR");
    }

    #[test]
    fn too_many_decimals_is_an_error_not_a_rounding() {
        let err = Money::parse_major("12.345", Currency::EUR).unwrap_err();
        assert!(matches!(
            err,
            MoneyError::TooManyDecimals {
                scale: 3,
                exponent: 2,
                ..
            }
        ));
        assert!(err.to_string().contains("EUR allows 2"), "{err}");
        assert!(Money::parse_major("1.5", Currency::JPY).is_err());
        assert!(Money::parse_major("abc", Currency::JPY).is_err());
        assert!(Money::parse_major("99999999999999999999999", Currency::EUR).is_err());
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies() {
        let a = Money::new(100, Currency::EUR);
        let b = Money::new(100, Currency::USD);
        assert!(matches!(
            a.checked_add(b),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert_eq!(a.checked_sub(a).unwrap(), Money::zero(Currency::EUR));
        assert!(
            Money::new(i64::MAX, Currency::EUR)
                .checked_add(Money::new(1, Currency::EUR))
                .is_err()
        );
    }

    #[test]
    fn serde_shape() {
        let m = Money::new(1299, Currency::EUR);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"minor":1299,"currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    }

    proptest! {
        #[test]
        fn decimal_round_trip(minor in any::<i64>(), idx in 0usize..ISO_4217.len()) {
            let currency = Currency::all().nth(idx).unwrap();
            let m = Money::new(minor, currency);
            prop_assert_eq!(Money::from_decimal(m.to_decimal(), currency).unwrap(), m);
        }
    }
}
