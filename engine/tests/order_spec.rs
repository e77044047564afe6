//! The Order aggregate as a specification: given events, when a command,
//! then events (or an error).

use payorch_engine::order::*;
use payorch_schemas::events::order::*;
use payorch_schemas::events::{
    AuthorisationKind, CaptureId, CaptureMode, GatewayOrderId, MerchantId, OrderEvent, OrderId,
    PaymentKind, RefundId, TokenPurpose,
};
use payorch_schemas::{Currency, Money};
use uuid::Uuid;

// ------------------------------------------------------------------ harness

struct Given {
    state: OrderState,
}

fn given(history: impl IntoIterator<Item = OrderEvent>) -> Given {
    let history: Vec<OrderEvent> = history.into_iter().collect();
    Given {
        state: fold(&history),
    }
}

impl Given {
    fn when(self, cmd: OrderCommand) -> Then {
        let result = decide(&self.state, cmd);
        Then {
            state: self.state,
            result,
        }
    }
}

struct Then {
    state: OrderState,
    result: Result<Vec<OrderEvent>, DomainError>,
}

impl Then {
    #[track_caller]
    fn then(self, expected: impl IntoIterator<Item = OrderEvent>) -> OrderState {
        let expected: Vec<OrderEvent> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected);
                let next = events.iter().fold(self.state, evolve);
                next.check_invariants().unwrap();
                next
            }
            Err(e) => panic!("expected events {expected:?}, got error {e}"),
        }
    }

    #[track_caller]
    fn then_nothing(self) {
        self.then([]);
    }

    #[track_caller]
    fn then_error(self, contains: &str) -> DomainError {
        match self.result {
            Err(e) => {
                assert!(
                    e.to_string().contains(contains),
                    "error {e:?} lacks {contains:?}"
                );
                e
            }
            Ok(events) => panic!("expected an error containing {contains:?}, got {events:?}"),
        }
    }
}

// ------------------------------------------------------------------ fixtures

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}
fn order_id() -> OrderId {
    OrderId(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_00aa))
}
fn cap(n: u128) -> CaptureId {
    CaptureId(Uuid::from_u128(n))
}
fn rf(n: u128) -> RefundId {
    RefundId(Uuid::from_u128(0x100 + n))
}

fn place_cmd(capture_method: CaptureMode) -> PlacePayment {
    PlacePayment {
        order_id: order_id(),
        merchant_id: MerchantId::new("18356675194960"),
        amount: eur(1000),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method,
        instrument: InstrumentSummary {
            method: "BANKCARD".into(),
            card: None,
            token: None,
        },
        store_token: None,
        agreement_id: None,
        checkout: None,
        annotations: Default::default(),
    }
}

fn placed(capture_method: CaptureMode) -> Vec<OrderEvent> {
    decide(
        &OrderState::default(),
        OrderCommand::Place(place_cmd(capture_method)),
    )
    .unwrap()
}

fn authorised_event() -> OrderEvent {
    Authorised {
        gateway_order_id: GatewayOrderId::new("GW1"),
        amount: eur(1000),
        card: None,
    }
    .into()
}

fn manual_authorised() -> Vec<OrderEvent> {
    let mut h = placed(CaptureMode::Manual);
    h.push(authorised_event());
    h
}

fn captured_full() -> Vec<OrderEvent> {
    let mut h = manual_authorised();
    h.push(
        CaptureRequested {
            capture_id: cap(1),
            amount: eur(1000),
            final_capture: true,
        }
        .into(),
    );
    h.push(
        Captured {
            capture_id: cap(1),
            amount: eur(1000),
            remainder_released: true,
        }
        .into(),
    );
    h
}

fn obs(status: ObservedStatus) -> PaymentObservation {
    PaymentObservation::status(ObservationSource::Notification, status).with_gateway_order_id("GW1")
}

fn observe(o: PaymentObservation) -> OrderCommand {
    OrderCommand::ApplyGatewayObservation(Observation::Payment(o))
}

fn capture(id: u128, amount: Option<i64>, final_capture: bool) -> OrderCommand {
    OrderCommand::Capture(CapturePayment {
        capture_id: cap(id),
        amount: amount.map(eur),
        final_capture,
    })
}

fn refund(id: u128, amount: i64) -> OrderCommand {
    OrderCommand::Refund(RefundPayment {
        refund_id: rf(id),
        amount: eur(amount),
        reason: None,
    })
}

// ------------------------------------------------------------------ spec

