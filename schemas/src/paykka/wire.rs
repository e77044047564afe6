//! Small wire-level helpers shared by every PayKKa DTO.
//!
//! * [`amount`] / [`opt_amount`]: serde adapters for integer fields that
//!   PayKKa's request examples sometimes send as strings (`"300"`) and its
//!   responses as integers (README §5 "Amounts"). Parsing accepts both;
//!   serializing always writes a JSON integer.
//! * [`PaykkaDateTime`]: a date-time kept as the exact text PayKKa sent,
//!   parsed on demand (README §5 "Date-times", models.md §15).
//! * [`normalize_timestamp_ms`]: notification timestamps come in seconds or
//!   milliseconds (models.md §15).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Visitor turning a JSON integer, an integral float or a decimal-digit
/// string into an `i64`.
struct LenientI64;

impl<'de> Visitor<'de> for LenientI64 {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a string holding an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("integer {v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // A PHP client may send 1299.0; a real fraction is a bug we refuse.
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            Ok(v as i64)
        } else {
            Err(E::custom(format!(
                "{v} is not a whole number of minor units"
            )))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        let t = v.trim();
        let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom(format!("{v:?} is not an integer")));
        }
        t.parse::<i64>()
            .map_err(|_| E::custom(format!("{v:?} is out of range")))
    }
}

/// Serde adapter for a required integer that may arrive as a string.
///
/// Use with `#[serde(with = "wire::amount")]`.
pub mod amount {
    use super::*;

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(LenientI64)
    }
}

/// Serde adapter for an optional integer that may arrive as a string.
///
/// Use with `#[serde(default, with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]`.
pub mod opt_amount {
    use super::*;

    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null, an integer or a string holding an integer")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(LenientI64).map(Some)
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_i64(*v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_option(OptVisitor)
    }
}

/// Deserializes a string field that a client may send as a bare JSON
/// number (one PayKKa client version sent `trans_id` as an integer,
/// README §5 "Identifiers"). Serializing stays a string.
///
/// Use with `#[serde(deserialize_with = "wire::string_or_number")]`.
pub fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an integer")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V)
}

/// [`string_or_number`] for an optional field: `null` or absent is `None`.
///
/// Use with `#[serde(default, deserialize_with = "wire::opt_string_or_number")]`.
pub fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null, a string or an integer")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            string_or_number(d).map(Some)
        }
    }
    d.deserialize_option(V)
}

/// Timestamps below this are taken as seconds, at or above as milliseconds
/// (models.md §15: "< 10^11 ⇒ seconds"; 10^11 s is the year 5138).
pub const SECONDS_THRESHOLD: i64 = 100_000_000_000;

/// Normalises an epoch timestamp that may be in seconds or milliseconds to
/// milliseconds (models.md §15). Saturates instead of overflowing.
pub fn normalize_timestamp_ms(raw: i64) -> i64 {
    if raw.abs() < SECONDS_THRESHOLD {
        raw.saturating_mul(1000)
    } else {
        raw
    }
}

/// PayKKa's local time (Hong Kong, +08:00): the offset of a date-time sent
/// without one (\[INFERRED\]; the sandbox makes it a setting).
pub const PAYKKA_LOCAL_OFFSET: UtcOffset = time::macros::offset!(+8);

/// A date-time text from or for PayKKa could not be understood.
/// Means: the counterpart sent a shape we do not know; keep the raw text and
/// report it, do not retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not an ISO-8601 date-time (e.g. 2025-05-05T17:17:24+08:00, or 2025-05-05 17:17:24 in PayKKa local time)"
)]
pub struct DateTimeError {
    /// The text that failed to parse.
    pub text: String,
}

/// A PayKKa date-time (`pay_finish_time`, `expire_time`, `delivery_date`, ...)
/// kept as the original text.
///
/// PayKKa uses three shapes (README §5): `2025-05-05T17:17:24+08:00`,
/// `2023-11-24T11:34:37+0800` and `2019-08-24T14:15:22.123Z`. The text is
/// stored verbatim and re-serialized unchanged (so a signed body or a stored
/// notification is reproduced byte for byte); [`PaykkaDateTime::parse`]
/// turns it into an [`OffsetDateTime`] on demand and
/// [`PaykkaDateTime::from_datetime`] emits the `+08:00` style.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PaykkaDateTime(String);

impl PaykkaDateTime {
    /// Wraps a text as is; nothing is checked until [`Self::parse`].
    pub fn new(text: impl Into<String>) -> Self {
        PaykkaDateTime(text.into())
    }

