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

pub mod observation;
mod table;

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
            OrderCommand::Void { .. } => CommandKind::Void,
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

/// Folds one event into the state. Total: events are facts, so it never
/// fails; amounts saturate rather than wrap (decide keeps them in range).
#[inline]
pub fn evolve(mut s: OrderState, e: &OrderEvent) -> OrderState {
    apply(&mut s, e);
    s
}

/// [`evolve`] in place: the fold works on one state instead of moving the
/// ~350-byte state in and out of every call.
pub fn apply(s: &mut OrderState, e: &OrderEvent) {
    s.version += 1;
    match e {
        OrderEvent::PaymentPlaced(p) => placed(s, p.clone()),
        OrderEvent::AuthorisationRequested(_) => {}
        OrderEvent::ChallengeRequired(c) => challenge(s, c.authentication_url.clone()),
        OrderEvent::ChallengeCompleted(_) => s.phase = PhaseCell(Phase::AuthorisationPending),
        OrderEvent::ChallengeFailed(d) => declined(s, d.code.clone(), d.description.clone()),
        OrderEvent::ChallengeExpired(_) => declined(
            s,
            "EXPIRED".to_owned(),
            "3-D Secure challenge expired".to_owned(),
        ),
        OrderEvent::AuthorisationDeclined(d) => declined(s, d.code.clone(), d.description.clone()),
        OrderEvent::AuthorisationOutcomeUnknown(_) => {
            s.phase = PhaseCell(Phase::AuthorisationUnknown)
        }
        OrderEvent::Authorised(a) => authorised(
            s,
            a.gateway_order_id.clone(),
            a.amount.minor,
            a.card.clone(),
        ),
        OrderEvent::Succeeded(x) => succeeded(s, x.gateway_order_id.clone(), x.captured.minor),
        OrderEvent::CaptureRequested(c) => push_entry(
            &mut s.captures,
            CaptureEntry {
                capture_id: c.capture_id,
                amount: c.amount,
                final_capture: c.final_capture,
                progress: CallProgress::Requested,
            },
        ),
        OrderEvent::Captured(c) => {
            set_capture(s, c.capture_id, CallProgress::Succeeded);
            s.captured = s.captured.saturating_add(c.amount.minor);
            s.remainder_released |= c.remainder_released;
            settle(s);
        }
        OrderEvent::CaptureDeclined(c) => set_capture(s, c.capture_id, CallProgress::Declined),
        OrderEvent::CaptureOutcomeUnknown(c) => {
            set_capture(s, c.capture_id, CallProgress::OutcomeUnknown)
        }
        OrderEvent::VoidRequested(_) => s.void = Some(CallProgress::Requested),
        OrderEvent::Voided(_) => {
            s.void = Some(CallProgress::Succeeded);
            s.phase = PhaseCell(Phase::Voided);
        }
        OrderEvent::VoidDeclined(_) => s.void = Some(CallProgress::Declined),
        OrderEvent::VoidOutcomeUnknown(_) => s.void = Some(CallProgress::OutcomeUnknown),
        OrderEvent::RefundRequested(r) => push_entry(
            &mut s.refunds,
            RefundEntry {
                refund_id: r.refund_id,
                refund_trans_id: r.refund_trans_id.clone(),
                amount: r.amount,
                progress: CallProgress::Requested,
            },
        ),
        OrderEvent::Refunded(r) => {
            set_refund(s, r.refund_id, CallProgress::Succeeded);
            s.refunded = s.refunded.saturating_add(r.amount.minor);
            settle(s);
        }
        OrderEvent::RefundDeclined(r) => set_refund(s, r.refund_id, CallProgress::Declined),
        OrderEvent::RefundOutcomeUnknown(r) => {
            set_refund(s, r.refund_id, CallProgress::OutcomeUnknown)
        }
        OrderEvent::TokenStored(t) => s.details_mut().token = Some(t.clone()),
    }
}

/// [`evolve`] for an event the caller is done with (rehydration from the
/// store): the data the state keeps is moved out of the event instead of
/// copied. Always the same state as `evolve(s, &e)` (checked by
/// [`explore`] on every reachable transition).
#[inline]
pub fn evolve_owned(mut s: OrderState, e: OrderEvent) -> OrderState {
    apply_owned(&mut s, e);
    s
}

