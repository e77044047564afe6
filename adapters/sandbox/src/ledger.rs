//! The sandbox's books: per merchant, orders with their money positions,
//! refunds, tokens, recurring agreements and checkout sessions, plus the
//! PayKKa rules that guard them.
//!
//! Every operation here is synchronous and runs under the ledger lock; it
//! either changes nothing and returns a rejection, or commits and returns
//! the answer plus the notifications its status changes cause. No I/O.
//!
//! Money rules (models.md §3 and §13, choices documented in the README):
//!
//! * `captured + voided <= authorised`, `refunded + refund_pending <=
//!   captured`.
//! * Several partial captures are allowed while `able_to_capture > 0`. The
//!   first capture turns the order `SUCCESS`; the remainder stays capturable
//!   until it is released per [`crate::ReleaseMode`]: a capture with
//!   `"final_capture": true`, a Void after the partial capture, or the
//!   authorisation's expiry (`voided_amount` += rest, status stays
//!   `SUCCESS`).
//! * Void while `AUTHORIZED` with nothing captured → `CANCELED`.
//! * Refunds reserve their amount while `REVIEWING`; a successful refund
//!   moves the order to `PARTIALLY_REFUNDED` / `REFUNDED`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use payorch_schemas::paykka::{
    AuthenticationResult, AuthorisationType, Balances, CaptureMethod, CardInfo, GatewayOrderStatus,
    NotifyType, PaykkaDateTime, PaymentInfo, PaymentMethod, PaymentNotification, PaymentResponse,
    PaymentType, RefundNotification, RefundResponse, RefundStatus, SessionMode, TokenInfo,
    TokenUsage,
};
use time::OffsetDateTime;

use crate::outcomes::{CardBehaviour, CardProfile, INVALID_CARD};

/// A copy of the whole ledger, per merchant id.
#[derive(Debug, Clone, Default)]
pub struct LedgerSnapshot {
    pub merchants: BTreeMap<String, MerchantLedger>,
}

impl LedgerSnapshot {
    pub fn merchant(&self, merchant_id: &str) -> Option<&MerchantLedger> {
        self.merchants.get(merchant_id)
    }

    /// Total number of orders, refunds, tokens, agreements and sessions over
    /// all merchants (handy to assert "nothing changed").
    pub fn record_count(&self) -> usize {
        self.merchants
            .values()
            .map(|m| {
                m.orders.len()
                    + m.refunds.len()
                    + m.tokens.len()
                    + m.agreements.len()
                    + m.sessions.len()
            })
            .sum()
    }
}

/// One merchant's books. Maps are keyed by PayKKa's ids.
#[derive(Debug, Clone, Default)]
pub struct MerchantLedger {
    /// By `order_id` (`GW…`).
    pub orders: BTreeMap<String, OrderRecord>,
    /// By `refund_order_id` (`RG…`).
    pub refunds: BTreeMap<String, RefundRecord>,
    /// By `token` (`TK…`); removed tokens are deleted.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// By `recurring_agreement_id` (`RA…`).
    pub agreements: BTreeMap<String, AgreementRecord>,
    /// By `session_id` (`CS…`).
    pub sessions: BTreeMap<String, SessionRecord>,
    /// Orders whose latest committed change queries must not show yet (the
    /// late-answer fault), by `order_id`: until when, and what a query
    /// answers meanwhile (`None`: the order does not exist yet).
    pub(crate) hidden_orders: BTreeMap<String, (OffsetDateTime, Option<PaymentResponse>)>,
    /// Refunds a refund query must not find yet, by `refund_order_id`.
    pub(crate) hidden_refunds: BTreeMap<String, OffsetDateTime>,
    /// Lookups by the merchant's ids (`trans_id` -> `order_id`, the first
    /// order with it; `refund_trans_id` -> `refund_order_id`; `trans_id`
    /// -> `session_id`), kept by [`MerchantLedger::insert_order`] and its
    /// siblings: every initiate looks its `trans_id` up, and scanning the
    /// books made each call cost as much as the history (a load run keeps
    /// tens of thousands of orders).
    order_ids_by_trans: HashMap<String, String>,
    refund_ids_by_trans: HashMap<String, String>,
    session_ids_by_trans: HashMap<String, String>,
    /// What the background tick visits: every order inserted since the
    /// tick last saw it without `pending` work, and every refund until it
    /// is final (a superset: the tick drops the settled ones). Code that
    /// sets `pending` on an order must keep it here.
    watched_orders: BTreeSet<String>,
    watched_refunds: BTreeSet<String>,
}

