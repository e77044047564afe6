//! The twelve v1.2 operations and the test hooks, as synchronous functions
//! over one merchant's [`MerchantLedger`]. Each returns an [`Answer`] (what
//! the server signs and sends) and pushes the notifications its status
//! changes cause into [`Ctx::out`]. A rejection changes nothing.
//!
//! Rejection codes (README "Codes"): unknown order/refund → `206024`
//! (HTTP 200), unknown session → `206011` (HTTP 200), rule violations
//! (capture/refund over balance, void after capture, reused `trans_id` or
//! `refund_trans_id` with other money, currency mismatch) → `010000`
//! (HTTP 400).

use axum::http::StatusCode;
use payorch_schemas::paykka::{
    ApplePaySessionRequest, CaptureMethod, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionQueryResponse, CheckoutSessionRequest, CheckoutSessionResponse,
    GatewayOrderStatus, InitiateRequest, PaykkaDateTime, PaymentMethod, PaymentNotification,
    PaymentType, QueryRequest, RecurringCancelRequest, RefundNotification, RefundQueryRequest,
    RefundRequest, RefundStatus, TokenQueryRequest, TokenQueryResponse, TokenRemoveRequest,
    TokenUsage, VoidRequest,
};
use payorch_schemas::paykka::{AuthorisationType, PaymentInfo};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::{BehaviourConfig, RefundMode, ReleaseMode};
use crate::error::SandboxError;
use crate::ids::IdGen;
use crate::ledger::{
    MerchantLedger, OrderRecord, Pending, RefundRecord, SessionRecord, approve, decline, decline_of,
};
use crate::outcomes::{
    self, CardBehaviour, CardProfile, EncryptedCard, INVALID_CARD, MagicAmount, magic_amount,
};

/// A notification to deliver.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    Payment {
        url: String,
        body: Box<PaymentNotification>,
    },
    Refund {
        url: String,
        body: Box<RefundNotification>,
    },
}

/// What the server answers.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub ret_code: String,
    pub ret_msg: String,
    pub data: Option<Value>,
    /// The operation changed the ledger (fault injection applies only then).
    pub committed: bool,
    /// The magic amount of the committed operation.
    pub magic: MagicAmount,
    /// Late-answer fault: answer `FaultConfig::late_answer` after committing.
    pub late: bool,
}

impl Answer {
    pub(crate) fn ok(data: Option<Value>) -> Self {
        Answer {
            status: StatusCode::OK,
            ret_code: "000000".into(),
            ret_msg: "Success".into(),
            data,
            committed: false,
            magic: MagicAmount::None,
            late: false,
        }
    }

    pub(crate) fn error(status: StatusCode, ret_code: &str, ret_msg: impl Into<String>) -> Self {
        Answer {
            status,
            ret_code: ret_code.into(),
            ret_msg: ret_msg.into(),
            data: None,
            committed: false,
            magic: MagicAmount::None,
            late: false,
        }
    }

    fn invalid(msg: impl Into<String>) -> Self {
        Answer::error(StatusCode::BAD_REQUEST, "010000", msg)
    }

    fn no_order() -> Self {
        Answer::error(StatusCode::OK, "206024", "the order doesn't exist")
    }

    fn committed(mut self, magic: MagicAmount) -> Self {
        self.committed = true;
        self.magic = magic;
        self
    }
}

fn to_value<T: Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

/// Everything an operation may touch.
pub(crate) struct Ctx<'a> {
    pub ledger: &'a mut MerchantLedger,
    pub merchant_id: &'a str,
    pub ids: &'a IdGen,
    pub now: OffsetDateTime,
    /// `http://127.0.0.1:PORT` (for 3DS and checkout URLs).
    pub host_url: &'a str,
    pub behaviour: &'a BehaviourConfig,
    pub default_notify_url: Option<&'a str>,
    pub out: &'a mut Vec<Outgoing>,
    /// The late-answer fault was rolled for this request.
    pub late_forced: bool,
    /// The random-decline fault was rolled for this request.
    pub decline_forced: bool,
    /// `FaultConfig::late_answer`.
    pub late_answer: std::time::Duration,
    /// Extra wait for the notifications this operation queues (set by the
    /// late-answer fault so they cannot beat the late answer).
    pub notify_hold: std::time::Duration,
}