    /// Formats `dt` as `YYYY-MM-DDTHH:MM:SS+hh:mm` (whole seconds, the style
    /// PayKKa's own examples use; UTC is written `+00:00`).
    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        let fmt = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
        );
        // Formatting with a fixed description only fails for years outside
        // 0..=9999, which `time` cannot represent without a feature we do not
        // enable; fall back to RFC 3339 to stay total.
        let text = dt
            .format(&fmt)
            .or_else(|_| dt.format(&Rfc3339))
            .unwrap_or_default();
        PaykkaDateTime(text)
    }

    /// The original text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text; accepts RFC 3339 (`+08:00`, `Z`, fractions), the
    /// colon-less offset `+0800` with optional fractions, and a time
    /// **without** offset (`2026-12-06 12:02:35`, `2026-12-06T12:02:35`,
    /// what a real PHP client sends) read as PayKKa local time
    /// [`PAYKKA_LOCAL_OFFSET`] (+08:00). Use [`Self::parse_with_local_offset`]
    /// where that offset is a setting.
    pub fn parse(&self) -> Result<OffsetDateTime, DateTimeError> {
        self.parse_with_local_offset(PAYKKA_LOCAL_OFFSET)
    }

    /// [`Self::parse`] with `local` as the offset of an offset-less time.
    pub fn parse_with_local_offset(
        &self,
        local: UtcOffset,
    ) -> Result<OffsetDateTime, DateTimeError> {
        let t = self.0.trim();
        if let Ok(dt) = OffsetDateTime::parse(t, &Rfc3339) {
            return Ok(dt);
        }
        let no_colon = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory][offset_minute]"
        );
        if let Ok(dt) = OffsetDateTime::parse(t, &no_colon) {
            return Ok(dt);
        }
        let local_t = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        let local_space = format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        PrimitiveDateTime::parse(t, &local_t)
            .or_else(|_| PrimitiveDateTime::parse(t, &local_space))
            .map(|dt| dt.assume_offset(local))
            .map_err(|_| DateTimeError {
                text: self.0.clone(),
            })
    }
}

impl fmt::Debug for PaykkaDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaykkaDateTime({})", self.0)
    }
}

impl fmt::Display for PaykkaDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<OffsetDateTime> for PaykkaDateTime {
    fn from(dt: OffsetDateTime) -> Self {
        PaykkaDateTime::from_datetime(dt)
    }
}

impl From<&str> for PaykkaDateTime {
    fn from(s: &str) -> Self {
        PaykkaDateTime::new(s)
    }
}

impl Serialize for PaykkaDateTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PaykkaDateTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(PaykkaDateTime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn three_documented_shapes_parse_to_the_same_instant_kind() {
        let a = PaykkaDateTime::new("2025-05-05T17:17:24+08:00")
            .parse()
            .unwrap();
        assert_eq!(a, datetime!(2025-05-05 09:17:24 UTC));
        let b = PaykkaDateTime::new("2023-11-24T11:34:37+0800")
            .parse()
            .unwrap();
        assert_eq!(b, datetime!(2023-11-24 03:34:37 UTC));
        let c = PaykkaDateTime::new("2019-08-24T14:15:22.123Z")
            .parse()
            .unwrap();
        assert_eq!(c, datetime!(2019-08-24 14:15:22.123 UTC));
        let d = PaykkaDateTime::new("2023-11-24T11:34:37.5-0330")
            .parse()
            .unwrap();
        assert_eq!(d, datetime!(2023-11-24 15:04:37.5 UTC));
    }

    #[test]
    fn bad_shapes_are_errors_naming_the_text() {
        for t in ["2024-01-01 08:00", "yesterday", "", "2024-13-01T00:00:00Z"] {
            let err = PaykkaDateTime::new(t).parse().unwrap_err();
            assert_eq!(err.text, t);
        }
    }

    #[test]
    fn offset_less_times_are_paykka_local_time() {
        for t in ["2026-12-06 12:02:35", "2026-12-06T12:02:35"] {
            assert_eq!(
                PaykkaDateTime::new(t).parse().unwrap(),
                datetime!(2026-12-06 04:02:35 UTC),
                "{t}"
            );
        }
        assert_eq!(
            PaykkaDateTime::new("2026-12-06 12:02:35.5")
                .parse_with_local_offset(UtcOffset::UTC)
                .unwrap(),
            datetime!(2026-12-06 12:02:35.5 UTC)
        );
        // The text itself is kept verbatim.
        let kept: PaykkaDateTime = serde_json::from_str("\"2026-12-06 12:02:35\"").unwrap();
        assert_eq!(
            serde_json::to_string(&kept).unwrap(),
            "\"2026-12-06 12:02:35\""
        );
    }

    #[test]
    fn emits_colon_offset_style() {
        let dt = datetime!(2025-05-05 17:17:24.987 +08:00);
        assert_eq!(
            PaykkaDateTime::from_datetime(dt).as_str(),
            "2025-05-05T17:17:24+08:00"
        );
        let utc = datetime!(2025-05-05 09:17:24 UTC);
        assert_eq!(
            PaykkaDateTime::from(utc).as_str(),
            "2025-05-05T09:17:24+00:00"
        );
    }

    #[test]
    fn timestamps_in_seconds_become_ms() {
        assert_eq!(normalize_timestamp_ms(1_659_999_999), 1_659_999_999_000);
        assert_eq!(normalize_timestamp_ms(1_704_067_260_000), 1_704_067_260_000);
        assert_eq!(normalize_timestamp_ms(i64::MAX / 2), i64::MAX / 2);
    }
}