/// [`evolve_owned`] in place.
pub fn apply_owned(s: &mut OrderState, e: OrderEvent) {
    match e {
        OrderEvent::PaymentPlaced(p) => placed(s, p),
        OrderEvent::ChallengeRequired(c) => challenge(s, c.authentication_url),
        OrderEvent::ChallengeFailed(d) => declined(s, d.code, d.description),
        OrderEvent::AuthorisationDeclined(d) => declined(s, d.code, d.description),
        OrderEvent::Authorised(a) => authorised(s, a.gateway_order_id, a.amount.minor, a.card),
        OrderEvent::Succeeded(x) => succeeded(s, x.gateway_order_id, x.captured.minor),
        OrderEvent::RefundRequested(r) => push_entry(
            &mut s.refunds,
            RefundEntry {
                refund_id: r.refund_id,
                refund_trans_id: r.refund_trans_id,
                amount: r.amount,
                progress: CallProgress::Requested,
            },
        ),
        OrderEvent::TokenStored(t) => s.details_mut().token = Some(t),
        // Nothing to move: the by-reference fold is already copy-free.
        other => return apply(s, &other),
    }
    s.version += 1;
}

/// Folds a whole history.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a OrderEvent>) -> OrderState {
    let mut s = OrderState::default();
    for e in events {
        apply(&mut s, e);
    }
    s
}

// ---------------------------------------------------------------- evolve helpers
// Shared by `evolve` (which copies what it keeps) and `evolve_owned`.

fn placed(s: &mut OrderState, p: std::sync::Arc<PaymentPlaced>) {
    s.placed = Some(p);
    s.phase = PhaseCell(Phase::AuthorisationPending);
}

fn challenge(s: &mut OrderState, authentication_url: String) {
    s.details_mut().authentication_url = Some(authentication_url);
    s.phase = PhaseCell(Phase::ChallengeRequired);
}

fn authorised(
    s: &mut OrderState,
    gateway_order_id: GatewayOrderId,
    amount: i64,
    card: Option<CardSummary>,
) {
    s.gateway_order_id = Some(gateway_order_id);
    s.authorised = amount;
    if let Some(card) = card {
        s.details_mut().card = Some(card);
    }
    if let Some(d) = &mut s.details {
        d.authentication_url = None;
        if **d == OrderDetails::default() {
            s.details = None;
        }
    }
    s.phase = PhaseCell(Phase::Authorised);
    settle(s);
}

fn succeeded(s: &mut OrderState, gateway_order_id: Option<GatewayOrderId>, captured: i64) {
    if gateway_order_id.is_some() {
        s.gateway_order_id = gateway_order_id;
    }
    s.captured = s.captured.saturating_add(captured);
    s.remainder_released = true;
    settle(s);
}

fn declined(s: &mut OrderState, code: String, description: String) {
    s.details_mut().decline = Some((code, description));
    s.phase = PhaseCell(Phase::Declined);
}

/// Appends a capture or refund entry. Orders rarely have more than one or
/// two: the first allocation is sized for two (`push` would take four and
/// go through its growth path).
fn push_entry<T>(v: &mut Vec<T>, entry: T) {
    if v.capacity() == 0 {
        *v = Vec::with_capacity(2);
    }
    v.push(entry);
}

fn set_capture(s: &mut OrderState, id: CaptureId, p: CallProgress) {
    // The entry is almost always the last one: search from the end.
    if let Some(c) = s.captures.iter_mut().rev().find(|c| c.capture_id == id) {
        c.progress = p;
    }
}

fn set_refund(s: &mut OrderState, id: RefundId, p: CallProgress) {
    if let Some(r) = s.refunds.iter_mut().rev().find(|r| r.refund_id == id) {
        r.progress = p;
    }
}

/// Derives the money phase from the ledger after a money event.
fn settle(s: &mut OrderState) {
    if !matches!(
        s.phase(),
        Phase::Authorised | Phase::PartiallyCaptured | Phase::Captured | Phase::PartiallyRefunded
    ) {
        return;
    }
    let fully_captured = s.captured > 0 && (s.remainder_released || s.captured >= s.authorised);
    s.phase = PhaseCell(if s.captured == 0 {
        Phase::Authorised
    } else if !fully_captured {
        Phase::PartiallyCaptured
    } else if s.refunded == 0 {
        Phase::Captured
    } else if s.refunded >= s.captured {
        Phase::Refunded
    } else {
        Phase::PartiallyRefunded
    });
}

