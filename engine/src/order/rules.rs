//! The helpers of [`super::decide`]: one function per legal transition
//! of a merchant command or a PayKKa call's outcome.

use super::*;

/// Moves a string out of the (consumed) command.
pub(super) fn take(s: &mut String) -> String {
    std::mem::take(s)
}

pub(super) fn none() -> Decided {
    Ok(Vec::new())
}

pub(super) fn one(e: impl Into<OrderEvent>) -> Decided {
    Ok(vec![e.into()])
}

pub(super) fn illegal(s: &OrderState, cmd: &OrderCommand) -> Decided {
    Err(DomainError::IllegalCommand {
        state: s.phase(),
        command: cmd.kind(),
    })
}

pub(super) fn check_currency(s: &OrderState, m: Money) -> Result<(), DomainError> {
    match s.currency() {
        Some(c) if c != m.currency => Err(DomainError::CurrencyMismatch {
            expected: c,
            got: m.currency,
        }),
        _ => Ok(()),
    }
}

pub(super) fn place(p: &mut PlacePayment) -> Decided {
    if !p.amount.is_positive() {
        return Err(DomainError::NonPositiveAmount {
            operation: "payment",
            amount: p.amount,
        });
    }
    let trans_id = p.order_id.trans_id();
    let (checkout_id, session_id) = match p.checkout.take() {
        Some((c, s)) => (Some(c), Some(s)),
        None => (None, None),
    };
    let via_checkout = checkout_id.is_some();
    let placed = PaymentPlaced {
        order_id: p.order_id,
        merchant_id: MerchantId(std::mem::take(&mut p.merchant_id.0)),
        trans_id: trans_id.clone(),
        amount: p.amount,
        payment_type: p.payment_type,
        authorisation_type: p.authorisation_type,
        capture_method: p.capture_method,
        instrument: std::mem::take(&mut p.instrument),
        store_token: p.store_token.take(),
        agreement_id: p.agreement_id,
        checkout_id,
        session_id,
        merchant_reference: p.annotations.merchant_reference.take(),
        metadata: std::mem::take(&mut p.annotations.metadata),
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
pub(super) fn repeated_place(s: &OrderState, p: &PlacePayment) -> Decided {
    match &s.placed {
        Some(placed)
            if placed.order_id == p.order_id
                && placed.amount == p.amount
                && placed.merchant_id == p.merchant_id =>
        {
            none()
        }
        _ => Err(DomainError::IdReused {
            what: "order id",
            id: p.order_id.to_string(),
        }),
    }
}

pub(super) fn initiate_outcome(s: &OrderState, o: &mut CallOutcome<PaymentObservation>) -> Decided {
    let pending = matches!(
        s.phase(),
        Phase::AuthorisationPending | Phase::AuthorisationUnknown
    );
    match o {
        CallOutcome::Accepted(obs) => observe_payment(s, obs),
        CallOutcome::Declined { code, description } if pending => one(AuthorisationDeclined {
            code: take(code),
            description: take(description),
        }),
        CallOutcome::Unknown { reason } if s.phase() == Phase::AuthorisationPending => {
            one(AuthorisationOutcomeUnknown {
                reason: take(reason),
            })
        }
        // A late or repeated outcome: the state already moved on.
        CallOutcome::Declined { .. } | CallOutcome::Unknown { .. } => none(),
    }
}

pub(super) fn capture(s: &OrderState, c: &CapturePayment) -> Decided {
    if let Some(done) = s.captures.iter().find(|e| e.capture_id == c.capture_id) {
        // Repeat of a capture we already know: same amount = no-op.
        return match c.amount {
            Some(a) if a != done.amount => Err(DomainError::IdReused {
                what: "capture id",
                id: c.capture_id.to_string(),
            }),
            _ => none(),
        };
    }
    let placed = s.placed.as_deref();
    if placed.is_some_and(|p| p.capture_method == CaptureMode::Automatic) {
        return Err(DomainError::AutomaticCapture);
    }
    if s.open_capture().is_some() || s.void.is_some_and(CallProgress::is_open) {
        return Err(DomainError::OperationInFlight {
            state: s.phase(),
            operation: if s.open_capture().is_some() {
                "capture"
            } else {
                "void"
            },
        });
    }
    let remaining = s.authorised_money().checked_sub(s.captured_money())?;
    let amount = c.amount.unwrap_or(remaining);
    check_currency(s, amount)?;
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
    s: &OrderState,
    id: CaptureId,
    o: &mut CallOutcome<PaymentObservation>,
) -> Decided {
    let Some(open) = s.open_capture().filter(|c| c.capture_id == id) else {
        return none(); // resolved already (webhook, query) or never ours
    };
    match o {
        CallOutcome::Accepted(obs) if obs.status == ObservedStatus::Failure => {
            let (code, description) = error_of(obs, "FAILURE");
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
            remainder_released: shows_release(s, obs, open.amount.minor),
        }),
        // Accepted but still AUTHORIZED/PROCESSING: the result comes later.
        CallOutcome::Accepted(_) => none(),
        CallOutcome::Declined { code, description } => one(CaptureDeclined {
            capture_id: id,
            code: take(code),
            description: take(description),
        }),
        CallOutcome::Unknown { reason } if open.progress == CallProgress::Requested => {
            one(CaptureOutcomeUnknown {
                capture_id: id,
                reason: take(reason),
            })
        }
        CallOutcome::Unknown { .. } => none(),
    }
}

pub(super) fn void(s: &OrderState, reason: Option<String>) -> Decided {
    if s.void.is_some_and(CallProgress::is_open) {
        return none(); // repeated void while the first is in flight
    }
    if s.open_capture().is_some() {
        return Err(DomainError::OperationInFlight {
            state: s.phase(),
            operation: "capture",
        });
    }
    one(VoidRequested { reason })
}

pub(super) fn void_outcome(s: &OrderState, o: &mut CallOutcome<PaymentObservation>) -> Decided {
    let Some(progress) = s.void.filter(|p| p.is_open()) else {
        return none();
    };
    match o {
        CallOutcome::Accepted(obs) if obs.status == ObservedStatus::Failure => {
            let (code, description) = error_of(obs, "FAILURE");
            one(VoidDeclined { code, description })
        }
        // The Void of the rest of a final partial capture: released when
        // PayKKa's balances say so; an answer that does not show it leaves
        // the void open for a query to settle.
        CallOutcome::Accepted(obs) if s.awaits_release() => {
            if shows_release(s, obs, 0) {
                one(RemainderReleased {
                    amount: s.money(s.authorised - s.captured),
                })
            } else {
                none()
            }
        }
        CallOutcome::Accepted(obs) if obs.status.is_captured() || s.captured > 0 => {
            // PayKKa says it is captured: the void lost; learn the capture.
            let mut out = vec![OrderEvent::from(VoidDeclined {
                code: "CAPTURED".into(),
                description: "payment was captured before the void".into(),
            })];
            out.extend(observe_payment(s, obs)?);
            Ok(out)
        }
        CallOutcome::Accepted(_) => one(Voided {}),
        CallOutcome::Declined { code, description } => one(VoidDeclined {
            code: take(code),
            description: take(description),
        }),
        CallOutcome::Unknown { reason } if progress == CallProgress::Requested => {
            one(VoidOutcomeUnknown {
                reason: take(reason),
            })
        }
        CallOutcome::Unknown { .. } => none(),
    }
}

pub(super) fn refund(s: &OrderState, r: &mut RefundPayment) -> Decided {
    if let Some(known) = s.refunds.iter().find(|e| e.refund_id == r.refund_id) {
        return if known.amount == r.amount {
            none()
        } else {
            Err(DomainError::IdReused {
                what: "refund id",
                id: r.refund_id.to_string(),
            })
        };
    }
    check_currency(s, r.amount)?;
    if !r.amount.is_positive() {
        return Err(DomainError::NonPositiveAmount {
            operation: "refund",
            amount: r.amount,
        });
    }
    // Plain minor units: the state holds one currency (checked above) and
    // refunded + in flight <= captured (an invariant), so no Money
    // re-validation per step.
    let available = s
        .captured
        .saturating_sub(s.refunded)
        .saturating_sub(s.refunds_in_flight());
    if r.amount.minor > available {
        return Err(DomainError::AmountExceedsAvailable {
            operation: "refund",
            requested: r.amount,
            available: s.money(available),
        });
    }
    let seq = u32::try_from(s.refunds.len() + 1).unwrap_or(u32::MAX);
    let Some(order_id) = s.order_id() else {
        return illegal(s, &OrderCommand::Refund(r.clone()));
    };
    one(RefundRequested {
        refund_id: r.refund_id,
        refund_trans_id: order_id.refund_trans_id(seq),
        amount: r.amount,
        reason: r.reason.take(),
    })
}

pub(super) fn repeated_refund(s: &OrderState, r: &RefundPayment) -> Decided {
    match s.refunds.iter().find(|e| e.refund_id == r.refund_id) {
        Some(known) if known.amount == r.amount => none(),
        _ => illegal(s, &OrderCommand::Refund(r.clone())),
    }
}

pub(super) fn refund_outcome(
    s: &OrderState,
    id: RefundId,
    o: &mut CallOutcome<RefundObservation>,
) -> Decided {
    match o {
        CallOutcome::Accepted(obs) => observe_refund(s, obs),
        CallOutcome::Declined { code, description } => match open_refund(s, id) {
            Some(_) => one(RefundDeclined {
                refund_id: id,
                code: take(code),
                description: take(description),
            }),
            None => none(),
        },
        CallOutcome::Unknown { reason } => match open_refund(s, id) {
            Some(r) if r.progress == CallProgress::Requested => one(RefundOutcomeUnknown {
                refund_id: id,
                reason: take(reason),
            }),
            _ => none(),
        },
    }
}

pub(super) fn open_refund(s: &OrderState, id: RefundId) -> Option<&RefundEntry> {
    s.refunds
        .iter()
        .find(|r| r.refund_id == id && r.progress.is_open())
}

/// The error code and description of `obs`, moved out of it (the
/// observation is consumed by decide: no copy).
pub(super) fn error_of(obs: &mut PaymentObservation, default: &str) -> (String, String) {
    (
        obs.take_detail(|d| d.error_code.take())
            .unwrap_or_else(|| default.to_owned()),
        obs.take_detail(|d| d.error_description.take())
            .unwrap_or_default(),
    )
}