impl MerchantLedger {
    pub fn order_by_trans_id(&self, trans_id: &str) -> Option<&OrderRecord> {
        self.orders.get(self.order_ids_by_trans.get(trans_id)?)
    }

    pub fn refund_by_trans_id(&self, refund_trans_id: &str) -> Option<&RefundRecord> {
        self.refunds
            .get(self.refund_ids_by_trans.get(refund_trans_id)?)
    }

    pub fn session_by_trans_id(&self, trans_id: &str) -> Option<&SessionRecord> {
        self.sessions.get(self.session_ids_by_trans.get(trans_id)?)
    }

    /// Adds an order (by its `order_id`) and indexes it.
    pub(crate) fn insert_order(&mut self, order: OrderRecord) {
        self.order_ids_by_trans
            .entry(order.trans_id.clone())
            .or_insert_with(|| order.order_id.clone());
        self.watched_orders.insert(order.order_id.clone());
        self.orders.insert(order.order_id.clone(), order);
    }

    /// Adds a refund (by its `refund_order_id`) and indexes it.
    pub(crate) fn insert_refund(&mut self, refund: RefundRecord) {
        self.refund_ids_by_trans
            .entry(refund.refund_trans_id.clone())
            .or_insert_with(|| refund.refund_order_id.clone());
        self.watched_refunds.insert(refund.refund_order_id.clone());
        self.refunds.insert(refund.refund_order_id.clone(), refund);
    }

    /// Adds a checkout session (by its `session_id`) and indexes it.
    pub(crate) fn insert_session(&mut self, session: SessionRecord) {
        self.session_ids_by_trans
            .entry(session.trans_id.clone())
            .or_insert_with(|| session.session_id.clone());
        self.sessions.insert(session.session_id.clone(), session);
    }

    /// The orders with `pending` work, in `order_id` order; forgets the
    /// watched ones that have none.
    pub(crate) fn pending_orders(&mut self) -> Vec<(String, Pending)> {
        let mut due = Vec::new();
        let orders = &self.orders;
        self.watched_orders
            .retain(|id| match orders.get(id).and_then(|o| o.pending.clone()) {
                Some(p) => {
                    due.push((id.clone(), p));
                    true
                }
                None => false,
            });
        due
    }

    /// The refunds not yet final, in `refund_order_id` order; forgets the
    /// final ones.
    pub(crate) fn open_refunds(&mut self) -> Vec<&RefundRecord> {
        let refunds = &self.refunds;
        self.watched_refunds
            .retain(|id| refunds.get(id).is_some_and(|r| !r.status.is_final()));
        self.watched_refunds
            .iter()
            .filter_map(|id| self.refunds.get(id))
            .collect()
    }

    /// Hides the order's current change from queries until `until`;
    /// `before` is what they answer meanwhile. A second hide keeps the
    /// earliest view and the latest end.
    pub(crate) fn hide_order(
        &mut self,
        order_id: &str,
        until: OffsetDateTime,
        before: Option<PaymentResponse>,
    ) {
        self.hidden_orders
            .entry(order_id.to_owned())
            .and_modify(|h| h.0 = h.0.max(until))
            .or_insert((until, before));
    }

