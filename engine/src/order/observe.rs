//! Gateway observations (notifications, query results): what a PayKKa
//! answer shows that the order does not record yet, and nothing else.

use super::*;

/// Emits what is needed for the order to reflect `obs`; nothing when it
/// already does or `obs` is older (a late AUTHORIZED after SUCCESS).
pub(super) fn observe(o: &Order, obs: Observation) -> Decided {
    match obs {
        Observation::Payment(p) => observe_payment(o, p),
        Observation::Refund(r) => observe_refund(o, r),
        Observation::PaymentNotFound { past_grace: true }
            if matches!(
                o.stage,
                Stage::AuthorisationPending | Stage::AuthorisationUnknown
            ) =>
        {
            one(AuthorisationDeclined {
                code: "206024".into(),
                description: "PayKKa has no transaction for this trans_id after the grace period"
                    .into(),
            })
        }
        Observation::PaymentNotFound { .. } | Observation::RefundNotFound { .. } => none(),
    }
}

/// Accumulates events and gives each step the order as it will be after
/// the events emitted so far. That order is folded lazily, only when a
/// step looks at it after an emit: the common single-event observation
/// (e.g. AUTHORIZED on a pending order) never copies the order.
pub(super) struct Emitter<'a> {
    base: &'a Order,
    /// `base` with `events[..applied]` folded in, once someone asked.
    scratch: Option<Order>,
    applied: usize,
    events: Vec<OrderEvent>,
}

impl<'a> Emitter<'a> {
    fn new(base: &'a Order) -> Self {
        Emitter {
            base,
            scratch: None,
            applied: 0,
            events: Vec::new(),
        }
    }

    /// The order with every event emitted so far applied.
    fn state(&mut self) -> &Order {
        if self.applied < self.events.len() {
            let mut st = self.scratch.take().unwrap_or_else(|| self.base.clone());
            for e in &self.events[self.applied..] {
                apply_to_order(&mut st, e);
            }
            self.applied = self.events.len();
            self.scratch = Some(st);
        }
        self.scratch.as_ref().unwrap_or(self.base)
    }

    fn emit(&mut self, e: impl Into<OrderEvent>) {
        self.events.push(e.into());
    }
}

fn pre_auth(s: Stage) -> bool {
    matches!(
        s,
        Stage::AuthorisationPending | Stage::AuthorisationUnknown | Stage::ChallengeRequired
    )
}

/// A payment's status as PayKKa reports it (response, notification,
/// query); its strings move into the events.
pub(super) fn observe_payment(o: &Order, mut obs: PaymentObservation) -> Decided {
    use ObservedStatus as O;
    if o.phase().is_terminal() {
        return none();
    }
    let mut em = Emitter::new(o);
    let placed_amount = o.placed.amount;

    match obs.status {
        // A challenge still pending past the reconciler's grace period will
        // never complete (PayKKa expires it).
        O::Processing if obs.past_grace && o.stage == Stage::ChallengeRequired => {
            em.emit(ChallengeExpired {});
        }
        O::Processing | O::Other(_) => {
            if matches!(
                o.stage,
                Stage::AuthorisationPending | Stage::AuthorisationUnknown
            ) && let Some(authentication_url) = obs.authentication_url.take()
            {
                em.emit(ChallengeRequired { authentication_url });
            }
        }
        O::Failure if pre_auth(o.stage) => {
            let (code, description) = error_of(&mut obs, "FAILURE");
            if o.stage == Stage::ChallengeRequired {
                em.emit(ChallengeFailed { code, description });
            } else {
                em.emit(AuthorisationDeclined { code, description });
            }
        }
        O::Failure => {
            if let Some(c) = o.open_capture() {
                let capture_id = c.capture_id;
                let (code, description) = error_of(&mut obs, "FAILURE");
                em.emit(CaptureDeclined {
                    capture_id,
                    code,
                    description,
                });
            }
        }
        O::Canceled if pre_auth(o.stage) => {
            let (code, description) = error_of(&mut obs, "CANCELED");
            em.emit(AuthorisationDeclined { code, description });
        }
        O::Canceled => {
            if o.phase() == Phase::Authorised && o.open_capture().is_none() {
                em.emit(Voided {});
            }
        }
        O::Authorised | O::Success | O::PartiallyRefunded | O::Refunded | O::PartiallyReversed => {
            if pre_auth(o.stage) {
                if o.stage == Stage::ChallengeRequired {
                    em.emit(ChallengeCompleted {});
                }
                let gateway_order_id = match obs.gateway_order_id.take() {
                    Some(id) => id,
                    None => o
                        .gateway_order_id
                        .clone()
                        .ok_or(DomainError::IncompleteObservation("order_id"))?,
                };
                let authed = obs
                    .balances
                    .map(|b| b.authed)
                    .filter(|a| *a > 0)
                    .or(obs.amount.map(|m| m.minor))
                    .unwrap_or(placed_amount.minor)
                    .min(placed_amount.minor);
                em.emit(Authorised {
                    gateway_order_id,
                    amount: Money::new(authed, placed_amount.currency),
                    card: obs.card.take(),
                });
            }
            if obs.status.is_captured() {
                learn_capture(&mut em, &obs);
            }
            if obs.past_grace {
                not_applied_after_grace(&mut em, &obs);
            }
        }
    }

    // A stored token, once the payment went through.
    if let Some(token) = obs.token.take() {
        let st = em.state();
        if st.token.is_none() && st.stage != Stage::Declined && !pre_auth(st.stage) {
            let shopper_reference = obs
                .shopper_reference
                .take()
                .or_else(|| {
                    st.placed
                        .store_token
                        .as_ref()
                        .map(|t| t.shopper_reference.clone())
                })
                .unwrap_or_default();
            em.emit(TokenStored {
                token,
                shopper_reference,
                recurring_agreement_ref: obs.recurring_agreement_ref.take(),
            });
        }
    }
    Ok(em.events)
}

