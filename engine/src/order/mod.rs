//! The Order aggregate: one payment attempt, one PayKKa `trans_id`.
//!
//! Pure: [`decide`] turns a command into events, [`evolve`] folds an event
//! into the state. Neither reads a clock, draws a random number or does I/O;
//! ids and amounts arrive in the command.
//!
//! [`decide`] is the whole grammar of an order: one `match` over
//! (phase, command), see the table in `docs/state-machine.md` (generated from
//! [`TRANSITIONS`], which a test checks against the `match` by exhaustive
//! exploration).

use payorch_schemas::events::order::*;
use payorch_schemas::events::{
    AgreementId, CaptureId, CardSummary, CheckoutId, GatewayOrderId, MerchantId, OrderId, RefundId,
    RefundTransId, SessionId,
};
use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind};
use payorch_schemas::{Currency, Money, MoneyError};

mod evolve;
pub mod observation;
mod observe;
mod rules;
mod table;

pub use evolve::{apply, apply_owned, evolve, evolve_owned, fold};
use observe::*;
use rules::*;

pub use observation::*;
pub use table::{TRANSITIONS, explore, mermaid};

/// Where an order is in its life. Terminal phases absorb every late
/// observation or outcome without new events.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No events yet.
    New,
    /// Placed; the initiate call is in flight or its result is not final
    /// (PROCESSING).
    AuthorisationPending,
    /// The initiate call's outcome is unknown (timeout, 5xx): query.
    AuthorisationUnknown,
    /// Waiting for the shopper's 3-D Secure challenge.
    ChallengeRequired,
    /// Funds held, nothing captured.
    Authorised,
    /// Some captured, more may be captured.
    PartiallyCaptured,
    /// Fully captured (or remainder released): the payment succeeded.
    Captured,
    PartiallyRefunded,
    /// Everything captured was refunded. Terminal.
    Refunded,
    /// Declined, failed challenge or expired. Terminal.
    Declined,
    /// Authorisation released. Terminal.
    Voided,
}

impl Phase {
    pub const ALL: [Phase; 11] = [
        Phase::New,
        Phase::AuthorisationPending,
        Phase::AuthorisationUnknown,
        Phase::ChallengeRequired,
        Phase::Authorised,
        Phase::PartiallyCaptured,
        Phase::Captured,
        Phase::PartiallyRefunded,
        Phase::Refunded,
        Phase::Declined,
        Phase::Voided,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Refunded | Phase::Declined | Phase::Voided)
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::New => "New",
            Phase::AuthorisationPending => "AuthorisationPending",
            Phase::AuthorisationUnknown => "AuthorisationUnknown",
            Phase::ChallengeRequired => "ChallengeRequired",
            Phase::Authorised => "Authorised",
            Phase::PartiallyCaptured => "PartiallyCaptured",
            Phase::Captured => "Captured",
            Phase::PartiallyRefunded => "PartiallyRefunded",
            Phase::Refunded => "Refunded",
            Phase::Declined => "Declined",
            Phase::Voided => "Voided",
        }
    }

    /// The one spelling of the phase on every surface (API `status`,
    /// error messages, CLI output, serialization): snake_case, e.g.
    /// `partially_refunded`. [`Phase::name`] is the diagram's node name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::New => "new",
            Phase::AuthorisationPending => "authorisation_pending",
            Phase::AuthorisationUnknown => "authorisation_unknown",
            Phase::ChallengeRequired => "challenge_required",
            Phase::Authorised => "authorised",
            Phase::PartiallyCaptured => "partially_captured",
            Phase::Captured => "captured",
            Phase::PartiallyRefunded => "partially_refunded",
            Phase::Refunded => "refunded",
            Phase::Declined => "declined",
            Phase::Voided => "voided",
        }
    }
}

/// snake_case ([`Phase::as_str`]).
impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Progress of a capture, void or refund call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallProgress {
    Requested,
    OutcomeUnknown,
    Succeeded,
    Declined,
}

