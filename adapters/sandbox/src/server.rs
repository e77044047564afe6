//! The HTTP side: routing, request authentication (version, merchant,
//! signature, timestamp window), body limits, typed parsing and validation,
//! response signing, answer-side faults, and the tiny 3DS / hosted checkout
//! pages.
//!
//! Authentication order, each failure leaving the ledger untouched:
//! body size (413) → JSON object with `merchant_id` and integer `timestamp`
//! (400 `010000`) → version (401 `206001`) → merchant (401 `206005`) →
//! `type: RSA256` and `signature` present (401 `206002`) → signature decodes
//! and verifies (401 `206003`) → timestamp window (401 `206004`) → typed
//! parse and `validate()` (400 `010000`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use payorch_schemas::paykka::Validate;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::{BehaviourConfig, FaultConfig, SandboxDialect};
use crate::crypto::{MerchantKey, PlatformKey, decode_signature_header, string_to_sign};
use crate::error::SandboxError;
use crate::ids::IdGen;
use crate::ledger::MerchantLedger;
use crate::notify::{Notifier, Rng};
use crate::ops::{self, Answer, Ctx, TickScope, now_ms};
use crate::outcomes::MagicAmount;

/// The twelve v1.2 operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Initiate,
    Query,
    Capture,
    Void,
    TokenQuery,
    TokenRemove,
    RecurringCancel,
    ApplePaySession,
    SessionCreate,
    SessionQuery,
    Refund,
    RefundQuery,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the handlers, the ticker and the test hooks.
pub(crate) struct Shared {
    pub dialect: SandboxDialect,
    pub faults: FaultConfig,
    pub behaviour: BehaviourConfig,
    pub default_notify_url: Option<String>,
    pub merchants: HashMap<String, MerchantKey>,
    pub platform: PlatformKey,
    pub ledger: Mutex<BTreeMap<String, MerchantLedger>>,
    pub ids: IdGen,
    pub notifier: Arc<Notifier>,
    /// `http://127.0.0.1:PORT`.
    pub host_url: String,
    pub error_rng: Mutex<Rng>,
}

impl Shared {
    /// Runs `f` on one merchant's ledger under the lock and queues the
    /// notifications it produced (still under the lock, so queue order is
    /// commit order).
    pub(crate) fn with_ledger<R>(&self, merchant_id: &str, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        self.with_ledger_late(merchant_id, Rolled::default(), f)
    }

    /// [`Self::with_ledger`] with the late-answer fault rolled (or not) for
    /// this request.
    pub(crate) fn with_ledger_late<R>(
        &self,
        merchant_id: &str,
        rolled: Rolled,
        f: impl FnOnce(&mut Ctx<'_>) -> R,
    ) -> R {
        let mut out = Vec::new();
        let mut books = lock(&self.ledger);
        let ledger = books.entry(merchant_id.to_owned()).or_default();
        let mut ctx = Ctx {
            ledger,
            merchant_id,
            ids: &self.ids,
            now: OffsetDateTime::now_utc(),
            host_url: &self.host_url,
            behaviour: &self.behaviour,
            default_notify_url: self.default_notify_url.as_deref(),
            out: &mut out,
            late_forced: rolled.late,
            decline_forced: rolled.decline,
            late_answer: self.faults.late_answer,
            notify_hold: std::time::Duration::ZERO,
        };
        let r = f(&mut ctx);
        let hold = ctx.notify_hold;
        for o in out {
            self.notifier.send(o, hold);
        }
        r
    }

    /// Runs due (or forced) background work for every merchant.
    pub(crate) fn tick(&self, scope: TickScope) -> usize {
        let merchants: Vec<String> = lock(&self.ledger).keys().cloned().collect();
        merchants
            .iter()
            .map(|m| self.with_ledger(m, |ctx| ops::tick(ctx, scope)))
            .sum()
    }

    /// The merchant whose ledger holds `order_id`.
    pub(crate) fn merchant_of_order(&self, order_id: &str) -> Option<String> {
        lock(&self.ledger)
            .iter()
            .find(|(_, l)| l.orders.contains_key(order_id))
            .map(|(m, _)| m.clone())
    }

    pub(crate) fn merchant_of_session(&self, session_id: &str) -> Option<String> {
        lock(&self.ledger)
            .iter()
            .find(|(_, l)| l.sessions.contains_key(session_id))
            .map(|(m, _)| m.clone())
    }
}

/// Faults rolled for one request before it runs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rolled {
    /// Late-answer fault (initiate, capture, refund).
    pub late: bool,
    /// Random decline (initiate).
    pub decline: bool,
}

