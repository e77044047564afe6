//! The order's transition table as data, and the Mermaid diagram made from
//! it. [`TRANSITIONS`] is checked against [`super::decide`] by
//! [`explore`], which runs every command of a representative alphabet from
//! every reachable state; `tests/state_diagram.rs` fails when they differ or
//! when `docs/state-machine.md` is stale.

use std::collections::{BTreeSet, HashSet, VecDeque};

use payorch_schemas::events::order::{InstrumentSummary, TokenRequest};
use payorch_schemas::events::{
    AuthorisationKind, CaptureId, CaptureMode, MerchantId, OrderId, PaymentKind, RefundId,
    TokenPurpose,
};
use payorch_schemas::{Currency, Money};
use uuid::Uuid;

use super::*;

use CommandKind as K;
use Phase as P;

/// Every (from, command, to) an order can take with at least one event.
#[rustfmt::skip]
pub const TRANSITIONS: &[(Phase, CommandKind, Phase)] = &[
    (P::New, K::Place, P::AuthorisationPending),
    (P::AuthorisationPending, K::RecordInitiateOutcome, P::AuthorisationUnknown),
    (P::AuthorisationPending, K::RecordInitiateOutcome, P::ChallengeRequired),
    (P::AuthorisationPending, K::RecordInitiateOutcome, P::Authorised),
    (P::AuthorisationPending, K::RecordInitiateOutcome, P::Captured),
    (P::AuthorisationPending, K::RecordInitiateOutcome, P::Declined),
    (P::AuthorisationPending, K::ApplyGatewayObservation, P::ChallengeRequired),
    (P::AuthorisationPending, K::ApplyGatewayObservation, P::Authorised),
    (P::AuthorisationPending, K::ApplyGatewayObservation, P::Captured),
    (P::AuthorisationPending, K::ApplyGatewayObservation, P::Declined),
    (P::AuthorisationUnknown, K::RecordInitiateOutcome, P::ChallengeRequired),
    (P::AuthorisationUnknown, K::RecordInitiateOutcome, P::Authorised),
    (P::AuthorisationUnknown, K::RecordInitiateOutcome, P::Captured),
    (P::AuthorisationUnknown, K::RecordInitiateOutcome, P::Declined),
    (P::AuthorisationUnknown, K::ApplyGatewayObservation, P::ChallengeRequired),
    (P::AuthorisationUnknown, K::ApplyGatewayObservation, P::Authorised),
    (P::AuthorisationUnknown, K::ApplyGatewayObservation, P::Captured),
    (P::AuthorisationUnknown, K::ApplyGatewayObservation, P::Declined),
    (P::ChallengeRequired, K::RecordInitiateOutcome, P::Authorised),
    (P::ChallengeRequired, K::RecordInitiateOutcome, P::Captured),
    (P::ChallengeRequired, K::RecordInitiateOutcome, P::Declined),
    (P::ChallengeRequired, K::CompleteChallenge, P::AuthorisationPending),
    (P::ChallengeRequired, K::ExpireChallenge, P::Declined),
    (P::ChallengeRequired, K::ApplyGatewayObservation, P::Authorised),
    (P::ChallengeRequired, K::ApplyGatewayObservation, P::Captured),
    (P::ChallengeRequired, K::ApplyGatewayObservation, P::Declined),
    (P::Authorised, K::RecordInitiateOutcome, P::Authorised),
    (P::Authorised, K::RecordInitiateOutcome, P::PartiallyCaptured),
    (P::Authorised, K::RecordInitiateOutcome, P::Captured),
    (P::Authorised, K::RecordInitiateOutcome, P::Voided),
    (P::Authorised, K::Capture, P::Authorised),
    (P::Authorised, K::RecordCaptureOutcome, P::Authorised),
    (P::Authorised, K::RecordCaptureOutcome, P::PartiallyCaptured),
    (P::Authorised, K::RecordCaptureOutcome, P::Captured),
    (P::Authorised, K::Void, P::Authorised),
    (P::Authorised, K::RecordVoidOutcome, P::Authorised),
    (P::Authorised, K::RecordVoidOutcome, P::Voided),
    (P::Authorised, K::ApplyGatewayObservation, P::Authorised),
    (P::Authorised, K::ApplyGatewayObservation, P::PartiallyCaptured),
    (P::Authorised, K::ApplyGatewayObservation, P::Captured),
    (P::Authorised, K::ApplyGatewayObservation, P::Voided),
    (P::PartiallyCaptured, K::RecordInitiateOutcome, P::PartiallyCaptured),
    (P::PartiallyCaptured, K::RecordInitiateOutcome, P::Captured),
    (P::PartiallyCaptured, K::RecordInitiateOutcome, P::PartiallyRefunded),
    (P::PartiallyCaptured, K::Capture, P::PartiallyCaptured),
    (P::PartiallyCaptured, K::RecordCaptureOutcome, P::PartiallyCaptured),
    (P::PartiallyCaptured, K::RecordCaptureOutcome, P::Captured),
    (P::PartiallyCaptured, K::RecordCaptureOutcome, P::PartiallyRefunded),
    (P::PartiallyCaptured, K::Void, P::PartiallyCaptured),
    (P::PartiallyCaptured, K::RecordVoidOutcome, P::PartiallyCaptured),
    (P::PartiallyCaptured, K::Refund, P::PartiallyCaptured),
    (P::PartiallyCaptured, K::RecordRefundOutcome, P::PartiallyCaptured),
    (P::PartiallyCaptured, K::ApplyGatewayObservation, P::PartiallyCaptured),
    (P::PartiallyCaptured, K::ApplyGatewayObservation, P::Captured),
    (P::PartiallyCaptured, K::ApplyGatewayObservation, P::PartiallyRefunded),
    (P::Captured, K::RecordVoidOutcome, P::Captured),
    (P::Captured, K::Refund, P::Captured),
    (P::Captured, K::RecordRefundOutcome, P::Captured),
    (P::Captured, K::RecordRefundOutcome, P::PartiallyRefunded),
    (P::Captured, K::RecordRefundOutcome, P::Refunded),
    (P::Captured, K::ApplyGatewayObservation, P::Captured),
    (P::PartiallyRefunded, K::RecordVoidOutcome, P::PartiallyRefunded),
    (P::PartiallyRefunded, K::Refund, P::PartiallyRefunded),
    (P::PartiallyRefunded, K::RecordRefundOutcome, P::PartiallyRefunded),
    (P::PartiallyRefunded, K::ApplyGatewayObservation, P::PartiallyRefunded),
];