    /// What a query shows of `order` at `now` (`None`: not found yet).
    pub(crate) fn order_view(
        &self,
        order: &OrderRecord,
        now: OffsetDateTime,
    ) -> Option<PaymentResponse> {
        match self.hidden_orders.get(&order.order_id) {
            Some((until, before)) if *until > now => before.clone(),
            _ => Some(order.response()),
        }
    }

    /// Whether a refund query may find the refund at `now`.
    pub(crate) fn refund_visible(&self, refund_order_id: &str, now: OffsetDateTime) -> bool {
        self.hidden_refunds
            .get(refund_order_id)
            .is_none_or(|until| *until <= now)
    }

    /// Forgets hidden views that ended.
    pub(crate) fn forget_ended_hides(&mut self, now: OffsetDateTime) {
        self.hidden_orders.retain(|_, (until, _)| *until > now);
        self.hidden_refunds.retain(|_, until| *until > now);
    }

    /// Tokens stored for a shopper.
    pub fn tokens_of<'a>(
        &'a self,
        shopper_reference: &'a str,
    ) -> impl Iterator<Item = &'a TokenRecord> {
        self.tokens
            .values()
            .filter(move |t| t.shopper_reference == shopper_reference)
    }
}

/// What an order waits for while `PROCESSING`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// A 3DS challenge the shopper has to complete before `expires_at`.
    Challenge { expires_at: OffsetDateTime },
    /// An asynchronous issuer answer due at `due`.
    Async { due: OffsetDateTime, approve: bool },
    /// Authorised with automatic capture; the capture happens at `due`.
    AutoCapture { due: OffsetDateTime },
}

/// One payment (one `trans_id`).
#[derive(Debug, Clone)]
pub struct OrderRecord {
    pub order_id: String,
    pub trans_id: String,
    pub session_id: Option<String>,
    pub status: GatewayOrderStatus,
    pub payment_type: PaymentType,
    pub authorisation_type: AuthorisationType,
    pub capture_method: CaptureMethod,
    pub payment_method: PaymentMethod,
    pub currency: String,
    pub amount: i64,
    pub authorised: i64,
    pub captured: i64,
    pub refunded: i64,
    pub voided: i64,
    /// Amount of refunds still `REVIEWING`/`PROCESSING`.
    pub refund_pending: i64,
    /// Each capture's amount, in order.
    pub captures: Vec<i64>,
    pub error_code: String,
    pub error_description: String,
    pub card_info: Option<CardInfo>,
    pub token: Option<String>,
    pub shopper_reference: Option<String>,
    pub recurring_agreement_id: Option<String>,
    pub notify_url: Option<String>,
    /// Where the 3DS page sends the shopper's browser when done.
    pub return_url: Option<String>,
    pub pending: Option<Pending>,
    pub authentication_url: Option<String>,
    pub pay_finish_time: Option<PaykkaDateTime>,
    pub expire_time: Option<PaykkaDateTime>,
    /// Non-secret outcome data of the instrument (for challenge completion
    /// and tokenisation).
    pub(crate) profile: Option<CardProfile>,
    pub(crate) store_payment_method: bool,
    pub(crate) token_usage: Option<TokenUsage>,
    pub(crate) first_recurring: bool,
    /// Release mode `void_after_capture`: a Void after a partial capture
    /// releases the remainder.
    pub(crate) void_releases_remainder: bool,
}

impl OrderRecord {
    pub fn able_to_capture(&self) -> i64 {
        (self.authorised - self.captured - self.voided).max(0)
    }

    /// Void before any capture: the whole authorisation. After a partial
    /// capture: the remainder, in release mode `void_after_capture` only.
    pub fn able_to_void(&self) -> i64 {
        if self.status == GatewayOrderStatus::Authorized && self.captured == 0 {
            (self.authorised - self.voided).max(0)
        } else if self.void_releases_remainder
            && self.captured > 0
            && matches!(
                self.status,
                GatewayOrderStatus::Success
                    | GatewayOrderStatus::PartiallyRefunded
                    | GatewayOrderStatus::Refunded
            )
        {
            self.able_to_capture()
        } else {
            0
        }
    }

