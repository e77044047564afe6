//! The orchestrator: load -> decide -> append(expected version) -> call
//! PayKKa -> decide(outcome) -> append.
//!
//! * Optimistic concurrency: a `Conflict` on append reloads the stream and
//!   decides again, at most [`EngineConfig::max_conflict_retries`] times.
//! * Merchant commands carry an idempotency key. The record is committed
//!   with the command's first events (`AppendRequest::idempotency`) and
//!   points at the stream; a repeat with the same request returns the
//!   order's current view, a repeat with another request is
//!   [`EngineError::IdempotencyConflict`].
//! * Card data (PAN, CVV, encrypted fields) lives only in the
//!   [`PlacePaymentRequest`] and the `InitiateRequest` built from it, in
//!   memory, for the duration of the call; events keep brand/BIN/last 4.
//! * Gateway observations (webhooks, query results) are commands too
//!   ([`Engine::apply_observation`]); duplicates and late arrivals emit
//!   nothing.
//! * Each command runs in a `command` span and each PayKKa call in a
//!   `paykka_call` span with order id, merchant id, trans_id and
//!   correlation id.

use std::sync::Arc;
use std::time::Duration;

use payorch_schemas::Money;
use payorch_schemas::events::order::{InstrumentSummary, TokenRequest};
use payorch_schemas::events::{
    AgreementEvent, AgreementId, AuthorisationKind, CaptureId, CaptureMode, CardSummary,
    CheckoutEvent, CheckoutId, MerchantId, OrderEvent, OrderId, PaymentKind, RefundId, SessionId,
    TokenPurpose,
};
use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, AuthorisationType, Browser, CaptureMethod,
    CaptureRequest, CheckoutSessionRequest, InitiateRequest, PaymentInfo, PaymentNotification,
    PaymentRequest, PaymentResponse, PaymentType, QueryRequest, Reason, RecurringCancelRequest,
    RefundNotification, RefundQueryRequest, RefundRequest, SessionMode, TokenQueryRequest,
    TokenQueryResponse, TokenRemoveRequest, TokenUsage, VoidRequest,
};
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

use crate::agreement::{self, AgreementCommand, AgreementError, AgreementPhase, AgreementState};
use crate::checkout::{self, CheckoutCommand, CheckoutError, CheckoutPhase, CheckoutState};
use crate::codec::{self, CodecError, DomainEvent};
use crate::gateway::{self, GatewayOutcome, PaymentGateway, RejectionClass};
use crate::order::{
    self, CallOutcome, CallProgress, CaptureEntry, CapturePayment, DomainError, Observation,
    ObservationSource, OrderCommand, OrderState, Phase, PlacePayment, RefundEntry, RefundPayment,
};
use crate::store::{
    AppendRequest, Clock, EventMetadata, EventStore, ExpectedVersion, IdempotencyRecord,
    IdempotencyStore, RecordedEvent, StoreError, StreamId, Version,
};

/// Errors of the engine's public API. Domain refusals, idempotency misuse,
/// contention and infrastructure failures are separate variants so callers
/// can map them (HTTP 422 / 409 / 503 ...).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The order refused the command (fix the request).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The agreement refused the command (fix the request).
    #[error(transparent)]
    Agreement(#[from] AgreementError),
    /// The checkout session refused the command (fix the request).
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    /// No such order/agreement/session for this merchant.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key {key:?} was already used with a different request")]
    IdempotencyConflict { key: String },
    /// Too many concurrent writers on one stream; retry later.
    #[error("stream {stream} stayed contended after {attempts} attempts; retry later")]
    Contention { stream: String, attempts: u32 },
    /// The store failed (see [`StoreError`]: retry on `Unavailable`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be read (corrupt data; page someone).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A PayKKa call that records no events (token query, Apple Pay
    /// session...) did not succeed.
    #[error("PayKKa {operation} failed ({kind}): {code} {description}")]
    Gateway {
        operation: &'static str,
        kind: &'static str,
        code: String,
        description: String,
    },
    /// The request is incomplete for this operation (fix the request).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// Settings of the engine ([INFERRED] spec facts are settings).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// `notify_url` sent with payments and sessions.
    pub notify_url: Option<String>,
    /// `notify_url` sent with refunds.
    pub refund_notify_url: Option<String>,
    /// `return_url` when the request has none (needed for 3DS).
    pub default_return_url: Option<String>,
    /// Reload-and-redecide attempts on optimistic concurrency conflicts.
    pub max_conflict_retries: u32,
    /// Attempts for a `Retryable` gateway answer before recording the
    /// outcome as unknown (which the reconciler resolves).
    pub retryable_attempts: u32,
    /// Backoff between retryable attempts (doubles each time).
    pub retry_backoff: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            notify_url: None,
            refund_notify_url: None,
            default_return_url: None,
            max_conflict_retries: 8,
            retryable_attempts: 3,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// Who asks, for scoping, idempotency and tracing.
#[derive(Clone, Debug)]
pub struct CommandContext {
    pub merchant_id: MerchantId,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub actor: Option<String>,
}

impl CommandContext {
    pub fn new(merchant_id: impl Into<String>) -> Self {
        CommandContext {
            merchant_id: MerchantId::new(merchant_id),
            idempotency_key: None,
            correlation_id: None,
            actor: None,
        }
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    fn metadata(&self) -> EventMetadata {
        EventMetadata {
            correlation_id: self.correlation_id,
            causation_id: None,
            merchant_id: Some(self.merchant_id.as_str().to_owned()),
            actor: self.actor.clone(),
        }
    }
}

/// A merchant's request to pay. `payment` carries the instrument (card
/// data stays in memory; only its summary is stored).
#[derive(Clone, Debug)]
pub struct PlacePaymentRequest {
    pub amount: Money,
    pub payment_type: PaymentKind,
    pub authorisation_type: AuthorisationKind,
    pub capture_method: CaptureMode,
    pub payment: PaymentRequest,
    /// Ask PayKKa to store the card (token).
    pub store_token: Option<TokenRequest>,
    pub return_url: Option<String>,
    pub browser: Option<Browser>,
}

/// A merchant's request to open a checkout session.
#[derive(Clone, Debug)]
pub struct CheckoutSessionCreate {
    pub amount: Money,
    pub payment_type: PaymentKind,
    pub capture_method: CaptureMode,
    pub session_mode: SessionMode,
    pub return_url: Option<String>,
    pub expires_at: OffsetDateTime,
}

/// What the HTTP API and the CLI show of an order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrderView {
    pub order_id: OrderId,
    pub merchant_id: MerchantId,
    pub trans_id: String,
    pub status: Phase,
    pub amount: Money,
    pub authorised: Money,
    pub captured: Money,
    pub refunded: Money,
    pub payment_type: PaymentKind,
    pub capture_method: CaptureMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement_id: Option<AgreementId>,
    pub captures: Vec<CaptureEntry>,
    pub refunds: Vec<RefundEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub void: Option<CallProgress>,
    /// Stream version the view was built from.
    pub version: u64,
}

impl OrderView {
    /// `None` for an order with no events.
    pub fn from_state(s: &OrderState) -> Option<OrderView> {
        let p = s.placed.as_deref()?;
        Some(OrderView {
            order_id: p.order_id,
            merchant_id: p.merchant_id.clone(),
            trans_id: p.trans_id.as_str().to_owned(),
            status: s.phase(),
            amount: p.amount,
            authorised: s.authorised_money(),
            captured: s.captured_money(),
            refunded: s.refunded_money(),
            payment_type: p.payment_type,
            capture_method: p.capture_method,
            gateway_order_id: s.gateway_order_id.as_ref().map(|g| g.as_str().to_owned()),
            authentication_url: s.authentication_url().map(str::to_owned),
            decline_code: s.decline().map(|d| d.0.clone()),
            decline_description: s.decline().map(|d| d.1.clone()),
            card: s.card().or(p.instrument.card.as_ref()).cloned(),
            token: s.token().map(|t| t.token.clone()),
            // A charge names its agreement; a first recurring payment that
            // stored its card created the agreement with its own id (see
            // `after_order_change`).
            agreement_id: p.agreement_id.or_else(|| {
                (p.payment_type == PaymentKind::Recurring && s.token().is_some())
                    .then_some(AgreementId(p.order_id.0))
            }),
            captures: s.captures.clone(),
            refunds: s.refunds.clone(),
            void: s.void,
            version: s.version,
        })
    }
}

/// What the API shows of an agreement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgreementView {
    pub agreement_id: AgreementId,
    pub merchant_id: MerchantId,
    pub status: AgreementPhase,
    pub first_order_id: OrderId,
    pub shopper_reference: String,
    pub charges: Vec<OrderId>,
    pub version: u64,
}