/// Builds the router; fails when two operations share a path.
pub(crate) fn router(shared: Arc<Shared>) -> Result<Router, SandboxError> {
    let d = &shared.dialect;
    let p = &d.paths;
    let table = [
        (Op::Initiate, &p.initiate),
        (Op::Query, &p.query),
        (Op::Capture, &p.capture),
        (Op::Void, &p.void),
        (Op::TokenQuery, &p.token_query),
        (Op::TokenRemove, &p.token_remove),
        (Op::RecurringCancel, &p.recurring_cancel),
        (Op::ApplePaySession, &p.apple_pay_session),
        (Op::SessionCreate, &p.session_create),
        (Op::SessionQuery, &p.session_query),
        (Op::Refund, &p.refund),
        (Op::RefundQuery, &p.refund_query),
    ];
    let mut seen = std::collections::HashSet::new();
    let mut router = Router::new();
    for (op, path) in table {
        let full = format!("{}{}", d.prefix.trim_end_matches('/'), path);
        if !full.starts_with('/') || !seen.insert(full.clone()) {
            return Err(SandboxError::BadConfig(format!(
                "operation path {full:?} is not absolute or used twice"
            )));
        }
        router = router.route(
            &full,
            post(
                move |State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body| async move {
                    api(s, op, headers, body).await
                },
            ),
        );
    }
    let router = router
        .route(
            "/sandbox/3ds/{order_id}",
            get(challenge_page).post(challenge_submit),
        )
        .route(
            "/sandbox/checkout/{session_id}",
            get(checkout_page).post(checkout_submit),
        )
        .route("/sandbox/orders/{order_id}/expire", post(expire_submit))
        .fallback(|| async {
            envelope_response(
                StatusCode::NOT_FOUND,
                "404",
                "Not Found: no such operation path",
            )
        })
        .with_state(shared);
    Ok(router)
}

fn envelope_response(status: StatusCode, ret_code: &str, ret_msg: &str) -> Response {
    let body = serde_json::json!({ "ret_code": ret_code, "ret_msg": ret_msg }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The ids an answer is signed with when it has no `data` object.
struct RequestIds {
    merchant_id: String,
    timestamp: i64,
}

async fn api(shared: Arc<Shared>, op: Op, headers: HeaderMap, body: Body) -> Response {
    if !shared.faults.extra_latency.is_zero() {
        tokio::time::sleep(shared.faults.extra_latency).await;
    }
    let bytes = match axum::body::to_bytes(body, shared.dialect.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return reply(
                &shared,
                None,
                Answer::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "010000",
                    format!(
                        "request body larger than {} bytes",
                        shared.dialect.max_body_bytes
                    ),
                ),
            );
        }
    };
    let (ids, answer) = process(&shared, op, &headers, &bytes);
    let mut answer = answer;
    if answer.committed {
        if answer.magic == MagicAmount::SlowResponse {
            tokio::time::sleep(shared.faults.slow_response).await;
        }
        if answer.late {
            tokio::time::sleep(shared.faults.late_answer).await;
        }
        let random_error = lock(&shared.error_rng).chance(shared.faults.error_after_commit);
        if answer.magic == MagicAmount::ErrorAfterCommit || random_error {
            answer = Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "999999",
                "System exception",
            );
        }
    }
    reply(&shared, ids.as_ref(), answer)
}

