//! The helpers of [`super::decide`]: one function per legal transition
//! of a merchant command or a PayKKa call's outcome. Each takes the placed
//! order and owns the command's data (it moves into the events).

use super::*;

pub(super) fn none() -> Decided {
    Ok(Vec::new())
}

pub(super) fn one(e: impl Into<OrderEvent>) -> Decided {
    Ok(vec![e.into()])
}

pub(super) fn illegal(state: Phase, cmd: &OrderCommand) -> Decided {
    Err(DomainError::IllegalCommand {
        state,
        command: cmd.kind(),
    })
}

pub(super) fn check_currency(o: &Order, m: Money) -> Result<(), DomainError> {
    if o.currency() == m.currency {
        Ok(())
    } else {
        Err(DomainError::CurrencyMismatch {
            expected: o.currency(),
            got: m.currency,
        })
    }
}

pub(super) fn place(p: PlacePayment) -> Decided {
    if !p.amount.is_positive() {
        return Err(DomainError::NonPositiveAmount {
            operation: "payment",
            amount: p.amount,
        });
    }
    let trans_id = p.order_id.trans_id();
    let (checkout_id, session_id) = match p.checkout {
        Some((c, s)) => (Some(c), Some(s)),
        None => (None, None),
    };
    let via_checkout = checkout_id.is_some();
    let placed = PaymentPlaced {
        order_id: p.order_id,
        merchant_id: p.merchant_id,
        trans_id: trans_id.clone(),
        amount: p.amount,
        payment_type: p.payment_type,
        authorisation_type: p.authorisation_type,
        capture_method: p.capture_method,
        instrument: p.instrument,
        store_token: p.store_token,
        agreement_id: p.agreement_id,
        checkout_id,
        session_id,
        merchant_reference: p.annotations.merchant_reference,
        metadata: p.annotations.metadata,
    };
    let mut out = Vec::with_capacity(2);
    out.push(OrderEvent::PaymentPlaced(std::sync::Arc::new(placed)));
    if !via_checkout {
        out.push(AuthorisationRequested { trans_id }.into());
    }
    Ok(out)
}

/// Placing an existing order again: the same placement is a no-op, another
/// one an error.
pub(super) fn repeated_place(o: &Order, p: &PlacePayment) -> Decided {
    let placed = &o.placed;
    if placed.order_id == p.order_id
        && placed.amount == p.amount
        && placed.merchant_id == p.merchant_id
    {
        none()
    } else {
        Err(DomainError::IdReused {
            what: "order id",
            id: p.order_id.to_string(),
        })
    }
}

pub(super) fn initiate_outcome(o: &Order, out: CallOutcome<PaymentObservation>) -> Decided {
    let pending = matches!(
        o.stage,
        Stage::AuthorisationPending | Stage::AuthorisationUnknown
    );
    match out {
        CallOutcome::Accepted(obs) => observe_payment(o, obs),
        CallOutcome::Declined { code, description } if pending => {
            one(AuthorisationDeclined { code, description })
        }
        CallOutcome::Unknown { reason } if o.stage == Stage::AuthorisationPending => {
            one(AuthorisationOutcomeUnknown { reason })
        }
        // A late or repeated outcome: the state already moved on.
        CallOutcome::Declined { .. } | CallOutcome::Unknown { .. } => none(),
    }
}

pub(super) fn capture(o: &Order, c: &CapturePayment) -> Decided {
    if let Some(done) = o.captures.iter().find(|e| e.capture_id == c.capture_id) {
        // Repeat of a capture we already know: same amount = no-op.
        return match c.amount {
            Some(a) if a != done.amount => Err(DomainError::IdReused {
                what: "capture id",
                id: c.capture_id.to_string(),
            }),
            _ => none(),
        };
    }
    if o.placed.capture_method == CaptureMode::Automatic {
        return Err(DomainError::AutomaticCapture);
    }
    if o.open_capture().is_some() || o.void.is_some_and(CallProgress::is_open) {
        return Err(DomainError::OperationInFlight {
            state: o.phase(),
            operation: if o.open_capture().is_some() {
                "capture"
            } else {
                "void"
            },
        });
    }
    let remaining = o.money(o.authorised).checked_sub(o.money(o.captured))?;
    let amount = c.amount.unwrap_or(remaining);
    check_currency(o, amount)?;
    if !amount.is_positive() {
        return Err(DomainError::NonPositiveAmount {
            operation: "capture",
            amount,
        });
    }
    if amount.minor > remaining.minor {
        return Err(DomainError::AmountExceedsAvailable {
            operation: "capture",
            requested: amount,
            available: remaining,
        });
    }
    one(CaptureRequested {
        capture_id: c.capture_id,
        amount,
        final_capture: c.final_capture || amount == remaining,
    })
}

pub(super) fn capture_outcome(
    o: &Order,
    id: CaptureId,
    out: CallOutcome<PaymentObservation>,
) -> Decided {
    let Some(open) = o.open_capture().filter(|c| c.capture_id == id) else {
        return none(); // resolved already (webhook, query) or never ours
    };
    match out {
        CallOutcome::Accepted(mut obs) if obs.status == ObservedStatus::Failure => {
            let (code, description) = error_of(&mut obs, "FAILURE");
            one(CaptureDeclined {
                capture_id: id,
                code,
                description,
            })
        }
        // Whether the rest is released is PayKKa's to say (its balances),
        // never our request's `final_capture` (how PayKKa releases it is
        // [INFERRED]; without balances a query or notification tells).
        CallOutcome::Accepted(obs) if obs.status.is_captured() => one(Captured {
            capture_id: id,
            amount: open.amount,
            remainder_released: shows_release(o, &obs, open.amount.minor),
        }),
        // Accepted but still AUTHORIZED/PROCESSING: the result comes later.
        CallOutcome::Accepted(_) => none(),
        CallOutcome::Declined { code, description } => one(CaptureDeclined {
            capture_id: id,
            code,
            description,
        }),
        CallOutcome::Unknown { reason } if open.progress == CallProgress::Requested => {
            one(CaptureOutcomeUnknown {
                capture_id: id,
                reason,
            })
        }
        CallOutcome::Unknown { .. } => none(),
    }
}

