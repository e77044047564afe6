//! The order's grammar as a graph, found by exhaustive exploration of
//! [`super::decide`], and the document made from it.
//!
//! [`explore`] runs a command alphabet from every reachable state (breadth
//! first, states deduplicated) and records every edge: the phase before,
//! the command class, the phase after, and which events the edge appends.
//! The alphabet has every command, every outcome class (accepted, declined,
//! unknown) of every call, payment observations with and without balances
//! (notification, query, past the grace period), refund observations, and
//! amounts that add up exactly (a refund of 4.00 then one of 6.00 of a
//! 10.00 capture). `tests/state_diagram.rs` checks `docs/state-machine.md`
//! against it: an edge the code gained or lost fails the test.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use payorch_schemas::events::order::{InstrumentSummary, TokenRequest};
use payorch_schemas::events::{
    AuthorisationKind, CaptureId, CaptureMode, MerchantId, OrderId, PaymentKind, RefundId,
    TokenPurpose,
};
use payorch_schemas::{Currency, Money};
use uuid::Uuid;

use super::*;

/// One edge of the grammar: phase before, command class, phase after.
pub type Edge = (Phase, &'static str, Phase);

/// Every edge with the event types it appends (over every way it was
/// taken).
pub type Edges = BTreeMap<Edge, BTreeSet<&'static str>>;

/// The command class of a command: its kind, refined by outcome class and
/// observation kind (what the diagram labels an edge with).
pub fn command_class(cmd: &OrderCommand) -> &'static str {
    fn outcome<T>(
        o: &CallOutcome<T>,
        acc: &'static str,
        dec: &'static str,
        unk: &'static str,
    ) -> &'static str {
        match o {
            CallOutcome::Accepted(_) => acc,
            CallOutcome::Declined { .. } => dec,
            CallOutcome::Unknown { .. } => unk,
        }
    }
    match cmd {
        OrderCommand::Place(_) => "place",
        OrderCommand::RecordInitiateOutcome(o) => outcome(
            o,
            "initiate answered",
            "initiate declined",
            "initiate unknown",
        ),
        OrderCommand::CompleteChallenge => "complete challenge",
        OrderCommand::ExpireChallenge => "expire challenge",
        OrderCommand::Capture(_) => "capture",
        OrderCommand::RecordCaptureOutcome { outcome: o, .. } => {
            outcome(o, "capture answered", "capture declined", "capture unknown")
        }
        OrderCommand::Void { .. } => "void",
        OrderCommand::ReleaseRemainder => "release remainder",
        OrderCommand::RecordVoidOutcome(o) => {
            outcome(o, "void answered", "void declined", "void unknown")
        }
        OrderCommand::Refund(_) => "refund",
        OrderCommand::RecordRefundOutcome { outcome: o, .. } => {
            outcome(o, "refund answered", "refund declined", "refund unknown")
        }
        OrderCommand::ApplyGatewayObservation(o) => match o {
            Observation::Payment(p) if p.past_grace => "payment query past grace",
            Observation::Payment(p) if p.balances.is_some() => "payment query",
            Observation::Payment(_) => "payment notification",
            Observation::Refund(_) => "refund notification",
            Observation::PaymentNotFound { past_grace: true } => "payment not found past grace",
            Observation::PaymentNotFound { past_grace: false } => "payment not found",
            Observation::RefundNotFound { .. } => "refund not found",
        },
    }
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
    let mut cmds = vec![
        OrderCommand::Place(place(CaptureMode::Manual)),
        OrderCommand::Place(place(CaptureMode::Automatic)),
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
    ];
    // Refunds of 4.00, 6.00 (together exactly 10.00) and 10.00.
    for (n, amount) in [(1, 400), (2, 600), (3, 1000)] {
        cmds.push(OrderCommand::Refund(RefundPayment {
            refund_id: rf(n),
            amount: eur(amount),
            reason: None,
        }));
    }
    // Payment observations: every status as a notification (no balances),
    // a 3-D Secure challenge, and queries with balances.
    let statuses = [
        ObservedStatus::Authorised,
        ObservedStatus::Success,
        ObservedStatus::Failure,
        ObservedStatus::Canceled,
        ObservedStatus::PartiallyReversed,
        ObservedStatus::Processing,
    ];
    let mut payment_obs: Vec<PaymentObservation> = statuses.iter().cloned().map(obs).collect();
    payment_obs
        .push(obs(ObservedStatus::Processing).with_authentication_url("https://acs.example/3ds"));
    payment_obs.push(obs(ObservedStatus::Success).with_token("TK1", "s1"));
    let query = |status, captured, voided| {
        let mut o = obs(status).with_balances(Balances {
            authed: 1000,
            captured,
            refunded: 0,
            voided,
        });
        o.source = ObservationSource::Query;
        o
    };
    payment_obs.push(query(ObservedStatus::PartiallyReversed, 400, 0));
    payment_obs.push(query(ObservedStatus::PartiallyReversed, 300, 700));
    payment_obs.push(query(ObservedStatus::Success, 1000, 0));
    // Past the grace period: nothing more than before was applied.
    for status in [
        ObservedStatus::Authorised,
        ObservedStatus::PartiallyReversed,
        ObservedStatus::Processing,
    ] {
        for captured in [0, 400] {
            let mut o = query(status.clone(), captured, 0);
            o.past_grace = true;
            payment_obs.push(o);
        }
    }
    for o in &payment_obs {
        cmds.push(OrderCommand::ApplyGatewayObservation(Observation::Payment(
            o.clone(),
        )));
    }
    for past_grace in [false, true] {
        cmds.push(OrderCommand::ApplyGatewayObservation(
            Observation::PaymentNotFound { past_grace },
        ));
    }
    // Call outcomes: accepted (with what PayKKa answered), declined,
    // unknown.
    fn declined<T>() -> CallOutcome<T> {
        CallOutcome::Declined {
            code: "2099".into(),
            description: "Invalid Card".into(),
        }
    }
    fn unknown<T>() -> CallOutcome<T> {
        CallOutcome::Unknown {
            reason: "timeout".into(),
        }
    }
    let mut answers: Vec<PaymentObservation> = statuses
        .iter()
        .cloned()
        .map(|s| {
            let mut o = obs(s);
            o.source = ObservationSource::Response;
            o
        })
        .collect();
    answers
        .push(obs(ObservedStatus::Processing).with_authentication_url("https://acs.example/3ds"));
    answers.push(query(ObservedStatus::Success, 1000, 0));
    answers.push(query(ObservedStatus::PartiallyReversed, 300, 700));
    for a in &answers {
        cmds.push(OrderCommand::RecordInitiateOutcome(CallOutcome::Accepted(
            a.clone(),
        )));
        cmds.push(OrderCommand::RecordVoidOutcome(CallOutcome::Accepted(
            a.clone(),
        )));
        for n in 1..=3 {
            cmds.push(OrderCommand::RecordCaptureOutcome {
                capture_id: cap(n),
                outcome: CallOutcome::Accepted(a.clone()),
            });
        }
    }
    for o in [declined::<PaymentObservation>(), unknown()] {
        cmds.push(OrderCommand::RecordInitiateOutcome(o.clone()));
        cmds.push(OrderCommand::RecordVoidOutcome(o.clone()));
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
        for status in [
            ObservedRefundStatus::Success,
            ObservedRefundStatus::Failure,
            ObservedRefundStatus::Processing,
        ] {
            cmds.push(OrderCommand::RecordRefundOutcome {
                refund_id: rf(n),
                outcome: CallOutcome::Accepted(r(status.clone())),
            });
            let mut notified = r(status);
            notified.source = ObservationSource::Notification;
            cmds.push(OrderCommand::ApplyGatewayObservation(Observation::Refund(
                notified,
            )));
        }
        cmds.push(OrderCommand::RecordRefundOutcome {
            refund_id: rf(n),
            outcome: declined(),
        });
        cmds.push(OrderCommand::RecordRefundOutcome {
            refund_id: rf(n),
            outcome: unknown(),
        });
        cmds.push(OrderCommand::ApplyGatewayObservation(
            Observation::RefundNotFound { refund_id: rf(n) },
        ));
    }
    cmds
}