// ---------------------------------------------------------------- decide helpers

/// Moves a string out of the (consumed) command.
fn take(s: &mut String) -> String {
    std::mem::take(s)
}

fn none() -> Decided {
    Ok(Vec::new())
}

fn one(e: impl Into<OrderEvent>) -> Decided {
    Ok(vec![e.into()])
}

fn illegal(s: &OrderState, cmd: &OrderCommand) -> Decided {
    Err(DomainError::IllegalCommand {
        state: s.phase(),
        command: cmd.kind(),
    })
}

fn check_currency(s: &OrderState, m: Money) -> Result<(), DomainError> {
    match s.currency() {
        Some(c) if c != m.currency => Err(DomainError::CurrencyMismatch {
            expected: c,
            got: m.currency,
        }),
        _ => Ok(()),
    }
}

fn place(p: &mut PlacePayment) -> Decided {
    if !p.amount.is_positive() {
        return Err(DomainError::NonPositiveAmount {
            operation: "payment",
            amount: p.amount,
        });
    }
    let trans_id = p.order_id.trans_id();
    let (checkout_id, session_id) = match p.checkout.take() {
        Some((c, s)) => (Some(c), Some(s)),
        None => (None, None),
    };
    let via_checkout = checkout_id.is_some();
    let placed = PaymentPlaced {
        order_id: p.order_id,
        merchant_id: MerchantId(std::mem::take(&mut p.merchant_id.0)),
        trans_id: trans_id.clone(),
        amount: p.amount,
        payment_type: p.payment_type,
        authorisation_type: p.authorisation_type,
        capture_method: p.capture_method,
        instrument: std::mem::take(&mut p.instrument),
        store_token: p.store_token.take(),
        agreement_id: p.agreement_id,
        checkout_id,
        session_id,
    };
    let mut out = Vec::with_capacity(2);
    out.push(OrderEvent::PaymentPlaced(std::sync::Arc::new(placed)));
    if !via_checkout {
        out.push(AuthorisationRequested { trans_id }.into());
    }
    Ok(out)
}

/// Placing an existing order again: the same placement is a no-op, another
/// one an error.
fn repeated_place(s: &OrderState, p: &PlacePayment) -> Decided {
    match &s.placed {
        Some(placed)
            if placed.order_id == p.order_id
                && placed.amount == p.amount
                && placed.merchant_id == p.merchant_id =>
        {
            none()
        }
        _ => Err(DomainError::IdReused {
            what: "order id",
            id: p.order_id.to_string(),
        }),
    }
}

fn initiate_outcome(s: &OrderState, o: &mut CallOutcome<PaymentObservation>) -> Decided {
    let pending = matches!(
        s.phase(),
        Phase::AuthorisationPending | Phase::AuthorisationUnknown
    );
    match o {
        CallOutcome::Accepted(obs) => observe_payment(s, obs),
        CallOutcome::Declined { code, description } if pending => one(AuthorisationDeclined {
            code: take(code),
            description: take(description),
        }),
        CallOutcome::Unknown { reason } if s.phase() == Phase::AuthorisationPending => {
            one(AuthorisationOutcomeUnknown {
                reason: take(reason),
            })
        }
        // A late or repeated outcome: the state already moved on.
        CallOutcome::Declined { .. } | CallOutcome::Unknown { .. } => none(),
    }
}

