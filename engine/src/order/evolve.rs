//! `evolve`: folding an event into an order's state. It applies facts
//! only: the phase is read from them ([`Order::phase`]), never derived
//! here.

use super::*;

/// Folds one event into the state. Total: events are facts, so it never
/// fails; amounts saturate rather than wrap (decide keeps them in range).
/// Before the placement only `PaymentPlaced` means anything (decide
/// appends nothing else to an unplaced order); any other event is ignored.
#[inline]
pub fn evolve(mut s: OrderState, e: &OrderEvent) -> OrderState {
    apply(&mut s, e);
    s
}

/// [`evolve`] in place.
pub fn apply(s: &mut OrderState, e: &OrderEvent) {
    match s {
        OrderState::Placed(o) => apply_to_order(o, e),
        OrderState::NotPlaced => {
            if let OrderEvent::PaymentPlaced(p) = e {
                *s = OrderState::Placed(Box::new(Order::new(p.clone())));
            }
        }
    }
}

/// Folds a whole history.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a OrderEvent>) -> OrderState {
    let mut s = OrderState::default();
    for e in events {
        apply(&mut s, e);
    }
    s
}

/// [`apply`] to a placed order.
pub(super) fn apply_to_order(o: &mut Order, e: &OrderEvent) {
    o.version += 1;
    match e {
        // A second placement is never appended (decide); ignored.
        OrderEvent::PaymentPlaced(_) => {}
        OrderEvent::AuthorisationRequested(_) => {}
        OrderEvent::ChallengeRequired(c) => {
            o.authentication_url = Some(c.authentication_url.clone());
            o.stage = Stage::ChallengeRequired;
        }
        OrderEvent::ChallengeCompleted(_) => o.stage = Stage::AuthorisationPending,
        OrderEvent::ChallengeFailed(d) => declined(o, &d.code, &d.description),
        OrderEvent::ChallengeExpired(_) => {
            declined(o, "EXPIRED", "3-D Secure challenge expired");
        }
        OrderEvent::AuthorisationDeclined(d) => declined(o, &d.code, &d.description),
        OrderEvent::AuthorisationOutcomeUnknown(_) => o.stage = Stage::AuthorisationUnknown,
        OrderEvent::Authorised(a) => {
            o.gateway_order_id = Some(a.gateway_order_id.clone());
            o.authorised = a.amount.minor;
            if a.card.is_some() {
                o.card = a.card.clone();
            }
            o.authentication_url = None;
            o.stage = Stage::Authorised;
        }
        OrderEvent::Succeeded(x) => {
            if x.gateway_order_id.is_some() {
                o.gateway_order_id = x.gateway_order_id.clone();
            }
            o.captured = o.captured.saturating_add(x.captured.minor);
            o.remainder_released = true;
        }
        OrderEvent::CaptureRequested(c) => o.captures.push(CaptureEntry {
            capture_id: c.capture_id,
            amount: c.amount,
            final_capture: c.final_capture,
            progress: CallProgress::Requested,
        }),
        OrderEvent::Captured(c) => {
            set_capture(o, c.capture_id, CallProgress::Succeeded);
            o.captured = o.captured.saturating_add(c.amount.minor);
            o.remainder_released |= c.remainder_released;
        }
        OrderEvent::RemainderReleased(_) => {
            // Resolves a Void of the rest in flight, if any.
            if o.void.is_some_and(CallProgress::is_open) {
                o.void = Some(CallProgress::Succeeded);
            }
            o.remainder_released = true;
        }
        OrderEvent::CaptureDeclined(c) => set_capture(o, c.capture_id, CallProgress::Declined),
        OrderEvent::CaptureOutcomeUnknown(c) => {
            set_capture(o, c.capture_id, CallProgress::OutcomeUnknown)
        }
        OrderEvent::VoidRequested(_) => o.void = Some(CallProgress::Requested),
        OrderEvent::Voided(_) => {
            o.void = Some(CallProgress::Succeeded);
            o.stage = Stage::Voided;
        }
        OrderEvent::VoidDeclined(_) => o.void = Some(CallProgress::Declined),
        OrderEvent::VoidOutcomeUnknown(_) => o.void = Some(CallProgress::OutcomeUnknown),
        OrderEvent::RefundRequested(r) => o.refunds.push(RefundEntry {
            refund_id: r.refund_id,
            refund_trans_id: r.refund_trans_id.clone(),
            amount: r.amount,
            progress: CallProgress::Requested,
        }),
        OrderEvent::Refunded(r) => {
            set_refund(o, r.refund_id, CallProgress::Succeeded);
            o.refunded = o.refunded.saturating_add(r.amount.minor);
        }
        OrderEvent::RefundDeclined(r) => set_refund(o, r.refund_id, CallProgress::Declined),
        OrderEvent::RefundOutcomeUnknown(r) => {
            set_refund(o, r.refund_id, CallProgress::OutcomeUnknown)
        }
        OrderEvent::TokenStored(t) => o.token = Some(t.clone()),
    }
}

fn declined(o: &mut Order, code: &str, description: &str) {
    o.decline = Some((code.to_owned(), description.to_owned()));
    o.stage = Stage::Declined;
}

fn set_capture(o: &mut Order, id: CaptureId, p: CallProgress) {
    if let Some(c) = o.captures.iter_mut().rev().find(|c| c.capture_id == id) {
        c.progress = p;
    }
}

fn set_refund(o: &mut Order, id: RefundId, p: CallProgress) {
    if let Some(r) = o.refunds.iter_mut().rev().find(|r| r.refund_id == id) {
        r.progress = p;
    }
}