pub(crate) fn now_ms(now: OffsetDateTime) -> i64 {
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn after(now: OffsetDateTime, d: std::time::Duration) -> OffsetDateTime {
    now + time::Duration::try_from(d).unwrap_or(time::Duration::ZERO)
}

impl Ctx<'_> {
    /// Queues the notification for the order's current status.
    fn notify_order(&mut self, order_id: &str) {
        let Some(order) = self.ledger.orders.get(order_id) else {
            return;
        };
        let url = order
            .notify_url
            .clone()
            .or_else(|| self.default_notify_url.map(str::to_owned));
        if let (Some(url), Some(body)) =
            (url, order.notification(self.merchant_id, now_ms(self.now)))
        {
            self.out.push(Outgoing::Payment {
                url,
                body: Box::new(body),
            });
        }
    }

    fn notify_refund(&mut self, refund_order_id: &str) {
        let Some(refund) = self.ledger.refunds.get(refund_order_id) else {
            return;
        };
        let url = refund
            .notify_url
            .clone()
            .or_else(|| {
                self.ledger
                    .orders
                    .get(&refund.ori_order_id)
                    .and_then(|o| o.notify_url.clone())
            })
            .or_else(|| self.default_notify_url.map(str::to_owned));
        if let (Some(url), Some(body)) =
            (url, refund.notification(self.merchant_id, now_ms(self.now)))
        {
            self.out.push(Outgoing::Refund {
                url,
                body: Box::new(body),
            });
        }
    }

    fn order_answer(&self, order_id: &str) -> Answer {
        match self.ledger.orders.get(order_id) {
            Some(o) => Answer::ok(to_value(&o.response())),
            None => Answer::no_order(),
        }
    }

    fn challenge_url(&self, order_id: &str) -> String {
        format!("{}/sandbox/3ds/{order_id}", self.host_url)
    }

    /// Whether this operation (with this magic amount) is answered late and
    /// hidden; if so, holds its notifications back and returns until when
    /// it stays hidden.
    fn late_until(&mut self, magic: MagicAmount) -> Option<OffsetDateTime> {
        if self.late_forced || magic == MagicAmount::LateHidden {
            self.notify_hold = self.late_answer;
            Some(after(self.now, self.late_answer))
        } else {
            None
        }
    }
}

impl Answer {
    fn late(mut self, late: bool) -> Self {
        self.late = late;
        self
    }
}

/// The instrument of a new order, or a request-level rejection.
enum Instrument {
    Profile(CardProfile),
    /// A FAILURE order with this code (unknown token, agreement problems).
    Fail(&'static str, &'static str),
}

/// Everything needed to create an order (from initiate or a session).
struct NewOrder {
    trans_id: String,
    session_id: Option<String>,
    payment_type: PaymentType,
    authorisation_type: AuthorisationType,
    capture_method: CaptureMethod,
    payment_method: PaymentMethod,
    currency: String,
    amount: i64,
    notify_url: Option<String>,
    return_url: Option<String>,
    expire_time: Option<PaykkaDateTime>,
    shopper_reference: Option<String>,
    token: Option<String>,
    recurring_agreement_id: Option<String>,
    store_payment_method: bool,
    token_usage: Option<TokenUsage>,
    first_recurring: bool,
}

/// Creates the order and runs the instrument's behaviour; returns the
/// order id and whether the envelope must say `206022`.
fn create_order(ctx: &mut Ctx<'_>, new: NewOrder, instrument: Instrument) -> (String, bool) {
    let order_id = ctx.ids.next("GW");
    let profile = match &instrument {
        Instrument::Profile(p) => Some(p.clone()),
        Instrument::Fail(..) => None,
    };
    let mut order = OrderRecord {
        order_id: order_id.clone(),
        trans_id: new.trans_id,
        session_id: new.session_id,
        status: GatewayOrderStatus::Processing,
        payment_type: new.payment_type,
        authorisation_type: new.authorisation_type,
        capture_method: new.capture_method,
        payment_method: new.payment_method,
        currency: new.currency,
        amount: new.amount,
        authorised: 0,
        captured: 0,
        refunded: 0,
        voided: 0,
        refund_pending: 0,
        captures: Vec::new(),
        error_code: "0000".into(),
        error_description: "request success".into(),
        card_info: profile.as_ref().map(CardProfile::card_info),
        token: new.token,
        shopper_reference: new.shopper_reference,
        recurring_agreement_id: new.recurring_agreement_id,
        notify_url: new.notify_url,
        return_url: new.return_url,
        pending: None,
        authentication_url: None,
        pay_finish_time: None,
        expire_time: new.expire_time,
        profile: profile.clone(),
        store_payment_method: new.store_payment_method,
        token_usage: new.token_usage,
        first_recurring: new.first_recurring,
        void_releases_remainder: ctx.behaviour.release_mode == ReleaseMode::VoidAfterCapture,
    };
    let now = ctx.now;
    let mut not_supported = false;
    let mut approve_now = false;
    let mut two_step = false;
    match instrument {
        Instrument::Fail(code, text) => decline(&mut order, code, text, now),
        Instrument::Profile(p) => match p.behaviour {
            CardBehaviour::Approve => approve_now = true,
            CardBehaviour::AuthorizeThenCapture => {
                approve_now = true;
                two_step = true;
            }
            CardBehaviour::Challenge => {
                let expires_at = order
                    .expire_time
                    .as_ref()
                    .and_then(|t| t.parse_with_local_offset(ctx.behaviour.local_offset).ok())
                    .unwrap_or_else(|| after(now, ctx.behaviour.challenge_expiry));
                order.pending = Some(Pending::Challenge { expires_at });
                order.authentication_url = Some(ctx.challenge_url(&order_id));
            }
            CardBehaviour::AsyncApprove | CardBehaviour::AsyncDecline => {
                let due = ctx
                    .behaviour
                    .async_settle_after
                    .map(|d| after(now, d))
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH.replace_year(9999).unwrap_or(now));
                order.pending = Some(Pending::Async {
                    due,
                    approve: p.behaviour == CardBehaviour::AsyncApprove,
                });
            }
            b => {
                not_supported = b == CardBehaviour::NotSupported;
                let (code, text) = decline_of(b).unwrap_or(INVALID_CARD);
                decline(&mut order, code, text, now);
            }
        },
    }
    ctx.ledger.insert_order(order);
    if approve_now {
        approve(ctx.ledger, &order_id, ctx.ids, now);
    }
    if two_step
        && let Some(o) = ctx.ledger.orders.get_mut(&order_id)
        && o.capture_method == CaptureMethod::Automatic
        && o.status == GatewayOrderStatus::Success
    {
        // Show the interim AUTHORIZED state; the automatic capture follows
        // at the next settlement (`async_settle_after`).
        o.captured = 0;
        o.captures.clear();
        o.status = GatewayOrderStatus::Authorized;
        let due = ctx
            .behaviour
            .async_settle_after
            .map(|d| after(now, d))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH.replace_year(9999).unwrap_or(now));
        o.pending = Some(Pending::AutoCapture { due });
    }
    ctx.notify_order(&order_id);
    (order_id, not_supported)
}

