//! A scriptable in-memory PayKKa for engine tests.
//!
//! Without a script it behaves like a well-behaved PayKKa with its own
//! ledger: initiate authorises (`MANUAL`) or captures (`AUTOMATIC`),
//! capture/void/refund succeed, queries report the ledger. Per operation a
//! queue of [`Step`]s overrides that: return a given outcome, or process
//! the request and then lose the answer (a timeout after commit, the case
//! the reconciler exists for).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionQueryResponse, CheckoutSessionRequest, CheckoutSessionResponse, InitiateRequest,
    PaymentResponse, QueryRequest, RecurringCancelRequest, RefundQueryRequest, RefundRequest,
    RefundResponse, TokenQueryRequest, TokenQueryResponse, TokenRemoveRequest, VoidRequest,
};

use super::{GatewayOutcome, PaymentGateway, RejectionClass};
use crate::command::ReleaseMode;

/// A scripted behaviour for the next call of one operation.
#[derive(Clone, Debug)]
pub enum Step<T> {
    /// Return this outcome without touching the ledger.
    Return(GatewayOutcome<T>),
    /// Apply the request to the ledger, then answer `Unknown` (timeout).
    ProcessThenTimeout,
}

#[derive(Clone, Debug)]
struct FakeOrder {
    order_id: String,
    trans_id: String,
    amount: i64,
    currency: String,
    status: &'static str,
    captured: i64,
    refunded: i64,
    voided: i64,
    token: Option<String>,
    shopper_reference: Option<String>,
    agreement: Option<String>,
}

/// A created checkout session.
#[derive(Clone, Debug)]
struct FakeSession {
    trans_id: String,
    session_id: String,
    session_url: String,
    amount: i64,
    currency: String,
}

#[derive(Default)]
struct Inner {
    initiate: VecDeque<Step<PaymentResponse>>,
    query: VecDeque<Step<PaymentResponse>>,
    capture: VecDeque<Step<PaymentResponse>>,
    void: VecDeque<Step<PaymentResponse>>,
    refund: VecDeque<Step<RefundResponse>>,
    refund_query: VecDeque<Step<RefundResponse>>,
    session: VecDeque<Step<CheckoutSessionResponse>>,
    session_query: VecDeque<Step<CheckoutSessionQueryResponse>>,
    recurring_cancel: VecDeque<Step<()>>,
    /// How this PayKKa releases the rest of a partial capture.
    release_mode: ReleaseMode,
    /// `final_capture` of every capture request, in call order.
    final_flags: Vec<Option<bool>>,
    sessions: Vec<FakeSession>,
    orders: Vec<FakeOrder>,
    refunds: HashMap<String, (String, i64, String)>,
    calls: Vec<String>,
    seq: u64,
}

/// See the module docs.
#[derive(Default)]
pub struct FakeGateway {
    inner: Mutex<Inner>,
}

/// Which operation a script step is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Initiate,
    Query,
    Capture,
    Void,
}

impl FakeGateway {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned fake means a test already panicked; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fake PayKKa that releases the rest of a partially captured
    /// authorisation the way `mode` says (like the sandbox's
    /// `behaviour.release_mode`): on a capture's `final_capture: true`
    /// ([`ReleaseMode::CaptureFlag`], the default), on a Void after a
    /// partial capture ([`ReleaseMode::VoidAfterCapture`]), or only on
    /// [`FakeGateway::expire`] ([`ReleaseMode::OnExpiry`]). A release sets
    /// `voided_amount` to the rest and the status to `SUCCESS`.
    pub fn with_release_mode(mode: ReleaseMode) -> Self {
        let fake = Self::default();
        fake.lock().release_mode = mode;
        fake
    }

    /// The `final_capture` field of every capture request so far.
    pub fn final_capture_flags(&self) -> Vec<Option<bool>> {
        self.lock().final_flags.clone()
    }

