//! Request extractors with the API's JSON errors: the JSON body (size
//! limit -> 413, malformed -> 400 naming the problem) and the
//! `Idempotency-Key` header (required on every POST).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// The header carrying the idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Parses a JSON body. A type or value error names the field path
/// (`amount.minor`) and never echoes the offending value: a card number
/// sent as a JSON number must not come back in the error (or reach a log).
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = redact_digit_runs(&e.path().to_string());
        json_error(&path, &e.into_inner())
    })?;
    // Trailing characters after the value are a syntax error too.
    de.end().map_err(|e| json_error("", &e))?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            let problem = describe_data_error(e);
            if path.is_empty() || path == "." {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_field",
                    format!("request body: {problem}"),
                )
            } else {
                ApiError::invalid_field(path, problem)
            }
        }
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "request body is not valid JSON: {}",
                redact_digit_runs(&e.to_string())
            ),
        ),
    }
}

/// A serde data error without the offending value and without the
/// line/column (the field path says where): `invalid type: integer
/// `4111111111111111`, expected a string` becomes `invalid type: integer,
/// expected a string`.
pub(crate) fn describe_data_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let msg = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => full.as_str(),
    };
    let without_value = ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|prefix| {
            let rest = msg.strip_prefix(prefix)?;
            let (unexpected, expected) = rest.split_once(", expected ")?;
            // "integer `1`", "string \"x\"", "floating point `1.5`", "map"...
            let kind: String = unexpected
                .split(['`', '"'])
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            Some(format!("{prefix}{kind}, expected {expected}"))
        })
        .unwrap_or_else(|| msg.to_owned());
    redact_digit_runs(&without_value)
}

/// Replaces every run of six or more digits (a card number, wherever it
/// shows up: a field name, a syntax error's context) with `[redacted]`.
pub(crate) fn redact_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 6 {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "request body exceeds {} bytes",
                    state.config().max_body_bytes
                ),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("request body could not be read: {}", e.body_text()),
            )
        }
    })
}

/// A required JSON body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "request body is empty; a JSON object is required",
            ));
        }
        parse(&bytes).map(ApiJson)
    }
}

/// An optional JSON body: empty means `T::default()`.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse(&bytes).map(OptionalJson)
    }
}

/// The `Idempotency-Key` header: 1-255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(IDEMPOTENCY_HEADER) else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_idempotency_key",
                "header `Idempotency-Key` is required on every POST; send a unique value per operation and reuse it on retries",
            ));
        };
        let key = v
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty()
                    && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                    && k.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_idempotency_key",
                    format!(
                        "header `Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                    ),
                )
            })?;
        Ok(IdempotencyKey(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(json: &str) -> ApiError {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Amount {
            minor: i64,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Body {
            amount: Amount,
            number: String,
        }
        parse::<Body>(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_type_error_names_the_field_path_not_a_line() {
        let e = err_of(r#"{"amount":{"minor":"12"},"number":"x"}"#);
        assert_eq!(e.param.as_deref(), Some("amount.minor"));
        assert!(!e.message.contains("line"), "{}", e.message);
    }

    #[test]
    fn a_card_number_sent_as_a_number_is_not_echoed() {
        let e = err_of(r#"{"amount":{"minor":1},"number":4111111111111111}"#);
        assert_eq!(e.param.as_deref(), Some("number"));
        assert!(!e.message.contains("4111"), "{}", e.message);
        assert!(e.message.contains("invalid type: integer"), "{}", e.message);
        let e = err_of(r#"{"amount":{"minor":1},"number":4111111111111111.5}"#);
        assert!(!e.message.contains("4111"), "{}", e.message);
    }

    #[test]
    fn digit_runs_are_redacted_short_numbers_kept() {
        assert_eq!(
            redact_digit_runs("card 4111111111111111 at column 23"),
            "card [redacted] at column 23"
        );
        assert_eq!(redact_digit_runs("123456"), "[redacted]");
        assert_eq!(redact_digit_runs("12345"), "12345");
    }

    #[test]
    fn trailing_garbage_is_malformed_json() {
        let e = err_of(r#"{"amount":{"minor":1},"number":"x"} 4111111111111111"#);
        assert_eq!(e.code, "malformed_json");
        assert!(!e.message.contains("4111"), "{}", e.message);
    }
}