    pub fn able_to_refund(&self) -> i64 {
        (self.captured - self.refunded - self.refund_pending).max(0)
    }

    pub fn balances(&self) -> Balances {
        Balances {
            authed_amount: Some(self.authorised),
            captured_amount: Some(self.captured),
            able_to_capture_amount: Some(self.able_to_capture()),
            voided_amount: Some(self.voided),
            able_to_void_amount: Some(self.able_to_void()),
            refunded_amount: Some(self.refunded),
            able_to_refund_amount: Some(self.able_to_refund()),
        }
    }

    /// The order object of initiate/query/capture/void answers (without
    /// `merchant_id`/`timestamp`, which the server adds when signing).
    pub fn response(&self) -> PaymentResponse {
        PaymentResponse {
            timestamp: None,
            error_code: Some(self.error_code.clone()),
            error_description: Some(self.error_description.clone()),
            merchant_id: None,
            trans_id: Some(self.trans_id.clone()),
            order_id: Some(self.order_id.clone()),
            session_id: self.session_id.clone(),
            status: Some(self.status.clone()),
            payment_type: Some(self.payment_type.clone()),
            authorisation_type: Some(self.authorisation_type.clone()),
            capture_method: Some(self.capture_method.clone()),
            amount: Some(self.amount),
            currency: Some(self.currency.clone()),
            payment: Some(PaymentInfo {
                payment_method: Some(self.payment_method.clone()),
                ..PaymentInfo::default()
            }),
            card_info: self.card_info.clone(),
            balances: Some(self.balances()),
            authentication_result: self.authentication_url.as_ref().map(|url| {
                AuthenticationResult {
                    authentication_url: Some(url.clone()),
                    ..AuthenticationResult::default()
                }
            }),
            token: self.token.clone(),
            shopper_reference: self.shopper_reference.clone(),
            recurring_agreement_id: self.recurring_agreement_id.clone(),
            pay_finish_time: self.pay_finish_time.clone(),
            expire_time: self.expire_time.clone(),
            extra: Default::default(),
        }
    }

    /// The payment notification announcing the current status.
    pub fn notification(&self, merchant_id: &str, timestamp: i64) -> Option<PaymentNotification> {
        let notify_type = match self.status {
            GatewayOrderStatus::Authorized => NotifyType::PaymentAuthorization,
            GatewayOrderStatus::Success => NotifyType::PaymentSuccess,
            GatewayOrderStatus::Failure => NotifyType::PaymentFailure,
            GatewayOrderStatus::Canceled => NotifyType::PaymentCanceled,
            _ => return None,
        };
        Some(PaymentNotification {
            timestamp: Some(timestamp),
            notify_type: Some(notify_type),
            event_type: None,
            error_code: Some(self.error_code.clone()),
            error_description: Some(self.error_description.clone()),
            merchant_id: Some(merchant_id.to_owned()),
            trans_id: Some(self.trans_id.clone()),
            order_id: Some(self.order_id.clone()),
            session_id: self.session_id.clone(),
            status: Some(self.status.clone()),
            amount: Some(self.amount),
            currency: Some(self.currency.clone()),
            pay_finish_time: self.pay_finish_time.clone(),
            expire_time: self.expire_time.clone(),
            recurring_agreement_id: self.recurring_agreement_id.clone(),
            token: self.token.clone(),
            shopper_reference: self.shopper_reference.clone(),
            authentication_result: None,
            payment: Some(PaymentInfo {
                payment_method: Some(self.payment_method.clone()),
                store_payment_method: Some(self.store_payment_method),
                ..PaymentInfo::default()
            }),
            card_info: self.card_info.clone(),
            extra: Default::default(),
        })
    }