impl CallProgress {
    pub fn is_open(self) -> bool {
        matches!(self, CallProgress::Requested | CallProgress::OutcomeUnknown)
    }
}

/// One capture of the order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CaptureEntry {
    pub capture_id: CaptureId,
    pub amount: Money,
    pub final_capture: bool,
    pub progress: CallProgress,
}

/// One refund of the order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RefundEntry {
    pub refund_id: RefundId,
    pub refund_trans_id: RefundTransId,
    pub amount: Money,
    pub progress: CallProgress,
}

/// The state of an order, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OrderState {
    pub phase: PhaseCell,
    /// The placement facts (amount, currency, parameters). Shared: cloning
    /// a state (decide's scratch copy, snapshots) must stay cheap.
    pub placed: Option<std::sync::Arc<PaymentPlaced>>,
    pub gateway_order_id: Option<GatewayOrderId>,
    /// Minor units of the order currency.
    pub authorised: i64,
    pub captured: i64,
    pub refunded: i64,
    /// No more captures: the remainder of the authorisation was released.
    pub remainder_released: bool,
    pub captures: Vec<CaptureEntry>,
    /// Progress of the void call, if one was made.
    pub void: Option<CallProgress>,
    pub refunds: Vec<RefundEntry>,
    /// The facts most orders never have or gain late (3-D Secure URL,
    /// decline, card, stored token), read through [`OrderState::card`] and
    /// friends. Boxed: the state is moved on every command and every fold
    /// step, and within 128 bytes a move is a few register copies instead
    /// of a `memcpy` call. `None` whenever every detail is unset.
    pub details: Option<Box<OrderDetails>>,
    /// Number of events folded in (the stream version).
    pub version: u64,
}

/// The rarely set part of an [`OrderState`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OrderDetails {
    /// Present while the shopper must pass 3-D Secure.
    pub authentication_url: Option<String>,
    /// Code and description of the decline that ended the attempt.
    pub decline: Option<(String, String)>,
    pub card: Option<CardSummary>,
    pub token: Option<TokenStored>,
}

/// [`Phase`] with a `Default` of `New` (keeps `OrderState: Default`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PhaseCell(pub Phase);

impl Default for PhaseCell {
    fn default() -> Self {
        PhaseCell(Phase::New)
    }
}

impl OrderState {
    pub fn phase(&self) -> Phase {
        self.phase.0
    }

    /// The 3-D Secure challenge URL while one is pending.
    pub fn authentication_url(&self) -> Option<&str> {
        self.details.as_ref()?.authentication_url.as_deref()
    }

    /// Code and description of the decline that ended the attempt.
    pub fn decline(&self) -> Option<&(String, String)> {
        self.details.as_ref()?.decline.as_ref()
    }

    /// The card PayKKa reported with the authorisation.
    pub fn card(&self) -> Option<&CardSummary> {
        self.details.as_ref()?.card.as_ref()
    }

    /// The token PayKKa stored for this order's card.
    pub fn token(&self) -> Option<&TokenStored> {
        self.details.as_ref()?.token.as_ref()
    }

    fn details_mut(&mut self) -> &mut OrderDetails {
        self.details.get_or_insert_with(Box::default)
    }

    pub fn currency(&self) -> Option<Currency> {
        self.placed.as_ref().map(|p| p.amount.currency)
    }

    pub fn order_id(&self) -> Option<OrderId> {
        self.placed.as_ref().map(|p| p.order_id)
    }

    pub fn merchant_id(&self) -> Option<&MerchantId> {
        self.placed.as_ref().map(|p| &p.merchant_id)
    }

    fn money(&self, minor: i64) -> Money {
        Money::new(minor, self.currency().unwrap_or(Currency::EUR))
    }

    pub fn authorised_money(&self) -> Money {
        self.money(self.authorised)
    }
    pub fn captured_money(&self) -> Money {
        self.money(self.captured)
    }
    pub fn refunded_money(&self) -> Money {
        self.money(self.refunded)
    }