/// What the API shows of a checkout session.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckoutView {
    pub checkout_id: CheckoutId,
    pub merchant_id: MerchantId,
    pub status: CheckoutPhase,
    pub amount: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    pub version: u64,
}

/// What a Checkout Session Query showed about a checkout session's payment
/// ([`Engine::check_checkout_payment`]).
#[derive(Clone, Debug, PartialEq)]
pub enum SessionPaymentCheck {
    /// PayKKa shows a payment that holds or may still hold money: the
    /// order is started (as from the notification), the session completed
    /// and the answer applied to the order, whose view this is (boxed:
    /// the other answers carry nothing).
    Paid(Box<OrderView>),
    /// A definitive "no money": no transaction yet, or it ended without
    /// money (FAILURE, CANCELED), or (past the grace period) PayKKa does not
    /// know the session. Nothing is written.
    NotPaid,
    /// No definitive answer (timeout, 5xx, refusal): nothing is written.
    NoAnswer,
}

/// An aggregate as the orchestrator sees it: a state folded from typed
/// events.
pub trait Aggregate {
    type State: Default + Clone + Send + Sync;
    type Event: DomainEvent;
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
    /// [`Aggregate::evolve`] for an event the caller is done with (loading
    /// from the store); an aggregate may move data out of it instead of
    /// copying. Must give the same state as `evolve(state, &event)`.
    fn evolve_owned(state: Self::State, event: Self::Event) -> Self::State {
        Self::evolve(state, &event)
    }
}

/// Marker for the Order aggregate.
pub struct OrderAggregate;
impl Aggregate for OrderAggregate {
    type State = OrderState;
    type Event = OrderEvent;
    fn evolve(state: OrderState, event: &OrderEvent) -> OrderState {
        order::evolve(state, event)
    }
    fn evolve_owned(state: OrderState, event: OrderEvent) -> OrderState {
        order::evolve_owned(state, event)
    }
}

/// Marker for the RecurringAgreement aggregate.
pub struct AgreementAggregate;
impl Aggregate for AgreementAggregate {
    type State = AgreementState;
    type Event = AgreementEvent;
    fn evolve(state: AgreementState, event: &AgreementEvent) -> AgreementState {
        agreement::evolve(state, event)
    }
}

/// Marker for the CheckoutSession aggregate.
pub struct CheckoutAggregate;
impl Aggregate for CheckoutAggregate {
    type State = CheckoutState;
    type Event = CheckoutEvent;
    fn evolve(state: CheckoutState, event: &CheckoutEvent) -> CheckoutState {
        checkout::evolve(state, event)
    }
}

/// Stream id of an order.
pub fn order_stream(id: OrderId) -> StreamId {
    StreamId::new(format!("order-{}", id.0))
}
/// Stream id of an agreement.
pub fn agreement_stream(id: AgreementId) -> StreamId {
    StreamId::new(format!("agreement-{}", id.0))
}
/// Stream id of a checkout session.
pub fn checkout_stream(id: CheckoutId) -> StreamId {
    StreamId::new(format!("checkout-{}", id.0))
}

const PAGE: usize = 1024;

/// Folds stored events into `state`: each payload is decoded (upcast if
/// old) and moved into the state. What [`load`] does per page; the engine
/// bench measures rehydration through it.
pub fn fold_recorded<A: Aggregate>(
    mut state: A::State,
    events: &[RecordedEvent],
) -> Result<A::State, CodecError> {
    for e in events {
        state = A::evolve_owned(state, codec::decode_recorded(e)?);
    }
    Ok(state)
}

/// Reads and folds a whole stream.
pub async fn load<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<(A::State, Version), EngineError> {
    let mut state = A::State::default();
    let mut version = Version::NONE;
    loop {
        let batch = store.read_stream(stream, version.next(), PAGE).await?;
        let n = batch.len();
        state = fold_recorded::<A>(state, &batch)?;
        if let Some(last) = batch.last() {
            version = last.version;
        }
        if n < PAGE {
            return Ok((state, version));
        }
    }
}

