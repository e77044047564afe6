//! `evolve`: folding an event into an order's state (total, never fails).

use super::*;

/// Folds one event into the state. Total: events are facts, so it never
/// fails; amounts saturate rather than wrap (decide keeps them in range).
#[inline]
pub fn evolve(mut s: OrderState, e: &OrderEvent) -> OrderState {
    apply(&mut s, e);
    s
}

/// [`evolve`] in place: the fold works on one state instead of moving the
/// ~350-byte state in and out of every call.
pub fn apply(s: &mut OrderState, e: &OrderEvent) {
    s.version += 1;
    match e {
        OrderEvent::PaymentPlaced(p) => placed(s, p.clone()),
        OrderEvent::AuthorisationRequested(_) => {}
        OrderEvent::ChallengeRequired(c) => challenge(s, c.authentication_url.clone()),
        OrderEvent::ChallengeCompleted(_) => s.phase = PhaseCell(Phase::AuthorisationPending),
        OrderEvent::ChallengeFailed(d) => declined(s, d.code.clone(), d.description.clone()),
        OrderEvent::ChallengeExpired(_) => declined(
            s,
            "EXPIRED".to_owned(),
            "3-D Secure challenge expired".to_owned(),
        ),
        OrderEvent::AuthorisationDeclined(d) => declined(s, d.code.clone(), d.description.clone()),
        OrderEvent::AuthorisationOutcomeUnknown(_) => {
            s.phase = PhaseCell(Phase::AuthorisationUnknown)
        }
        OrderEvent::Authorised(a) => authorised(
            s,
            a.gateway_order_id.clone(),
            a.amount.minor,
            a.card.clone(),
        ),
        OrderEvent::Succeeded(x) => succeeded(s, x.gateway_order_id.clone(), x.captured.minor),
        OrderEvent::CaptureRequested(c) => push_entry(
            &mut s.captures,
            CaptureEntry {
                capture_id: c.capture_id,
                amount: c.amount,
                final_capture: c.final_capture,
                progress: CallProgress::Requested,
            },
        ),
        OrderEvent::Captured(c) => {
            set_capture(s, c.capture_id, CallProgress::Succeeded);
            s.captured = s.captured.saturating_add(c.amount.minor);
            s.remainder_released |= c.remainder_released;
            settle(s);
        }
        OrderEvent::RemainderReleased(_) => {
            // Resolves a Void of the rest in flight, if any.
            if s.void.is_some_and(CallProgress::is_open) {
                s.void = Some(CallProgress::Succeeded);
            }
            s.remainder_released = true;
            settle(s);
        }
        OrderEvent::CaptureDeclined(c) => set_capture(s, c.capture_id, CallProgress::Declined),
        OrderEvent::CaptureOutcomeUnknown(c) => {
            set_capture(s, c.capture_id, CallProgress::OutcomeUnknown)
        }
        OrderEvent::VoidRequested(_) => s.void = Some(CallProgress::Requested),
        OrderEvent::Voided(_) => {
            s.void = Some(CallProgress::Succeeded);
            s.phase = PhaseCell(Phase::Voided);
        }
        OrderEvent::VoidDeclined(_) => s.void = Some(CallProgress::Declined),
        OrderEvent::VoidOutcomeUnknown(_) => s.void = Some(CallProgress::OutcomeUnknown),
        OrderEvent::RefundRequested(r) => push_entry(
            &mut s.refunds,
            RefundEntry {
                refund_id: r.refund_id,
                refund_trans_id: r.refund_trans_id.clone(),
                amount: r.amount,
                progress: CallProgress::Requested,
            },
        ),
        OrderEvent::Refunded(r) => {
            set_refund(s, r.refund_id, CallProgress::Succeeded);
            s.refunded = s.refunded.saturating_add(r.amount.minor);
            settle(s);
        }
        OrderEvent::RefundDeclined(r) => set_refund(s, r.refund_id, CallProgress::Declined),
        OrderEvent::RefundOutcomeUnknown(r) => {
            set_refund(s, r.refund_id, CallProgress::OutcomeUnknown)
        }
        OrderEvent::TokenStored(t) => s.details_mut().token = Some(t.clone()),
    }
}

/// [`evolve`] for an event the caller is done with (rehydration from the
/// store): the data the state keeps is moved out of the event instead of
/// copied. Always the same state as `evolve(s, &e)` (checked by
/// [`explore`] on every reachable transition).
#[inline]
pub fn evolve_owned(mut s: OrderState, e: OrderEvent) -> OrderState {
    apply_owned(&mut s, e);
    s
}