    /// The capture in flight (requested or unknown), if any.
    pub fn open_capture(&self) -> Option<&CaptureEntry> {
        self.captures.iter().rev().find(|c| c.progress.is_open())
    }

    /// Sum of refunds requested but not yet decided.
    pub fn refunds_in_flight(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.progress.is_open())
            .map(|r| r.amount.minor)
            .sum()
    }

    /// Whether a PayKKa call of this order awaits a definitive answer (the
    /// reconciler's work list).
    pub fn has_open_call(&self) -> bool {
        matches!(
            self.phase(),
            Phase::AuthorisationPending | Phase::AuthorisationUnknown
        ) || self.open_capture().is_some()
            || self.void.is_some_and(CallProgress::is_open)
            || self.refunds.iter().any(|r| r.progress.is_open())
    }

    /// A final partial capture went through but PayKKa has not (yet)
    /// shown the rest of the authorisation released: the reconciler keeps
    /// asking (a query's balances are how the release lands, in every
    /// release mode), and in `void_after_capture` mode the engine sends the
    /// Void that releases it. Never declined: PayKKa releases it at the
    /// latest when the authorisation expires.
    pub fn awaits_release(&self) -> bool {
        self.phase() == Phase::PartiallyCaptured
            && !self.remainder_released
            && self.open_capture().is_none()
            && self
                .captures
                .iter()
                .any(|c| c.final_capture && c.progress == CallProgress::Succeeded)
    }

    /// The money invariants; `Err` names the broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let in_flight = self.refunds_in_flight();
        let checks = [
            (
                self.authorised >= 0 && self.captured >= 0 && self.refunded >= 0,
                "amounts are non-negative",
            ),
            (self.captured <= self.authorised, "captured <= authorised"),
            (self.refunded <= self.captured, "refunded <= captured"),
            (
                self.refunded + in_flight <= self.captured,
                "refunded + refunds in flight <= captured",
            ),
            (
                self.placed
                    .as_ref()
                    .is_none_or(|p| self.authorised <= p.amount.minor),
                "authorised <= order amount",
            ),
            (
                self.captures
                    .iter()
                    .filter(|c| c.progress.is_open())
                    .count()
                    <= 1,
                "at most one capture in flight",
            ),
            (
                self.currency().is_none_or(|c| {
                    self.captures.iter().all(|e| e.amount.currency == c)
                        && self.refunds.iter().all(|e| e.amount.currency == c)
                }),
                "one currency per order",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, name)) => Err(format!("invariant broken: {name} in {self:?}")),
            None => Ok(()),
        }
    }
}

/// Place an order (and, unless it comes from a checkout session, ask
/// PayKKa to authorise it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacePayment {
    pub order_id: OrderId,
    pub merchant_id: MerchantId,
    pub amount: Money,
    pub payment_type: PaymentKind,
    pub authorisation_type: AuthorisationKind,
    pub capture_method: CaptureMode,
    pub instrument: InstrumentSummary,
    pub store_token: Option<TokenRequest>,
    pub agreement_id: Option<AgreementId>,
    /// Set when the shopper paid on a checkout session: PayKKa already has
    /// the transaction, so no initiate call is made.
    pub checkout: Option<(CheckoutId, SessionId)>,
    /// The merchant's reference and metadata, recorded on the placed event.
    pub annotations: payorch_schemas::events::Annotations,
}

/// Capture `amount` (all that is left when `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturePayment {
    pub capture_id: CaptureId,
    pub amount: Option<Money>,
    /// Release the rest of the authorisation after this capture.
    pub final_capture: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundPayment {
    pub refund_id: RefundId,
    pub amount: Money,
    pub reason: Option<String>,
}

/// The result of one of our own PayKKa calls, as the orchestrator saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome<T> {
    /// PayKKa answered; `T` says what it reported.
    Accepted(T),
    /// PayKKa refused, definitively (decline, request or config error).
    Declined { code: String, description: String },
    /// We cannot know whether PayKKa acted. Never a failure.
    Unknown { reason: String },
}

