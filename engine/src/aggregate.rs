//! The aggregate trait: one `decide` and one `evolve` per aggregate, both
//! pure (ARCHITECTURE.md §2). The command runner and the read side see the
//! Order, RecurringAgreement and CheckoutSession aggregates through it.

use payorch_schemas::events::{AgreementEvent, CheckoutEvent, MerchantId, OrderEvent};

use crate::agreement::{self, AgreementCommand, AgreementError, AgreementState};
use crate::checkout::{self, CheckoutCommand, CheckoutError, CheckoutState};
use crate::codec::DomainEvent;
use crate::order::{self, DomainError, OrderCommand, OrderState};

/// An aggregate: a state folded from typed events, and the decision of a
/// command against that state.
pub trait Aggregate {
    type State: Default + Clone + Send + Sync;
    type Event: DomainEvent;
    type Command: Clone + Send + Sync;
    type Error: std::error::Error + Send + Sync + 'static;
    /// The events a command produces in `state` (empty: nothing to do), or
    /// the refusal. Pure: no I/O, no clock, no randomness.
    fn decide(state: &Self::State, command: Self::Command)
    -> Result<Vec<Self::Event>, Self::Error>;
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
    /// The merchant the aggregate belongs to (`None` before its first
    /// event).
    fn merchant_id(state: &Self::State) -> Option<&MerchantId>;
}

/// Marker for the Order aggregate.
pub struct OrderAggregate;
impl Aggregate for OrderAggregate {
    type State = OrderState;
    type Event = OrderEvent;
    type Command = OrderCommand;
    type Error = DomainError;
    fn decide(state: &OrderState, command: OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        order::decide(state, command)
    }
    fn evolve(state: OrderState, event: &OrderEvent) -> OrderState {
        order::evolve(state, event)
    }
    fn merchant_id(state: &OrderState) -> Option<&MerchantId> {
        state.merchant_id()
    }
}

/// Marker for the RecurringAgreement aggregate.
pub struct AgreementAggregate;
impl Aggregate for AgreementAggregate {
    type State = AgreementState;
    type Event = AgreementEvent;
    type Command = AgreementCommand;
    type Error = AgreementError;
    fn decide(
        state: &AgreementState,
        command: AgreementCommand,
    ) -> Result<Vec<AgreementEvent>, AgreementError> {
        agreement::decide(state, command)
    }
    fn evolve(state: AgreementState, event: &AgreementEvent) -> AgreementState {
        agreement::evolve(state, event)
    }
    fn merchant_id(state: &AgreementState) -> Option<&MerchantId> {
        state.merchant_id()
    }
}

/// Marker for the CheckoutSession aggregate.
pub struct CheckoutAggregate;
impl Aggregate for CheckoutAggregate {
    type State = CheckoutState;
    type Event = CheckoutEvent;
    type Command = CheckoutCommand;
    type Error = CheckoutError;
    fn decide(
        state: &CheckoutState,
        command: CheckoutCommand,
    ) -> Result<Vec<CheckoutEvent>, CheckoutError> {
        checkout::decide(state, command)
    }
    fn evolve(state: CheckoutState, event: &CheckoutEvent) -> CheckoutState {
        checkout::evolve(state, event)
    }
    fn merchant_id(state: &CheckoutState) -> Option<&MerchantId> {
        state.requested.as_ref().map(|r| &r.merchant_id)
    }
}