#[test]
fn placing_records_the_order_and_the_initiate_intent() {
    given([])
        .when(OrderCommand::Place(place_cmd(CaptureMode::Manual)))
        .then([
            PaymentPlaced {
                order_id: order_id(),
                merchant_id: MerchantId::new("18356675194960"),
                trans_id: order_id().trans_id(),
                amount: eur(1000),
                payment_type: PaymentKind::Purchase,
                authorisation_type: AuthorisationKind::FinalAuth,
                capture_method: CaptureMode::Manual,
                instrument: InstrumentSummary {
                    method: "BANKCARD".into(),
                    card: None,
                    token: None,
                },
                store_token: None,
                agreement_id: None,
                checkout_id: None,
                session_id: None,
                merchant_reference: None,
                metadata: Default::default(),
            }
            .into(),
            AuthorisationRequested {
                trans_id: order_id().trans_id(),
            }
            .into(),
        ]);
}

#[test]
fn authorised_answer_holds_the_funds() {
    let s = given(placed(CaptureMode::Manual))
        .when(OrderCommand::RecordInitiateOutcome(CallOutcome::Accepted(
            obs(ObservedStatus::Authorised),
        )))
        .then([authorised_event()]);
    assert_eq!(s.phase(), Phase::Authorised);
}

#[test]
fn automatic_capture_success_means_paid() {
    let s = given(placed(CaptureMode::Automatic))
        .when(OrderCommand::RecordInitiateOutcome(CallOutcome::Accepted(
            obs(ObservedStatus::Success),
        )))
        .then([
            authorised_event(),
            Succeeded {
                gateway_order_id: None,
                captured: eur(1000),
            }
            .into(),
        ]);
    assert_eq!(s.phase(), Phase::Captured);
}

#[test]
fn three_ds_challenge_then_success_by_webhook() {
    let url = "https://acs.example/challenge";
    let mut h = placed(CaptureMode::Automatic);
    h.extend(
        given(h.clone())
            .when(OrderCommand::RecordInitiateOutcome(CallOutcome::Accepted(
                obs(ObservedStatus::Processing).with_authentication_url(url),
            )))
            .result
            .unwrap(),
    );
    assert_eq!(fold(&h).phase(), Phase::ChallengeRequired);
    given(h).when(observe(obs(ObservedStatus::Success))).then([
        ChallengeCompleted {}.into(),
        authorised_event(),
        Succeeded {
            gateway_order_id: None,
            captured: eur(1000),
        }
        .into(),
    ]);
}

#[test]
fn failed_challenge_and_expired_challenge_end_the_attempt() {
    let mut h = placed(CaptureMode::Automatic);
    h.push(
        ChallengeRequired {
            authentication_url: "u".into(),
        }
        .into(),
    );
    given(h.clone())
        .when(observe(
            obs(ObservedStatus::Failure).with_error("2099", "Invalid Card"),
        ))
        .then([ChallengeFailed {
            code: "2099".into(),
            description: "Invalid Card".into(),
        }
        .into()]);
    let s = given(h)
        .when(OrderCommand::ExpireChallenge)
        .then([ChallengeExpired {}.into()]);
    assert_eq!(s.phase(), Phase::Declined);
}

#[test]
fn a_decline_keeps_paykkas_code() {
    let s = given(placed(CaptureMode::Manual))
        .when(OrderCommand::RecordInitiateOutcome(CallOutcome::Accepted(
            obs(ObservedStatus::Failure).with_error("2099", "Invalid Card"),
        )))
        .then([AuthorisationDeclined {
            code: "2099".into(),
            description: "Invalid Card".into(),
        }
        .into()]);
    assert_eq!(
        s.order().unwrap().decline.as_ref(),
        Some(&("2099".to_owned(), "Invalid Card".to_owned()))
    );
}

#[test]
fn an_unknown_outcome_is_not_a_failure_and_a_query_resolves_it() {
    let mut h = placed(CaptureMode::Manual);
    let unknown: OrderEvent = AuthorisationOutcomeUnknown {
        reason: "timeout".into(),
    }
    .into();
    let s = given(h.clone())
        .when(OrderCommand::RecordInitiateOutcome(CallOutcome::Unknown {
            reason: "timeout".into(),
        }))
        .then([unknown.clone()]);
    assert_eq!(s.phase(), Phase::AuthorisationUnknown);
    h.push(unknown);
    // A not-found before the grace period proves nothing.
    given(h.clone())
        .when(OrderCommand::ApplyGatewayObservation(
            Observation::PaymentNotFound { past_grace: false },
        ))
        .then_nothing();
    given(h)
        .when(observe(obs(ObservedStatus::Authorised)))
        .then([authorised_event()]);
}