/// Initiate transaction (endpoints.md §1).
pub(crate) fn initiate(ctx: &mut Ctx<'_>, req: &InitiateRequest) -> Answer {
    let currency = req.currency.to_string();
    if let Some(existing) = ctx.ledger.order_by_trans_id(&req.trans_id) {
        // trans_id is PayKKa's idempotency key: same money → same order.
        return if existing.amount == req.amount && existing.currency == currency {
            Answer::ok(to_value(&existing.response()))
        } else {
            Answer::invalid(format!(
                "trans_id {} was already used with another amount or currency",
                req.trans_id
            ))
        };
    }
    if ctx.ledger.session_by_trans_id(&req.trans_id).is_some() {
        return Answer::invalid(format!(
            "trans_id {} already belongs to a checkout session",
            req.trans_id
        ));
    }
    let p = &req.payment;
    let magic = magic_amount(req.amount);
    let instrument = match &p.payment_method {
        PaymentMethod::BankCard => {
            if let Some(pan) = &p.card_no {
                Instrument::Profile(outcomes::card_profile(pan.expose()))
            } else if let Some(enc) = &p.encrypted_card_no {
                match outcomes::encrypted_card(enc.expose()) {
                    EncryptedCard::Card(profile) => Instrument::Profile(profile),
                    EncryptedCard::Expired => {
                        return Answer::error(
                            StatusCode::BAD_REQUEST,
                            "206021",
                            "Card encryption information expired, please retry payment",
                        );
                    }
                    EncryptedCard::Undecryptable => {
                        return Answer::error(
                            StatusCode::BAD_REQUEST,
                            "206020",
                            "Card information decryption failed",
                        );
                    }
                }
            } else {
                let token = p.token.as_deref().unwrap_or_default();
                let shopper = p.shopper_reference.as_deref().unwrap_or_default();
                match ctx.ledger.tokens.get(token) {
                    Some(t) if t.shopper_reference == shopper => {
                        Instrument::Profile(t.profile.clone())
                    }
                    _ => Instrument::Fail(
                        "2099",
                        "Invalid Card: unknown token for this shopper_reference",
                    ),
                }
            }
        }
        m if m.is_wallet() => Instrument::Profile(outcomes::wallet_profile(
            p.token_data
                .as_ref()
                .map(|t| t.expose())
                .unwrap_or_default(),
        )),
        _ => {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                "210001",
                "Payment method not supported",
            );
        }
    };
    let subsequent = req.payment_type == PaymentType::Recurring && req.mit == Some(true);
    let instrument = if subsequent {
        let id = req.recurring_agreement_id.as_deref().unwrap_or_default();
        match ctx.ledger.agreements.get(id) {
            None => Instrument::Fail("2015", "Recurring payment agreement does not exist"),
            Some(a) if !a.active => {
                Instrument::Fail("2016", "Recurring payment agreement is not active")
            }
            Some(_) => instrument,
        }
    } else {
        instrument
    };
    if let Instrument::Profile(CardProfile {
        behaviour: CardBehaviour::Refuse(code, text),
        ..
    }) = &instrument
    {
        return Answer::error(StatusCode::BAD_REQUEST, code, *text);
    }
    let instrument = match instrument {
        Instrument::Profile(mut profile)
            if ctx.decline_forced
                && matches!(
                    profile.behaviour,
                    CardBehaviour::Approve | CardBehaviour::AuthorizeThenCapture
                ) =>
        {
            profile.behaviour = CardBehaviour::Decline(INVALID_CARD.0, INVALID_CARD.1);
            Instrument::Profile(profile)
        }
        Instrument::Profile(mut profile)
            if magic == MagicAmount::Challenge && profile.behaviour == CardBehaviour::Approve =>
        {
            profile.behaviour = CardBehaviour::Challenge;
            Instrument::Profile(profile)
        }
        other => other,
    };
    let new = NewOrder {
        trans_id: req.trans_id.clone(),
        session_id: None,
        payment_type: req.payment_type.clone(),
        authorisation_type: req
            .authorisation_type
            .clone()
            .unwrap_or(AuthorisationType::FinalAuth),
        capture_method: req
            .capture_method
            .clone()
            .unwrap_or(CaptureMethod::Automatic),
        payment_method: p.payment_method.clone(),
        currency,
        amount: req.amount,
        notify_url: req.notify_url.clone(),
        return_url: req.return_url.clone(),
        expire_time: req.expire_time.clone(),
        shopper_reference: p.shopper_reference.clone(),
        token: p.token.clone(),
        recurring_agreement_id: req.recurring_agreement_id.clone(),
        store_payment_method: p.store_payment_method == Some(true),
        token_usage: p.token_usage.clone(),
        first_recurring: req.payment_type == PaymentType::Recurring && req.mit == Some(false),
    };
    let late = ctx.late_until(magic);
    let (order_id, not_supported) = create_order(ctx, new, instrument);
    let mut answer = ctx.order_answer(&order_id).committed(magic);
    if let Some(until) = late {
        ctx.ledger.hide_order(&order_id, until, None);
        answer = answer.late(true);
    }
    if not_supported {
        answer.ret_code = "206022".into();
        answer.ret_msg = "Card not supported, please use another card".into();
    }
    answer
}

