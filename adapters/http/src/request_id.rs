//! Request ids (`X-Request-Id`).
//!
//! Every request gets one: the caller's `X-Request-Id` when it is 1 to
//! [`MAX_LEN`] visible ASCII characters, else a fresh UUID v7. The id is
//!
//! * echoed in the `X-Request-Id` response header of every response;
//! * a field (`request_id`) of the `request` tracing span that wraps the
//!   whole request, so every log line of the request carries it;
//! * added as `request_id` to every JSON error body
//!   (`{"error":{"type","code","message","param","request_id"}}`), whatever
//!   produced the error (handler, extractor, fallback, idempotent replay);
//! * the engine's correlation id ([`correlation_id`], used by the handlers'
//!   `CommandContext` and the PayKKa notification handlers), so the events
//!   a request records name it in `metadata.correlation_id`. The correlation
//!   id is a UUID: the header itself when it parses as one, else a fresh
//!   UUID v7 (the header text stays in the span and the error bodies).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

/// The header name.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted caller-supplied id; a longer one is replaced.
pub const MAX_LEN: usize = 128;

/// Largest error body the middleware rewrites to add `request_id` (error
/// bodies are small; a larger one is passed through untouched).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The id of the request being served (also a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// The id as echoed and logged.
    pub text: String,
    /// The engine correlation id derived from it.
    pub correlation_id: Uuid,
}

impl RequestId {
    /// From the request headers: the caller's id when acceptable, else a
    /// generated one.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Self {
        let given = headers
            .get(&HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| acceptable(s));
        match given {
            Some(text) => RequestId {
                text: text.to_owned(),
                correlation_id: Uuid::parse_str(text).unwrap_or_else(|_| Uuid::now_v7()),
            },
            None => {
                let id = Uuid::now_v7();
                RequestId {
                    text: id.to_string(),
                    correlation_id: id,
                }
            }
        }
    }
}

fn acceptable(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LEN && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The request id of the request this task serves, if any.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The correlation id for the engine: the current request's, or a fresh
/// UUID v7 outside a request.
pub fn correlation_id() -> Uuid {
    CURRENT
        .try_with(|r| r.correlation_id)
        .unwrap_or_else(|_| Uuid::now_v7())
}

/// The middleware (outermost layer of [`crate::router`]).
pub async fn middleware(mut req: Request, next: Next) -> Response {
    let rid = RequestId::from_headers(req.headers());
    req.extensions_mut().insert(rid.clone());
    let span = tracing::info_span!(
        "request",
        request_id = rid.text.as_str(),
        method = req.method().as_str(),
        path = req.uri().path(),
    );
    let resp = CURRENT
        .scope(rid.clone(), next.run(req).instrument(span))
        .await;
    finish(resp, &rid).await
}

async fn finish(resp: Response, rid: &RequestId) -> Response {
    let mut resp = if resp.status().as_u16() >= 400 && is_json(&resp) {
        with_request_id_in_body(resp, &rid.text).await
    } else {
        resp
    };
    if let Ok(v) = HeaderValue::from_str(&rid.text) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Adds `error.request_id` to a JSON error body `{"error":{...}}`; other
/// bodies pass unchanged.
async fn with_request_id_in_body(resp: Response, id: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "error body not readable; answered without it");
            return Response::from_parts(parts, Body::empty());
        }
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    let Some(error) = value.get_mut("error").and_then(|e| e.as_object_mut()) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    error.insert("request_id".into(), serde_json::Value::from(id));
    let text = value.to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn a_uuid_header_is_the_correlation_id() {
        let id = "0192f0a4-7d2e-7c3b-9a55-5d1f8f6a0b11";
        let r = RequestId::from_headers(&with(id));
        assert_eq!(r.text, id);
        assert_eq!(r.correlation_id.to_string(), id);
    }

    #[test]
    fn other_text_is_kept_and_a_correlation_id_generated() {
        let r = RequestId::from_headers(&with("req_abc-123"));
        assert_eq!(r.text, "req_abc-123");
        assert_eq!(r.correlation_id.get_version_num(), 7);
    }

    #[test]
    fn missing_empty_or_too_long_ids_are_replaced() {
        for h in [HeaderMap::new(), with(" "), with(&"x".repeat(MAX_LEN + 1))] {
            let r = RequestId::from_headers(&h);
            assert_eq!(r.text, r.correlation_id.to_string());
        }
        let r = RequestId::from_headers(&with(&"x".repeat(MAX_LEN)));
        assert_eq!(r.text.len(), MAX_LEN);
    }

    #[test]
    fn outside_a_request_there_is_none() {
        assert!(current().is_none());
        assert_eq!(correlation_id().get_version_num(), 7);
    }
}