fn capture(s: &OrderState, c: &CapturePayment) -> Decided {
    if let Some(done) = s.captures.iter().find(|e| e.capture_id == c.capture_id) {
        // Repeat of a capture we already know: same amount = no-op.
        return match c.amount {
            Some(a) if a != done.amount => Err(DomainError::IdReused {
                what: "capture id",
                id: c.capture_id.to_string(),
            }),
            _ => none(),
        };
    }
    let placed = s.placed.as_deref();
    if placed.is_some_and(|p| p.capture_method == CaptureMode::Automatic) {
        return Err(DomainError::AutomaticCapture);
    }
    if s.open_capture().is_some() || s.void.is_some_and(CallProgress::is_open) {
        return Err(DomainError::OperationInFlight {
            state: s.phase(),
            operation: if s.open_capture().is_some() {
                "capture"
            } else {
                "void"
            },
        });
    }
    let remaining = s.authorised_money().checked_sub(s.captured_money())?;
    let amount = c.amount.unwrap_or(remaining);
    check_currency(s, amount)?;
    if !amount.is_positive() {
        return Err(DomainError::NonPositiveAmount {
            operation: "capture",
            amount,
        });
    }
    if amount.minor > remaining.minor {
        return Err(DomainError::AmountExceedsAvailable {
            operation: "capture",
            requested: amount,
            available: remaining,
        });
    }
    one(CaptureRequested {
        capture_id: c.capture_id,
        amount,
        final_capture: c.final_capture || amount == remaining,
    })
}

fn capture_outcome(
    s: &OrderState,
    id: CaptureId,
    o: &mut CallOutcome<PaymentObservation>,
) -> Decided {
    let Some(open) = s.open_capture().filter(|c| c.capture_id == id) else {
        return none(); // resolved already (webhook, query) or never ours
    };
    match o {
        CallOutcome::Accepted(obs) if obs.status == ObservedStatus::Failure => {
            let (code, description) = error_of(obs, "FAILURE");
            one(CaptureDeclined {
                capture_id: id,
                code,
                description,
            })
        }
        // PARTIALLY_REVERSED's meaning is [INFERRED]; whether the rest is
        // released is our own request's `final_capture`.
        CallOutcome::Accepted(obs) if obs.status.is_captured() => one(Captured {
            capture_id: id,
            amount: open.amount,
            remainder_released: open.final_capture,
        }),
        // Accepted but still AUTHORIZED/PROCESSING: the result comes later.
        CallOutcome::Accepted(_) => none(),
        CallOutcome::Declined { code, description } => one(CaptureDeclined {
            capture_id: id,
            code: take(code),
            description: take(description),
        }),
        CallOutcome::Unknown { reason } if open.progress == CallProgress::Requested => {
            one(CaptureOutcomeUnknown {
                capture_id: id,
                reason: take(reason),
            })
        }
        CallOutcome::Unknown { .. } => none(),
    }
}

fn void(s: &OrderState, reason: Option<String>) -> Decided {
    if s.void.is_some_and(CallProgress::is_open) {
        return none(); // repeated void while the first is in flight
    }
    if s.open_capture().is_some() {
        return Err(DomainError::OperationInFlight {
            state: s.phase(),
            operation: "capture",
        });
    }
    one(VoidRequested { reason })
}

fn void_outcome(s: &OrderState, o: &mut CallOutcome<PaymentObservation>) -> Decided {
    let Some(progress) = s.void.filter(|p| p.is_open()) else {
        return none();
    };
    match o {
        CallOutcome::Accepted(obs) if obs.status == ObservedStatus::Failure => {
            let (code, description) = error_of(obs, "FAILURE");
            one(VoidDeclined { code, description })
        }
        CallOutcome::Accepted(obs) if obs.status.is_captured() || s.captured > 0 => {
            // PayKKa says it is captured: the void lost; learn the capture.
            let mut out = vec![OrderEvent::from(VoidDeclined {
                code: "CAPTURED".into(),
                description: "payment was captured before the void".into(),
            })];
            out.extend(observe_payment(s, obs)?);
            Ok(out)
        }
        CallOutcome::Accepted(_) => one(Voided {}),
        CallOutcome::Declined { code, description } => one(VoidDeclined {
            code: take(code),
            description: take(description),
        }),
        CallOutcome::Unknown { reason } if progress == CallProgress::Requested => {
            one(VoidOutcomeUnknown {
                reason: take(reason),
            })
        }
        CallOutcome::Unknown { .. } => none(),
    }
}

