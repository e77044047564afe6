//! The RecurringAgreement aggregate: a stored token plus PayKKa's agreement
//! id, created by a first customer-initiated payment that stored a token.
//! Each later merchant-initiated charge is its own order referencing the
//! agreement; cancel stops further charges. Pure decide / evolve.
//!
//! PayKKa has no agreement query (endpoints.md §7), so a cancel whose
//! outcome is unknown is resolved by sending the cancel again: it is
//! idempotent in effect (a cancelled agreement answers 2016 "not active",
//! an unknown one 2015, both mean "cancelled"). A refusal of such a re-send
//! does not prove the first send failed, so once the outcome was unknown
//! only a proof of cancellation changes the state ([`decide`]).

use payorch_schemas::events::agreement::*;
use payorch_schemas::events::{
    AgreementId, CardSummary, MerchantId, OrderId, RecurringAgreementRef,
};
use payorch_schemas::{Currency, Money};

use crate::order::CallOutcome;

/// Life of an agreement.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AgreementPhase {
    #[default]
    New,
    Active,
    /// The cancel call is in flight or its outcome unknown.
    Cancelling,
    /// Terminal.
    Cancelled,
}

impl AgreementPhase {
    /// snake_case, the one spelling on every surface.
    pub fn as_str(self) -> &'static str {
        match self {
            AgreementPhase::New => "new",
            AgreementPhase::Active => "active",
            AgreementPhase::Cancelling => "cancelling",
            AgreementPhase::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for AgreementPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgreementState {
    pub phase: AgreementPhase,
    pub created: Option<AgreementCreated>,
    pub charges: Vec<(OrderId, Money)>,
    /// The current cancel call's outcome is unknown (it may have landed).
    pub cancel_outcome_unknown: bool,
    pub version: u64,
}

impl AgreementState {
    pub fn merchant_id(&self) -> Option<&MerchantId> {
        self.created.as_ref().map(|c| &c.merchant_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgreementCommand {
    Create {
        agreement_id: AgreementId,
        merchant_id: MerchantId,
        first_order_id: OrderId,
        token: String,
        shopper_reference: String,
        recurring_agreement_ref: Option<RecurringAgreementRef>,
        card: Option<CardSummary>,
        /// The merchant's labels (those of the first payment; boxed, as
        /// the other commands are small).
        annotations: Box<payorch_schemas::events::Annotations>,
    },
    /// Record that order `order_id` charges the agreement.
    Charge {
        order_id: OrderId,
        amount: Money,
    },
    Cancel {
        reason: Option<String>,
    },
    RecordCancelOutcome(CallOutcome<()>),
}

impl AgreementCommand {
    pub fn name(&self) -> &'static str {
        match self {
            AgreementCommand::Create { .. } => "create",
            AgreementCommand::Charge { .. } => "charge",
            AgreementCommand::Cancel { .. } => "cancel",
            AgreementCommand::RecordCancelOutcome(_) => "cancel outcome",
        }
    }
}

/// Why an agreement command was refused ("fix the request").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgreementError {
    #[error("command `{command}` is not allowed on an agreement in state {state}")]
    IllegalCommand {
        state: AgreementPhase,
        command: &'static str,
    },
    #[error("charge amount must be positive, got {0}")]
    NonPositiveAmount(Money),
}

pub fn decide(
    s: &AgreementState,
    cmd: AgreementCommand,
) -> Result<Vec<AgreementEvent>, AgreementError> {
    use AgreementCommand as C;
    use AgreementPhase as P;
    let illegal = |cmd: &AgreementCommand| AgreementError::IllegalCommand {
        state: s.phase,
        command: cmd.name(),
    };
    match (s.phase, cmd) {
        (
            P::New,
            C::Create {
                agreement_id,
                merchant_id,
                first_order_id,
                token,
                shopper_reference,
                recurring_agreement_ref,
                card,
                annotations,
            },
        ) => Ok(vec![
            AgreementCreated {
                agreement_id,
                merchant_id,
                first_order_id,
                token,
                shopper_reference,
                recurring_agreement_ref,
                card,
                merchant_reference: annotations.merchant_reference.clone(),
                metadata: annotations.metadata.clone(),
            }
            .into(),
        ]),
        (_, C::Create { first_order_id, .. })
            if s.created
                .as_ref()
                .is_some_and(|c| c.first_order_id == first_order_id) =>
        {
            Ok(vec![])
        }
        // A repeated charge record (any phase): already done.
        (P::Active | P::Cancelling | P::Cancelled, C::Charge { order_id, .. })
            if s.charges.iter().any(|(o, _)| *o == order_id) =>
        {
            Ok(vec![])
        }
        (P::Active, C::Charge { order_id, amount }) if amount.is_positive() => {
            Ok(vec![AgreementCharged { order_id, amount }.into()])
        }
        (P::Active, C::Charge { amount, .. }) => Err(AgreementError::NonPositiveAmount(amount)),
        (P::Active, C::Cancel { reason }) => Ok(vec![AgreementCancelRequested { reason }.into()]),
        (P::Cancelling | P::Cancelled, C::Cancel { .. }) => Ok(vec![]),
        (P::Cancelling, C::RecordCancelOutcome(o)) => Ok(match o {
            CallOutcome::Accepted(()) => vec![AgreementCancelled {}.into()],
            // Already inactive / unknown at PayKKa: cancelled either way.
            CallOutcome::Declined { code, .. } if proves_inactive(&code) => {
                vec![AgreementCancelled {}.into()]
            }
            // A refusal after an unknown outcome answers a re-send: the
            // first cancel may still have landed. Stay cancelling.
            CallOutcome::Declined { .. } if s.cancel_outcome_unknown => vec![],
            CallOutcome::Declined { code, description } => {
                vec![AgreementCancelDeclined { code, description }.into()]
            }
            CallOutcome::Unknown { .. } if s.cancel_outcome_unknown => vec![],
            CallOutcome::Unknown { reason } => {
                vec![AgreementCancelOutcomeUnknown { reason }.into()]
            }
        }),
        (P::Cancelled | P::Active, C::RecordCancelOutcome(_)) => Ok(vec![]),
        (_, cmd) => Err(illegal(&cmd)),
    }
}

/// PayKKa codes that prove an agreement can no longer be charged: 2015
/// "does not exist", 2016 "not active" (codes.md §4).
pub fn proves_inactive(code: &str) -> bool {
    code == "2015" || code == "2016"
}

pub fn evolve(mut s: AgreementState, e: &AgreementEvent) -> AgreementState {
    s.version += 1;
    match e {
        AgreementEvent::AgreementCreated(c) => {
            s.created = Some(AgreementCreated::clone(c));
            s.phase = AgreementPhase::Active;
        }
        AgreementEvent::AgreementCharged(c) => s.charges.push((c.order_id, c.amount)),
        AgreementEvent::AgreementCancelRequested(_) => {
            s.phase = AgreementPhase::Cancelling;
            s.cancel_outcome_unknown = false;
        }
        AgreementEvent::AgreementCancelled(_) => {
            s.phase = AgreementPhase::Cancelled;
            s.cancel_outcome_unknown = false;
        }
        // Declined: still active. Unknown: stays Cancelling (the
        // reconciler re-sends).
        AgreementEvent::AgreementCancelDeclined(_) => {
            s.phase = AgreementPhase::Active;
            s.cancel_outcome_unknown = false;
        }
        AgreementEvent::AgreementCancelOutcomeUnknown(_) => s.cancel_outcome_unknown = true,
    }
    s
}

/// The currency of the first charge, if any (for views).
pub fn charge_currency(s: &AgreementState) -> Option<Currency> {
    s.charges.first().map(|(_, m)| m.currency)
}
