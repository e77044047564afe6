//! From one HTTP exchange to a [`GatewayOutcome`] (codes.md §2–§5), as pure
//! functions so every row of the table is unit-tested without a network.
//!
//! | What happened | mutating call | read |
//! | --- | --- | --- |
//! | connect / DNS / TLS failure (nothing sent) | `NotSent` | `NotSent` |
//! | timeout or reset after sending | `Unknown` | `Retryable` |
//! | HTTP 429 | `Retryable` | `Retryable` |
//! | HTTP 5xx | `Unknown` | `Retryable` |
//! | response signature fails in enforce mode | `Unknown` | `Retryable` |
//! | body unparseable (or `000000` without readable `data`) | `Unknown` | `Retryable` |
//! | 4xx without a readable `ret_code` | `Rejected` (400 → request, 401/403/404 → config) | same |
//! | `ret_code` | [`classify_code`] | [`classify_code`] |
//!
//! `000000` is `Success(data)` whatever `data.status` says: a decline inside
//! a 200 (`status FAILURE`, `error_code 2099`) is read by the engine from the
//! data (engine gateway module docs).

use payorch_engine::gateway::{GatewayOutcome, OutcomeClass, RejectionClass};
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
    let class = classify_code(&ret_code, op.is_mutating());
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

/// The class of a body `ret_code`, exactly as codes.md's tables say. The
/// envelope code is looked up in **both** tables (codes.md §1: PayKKa's own
/// non-200 example carries the 4-digit transaction code `1004` in
/// `ret_code`), and an HTTP status echoed as `ret_code` (the gateway's
/// `{"ret_code":"404"}`) is classed like the status (§2).
///
/// | codes | class |
/// | --- | --- |
/// | `000000`, `0000` | OK |
/// | `999999`, `500` | UNKNOWN_QUERY (mutating) / RETRY_BACKOFF (read) |
/// | `429` | RETRY_BACKOFF |
/// | `206004`, `2001` | RETRY_ONCE |
/// | `206020`, `206021`, `2003`–`2005` | NEED_NEW_CARD_DATA |
/// | `206024`, `206011` | NOT_FOUND |
/// | `206022`, `2006`, `2017`, `2099`, other `20xx` above `2018` (issuer declines, §4) | FINAL_DECLINE |
/// | `2060xx` (`206001`–`206008`, `206017`, unknown), `210001`, `1000`–`1999`, `2000`, `401`, `403`, `404` | FINAL_CONFIG |
/// | `010000`, `210002`, `210003`, other `2100xx`, `2002`, `2007`–`2016`, `2018`, `400`, anything else | FINAL_REQUEST |
pub(crate) fn classify_code(ret_code: &str, mutating: bool) -> OutcomeClass {
    use OutcomeClass as C;
    use RejectionClass as R;
    let code = ret_code.trim();
    let four_digit = code.len() == 4 && code.bytes().all(|b| b.is_ascii_digit());
    match code {
        "000000" | "0000" => C::Ok,
        "999999" | "500" if mutating => C::UnknownQuery,
        "999999" | "500" | "429" => C::RetryBackoff,
        "206004" | "2001" => C::RetryOnce,
        "206020" | "206021" | "2003" | "2004" | "2005" => C::Rejected(R::NeedNewCardData),
        "206024" | "206011" => C::Rejected(R::NotFound),
        "206022" | "2006" | "2017" | "2099" => C::FinalDecline,
        "2000" | "210001" | "401" | "403" | "404" => C::Rejected(R::Config),
        "2002" | "2007" | "2008" | "2009" | "2010" | "2011" | "2012" | "2013" | "2014" | "2015"
        | "2016" | "2018" => C::Rejected(R::Request),
        c if c.starts_with("2060") && c.len() == 6 => C::Rejected(R::Config),
        c if four_digit && c.starts_with('1') => C::Rejected(R::Config),
        // §4: codes above 2018 were not captured; they are issuer declines
        // (insufficient funds, do-not-honour, fraud, 3DS failure, ...).
        c if four_digit && c.starts_with("20") && c > "2018" => C::FinalDecline,
        _ => C::Rejected(R::Request),
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

    /// Every code of codes.md §2–§4 with the class its table gives (a
    /// `ret_code` carrying a transaction code is looked up in §4, §1).
    /// `(code, class for a mutating call, class for a read)`.
    const CODES_MD: &[(&str, &str, &str)] = &[
        // §2 HTTP statuses echoed as a body ret_code.
        ("400", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("401", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("403", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("404", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("429", "RETRY_BACKOFF", "RETRY_BACKOFF"),
        ("500", "UNKNOWN_QUERY", "RETRY_BACKOFF"),
        // §3 system response codes.
        ("000000", "OK", "OK"),
        ("999999", "UNKNOWN_QUERY", "RETRY_BACKOFF"),
        ("010000", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("206001", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("206002", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("206003", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("206004", "RETRY_ONCE", "RETRY_ONCE"),
        ("206005", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("206006", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("206007", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("206008", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("206011", "NOT_FOUND", "NOT_FOUND"),
        ("206017", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("206020", "NEED_NEW_CARD_DATA", "NEED_NEW_CARD_DATA"),
        ("206021", "NEED_NEW_CARD_DATA", "NEED_NEW_CARD_DATA"),
        ("206022", "FINAL_DECLINE", "FINAL_DECLINE"),
        ("206024", "NOT_FOUND", "NOT_FOUND"),
        ("210001", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("210002", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("210003", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("210004", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("210099", "FINAL_REQUEST", "FINAL_REQUEST"),
        // §4 transaction error codes.
        ("0000", "OK", "OK"),
        ("1000", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1001", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1002", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1003", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1004", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1005", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1006", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1007", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1008", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1009", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1010", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1011", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1012", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1013", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1014", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1015", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1016", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1017", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1018", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1019", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1020", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1021", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("1022", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("2000", "FINAL_CONFIG", "FINAL_CONFIG"),
        ("2001", "RETRY_ONCE", "RETRY_ONCE"),
        ("2002", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2003", "NEED_NEW_CARD_DATA", "NEED_NEW_CARD_DATA"),
        ("2004", "NEED_NEW_CARD_DATA", "NEED_NEW_CARD_DATA"),
        ("2005", "NEED_NEW_CARD_DATA", "NEED_NEW_CARD_DATA"),
        ("2006", "FINAL_DECLINE", "FINAL_DECLINE"),
        ("2007", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2008", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2009", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2010", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2011", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2012", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2013", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2014", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2015", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2016", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2017", "FINAL_DECLINE", "FINAL_DECLINE"),
        ("2018", "FINAL_REQUEST", "FINAL_REQUEST"),
        ("2051", "FINAL_DECLINE", "FINAL_DECLINE"),
        ("2099", "FINAL_DECLINE", "FINAL_DECLINE"),
    ];

    fn class_name(c: OutcomeClass) -> &'static str {
        match c {
            OutcomeClass::Ok => "OK",
            OutcomeClass::FinalDecline => "FINAL_DECLINE",
            OutcomeClass::Rejected(r) => r.as_str(),
            OutcomeClass::RetryBackoff => "RETRY_BACKOFF",
            OutcomeClass::RetryOnce => "RETRY_ONCE",
            OutcomeClass::UnknownQuery => "UNKNOWN_QUERY",
        }
    }

    #[test]
    fn every_code_of_codes_md_gets_its_tables_class() {
        let mut wrong = Vec::new();
        for &(code, mutating, read) in CODES_MD {
            for (is_mutating, want) in [(true, mutating), (false, read)] {
                let got = class_name(classify_code(code, is_mutating));
                if got != want {
                    wrong.push(format!(
                        "{code} (mutating {is_mutating}): {got}, want {want}"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    /// The table's classes reach the caller as the matching outcome, over
    /// the whole answer path (status 200 and the code's own 4xx status).
    #[test]
    fn every_code_of_codes_md_becomes_the_right_outcome() {
        for &(code, mutating, _) in CODES_MD {
            let body = format!(r#"{{"ret_code":"{code}","ret_msg":"m"}}"#);
            let v = classify_answer::<PaymentResponse>(Operation::Capture, 200, body.as_bytes());
            let kind = match v {
                Verdict::RetryOnce { .. } => "RETRY_ONCE".to_owned(),
                Verdict::Done(GatewayOutcome::Success(_)) => "OK".to_owned(),
                Verdict::Done(GatewayOutcome::Declined { .. }) => "FINAL_DECLINE".to_owned(),
                Verdict::Done(GatewayOutcome::Rejected { class, .. }) => class.as_str().to_owned(),
                Verdict::Done(GatewayOutcome::Retryable { .. }) => "RETRY_BACKOFF".to_owned(),
                // A success code without data is an unreadable success:
                // Unknown, never a failure.
                Verdict::Done(GatewayOutcome::Unknown { .. }) if mutating == "OK" => {
                    "OK".to_owned()
                }
                Verdict::Done(GatewayOutcome::Unknown { .. }) => "UNKNOWN_QUERY".to_owned(),
                // Only a transport failure is "not sent", never an answer.
                Verdict::Done(GatewayOutcome::NotSent { .. }) => "NOT_SENT".to_owned(),
            };
            assert_eq!(kind, mutating, "ret_code {code}");
        }
    }

    #[test]
    fn body_ret_codes_401_403_404_are_configuration_errors_even_in_a_200() {
        for code in ["401", "403", "404"] {
            let body = format!(r#"{{"ret_code":"{code}","ret_msg":"x"}}"#);
            assert!(matches!(
                done(classify_answer::<PaymentResponse>(
                    Operation::Initiate,
                    200,
                    body.as_bytes()
                )),
                GatewayOutcome::Rejected {
                    class: RejectionClass::Config,
                    ..
                }
            ));
        }
        for code in ["2017", "2099"] {
            let body = format!(r#"{{"ret_code":"{code}","ret_msg":"x"}}"#);
            assert!(matches!(
                done(classify_answer::<PaymentResponse>(
                    Operation::Initiate,
                    400,
                    body.as_bytes()
                )),
                GatewayOutcome::Declined { .. }
            ));
        }
    }

    /// PayKKa's own v1.0 example answers with `merchant_id` as a JSON
    /// number: a success, not an unreadable (Unknown) answer.
    #[test]
    fn an_answer_with_integer_ids_and_nulls_is_a_success() {
        let body = br#"{"ret_code":"000000","ret_msg":"Success","data":{
            "merchant_id":18356675194960,"timestamp":1733455355000,"trans_id":37,
            "order_id":"GW1","status":"SUCCESS","amount":"1299","currency":"EUR",
            "session_id":null,"balances":{"captured_amount":1299,"voided_amount":null},
            "something_new":true}}"#;
        match done(classify_answer::<PaymentResponse>(
            Operation::Capture,
            200,
            body,
        )) {
            GatewayOutcome::Success(r) => {
                assert_eq!(r.merchant_id.as_deref(), Some("18356675194960"));
                assert_eq!(r.trans_id.as_deref(), Some("37"));
                assert_eq!(r.extra["something_new"], serde_json::json!(true));
            }
            other => panic!("{other:?}"),
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