    /// The authorisation of `trans_id` expires: an uncaptured rest of a
    /// partial capture is released (any mode). `false` if there was none.
    pub fn expire(&self, trans_id: &str) -> bool {
        let mut g = self.lock();
        match g.find(None, Some(trans_id)) {
            Some(o) if o.captured > 0 && o.captured + o.voided < o.amount => {
                release(o);
                true
            }
            _ => false,
        }
    }

    /// Captured and voided (released) amounts PayKKa holds for a trans_id.
    pub fn released(&self, trans_id: &str) -> Option<(i64, i64)> {
        let g = self.lock();
        g.orders
            .iter()
            .find(|o| o.trans_id == trans_id)
            .map(|o| (o.captured, o.voided))
    }

    /// Queues a behaviour for the next payment-operation call.
    pub fn script(&self, op: Op, step: Step<PaymentResponse>) {
        let mut g = self.lock();
        match op {
            Op::Initiate => g.initiate.push_back(step),
            Op::Query => g.query.push_back(step),
            Op::Capture => g.capture.push_back(step),
            Op::Void => g.void.push_back(step),
        }
    }

    pub fn script_refund(&self, step: Step<RefundResponse>) {
        self.lock().refund.push_back(step);
    }

    pub fn script_refund_query(&self, step: Step<RefundResponse>) {
        self.lock().refund_query.push_back(step);
    }

    pub fn script_session(&self, step: Step<CheckoutSessionResponse>) {
        self.lock().session.push_back(step);
    }

    pub fn script_session_query(&self, step: Step<CheckoutSessionQueryResponse>) {
        self.lock().session_query.push_back(step);
    }

    pub fn script_recurring_cancel(&self, step: Step<()>) {
        self.lock().recurring_cancel.push_back(step);
    }

    /// Operation names in call order (`initiate`, `capture`, ...).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Sets the status of a known order in the ledger (e.g. the shopper
    /// completed 3DS), by trans_id.
    pub fn set_status(&self, trans_id: &str, status: &'static str) {
        let mut g = self.lock();
        if let Some(o) = g.orders.iter_mut().find(|o| o.trans_id == trans_id) {
            if status == "SUCCESS" && o.captured == 0 {
                o.captured = o.amount;
            }
            o.status = status;
        }
    }

    /// The shopper pays the checkout session of `trans_id` on PayKKa's
    /// page: PayKKa now holds an order for it with `status` (`SUCCESS`:
    /// captured, `AUTHORIZED`, `PROCESSING`, `FAILURE`, ...), which Query
    /// and Checkout Session Query report. No notification is sent (the
    /// fake has none): the test delivers it, or loses it. Returns PayKKa's
    /// order id (`GW...`), or `None` without such a session.
    pub fn pay_session(&self, trans_id: &str, status: &'static str) -> Option<String> {
        let mut g = self.lock();
        let s = g.sessions.iter().find(|s| s.trans_id == trans_id)?.clone();
        g.seq += 1;
        let order_id = format!("GW{:017}", g.seq);
        g.orders.push(FakeOrder {
            order_id: order_id.clone(),
            trans_id: s.trans_id,
            amount: s.amount,
            currency: s.currency,
            status,
            captured: if status == "SUCCESS" { s.amount } else { 0 },
            refunded: 0,
            voided: 0,
            token: None,
            shopper_reference: None,
            agreement: None,
        });
        Some(order_id)
    }

    /// Captured and refunded amounts PayKKa holds for a trans_id.
    pub fn ledger(&self, trans_id: &str) -> Option<(i64, i64)> {
        let g = self.lock();
        g.orders
            .iter()
            .find(|o| o.trans_id == trans_id)
            .map(|o| (o.captured, o.refunded))
    }
}

/// Releases the uncaptured rest of a partially captured order.
fn release(o: &mut FakeOrder) {
    o.voided = o.amount - o.captured;
    o.status = "SUCCESS";
}

/// Whether more can be captured: authorised, or partially captured with
/// the rest not released.
fn capturable(o: &FakeOrder) -> bool {
    (o.status == "AUTHORIZED" || o.status == "PARTIALLY_REVERSED")
        && o.captured + o.voided < o.amount
}