fn refund(s: &OrderState, r: &mut RefundPayment) -> Decided {
    if let Some(known) = s.refunds.iter().find(|e| e.refund_id == r.refund_id) {
        return if known.amount == r.amount {
            none()
        } else {
            Err(DomainError::IdReused {
                what: "refund id",
                id: r.refund_id.to_string(),
            })
        };
    }
    check_currency(s, r.amount)?;
    if !r.amount.is_positive() {
        return Err(DomainError::NonPositiveAmount {
            operation: "refund",
            amount: r.amount,
        });
    }
    // Plain minor units: the state holds one currency (checked above) and
    // refunded + in flight <= captured (an invariant), so no Money
    // re-validation per step.
    let available = s
        .captured
        .saturating_sub(s.refunded)
        .saturating_sub(s.refunds_in_flight());
    if r.amount.minor > available {
        return Err(DomainError::AmountExceedsAvailable {
            operation: "refund",
            requested: r.amount,
            available: s.money(available),
        });
    }
    let seq = u32::try_from(s.refunds.len() + 1).unwrap_or(u32::MAX);
    let Some(order_id) = s.order_id() else {
        return illegal(s, &OrderCommand::Refund(r.clone()));
    };
    one(RefundRequested {
        refund_id: r.refund_id,
        refund_trans_id: order_id.refund_trans_id(seq),
        amount: r.amount,
        reason: r.reason.take(),
    })
}

fn repeated_refund(s: &OrderState, r: &RefundPayment) -> Decided {
    match s.refunds.iter().find(|e| e.refund_id == r.refund_id) {
        Some(known) if known.amount == r.amount => none(),
        _ => illegal(s, &OrderCommand::Refund(r.clone())),
    }
}

fn refund_outcome(s: &OrderState, id: RefundId, o: &mut CallOutcome<RefundObservation>) -> Decided {
    match o {
        CallOutcome::Accepted(obs) => observe_refund(s, obs),
        CallOutcome::Declined { code, description } => match open_refund(s, id) {
            Some(_) => one(RefundDeclined {
                refund_id: id,
                code: take(code),
                description: take(description),
            }),
            None => none(),
        },
        CallOutcome::Unknown { reason } => match open_refund(s, id) {
            Some(r) if r.progress == CallProgress::Requested => one(RefundOutcomeUnknown {
                refund_id: id,
                reason: take(reason),
            }),
            _ => none(),
        },
    }
}

fn open_refund(s: &OrderState, id: RefundId) -> Option<&RefundEntry> {
    s.refunds
        .iter()
        .find(|r| r.refund_id == id && r.progress.is_open())
}

/// The error code and description of `obs`, moved out of it (the
/// observation is consumed by decide: no copy).
fn error_of(obs: &mut PaymentObservation, default: &str) -> (String, String) {
    (
        obs.take_detail(|d| d.error_code.take())
            .unwrap_or_else(|| default.to_owned()),
        obs.take_detail(|d| d.error_description.take())
            .unwrap_or_default(),
    )
}

// ---------------------------------------------------------------- observations

/// Emits what is needed for the state to reflect `o`; nothing when the state
/// already does or `o` is older (a late AUTHORIZED after SUCCESS).
fn observe(s: &OrderState, o: &mut Observation) -> Decided {
    if s.phase().is_terminal() {
        return none();
    }
    match o {
        Observation::Payment(p) => observe_payment(s, p),
        Observation::Refund(r) => observe_refund(s, r),
        Observation::PaymentNotFound { settled: true }
            if matches!(
                s.phase(),
                Phase::AuthorisationPending | Phase::AuthorisationUnknown
            ) =>
        {
            one(AuthorisationDeclined {
                code: "206024".into(),
                description: "PayKKa has no transaction for this trans_id after the grace period"
                    .into(),
            })
        }
        Observation::PaymentNotFound { .. } => none(),
        Observation::RefundNotFound {
            refund_id,
            settled: true,
        } if open_refund(s, *refund_id).is_some() => one(RefundDeclined {
            refund_id: *refund_id,
            code: "206024".into(),
            description: "PayKKa has no such refund after the grace period".into(),
        }),
        Observation::RefundNotFound { .. } => none(),
    }
}

/// Accumulates events and gives each step the state as it will be after
/// the events emitted so far. That state is folded lazily, only when a step
/// looks at it after an emit: the common single-event observation (e.g.
/// AUTHORIZED on a pending order) never copies the state.
struct Emitter<'a> {
    base: &'a OrderState,
    /// `base` with `events[..applied]` folded in, once someone asked.
    scratch: Option<OrderState>,
    applied: usize,
    events: Vec<OrderEvent>,
}