/// Authenticates, parses, validates and executes one request.
fn process(
    shared: &Shared,
    op: Op,
    headers: &HeaderMap,
    bytes: &[u8],
) -> (Option<RequestIds>, Answer) {
    let unauthorized = |code: &str, msg: &str| Answer::error(StatusCode::UNAUTHORIZED, code, msg);
    let bad = |msg: String| Answer::error(StatusCode::BAD_REQUEST, "010000", msg);

    let json: Value = match serde_json::from_slice(bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return (
                None,
                bad("invalid request: body must be a JSON object".into()),
            );
        }
        Err(e) => return (None, bad(format!("invalid request: malformed JSON: {e}"))),
    };
    // Read liberally: a PHP client sends `merchant_id` as a JSON integer.
    let merchant_id = json.get("merchant_id").and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    });
    let timestamp = json.get("timestamp").and_then(Value::as_i64);
    let (Some(merchant_id), Some(timestamp)) = (merchant_id, timestamp) else {
        return (
            None,
            bad(
                "invalid request: merchant_id (string or integer) and timestamp (integer) are required".into(),
            ),
        );
    };
    let ids = Some(RequestIds {
        merchant_id: merchant_id.clone(),
        timestamp,
    });

    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let header_version = header_str("version");
    let body_version = json.get("version").and_then(Value::as_str);
    let version_ok = if shared.dialect.require_body_version {
        body_version == Some("v1.2") && header_version.is_none_or(|v| v == "v1.2")
    } else {
        match header_version {
            Some(v) => v == "v1.2",
            None => body_version == Some("v1.2"),
        }
    };
    if !version_ok {
        return (ids, unauthorized("206001", "Invalid API version"));
    }
    let Some(key) = shared.merchants.get(&merchant_id) else {
        return (ids, unauthorized("206005", "Merchant does not exist"));
    };
    let signature = header_str("signature").filter(|s| !s.is_empty());
    let Some(signature) = signature else {
        return (ids, unauthorized("206002", "Signature not found"));
    };
    if header_str("type").is_some_and(|t| !t.eq_ignore_ascii_case("RSA256")) {
        return (
            ids,
            unauthorized("206003", "Signature error: type must be RSA256"),
        );
    }
    let Some(raw_sig) = decode_signature_header(signature) else {
        return (ids, unauthorized("206003", "Signature error: not base64"));
    };
    if !key.verify(&string_to_sign(&merchant_id, timestamp, bytes), &raw_sig) {
        return (ids, unauthorized("206003", "Signature error"));
    }
    let now = now_ms(OffsetDateTime::now_utc());
    // Saturating: a hostile timestamp (i64::MIN) must not overflow.
    if now.saturating_sub(timestamp).saturating_abs() > shared.dialect.timestamp_window_ms {
        return (ids, unauthorized("206004", "Signature expired"));
    }

    let mutating = matches!(
        op,
        Op::Initiate
            | Op::Capture
            | Op::Void
            | Op::Refund
            | Op::TokenRemove
            | Op::RecurringCancel
            | Op::SessionCreate
    );
    let (error_before, late, decline) = {
        let mut rng = lock(&shared.error_rng);
        let f = &shared.faults;
        // Rolled only for mutating calls, always all three (one fault does
        // not shift the others' sequence).
        if mutating {
            (
                rng.chance(f.error_before_commit),
                rng.chance(f.late_answer_probability),
                rng.chance(f.decline_probability),
            )
        } else {
            (false, false, false)
        }
    };
    if error_before {
        return (
            ids,
            Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "999999",
                "System exception",
            ),
        );
    }
    // The late-answer fault applies to initiate, capture and refund; the
    // random decline to initiate.
    let rolled = Rolled {
        late: late && matches!(op, Op::Initiate | Op::Capture | Op::Refund),
        decline: decline && op == Op::Initiate,
    };
    let no = Rolled::default();
    let m = merchant_id.as_str();
    let answer = match op {
        Op::Initiate => run(shared, m, bytes, rolled, ops::initiate),
        Op::Query => run(shared, m, bytes, no, ops::query),
        Op::Capture => run(shared, m, bytes, rolled, ops::capture),
        Op::Void => run(shared, m, bytes, no, ops::void),
        Op::TokenQuery => run(shared, m, bytes, no, ops::token_query),
        Op::TokenRemove => run(shared, m, bytes, no, ops::token_remove),
        Op::RecurringCancel => run(shared, m, bytes, no, ops::recurring_cancel),
        Op::ApplePaySession => run(shared, m, bytes, no, ops::apple_pay_session),
        Op::SessionCreate => run(shared, m, bytes, no, ops::session_create),
        Op::SessionQuery => run(shared, m, bytes, no, ops::session_query),
        Op::Refund => run(shared, m, bytes, rolled, ops::refund),
        Op::RefundQuery => run(shared, m, bytes, no, ops::refund_query),
    };
    (ids, answer)
}