/// Query transaction (endpoints.md §2): by `order_id`, else `trans_id`,
/// else `session_id`.
pub(crate) fn query(ctx: &mut Ctx<'_>, req: &QueryRequest) -> Answer {
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let found = if let Some(id) = non_empty(&req.order_id) {
        ctx.ledger.orders.get(&id)
    } else if let Some(t) = non_empty(&req.trans_id) {
        ctx.ledger.order_by_trans_id(&t)
    } else if let Some(s) = non_empty(&req.session_id) {
        ctx.ledger
            .orders
            .values()
            .find(|o| o.session_id.as_deref() == Some(s.as_str()))
    } else {
        None
    };
    match found.and_then(|o| ctx.ledger.order_view(o, ctx.now)) {
        Some(view) => Answer::ok(to_value(&view)),
        None => Answer::no_order(),
    }
}

/// Capture (endpoints.md §3). In release mode `capture_flag`,
/// `"final_capture": true` releases the uncaptured remainder; the other
/// modes ignore the flag.
pub(crate) fn capture(ctx: &mut Ctx<'_>, req: &CaptureRequest) -> Answer {
    let final_capture =
        req.final_capture == Some(true) && ctx.behaviour.release_mode == ReleaseMode::CaptureFlag;
    let Some(order) = ctx.ledger.orders.get_mut(&req.order_id) else {
        return Answer::no_order();
    };
    if let Some(c) = &req.currency
        && c.to_string() != order.currency
    {
        return Answer::invalid(format!(
            "currency {c} differs from the order currency {}",
            order.currency
        ));
    }
    let capturable = matches!(
        order.status,
        GatewayOrderStatus::Authorized | GatewayOrderStatus::Success
    ) && order.able_to_capture() > 0;
    if !capturable {
        return Answer::invalid(format!(
            "order {} cannot be captured (status {}, able_to_capture_amount {})",
            order.order_id,
            order.status,
            order.able_to_capture()
        ));
    }
    let amount = req.amount.unwrap_or_else(|| order.able_to_capture());
    if amount > order.able_to_capture() {
        return Answer::invalid(format!(
            "capture amount {amount} exceeds able_to_capture_amount {}",
            order.able_to_capture()
        ));
    }
    let before = order.status.clone();
    let before_view = order.response();
    order.captured += amount;
    order.captures.push(amount);
    if final_capture {
        order.voided += order.able_to_capture();
    }
    order.status = order.settled_status();
    let changed = order.status != before;
    let order_id = order.order_id.clone();
    let late = ctx.late_until(magic_amount(amount));
    if changed {
        ctx.notify_order(&order_id);
    }
    let answer = ctx.order_answer(&order_id).committed(magic_amount(amount));
    match late {
        Some(until) => {
            ctx.ledger.hide_order(&order_id, until, Some(before_view));
            answer.late(true)
        }
        None => answer,
    }
}