#[test]
fn partial_and_multiple_captures_up_to_the_authorised_amount() {
    let mut h = manual_authorised();
    h.extend(
        given(h.clone())
            .when(capture(1, Some(400), false))
            .result
            .unwrap(),
    );
    given(h.clone())
        .when(capture(2, Some(100), false))
        .then_error("still in flight");
    h.push(
        Captured {
            capture_id: cap(1),
            amount: eur(400),
            remainder_released: false,
        }
        .into(),
    );
    assert_eq!(fold(&h).phase(), Phase::PartiallyCaptured);
    given(h.clone())
        .when(capture(2, Some(700), false))
        .then_error("exceeds the available 6.00 EUR");
    let s = given(h)
        .when(capture(2, None, false))
        .then([CaptureRequested {
            capture_id: cap(2),
            amount: eur(600),
            final_capture: true,
        }
        .into()]);
    assert_eq!(s.open_capture().map(|c| c.amount), Some(eur(600)));
}

#[test]
fn a_success_notification_after_a_partial_capture_does_not_invent_a_full_capture() {
    // PayKKa notifies PAYMENT.SUCCESS (no balances) once the first partial
    // capture lands; the rest stays capturable.
    let mut h = manual_authorised();
    h.push(
        CaptureRequested {
            capture_id: cap(1),
            amount: eur(400),
            final_capture: false,
        }
        .into(),
    );
    h.push(
        Captured {
            capture_id: cap(1),
            amount: eur(400),
            remainder_released: false,
        }
        .into(),
    );
    given(h.clone())
        .when(observe(obs(ObservedStatus::Success)))
        .then_nothing();
    // Balances from a query are authoritative.
    let o = obs(ObservedStatus::Success).with_balances(Balances {
        authed: 1000,
        captured: 1000,
        refunded: 0,
        voided: 0,
    });
    given(h.clone()).when(observe(o)).then([Succeeded {
        gateway_order_id: None,
        captured: eur(600),
    }
    .into()]);
    // And the merchant can still capture the rest.
    given(h)
        .when(capture(2, Some(300), false))
        .then([CaptureRequested {
            capture_id: cap(2),
            amount: eur(300),
            final_capture: false,
        }
        .into()]);
}

/// The rest of a final partial capture shows as released only when
/// PayKKa's balances say so (issue 17: our own `final_capture` flag is no
/// proof; how PayKKa releases it is [INFERRED]).
#[test]
fn a_final_partial_capture_releases_the_remainder_only_when_paykka_shows_it() {
    let mut h = manual_authorised();
    h.push(
        CaptureRequested {
            capture_id: cap(1),
            amount: eur(300),
            final_capture: true,
        }
        .into(),
    );
    let captured = |remainder_released| -> OrderEvent {
        Captured {
            capture_id: cap(1),
            amount: eur(300),
            remainder_released,
        }
        .into()
    };
    let balances = |voided| Balances {
        authed: 1000,
        captured: 300,
        refunded: 0,
        voided,
    };
    let outcome = |o: PaymentObservation| OrderCommand::RecordCaptureOutcome {
        capture_id: cap(1),
        outcome: CallOutcome::Accepted(o),
    };
    // An answer without balances: captured, the rest still held.
    let s = given(h.clone())
        .when(outcome(obs(ObservedStatus::Success)))
        .then([captured(false)]);
    assert_eq!(s.phase(), Phase::PartiallyCaptured);
    assert!(
        s.awaits_release(),
        "the reconciler asks until PayKKa shows it"
    );
    // Balances with nothing voided: the same.
    let s = given(h.clone())
        .when(outcome(
            obs(ObservedStatus::Success).with_balances(balances(0)),
        ))
        .then([captured(false)]);
    assert_eq!(s.phase(), Phase::PartiallyCaptured);
    // Balances showing the rest voided: released, captured (not voided).
    let s = given(h.clone())
        .when(outcome(
            obs(ObservedStatus::Success).with_balances(balances(700)),
        ))
        .then([captured(true)]);
    assert_eq!(s.phase(), Phase::Captured);
    assert!(!s.awaits_release());

    // Learned later, from a query or notification with balances.
    h.push(captured(false));
    given(h.clone())
        .when(observe(
            obs(ObservedStatus::Success).with_balances(balances(0)),
        ))
        .then_nothing();
    let s = given(h.clone())
        .when(observe(
            obs(ObservedStatus::Success).with_balances(balances(700)),
        ))
        .then([RemainderReleased { amount: eur(700) }.into()]);
    assert_eq!(s.phase(), Phase::Captured);
    h.push(RemainderReleased { amount: eur(700) }.into());
    given(h.clone())
        .when(observe(
            obs(ObservedStatus::Success).with_balances(balances(700)),
        ))
        .then_nothing();
    given(h)
        .when(capture(2, Some(100), false))
        .then_error("not allowed in state captured");
}