/// Runs the command alphabet from every reachable state (breadth first,
/// states deduplicated without their version) and returns every edge with
/// the events it appends. Also checks, for every step, that a terminal
/// phase appends nothing and that the money invariants hold; the first
/// violation is returned as `Err`.
pub fn explore() -> Result<Edges, String> {
    let order_id = OrderId(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001));
    let cmds = sample_commands(order_id);
    let key = |s: &OrderState| {
        let mut k = s.clone();
        if let OrderState::Placed(o) = &mut k {
            o.version = 0;
        }
        k
    };
    let mut seen: HashSet<OrderState> = HashSet::new();
    let mut queue = VecDeque::from([OrderState::default()]);
    let mut found = Edges::new();
    while let Some(state) = queue.pop_front() {
        if !seen.insert(key(&state)) {
            continue;
        }
        if seen.len() > 50_000 {
            return Err("more than 50,000 states: the exploration does not close".into());
        }
        for cmd in &cmds {
            let class = command_class(cmd);
            let Ok(events) = decide(&state, cmd.clone()) else {
                continue;
            };
            if events.is_empty() {
                continue;
            }
            if state.phase().is_terminal() {
                return Err(format!(
                    "terminal {} appended {events:?} on {class}",
                    state.phase()
                ));
            }
            let next = events.iter().fold(state.clone(), evolve);
            next.check_invariants()?;
            found
                .entry((state.phase(), class, next.phase()))
                .or_default()
                .extend(events.iter().map(OrderEvent::event_type));
            if !seen.contains(&key(&next)) {
                queue.push_back(next);
            }
        }
    }
    Ok(found)
}

/// The Mermaid `stateDiagram-v2` of `edges` (one arrow per pair of
/// phases, labelled with its command classes).
pub fn mermaid(edges: &Edges) -> String {
    let mut arrows: BTreeMap<(Phase, Phase), BTreeSet<&'static str>> = BTreeMap::new();
    for (from, class, to) in edges.keys() {
        arrows.entry((*from, *to)).or_default().insert(class);
    }
    let mut out = String::from("stateDiagram-v2\n");
    for ((from, to), labels) in &arrows {
        let from_name = if *from == Phase::New {
            "[*]"
        } else {
            from.name()
        };
        out.push_str(&format!(
            "    {from_name} --> {}: {}\n",
            to.name(),
            labels.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    for p in Phase::ALL.iter().filter(|p| p.is_terminal()) {
        out.push_str(&format!("    {} --> [*]\n", p.name()));
    }
    out
}

/// One Markdown table row per edge: from, command class, to, the events
/// appended.
pub fn edge_rows(edges: &Edges) -> Vec<String> {
    edges
        .iter()
        .map(|((from, class, to), events)| {
            format!(
                "| {} | {class} | {} | {} |",
                from.name(),
                to.name(),
                events.iter().copied().collect::<Vec<_>>().join(", ")
            )
        })
        .collect()
}