    /// Status implied by the money positions once authorised.
    pub(crate) fn settled_status(&self) -> GatewayOrderStatus {
        if self.captured == 0 {
            GatewayOrderStatus::Authorized
        } else if self.refunded == 0 {
            GatewayOrderStatus::Success
        } else if self.refunded < self.captured {
            GatewayOrderStatus::PartiallyRefunded
        } else {
            GatewayOrderStatus::Refunded
        }
    }
}

/// One refund (one `refund_trans_id`).
#[derive(Debug, Clone)]
pub struct RefundRecord {
    pub refund_order_id: String,
    pub refund_trans_id: String,
    pub ori_order_id: String,
    pub status: RefundStatus,
    pub amount: i64,
    pub currency: String,
    pub error_code: String,
    pub error_description: String,
    pub notify_url: Option<String>,
    /// When it settles by itself (`None`: only via the test hook).
    pub settle_at: Option<OffsetDateTime>,
    /// The outcome it will settle to.
    pub will_succeed: bool,
    pub finish_time: Option<PaykkaDateTime>,
}

impl RefundRecord {
    pub fn response(&self) -> RefundResponse {
        RefundResponse {
            timestamp: None,
            error_code: Some(self.error_code.clone()),
            error_description: Some(self.error_description.clone()),
            merchant_id: None,
            refund_trans_id: Some(self.refund_trans_id.clone()),
            refund_order_id: Some(self.refund_order_id.clone()),
            ori_order_id: Some(self.ori_order_id.clone()),
            status: Some(self.status.clone()),
            amount: Some(self.amount),
            currency: Some(self.currency.clone()),
            extra: Default::default(),
        }
    }

    /// The refund notification (endpoints.md §14): `trans_id` is the
    /// merchant's refund number, `order_id` the original payment.
    pub fn notification(&self, merchant_id: &str, timestamp: i64) -> Option<RefundNotification> {
        let notify_type = match self.status {
            RefundStatus::Success => NotifyType::RefundSuccess,
            RefundStatus::Failure => NotifyType::RefundFailure,
            _ => return None,
        };
        Some(RefundNotification {
            timestamp: Some(timestamp),
            notify_type: Some(notify_type),
            event_type: None,
            error_code: Some(self.error_code.clone()),
            error_description: Some(self.error_description.clone()),
            merchant_id: Some(merchant_id.to_owned()),
            trans_id: Some(self.refund_trans_id.clone()),
            refund_trans_id: None,
            refund_order_id: Some(self.refund_order_id.clone()),
            order_id: Some(self.ori_order_id.clone()),
            ori_order_id: None,
            status: Some(self.status.clone()),
            amount: Some(self.amount),
            currency: Some(self.currency.clone()),
            pay_finish_time: self.finish_time.clone(),
            expire_time: None,
            extra: Default::default(),
        })
    }
}

/// A stored card (`TK…`), scoped to a `shopper_reference`. Keeps display
/// data and the test outcome, never the PAN.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub token: String,
    pub shopper_reference: String,
    pub token_usage: Option<TokenUsage>,
    pub card_info: CardInfo,
    pub recurring_agreement_id: Option<String>,
    pub(crate) profile: CardProfile,
}

impl TokenRecord {
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            token: Some(self.token.clone()),
            shopper_reference: Some(self.shopper_reference.clone()),
            payment_method: Some(PaymentMethod::BankCard),
            token_usage: self.token_usage.clone(),
            card_info: Some(self.card_info.clone()),
            exp_year: None,
            exp_month: None,
            recurring_agreement_id: self.recurring_agreement_id.clone(),
        }
    }
}

/// A recurring agreement created by a first (`mit:false`) recurring payment.
#[derive(Debug, Clone)]
pub struct AgreementRecord {
    pub recurring_agreement_id: String,
    pub token: String,
    pub shopper_reference: String,
    /// False once cancelled (MIT payments then fail with 2016).
    pub active: bool,
}