fn response(o: &FakeOrder) -> PaymentResponse {
    let json = serde_json::json!({
        "trans_id": o.trans_id,
        "order_id": o.order_id,
        "status": o.status,
        "amount": o.amount,
        "currency": o.currency,
        "error_code": "0000",
        "error_description": "request success",
        "token": o.token,
        "shopper_reference": o.shopper_reference,
        "recurring_agreement_id": o.agreement,
        "card_info": {"bin": "411111", "last4": "1111", "card_brand": "VISA"},
        "balances": {
            "authed_amount": o.amount,
            "captured_amount": o.captured,
            "able_to_capture_amount": if capturable(o) { o.amount - o.captured - o.voided } else { 0 },
            "voided_amount": o.voided,
            "able_to_void_amount": if o.status == "AUTHORIZED" && o.captured == 0 { o.amount } else { 0 },
            "refunded_amount": o.refunded,
            "able_to_refund_amount": o.captured - o.refunded,
        }
    });
    serde_json::from_value(json).unwrap_or_default()
}

fn refund_response(refund_trans_id: &str, r: &(String, i64, String)) -> RefundResponse {
    let json = serde_json::json!({
        "refund_trans_id": refund_trans_id,
        "refund_order_id": r.0,
        "amount": r.1,
        "status": r.2,
        "error_code": "0000",
    });
    serde_json::from_value(json).unwrap_or_default()
}

fn not_found<T>() -> GatewayOutcome<T> {
    GatewayOutcome::Rejected {
        class: RejectionClass::NotFound,
        code: "206024".into(),
        description: "the order doesn't exist".into(),
    }
}

/// Runs the script step if any, else `process`; `ProcessThenTimeout`
/// processes and then answers Unknown.
fn run<T>(
    queue_step: Option<Step<T>>,
    process: impl FnOnce() -> GatewayOutcome<T>,
) -> GatewayOutcome<T> {
    match queue_step {
        Some(Step::Return(o)) => o,
        Some(Step::ProcessThenTimeout) => {
            let _ = process();
            GatewayOutcome::Unknown {
                reason: "timeout after PayKKa committed (scripted)".into(),
            }
        }
        None => process(),
    }
}

impl Inner {
    fn find(&mut self, order_id: Option<&str>, trans_id: Option<&str>) -> Option<&mut FakeOrder> {
        self.orders.iter_mut().find(|o| {
            order_id.is_some_and(|id| id == o.order_id) || trans_id.is_some_and(|t| t == o.trans_id)
        })
    }
}

#[async_trait]
impl PaymentGateway for FakeGateway {
    async fn initiate(&self, req: &InitiateRequest) -> GatewayOutcome<PaymentResponse> {
        let mut g = self.lock();
        g.calls.push("initiate".into());
        let step = g.initiate.pop_front();
        run(step, || {
            if let Some(o) = g.find(None, Some(&req.trans_id)) {
                return GatewayOutcome::Success(response(o)); // PayKKa: same trans_id, same order
            }
            g.seq += 1;
            let manual = matches!(
                req.capture_method,
                Some(payorch_schemas::paykka::CaptureMethod::Manual)
            );
            let store = req.payment.store_payment_method == Some(true);
            let o = FakeOrder {
                order_id: format!("GW{:017}", g.seq),
                trans_id: req.trans_id.clone(),
                amount: req.amount,
                currency: req.currency.code().to_owned(),
                status: if manual { "AUTHORIZED" } else { "SUCCESS" },
                captured: if manual { 0 } else { req.amount },
                refunded: 0,
                voided: 0,
                token: store.then(|| format!("TK{:017}", g.seq)),
                shopper_reference: req.payment.shopper_reference.clone(),
                agreement: (store && req.mit == Some(false)).then(|| format!("RA{:017}", g.seq)),
            };
            let resp = response(&o);
            g.orders.push(o);
            GatewayOutcome::Success(resp)
        })
    }

