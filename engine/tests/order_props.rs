//! Property tests over random command and gateway-outcome sequences:
//! the money invariants hold, replaying the emitted events gives the live
//! state, every emitted event survives a JSON round trip, and terminal
//! states absorb.

use payorch_engine::order::*;
use payorch_schemas::events::order::InstrumentSummary;
use payorch_schemas::events::{
    AuthorisationKind, CaptureId, CaptureMode, MerchantId, OrderEvent, OrderId, PaymentKind,
    RefundId,
};
use payorch_schemas::{Currency, Money};
use proptest::prelude::*;
use uuid::Uuid;

fn eur(m: i64) -> Money {
    Money::new(m, Currency::EUR)
}

#[derive(Clone, Debug)]
enum Step {
    Capture {
        id: u8,
        amount: Option<i64>,
        final_capture: bool,
    },
    CaptureOutcome {
        id: u8,
        outcome: u8,
    },
    Void,
    VoidOutcome {
        outcome: u8,
    },
    Refund {
        id: u8,
        amount: i64,
    },
    RefundOutcome {
        id: u8,
        outcome: u8,
    },
    InitiateOutcome {
        outcome: u8,
    },
    Observe {
        status: u8,
        captured: Option<i64>,
        settled: bool,
    },
    ObserveRefund {
        id: u8,
        success: bool,
    },
    NotFound {
        settled: bool,
    },
    CompleteChallenge,
    ExpireChallenge,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..4, proptest::option::of(1i64..1200), any::<bool>()).prop_map(
            |(id, amount, final_capture)| Step::Capture {
                id,
                amount,
                final_capture
            }
        ),
        (0u8..4, 0u8..5).prop_map(|(id, outcome)| Step::CaptureOutcome { id, outcome }),
        Just(Step::Void),
        (0u8..5).prop_map(|outcome| Step::VoidOutcome { outcome }),
        (0u8..4, -5i64..1200).prop_map(|(id, amount)| Step::Refund { id, amount }),
        (0u8..4, 0u8..5).prop_map(|(id, outcome)| Step::RefundOutcome { id, outcome }),
        (0u8..7).prop_map(|outcome| Step::InitiateOutcome { outcome }),
        (0u8..8, proptest::option::of(0i64..1200), any::<bool>()).prop_map(
            |(status, captured, settled)| Step::Observe {
                status,
                captured,
                settled
            }
        ),
        (0u8..4, any::<bool>()).prop_map(|(id, success)| Step::ObserveRefund { id, success }),
        any::<bool>().prop_map(|settled| Step::NotFound { settled }),
        Just(Step::CompleteChallenge),
        Just(Step::ExpireChallenge),
    ]
}

fn status(n: u8) -> ObservedStatus {
    [
        ObservedStatus::Processing,
        ObservedStatus::Authorised,
        ObservedStatus::Success,
        ObservedStatus::Failure,
        ObservedStatus::Canceled,
        ObservedStatus::PartiallyRefunded,
        ObservedStatus::PartiallyReversed,
        ObservedStatus::Refunded,
    ][usize::from(n) % 8]
        .clone()
}

fn payment_obs(n: u8, captured: Option<i64>, settled: bool) -> PaymentObservation {
    let mut o = PaymentObservation::status(ObservationSource::Query, status(n))
        .with_gateway_order_id("GW1");
    if n == 0 {
        o = o.with_authentication_url("https://acs.example");
    }
    if let Some(c) = captured {
        o = o.with_balances(Balances {
            authed: 1000,
            captured: c,
            refunded: 0,
            voided: 0,
        });
    }
    o.past_grace = settled;
    o
}

fn outcome<T>(n: u8, accepted: impl FnOnce() -> T) -> CallOutcome<T> {
    match n % 3 {
        0 => CallOutcome::Accepted(accepted()),
        1 => CallOutcome::Declined {
            code: "2099".into(),
            description: "Invalid Card".into(),
        },
        _ => CallOutcome::Unknown {
            reason: "timeout".into(),
        },
    }
}

