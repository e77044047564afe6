//! The Order aggregate: one payment attempt, one PayKKa `trans_id`.
//!
//! Pure: [`decide`] turns a command into events, [`evolve`] folds an event
//! into the state. Neither reads a clock, draws a random number or does I/O;
//! ids and amounts arrive in the command.
//!
//! * [`decide`] is the whole grammar of an order: one `match` over
//!   (phase, command) with no wildcard arm, so a new phase or command does
//!   not compile until every pair is decided. Its helpers: `rules.rs`
//!   (merchant commands, call outcomes) and `observe.rs` (what PayKKa
//!   reports).
//! * [`evolve`] (`evolve.rs`) applies facts only; the phase is read from
//!   them ([`Order::phase`]).
//! * [`OrderState`] is [`OrderState::NotPlaced`] or a placed [`Order`],
//!   which always has its amount and currency.
//! * `docs/state-machine.md` lists every edge (phase, command class, phase)
//!   with the events it appends, found by [`explore`] (`table.rs`); a test
//!   checks it against the code.

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

use evolve::apply_to_order;
pub use evolve::{apply, evolve, fold};
use observe::*;
use rules::*;

pub use observation::*;
pub use table::{Edge, Edges, command_class, edge_rows, explore, mermaid};

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

/// How far the authorisation got: the facts that are not money. The money
/// phases (authorised, partially captured, captured, partially refunded,
/// refunded) are read from the ledger by [`Order::phase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The initiate call is in flight or its result is not final.
    AuthorisationPending,
    /// The initiate call's outcome is unknown.
    AuthorisationUnknown,
    /// The shopper must pass 3-D Secure.
    ChallengeRequired,
    /// PayKKa holds the funds; the ledger says how much was captured and
    /// refunded since.
    Authorised,
    /// Declined, failed challenge or expired.
    Declined,
    /// The authorisation was released.
    Voided,
}

/// The state of an order, folded from its events: nothing before its
/// placement, then a [`Order`] that always has its amount and currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// No events yet: only [`OrderCommand::Place`] means anything.
    #[default]
    NotPlaced,
    /// Boxed: the state is moved through every command and fold step, and
    /// a pointer moves in a register where the 336-byte order would be a
    /// `memcpy` (the engine bench's decide+evolve target needs it; one
    /// allocation per order loaded, at its placement).
    Placed(Box<Order>),
}

/// A placed order: its placement, how far the authorisation got, and the
/// money ledger (minor units of the order's currency).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Order {
    /// The placement facts (amount, currency, parameters). Shared: cloning
    /// a state (decide's scratch copy, snapshots) stays cheap.
    pub placed: std::sync::Arc<PaymentPlaced>,
    pub stage: Stage,
    pub gateway_order_id: Option<GatewayOrderId>,
    pub authorised: i64,
    pub captured: i64,
    pub refunded: i64,
    /// No more captures: the remainder of the authorisation was released.
    pub remainder_released: bool,
    pub captures: Vec<CaptureEntry>,
    /// Progress of the void call, if one was made.
    pub void: Option<CallProgress>,
    pub refunds: Vec<RefundEntry>,
    /// Present while the shopper must pass 3-D Secure.
    pub authentication_url: Option<String>,
    /// Code and description of the decline that ended the attempt.
    pub decline: Option<(String, String)>,
    /// The card PayKKa reported with the authorisation.
    pub card: Option<CardSummary>,
    /// The token PayKKa stored for this order's card.
    pub token: Option<TokenStored>,
    /// Number of events folded in (the stream version).
    pub version: u64,
}

impl Order {
    /// The order placed by `placed`, before anything else happened.
    pub fn new(placed: std::sync::Arc<PaymentPlaced>) -> Order {
        Order {
            placed,
            stage: Stage::AuthorisationPending,
            gateway_order_id: None,
            authorised: 0,
            captured: 0,
            refunded: 0,
            remainder_released: false,
            captures: Vec::new(),
            void: None,
            refunds: Vec::new(),
            authentication_url: None,
            decline: None,
            card: None,
            token: None,
            version: 1,
        }
    }

    /// The node of the grammar the order is at: its [`Stage`], and once
    /// authorised, what the ledger shows.
    pub fn phase(&self) -> Phase {
        match self.stage {
            Stage::AuthorisationPending => Phase::AuthorisationPending,
            Stage::AuthorisationUnknown => Phase::AuthorisationUnknown,
            Stage::ChallengeRequired => Phase::ChallengeRequired,
            Stage::Declined => Phase::Declined,
            Stage::Voided => Phase::Voided,
            Stage::Authorised => {
                let fully_captured = self.captured > 0
                    && (self.remainder_released || self.captured >= self.authorised);
                if self.captured == 0 {
                    Phase::Authorised
                } else if !fully_captured {
                    Phase::PartiallyCaptured
                } else if self.refunded == 0 {
                    Phase::Captured
                } else if self.refunded >= self.captured {
                    Phase::Refunded
                } else {
                    Phase::PartiallyRefunded
                }
            }
        }
    }