    async fn query(&self, req: &QueryRequest) -> GatewayOutcome<PaymentResponse> {
        let mut g = self.lock();
        g.calls.push("query".into());
        let step = g.query.pop_front();
        run(step, || {
            match g.find(req.order_id.as_deref(), req.trans_id.as_deref()) {
                Some(o) => GatewayOutcome::Success(response(o)),
                None => not_found(),
            }
        })
    }

    async fn capture(&self, req: &CaptureRequest) -> GatewayOutcome<PaymentResponse> {
        let mut g = self.lock();
        g.calls.push("capture".into());
        g.final_flags.push(req.final_capture);
        let step = g.capture.pop_front();
        let flag_releases =
            g.release_mode == ReleaseMode::CaptureFlag && req.final_capture == Some(true);
        run(step, || match g.find(Some(&req.order_id), None) {
            Some(o) if capturable(o) => {
                let amount = req.amount.unwrap_or(o.amount - o.captured);
                o.captured += amount;
                o.status = if o.captured >= o.amount {
                    "SUCCESS"
                } else {
                    "PARTIALLY_REVERSED"
                };
                if flag_releases && o.captured < o.amount {
                    release(o);
                }
                GatewayOutcome::Success(response(o))
            }
            Some(_) => GatewayOutcome::Rejected {
                class: RejectionClass::Request,
                code: "010000".into(),
                description: "order is not capturable".into(),
            },
            None => not_found(),
        })
    }

    async fn void(&self, req: &VoidRequest) -> GatewayOutcome<PaymentResponse> {
        let mut g = self.lock();
        g.calls.push("void".into());
        let step = g.void.pop_front();
        let void_releases = g.release_mode == ReleaseMode::VoidAfterCapture;
        run(step, || match g.find(Some(&req.order_id), None) {
            Some(o) if o.status == "AUTHORIZED" && o.captured == 0 => {
                o.status = "CANCELED";
                o.voided = o.amount;
                GatewayOutcome::Success(response(o))
            }
            Some(o) if void_releases && o.captured > 0 && capturable(o) => {
                release(o);
                GatewayOutcome::Success(response(o))
            }
            Some(_) => GatewayOutcome::Rejected {
                class: RejectionClass::Request,
                code: "010000".into(),
                description: "order is not voidable".into(),
            },
            None => not_found(),
        })
    }

    async fn refund(&self, req: &RefundRequest) -> GatewayOutcome<RefundResponse> {
        let mut g = self.lock();
        g.calls.push("refund".into());
        let step = g.refund.pop_front();
        run(step, || {
            if let Some(r) = g.refunds.get(&req.refund_trans_id) {
                return GatewayOutcome::Success(refund_response(&req.refund_trans_id, r));
            }
            g.seq += 1;
            let seq = g.seq;
            match g.find(Some(&req.ori_order_id), None) {
                Some(o) if o.captured - o.refunded >= req.refund_amount => {
                    o.refunded += req.refund_amount;
                    o.status = if o.refunded >= o.captured {
                        "REFUNDED"
                    } else {
                        "PARTIALLY_REFUNDED"
                    };
                    let r = (
                        format!("RG{seq:017}"),
                        req.refund_amount,
                        "SUCCESS".to_owned(),
                    );
                    let resp = refund_response(&req.refund_trans_id, &r);
                    g.refunds.insert(req.refund_trans_id.clone(), r);
                    GatewayOutcome::Success(resp)
                }
                Some(_) => GatewayOutcome::Rejected {
                    class: RejectionClass::Request,
                    code: "010000".into(),
                    description: "refund exceeds refundable amount".into(),
                },
                None => not_found(),
            }
        })
    }

    async fn refund_query(&self, req: &RefundQueryRequest) -> GatewayOutcome<RefundResponse> {
        let mut g = self.lock();
        g.calls.push("refund_query".into());
        let step = g.refund_query.pop_front();
        run(step, || {
            let key = req.refund_trans_id.clone().unwrap_or_default();
            match g.refunds.get(&key) {
                Some(r) => GatewayOutcome::Success(refund_response(&key, r)),
                None => not_found(),
            }
        })
    }