/// Void (endpoints.md §4): `AUTHORIZED` with nothing captured →
/// `CANCELED`; after a partial capture only in release mode
/// `void_after_capture`, where it releases the remainder (status unchanged).
pub(crate) fn void(ctx: &mut Ctx<'_>, req: &VoidRequest) -> Answer {
    let Some(order) = ctx.ledger.orders.get_mut(&req.order_id) else {
        return Answer::no_order();
    };
    if order.able_to_void() == 0 {
        return Answer::invalid(format!(
            "order {} cannot be voided (status {}, captured_amount {}); refund instead",
            order.order_id, order.status, order.captured
        ));
    }
    let order_id = order.order_id.clone();
    if order.captured == 0 {
        order.voided = order.authorised;
        order.status = GatewayOrderStatus::Canceled;
        ctx.notify_order(&order_id);
    } else {
        order.voided += order.able_to_capture();
    }
    ctx.order_answer(&order_id).committed(MagicAmount::None)
}

/// Test hook / `POST /sandbox/orders/{order_id}/expire`: the authorisation
/// expires; its uncaptured remainder is released (`voided_amount` += rest).
/// Nothing captured → `CANCELED` (notified). Returns the released amount.
pub(crate) fn expire_authorisation(ctx: &mut Ctx<'_>, order_id: &str) -> Result<i64, SandboxError> {
    let Some(order) = ctx.ledger.orders.get_mut(order_id) else {
        return Err(SandboxError::UnknownOrder {
            merchant_id: ctx.merchant_id.to_owned(),
            order_id: order_id.to_owned(),
        });
    };
    let authorised = matches!(
        order.status,
        GatewayOrderStatus::Authorized
            | GatewayOrderStatus::Success
            | GatewayOrderStatus::PartiallyRefunded
            | GatewayOrderStatus::Refunded
    );
    let rest = order.able_to_capture();
    if !authorised || rest == 0 {
        return Err(SandboxError::InvalidState(format!(
            "order {order_id} has no uncaptured authorisation to expire (status {}, able_to_capture_amount {rest})",
            order.status
        )));
    }
    order.voided += rest;
    if order.captured == 0 {
        order.status = GatewayOrderStatus::Canceled;
        ctx.notify_order(order_id);
    }
    Ok(rest)
}

/// Refund (endpoints.md §11).
pub(crate) fn refund(ctx: &mut Ctx<'_>, req: &RefundRequest) -> Answer {
    let currency = req.currency.to_string();
    if let Some(existing) = ctx.ledger.refund_by_trans_id(&req.refund_trans_id) {
        return if existing.ori_order_id == req.ori_order_id
            && existing.amount == req.refund_amount
            && existing.currency == currency
        {
            Answer::ok(to_value(&existing.response()))
        } else {
            Answer::invalid(format!(
                "refund_trans_id {} was already used for another refund",
                req.refund_trans_id
            ))
        };
    }
    let Some(order) = ctx.ledger.orders.get_mut(&req.ori_order_id) else {
        return Answer::no_order();
    };
    if order.currency != currency {
        return Answer::invalid(format!(
            "currency {currency} differs from the order currency {}",
            order.currency
        ));
    }
    if req.refund_amount > order.able_to_refund() {
        return Answer::invalid(format!(
            "refund_amount {} exceeds able_to_refund_amount {}",
            req.refund_amount,
            order.able_to_refund()
        ));
    }
    let magic = magic_amount(req.refund_amount);
    let will_succeed = magic != MagicAmount::RefundFailure;
    let before_view = order.response();
    order.refund_pending += req.refund_amount;
    let late = ctx.late_until(magic);
    let refund_order_id = ctx.ids.next("RG");
    let settle_at = match ctx.behaviour.refunds {
        RefundMode::Async { settle_after } => settle_after.map(|d| after(ctx.now, d)),
        RefundMode::Immediate => Some(ctx.now),
    };
    // A hidden refund does not settle (and notify) before its late answer.
    let settle_at = match (settle_at, late) {
        (Some(at), Some(until)) => Some(at.max(until)),
        (at, _) => at,
    };
    ctx.ledger.insert_refund(RefundRecord {
        refund_order_id: refund_order_id.clone(),
        refund_trans_id: req.refund_trans_id.clone(),
        ori_order_id: req.ori_order_id.clone(),
        status: RefundStatus::Reviewing,
        amount: req.refund_amount,
        currency,
        error_code: "0000".into(),
        error_description: "request success".into(),
        notify_url: req.notify_url.clone(),
        settle_at,
        will_succeed,
        finish_time: None,
    });
    if ctx.behaviour.refunds == RefundMode::Immediate && late.is_none() {
        settle_refund(ctx, &refund_order_id);
    }
    let answer = match ctx.ledger.refunds.get(&refund_order_id) {
        Some(r) => Answer::ok(to_value(&r.response())),
        None => Answer::no_order(),
    };
    if let Some(until) = late {
        ctx.ledger
            .hide_order(&req.ori_order_id, until, Some(before_view));
        ctx.ledger
            .hidden_refunds
            .insert(refund_order_id.clone(), until);
        return answer.committed(magic).late(true);
    }
    answer.committed(magic)
}