/// The Mermaid `stateDiagram-v2` of [`TRANSITIONS`].
pub fn mermaid() -> String {
    use std::collections::BTreeMap;
    let mut edges: BTreeMap<(Phase, Phase), Vec<&'static str>> = BTreeMap::new();
    for (from, kind, to) in TRANSITIONS {
        edges.entry((*from, *to)).or_default().push(kind.name());
    }
    let mut out = String::from("stateDiagram-v2\n");
    for ((from, to), labels) in &edges {
        let from_name = if *from == P::New { "[*]" } else { from.name() };
        out.push_str(&format!(
            "    {from_name} --> {}: {}\n",
            to.name(),
            labels.join(", ")
        ));
    }
    for p in Phase::ALL.iter().filter(|p| p.is_terminal()) {
        out.push_str(&format!("    {} --> [*]\n", p.name()));
    }
    out
}

fn sample_commands(order_id: OrderId) -> Vec<OrderCommand> {
    let eur = |m| Money::new(m, Currency::EUR);
    let cap = |n: u128| CaptureId(Uuid::from_u128(n));
    let rf = |n: u128| RefundId(Uuid::from_u128(n));
    let obs = |st: ObservedStatus| {
        PaymentObservation::status(ObservationSource::Notification, st).with_gateway_order_id("GW1")
    };
    let place = |capture_method| PlacePayment {
        order_id,
        merchant_id: MerchantId::new("m1"),
        amount: eur(1000),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method,
        instrument: InstrumentSummary {
            method: "BANKCARD".into(),
            card: None,
            token: None,
        },
        store_token: Some(TokenRequest {
            purpose: TokenPurpose::CardOnFile,
            shopper_reference: "s1".into(),
        }),
        agreement_id: None,
        checkout: None,
        annotations: Default::default(),
    };
    let outcomes = || {
        vec![
            CallOutcome::Accepted(obs(ObservedStatus::Success)),
            CallOutcome::Declined {
                code: "2099".into(),
                description: "Invalid Card".into(),
            },
            CallOutcome::Unknown {
                reason: "timeout".into(),
            },
        ]
    };
    let mut cmds = vec![
        OrderCommand::Place(Box::new(place(CaptureMode::Manual))),
        OrderCommand::Place(Box::new(place(CaptureMode::Automatic))),
        OrderCommand::CompleteChallenge,
        OrderCommand::ExpireChallenge,
        OrderCommand::Capture(CapturePayment {
            capture_id: cap(1),
            amount: Some(eur(400)),
            final_capture: false,
        }),
        OrderCommand::Capture(CapturePayment {
            capture_id: cap(2),
            amount: None,
            final_capture: false,
        }),
        OrderCommand::Capture(CapturePayment {
            capture_id: cap(3),
            amount: Some(eur(300)),
            final_capture: true,
        }),
        OrderCommand::Void { reason: None },
        OrderCommand::ReleaseRemainder,
        OrderCommand::Refund(RefundPayment {
            refund_id: rf(1),
            amount: eur(200),
            reason: None,
        }),
        OrderCommand::Refund(RefundPayment {
            refund_id: rf(2),
            amount: eur(1000),
            reason: None,
        }),
        OrderCommand::Refund(RefundPayment {
            refund_id: rf(3),
            amount: eur(400),
            reason: None,
        }),
    ];
    for st in [
        ObservedStatus::Authorised,
        ObservedStatus::Success,
        ObservedStatus::Failure,
        ObservedStatus::Canceled,
        ObservedStatus::PartiallyReversed,
    ] {
        cmds.push(OrderCommand::RecordInitiateOutcome(CallOutcome::Accepted(
            obs(st.clone()),
        )));
        cmds.push(OrderCommand::ApplyGatewayObservation(Observation::Payment(
            obs(st),
        )));
    }
    let challenge =
        obs(ObservedStatus::Processing).with_authentication_url("https://acs.example/3ds");
    cmds.push(OrderCommand::RecordInitiateOutcome(CallOutcome::Accepted(
        challenge.clone(),
    )));
    cmds.push(OrderCommand::ApplyGatewayObservation(Observation::Payment(
        challenge,
    )));
    let mut settled = obs(ObservedStatus::Authorised);
    settled.settled = true;
    cmds.push(OrderCommand::ApplyGatewayObservation(Observation::Payment(
        settled,
    )));
    cmds.push(OrderCommand::ApplyGatewayObservation(
        Observation::PaymentNotFound { settled: true },
    ));
    for o in outcomes() {
        cmds.push(OrderCommand::RecordInitiateOutcome(o.clone()));
        cmds.push(OrderCommand::RecordVoidOutcome(match o.clone() {
            CallOutcome::Accepted(_) => CallOutcome::Accepted(obs(ObservedStatus::Canceled)),
            other => other,
        }));
        for n in 1..=3 {
            cmds.push(OrderCommand::RecordCaptureOutcome {
                capture_id: cap(n),
                outcome: o.clone(),
            });
        }
    }
    for n in 1..=3 {
        let r = |status| RefundObservation {
            source: ObservationSource::Response,
            refund_id: rf(n),
            status,
            gateway_refund_id: None,
            error_code: None,
            error_description: None,
        };
        for outcome in [
            CallOutcome::Accepted(r(ObservedRefundStatus::Success)),
            CallOutcome::Accepted(r(ObservedRefundStatus::Failure)),
            CallOutcome::Declined {
                code: "1006".into(),
                description: "not allowed".into(),
            },
            CallOutcome::Unknown {
                reason: "timeout".into(),
            },
        ] {
            cmds.push(OrderCommand::RecordRefundOutcome {
                refund_id: rf(n),
                outcome: Box::new(outcome),
            });
        }
        cmds.push(OrderCommand::ApplyGatewayObservation(
            Observation::RefundNotFound {
                refund_id: rf(n),
                settled: true,
            },
        ));
    }
    cmds
}

