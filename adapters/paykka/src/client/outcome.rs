//! From one HTTP exchange to a [`GatewayOutcome`] (codes.md §2–§5), as pure
//! functions so every row of the table is unit-tested without a network.
//!
//! | What happened | mutating call | read |
//! | --- | --- | --- |
//! | connect / DNS / TLS failure (nothing sent) | `Retryable` | `Retryable` |
//! | timeout or reset after sending | `Unknown` | `Retryable` |
//! | HTTP 429 | `Retryable` | `Retryable` |
//! | HTTP 5xx | `Unknown` | `Retryable` |
//! | response signature fails in enforce mode | `Unknown` | `Retryable` |
//! | body unparseable (or `000000` without readable `data`) | `Unknown` | `Retryable` |
//! | 4xx without a readable `ret_code` | `Rejected` (400 → request, 401/403/404 → config) | same |
//! | `ret_code` | [`classify`] | [`classify`] |
//!
//! `000000` is `Success(data)` whatever `data.status` says: a decline inside
//! a 200 (`status FAILURE`, `error_code 2099`) is read by the engine from the
//! data (engine gateway module docs).

use payorch_engine::gateway::{GatewayOutcome, OutcomeClass, RejectionClass, classify};
use serde::de::DeserializeOwned;

use super::config::Operation;

/// The result of one HTTP attempt after classification.
#[derive(Debug)]
pub(crate) enum Verdict<T> {
    /// Final for this attempt.
    Done(GatewayOutcome<T>),
    /// `206004` / `2001`: PayKKa refused a stale timestamp, nothing
    /// happened; re-sign with a fresh timestamp and send once more.
    RetryOnce {
        /// The code PayKKa sent.
        code: String,
        /// Its message.
        message: String,
    },
}

/// `Unknown` for a mutating call, `Retryable` for a read: the answer was
/// lost or cannot be trusted.
pub(crate) fn lost<T>(op: Operation, reason: impl Into<String>) -> GatewayOutcome<T> {
    let reason = reason.into();
    if op.is_mutating() {
        GatewayOutcome::Unknown { reason }
    } else {
        GatewayOutcome::Retryable { reason }
    }
}