/// Settles one pending refund to its outcome and notifies.
pub(crate) fn settle_refund(ctx: &mut Ctx<'_>, refund_order_id: &str) -> bool {
    let Some(refund) = ctx.ledger.refunds.get_mut(refund_order_id) else {
        return false;
    };
    if refund.status.is_final() {
        return false;
    }
    refund.finish_time = Some(PaykkaDateTime::from_datetime(ctx.now));
    refund.settle_at = None;
    if refund.will_succeed {
        refund.status = RefundStatus::Success;
    } else {
        refund.status = RefundStatus::Failure;
        // codes.md has no refund-specific failure code; 1006 is the one
        // that can fail a refund (FINAL_CONFIG).
        refund.error_code = "1006".into();
        refund.error_description = "This merchant is not allowed to refund".into();
    }
    let (ori, amount, ok) = (
        refund.ori_order_id.clone(),
        refund.amount,
        refund.will_succeed,
    );
    if let Some(order) = ctx.ledger.orders.get_mut(&ori) {
        order.refund_pending -= amount;
        if ok {
            order.refunded += amount;
            order.status = order.settled_status();
        }
    }
    ctx.notify_refund(refund_order_id);
    true
}

/// Refund query (endpoints.md §12).
pub(crate) fn refund_query(ctx: &mut Ctx<'_>, req: &RefundQueryRequest) -> Answer {
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let found = if let Some(id) = non_empty(&req.refund_order_id) {
        ctx.ledger.refunds.get(&id)
    } else if let Some(t) = non_empty(&req.refund_trans_id) {
        ctx.ledger.refund_by_trans_id(&t)
    } else {
        None
    };
    let found = found.filter(|r| ctx.ledger.refund_visible(&r.refund_order_id, ctx.now));
    match found {
        Some(r) => Answer::ok(to_value(&r.response())),
        None => Answer::no_order(),
    }
}

/// Token query (endpoints.md §5).
pub(crate) fn token_query(ctx: &mut Ctx<'_>, req: &TokenQueryRequest) -> Answer {
    let tokens = ctx
        .ledger
        .tokens_of(&req.shopper_reference)
        .filter(|t| req.token.as_deref().is_none_or(|want| want == t.token))
        .map(|t| t.info())
        .collect();
    Answer::ok(to_value(&TokenQueryResponse {
        shopper_reference: Some(req.shopper_reference.clone()),
        tokens,
    }))
}

/// Token remove (endpoints.md §6). Does not cancel agreements.
pub(crate) fn token_remove(ctx: &mut Ctx<'_>, req: &TokenRemoveRequest) -> Answer {
    match ctx.ledger.tokens.get(&req.token) {
        Some(t) if t.shopper_reference == req.shopper_reference => {
            ctx.ledger.tokens.remove(&req.token);
            Answer::ok(None).committed(MagicAmount::None)
        }
        _ => Answer::invalid(format!(
            "token {} does not exist for this shopper_reference",
            req.token
        )),
    }
}

/// Recurring agreement cancel (endpoints.md §7); cancelling twice is fine.
pub(crate) fn recurring_cancel(ctx: &mut Ctx<'_>, req: &RecurringCancelRequest) -> Answer {
    match ctx.ledger.agreements.get_mut(&req.recurring_agreement_id) {
        Some(a) => {
            a.active = false;
            Answer::ok(None).committed(MagicAmount::None)
        }
        None => Answer::error(
            StatusCode::BAD_REQUEST,
            "2015",
            "Recurring payment agreement does not exist",
        ),
    }
}