/// A checkout session (`CS…`).
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub session_id: String,
    pub trans_id: String,
    pub session_mode: SessionMode,
    pub session_url: Option<String>,
    pub payment_type: PaymentType,
    pub capture_method: CaptureMethod,
    pub currency: String,
    pub amount: i64,
    pub notify_url: Option<String>,
    /// Where the hosted page sends the shopper's browser after paying.
    pub return_url: Option<String>,
    pub expire_time: Option<PaykkaDateTime>,
    pub(crate) payment: Option<PaymentInfo>,
    /// The order created when the shopper paid.
    pub order_id: Option<String>,
}

impl SessionRecord {
    /// `ACTIVE`, `PAID` or `EXPIRED` [sandbox values; PayKKa's are unknown].
    /// `local` is the offset of an `expire_time` sent without one.
    pub fn status_text(&self, now: OffsetDateTime, local: time::UtcOffset) -> &'static str {
        if self.order_id.is_some() {
            "PAID"
        } else if self
            .expire_time
            .as_ref()
            .and_then(|t| t.parse_with_local_offset(local).ok())
            .is_some_and(|t| t < now)
        {
            "EXPIRED"
        } else {
            "ACTIVE"
        }
    }
}

/// Effects of approving an order: authorise (and capture if automatic),
/// tokenise, create the agreement of a first recurring payment.
pub(crate) fn approve(
    ledger: &mut MerchantLedger,
    order_id: &str,
    ids: &crate::ids::IdGen,
    now: OffsetDateTime,
) {
    let Some(order) = ledger.orders.get_mut(order_id) else {
        return;
    };
    order.pending = None;
    order.authentication_url = None;
    order.authorised = order.amount;
    if order.capture_method == CaptureMethod::Automatic {
        order.captured = order.amount;
        order.captures.push(order.amount);
    }
    order.status = order.settled_status();
    order.error_code = "0000".into();
    order.error_description = "request success".into();
    order.pay_finish_time = Some(PaykkaDateTime::from_datetime(now));

    if order.store_payment_method && order.token.is_none() {
        let (Some(shopper), Some(profile)) =
            (order.shopper_reference.clone(), order.profile.clone())
        else {
            return;
        };
        let token = ids.next("TK");
        let agreement = order.first_recurring.then(|| ids.next("RA"));
        order.token = Some(token.clone());
        order.recurring_agreement_id = agreement.clone();
        let token_usage = order.token_usage.clone();
        ledger.tokens.insert(
            token.clone(),
            TokenRecord {
                token: token.clone(),
                shopper_reference: shopper.clone(),
                token_usage,
                card_info: profile.card_info(),
                recurring_agreement_id: agreement.clone(),
                profile,
            },
        );
        if let Some(id) = agreement {
            ledger.agreements.insert(
                id.clone(),
                AgreementRecord {
                    recurring_agreement_id: id,
                    token,
                    shopper_reference: shopper,
                    active: true,
                },
            );
        }
    }
}

/// Declines an order with a transaction error code.
pub(crate) fn decline(order: &mut OrderRecord, code: &str, description: &str, now: OffsetDateTime) {
    order.pending = None;
    order.authentication_url = None;
    order.status = GatewayOrderStatus::Failure;
    order.error_code = code.to_owned();
    order.error_description = description.to_owned();
    order.pay_finish_time = Some(PaykkaDateTime::from_datetime(now));
}

/// The decline a behaviour stands for, if it is one.
pub(crate) fn decline_of(behaviour: CardBehaviour) -> Option<(&'static str, &'static str)> {
    match behaviour {
        CardBehaviour::Decline(code, text) => Some((code, text)),
        CardBehaviour::NotSupported => Some((
            "2006",
            "This card is not supported, please use another card",
        )),
        CardBehaviour::AsyncDecline => Some(INVALID_CARD),
        CardBehaviour::Refuse(code, text) => Some((code, text)),
        _ => None,
    }
}
