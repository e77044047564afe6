//! The RecurringAgreement aggregate: a stored token plus PayKKa's agreement
//! id, created by a first customer-initiated payment that stored a token.
//! Each later merchant-initiated charge is its own order referencing the
//! agreement; cancel stops further charges. Pure decide / evolve.

use payorch_schemas::events::agreement::*;
use payorch_schemas::events::{
    AgreementId, CardSummary, MerchantId, OrderId, RecurringAgreementRef,
};
use payorch_schemas::{Currency, Money};

/// Life of an agreement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub enum AgreementPhase {
    #[default]
    New,
    Active,
    /// The cancel call is in flight or its outcome unknown.
    Cancelling,
    /// Terminal.
    Cancelled,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgreementState {
    pub phase: AgreementPhase,
    pub created: Option<AgreementCreated>,
    pub charges: Vec<(OrderId, Money)>,
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
    },
    /// Record that order `order_id` charges the agreement.
    Charge {
        order_id: OrderId,
        amount: Money,
    },
    Cancel {
        reason: Option<String>,
    },
    RecordCancelOutcome(crate::order::CallOutcome<()>),
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
    #[error("command `{command}` is not allowed on an agreement in state {state:?}")]
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
        (P::Active, C::Charge { order_id, .. })
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
            crate::order::CallOutcome::Accepted(()) => vec![AgreementCancelled {}.into()],
            crate::order::CallOutcome::Declined { code, description }
                if code == "2016" || code == "2015" =>
            {
                // Already inactive / unknown at PayKKa: cancelled either way.
                let _ = description;
                vec![AgreementCancelled {}.into()]
            }
            crate::order::CallOutcome::Declined { code, description } => {
                vec![AgreementCancelDeclined { code, description }.into()]
            }
            crate::order::CallOutcome::Unknown { reason } => {
                vec![AgreementCancelOutcomeUnknown { reason }.into()]
            }
        }),
        (P::Cancelled | P::Active, C::RecordCancelOutcome(_)) => Ok(vec![]),
        (_, cmd) => Err(illegal(&cmd)),
    }
}

pub fn evolve(mut s: AgreementState, e: &AgreementEvent) -> AgreementState {
    s.version += 1;
    match e {
        AgreementEvent::AgreementCreated(c) => {
            s.created = Some(c.clone());
            s.phase = AgreementPhase::Active;
        }
        AgreementEvent::AgreementCharged(c) => s.charges.push((c.order_id, c.amount)),
        AgreementEvent::AgreementCancelRequested(_) => s.phase = AgreementPhase::Cancelling,
        AgreementEvent::AgreementCancelled(_) => s.phase = AgreementPhase::Cancelled,
        // Declined: still active. Unknown: stays Cancelling (query/retry).
        AgreementEvent::AgreementCancelDeclined(_) => s.phase = AgreementPhase::Active,
        AgreementEvent::AgreementCancelOutcomeUnknown(_) => {}
    }
    s
}

/// The currency of the first charge, if any (for views).
pub fn charge_currency(s: &AgreementState) -> Option<Currency> {
    s.charges.first().map(|(_, m)| m.currency)
}