#[derive(serde::Deserialize)]
struct RawEnvelope {
    ret_code: serde_json::Value,
    #[serde(default)]
    ret_msg: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Classifies an HTTP answer (status + raw body) of `op`.
pub(crate) fn classify_answer<T: DeserializeOwned>(
    op: Operation,
    status: u16,
    body: &[u8],
) -> Verdict<T> {
    use GatewayOutcome as G;
    if status == 429 {
        return Verdict::Done(G::Retryable {
            reason: "HTTP 429 rate limited".into(),
        });
    }
    if status >= 500 {
        return Verdict::Done(lost(op, format!("HTTP {status} from PayKKa")));
    }
    if !(200..300).contains(&status) && !(400..500).contains(&status) {
        return Verdict::Done(lost(op, format!("unexpected HTTP {status}")));
    }
    let envelope: Option<RawEnvelope> = serde_json::from_slice(body).ok();
    let is_4xx = (400..500).contains(&status);
    let Some(envelope) = envelope else {
        if is_4xx {
            return Verdict::Done(rejected_by_status(status, "body without a ret_code".into()));
        }
        return Verdict::Done(lost(op, format!("HTTP {status} with an unparseable body")));
    };
    let ret_code = text(&envelope.ret_code);
    let ret_msg = envelope.ret_msg.as_ref().map(text).unwrap_or_default();
    let class = classify(&ret_code, op.is_mutating());
    if is_4xx && class == OutcomeClass::Ok {
        // A 4xx that claims success: trust the status, nothing was done.
        return Verdict::Done(rejected_by_status(status, ret_msg));
    }
    match class {
        OutcomeClass::Ok => {
            let data = if op.has_no_data() {
                serde_json::Value::Null
            } else {
                match envelope.data {
                    Some(d) if !d.is_null() => d,
                    _ => {
                        return Verdict::Done(lost(op, "ret_code 000000 without data"));
                    }
                }
            };
            match serde_json::from_value::<T>(data) {
                Ok(t) => Verdict::Done(G::Success(t)),
                Err(e) => Verdict::Done(lost(
                    op,
                    format!("ret_code 000000 with unreadable data: {e}"),
                )),
            }
        }
        OutcomeClass::FinalDecline => Verdict::Done(G::Declined {
            code: ret_code,
            description: ret_msg,
        }),
        OutcomeClass::Rejected(class) => Verdict::Done(G::Rejected {
            class,
            code: ret_code,
            description: ret_msg,
        }),
        OutcomeClass::RetryBackoff => Verdict::Done(G::Retryable {
            reason: format!("ret_code {ret_code}: {ret_msg}"),
        }),
        OutcomeClass::UnknownQuery => Verdict::Done(G::Unknown {
            reason: format!("ret_code {ret_code}: {ret_msg}"),
        }),
        OutcomeClass::RetryOnce => Verdict::RetryOnce {
            code: ret_code,
            message: ret_msg,
        },
    }
}

/// A 4xx whose body says nothing usable (codes.md §2): 400 is our request,
/// 401/403/404 configuration (keys, permission, path).
fn rejected_by_status<T>(status: u16, description: String) -> GatewayOutcome<T> {
    let class = match status {
        401 | 403 | 404 => RejectionClass::Config,
        _ => RejectionClass::Request,
    };
    GatewayOutcome::Rejected {
        class,
        code: format!("HTTP{status}"),
        description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payorch_schemas::paykka::PaymentResponse;

    fn done<T: std::fmt::Debug>(v: Verdict<T>) -> GatewayOutcome<T> {
        match v {
            Verdict::Done(o) => o,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    #[test]
    fn status_rows() {
        let o: GatewayOutcome<PaymentResponse> =
            done(classify_answer(Operation::Initiate, 429, b""));
        assert_eq!(o.kind(), "retryable");
        let o: GatewayOutcome<PaymentResponse> =
            done(classify_answer(Operation::Initiate, 500, b"{}"));
        assert_eq!(o.kind(), "unknown");
        let o: GatewayOutcome<PaymentResponse> = done(classify_answer(Operation::Query, 503, b""));
        assert_eq!(o.kind(), "retryable");
        let o: GatewayOutcome<PaymentResponse> =
            done(classify_answer(Operation::Capture, 200, b"<html>"));
        assert_eq!(o.kind(), "unknown");
        let o: GatewayOutcome<PaymentResponse> =
            done(classify_answer(Operation::Query, 200, b"<html>"));
        assert_eq!(o.kind(), "retryable");
        let o: GatewayOutcome<PaymentResponse> =
            done(classify_answer(Operation::Query, 404, b"not found"));
        assert!(matches!(
            o,
            GatewayOutcome::Rejected {
                class: RejectionClass::Config,
                ..
            }
        ));
        let o: GatewayOutcome<PaymentResponse> = done(classify_answer(Operation::Refund, 400, b""));
        assert!(matches!(
            o,
            GatewayOutcome::Rejected {
                class: RejectionClass::Request,
                ..
            }
        ));
    }

    #[test]
    fn ret_code_rows() {
        let body = br#"{"ret_code":"000000","ret_msg":"Success","data":{"status":"FAILURE","error_code":"2099","error_description":"Invalid Card"}}"#;
        match done(classify_answer::<PaymentResponse>(
            Operation::Initiate,
            200,
            body,
        )) {
            GatewayOutcome::Success(r) => assert_eq!(r.error_code.as_deref(), Some("2099")),
            other => panic!("{other:?}"),
        }
        let body = br#"{"ret_code":"206022","ret_msg":"Card not supported"}"#;
        assert_eq!(
            done(classify_answer::<PaymentResponse>(
                Operation::Initiate,
                200,
                body
            )),
            GatewayOutcome::Declined {
                code: "206022".into(),
                description: "Card not supported".into()
            }
        );
        let body = br#"{"ret_code":"206003","ret_msg":"Signature error"}"#;
        assert!(matches!(
            done(classify_answer::<PaymentResponse>(
                Operation::Initiate,
                401,
                body
            )),
            GatewayOutcome::Rejected {
                class: RejectionClass::Config,
                ..
            }
        ));
        let body = br#"{"ret_code":"999999","ret_msg":"System exception"}"#;
        assert_eq!(
            done(classify_answer::<PaymentResponse>(
                Operation::Capture,
                200,
                body
            ))
            .kind(),
            "unknown"
        );
        assert_eq!(
            done(classify_answer::<PaymentResponse>(
                Operation::Query,
                200,
                body
            ))
            .kind(),
            "retryable"
        );
        let body = br#"{"ret_code":"206004","ret_msg":"Signature expired"}"#;
        assert!(matches!(
            classify_answer::<PaymentResponse>(Operation::Refund, 200, body),
            Verdict::RetryOnce { .. }
        ));
        let body = br#"{"ret_code":"206024","ret_msg":"the order doesn't exist"}"#;
        assert!(matches!(
            done(classify_answer::<PaymentResponse>(
                Operation::Query,
                200,
                body
            )),
            GatewayOutcome::Rejected {
                class: RejectionClass::NotFound,
                ..
            }
        ));
        // Success without data on an operation that has data: unknown.
        let body = br#"{"ret_code":"000000","ret_msg":"Success"}"#;
        assert_eq!(
            done(classify_answer::<PaymentResponse>(
                Operation::Initiate,
                200,
                body
            ))
            .kind(),
            "unknown"
        );
        // ... but fine for token remove.
        assert_eq!(
            done(classify_answer::<()>(Operation::TokenRemove, 200, body)),
            GatewayOutcome::Success(())
        );
        // A 4xx claiming success is still a rejection.
        assert!(matches!(
            done(classify_answer::<()>(Operation::TokenRemove, 403, body)),
            GatewayOutcome::Rejected {
                class: RejectionClass::Config,
                ..
            }
        ));
    }
}