/// Past the grace period since the call was requested, PayKKa's answer
/// shows an open capture or void as not applied: AUTHORIZED for either, or
/// for a capture after an earlier partial one, `balances.captured` not
/// above what the order recorded. It did not happen.
fn not_applied_after_grace(em: &mut Emitter, obs: &PaymentObservation) {
    let st = em.state();
    let authorised_only = obs.status == ObservedStatus::Authorised;
    let not_captured = st
        .open_capture()
        .filter(|_| match obs.balances {
            Some(b) => b.captured <= st.captured,
            None => authorised_only,
        })
        .map(|c| c.capture_id);
    if let Some(capture_id) = not_captured {
        let description = if authorised_only {
            "PayKKa still reports AUTHORIZED after the grace period"
        } else {
            "PayKKa's captured amount did not grow within the grace period"
        };
        em.emit(CaptureDeclined {
            capture_id,
            code: "NOT_CAPTURED".into(),
            description: description.into(),
        });
    }
    if authorised_only && em.state().void.is_some_and(CallProgress::is_open) {
        em.emit(VoidDeclined {
            code: "NOT_VOIDED".into(),
            description: "PayKKa still reports AUTHORIZED after the grace period".into(),
        });
    }
}

/// PayKKa reports money captured: resolve an open capture and record any
/// capture we did not ask for (automatic capture).
pub(super) fn learn_capture(em: &mut Emitter, obs: &PaymentObservation) {
    let st = em.state();
    if !matches!(st.phase(), Phase::Authorised | Phase::PartiallyCaptured) {
        return;
    }
    // What PayKKa says is captured. With balances, they say it. Without
    // (every notification: PayKKa's carries no capture reference and no
    // captured amount), a captured status confirms an open capture only
    // when nothing else can explain it: no earlier capture succeeded, so
    // the money captured can only be this capture's. After an earlier
    // partial capture, a late or duplicated notification of that one looks
    // the same: the capture stays open and the reconciler's query
    // (balances) decides. With none open, SUCCESS from `Authorised` means
    // everything (automatic capture); after our own partial captures a
    // status without balances says nothing new.
    let target = match (obs.balances, st.open_capture()) {
        (Some(b), _) => b.captured,
        (None, Some(c)) if st.captured == 0 => c.amount.minor,
        (None, Some(_)) => st.captured,
        (None, None) if obs.status == ObservedStatus::PartiallyReversed => st.captured,
        (None, None) if st.phase() == Phase::PartiallyCaptured => st.captured,
        (None, None) => st.authorised,
    }
    .min(st.authorised);
    let covered = st
        .open_capture()
        .filter(|c| target >= st.captured.saturating_add(c.amount.minor))
        .map(|c| (c.capture_id, c.amount));
    if let Some((capture_id, amount)) = covered {
        let remainder_released = shows_release(st, obs, amount.minor);
        em.emit(Captured {
            capture_id,
            amount,
            remainder_released,
        });
    }
    let st = em.state();
    if st.open_capture().is_none() && target > st.captured && !st.remainder_released {
        let captured = st.money(target - st.captured);
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
        && shows_release(st, obs, 0)
    {
        let amount = st.money(st.authorised - st.captured);
        em.emit(RemainderReleased { amount });
    }
}

/// Whether PayKKa's balances in `obs` show the rest of the authorisation
/// released once our captures plus `capturing` (a capture being resolved)
/// are captured: something voided, and captured plus voided covers the
/// authorisation (nothing left to capture). `false` without balances.
pub(super) fn shows_release(o: &Order, obs: &PaymentObservation, capturing: i64) -> bool {
    let captured = o.captured.saturating_add(capturing);
    obs.balances.is_some_and(|b| {
        let authed = if b.authed > 0 { b.authed } else { o.authorised };
        captured > 0
            && captured < authed
            && b.voided > 0
            && b.captured.max(captured).saturating_add(b.voided) >= authed
    })
}

/// A refund's status as PayKKa reports it (response, notification, query).
pub(super) fn observe_refund(o: &Order, obs: RefundObservation) -> Decided {
    let Some(r) = open_refund(o, obs.refund_id) else {
        return none();
    };
    match obs.status {
        ObservedRefundStatus::Success => one(Refunded {
            refund_id: r.refund_id,
            gateway_refund_id: obs.gateway_refund_id,
            amount: r.amount,
        }),
        ObservedRefundStatus::Failure => one(RefundDeclined {
            refund_id: r.refund_id,
            code: obs.error_code.unwrap_or_else(|| "FAILURE".into()),
            description: obs.error_description.unwrap_or_default(),
        }),
        ObservedRefundStatus::Reviewing
        | ObservedRefundStatus::Processing
        | ObservedRefundStatus::Other(_) => none(),
    }
}