/// [`evolve_owned`] in place.
pub fn apply_owned(s: &mut OrderState, e: OrderEvent) {
    match e {
        OrderEvent::PaymentPlaced(p) => placed(s, p),
        OrderEvent::ChallengeRequired(c) => challenge(s, c.authentication_url),
        OrderEvent::ChallengeFailed(d) => declined(s, d.code, d.description),
        OrderEvent::AuthorisationDeclined(d) => declined(s, d.code, d.description),
        OrderEvent::Authorised(a) => authorised(s, a.gateway_order_id, a.amount.minor, a.card),
        OrderEvent::Succeeded(x) => succeeded(s, x.gateway_order_id, x.captured.minor),
        OrderEvent::RefundRequested(r) => push_entry(
            &mut s.refunds,
            RefundEntry {
                refund_id: r.refund_id,
                refund_trans_id: r.refund_trans_id,
                amount: r.amount,
                progress: CallProgress::Requested,
            },
        ),
        OrderEvent::TokenStored(t) => s.details_mut().token = Some(t),
        // Nothing to move: the by-reference fold is already copy-free.
        other => return apply(s, &other),
    }
    s.version += 1;
}

/// Folds a whole history.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a OrderEvent>) -> OrderState {
    let mut s = OrderState::default();
    for e in events {
        apply(&mut s, e);
    }
    s
}

// ---------------------------------------------------------------- evolve helpers
// Shared by `evolve` (which copies what it keeps) and `evolve_owned`.

pub(super) fn placed(s: &mut OrderState, p: std::sync::Arc<PaymentPlaced>) {
    s.placed = Some(p);
    s.phase = PhaseCell(Phase::AuthorisationPending);
}

pub(super) fn challenge(s: &mut OrderState, authentication_url: String) {
    s.details_mut().authentication_url = Some(authentication_url);
    s.phase = PhaseCell(Phase::ChallengeRequired);
}

pub(super) fn authorised(
    s: &mut OrderState,
    gateway_order_id: GatewayOrderId,
    amount: i64,
    card: Option<CardSummary>,
) {
    s.gateway_order_id = Some(gateway_order_id);
    s.authorised = amount;
    if let Some(card) = card {
        s.details_mut().card = Some(card);
    }
    if let Some(d) = &mut s.details {
        d.authentication_url = None;
        if **d == OrderDetails::default() {
            s.details = None;
        }
    }
    s.phase = PhaseCell(Phase::Authorised);
    settle(s);
}

pub(super) fn succeeded(
    s: &mut OrderState,
    gateway_order_id: Option<GatewayOrderId>,
    captured: i64,
) {
    if gateway_order_id.is_some() {
        s.gateway_order_id = gateway_order_id;
    }
    s.captured = s.captured.saturating_add(captured);
    s.remainder_released = true;
    settle(s);
}

pub(super) fn declined(s: &mut OrderState, code: String, description: String) {
    s.details_mut().decline = Some((code, description));
    s.phase = PhaseCell(Phase::Declined);
}

/// Appends a capture or refund entry. Orders rarely have more than one or
/// two: the first allocation is sized for two (`push` would take four and
/// go through its growth path).
pub(super) fn push_entry<T>(v: &mut Vec<T>, entry: T) {
    if v.capacity() == 0 {
        *v = Vec::with_capacity(2);
    }
    v.push(entry);
}

pub(super) fn set_capture(s: &mut OrderState, id: CaptureId, p: CallProgress) {
    // The entry is almost always the last one: search from the end.
    if let Some(c) = s.captures.iter_mut().rev().find(|c| c.capture_id == id) {
        c.progress = p;
    }
}

pub(super) fn set_refund(s: &mut OrderState, id: RefundId, p: CallProgress) {
    if let Some(r) = s.refunds.iter_mut().rev().find(|r| r.refund_id == id) {
        r.progress = p;
    }
}

/// Derives the money phase from the ledger after a money event.
pub(super) fn settle(s: &mut OrderState) {
    if !matches!(
        s.phase(),
        Phase::Authorised | Phase::PartiallyCaptured | Phase::Captured | Phase::PartiallyRefunded
    ) {
        return;
    }
    let fully_captured = s.captured > 0 && (s.remainder_released || s.captured >= s.authorised);
    s.phase = PhaseCell(if s.captured == 0 {
        Phase::Authorised
    } else if !fully_captured {
        Phase::PartiallyCaptured
    } else if s.refunded == 0 {
        Phase::Captured
    } else if s.refunded >= s.captured {
        Phase::Refunded
    } else {
        Phase::PartiallyRefunded
    });
}