/// Runs the sample command alphabet from every reachable state (breadth
/// first, states deduplicated) and returns every (from, command, to) that
/// emitted events. Also checks, for every step, that evolve accepts the
/// events, that `evolve_owned` agrees with it and the money invariants hold; the first violation is returned
/// as `Err`.
pub fn explore() -> Result<BTreeSet<(Phase, CommandKind, Phase)>, String> {
    let order_id = OrderId(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001));
    let cmds = sample_commands(order_id);
    let mut seen: HashSet<OrderState> = HashSet::new();
    let mut queue = VecDeque::from([OrderState::default()]);
    let mut found = BTreeSet::new();
    while let Some(state) = queue.pop_front() {
        if !seen.insert(state.clone()) {
            continue;
        }
        for cmd in &cmds {
            let kind = cmd.kind();
            let Ok(events) = decide(&state, cmd.clone()) else {
                continue;
            };
            if events.is_empty() {
                continue;
            }
            if state.phase().is_terminal() {
                return Err(format!(
                    "terminal {} emitted {events:?} on {kind}",
                    state.phase()
                ));
            }
            let next = events.iter().fold(state.clone(), evolve);
            if events.iter().cloned().fold(state.clone(), evolve_owned) != next {
                return Err(format!(
                    "evolve_owned and evolve disagree on {events:?} from {state:?}"
                ));
            }
            next.check_invariants()?;
            found.insert((state.phase(), kind, next.phase()));
            if !seen.contains(&next) && seen.len() + queue.len() < 4_000 {
                queue.push_back(next);
            }
        }
    }
    Ok(found)
}