impl<'a> Emitter<'a> {
    fn new(base: &'a OrderState) -> Self {
        Emitter {
            base,
            scratch: None,
            applied: 0,
            events: Vec::new(),
        }
    }

    /// The state with every event emitted so far applied.
    fn state(&mut self) -> &OrderState {
        if self.applied < self.events.len() {
            let mut st = self.scratch.take().unwrap_or_else(|| self.base.clone());
            for e in &self.events[self.applied..] {
                apply(&mut st, e);
            }
            self.applied = self.events.len();
            self.scratch = Some(st);
        }
        self.scratch.as_ref().unwrap_or(self.base)
    }

    fn emit(&mut self, e: impl Into<OrderEvent>) {
        // Observations emit one or two events: a small first allocation
        // (not `push`'s four) stays in the allocator's fast path, and an
        // observation that changes nothing allocates nothing.
        if self.events.capacity() == 0 {
            self.events = Vec::with_capacity(2);
        }
        self.events.push(e.into());
    }
}

/// Takes the observation by reference and moves its strings out
/// (`Option::take`): callers own it and drop it right after.
fn observe_payment(s: &OrderState, o: &mut PaymentObservation) -> Decided {
    use ObservedStatus as O;
    if s.phase().is_terminal() || s.placed.is_none() {
        return none();
    }
    let mut em = Emitter::new(s);
    let pre_auth = |p: Phase| {
        matches!(
            p,
            Phase::AuthorisationPending | Phase::AuthorisationUnknown | Phase::ChallengeRequired
        )
    };
    let placed_amount = s
        .placed
        .as_ref()
        .map(|p| p.amount)
        .unwrap_or(Money::zero(Currency::EUR));

    // The observation is ours: its strings move into the events.
    match o.status {
        // A challenge still pending past the reconciler's grace period will
        // never complete (PayKKa expires it).
        O::Processing if o.settled && s.phase() == Phase::ChallengeRequired => {
            em.emit(ChallengeExpired {});
        }
        O::Processing | O::Other(_) => {
            if matches!(
                s.phase(),
                Phase::AuthorisationPending | Phase::AuthorisationUnknown
            ) && let Some(authentication_url) = o.take_detail(|d| d.authentication_url.take())
            {
                em.emit(ChallengeRequired { authentication_url });
            }
        }
        O::Failure if pre_auth(s.phase()) => {
            let (code, description) = error_of(o, "FAILURE");
            if s.phase() == Phase::ChallengeRequired {
                em.emit(ChallengeFailed { code, description });
            } else {
                em.emit(AuthorisationDeclined { code, description });
            }
        }
        O::Failure => {
            if let Some(c) = s.open_capture() {
                let (code, description) = error_of(o, "FAILURE");
                em.emit(CaptureDeclined {
                    capture_id: c.capture_id,
                    code,
                    description,
                });
            }
        }
        O::Canceled if pre_auth(s.phase()) => {
            let (code, description) = error_of(o, "CANCELED");
            em.emit(AuthorisationDeclined { code, description });
        }
        O::Canceled => {
            if s.phase() == Phase::Authorised && s.open_capture().is_none() {
                em.emit(Voided {});
            }
        }
        O::Authorised | O::Success | O::PartiallyRefunded | O::Refunded | O::PartiallyReversed => {
            if pre_auth(s.phase()) {
                if s.phase() == Phase::ChallengeRequired {
                    em.emit(ChallengeCompleted {});
                }
                let gateway_order_id = match o.gateway_order_id.take() {
                    Some(id) => id,
                    None => s
                        .gateway_order_id
                        .clone()
                        .ok_or(DomainError::IncompleteObservation("order_id"))?,
                };
                let authed = o
                    .balances()
                    .map(|b| b.authed)
                    .filter(|a| *a > 0)
                    .or(o.amount.map(|m| m.minor))
                    .unwrap_or(placed_amount.minor)
                    .min(placed_amount.minor);
                em.emit(Authorised {
                    gateway_order_id,
                    amount: Money::new(authed, placed_amount.currency),
                    card: o.card.take().map(|c| *c),
                });
            }
            if o.status.is_captured() {
                learn_capture(&mut em, o);
            } else if o.settled {
                // AUTHORIZED after the grace period: an open capture or void
                // did not happen.
                let st = em.state();
                let not_captured = st
                    .open_capture()
                    .filter(|_| o.balances().is_none_or(|b| b.captured <= st.captured))
                    .map(|c| c.capture_id);
                if let Some(capture_id) = not_captured {
                    em.emit(CaptureDeclined {
                        capture_id,
                        code: "NOT_CAPTURED".into(),
                        description: "PayKKa still reports AUTHORIZED after the grace period"
                            .into(),
                    });
                }
                if em.state().void.is_some_and(CallProgress::is_open) {
                    em.emit(VoidDeclined {
                        code: "NOT_VOIDED".into(),
                        description: "PayKKa still reports AUTHORIZED after the grace period"
                            .into(),
                    });
                }
            }
        }
    }

    // A stored token, once the payment went through.
    if let Some(token) = o.take_detail(|d| d.token.take()) {
        let st = em.state();
        if st.token().is_none()
            && !matches!(st.phase(), Phase::Declined | Phase::New)
            && !pre_auth(st.phase())
        {
            let shopper_reference = o
                .take_detail(|d| d.shopper_reference.take())
                .or_else(|| {
                    s.placed
                        .as_ref()
                        .and_then(|p| p.store_token.as_ref().map(|t| t.shopper_reference.clone()))
                })
                .unwrap_or_default();
            em.emit(TokenStored {
                token,
                shopper_reference,
                recurring_agreement_ref: o.take_detail(|d| d.recurring_agreement_ref.take()),
            });
        }
    }
    Ok(em.events)
}