#[test]
fn manual_capture_is_refused_on_automatic_orders() {
    let mut h = placed(CaptureMode::Automatic);
    h.push(authorised_event());
    given(h)
        .when(capture(1, None, false))
        .then_error("automatic capture");
}

#[test]
fn void_releases_and_then_capture_names_state_and_command() {
    let mut h = manual_authorised();
    let s = given(h.clone())
        .when(OrderCommand::Void { reason: None })
        .then([VoidRequested { reason: None }.into()]);
    assert_eq!(s.phase(), Phase::Authorised);
    h.push(VoidRequested { reason: None }.into());
    let s = given(h.clone())
        .when(OrderCommand::RecordVoidOutcome(CallOutcome::Accepted(obs(
            ObservedStatus::Canceled,
        ))))
        .then([Voided {}.into()]);
    assert_eq!(s.phase(), Phase::Voided);
    h.push(Voided {}.into());
    let e = given(h.clone())
        .when(capture(1, None, false))
        .then_error("command `capture` is not allowed in state voided");
    assert_eq!(
        e,
        DomainError::IllegalCommand {
            state: Phase::Voided,
            command: CommandKind::Capture
        }
    );
    // A repeated void is absorbed.
    given(h)
        .when(OrderCommand::Void { reason: None })
        .then_nothing();
}

#[test]
fn partial_and_multiple_refunds_each_with_its_own_id() {
    let mut h = captured_full();
    let first = given(h.clone()).when(refund(1, 300)).result.unwrap();
    let OrderEvent::RefundRequested(r1) = &first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(r1.refund_trans_id, order_id().refund_trans_id(1));
    h.extend(first);
    // In-flight refunds count against the refundable amount.
    given(h.clone())
        .when(refund(2, 800))
        .then_error("exceeds the available 7.00 EUR");
    h.push(
        Refunded {
            refund_id: rf(1),
            gateway_refund_id: None,
            amount: eur(300),
        }
        .into(),
    );
    assert_eq!(fold(&h).phase(), Phase::PartiallyRefunded);
    let second = given(h.clone()).when(refund(2, 700)).result.unwrap();
    let OrderEvent::RefundRequested(r2) = &second[0] else {
        panic!("{second:?}")
    };
    assert_eq!(r2.refund_trans_id, order_id().refund_trans_id(2));
    // The same refund id again is the same refund, not a second one.
    given(h.clone()).when(refund(1, 300)).then_nothing();
    h.extend(second);
    let s = given(h)
        .when(OrderCommand::RecordRefundOutcome {
            refund_id: rf(2),
            outcome: CallOutcome::Accepted(RefundObservation {
                source: ObservationSource::Response,
                refund_id: rf(2),
                status: ObservedRefundStatus::Success,
                gateway_refund_id: None,
                error_code: None,
                error_description: None,
            }),
        })
        .then([Refunded {
            refund_id: rf(2),
            gateway_refund_id: None,
            amount: eur(700),
        }
        .into()]);
    assert_eq!(s.phase(), Phase::Refunded);
    assert_eq!(s.order().unwrap().refunded, 1000);
}

#[test]
fn a_late_authorized_after_success_changes_nothing() {
    given(captured_full())
        .when(observe(obs(ObservedStatus::Authorised)))
        .then_nothing();
    // and duplicates of what we know are absorbed
    given(manual_authorised())
        .when(observe(obs(ObservedStatus::Authorised)))
        .then_nothing();
}

#[test]
fn one_currency_per_order() {
    given(manual_authorised())
        .when(OrderCommand::Capture(CapturePayment {
            capture_id: cap(1),
            amount: Some(Money::new(100, Currency::USD)),
            final_capture: false,
        }))
        .then_error("order is in EUR but the command uses USD");
}

#[test]
fn a_stored_token_is_recorded_once() {
    let mut cmd = place_cmd(CaptureMode::Automatic);
    cmd.store_token = Some(TokenRequest {
        purpose: TokenPurpose::CardOnFile,
        shopper_reference: "cust-1".into(),
    });
    let h = decide(&OrderState::default(), OrderCommand::Place(cmd)).unwrap();
    let with_token = obs(ObservedStatus::Success).with_token("TK1", "cust-1");
    let events = given(h.clone())
        .when(observe(with_token.clone()))
        .result
        .unwrap();
    assert!(matches!(events.last(), Some(OrderEvent::TokenStored(t)) if t.token == "TK1"));
    let mut h2 = h;
    h2.extend(events);
    given(h2).when(observe(with_token)).then_nothing();
}

