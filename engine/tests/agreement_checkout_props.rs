//! Property tests for the RecurringAgreement and CheckoutSession
//! aggregates over random command / gateway-outcome sequences:
//! invariants hold after every event, every emitted event survives the JSON
//! round trip and is accepted by `evolve`, replaying the emitted events
//! gives the live state, terminal states absorb late and repeated commands
//! without new events, a command repeated right after itself emits nothing,
//! and an illegal command gets an error naming the state and the command.

use payorch_engine::agreement::{self, AgreementCommand, AgreementError, AgreementPhase};
use payorch_engine::checkout::{self, CheckoutCommand, CheckoutError, CheckoutPhase};
use payorch_engine::order::CallOutcome;
use payorch_schemas::events::checkout::{CheckoutSessionCreated, CheckoutSessionRequested};
use payorch_schemas::events::{
    AgreementEvent, AgreementId, CaptureMode, CheckoutEvent, CheckoutId, MerchantId, OrderId,
    PaymentKind, RecurringAgreementRef, SessionId, TransId,
};
use payorch_schemas::{Currency, Money};
use proptest::prelude::*;
use time::OffsetDateTime;
use uuid::Uuid;

fn eur(m: i64) -> Money {
    Money::new(m, Currency::EUR)
}

fn order(n: u8) -> OrderId {
    OrderId(Uuid::from_u128(u128::from(n) + 1000))
}

// ---------------------------------------------------------------- agreement

#[derive(Clone, Debug)]
enum AStep {
    Create { first: u8 },
    Charge { order: u8, amount: i64 },
    Cancel { reason: bool },
    CancelOutcome { outcome: u8 },
}

fn a_step() -> impl Strategy<Value = AStep> {
    prop_oneof![
        1 => (0u8..2).prop_map(|first| AStep::Create { first }),
        4 => (0u8..6, -5i64..1000).prop_map(|(order, amount)| AStep::Charge { order, amount }),
        2 => any::<bool>().prop_map(|reason| AStep::Cancel { reason }),
        4 => (0u8..6).prop_map(|outcome| AStep::CancelOutcome { outcome }),
    ]
}

fn cancel_outcome(n: u8) -> CallOutcome<()> {
    let declined = |code: &str| CallOutcome::Declined {
        code: code.into(),
        description: "refused".into(),
    };
    match n % 6 {
        0 => CallOutcome::Accepted(()),
        1 => declined("2016"),
        2 => declined("2015"),
        3 => declined("1017"),
        4 => declined("010000"),
        _ => CallOutcome::Unknown {
            reason: "timeout".into(),
        },
    }
}

fn a_command(s: AStep) -> AgreementCommand {
    match s {
        AStep::Create { first } => AgreementCommand::Create {
            agreement_id: AgreementId(Uuid::from_u128(7)),
            merchant_id: MerchantId::new("m"),
            first_order_id: order(100 + first),
            token: "TK1".into(),
            shopper_reference: "shopper".into(),
            recurring_agreement_ref: Some(RecurringAgreementRef("RA1".into())),
            card: None,
            annotations: Default::default(),
        },
        AStep::Charge { order: o, amount } => AgreementCommand::Charge {
            order_id: order(o),
            amount: eur(amount),
        },
        AStep::Cancel { reason } => AgreementCommand::Cancel {
            reason: reason.then(|| "customer left".into()),
        },
        AStep::CancelOutcome { outcome } => {
            AgreementCommand::RecordCancelOutcome(cancel_outcome(outcome))
        }
    }
}

fn check_agreement(s: &agreement::AgreementState) -> Result<(), String> {
    if (s.phase == AgreementPhase::New) != s.created.is_none() {
        return Err(format!("phase {:?} with created {:?}", s.phase, s.created));
    }
    for (i, (o, m)) in s.charges.iter().enumerate() {
        if !m.is_positive() {
            return Err(format!("charge {o} of {m}"));
        }
        if s.charges[..i].iter().any(|(p, _)| p == o) {
            return Err(format!("order {o} charged twice"));
        }
    }
    if s.cancel_outcome_unknown && s.phase != AgreementPhase::Cancelling {
        return Err(format!("unknown cancel outcome in {:?}", s.phase));
    }
    Ok(())
}