/// Get Apple Pay session (endpoints.md §8): a fake Apple merchant session,
/// as a JSON string in `data`.
pub(crate) fn apple_pay_session(ctx: &mut Ctx<'_>, req: &ApplePaySessionRequest) -> Answer {
    let ms = now_ms(ctx.now);
    let session = serde_json::json!({
        "epochTimestamp": ms,
        "expiresAt": ms + 3_600_000,
        "merchantSessionIdentifier": format!("SSH{}", ctx.ids.next("AP")),
        "nonce": format!("{:08x}", ms & 0xffff_ffff),
        "merchantIdentifier": ctx.merchant_id,
        "domainName": req.domain_name,
        "displayName": req.display_name.clone().unwrap_or_else(|| "PayKKa Sandbox".into()),
        "signature": "sandbox",
        "operationalAnalyticsIdentifier": "sandbox",
        "retries": 0,
        "pspId": "sandbox"
    });
    Answer::ok(Some(Value::String(session.to_string())))
}

/// Checkout session create (endpoints.md §9): one `trans_id`, one session.
pub(crate) fn session_create(ctx: &mut Ctx<'_>, req: &CheckoutSessionRequest) -> Answer {
    let currency = req.currency.to_string();
    if let Some(s) = ctx.ledger.session_by_trans_id(&req.trans_id) {
        return if s.amount == req.amount && s.currency == currency {
            Answer::ok(to_value(&session_response(s)))
        } else {
            Answer::invalid(format!(
                "trans_id {} was already used for a session with another amount or currency",
                req.trans_id
            ))
        };
    }
    if ctx.ledger.order_by_trans_id(&req.trans_id).is_some() {
        return Answer::invalid(format!(
            "trans_id {} already belongs to a payment",
            req.trans_id
        ));
    }
    let session_id = ctx.ids.next("CS");
    let session_url = (req.session_mode == payorch_schemas::paykka::SessionMode::Hosted)
        .then(|| format!("{}/sandbox/checkout/{session_id}", ctx.host_url));
    let record = SessionRecord {
        session_id: session_id.clone(),
        trans_id: req.trans_id.clone(),
        session_mode: req.session_mode.clone(),
        session_url,
        payment_type: req.payment_type.clone(),
        capture_method: req
            .capture_method
            .clone()
            .unwrap_or(CaptureMethod::Automatic),
        currency,
        amount: req.amount,
        notify_url: req.notify_url.clone(),
        return_url: req.return_url.clone(),
        expire_time: req.expire_time.clone(),
        payment: req.payment.clone(),
        order_id: None,
    };
    let answer = Answer::ok(to_value(&session_response(&record)));
    ctx.ledger.insert_session(record);
    answer.committed(MagicAmount::None)
}

fn session_response(s: &SessionRecord) -> CheckoutSessionResponse {
    CheckoutSessionResponse {
        session_id: Some(s.session_id.clone()),
        session_url: s.session_url.clone(),
        trans_id: Some(s.trans_id.clone()),
        expire_time: s.expire_time.clone(),
    }
}

/// Checkout session query (endpoints.md §10).
pub(crate) fn session_query(ctx: &mut Ctx<'_>, req: &CheckoutSessionQueryRequest) -> Answer {
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let found = if let Some(id) = non_empty(&req.session_id) {
        ctx.ledger.sessions.get(&id)
    } else if let Some(t) = non_empty(&req.trans_id) {
        ctx.ledger.session_by_trans_id(&t)
    } else {
        None
    };
    let Some(s) = found else {
        return Answer::error(StatusCode::OK, "206011", "The session does not exist");
    };
    let mut order = s
        .order_id
        .as_ref()
        .and_then(|id| ctx.ledger.orders.get(id))
        .map(OrderRecord::response)
        .unwrap_or_default();
    order.session_id = Some(s.session_id.clone());
    order.trans_id = Some(s.trans_id.clone());
    if order.amount.is_none() {
        order.amount = Some(s.amount);
        order.currency = Some(s.currency.clone());
    }
    let resp = CheckoutSessionQueryResponse {
        session_url: s.session_url.clone(),
        session_mode: Some(s.session_mode.clone()),
        session_status: Some(
            s.status_text(ctx.now, ctx.behaviour.local_offset)
                .to_owned(),
        ),
        order,
    };
    Answer::ok(to_value(&resp))
}