/// PayKKa reports money captured: resolve an open capture and record any
/// capture we did not ask for (automatic capture).
fn learn_capture(em: &mut Emitter, o: &PaymentObservation) {
    let st = em.state();
    if !matches!(st.phase(), Phase::Authorised | Phase::PartiallyCaptured) {
        return;
    }
    // What PayKKa says is captured. Without balances: an open capture went
    // through; with none open, SUCCESS from `Authorised` means everything
    // (automatic capture). After our own partial captures a SUCCESS without
    // balances says nothing new (PayKKa reports SUCCESS from the first
    // capture on): only balances (a query) can show more money captured.
    let target = match (o.balances(), st.open_capture()) {
        (Some(b), _) => b.captured,
        (None, Some(c)) => st.captured.saturating_add(c.amount.minor),
        (None, None) if o.status == ObservedStatus::PartiallyReversed => st.captured,
        (None, None) if st.phase() == Phase::PartiallyCaptured => st.captured,
        (None, None) => st.authorised,
    }
    .min(st.authorised);
    let covered = st
        .open_capture()
        .filter(|c| o.balances().is_none() || target >= st.captured.saturating_add(c.amount.minor))
        .map(|c| (c.capture_id, c.amount, c.final_capture));
    if let Some((capture_id, amount, final_capture)) = covered {
        em.emit(Captured {
            capture_id,
            amount,
            remainder_released: final_capture,
        });
    }
    let st = em.state();
    if st.open_capture().is_none() && target > st.captured && !st.remainder_released {
        let currency = st
            .placed
            .as_ref()
            .map(|p| p.amount.currency)
            .unwrap_or(Currency::EUR);
        let captured = Money::new(target - st.captured, currency);
        em.emit(Succeeded {
            gateway_order_id: None,
            captured,
        });
    }
}

fn observe_refund(s: &OrderState, o: &mut RefundObservation) -> Decided {
    let Some(r) = open_refund(s, o.refund_id) else {
        return none();
    };
    match o.status {
        ObservedRefundStatus::Success => one(Refunded {
            refund_id: r.refund_id,
            gateway_refund_id: o.gateway_refund_id.take(),
            amount: r.amount,
        }),
        ObservedRefundStatus::Failure => one(RefundDeclined {
            refund_id: r.refund_id,
            code: o.error_code.take().unwrap_or_else(|| "FAILURE".into()),
            description: o.error_description.take().unwrap_or_default(),
        }),
        _ => none(),
    }
}