fn fold_agreement(events: &[AgreementEvent]) -> agreement::AgreementState {
    events.iter().fold(Default::default(), agreement::evolve)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agreement_runs_keep_every_promise(steps in proptest::collection::vec(a_step(), 0..40)) {
        let mut state = agreement::AgreementState::default();
        let mut history: Vec<AgreementEvent> = Vec::new();
        let first = a_command(AStep::Create { first: 0 });
        for cmd in std::iter::once(first).chain(steps.into_iter().map(a_command)) {
            let before = state.clone();
            let name = cmd.name();
            let events = match agreement::decide(&state, cmd.clone()) {
                Ok(events) => events,
                Err(e) => {
                    match &e {
                        AgreementError::IllegalCommand { state: st, command } => {
                            prop_assert_eq!(*st, before.phase);
                            prop_assert_eq!(*command, name);
                            let text = e.to_string();
                            prop_assert!(text.contains(name) && text.contains(before.phase.as_str()), "{}", text);
                        }
                        AgreementError::NonPositiveAmount(m) => {
                            prop_assert!(matches!(cmd, AgreementCommand::Charge { .. }), "non-positive on {}", name);
                            prop_assert!(!m.is_positive());
                        }
                    }
                    continue;
                }
            };
            if before.phase == AgreementPhase::Cancelled {
                prop_assert!(events.is_empty(), "cancelled emitted {:?} on {}", events, name);
            }
            for e in &events {
                let json = serde_json::to_string(e).unwrap();
                prop_assert_eq!(&AgreementEvent::from_json(e.event_type(), &json).unwrap(), e);
                match e {
                    AgreementEvent::AgreementCharged(_) => {
                        prop_assert_eq!(before.phase, AgreementPhase::Active, "charged while not active");
                    }
                    // Never mark failed what may have succeeded.
                    AgreementEvent::AgreementCancelDeclined(_) => {
                        prop_assert!(!before.cancel_outcome_unknown, "declined after an unknown outcome");
                    }
                    _ => {}
                }
                state = agreement::evolve(state, e);
                if let Err(broken) = check_agreement(&state) {
                    return Err(TestCaseError::fail(broken));
                }
            }
            history.extend(events.iter().cloned());
            prop_assert_eq!(state.version as usize, history.len());
            prop_assert_eq!(&fold_agreement(&history), &state);
            // The same command again, right away, changes nothing.
            if !events.is_empty() {
                let again = agreement::decide(&state, cmd);
                prop_assert!(matches!(&again, Ok(e) if e.is_empty()), "repeat of {} gave {:?}", name, again);
            }
        }
    }
}

#[test]
fn a_refused_resend_after_an_unknown_cancel_keeps_the_agreement_cancelling() {
    let mut s = agreement::AgreementState::default();
    for cmd in [
        a_command(AStep::Create { first: 0 }),
        a_command(AStep::Cancel { reason: false }),
        AgreementCommand::RecordCancelOutcome(cancel_outcome(5)),
    ] {
        for e in agreement::decide(&s, cmd).unwrap() {
            s = agreement::evolve(s, &e);
        }
    }
    assert_eq!(
        (s.phase, s.cancel_outcome_unknown),
        (AgreementPhase::Cancelling, true)
    );
    // A config refusal of the re-send is no proof: nothing recorded.
    let refused = agreement::decide(&s, AgreementCommand::RecordCancelOutcome(cancel_outcome(3)));
    assert_eq!(refused, Ok(vec![]));
    // 2016 proves it: cancelled.
    let proof =
        agreement::decide(&s, AgreementCommand::RecordCancelOutcome(cancel_outcome(1))).unwrap();
    assert!(matches!(
        proof.as_slice(),
        [AgreementEvent::AgreementCancelled(_)]
    ));
    // Without an unknown outcome a refusal is definitive.
    let mut t = agreement::AgreementState::default();
    for cmd in [
        a_command(AStep::Create { first: 0 }),
        a_command(AStep::Cancel { reason: false }),
        AgreementCommand::RecordCancelOutcome(cancel_outcome(3)),
    ] {
        for e in agreement::decide(&t, cmd).unwrap() {
            t = agreement::evolve(t, &e);
        }
    }
    assert_eq!(t.phase, AgreementPhase::Active);
}

// ---------------------------------------------------------------- checkout

#[derive(Clone, Debug)]
enum CStep {
    Create { other: bool },
    CreateOutcome { outcome: u8 },
    Complete { order: u8 },
    Expire,
    Cancel,
}

fn c_step() -> impl Strategy<Value = CStep> {
    prop_oneof![
        1 => any::<bool>().prop_map(|other| CStep::Create { other }),
        4 => (0u8..3).prop_map(|outcome| CStep::CreateOutcome { outcome }),
        2 => (0u8..2).prop_map(|order| CStep::Complete { order }),
        1 => Just(CStep::Expire),
        1 => Just(CStep::Cancel),
    ]
}

fn requested(other: bool) -> CheckoutSessionRequested {
    let id = Uuid::from_u128(if other { 9 } else { 8 });
    CheckoutSessionRequested {
        checkout_id: CheckoutId(id),
        merchant_id: MerchantId::new("m"),
        trans_id: TransId::new(id.simple().to_string()),
        amount: eur(1000),
        payment_type: PaymentKind::Purchase,
        capture_method: CaptureMode::Automatic,
        session_mode: "HOSTED".into(),
        expires_at: OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap(),
        merchant_reference: None,
        metadata: Default::default(),
    }
}