    pub fn currency(&self) -> Currency {
        self.placed.amount.currency
    }

    pub fn order_id(&self) -> OrderId {
        self.placed.order_id
    }

    /// `minor` in the order's currency.
    pub fn money(&self, minor: i64) -> Money {
        Money::new(minor, self.currency())
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
            self.stage,
            Stage::AuthorisationPending | Stage::AuthorisationUnknown
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
}

impl OrderState {
    /// The placed order, `None` before its placement.
    pub fn order(&self) -> Option<&Order> {
        match self {
            OrderState::NotPlaced => None,
            OrderState::Placed(o) => Some(o),
        }
    }

    /// [`Phase::New`] before the placement.
    pub fn phase(&self) -> Phase {
        self.order().map_or(Phase::New, Order::phase)
    }

    /// Number of events folded in (0 before the placement).
    pub fn version(&self) -> u64 {
        self.order().map_or(0, |o| o.version)
    }

    pub fn placed(&self) -> Option<&PaymentPlaced> {
        self.order().map(|o| &*o.placed)
    }

    pub fn currency(&self) -> Option<Currency> {
        self.order().map(Order::currency)
    }

    pub fn order_id(&self) -> Option<OrderId> {
        self.order().map(Order::order_id)
    }

    pub fn merchant_id(&self) -> Option<&MerchantId> {
        self.order().map(|o| &o.placed.merchant_id)
    }

    pub fn gateway_order_id(&self) -> Option<&GatewayOrderId> {
        self.order()?.gateway_order_id.as_ref()
    }

    /// The capture in flight (requested or unknown), if any.
    pub fn open_capture(&self) -> Option<&CaptureEntry> {
        self.order()?.open_capture()
    }

    /// The order's captures (none before the placement).
    pub fn captures(&self) -> &[CaptureEntry] {
        self.order().map_or(&[], |o| &o.captures)
    }

    /// The order's refunds (none before the placement).
    pub fn refunds(&self) -> &[RefundEntry] {
        self.order().map_or(&[], |o| &o.refunds)
    }

    /// The token PayKKa stored for this order's card.
    pub fn token(&self) -> Option<&TokenStored> {
        self.order()?.token.as_ref()
    }

    /// The card PayKKa reported with the authorisation.
    pub fn card(&self) -> Option<&CardSummary> {
        self.order()?.card.as_ref()
    }

    /// See [`Order::has_open_call`]; `false` before the placement.
    pub fn has_open_call(&self) -> bool {
        self.order().is_some_and(Order::has_open_call)
    }

    /// See [`Order::awaits_release`]; `false` before the placement.
    pub fn awaits_release(&self) -> bool {
        self.order().is_some_and(Order::awaits_release)
    }