#[test]
fn terminal_states_absorb_late_observations_and_outcomes() {
    let mut declined = placed(CaptureMode::Manual);
    declined.push(
        AuthorisationDeclined {
            code: "2099".into(),
            description: "Invalid Card".into(),
        }
        .into(),
    );
    for cmd in [
        observe(obs(ObservedStatus::Success)),
        OrderCommand::RecordInitiateOutcome(CallOutcome::Accepted(obs(ObservedStatus::Authorised))),
        OrderCommand::ExpireChallenge,
        OrderCommand::ApplyGatewayObservation(Observation::PaymentNotFound { past_grace: true }),
    ] {
        given(declined.clone()).when(cmd).then_nothing();
    }
    given(declined)
        .when(refund(1, 100))
        .then_error("not allowed in state declined");
}

#[test]
fn events_never_carry_a_card_number() {
    let json = serde_json::to_string(&placed(CaptureMode::Manual)).unwrap();
    assert!(!json.to_lowercase().contains("cvv"));
    assert!(!json.contains("card_no"));
}

/// An order with 4.00 of 10.00 captured and a second capture of 6.00 open
/// (its answer lost).
fn partial_then_open_capture() -> Vec<OrderEvent> {
    let mut h = manual_authorised();
    h.push(
        CaptureRequested {
            capture_id: cap(1),
            amount: eur(400),
            final_capture: false,
        }
        .into(),
    );
    h.push(
        Captured {
            capture_id: cap(1),
            amount: eur(400),
            remainder_released: false,
        }
        .into(),
    );
    h.push(
        CaptureRequested {
            capture_id: cap(2),
            amount: eur(600),
            final_capture: true,
        }
        .into(),
    );
    h.push(
        CaptureOutcomeUnknown {
            capture_id: cap(2),
            reason: "timeout".into(),
        }
        .into(),
    );
    h
}

fn balances(captured: i64) -> Balances {
    Balances {
        authed: 1000,
        captured,
        refunded: 0,
        voided: 0,
    }
}

#[test]
fn a_stale_capture_notification_does_not_confirm_a_later_open_capture() {
    // Found by the simulation (engine bug 1): a late or duplicated
    // notification of the first capture (no balances, no capture id) is
    // not proof that the second one went through.
    for status in [ObservedStatus::PartiallyReversed, ObservedStatus::Success] {
        given(partial_then_open_capture())
            .when(observe(obs(status)))
            .then_nothing();
    }
    // A query's balances do show it.
    given(partial_then_open_capture())
        .when(observe(
            obs(ObservedStatus::Success).with_balances(balances(1000)),
        ))
        .then([Captured {
            capture_id: cap(2),
            amount: eur(600),
            remainder_released: false,
        }
        .into()]);
}

#[test]
fn a_single_capture_is_confirmed_by_its_notification() {
    // Nothing captured before: the money PayKKa reports captured can only
    // be the open capture's.
    let mut h = manual_authorised();
    h.push(
        CaptureRequested {
            capture_id: cap(1),
            amount: eur(400),
            final_capture: false,
        }
        .into(),
    );
    given(h)
        .when(observe(obs(ObservedStatus::PartiallyReversed)))
        .then([Captured {
            capture_id: cap(1),
            amount: eur(400),
            remainder_released: false,
        }
        .into()]);
}

#[test]
fn a_capture_lost_after_a_partial_capture_is_declined_after_the_grace_period() {
    // Found by the simulation (engine bug 2): the query still shows only
    // the first capture once the grace period has passed.
    let query = |past_grace| {
        let mut o = obs(ObservedStatus::PartiallyReversed).with_balances(balances(400));
        o.source = ObservationSource::Query;
        o.past_grace = past_grace;
        observe(o)
    };
    given(partial_then_open_capture())
        .when(query(false))
        .then_nothing();
    let s = given(partial_then_open_capture())
        .when(query(true))
        .then([CaptureDeclined {
            capture_id: cap(2),
            code: "NOT_CAPTURED".into(),
            description: "PayKKa's captured amount did not grow within the grace period".into(),
        }
        .into()]);
    assert_eq!(s.phase(), Phase::PartiallyCaptured);
    assert!(!s.has_open_call());
}