fn c_command(s: CStep) -> CheckoutCommand {
    match s {
        CStep::Create { other } => CheckoutCommand::Create(requested(other)),
        CStep::CreateOutcome { outcome } => {
            CheckoutCommand::RecordCreateOutcome(match outcome % 3 {
                0 => CallOutcome::Accepted(CheckoutSessionCreated {
                    session_id: SessionId::new("CS1"),
                    session_url: Some("https://checkout.example/1".into()),
                }),
                1 => CallOutcome::Declined {
                    code: "1014".into(),
                    description: "Checkout theme does not exist".into(),
                },
                _ => CallOutcome::Unknown {
                    reason: "timeout".into(),
                },
            })
        }
        CStep::Complete { order: o } => CheckoutCommand::Complete { order_id: order(o) },
        CStep::Expire => CheckoutCommand::Expire,
        CStep::Cancel => CheckoutCommand::Cancel,
    }
}

fn check_checkout(s: &checkout::CheckoutState) -> Result<(), String> {
    if (s.phase == CheckoutPhase::New) != s.requested.is_none() {
        return Err(format!(
            "phase {:?} with requested {:?}",
            s.phase, s.requested
        ));
    }
    if s.phase == CheckoutPhase::Open && s.created.is_none() {
        return Err("open without a session id".into());
    }
    if (s.phase == CheckoutPhase::Completed) != s.order_id.is_some() {
        return Err(format!("phase {:?} with order {:?}", s.phase, s.order_id));
    }
    Ok(())
}

fn fold_checkout(events: &[CheckoutEvent]) -> checkout::CheckoutState {
    events.iter().fold(Default::default(), checkout::evolve)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn checkout_runs_keep_every_promise(steps in proptest::collection::vec(c_step(), 0..30)) {
        let mut state = checkout::CheckoutState::default();
        let mut history: Vec<CheckoutEvent> = Vec::new();
        let first = c_command(CStep::Create { other: false });
        for cmd in std::iter::once(first).chain(steps.into_iter().map(c_command)) {
            let before = state.clone();
            let name = cmd.name();
            let is_complete = matches!(cmd, CheckoutCommand::Complete { .. });
            let events = match checkout::decide(&state, cmd.clone()) {
                Ok(events) => events,
                Err(e) => {
                    let CheckoutError::IllegalCommand { state: st, command } = &e;
                    prop_assert_eq!(*st, before.phase);
                    prop_assert_eq!(*command, name);
                    let text = e.to_string();
                    prop_assert!(text.contains(name) && text.contains(before.phase.as_str()), "{}", text);
                    continue;
                }
            };
            // Completed absorbs everything; expired and cancelled absorb
            // everything but a payment PayKKa reports.
            match before.phase {
                CheckoutPhase::Completed => {
                    prop_assert!(events.is_empty(), "completed emitted {:?} on {}", events, name);
                }
                CheckoutPhase::Expired | CheckoutPhase::Cancelled if !is_complete => {
                    prop_assert!(events.is_empty(), "{:?} emitted {:?} on {}", before.phase, events, name);
                }
                _ => {}
            }
            for e in &events {
                let json = serde_json::to_string(e).unwrap();
                prop_assert_eq!(&CheckoutEvent::from_json(e.event_type(), &json).unwrap(), e);
                state = checkout::evolve(state, e);
                if let Err(broken) = check_checkout(&state) {
                    return Err(TestCaseError::fail(broken));
                }
            }
            history.extend(events.iter().cloned());
            prop_assert_eq!(state.version as usize, history.len());
            prop_assert_eq!(&fold_checkout(&history), &state);
            if !events.is_empty() {
                let again = checkout::decide(&state, cmd);
                prop_assert!(matches!(&again, Ok(e) if e.is_empty()), "repeat of {} gave {:?}", name, again);
            }
        }
    }
}

#[test]
fn a_locally_cancelled_session_that_the_shopper_paid_completes() {
    let mut s = checkout::CheckoutState::default();
    for cmd in [
        c_command(CStep::Create { other: false }),
        c_command(CStep::CreateOutcome { outcome: 0 }),
        CheckoutCommand::Cancel,
        CheckoutCommand::Complete { order_id: order(0) },
    ] {
        for e in checkout::decide(&s, cmd).unwrap() {
            s = checkout::evolve(s, &e);
        }
    }
    assert_eq!(
        (s.phase, s.order_id),
        (CheckoutPhase::Completed, Some(order(0)))
    );
    // Another order on a completed session is refused, by name.
    let err = checkout::decide(&s, CheckoutCommand::Complete { order_id: order(1) }).unwrap_err();
    assert_eq!(
        err,
        CheckoutError::IllegalCommand {
            state: CheckoutPhase::Completed,
            command: "complete"
        }
    );
}
