//! Gateway observations (notifications, query results): what a PayKKa
//! answer shows that the order does not record yet, and nothing else.

use super::*;

/// Emits what is needed for the state to reflect `o`; nothing when the state
/// already does or `o` is older (a late AUTHORIZED after SUCCESS).
pub(super) fn observe(s: &OrderState, o: &mut Observation) -> Decided {
    if s.phase().is_terminal() {
        return none();
    }
    match o {
        Observation::Payment(p) => observe_payment(s, p),
        Observation::Refund(r) => observe_refund(s, r),
        Observation::PaymentNotFound { settled: true }
            if matches!(
                s.phase(),
                Phase::AuthorisationPending | Phase::AuthorisationUnknown
            ) =>
        {
            one(AuthorisationDeclined {
                code: "206024".into(),
                description: "PayKKa has no transaction for this trans_id after the grace period"
                    .into(),
            })
        }
        Observation::PaymentNotFound { .. } => none(),
        Observation::RefundNotFound {
            refund_id,
            settled: true,
        } if open_refund(s, *refund_id).is_some() => one(RefundDeclined {
            refund_id: *refund_id,
            code: "206024".into(),
            description: "PayKKa has no such refund after the grace period".into(),
        }),
        Observation::RefundNotFound { .. } => none(),
    }
}

/// Accumulates events and gives each step the state as it will be after
/// the events emitted so far. That state is folded lazily, only when a step
/// looks at it after an emit: the common single-event observation (e.g.
/// AUTHORIZED on a pending order) never copies the state.
pub(super) struct Emitter<'a> {
    base: &'a OrderState,
    /// `base` with `events[..applied]` folded in, once someone asked.
    scratch: Option<OrderState>,
    applied: usize,
    events: Vec<OrderEvent>,
}

impl<'a> Emitter<'a> {
    fn new(base: &'a OrderState) -> Self {
        Emitter {
            base,
            scratch: None,
            applied: 0,
            events: Vec::new(),
        }
    }

    /// The state with every event emitted so far applied.
    fn state(&mut self) -> &OrderState {
        if self.applied < self.events.len() {
            let mut st = self.scratch.take().unwrap_or_else(|| self.base.clone());
            for e in &self.events[self.applied..] {
                apply(&mut st, e);
            }
            self.applied = self.events.len();
            self.scratch = Some(st);
        }
        self.scratch.as_ref().unwrap_or(self.base)
    }

    fn emit(&mut self, e: impl Into<OrderEvent>) {
        // Observations emit one or two events: a small first allocation
        // (not `push`'s four) stays in the allocator's fast path, and an
        // observation that changes nothing allocates nothing.
        if self.events.capacity() == 0 {
            self.events = Vec::with_capacity(2);
        }
        self.events.push(e.into());
    }
}