/// Test hook / shopper action: pay a checkout session with a plain test
/// PAN (or `enc:<PAN>`-free plain digits).
pub(crate) fn pay_session(
    ctx: &mut Ctx<'_>,
    session_id: &str,
    pan: &str,
) -> Result<String, SandboxError> {
    let Some(s) = ctx.ledger.sessions.get(session_id) else {
        return Err(SandboxError::InvalidState(format!(
            "no session {session_id}"
        )));
    };
    if let Some(order_id) = &s.order_id {
        return Err(SandboxError::InvalidState(format!(
            "session {session_id} was already paid by {order_id}"
        )));
    }
    if !payorch_schemas::paykka::luhn_valid(pan) {
        return Err(SandboxError::InvalidState(
            "the card fails the Luhn check".into(),
        ));
    }
    let info = s.payment.clone().unwrap_or_else(PaymentInfo::default);
    let new = NewOrder {
        trans_id: s.trans_id.clone(),
        session_id: Some(s.session_id.clone()),
        payment_type: s.payment_type.clone(),
        authorisation_type: AuthorisationType::FinalAuth,
        capture_method: s.capture_method.clone(),
        payment_method: PaymentMethod::BankCard,
        currency: s.currency.clone(),
        amount: s.amount,
        notify_url: s.notify_url.clone(),
        return_url: s.return_url.clone(),
        expire_time: s.expire_time.clone(),
        shopper_reference: info.shopper_reference.clone(),
        token: None,
        recurring_agreement_id: None,
        store_payment_method: info.store_payment_method == Some(true),
        token_usage: info.token_usage.clone(),
        first_recurring: s.payment_type == PaymentType::Recurring,
    };
    let mut profile = outcomes::card_profile(pan);
    // The hosted page runs 3DS itself; a challenge card is approved here.
    if profile.behaviour == CardBehaviour::Challenge {
        profile.behaviour = CardBehaviour::Approve;
    }
    let (order_id, _) = create_order(ctx, new, Instrument::Profile(profile));
    if let Some(s) = ctx.ledger.sessions.get_mut(session_id) {
        s.order_id = Some(order_id.clone());
    }
    Ok(order_id)
}

/// Test hook / 3DS page: completes a pending challenge.
pub(crate) fn complete_challenge(
    ctx: &mut Ctx<'_>,
    order_id: &str,
    success: bool,
) -> Result<(), SandboxError> {
    let Some(order) = ctx.ledger.orders.get_mut(order_id) else {
        return Err(SandboxError::UnknownOrder {
            merchant_id: ctx.merchant_id.to_owned(),
            order_id: order_id.to_owned(),
        });
    };
    if !matches!(order.pending, Some(Pending::Challenge { .. })) {
        return Err(SandboxError::InvalidState(format!(
            "order {order_id} has no pending 3DS challenge (status {})",
            order.status
        )));
    }
    if success {
        approve(ctx.ledger, order_id, ctx.ids, ctx.now);
    } else {
        decline(order, "2099", "3DS authentication failed", ctx.now);
    }
    ctx.notify_order(order_id);
    Ok(())
}

/// Which due work [`tick`] does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TickScope {
    /// Settle async payments even if not yet due.
    pub force_payments: bool,
    /// Settle refunds even if not yet due.
    pub force_refunds: bool,
    /// Expire every pending challenge now.
    pub force_expiry: bool,
}

/// Runs due work: async payment results, challenge expiries, refund
/// settlements. Returns how many records changed.
pub(crate) fn tick(ctx: &mut Ctx<'_>, scope: TickScope) -> usize {
    let now = ctx.now;
    ctx.ledger.forget_ended_hides(now);
    let mut changed = 0;
    let due_orders = ctx.ledger.pending_orders();
    for (order_id, pending) in due_orders {
        match pending {
            Pending::Async { due, approve: ok } if scope.force_payments || due <= now => {
                if ok {
                    approve(ctx.ledger, &order_id, ctx.ids, now);
                } else if let Some(o) = ctx.ledger.orders.get_mut(&order_id) {
                    decline(o, INVALID_CARD.0, INVALID_CARD.1, now);
                }
                ctx.notify_order(&order_id);
                changed += 1;
            }
            Pending::AutoCapture { due } if scope.force_payments || due <= now => {
                if let Some(o) = ctx.ledger.orders.get_mut(&order_id) {
                    o.pending = None;
                    let rest = o.able_to_capture();
                    if o.status == GatewayOrderStatus::Authorized && rest > 0 {
                        o.captured += rest;
                        o.captures.push(rest);
                        o.status = o.settled_status();
                    }
                }
                ctx.notify_order(&order_id);
                changed += 1;
            }
            Pending::Challenge { expires_at } if scope.force_expiry || expires_at <= now => {
                if let Some(o) = ctx.ledger.orders.get_mut(&order_id) {
                    decline(
                        o,
                        "2099",
                        "Payment expired: 3DS challenge not completed",
                        now,
                    );
                }
                ctx.notify_order(&order_id);
                changed += 1;
            }
            _ => {}
        }
    }
    let due_refunds: Vec<String> = ctx
        .ledger
        .open_refunds()
        .into_iter()
        .filter(|r| scope.force_refunds || r.settle_at.is_some_and(|t| t <= now))
        .map(|r| r.refund_order_id.clone())
        .collect();
    for id in due_refunds {
        if settle_refund(ctx, &id) {
            changed += 1;
        }
    }
    changed
}