pub(super) fn void(o: &Order, reason: Option<String>) -> Decided {
    if o.void.is_some_and(CallProgress::is_open) {
        return none(); // repeated void while the first is in flight
    }
    if o.open_capture().is_some() {
        return Err(DomainError::OperationInFlight {
            state: o.phase(),
            operation: "capture",
        });
    }
    one(VoidRequested { reason })
}

pub(super) fn void_outcome(o: &Order, out: CallOutcome<PaymentObservation>) -> Decided {
    let Some(progress) = o.void.filter(|p| p.is_open()) else {
        return none();
    };
    match out {
        CallOutcome::Accepted(mut obs) if obs.status == ObservedStatus::Failure => {
            let (code, description) = error_of(&mut obs, "FAILURE");
            one(VoidDeclined { code, description })
        }
        // The Void of the rest of a final partial capture: released when
        // PayKKa's balances say so; an answer that does not show it leaves
        // the void open for a query to settle.
        CallOutcome::Accepted(obs) if o.awaits_release() => {
            if shows_release(o, &obs, 0) {
                one(RemainderReleased {
                    amount: o.money(o.authorised - o.captured),
                })
            } else {
                none()
            }
        }
        CallOutcome::Accepted(obs) if obs.status.is_captured() || o.captured > 0 => {
            // PayKKa says it is captured: the void lost; learn the capture.
            let mut events = vec![OrderEvent::from(VoidDeclined {
                code: "CAPTURED".into(),
                description: "payment was captured before the void".into(),
            })];
            events.extend(observe_payment(o, obs)?);
            Ok(events)
        }
        CallOutcome::Accepted(_) => one(Voided {}),
        CallOutcome::Declined { code, description } => one(VoidDeclined { code, description }),
        CallOutcome::Unknown { reason } if progress == CallProgress::Requested => {
            one(VoidOutcomeUnknown { reason })
        }
        CallOutcome::Unknown { .. } => none(),
    }
}

pub(super) fn refund(o: &Order, r: RefundPayment) -> Decided {
    if let Some(known) = o.refunds.iter().find(|e| e.refund_id == r.refund_id) {
        return if known.amount == r.amount {
            none()
        } else {
            Err(DomainError::IdReused {
                what: "refund id",
                id: r.refund_id.to_string(),
            })
        };
    }
    check_currency(o, r.amount)?;
    if !r.amount.is_positive() {
        return Err(DomainError::NonPositiveAmount {
            operation: "refund",
            amount: r.amount,
        });
    }
    // Plain minor units: the order holds one currency (checked above) and
    // refunded + in flight <= captured (an invariant).
    let available = o
        .captured
        .saturating_sub(o.refunded)
        .saturating_sub(o.refunds_in_flight());
    if r.amount.minor > available {
        return Err(DomainError::AmountExceedsAvailable {
            operation: "refund",
            requested: r.amount,
            available: o.money(available),
        });
    }
    let seq = u32::try_from(o.refunds.len() + 1).unwrap_or(u32::MAX);
    one(RefundRequested {
        refund_id: r.refund_id,
        refund_trans_id: o.order_id().refund_trans_id(seq),
        amount: r.amount,
        reason: r.reason,
    })
}

/// A refund of a fully refunded order: a repeat of a known refund is a
/// no-op, anything else is refused.
pub(super) fn repeated_refund(o: &Order, r: RefundPayment) -> Decided {
    match o.refunds.iter().find(|e| e.refund_id == r.refund_id) {
        Some(known) if known.amount == r.amount => none(),
        _ => illegal(o.phase(), &OrderCommand::Refund(r)),
    }
}

pub(super) fn refund_outcome(
    o: &Order,
    id: RefundId,
    out: CallOutcome<RefundObservation>,
) -> Decided {
    match out {
        CallOutcome::Accepted(obs) => observe_refund(o, obs),
        CallOutcome::Declined { code, description } => match open_refund(o, id) {
            Some(_) => one(RefundDeclined {
                refund_id: id,
                code,
                description,
            }),
            None => none(),
        },
        CallOutcome::Unknown { reason } => match open_refund(o, id) {
            Some(r) if r.progress == CallProgress::Requested => one(RefundOutcomeUnknown {
                refund_id: id,
                reason,
            }),
            _ => none(),
        },
    }
}

pub(super) fn open_refund(o: &Order, id: RefundId) -> Option<&RefundEntry> {
    o.refunds
        .iter()
        .find(|r| r.refund_id == id && r.progress.is_open())
}

/// The error code and description of `obs`, moved out of it.
pub(super) fn error_of(obs: &mut PaymentObservation, default: &str) -> (String, String) {
    (
        obs.error_code.take().unwrap_or_else(|| default.to_owned()),
        obs.error_description.take().unwrap_or_default(),
    )
}