/// Takes the observation by reference and moves its strings out
/// (`Option::take`): callers own it and drop it right after.
pub(super) fn observe_payment(s: &OrderState, o: &mut PaymentObservation) -> Decided {
    use ObservedStatus as O;
    if s.phase().is_terminal() || s.placed.is_none() {
        return none();
    }
    let mut em = Emitter::new(s);
    let pre_auth = |p: Phase| {
        matches!(
            p,
            Phase::AuthorisationPending | Phase::AuthorisationUnknown | Phase::ChallengeRequired
        )
    };
    let placed_amount = s
        .placed
        .as_ref()
        .map(|p| p.amount)
        .unwrap_or(Money::zero(Currency::EUR));

    // The observation is ours: its strings move into the events.
    match o.status {
        // A challenge still pending past the reconciler's grace period will
        // never complete (PayKKa expires it).
        O::Processing if o.settled && s.phase() == Phase::ChallengeRequired => {
            em.emit(ChallengeExpired {});
        }
        O::Processing | O::Other(_) => {
            if matches!(
                s.phase(),
                Phase::AuthorisationPending | Phase::AuthorisationUnknown
            ) && let Some(authentication_url) = o.take_detail(|d| d.authentication_url.take())
            {
                em.emit(ChallengeRequired { authentication_url });
            }
        }
        O::Failure if pre_auth(s.phase()) => {
            let (code, description) = error_of(o, "FAILURE");
            if s.phase() == Phase::ChallengeRequired {
                em.emit(ChallengeFailed { code, description });
            } else {
                em.emit(AuthorisationDeclined { code, description });
            }
        }
        O::Failure => {
            if let Some(c) = s.open_capture() {
                let (code, description) = error_of(o, "FAILURE");
                em.emit(CaptureDeclined {
                    capture_id: c.capture_id,
                    code,
                    description,
                });
            }
        }
        O::Canceled if pre_auth(s.phase()) => {
            let (code, description) = error_of(o, "CANCELED");
            em.emit(AuthorisationDeclined { code, description });
        }
        O::Canceled => {
            if s.phase() == Phase::Authorised && s.open_capture().is_none() {
                em.emit(Voided {});
            }
        }
        O::Authorised | O::Success | O::PartiallyRefunded | O::Refunded | O::PartiallyReversed => {
            if pre_auth(s.phase()) {
                if s.phase() == Phase::ChallengeRequired {
                    em.emit(ChallengeCompleted {});
                }
                let gateway_order_id = match o.gateway_order_id.take() {
                    Some(id) => id,
                    None => s
                        .gateway_order_id
                        .clone()
                        .ok_or(DomainError::IncompleteObservation("order_id"))?,
                };
                let authed = o
                    .balances()
                    .map(|b| b.authed)
                    .filter(|a| *a > 0)
                    .or(o.amount.map(|m| m.minor))
                    .unwrap_or(placed_amount.minor)
                    .min(placed_amount.minor);
                em.emit(Authorised {
                    gateway_order_id,
                    amount: Money::new(authed, placed_amount.currency),
                    card: o.card.take().map(|c| *c),
                });
            }
            if o.status.is_captured() {
                learn_capture(&mut em, o);
                // After the grace period, a query whose balances still show
                // only the captures we recorded: the open capture (after an
                // earlier partial one) did not happen.
                let st = em.state();
                let not_captured = st
                    .open_capture()
                    .filter(|_| o.settled)
                    .filter(|_| o.balances().is_some_and(|b| b.captured <= st.captured))
                    .map(|c| c.capture_id);
                if let Some(capture_id) = not_captured {
                    em.emit(CaptureDeclined {
                        capture_id,
                        code: "NOT_CAPTURED".into(),
                        description:
                            "PayKKa's captured amount did not grow within the grace period".into(),
                    });
                }
            } else if o.settled {
                // AUTHORIZED after the grace period: an open capture or void
                // did not happen.
                let st = em.state();
                let not_captured = st
                    .open_capture()
                    .filter(|_| o.balances().is_none_or(|b| b.captured <= st.captured))
                    .map(|c| c.capture_id);
                if let Some(capture_id) = not_captured {
                    em.emit(CaptureDeclined {
                        capture_id,
                        code: "NOT_CAPTURED".into(),
                        description: "PayKKa still reports AUTHORIZED after the grace period"
                            .into(),
                    });
                }
                if em.state().void.is_some_and(CallProgress::is_open) {
                    em.emit(VoidDeclined {
                        code: "NOT_VOIDED".into(),
                        description: "PayKKa still reports AUTHORIZED after the grace period"
                            .into(),
                    });
                }
            }
        }
    }

    // A stored token, once the payment went through.
    if let Some(token) = o.take_detail(|d| d.token.take()) {
        let st = em.state();
        if st.token().is_none()
            && !matches!(st.phase(), Phase::Declined | Phase::New)
            && !pre_auth(st.phase())
        {
            let shopper_reference = o
                .take_detail(|d| d.shopper_reference.take())
                .or_else(|| {
                    s.placed
                        .as_ref()
                        .and_then(|p| p.store_token.as_ref().map(|t| t.shopper_reference.clone()))
                })
                .unwrap_or_default();
            em.emit(TokenStored {
                token,
                shopper_reference,
                recurring_agreement_ref: o.take_detail(|d| d.recurring_agreement_ref.take()),
            });
        }
    }
    Ok(em.events)
}