/// Everything that can be asked of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderCommand {
    /// Boxed: by far the largest command, and every command is moved
    /// through decide.
    Place(Box<PlacePayment>),
    RecordInitiateOutcome(CallOutcome<PaymentObservation>),
    /// The shopper is back from the 3DS page (the result is still to come).
    CompleteChallenge,
    /// The challenge expired: only after a query confirmed PayKKa did not
    /// authorise and the expiry passed (the reconciler's job).
    ExpireChallenge,
    Capture(CapturePayment),
    RecordCaptureOutcome {
        capture_id: CaptureId,
        outcome: CallOutcome<PaymentObservation>,
    },
    Void {
        reason: Option<String>,
    },
    /// Release the rest of a final partial capture PayKKa has not shown
    /// released, by a Void (`void_after_capture` release mode; the engine
    /// sends it, a merchant's Void of a captured order stays refused).
    /// Nothing when no release is awaited or its Void is in flight.
    ReleaseRemainder,
    RecordVoidOutcome(CallOutcome<PaymentObservation>),
    Refund(RefundPayment),
    RecordRefundOutcome {
        refund_id: RefundId,
        /// Boxed: keeps the command within 128 bytes (refund outcomes are
        /// rare; every command is moved through decide).
        outcome: Box<CallOutcome<RefundObservation>>,
    },
    /// A webhook or a query result.
    ApplyGatewayObservation(Observation),
}

/// The kind of a command, without its data (errors, the diagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandKind {
    Place,
    RecordInitiateOutcome,
    CompleteChallenge,
    ExpireChallenge,
    Capture,
    RecordCaptureOutcome,
    Void,
    RecordVoidOutcome,
    Refund,
    RecordRefundOutcome,
    ApplyGatewayObservation,
}

impl CommandKind {
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Place => "place",
            CommandKind::RecordInitiateOutcome => "initiate outcome",
            CommandKind::CompleteChallenge => "complete challenge",
            CommandKind::ExpireChallenge => "expire challenge",
            CommandKind::Capture => "capture",
            CommandKind::RecordCaptureOutcome => "capture outcome",
            CommandKind::Void => "void",
            CommandKind::RecordVoidOutcome => "void outcome",
            CommandKind::Refund => "refund",
            CommandKind::RecordRefundOutcome => "refund outcome",
            CommandKind::ApplyGatewayObservation => "observation",
        }
    }
}

impl std::fmt::Display for CommandKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl OrderCommand {
    pub fn kind(&self) -> CommandKind {
        match self {
            OrderCommand::Place(_) => CommandKind::Place,
            OrderCommand::RecordInitiateOutcome(_) => CommandKind::RecordInitiateOutcome,
            OrderCommand::CompleteChallenge => CommandKind::CompleteChallenge,
            OrderCommand::ExpireChallenge => CommandKind::ExpireChallenge,
            OrderCommand::Capture(_) => CommandKind::Capture,
            OrderCommand::RecordCaptureOutcome { .. } => CommandKind::RecordCaptureOutcome,
            OrderCommand::Void { .. } | OrderCommand::ReleaseRemainder => CommandKind::Void,
            OrderCommand::RecordVoidOutcome(_) => CommandKind::RecordVoidOutcome,
            OrderCommand::Refund(_) => CommandKind::Refund,
            OrderCommand::RecordRefundOutcome { .. } => CommandKind::RecordRefundOutcome,
            OrderCommand::ApplyGatewayObservation(_) => CommandKind::ApplyGatewayObservation,
        }
    }
}