    /// The money invariants; `Err` names the broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let Some(o) = self.order() else {
            return Ok(());
        };
        let in_flight = o.refunds_in_flight();
        let c = o.currency();
        let checks = [
            (
                o.authorised >= 0 && o.captured >= 0 && o.refunded >= 0,
                "amounts are non-negative",
            ),
            (o.captured <= o.authorised, "captured <= authorised"),
            (o.refunded <= o.captured, "refunded <= captured"),
            (
                o.refunded + in_flight <= o.captured,
                "refunded + refunds in flight <= captured",
            ),
            (
                o.authorised <= o.placed.amount.minor,
                "authorised <= order amount",
            ),
            (
                o.captures.iter().filter(|c| c.progress.is_open()).count() <= 1,
                "at most one capture in flight",
            ),
            (
                o.captures.iter().all(|e| e.amount.currency == c)
                    && o.refunds.iter().all(|e| e.amount.currency == c),
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
    Place(PlacePayment),
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
        outcome: CallOutcome<RefundObservation>,
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

/// The grammar of an order: one arm per (phase, command) pair, no
/// wildcard, so a new [`Phase`] or [`OrderCommand`] does not compile until
/// every pair with it is decided. The phase an arm leads to follows from
/// the events it appends (see [`Order::phase`]); `docs/state-machine.md`
/// lists every edge with its events, checked by exhaustive exploration.
///
/// Terminal phases (refunded, declined, voided) absorb late outcomes and
/// observations without events; commands that make no sense in a phase
/// are [`DomainError::IllegalCommand`].
pub fn decide(s: &OrderState, cmd: OrderCommand) -> Decided {
    use OrderCommand as C;
    use Phase as P;
    let o = match s {
        OrderState::Placed(o) => o,
        OrderState::NotPlaced => {
            return match cmd {
                C::Place(p) => place(p),
                c @ (C::RecordInitiateOutcome(_)
                | C::CompleteChallenge
                | C::ExpireChallenge
                | C::Capture(_)
                | C::RecordCaptureOutcome { .. }
                | C::Void { .. }
                | C::ReleaseRemainder
                | C::RecordVoidOutcome(_)
                | C::Refund(_)
                | C::RecordRefundOutcome { .. }
                | C::ApplyGatewayObservation(_)) => illegal(P::New, &c),
            };
        }
    };
    match (o.phase(), cmd) {
        // A placed order is never New (`Order::phase`).
        (
            P::New,
            c @ (C::Place(_)
            | C::RecordInitiateOutcome(_)
            | C::CompleteChallenge
            | C::ExpireChallenge
            | C::Capture(_)
            | C::RecordCaptureOutcome { .. }
            | C::Void { .. }
            | C::ReleaseRemainder
            | C::RecordVoidOutcome(_)
            | C::Refund(_)
            | C::RecordRefundOutcome { .. }
            | C::ApplyGatewayObservation(_)),
        ) => illegal(P::New, &c),

        // Placing again: the same placement is a no-op, another an error.
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::Authorised
            | P::PartiallyCaptured
            | P::Captured
            | P::PartiallyRefunded
            | P::Refunded
            | P::Declined
            | P::Voided,
            C::Place(p),
        ) => repeated_place(o, &p),

        // Terminal phases absorb every late outcome and observation.
        (
            P::Refunded | P::Declined | P::Voided,
            C::RecordInitiateOutcome(_)
            | C::CompleteChallenge
            | C::ExpireChallenge
            | C::RecordCaptureOutcome { .. }
            | C::ReleaseRemainder
            | C::RecordVoidOutcome(_)
            | C::RecordRefundOutcome { .. }
            | C::ApplyGatewayObservation(_),
        ) => none(),

        // The initiate call's outcome (response), and anything PayKKa
        // reports (notification, query) while the order is live.
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::Authorised
            | P::PartiallyCaptured
            | P::Captured
            | P::PartiallyRefunded,
            C::RecordInitiateOutcome(out),
        ) => initiate_outcome(o, out),
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::Authorised
            | P::PartiallyCaptured
            | P::Captured
            | P::PartiallyRefunded,
            C::ApplyGatewayObservation(obs),
        ) => observe(o, obs),

        // 3-D Secure.
        (P::ChallengeRequired, C::CompleteChallenge) => one(ChallengeCompleted {}),
        (P::ChallengeRequired, C::ExpireChallenge) => one(ChallengeExpired {}),
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::Authorised
            | P::PartiallyCaptured
            | P::Captured
            | P::PartiallyRefunded,
            c @ (C::CompleteChallenge | C::ExpireChallenge),
        ) => illegal(o.phase(), &c),

        // Capture.
        (P::Authorised | P::PartiallyCaptured, C::Capture(c)) => capture(o, &c),
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::Captured
            | P::PartiallyRefunded
            | P::Refunded
            | P::Declined
            | P::Voided,
            c @ C::Capture(_),
        ) => illegal(o.phase(), &c),
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::Authorised
            | P::PartiallyCaptured
            | P::Captured
            | P::PartiallyRefunded,
            C::RecordCaptureOutcome {
                capture_id,
                outcome,
            },
        ) => capture_outcome(o, capture_id, outcome),

        // Void, and the release of the rest of a final partial capture by
        // a Void (`void_after_capture` release mode; the phase stays).
        (P::Authorised, C::Void { reason }) => void(o, reason),
        (P::Voided, C::Void { .. }) => none(),
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::PartiallyCaptured
            | P::Captured
            | P::PartiallyRefunded
            | P::Refunded
            | P::Declined,
            c @ C::Void { .. },
        ) => illegal(o.phase(), &c),
        (P::PartiallyCaptured, C::ReleaseRemainder) if o.awaits_release() => void(
            o,
            Some("release the rest of a final partial capture".to_owned()),
        ),
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::Authorised
            | P::PartiallyCaptured
            | P::Captured
            | P::PartiallyRefunded,
            C::ReleaseRemainder,
        ) => none(),
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::Authorised
            | P::PartiallyCaptured
            | P::Captured
            | P::PartiallyRefunded,
            C::RecordVoidOutcome(out),
        ) => void_outcome(o, out),

        // Refund.
        (P::PartiallyCaptured | P::Captured | P::PartiallyRefunded, C::Refund(r)) => refund(o, r),
        (P::Refunded, C::Refund(r)) => repeated_refund(o, r),
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::Authorised
            | P::Declined
            | P::Voided,
            c @ C::Refund(_),
        ) => illegal(o.phase(), &c),
        (
            P::AuthorisationPending
            | P::AuthorisationUnknown
            | P::ChallengeRequired
            | P::Authorised
            | P::PartiallyCaptured
            | P::Captured
            | P::PartiallyRefunded,
            C::RecordRefundOutcome { refund_id, outcome },
        ) => refund_outcome(o, refund_id, outcome),
    }
}