    async fn token_query(&self, _req: &TokenQueryRequest) -> GatewayOutcome<TokenQueryResponse> {
        self.lock().calls.push("token_query".into());
        GatewayOutcome::Success(TokenQueryResponse::default())
    }

    async fn token_remove(&self, _req: &TokenRemoveRequest) -> GatewayOutcome<()> {
        self.lock().calls.push("token_remove".into());
        GatewayOutcome::Success(())
    }

    async fn recurring_cancel(&self, _req: &RecurringCancelRequest) -> GatewayOutcome<()> {
        let mut g = self.lock();
        g.calls.push("recurring_cancel".into());
        let step = g.recurring_cancel.pop_front();
        // Cancelling twice is fine at PayKKa too.
        run(step, || GatewayOutcome::Success(()))
    }

    async fn apple_pay_session(
        &self,
        _req: &ApplePaySessionRequest,
    ) -> GatewayOutcome<ApplePaySessionResponse> {
        self.lock().calls.push("apple_pay_session".into());
        GatewayOutcome::Success(ApplePaySessionResponse(serde_json::Value::String(
            "{\"merchantSessionIdentifier\":\"fake\"}".into(),
        )))
    }

    async fn checkout_session_create(
        &self,
        req: &CheckoutSessionRequest,
    ) -> GatewayOutcome<CheckoutSessionResponse> {
        let mut g = self.lock();
        g.calls.push("checkout_session_create".into());
        let step = g.session.pop_front();
        run(step, || {
            // One trans_id, one session: a re-send gets the same one.
            let known = g
                .sessions
                .iter()
                .find(|s| s.trans_id == req.trans_id)
                .cloned();
            let s = match known {
                Some(s) => s,
                None => {
                    g.seq += 1;
                    let seq = g.seq;
                    let s = FakeSession {
                        trans_id: req.trans_id.clone(),
                        session_id: format!("CS{seq:017}"),
                        session_url: format!("https://checkout.example/{seq}"),
                        amount: req.amount,
                        currency: req.currency.code().to_owned(),
                    };
                    g.sessions.push(s.clone());
                    s
                }
            };
            let json = serde_json::json!({
                "session_id": s.session_id,
                "session_url": s.session_url,
                "trans_id": req.trans_id,
            });
            GatewayOutcome::Success(serde_json::from_value(json).unwrap_or_default())
        })
    }

    async fn checkout_session_query(
        &self,
        req: &CheckoutSessionQueryRequest,
    ) -> GatewayOutcome<CheckoutSessionQueryResponse> {
        let mut g = self.lock();
        g.calls.push("checkout_session_query".into());
        let step = g.session_query.pop_front();
        run(step, || {
            let found = g.sessions.iter().find(|s| {
                req.trans_id.as_deref() == Some(s.trans_id.as_str())
                    || req.session_id.as_deref() == Some(s.session_id.as_str())
            });
            match found {
                Some(s) => {
                    // The session's fields, and the transaction's once the
                    // shopper paid (empty before: no transaction exists).
                    let mut json = serde_json::json!({
                        "session_url": s.session_url,
                        "session_mode": "HOSTED",
                        "session_id": s.session_id,
                        "trans_id": s.trans_id,
                    });
                    let paid = g.orders.iter().find(|o| o.trans_id == s.trans_id);
                    if let (Some(o), Some(map)) = (paid, json.as_object_mut()) {
                        map.insert(
                            "payment".into(),
                            serde_json::json!({"payment_method": "BANKCARD"}),
                        );
                        if let Ok(serde_json::Value::Object(order)) =
                            serde_json::to_value(response(o))
                        {
                            for (k, v) in order {
                                map.entry(k).or_insert(v);
                            }
                        }
                    }
                    GatewayOutcome::Success(serde_json::from_value(json).unwrap_or_default())
                }
                None => GatewayOutcome::Rejected {
                    class: RejectionClass::NotFound,
                    code: "206011".into(),
                    description: "The session does not exist".into(),
                },
            }
        })
    }
}