fn refund_obs(id: u8, success: bool) -> RefundObservation {
    RefundObservation {
        source: ObservationSource::Notification,
        refund_id: RefundId(Uuid::from_u128(u128::from(id) + 100)),
        status: if success {
            ObservedRefundStatus::Success
        } else {
            ObservedRefundStatus::Failure
        },
        gateway_refund_id: None,
        error_code: None,
        error_description: None,
    }
}

fn command(s: Step) -> OrderCommand {
    let cap = |id: u8| CaptureId(Uuid::from_u128(u128::from(id) + 1));
    let rf = |id: u8| RefundId(Uuid::from_u128(u128::from(id) + 100));
    match s {
        Step::Capture {
            id,
            amount,
            final_capture,
        } => OrderCommand::Capture(CapturePayment {
            capture_id: cap(id),
            amount: amount.map(eur),
            final_capture,
        }),
        Step::CaptureOutcome { id, outcome: o } => OrderCommand::RecordCaptureOutcome {
            capture_id: cap(id),
            outcome: outcome(o, || payment_obs(if o >= 3 { 6 } else { 2 }, None, false)),
        },
        Step::Void => OrderCommand::Void { reason: None },
        Step::VoidOutcome { outcome: o } => {
            OrderCommand::RecordVoidOutcome(outcome(o, || payment_obs(4, None, false)))
        }
        Step::Refund { id, amount } => OrderCommand::Refund(RefundPayment {
            refund_id: rf(id),
            amount: eur(amount),
            reason: None,
        }),
        Step::RefundOutcome { id, outcome: o } => OrderCommand::RecordRefundOutcome {
            refund_id: rf(id),
            outcome: outcome(o, || refund_obs(id, o != 3)),
        },
        Step::InitiateOutcome { outcome: o } => {
            OrderCommand::RecordInitiateOutcome(outcome(o, || payment_obs(o % 4, None, false)))
        }
        Step::Observe {
            status,
            captured,
            settled,
        } => OrderCommand::ApplyGatewayObservation(Observation::Payment(payment_obs(
            status, captured, settled,
        ))),
        Step::ObserveRefund { id, success } => {
            OrderCommand::ApplyGatewayObservation(Observation::Refund(refund_obs(id, success)))
        }
        Step::NotFound { settled } => {
            OrderCommand::ApplyGatewayObservation(Observation::PaymentNotFound {
                past_grace: settled,
            })
        }
        Step::CompleteChallenge => OrderCommand::CompleteChallenge,
        Step::ExpireChallenge => OrderCommand::ExpireChallenge,
    }
}

fn place(manual: bool) -> OrderCommand {
    OrderCommand::Place(PlacePayment {
        order_id: OrderId(Uuid::from_u128(42)),
        merchant_id: MerchantId::new("m"),
        amount: eur(1000),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: if manual {
            CaptureMode::Manual
        } else {
            CaptureMode::Automatic
        },
        instrument: InstrumentSummary {
            method: "BANKCARD".into(),
            card: None,
            token: None,
        },
        store_token: None,
        agreement_id: None,
        checkout: None,
        annotations: Default::default(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_runs_keep_every_promise(manual in any::<bool>(), steps in proptest::collection::vec(step(), 0..40)) {
        let mut state = OrderState::default();
        let mut history: Vec<OrderEvent> = Vec::new();
        for cmd in std::iter::once(place(manual)).chain(steps.into_iter().map(command)) {
            let was_terminal = state.phase().is_terminal();
            let kind = cmd.kind();
            let Ok(events) = decide(&state, cmd) else { continue };
            if was_terminal {
                prop_assert!(events.is_empty(), "terminal {} emitted {:?} on {}", state.phase(), events, kind);
            }
            for e in &events {
                // The stored form decodes back to the same event.
                let json = serde_json::to_string(e).unwrap();
                prop_assert_eq!(&OrderEvent::from_json(e.event_type(), &json).unwrap(), e);
                state = evolve(state, e);
                if let Err(broken) = state.check_invariants() {
                    return Err(TestCaseError::fail(broken));
                }
            }
            history.extend(events);
            // Replaying everything emitted so far gives the live state.
            prop_assert_eq!(&fold(&history), &state);
        }
    }
}