/// 64-bit FNV-1a, hex: the request fingerprint for idempotency (stable
/// across Rust versions, unlike `DefaultHasher`).
fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The idempotency fingerprint of a payment request (no card secrets: the
/// summary stands for the card).
fn place_fingerprint(
    req: &PlacePaymentRequest,
    summary: &InstrumentSummary,
    agreement: Option<AgreementId>,
) -> String {
    fingerprint(&format!(
        "place|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        req.amount,
        req.payment_type,
        req.authorisation_type,
        req.capture_method,
        summary,
        req.store_token,
        req.return_url,
        agreement,
        req.payment.encrypted_card_no.is_some()
    ))
}

fn instrument_summary(p: &PaymentRequest) -> InstrumentSummary {
    let card = p.card_no.as_ref().map(|n| CardSummary {
        brand: None,
        bin: n.bin().map(str::to_owned),
        last4: n.last4().map(str::to_owned),
        exp_month: p.exp_month.as_deref().and_then(|m| m.parse().ok()),
        exp_year: p.exp_year.as_deref().and_then(|y| y.parse().ok()),
    });
    InstrumentSummary {
        method: p.payment_method.as_str().to_owned(),
        card,
        token: p.token.clone(),
    }
}

fn payment_type(k: PaymentKind) -> PaymentType {
    match k {
        PaymentKind::Purchase => PaymentType::Purchase,
        PaymentKind::Recurring => PaymentType::Recurring,
    }
}

fn capture_method(c: CaptureMode) -> CaptureMethod {
    match c {
        CaptureMode::Automatic => CaptureMethod::Automatic,
        CaptureMode::Manual => CaptureMethod::Manual,
    }
}

fn payment_outcome(o: GatewayOutcome<PaymentResponse>) -> CallOutcome<order::PaymentObservation> {
    match o {
        GatewayOutcome::Success(r) => CallOutcome::Accepted(gateway::payment_observation(
            &r,
            ObservationSource::Response,
        )),
        other => non_success(other),
    }
}

fn non_success<T, U>(o: GatewayOutcome<T>) -> CallOutcome<U> {
    match o {
        GatewayOutcome::Success(_) => CallOutcome::Unknown {
            reason: "unexpected success mapping".into(),
        },
        GatewayOutcome::Declined { code, description } => {
            CallOutcome::Declined { code, description }
        }
        GatewayOutcome::Rejected {
            class,
            code,
            description,
        } => CallOutcome::Declined {
            code,
            description: format!("{}: {description}", class.as_str()),
        },
        GatewayOutcome::Retryable { reason } => CallOutcome::Unknown {
            reason: format!("not confirmed after retries: {reason}"),
        },
        GatewayOutcome::Unknown { reason } => CallOutcome::Unknown { reason },
    }
}

/// What [`Engine::begin_order_call`] leaves to do.
enum Begun {
    /// Answer with this view; PayKKa is not called.
    Done(OrderView),
    /// The request events are appended: call PayKKa, then record.
    Call {
        state: OrderState,
        events: Vec<OrderEvent>,
        meta: EventMetadata,
    },
}

fn view_of(state: &OrderState, order_id: OrderId) -> Result<OrderView, EngineError> {
    OrderView::from_state(state).ok_or(EngineError::NotFound {
        what: "order",
        id: order_id.to_string(),
    })
}

/// PayKKa's order id of an order (empty before PayKKa assigned one).
fn gateway_order_id(state: &OrderState) -> String {
    state
        .gateway_order_id
        .as_ref()
        .map(|g| g.as_str().to_owned())
        .unwrap_or_default()
}

/// Resolves which order a PayKKa `trans_id` belongs to.
pub fn order_of_trans_id(trans_id: &str) -> Option<OrderId> {
    OrderId::from_trans_id(&payorch_schemas::events::TransId::new(trans_id))
}

/// The engine: see the module docs.
pub struct Engine {
    store: Arc<dyn EventStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    gateway: Arc<dyn PaymentGateway>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
}

/// The name the brief also uses.
pub type Orchestrator = Engine;

impl Engine {
    pub fn new(
        store: Arc<dyn EventStore>,
        idempotency: Arc<dyn IdempotencyStore>,
        gateway: Arc<dyn PaymentGateway>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Self {
        Engine {
            store,
            idempotency,
            gateway,
            clock,
            config,
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn gateway(&self) -> &Arc<dyn PaymentGateway> {
        &self.gateway
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// load -> decide -> append with conflict retries. Returns the state
    /// after the append and the events appended (empty: nothing to do).
    async fn execute<A: Aggregate, E>(
        &self,
        stream: &StreamId,
        meta: &EventMetadata,
        idempotency: Option<IdempotencyRecord>,
        decide: impl Fn(&A::State) -> Result<Vec<A::Event>, E>,
    ) -> Result<(A::State, Vec<A::Event>), EngineError>
    where
        EngineError: From<E>,
    {
        let attempts = self.config.max_conflict_retries.max(1);
        for _ in 0..attempts {
            let (state, version) = load::<A>(self.store.as_ref(), stream).await?;
            let events = decide(&state)?;
            if events.is_empty() {
                if let Some(rec) = idempotency.clone() {
                    // Nothing to append: keep the key's promise on its own.
                    match self.idempotency.put_idempotency(rec).await {
                        Ok(()) | Err(StoreError::IdempotencyKeyTaken { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                return Ok((state, events));
            }
            let now = self.clock.now();
            let new_events = events
                .iter()
                .map(|e| codec::encode(e, Uuid::now_v7(), meta.clone(), now))
                .collect::<Result<Vec<_>, _>>()?;
            let request = AppendRequest {
                stream_id: stream.clone(),
                stream_type: A::Event::STREAM_TYPE.to_owned(),
                expected: ExpectedVersion::Exact(version),
                events: new_events,
                idempotency: idempotency.clone(),
            };
            match self.store.append(request).await {
                Ok(_) => {
                    let state = events.iter().fold(state, A::evolve);
                    return Ok((state, events));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contention {
            stream: stream.to_string(),
            attempts,
        })
    }

    /// Checks an idempotency key: `Ok(Some(stream))` when the same request
    /// was already handled, `Err` when the key was used for another one.
    async fn check_idempotency(
        &self,
        ctx: &CommandContext,
        fingerprint: &str,
    ) -> Result<Option<StreamId>, EngineError> {
        let Some(key) = &ctx.idempotency_key else {
            return Ok(None);
        };
        match self
            .idempotency
            .get_idempotency(ctx.merchant_id.as_str(), key)
            .await?
        {
            Some(rec) if rec.fingerprint == fingerprint => Ok(rec.stream_id),
            Some(_) => Err(EngineError::IdempotencyConflict { key: key.clone() }),
            None => Ok(None),
        }
    }

    fn idempotency_record(
        &self,
        ctx: &CommandContext,
        fingerprint: String,
        stream: &StreamId,
        response: &impl Serialize,
    ) -> Result<Option<IdempotencyRecord>, EngineError> {
        let Some(key) = &ctx.idempotency_key else {
            return Ok(None);
        };
        let text = serde_json::to_string(response).map_err(|e| CodecError::Encode {
            event_type: "idempotency_response",
            message: e.to_string(),
        })?;
        let response = RawValue::from_string(text).map_err(|e| CodecError::Encode {
            event_type: "idempotency_response",
            message: e.to_string(),
        })?;
        Ok(Some(IdempotencyRecord {
            scope: ctx.merchant_id.as_str().to_owned(),
            key: key.clone(),
            fingerprint,
            response,
            stream_id: Some(stream.clone()),
            created_at: self.clock.now(),
        }))
    }

    /// Maps an idempotency race on append to the stored result.
    async fn replay_after_race(
        &self,
        ctx: &CommandContext,
        fingerprint: &str,
    ) -> Result<OrderView, EngineError> {
        match self.check_idempotency(ctx, fingerprint).await? {
            Some(stream) => self.view_of_stream(ctx, &stream).await,
            None => Err(EngineError::Contention {
                stream: "idempotency".into(),
                attempts: 1,
            }),
        }
    }

    async fn view_of_stream(
        &self,
        ctx: &CommandContext,
        stream: &StreamId,
    ) -> Result<OrderView, EngineError> {
        let (state, _) = load::<OrderAggregate>(self.store.as_ref(), stream).await?;
        OrderView::from_state(&state)
            .filter(|v| v.merchant_id == ctx.merchant_id)
            .ok_or_else(|| EngineError::NotFound {
                what: "order",
                id: stream.to_string(),
            })
    }

    async fn load_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<OrderState, EngineError> {
        let (state, _) =
            load::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        if state.merchant_id() != Some(&ctx.merchant_id) {
            return Err(EngineError::NotFound {
                what: "order",
                id: order_id.to_string(),
            });
        }
        Ok(state)
    }

    /// Runs one order command (with conflict retries).
    async fn order_command(
        &self,
        order_id: OrderId,
        meta: &EventMetadata,
        idempotency: Option<IdempotencyRecord>,
        cmd: impl Fn(&OrderState) -> OrderCommand,
    ) -> Result<(OrderState, Vec<OrderEvent>), EngineError> {
        let (state, events) = self
            .execute::<OrderAggregate, DomainError>(
                &order_stream(order_id),
                meta,
                idempotency,
                |s| order::decide(s, cmd(s)),
            )
            .await?;
        self.after_order_change(&state, &events, meta).await?;
        Ok((state, events))
    }

    /// Follow-ups owned by other aggregates: a first recurring payment that
    /// stored a token creates its agreement.
    async fn after_order_change(
        &self,
        state: &OrderState,
        events: &[OrderEvent],
        meta: &EventMetadata,
    ) -> Result<(), EngineError> {
        let Some(OrderEvent::TokenStored(t)) = events
            .iter()
            .find(|e| matches!(e, OrderEvent::TokenStored(_)))
        else {
            return Ok(());
        };
        let Some(p) = state.placed.as_deref() else {
            return Ok(());
        };
        if p.payment_type != PaymentKind::Recurring || p.agreement_id.is_some() {
            return Ok(());
        }
        // The agreement id is the first order's uuid: creating it twice is
        // the same command.
        let agreement_id = AgreementId(p.order_id.0);
        let cmd = AgreementCommand::Create {
            agreement_id,
            merchant_id: p.merchant_id.clone(),
            first_order_id: p.order_id,
            token: t.token.clone(),
            shopper_reference: t.shopper_reference.clone(),
            recurring_agreement_ref: t.recurring_agreement_ref.clone(),
            card: state.card().cloned(),
        };
        self.execute::<AgreementAggregate, AgreementError>(
            &agreement_stream(agreement_id),
            meta,
            None,
            |s| agreement::decide(s, cmd.clone()),
        )
        .await?;
        Ok(())
    }

    /// Calls PayKKa, resending `Retryable` answers with backoff.
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        span: tracing::Span,
        f: F,
    ) -> GatewayOutcome<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = GatewayOutcome<T>>,
    {
        async {
            let mut backoff = self.config.retry_backoff;
            let attempts = self.config.retryable_attempts.max(1);
            let mut attempt = 1;
            loop {
                let out = f().await;
                tracing::info!(operation, outcome = out.kind(), attempt, "paykka call");
                match out {
                    GatewayOutcome::Retryable { .. } if attempt < attempts => {
                        tokio::time::sleep(backoff).await;
                        backoff = backoff.saturating_mul(2);
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        }
        .instrument(span)
        .await
    }

    fn call_span(
        &self,
        operation: &'static str,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> tracing::Span {
        tracing::info_span!(
            "paykka_call",
            operation,
            order_id = %order_id,
            merchant_id = %ctx.merchant_id,
            trans_id = %order_id.trans_id(),
            correlation_id = ?ctx.correlation_id,
        )
    }

    fn command_span(
        &self,
        command: &'static str,
        ctx: &CommandContext,
        order_id: Option<OrderId>,
    ) -> tracing::Span {
        tracing::info_span!(
            "command",
            command,
            order_id = ?order_id.map(|o| o.to_string()),
            merchant_id = %ctx.merchant_id,
            trans_id = ?order_id.map(|o| o.trans_id().to_string()),
            correlation_id = ?ctx.correlation_id,
        )
    }

    // ------------------------------------------------------------ payments

    /// Places an order and asks PayKKa to authorise it (initiate). Returns
    /// the order after PayKKa's answer (Authorised, Captured,
    /// ChallengeRequired with `authentication_url`, Declined, or
    /// AuthorisationUnknown for the reconciler).
    pub async fn place_payment(
        &self,
        ctx: &CommandContext,
        req: PlacePaymentRequest,
    ) -> Result<OrderView, EngineError> {
        let order_id = OrderId(Uuid::now_v7());
        self.place_inner(ctx, order_id, req, None)
            .instrument(self.command_span("place_payment", ctx, Some(order_id)))
            .await
    }

    async fn place_inner(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        req: PlacePaymentRequest,
        agreement: Option<(AgreementId, Option<String>)>,
    ) -> Result<OrderView, EngineError> {
        let summary = instrument_summary(&req.payment);
        let fp = place_fingerprint(&req, &summary, agreement.as_ref().map(|a| a.0));
        if let Some(stream) = self.check_idempotency(ctx, &fp).await? {
            return self.view_of_stream(ctx, &stream).await;
        }
        let stream = order_stream(order_id);
        let idem = self.idempotency_record(
            ctx,
            fp.clone(),
            &stream,
            &serde_json::json!({ "order_id": order_id }),
        )?;
        let place = PlacePayment {
            order_id,
            merchant_id: ctx.merchant_id.clone(),
            amount: req.amount,
            payment_type: req.payment_type,
            authorisation_type: req.authorisation_type,
            capture_method: req.capture_method,
            instrument: summary,
            store_token: req.store_token.clone(),
            agreement_id: agreement.as_ref().map(|a| a.0),
            checkout: None,
        };
        let meta = ctx.metadata();
        match self
            .order_command(order_id, &meta, idem, |_| {
                OrderCommand::Place(Box::new(place.clone()))
            })
            .await
        {
            Ok(_) => {}
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => {
                return self.replay_after_race(ctx, &fp).await;
            }
            Err(e) => return Err(e),
        }

        // The PayKKa call: card data goes from `req` into the request here.
        let mut initiate = InitiateRequest::new(
            ctx.merchant_id.as_str(),
            self.now_ms(),
            payment_type(req.payment_type),
            order_id.trans_id().as_str(),
            req.amount,
            req.payment,
        );
        initiate.capture_method = Some(capture_method(req.capture_method));
        initiate.authorisation_type = Some(match req.authorisation_type {
            AuthorisationKind::FinalAuth => AuthorisationType::FinalAuth,
            AuthorisationKind::PreAuth => AuthorisationType::PreAuth,
        });
        initiate.notify_url.clone_from(&self.config.notify_url);
        initiate.browser = req.browser;
        if let Some(t) = &req.store_token {
            initiate.payment.store_payment_method = Some(true);
            initiate.payment.token_usage = Some(match t.purpose {
                TokenPurpose::CardOnFile => TokenUsage::CardOnFile,
                TokenPurpose::Subscription => TokenUsage::Subscription,
            });
            initiate.payment.shopper_reference = Some(t.shopper_reference.clone());
        }
        match (&agreement, req.payment_type) {
            (Some((_, reference)), _) => {
                initiate.mit = Some(true);
                initiate.recurring_agreement_id.clone_from(reference);
            }
            (None, PaymentKind::Recurring) => initiate.mit = Some(false),
            (None, PaymentKind::Purchase) => {}
        }
        if agreement.is_none() {
            initiate.return_url = req
                .return_url
                .or_else(|| self.config.default_return_url.clone());
        }
        let gw = self.gateway.clone();
        let outcome = self
            .call(
                "initiate",
                self.call_span("initiate", ctx, order_id),
                || gw.initiate(&initiate),
            )
            .await;
        drop(initiate); // card data leaves memory here
        let outcome = payment_outcome(outcome);
        let (state, _) = self
            .order_command(order_id, &meta, None, |_| {
                OrderCommand::RecordInitiateOutcome(outcome.clone())
            })
            .await?;
        OrderView::from_state(&state).ok_or(EngineError::NotFound {
            what: "order",
            id: order_id.to_string(),
        })
    }

    /// The first half of a merchant order command that calls PayKKa:
    /// idempotency check -> load -> decide + append the `*Requested` event
    /// (with the key's record). `Done` when there is nothing to call
    /// (repeated request, or an idempotency race another request won).
    async fn begin_order_call(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        fp: String,
        receipt: serde_json::Value,
        cmd: OrderCommand,
    ) -> Result<Begun, EngineError> {
        if let Some(stream) = self.check_idempotency(ctx, &fp).await? {
            return Ok(Begun::Done(self.view_of_stream(ctx, &stream).await?));
        }
        self.load_order(ctx, order_id).await?;
        let stream = order_stream(order_id);
        let idem = self.idempotency_record(ctx, fp.clone(), &stream, &receipt)?;
        let meta = ctx.metadata();
        match self
            .order_command(order_id, &meta, idem, |_| cmd.clone())
            .await
        {
            Ok((state, events)) => Ok(Begun::Call {
                state,
                events,
                meta,
            }),
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => {
                Ok(Begun::Done(self.replay_after_race(ctx, &fp).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// The second half: decide + append PayKKa's outcome, return the view.
    async fn finish_order_call(
        &self,
        order_id: OrderId,
        meta: &EventMetadata,
        cmd: OrderCommand,
    ) -> Result<OrderView, EngineError> {
        let (state, _) = self
            .order_command(order_id, meta, None, |_| cmd.clone())
            .await?;
        view_of(&state, order_id)
    }

    /// Captures (part of) an authorised order with manual capture.
    pub async fn capture(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        amount: Option<Money>,
        final_capture: bool,
    ) -> Result<OrderView, EngineError> {
        async {
            let fp = fingerprint(&format!("capture|{order_id}|{amount:?}|{final_capture}"));
            let capture_id = CaptureId(Uuid::now_v7());
            let cmd = OrderCommand::Capture(CapturePayment {
                capture_id,
                amount,
                final_capture,
            });
            let receipt = serde_json::json!({ "capture_id": capture_id });
            let (state, meta) = match self
                .begin_order_call(ctx, order_id, fp, receipt, cmd)
                .await?
            {
                Begun::Done(view) => return Ok(view),
                Begun::Call { state, meta, .. } => (state, meta),
            };
            let Some(entry) = state.captures.iter().find(|c| c.capture_id == capture_id) else {
                return view_of(&state, order_id);
            };
            let req = CaptureRequest {
                merchant_id: ctx.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                order_id: gateway_order_id(&state),
                amount: Some(entry.amount.minor),
                currency: Some(entry.amount.currency),
                final_capture: None,
            };
            let gw = self.gateway.clone();
            let outcome = payment_outcome(
                self.call("capture", self.call_span("capture", ctx, order_id), || {
                    gw.capture(&req)
                })
                .await,
            );
            let cmd = OrderCommand::RecordCaptureOutcome {
                capture_id,
                outcome,
            };
            self.finish_order_call(order_id, &meta, cmd).await
        }
        .instrument(self.command_span("capture", ctx, Some(order_id)))
        .await
    }

    /// Voids (releases) an authorisation with nothing captured.
    pub async fn void(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        reason: Option<String>,
    ) -> Result<OrderView, EngineError> {
        async {
            let fp = fingerprint(&format!("void|{order_id}|{reason:?}"));
            let cmd = OrderCommand::Void {
                reason: reason.clone(),
            };
            let receipt = serde_json::json!({ "void": order_id });
            let (state, meta) = match self
                .begin_order_call(ctx, order_id, fp, receipt, cmd)
                .await?
            {
                Begun::Done(view) => return Ok(view),
                Begun::Call { state, events, .. } if events.is_empty() => {
                    return view_of(&state, order_id);
                }
                Begun::Call { state, meta, .. } => (state, meta),
            };
            let req = VoidRequest {
                merchant_id: ctx.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                order_id: gateway_order_id(&state),
                reason: reason.as_deref().map(Reason::parse),
            };
            let gw = self.gateway.clone();
            let outcome = payment_outcome(
                self.call("void", self.call_span("void", ctx, order_id), || {
                    gw.void(&req)
                })
                .await,
            );
            self.finish_order_call(order_id, &meta, OrderCommand::RecordVoidOutcome(outcome))
                .await
        }
        .instrument(self.command_span("void", ctx, Some(order_id)))
        .await
    }

    /// Refunds part or all of the captured amount; each call is a new
    /// refund with its own refund id and `refund_trans_id`.
    pub async fn refund(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
        amount: Money,
        reason: Option<String>,
    ) -> Result<OrderView, EngineError> {
        async {
            let fp = fingerprint(&format!("refund|{order_id}|{amount:?}|{reason:?}"));
            let refund_id = RefundId(Uuid::now_v7());
            let cmd = OrderCommand::Refund(RefundPayment {
                refund_id,
                amount,
                reason: reason.clone(),
            });
            let receipt = serde_json::json!({ "refund_id": refund_id });
            let (state, meta) = match self
                .begin_order_call(ctx, order_id, fp, receipt, cmd)
                .await?
            {
                Begun::Done(view) => return Ok(view),
                Begun::Call { state, meta, .. } => (state, meta),
            };
            let Some(entry) = state.refunds.iter().find(|r| r.refund_id == refund_id) else {
                return view_of(&state, order_id);
            };
            let req = RefundRequest {
                merchant_id: ctx.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                refund_trans_id: entry.refund_trans_id.as_str().to_owned(),
                ori_order_id: gateway_order_id(&state),
                refund_amount: entry.amount.minor,
                currency: entry.amount.currency,
                reason: reason.as_deref().map(Reason::parse),
                notify_url: self.config.refund_notify_url.clone(),
            };
            let gw = self.gateway.clone();
            let outcome =
                match self
                    .call("refund", self.call_span("refund", ctx, order_id), || {
                        gw.refund(&req)
                    })
                    .await
                {
                    GatewayOutcome::Success(r) => CallOutcome::Accepted(
                        gateway::refund_observation(&r, refund_id, ObservationSource::Response),
                    ),
                    other => non_success(other),
                };
            let cmd = OrderCommand::RecordRefundOutcome {
                refund_id,
                outcome: Box::new(outcome),
            };
            self.finish_order_call(order_id, &meta, cmd).await
        }
        .instrument(self.command_span("refund", ctx, Some(order_id)))
        .await
    }

    /// The shopper is back from the 3DS page; the result follows by
    /// notification or query.
    pub async fn complete_challenge(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        self.load_order(ctx, order_id).await?;
        let (state, _) = self
            .order_command(order_id, &ctx.metadata(), None, |_| {
                OrderCommand::CompleteChallenge
            })
            .await?;
        OrderView::from_state(&state).ok_or(EngineError::NotFound {
            what: "order",
            id: order_id.to_string(),
        })
    }

    /// The current view of an order of this merchant.
    pub async fn get_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        let state = self.load_order(ctx, order_id).await?;
        OrderView::from_state(&state).ok_or(EngineError::NotFound {
            what: "order",
            id: order_id.to_string(),
        })
    }

    /// The stored events of an order of this merchant (upcast, typed).
    pub async fn list_order_events(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<Vec<payorch_schemas::events::EventEnvelope<OrderEvent>>, EngineError> {
        self.load_order(ctx, order_id).await?;
        let recorded = read_whole_stream(self.store.as_ref(), &order_stream(order_id)).await?;
        recorded
            .iter()
            .map(|e| codec::envelope::<OrderEvent>(e).map_err(EngineError::from))
            .collect()
    }

    // ------------------------------------------------------------ observations

    /// Applies a webhook or query result to an order. Duplicates and late
    /// arrivals emit nothing; the current view is returned.
    pub async fn apply_observation(
        &self,
        order_id: OrderId,
        observation: Observation,
        correlation_id: Option<Uuid>,
    ) -> Result<OrderView, EngineError> {
        let meta = EventMetadata {
            correlation_id,
            causation_id: None,
            merchant_id: None,
            actor: Some("paykka".into()),
        };
        let span = tracing::info_span!("command", command = "apply_observation", order_id = %order_id, trans_id = %order_id.trans_id(), correlation_id = ?correlation_id);
        async {
            let (state, _) = self
                .order_command(order_id, &meta, None, |_| {
                    OrderCommand::ApplyGatewayObservation(observation.clone())
                })
                .await?;
            OrderView::from_state(&state).ok_or(EngineError::NotFound {
                what: "order",
                id: order_id.to_string(),
            })
        }
        .instrument(span)
        .await
    }

    /// Applies a PayKKa payment notification. `Ok(None)`: not one of ours
    /// (answer 200 anyway, flows.md §9).
    pub async fn apply_payment_notification(
        &self,
        n: &PaymentNotification,
        correlation_id: Option<Uuid>,
    ) -> Result<Option<OrderView>, EngineError> {
        let Some(order_id) = n.trans_id.as_deref().and_then(order_of_trans_id) else {
            return Ok(None);
        };
        let version = self.store.stream_version(&order_stream(order_id)).await?;
        if version == Version::NONE {
            // Paid on a checkout session: the order starts now.
            if !self
                .start_order_from_checkout(
                    order_id,
                    n.session_id.as_deref(),
                    n.payment.as_ref(),
                    correlation_id,
                )
                .await?
            {
                return Ok(None);
            }
        }
        let obs = gateway::notification_observation(n);
        self.apply_observation(order_id, Observation::Payment(obs), correlation_id)
            .await
            .map(Some)
    }

    /// Applies a PayKKa refund notification (`trans_id` = our
    /// `refund_trans_id`). `Ok(None)`: not one of ours.
    pub async fn apply_refund_notification(
        &self,
        n: &RefundNotification,
        correlation_id: Option<Uuid>,
    ) -> Result<Option<OrderView>, EngineError> {
        let Some((order_id, seq)) = n.trans_id.as_deref().and_then(|t| {
            OrderId::from_refund_trans_id(&payorch_schemas::events::RefundTransId::new(t))
        }) else {
            return Ok(None);
        };
        let (state, _) =
            load::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        let Some(refund) = usize::try_from(seq)
            .ok()
            .and_then(|i| state.refunds.get(i.wrapping_sub(1)))
        else {
            return Ok(None);
        };
        let obs = gateway::refund_notification_observation(n, refund.refund_id);
        self.apply_observation(order_id, Observation::Refund(obs), correlation_id)
            .await
            .map(Some)
    }

    /// Queries PayKKa about an order now and applies the answer (the
    /// browser-return handler and the reconciler use this). `settled` marks
    /// the answer as past the grace period (see `crate::reconciler`).
    pub async fn refresh_order(
        &self,
        order_id: OrderId,
        settled: bool,
    ) -> Result<OrderView, EngineError> {
        let (state, _) =
            load::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        let Some(p) = state.placed.as_deref() else {
            return Err(EngineError::NotFound {
                what: "order",
                id: order_id.to_string(),
            });
        };
        let ctx = CommandContext::new(p.merchant_id.as_str());
        let req = match &state.gateway_order_id {
            Some(g) => QueryRequest {
                merchant_id: p.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                trans_id: None,
                order_id: Some(g.as_str().to_owned()),
                session_id: None,
            },
            None => QueryRequest {
                merchant_id: p.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                trans_id: Some(p.trans_id.as_str().to_owned()),
                order_id: None,
                session_id: None,
            },
        };
        let gw = self.gateway.clone();
        let mut view = None;
        let answer = self
            .call("query", self.call_span("query", &ctx, order_id), || {
                gw.query(&req)
            })
            .await;
        let obs = match answer {
            GatewayOutcome::Success(r) => {
                let mut o = gateway::payment_observation(&r, ObservationSource::Query);
                o.settled = settled;
                Some(Observation::Payment(o))
            }
            GatewayOutcome::Rejected {
                class: RejectionClass::NotFound,
                ..
            } => Some(Observation::PaymentNotFound { settled }),
            _ => None, // no definitive answer: change nothing
        };
        if let Some(obs) = obs {
            view = Some(self.apply_observation(order_id, obs, None).await?);
        }
        // Open refunds: Refund Query each.
        let (state, _) =
            load::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        for r in state.refunds.iter().filter(|r| r.progress.is_open()) {
            let req = RefundQueryRequest {
                merchant_id: p.merchant_id.as_str().to_owned(),
                timestamp: self.now_ms(),
                refund_trans_id: Some(r.refund_trans_id.as_str().to_owned()),
                refund_order_id: None,
            };
            let answer = self
                .call(
                    "refund_query",
                    self.call_span("refund_query", &ctx, order_id),
                    || gw.refund_query(&req),
                )
                .await;
            let obs = match answer {
                GatewayOutcome::Success(resp) => Some(Observation::Refund(
                    gateway::refund_observation(&resp, r.refund_id, ObservationSource::Query),
                )),
                GatewayOutcome::Rejected {
                    class: RejectionClass::NotFound,
                    ..
                } => Some(Observation::RefundNotFound {
                    refund_id: r.refund_id,
                    settled,
                }),
                _ => None,
            };
            if let Some(obs) = obs {
                view = Some(self.apply_observation(order_id, obs, None).await?);
            }
        }
        match view {
            Some(v) => Ok(v),
            None => OrderView::from_state(&state).ok_or(EngineError::NotFound {
                what: "order",
                id: order_id.to_string(),
            }),
        }
    }

    // ------------------------------------------------------------ checkout

    /// Opens a PayKKa checkout session. The order appears when the shopper
    /// pays (its notification carries the session's trans_id).
    pub async fn create_checkout_session(
        &self,
        ctx: &CommandContext,
        req: CheckoutSessionCreate,
    ) -> Result<CheckoutView, EngineError> {
        let checkout_id = CheckoutId(Uuid::now_v7());
        let fp = fingerprint(&format!(
            "checkout|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            req.amount,
            req.payment_type,
            req.capture_method,
            req.session_mode,
            req.return_url,
            req.expires_at
        ));
        if let Some(stream) = self.check_idempotency(ctx, &fp).await? {
            return self.checkout_view(ctx, &stream).await;
        }
        let stream = checkout_stream(checkout_id);
        let idem = self.idempotency_record(
            ctx,
            fp.clone(),
            &stream,
            &serde_json::json!({ "checkout_id": checkout_id }),
        )?;
        let trans_id = OrderId(checkout_id.0).trans_id();
        let requested = payorch_schemas::events::checkout::CheckoutSessionRequested {
            checkout_id,
            merchant_id: ctx.merchant_id.clone(),
            trans_id: trans_id.clone(),
            amount: req.amount,
            payment_type: req.payment_type,
            capture_method: req.capture_method,
            session_mode: req.session_mode.as_str().to_owned(),
            expires_at: req.expires_at,
        };
        let meta = ctx.metadata();
        match self
            .execute::<CheckoutAggregate, CheckoutError>(&stream, &meta, idem, |s| {
                checkout::decide(s, CheckoutCommand::Create(requested.clone()))
            })
            .await
        {
            Ok(_) => {}
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => {
                if let Some(stream) = self.check_idempotency(ctx, &fp).await? {
                    return self.checkout_view(ctx, &stream).await;
                }
            }
            Err(e) => return Err(e),
        }
        let mut create = CheckoutSessionRequest::new(
            ctx.merchant_id.as_str(),
            self.now_ms(),
            payment_type(req.payment_type),
            trans_id.as_str(),
            req.amount,
            req.session_mode,
        );
        create.capture_method = Some(capture_method(req.capture_method));
        create.notify_url.clone_from(&self.config.notify_url);
        create.return_url = req
            .return_url
            .or_else(|| self.config.default_return_url.clone());
        create.expire_time = Some(payorch_schemas::paykka::PaykkaDateTime::from_datetime(
            req.expires_at,
        ));
        let gw = self.gateway.clone();
        let outcome = match self
            .call(
                "checkout_session_create",
                self.call_span("checkout_session_create", ctx, OrderId(checkout_id.0)),
                || gw.checkout_session_create(&create),
            )
            .await
        {
            GatewayOutcome::Success(r) => match r.session_id {
                Some(id) => CallOutcome::Accepted(
                    payorch_schemas::events::checkout::CheckoutSessionCreated {
                        session_id: SessionId(id),
                        session_url: r.session_url,
                    },
                ),
                None => CallOutcome::Unknown {
                    reason: "session create answer without session_id".into(),
                },
            },
            other => non_success(other),
        };
        self.execute::<CheckoutAggregate, CheckoutError>(&stream, &meta, None, |s| {
            checkout::decide(s, CheckoutCommand::RecordCreateOutcome(outcome.clone()))
        })
        .await?;
        self.checkout_view(ctx, &stream).await
    }

    async fn checkout_view(
        &self,
        ctx: &CommandContext,
        stream: &StreamId,
    ) -> Result<CheckoutView, EngineError> {
        let (s, _) = load::<CheckoutAggregate>(self.store.as_ref(), stream).await?;
        let not_found = || EngineError::NotFound {
            what: "checkout session",
            id: stream.to_string(),
        };
        let r = s.requested.as_ref().ok_or_else(not_found)?;
        if r.merchant_id != ctx.merchant_id {
            return Err(not_found());
        }
        Ok(CheckoutView {
            checkout_id: r.checkout_id,
            merchant_id: r.merchant_id.clone(),
            status: s.phase,
            amount: r.amount,
            session_id: s.created.as_ref().map(|c| c.session_id.as_str().to_owned()),
            session_url: s.created.as_ref().and_then(|c| c.session_url.clone()),
            order_id: s.order_id,
            version: s.version,
        })
    }

    /// The current view of a checkout session of this merchant.
    pub async fn get_checkout_session(
        &self,
        ctx: &CommandContext,
        checkout_id: CheckoutId,
    ) -> Result<CheckoutView, EngineError> {
        self.checkout_view(ctx, &checkout_stream(checkout_id)).await
    }

    /// Cancels (or expires, `expired = true`) an open checkout session.
    pub async fn close_checkout_session(
        &self,
        ctx: &CommandContext,
        checkout_id: CheckoutId,
        expired: bool,
    ) -> Result<CheckoutView, EngineError> {
        let stream = checkout_stream(checkout_id);
        self.checkout_view(ctx, &stream).await?;
        let cmd = if expired {
            CheckoutCommand::Expire
        } else {
            CheckoutCommand::Cancel
        };
        self.execute::<CheckoutAggregate, CheckoutError>(&stream, &ctx.metadata(), None, |s| {
            checkout::decide(s, cmd.clone())
        })
        .await?;
        self.checkout_view(ctx, &stream).await
    }

    /// A payment PayKKa reports for a checkout session (its notification,
    /// or a Checkout Session Query that shows it): place the order (no
    /// initiate; same uuid as the session) and complete the session. Both
    /// sources carry the `session_id` and the `payment` object (for the
    /// payment method). Idempotent: placing the same order again and
    /// completing a completed session append nothing. `Ok(false)`: no
    /// such session.
    async fn start_order_from_checkout(
        &self,
        order_id: OrderId,
        session_id: Option<&str>,
        payment: Option<&PaymentInfo>,
        correlation_id: Option<Uuid>,
    ) -> Result<bool, EngineError> {
        let stream = checkout_stream(CheckoutId(order_id.0));
        let (s, _) = load::<CheckoutAggregate>(self.store.as_ref(), &stream).await?;
        let Some(r) = s.requested.clone() else {
            return Ok(false);
        };
        let meta = EventMetadata {
            correlation_id,
            causation_id: None,
            merchant_id: Some(r.merchant_id.as_str().to_owned()),
            actor: Some("paykka".into()),
        };
        let session_id = session_id
            .map(SessionId::new)
            .or_else(|| s.created.as_ref().map(|c| c.session_id.clone()))
            .unwrap_or_else(|| SessionId::new(""));
        let place = PlacePayment {
            order_id,
            merchant_id: r.merchant_id.clone(),
            amount: r.amount,
            payment_type: r.payment_type,
            authorisation_type: AuthorisationKind::FinalAuth,
            capture_method: r.capture_method,
            instrument: InstrumentSummary {
                method: payment
                    .and_then(|p| p.payment_method.as_ref())
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_else(|| "CHECKOUT".into()),
                card: None,
                token: None,
            },
            store_token: None,
            agreement_id: None,
            checkout: Some((r.checkout_id, session_id)),
        };
        self.order_command(order_id, &meta, None, |_| {
            OrderCommand::Place(Box::new(place.clone()))
        })
        .await?;
        self.execute::<CheckoutAggregate, CheckoutError>(&stream, &meta, None, |s| {
            checkout::decide(s, CheckoutCommand::Complete { order_id })
        })
        .await?;
        Ok(true)
    }

    // ------------------------------------------------------------ recurring

    /// The current view of an agreement of this merchant.
    pub async fn get_agreement(
        &self,
        ctx: &CommandContext,
        agreement_id: AgreementId,
    ) -> Result<AgreementView, EngineError> {
        let (s, _) =
            load::<AgreementAggregate>(self.store.as_ref(), &agreement_stream(agreement_id))
                .await?;
        let not_found = || EngineError::NotFound {
            what: "agreement",
            id: agreement_id.to_string(),
        };
        let c = s.created.as_ref().ok_or_else(not_found)?;
        if c.merchant_id != ctx.merchant_id {
            return Err(not_found());
        }
        Ok(AgreementView {
            agreement_id,
            merchant_id: c.merchant_id.clone(),
            status: s.phase,
            first_order_id: c.first_order_id,
            shopper_reference: c.shopper_reference.clone(),
            charges: s.charges.iter().map(|(o, _)| *o).collect(),
            version: s.version,
        })
    }

    /// A merchant-initiated charge on an active agreement: a new order
    /// paying with the agreement's token (`mit: true`).
    pub async fn charge_agreement(
        &self,
        ctx: &CommandContext,
        agreement_id: AgreementId,
        amount: Money,
    ) -> Result<OrderView, EngineError> {
        let stream = agreement_stream(agreement_id);
        let (s, _) = load::<AgreementAggregate>(self.store.as_ref(), &stream).await?;
        let Some(c) = s
            .created
            .clone()
            .filter(|c| c.merchant_id == ctx.merchant_id)
        else {
            return Err(EngineError::NotFound {
                what: "agreement",
                id: agreement_id.to_string(),
            });
        };
        if s.phase != AgreementPhase::Active {
            return Err(AgreementError::IllegalCommand {
                state: s.phase,
                command: "charge",
            }
            .into());
        }
        let order_id = OrderId(Uuid::now_v7());
        let req = PlacePaymentRequest {
            amount,
            payment_type: PaymentKind::Recurring,
            authorisation_type: AuthorisationKind::FinalAuth,
            capture_method: CaptureMode::Automatic,
            payment: PaymentRequest::token(
                c.token.clone(),
                TokenUsage::Subscription,
                c.shopper_reference.clone(),
            ),
            store_token: None,
            return_url: None,
            browser: None,
        };
        // A repeated request (same idempotency key and body) returns the
        // order it created, without recording a second charge.
        let fp = place_fingerprint(&req, &instrument_summary(&req.payment), Some(agreement_id));
        if let Some(stream) = self.check_idempotency(ctx, &fp).await? {
            return self.view_of_stream(ctx, &stream).await;
        }
        // Record the charge on the agreement first: a cancelled agreement
        // refuses it (conflict-checked against a concurrent cancel).
        self.execute::<AgreementAggregate, AgreementError>(&stream, &ctx.metadata(), None, |s| {
            agreement::decide(s, AgreementCommand::Charge { order_id, amount })
        })
        .await?;
        let reference = c
            .recurring_agreement_ref
            .as_ref()
            .map(|r| r.as_str().to_owned());
        self.place_inner(ctx, order_id, req, Some((agreement_id, reference)))
            .instrument(self.command_span("charge_agreement", ctx, Some(order_id)))
            .await
    }

    /// Cancels an agreement at PayKKa: no further charges.
    pub async fn cancel_agreement(
        &self,
        ctx: &CommandContext,
        agreement_id: AgreementId,
        reason: Option<String>,
    ) -> Result<AgreementView, EngineError> {
        let stream = agreement_stream(agreement_id);
        let view = self.get_agreement(ctx, agreement_id).await?;
        let meta = ctx.metadata();
        let (s, events) = self
            .execute::<AgreementAggregate, AgreementError>(&stream, &meta, None, |s| {
                agreement::decide(
                    s,
                    AgreementCommand::Cancel {
                        reason: reason.clone(),
                    },
                )
            })
            .await?;
        if events.is_empty() && s.phase == AgreementPhase::Cancelled {
            return Ok(view);
        }
        let reference = s
            .created
            .as_ref()
            .and_then(|c| c.recurring_agreement_ref.clone())
            .map(|r| r.0)
            .unwrap_or_default();
        let req = RecurringCancelRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            recurring_agreement_id: reference,
        };
        let gw = self.gateway.clone();
        let outcome = match self
            .call(
                "recurring_cancel",
                self.call_span("recurring_cancel", ctx, OrderId(agreement_id.0)),
                || gw.recurring_cancel(&req),
            )
            .await
        {
            GatewayOutcome::Success(()) => CallOutcome::Accepted(()),
            other => non_success(other),
        };
        self.execute::<AgreementAggregate, AgreementError>(&stream, &meta, None, |s| {
            agreement::decide(s, AgreementCommand::RecordCancelOutcome(outcome.clone()))
        })
        .await?;
        self.get_agreement(ctx, agreement_id).await
    }

    // ------------------------------------------------------------ reconciliation

    /// Resolves an agreement cancel that is in flight or whose outcome is
    /// unknown (the reconciler uses this). PayKKa has no agreement query,
    /// and a cancel is idempotent in effect (a cancelled agreement answers
    /// 2016, an unknown one 2015), so the cancel is sent again. Only a proof
    /// is recorded: success, 2015 or 2016 cancel the agreement; any other
    /// answer (refusal, timeout, 5xx) does not show that the first send
    /// failed and changes nothing. `Ok(true)` when the state changed.
    pub async fn resend_agreement_cancel(
        &self,
        agreement_id: AgreementId,
    ) -> Result<bool, EngineError> {
        let stream = agreement_stream(agreement_id);
        let (s, _) = load::<AgreementAggregate>(self.store.as_ref(), &stream).await?;
        let Some(c) = s.created.as_ref() else {
            return Ok(false);
        };
        if s.phase != AgreementPhase::Cancelling {
            return Ok(false);
        }
        let ctx = CommandContext::new(c.merchant_id.as_str());
        let req = RecurringCancelRequest {
            merchant_id: c.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            recurring_agreement_id: c
                .recurring_agreement_ref
                .as_ref()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
        };
        let gw = self.gateway.clone();
        let outcome = match self
            .call(
                "recurring_cancel",
                self.call_span("recurring_cancel", &ctx, OrderId(agreement_id.0)),
                || gw.recurring_cancel(&req),
            )
            .await
        {
            GatewayOutcome::Success(()) => CallOutcome::Accepted(()),
            GatewayOutcome::Declined { code, description }
            | GatewayOutcome::Rejected {
                code, description, ..
            } if agreement::proves_inactive(&code) => CallOutcome::Declined { code, description },
            _ => return Ok(false),
        };
        let (_, events) = self
            .execute::<AgreementAggregate, AgreementError>(&stream, &ctx.metadata(), None, |s| {
                agreement::decide(s, AgreementCommand::RecordCancelOutcome(outcome.clone()))
            })
            .await?;
        Ok(!events.is_empty())
    }

    /// Resolves a checkout session whose create call is in flight or whose
    /// outcome is unknown (the reconciler uses this): Checkout Session
    /// Query by `trans_id`. A session PayKKa shows opens ours; "does not
    /// exist" (206011/206024) counts only when `settled` (past the
    /// reconciler's grace period), then the session is declined; anything
    /// else changes nothing. If the answer already shows a payment, the
    /// order starts as in [`Self::check_checkout_payment`]. `Ok(true)` when
    /// the state changed.
    pub async fn refresh_checkout_session(
        &self,
        checkout_id: CheckoutId,
        settled: bool,
    ) -> Result<bool, EngineError> {
        let stream = checkout_stream(checkout_id);
        let (s, _) = load::<CheckoutAggregate>(self.store.as_ref(), &stream).await?;
        let Some(r) = s.requested.as_ref() else {
            return Ok(false);
        };
        if s.phase != CheckoutPhase::Requested {
            return Ok(false);
        }
        let ctx = CommandContext::new(r.merchant_id.as_str());
        let mut answer = None;
        let outcome = match self.query_checkout_session(checkout_id, r).await {
            GatewayOutcome::Success(q) => match q.order.session_id.clone() {
                Some(id) => {
                    answer = Some(q);
                    CallOutcome::Accepted(
                        payorch_schemas::events::checkout::CheckoutSessionCreated {
                            session_id: SessionId(id),
                            session_url: answer.as_ref().and_then(|q| q.session_url.clone()),
                        },
                    )
                }
                None => return Ok(false),
            },
            GatewayOutcome::Rejected {
                class: RejectionClass::NotFound,
                code,
                description,
            } if settled => CallOutcome::Declined { code, description },
            _ => return Ok(false),
        };
        let (_, events) = self
            .execute::<CheckoutAggregate, CheckoutError>(&stream, &ctx.metadata(), None, |s| {
                checkout::decide(s, CheckoutCommand::RecordCreateOutcome(outcome.clone()))
            })
            .await?;
        // The same answer may already show the shopper's payment (its
        // notification lost): start the order now rather than next pass.
        let started = match answer {
            Some(q) => matches!(
                self.apply_session_payment(checkout_id, &r.trans_id, &q)
                    .await?,
                SessionPaymentCheck::Paid(_)
            ),
            None => false,
        };
        Ok(!events.is_empty() || started)
    }

    /// Checkout Session Query for a session, by the `trans_id` it was
    /// requested with (endpoints.md §10).
    async fn query_checkout_session(
        &self,
        checkout_id: CheckoutId,
        r: &payorch_schemas::events::checkout::CheckoutSessionRequested,
    ) -> GatewayOutcome<payorch_schemas::paykka::CheckoutSessionQueryResponse> {
        let ctx = CommandContext::new(r.merchant_id.as_str());
        let req = payorch_schemas::paykka::CheckoutSessionQueryRequest {
            merchant_id: r.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            session_id: None,
            trans_id: Some(r.trans_id.as_str().to_owned()),
        };
        let gw = self.gateway.clone();
        self.call(
            "checkout_session_query",
            self.call_span("checkout_session_query", &ctx, OrderId(checkout_id.0)),
            || gw.checkout_session_query(&req),
        )
        .await
    }

    /// Asks PayKKa whether the shopper paid a checkout session (Checkout
    /// Session Query by `trans_id`, endpoints.md §10) and, if PayKKa shows
    /// a payment, records it exactly as its notification would: the order
    /// is placed from the session, the session completed and the query's
    /// observation applied (see [`SessionPaymentCheck`]). The reconciler
    /// uses this for open sessions, so a lost notification never leaves
    /// the shopper's money without an order. Idempotent: once the payment
    /// is recorded, asking again (or a late notification) appends nothing.
    ///
    /// "The session does not exist" (206011/206024) counts as "not paid"
    /// only when `settled` (past the reconciler's grace period since the
    /// session was requested); before that it is no answer.
    pub async fn check_checkout_payment(
        &self,
        checkout_id: CheckoutId,
        settled: bool,
    ) -> Result<SessionPaymentCheck, EngineError> {
        let stream = checkout_stream(checkout_id);
        let (s, _) = load::<CheckoutAggregate>(self.store.as_ref(), &stream).await?;
        let Some(r) = s.requested.as_ref() else {
            return Err(EngineError::NotFound {
                what: "checkout session",
                id: stream.to_string(),
            });
        };
        match self.query_checkout_session(checkout_id, r).await {
            GatewayOutcome::Success(q) => {
                self.apply_session_payment(checkout_id, &r.trans_id, &q)
                    .await
            }
            GatewayOutcome::Rejected {
                class: RejectionClass::NotFound,
                ..
            } if settled => Ok(SessionPaymentCheck::NotPaid),
            _ => Ok(SessionPaymentCheck::NoAnswer),
        }
    }

    /// Records the payment a Checkout Session Query answer shows, if any
    /// (shared by [`Self::check_checkout_payment`] and
    /// [`Self::refresh_checkout_session`]).
    async fn apply_session_payment(
        &self,
        checkout_id: CheckoutId,
        trans_id: &payorch_schemas::events::TransId,
        q: &payorch_schemas::paykka::CheckoutSessionQueryResponse,
    ) -> Result<SessionPaymentCheck, EngineError> {
        if q.order
            .trans_id
            .as_deref()
            .is_some_and(|t| t != trans_id.as_str())
        {
            // Not the transaction of this session: no answer about it.
            tracing::warn!(checkout_id = %checkout_id, answered = ?q.order.trans_id, "session query answered for another trans_id");
            return Ok(SessionPaymentCheck::NoAnswer);
        }
        let Some(obs) = gateway::session_payment_observation(q) else {
            return Ok(SessionPaymentCheck::NotPaid);
        };
        let order_id = OrderId(checkout_id.0);
        if !self
            .start_order_from_checkout(
                order_id,
                q.order.session_id.as_deref(),
                q.order.payment.as_ref(),
                None,
            )
            .await?
        {
            return Err(EngineError::NotFound {
                what: "checkout session",
                id: checkout_id.to_string(),
            });
        }
        let view = self
            .apply_observation(order_id, Observation::Payment(obs), None)
            .await?;
        Ok(SessionPaymentCheck::Paid(Box::new(view)))
    }

    // ------------------------------------------------------------ pass-through

    /// Lists a shopper's stored tokens (no events).
    pub async fn token_query(
        &self,
        ctx: &CommandContext,
        shopper_reference: &str,
    ) -> Result<TokenQueryResponse, EngineError> {
        let req = TokenQueryRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            shopper_reference: shopper_reference.to_owned(),
            token: None,
        };
        let gw = self.gateway.clone();
        passthrough("token_query", self.call("token_query", tracing::info_span!("paykka_call", operation = "token_query", merchant_id = %ctx.merchant_id), || gw.token_query(&req)).await)
    }

    /// Deletes a stored token (no events; cancel agreements explicitly).
    pub async fn token_remove(
        &self,
        ctx: &CommandContext,
        token: &str,
        shopper_reference: &str,
    ) -> Result<(), EngineError> {
        let req = TokenRemoveRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            token: token.to_owned(),
            shopper_reference: shopper_reference.to_owned(),
        };
        let gw = self.gateway.clone();
        passthrough("token_remove", self.call("token_remove", tracing::info_span!("paykka_call", operation = "token_remove", merchant_id = %ctx.merchant_id), || gw.token_remove(&req)).await)
    }

    /// Apple Pay merchant validation (no events).
    pub async fn apple_pay_session(
        &self,
        ctx: &CommandContext,
        domain_name: &str,
        display_name: Option<String>,
    ) -> Result<ApplePaySessionResponse, EngineError> {
        let req = ApplePaySessionRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            display_name,
            domain_name: domain_name.to_owned(),
        };
        let gw = self.gateway.clone();
        passthrough("apple_pay_session", self.call("apple_pay_session", tracing::info_span!("paykka_call", operation = "apple_pay_session", merchant_id = %ctx.merchant_id), || gw.apple_pay_session(&req)).await)
    }
}

fn passthrough<T>(operation: &'static str, o: GatewayOutcome<T>) -> Result<T, EngineError> {
    let kind = o.kind();
    match o {
        GatewayOutcome::Success(t) => Ok(t),
        GatewayOutcome::Declined { code, description }
        | GatewayOutcome::Rejected {
            code, description, ..
        } => Err(EngineError::Gateway {
            operation,
            kind,
            code,
            description,
        }),
        GatewayOutcome::Retryable { reason } | GatewayOutcome::Unknown { reason } => {
            Err(EngineError::Gateway {
                operation,
                kind,
                code: String::new(),
                description: reason,
            })
        }
    }
}

/// Every stored event of a stream, in order.
pub async fn read_whole_stream(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<Vec<RecordedEvent>, EngineError> {
    let mut out = Vec::new();
    loop {
        let from = Version(out.len() as u64 + 1);
        let batch = store.read_stream(stream, from, PAGE).await?;
        let n = batch.len();
        out.extend(batch);
        if n < PAGE {
            return Ok(out);
        }
    }
}
