//! Which `merchant_id` and `timestamp` PayKKa signs on its responses and
//! notifications. Not documented; this is the authentication.md §5
//! hypothesis [INFERRED]:
//!
//! * notifications: the top-level `merchant_id` and `timestamp` body fields;
//! * responses: `data.merchant_id` and `data.timestamp`, falling back to the
//!   values we sent in the request.
//!
//! Both values are accepted as JSON strings or numbers (digits only).

use serde::Deserialize;
use serde_json::Value;

/// Where a candidate's merchant id and timestamp came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldSource {
    /// Top-level fields of a notification body.
    NotificationBody,
    /// `data.merchant_id` / `data.timestamp` of a response.
    ResponseData,
    /// The merchant id / timestamp we sent (response fallback), possibly mixed
    /// with one value from `data` when only one was present.
    SentRequest,
}

/// The merchant id and timestamp to rebuild PayKKa's string to sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedFields {
    /// Merchant id as it appears in the body.
    pub merchant_id: String,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// Where the values came from.
    pub source: FieldSource,
}

/// Why the signed fields could not be extracted from a body. The message
/// cannot be verified; treat it as untrusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldsError {
    /// The body is not a JSON object.
    #[error("body is not a JSON object: {reason}")]
    InvalidJson {
        /// The parser's complaint.
        reason: String,
    },
    /// A required field is absent.
    #[error("body has no {field} field")]
    Missing {
        /// The field name.
        field: &'static str,
    },
    /// A field has an unusable type or value.
    #[error("body field {field} is not a {expected}")]
    WrongType {
        /// The field name.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
    },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    merchant_id: Option<Value>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    data: Option<Value>,
}

fn parse(raw_body: &[u8]) -> Result<Envelope, FieldsError> {
    serde_json::from_slice(raw_body).map_err(|e| FieldsError::InvalidJson {
        reason: e.to_string(),
    })
}

fn merchant_id(value: &Value) -> Result<String, FieldsError> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        _ => Err(FieldsError::WrongType {
            field: "merchant_id",
            expected: "non-empty string",
        }),
    }
}

fn timestamp(value: &Value) -> Result<u64, FieldsError> {
    let wrong = FieldsError::WrongType {
        field: "timestamp",
        expected: "millisecond integer",
    };
    match value {
        Value::Number(n) => n.as_u64().ok_or(wrong),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map_err(|_| wrong)
        }
        _ => Err(wrong),
    }
}

/// The merchant id and timestamp of a notification body (top-level fields).
pub fn notification_signed_fields(raw_body: &[u8]) -> Result<SignedFields, FieldsError> {
    let env = parse(raw_body)?;
    let mid = env.merchant_id.as_ref().ok_or(FieldsError::Missing {
        field: "merchant_id",
    })?;
    let ts = env
        .timestamp
        .as_ref()
        .ok_or(FieldsError::Missing { field: "timestamp" })?;
    Ok(SignedFields {
        merchant_id: merchant_id(mid)?,
        timestamp: timestamp(ts)?,
        source: FieldSource::NotificationBody,
    })
}

/// Candidate (merchant id, timestamp) pairs for a response, most likely
/// first: `data.*` (if usable), then the values we sent. Never empty.
/// An unparseable body yields only the sent values.
pub fn response_signed_fields(
    raw_body: &[u8],
    sent_merchant_id: &str,
    sent_timestamp: u64,
) -> Vec<SignedFields> {
    let sent = SignedFields {
        merchant_id: sent_merchant_id.to_owned(),
        timestamp: sent_timestamp,
        source: FieldSource::SentRequest,
    };
    let data = parse(raw_body).ok().and_then(|env| env.data);
    let Some(Value::Object(data)) = data else {
        return vec![sent];
    };
    let mid = data.get("merchant_id").and_then(|v| merchant_id(v).ok());
    let ts = data.get("timestamp").and_then(|v| timestamp(v).ok());
    let mut out = Vec::with_capacity(2);
    match (mid, ts) {
        (Some(m), Some(t)) => out.push(SignedFields {
            merchant_id: m,
            timestamp: t,
            source: FieldSource::ResponseData,
        }),
        (None, Some(t)) => out.push(SignedFields {
            merchant_id: sent_merchant_id.to_owned(),
            timestamp: t,
            source: FieldSource::SentRequest,
        }),
        (Some(m), None) => out.push(SignedFields {
            merchant_id: m,
            timestamp: sent_timestamp,
            source: FieldSource::SentRequest,
        }),
        (None, None) => {}
    }
    if !out
        .iter()
        .any(|c| c.merchant_id == sent.merchant_id && c.timestamp == sent.timestamp)
    {
        out.push(sent);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_fields_number_or_string() {
        let f = notification_signed_fields(
            br#"{"merchant_id":"18356675194960","timestamp":1700805506000,"status":"SUCCESS"}"#,
        )
        .unwrap();
        assert_eq!(f.merchant_id, "18356675194960");
        assert_eq!(f.timestamp, 1_700_805_506_000);
        assert_eq!(f.source, FieldSource::NotificationBody);
        let f = notification_signed_fields(br#"{"merchant_id":"m","timestamp":"1700805506000"}"#)
            .unwrap();
        assert_eq!(f.timestamp, 1_700_805_506_000);
    }

    #[test]
    fn notification_fields_errors() {
        assert_eq!(
            notification_signed_fields(br#"{"timestamp":1}"#),
            Err(FieldsError::Missing {
                field: "merchant_id"
            })
        );
        assert_eq!(
            notification_signed_fields(br#"{"merchant_id":"m"}"#),
            Err(FieldsError::Missing { field: "timestamp" })
        );
        assert!(matches!(
            notification_signed_fields(br#"{"merchant_id":"m","timestamp":-5}"#),
            Err(FieldsError::WrongType {
                field: "timestamp",
                ..
            })
        ));
        assert!(matches!(
            notification_signed_fields(b"not json"),
            Err(FieldsError::InvalidJson { .. })
        ));
    }

    #[test]
    fn response_candidates() {
        let body = br#"{"ret_code":"000000","ret_msg":"Success","data":{"merchant_id":"m1","timestamp":1700805506000}}"#;
        let c = response_signed_fields(body, "m1", 42);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].source, FieldSource::ResponseData);
        assert_eq!(c[0].timestamp, 1_700_805_506_000);
        assert_eq!(c[1].timestamp, 42);

        let c =
            response_signed_fields(br#"{"ret_code":"000000","data":{"timestamp":7}}"#, "m1", 42);
        assert_eq!(c[0].merchant_id, "m1");
        assert_eq!(c[0].timestamp, 7);
        assert_eq!(c[1].timestamp, 42);

        let c = response_signed_fields(br#"{"ret_code":"206003"}"#, "m1", 42);
        assert_eq!(
            c,
            vec![SignedFields {
                merchant_id: "m1".into(),
                timestamp: 42,
                source: FieldSource::SentRequest
            }]
        );
    }
}