/// PayKKa reports money captured: resolve an open capture and record any
/// capture we did not ask for (automatic capture).
pub(super) fn learn_capture(em: &mut Emitter, o: &PaymentObservation) {
    let st = em.state();
    if !matches!(st.phase(), Phase::Authorised | Phase::PartiallyCaptured) {
        return;
    }
    // What PayKKa says is captured. Without balances: an open capture went
    // through; with none open, SUCCESS from `Authorised` means everything
    // (automatic capture). After our own partial captures a SUCCESS without
    // balances says nothing new (PayKKa reports SUCCESS from the first
    // capture on): only balances (a query) can show more money captured.
    //
    // A status without balances (every notification: PayKKa's carries no
    // capture id and no captured amount) confirms an open capture only
    // when nothing else can explain it: no earlier capture succeeded, so
    // the money captured can only be this capture's. After an earlier
    // partial capture, a late or duplicated notification of that one
    // looks the same: the capture stays open and the reconciler's query
    // (balances) decides.
    let target = match (o.balances(), st.open_capture()) {
        (Some(b), _) => b.captured,
        (None, Some(c)) if st.captured == 0 => c.amount.minor,
        (None, Some(_)) => st.captured,
        (None, None) if o.status == ObservedStatus::PartiallyReversed => st.captured,
        (None, None) if st.phase() == Phase::PartiallyCaptured => st.captured,
        (None, None) => st.authorised,
    }
    .min(st.authorised);
    let covered = st
        .open_capture()
        .filter(|c| target >= st.captured.saturating_add(c.amount.minor))
        .map(|c| (c.capture_id, c.amount));
    if let Some((capture_id, amount)) = covered {
        let remainder_released = shows_release(st, o, amount.minor);
        em.emit(Captured {
            capture_id,
            amount,
            remainder_released,
        });
    }
    let st = em.state();
    if st.open_capture().is_none() && target > st.captured && !st.remainder_released {
        let currency = st
            .placed
            .as_ref()
            .map(|p| p.amount.currency)
            .unwrap_or(Currency::EUR);
        let captured = Money::new(target - st.captured, currency);
        em.emit(Succeeded {
            gateway_order_id: None,
            captured,
        });
    }
    // PayKKa released the rest of a partial capture (a capture's flag, a
    // void, or the authorisation's expiry): learned from its balances.
    let st = em.state();
    if st.open_capture().is_none()
        && !st.remainder_released
        && st.captured > 0
        && st.captured < st.authorised
        && shows_release(st, o, 0)
    {
        let amount = st.money(st.authorised - st.captured);
        em.emit(RemainderReleased { amount });
    }
}

/// Whether PayKKa's balances in `o` show the rest of the authorisation
/// released once our captures plus `capturing` (a capture being resolved)
/// are captured: something voided, and captured plus voided covers the
/// authorisation (nothing left to capture). `false` without balances.
pub(super) fn shows_release(s: &OrderState, o: &PaymentObservation, capturing: i64) -> bool {
    let captured = s.captured.saturating_add(capturing);
    o.balances().is_some_and(|b| {
        let authed = if b.authed > 0 { b.authed } else { s.authorised };
        captured > 0
            && captured < authed
            && b.voided > 0
            && b.captured.max(captured).saturating_add(b.voided) >= authed
    })
}

pub(super) fn observe_refund(s: &OrderState, o: &mut RefundObservation) -> Decided {
    let Some(r) = open_refund(s, o.refund_id) else {
        return none();
    };
    match o.status {
        ObservedRefundStatus::Success => one(Refunded {
            refund_id: r.refund_id,
            gateway_refund_id: o.gateway_refund_id.take(),
            amount: r.amount,
        }),
        ObservedRefundStatus::Failure => one(RefundDeclined {
            refund_id: r.refund_id,
            code: o.error_code.take().unwrap_or_else(|| "FAILURE".into()),
            description: o.error_description.take().unwrap_or_default(),
        }),
        _ => none(),
    }
}
