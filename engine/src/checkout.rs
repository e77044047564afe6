//! The CheckoutSession aggregate: a PayKKa hosted / drop-in checkout.
//! Created (request, then PayKKa's session id), then completed by an order
//! (same uuid, same `trans_id`), expired or cancelled. Pure decide / evolve.

use payorch_schemas::events::OrderId;
use payorch_schemas::events::checkout::*;

use crate::order::CallOutcome;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutPhase {
    #[default]
    New,
    /// Create call in flight or its outcome unknown.
    Requested,
    /// The shopper can pay on PayKKa's page.
    Open,
    /// Terminal: paid, the order carries the money.
    Completed,
    /// Closed: absorbs every command except a payment PayKKa reports
    /// (`Complete`), which still completes it.
    Expired,
    /// Closed like `Expired` (also: PayKKa refused to create it).
    Cancelled,
}

impl CheckoutPhase {
    /// snake_case, the one spelling on every surface.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutPhase::New => "new",
            CheckoutPhase::Requested => "requested",
            CheckoutPhase::Open => "open",
            CheckoutPhase::Completed => "completed",
            CheckoutPhase::Expired => "expired",
            CheckoutPhase::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for CheckoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckoutState {
    pub phase: CheckoutPhase,
    pub requested: Option<CheckoutSessionRequested>,
    pub created: Option<CheckoutSessionCreated>,
    pub order_id: Option<OrderId>,
    pub outcome_unknown: bool,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckoutCommand {
    Create(CheckoutSessionRequested),
    RecordCreateOutcome(CallOutcome<CheckoutSessionCreated>),
    Complete { order_id: OrderId },
    Expire,
    Cancel,
}

impl CheckoutCommand {
    pub fn name(&self) -> &'static str {
        match self {
            CheckoutCommand::Create(_) => "create",
            CheckoutCommand::RecordCreateOutcome(_) => "create outcome",
            CheckoutCommand::Complete { .. } => "complete",
            CheckoutCommand::Expire => "expire",
            CheckoutCommand::Cancel => "cancel",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("command `{command}` is not allowed on a checkout session in state {state}")]
    IllegalCommand {
        state: CheckoutPhase,
        command: &'static str,
    },
}

pub fn decide(
    s: &CheckoutState,
    cmd: CheckoutCommand,
) -> Result<Vec<CheckoutEvent>, CheckoutError> {
    use CheckoutCommand as C;
    use CheckoutPhase as P;
    match (s.phase, cmd) {
        (P::New, C::Create(r)) => Ok(vec![r.into()]),
        (_, C::Create(r)) if s.requested.as_ref() == Some(&r) => Ok(vec![]),
        (P::Requested, C::RecordCreateOutcome(o)) => Ok(match o {
            CallOutcome::Accepted(created) => vec![created.into()],
            CallOutcome::Declined { code, description } => {
                vec![CheckoutSessionDeclined { code, description }.into()]
            }
            CallOutcome::Unknown { reason } if !s.outcome_unknown => {
                vec![CheckoutSessionOutcomeUnknown { reason }.into()]
            }
            CallOutcome::Unknown { .. } => vec![],
        }),
        // The shopper can pay as soon as PayKKa has the session, even if our
        // create call timed out, and until PayKKa's own expiry: PayKKa has
        // no session cancel, so a session we expired or cancelled locally
        // can still be paid. A payment is a fact; it completes the session.
        (P::Open | P::Requested | P::Expired | P::Cancelled, C::Complete { order_id }) => {
            Ok(vec![CheckoutSessionCompleted { order_id }.into()])
        }
        (P::Completed, C::Complete { order_id }) if s.order_id == Some(order_id) => Ok(vec![]),
        (P::Open | P::Requested, C::Expire) => Ok(vec![CheckoutSessionExpired {}.into()]),
        (P::Open | P::Requested, C::Cancel) => Ok(vec![CheckoutSessionCancelled {}.into()]),
        (
            P::Completed | P::Expired | P::Cancelled,
            C::Expire | C::Cancel | C::RecordCreateOutcome(_),
        ) => Ok(vec![]),
        (P::Open, C::RecordCreateOutcome(_)) => Ok(vec![]),
        (state, cmd) => Err(CheckoutError::IllegalCommand {
            state,
            command: cmd.name(),
        }),
    }
}

pub fn evolve(mut s: CheckoutState, e: &CheckoutEvent) -> CheckoutState {
    s.version += 1;
    match e {
        CheckoutEvent::CheckoutSessionRequested(r) => {
            s.requested = Some(r.clone());
            s.phase = CheckoutPhase::Requested;
        }
        CheckoutEvent::CheckoutSessionCreated(c) => {
            s.created = Some(c.clone());
            s.phase = CheckoutPhase::Open;
        }
        CheckoutEvent::CheckoutSessionDeclined(_) => s.phase = CheckoutPhase::Cancelled,
        CheckoutEvent::CheckoutSessionOutcomeUnknown(_) => s.outcome_unknown = true,
        CheckoutEvent::CheckoutSessionCompleted(c) => {
            s.order_id = Some(c.order_id);
            s.phase = CheckoutPhase::Completed;
        }
        CheckoutEvent::CheckoutSessionExpired(_) => s.phase = CheckoutPhase::Expired,
        CheckoutEvent::CheckoutSessionCancelled(_) => s.phase = CheckoutPhase::Cancelled,
    }
    s
}