/// Typed parse + `validate()`, then the operation under the ledger lock.
fn run<T: DeserializeOwned + Validate>(
    shared: &Shared,
    merchant_id: &str,
    bytes: &[u8],
    rolled: Rolled,
    f: impl FnOnce(&mut Ctx<'_>, &T) -> Answer,
) -> Answer {
    let req: T = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                "010000",
                format!("invalid request: {e}"),
            );
        }
    };
    if let Err(e) = req.validate() {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "010000",
            format!("invalid request: {e}"),
        );
    }
    shared.with_ledger_late(merchant_id, rolled, |ctx| f(ctx, &req))
}

/// Serializes the envelope once, signs those bytes, sends those bytes.
///
/// With a `data` object, `merchant_id` and a fresh `timestamp` are put
/// inside `data` and signed; otherwise the request's `merchant_id` and
/// `timestamp` are signed (unsigned when the request had none).
fn reply(shared: &Shared, ids: Option<&RequestIds>, answer: Answer) -> Response {
    let mut env = serde_json::Map::new();
    env.insert("ret_code".into(), Value::String(answer.ret_code));
    env.insert("ret_msg".into(), Value::String(answer.ret_msg));
    let mut sign_with: Option<(String, i64)> = ids.map(|i| (i.merchant_id.clone(), i.timestamp));
    if let Some(mut data) = answer.data {
        if let (Value::Object(map), Some(ids)) = (&mut data, ids) {
            let ts = now_ms(OffsetDateTime::now_utc());
            map.insert("merchant_id".into(), Value::String(ids.merchant_id.clone()));
            map.insert("timestamp".into(), Value::from(ts));
            sign_with = Some((ids.merchant_id.clone(), ts));
        }
        env.insert("data".into(), data);
    }
    let body = Value::Object(env).to_string().into_bytes();
    let mut resp = (answer.status, body.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("type", HeaderValue::from_static("RSA256"));
    h.insert("version", HeaderValue::from_static("v1.2"));
    if let Some((m, ts)) = sign_with {
        let sig = shared.platform.sign_header(&m, ts, &body);
        if let Ok(v) = HeaderValue::from_str(&sig) {
            h.insert("signature", v);
        }
    }
    resp
}

#[derive(serde::Deserialize)]
struct ResultParam {
    result: Option<String>,
}

async fn challenge_page(Path(order_id): Path<String>) -> Html<String> {
    let id = html_escape(&order_id);
    Html(format!(
        "<!doctype html><html><head><title>PayKKa sandbox 3DS</title></head><body>\
         <h1>3-D Secure challenge</h1><p>Order {id}</p>\
         <form method=\"post\" action=\"/sandbox/3ds/{id}?result=success\"><button>Authenticate</button></form>\
         <form method=\"post\" action=\"/sandbox/3ds/{id}?result=failure\"><button>Fail</button></form>\
         </body></html>"
    ))
}

async fn challenge_submit(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
    Query(q): Query<ResultParam>,
) -> Response {
    let success = match q.result.as_deref() {
        Some("success") | None => true,
        Some("failure") => false,
        Some(_) => {
            return (StatusCode::BAD_REQUEST, "result must be success or failure").into_response();
        }
    };
    let Some(merchant) = shared.merchant_of_order(&order_id) else {
        return (StatusCode::NOT_FOUND, "unknown order").into_response();
    };
    match shared.with_ledger(&merchant, |ctx| {
        ops::complete_challenge(ctx, &order_id, success).map(|()| {
            ctx.ledger
                .orders
                .get(&order_id)
                .and_then(|o| o.return_url.clone())
        })
    }) {
        // flows.md §2: PayKKa ends the challenge with a redirect to
        // `return_url` (a UX event: the merchant must still query).
        Ok(Some(return_url)) => back_to(&headers, &return_url, "3DS done"),
        Ok(None) => Html(format!(
            "<!doctype html><p>3DS {} for order {}</p>",
            if success { "completed" } else { "failed" },
            html_escape(&order_id)
        ))
        .into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct CardParam {
    card: Option<String>,
}

async fn checkout_page(Path(session_id): Path<String>) -> Html<String> {
    let id = html_escape(&session_id);
    Html(format!(
        "<!doctype html><html><head><title>PayKKa sandbox checkout</title></head><body>\
         <h1>Checkout {id}</h1>\
         <form method=\"post\" action=\"/sandbox/checkout/{id}\">\
         <input name=\"card\" value=\"4111111111111111\"><button>Pay</button></form>\
         </body></html>"
    ))
}

async fn checkout_submit(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(session_id): Path<String>,
    Query(q): Query<CardParam>,
    body: axum::body::Bytes,
) -> Response {
    // The card comes from the query (`?card=`) or a form body `card=...`.
    let from_form = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| b.split('&').find_map(|kv| kv.strip_prefix("card=")))
        .map(str::to_owned);
    let card = q
        .card
        .or(from_form)
        .unwrap_or_else(|| "4111111111111111".into());
    let Some(merchant) = shared.merchant_of_session(&session_id) else {
        return (StatusCode::NOT_FOUND, "unknown session").into_response();
    };
    match shared.with_ledger(&merchant, |ctx| {
        ops::pay_session(ctx, &session_id, card.trim()).map(|order_id| {
            let back = ctx
                .ledger
                .sessions
                .get(&session_id)
                .and_then(|s| s.return_url.clone());
            (order_id, back)
        })
    }) {
        // flows.md §4: the hosted page ends with a redirect to `return_url`.
        Ok((_, Some(return_url))) => back_to(&headers, &return_url, "Paid"),
        Ok((order_id, None)) => Html(format!(
            "<!doctype html><p>Paid: order {}</p>",
            html_escape(&order_id)
        ))
        .into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

/// `POST /sandbox/orders/{order_id}/expire`: the authorisation expires
/// (release mode `on_expiry`; works in every mode). Answers
/// `{"order_id", "released"}` or 404 / 409 with the reason.
async fn expire_submit(
    State(shared): State<Arc<Shared>>,
    Path(order_id): Path<String>,
) -> Response {
    let Some(merchant) = shared.merchant_of_order(&order_id) else {
        return (StatusCode::NOT_FOUND, "unknown order").into_response();
    };
    match shared.with_ledger(&merchant, |ctx| ops::expire_authorisation(ctx, &order_id)) {
        Ok(released) => axum::Json(serde_json::json!({
            "order_id": order_id,
            "released": released,
        }))
        .into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

/// The end of a shopper page: back to the merchant's `return_url`. A
/// browser (`Accept: text/html`) gets `303 See Other`; any other caller (a
/// test, a script) gets a 200 page that redirects with `<meta refresh>` and
/// names the URL in a `Refresh` header, so it need not resolve the
/// merchant's host.
fn back_to(headers: &HeaderMap, return_url: &str, what: &str) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        return Redirect::to(return_url).into_response();
    }
    let url = html_escape(return_url);
    let mut resp = Html(format!(
        "<!doctype html><html><head><meta http-equiv=\"refresh\" content=\"0;url={url}\"></head>\
         <body><p>{what}; returning to <a href=\"{url}\">{url}</a></p></body></html>"
    ))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("0;url={return_url}")) {
        resp.headers_mut().insert(header::REFRESH, v);
    }
    resp
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}