/// Why a command was refused. All are "fix the request" for the caller;
/// none is worth retrying unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command makes no sense in this state (e.g. capture a voided order).
    #[error("command `{command}` is not allowed in state {state}")]
    IllegalCommand { state: Phase, command: CommandKind },
    /// The amount is larger than what is left to capture or refund.
    #[error("{operation} of {requested} exceeds the available {available}")]
    AmountExceedsAvailable {
        operation: &'static str,
        requested: Money,
        available: Money,
    },
    /// The amount is zero or negative.
    #[error("{operation} amount must be positive, got {amount}")]
    NonPositiveAmount {
        operation: &'static str,
        amount: Money,
    },
    /// The amount is in another currency than the order.
    #[error("order is in {expected} but the command uses {got}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    /// Another capture or void of this order is still in flight; retry after
    /// it resolves.
    #[error("a {operation} is still in flight in state {state}; wait for its outcome")]
    OperationInFlight {
        state: Phase,
        operation: &'static str,
    },
    /// The id was already used for a different request.
    #[error("{what} {id} was already used with different parameters")]
    IdReused { what: &'static str, id: String },
    /// The order uses automatic capture: PayKKa captures by itself.
    #[error("order uses automatic capture; a manual capture is not allowed")]
    AutomaticCapture,
    /// A gateway observation lacks a field the transition needs.
    #[error("gateway observation lacks {0}")]
    IncompleteObservation(&'static str),
    /// Arithmetic overflow or currency error (should be unreachable).
    #[error(transparent)]
    Money(#[from] MoneyError),
}

type Decided = Result<Vec<OrderEvent>, DomainError>;

/// The grammar of an order: every legal (phase, command) pair, one arm
/// each. Everything not listed is an [`DomainError::IllegalCommand`].
///
/// The command is matched and its data taken by reference (strings move
/// out with `mem::take`): the ~350-byte command is not copied again into
/// the match and into each helper.
pub fn decide(s: &OrderState, mut cmd: OrderCommand) -> Decided {
    use OrderCommand as C;
    use Phase as P;
    match (s.phase(), &mut cmd) {
        (P::New, C::Place(p)) => place(p),
        (_, C::Place(p)) => repeated_place(s, p),
        (P::New, cmd) => illegal(s, cmd),
        // Terminal phases absorb late outcomes and observations.
        (
            P::Declined | P::Voided | P::Refunded,
            C::RecordInitiateOutcome(_)
            | C::RecordCaptureOutcome { .. }
            | C::RecordVoidOutcome(_)
            | C::RecordRefundOutcome { .. }
            | C::ApplyGatewayObservation(_)
            | C::CompleteChallenge
            | C::ExpireChallenge,
        ) => none(),

        (_, C::RecordInitiateOutcome(o)) => initiate_outcome(s, o),
        (P::ChallengeRequired, C::CompleteChallenge) => one(ChallengeCompleted {}),
        (P::ChallengeRequired, C::ExpireChallenge) => one(ChallengeExpired {}),

        (P::Authorised | P::PartiallyCaptured, C::Capture(c)) => capture(s, c),
        (
            _,
            C::RecordCaptureOutcome {
                capture_id,
                outcome,
            },
        ) => capture_outcome(s, *capture_id, outcome),
        (P::Authorised, C::Void { reason }) => void(s, reason.take()),
        // The rest of a final partial capture, released by a Void
        // (`void_after_capture` release mode); the phase stays captured.
        (P::PartiallyCaptured, C::ReleaseRemainder) if s.awaits_release() => void(
            s,
            Some("release the rest of a final partial capture".to_owned()),
        ),
        (_, C::ReleaseRemainder) => none(),
        (P::Voided, C::Void { .. }) => none(),
        (_, C::RecordVoidOutcome(o)) => void_outcome(s, o),

        (P::PartiallyCaptured | P::Captured | P::PartiallyRefunded, C::Refund(r)) => refund(s, r),
        (P::Refunded, C::Refund(r)) => repeated_refund(s, r),
        (_, C::RecordRefundOutcome { refund_id, outcome }) => {
            refund_outcome(s, *refund_id, outcome)
        }

        (_, C::ApplyGatewayObservation(o)) => observe(s, o),
        (_, cmd) => illegal(s, cmd),
    }
}
