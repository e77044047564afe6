//! Checkout sessions: create, close, the order a paid session starts, and
//! the Checkout Session Query the reconciler uses.

use payorch_schemas::events::order::InstrumentSummary;
use payorch_schemas::events::{Annotations, AuthorisationKind, CheckoutId, OrderId, SessionId};
use payorch_schemas::paykka::{CheckoutSessionRequest, PaymentInfo};
use uuid::Uuid;

use super::idempotency::*;
use super::paykka_requests::*;
use super::runner::{Idem, Respond};
use super::views::Stamped;
use super::*;
use crate::aggregate::CheckoutAggregate;
use crate::checkout::{CheckoutCommand, CheckoutPhase, CheckoutState};
use crate::gateway::{self, GatewayOutcome, RejectionClass};
use crate::order::{CallOutcome, Observation, OrderCommand, PlacePayment};
use crate::read::{Loaded, checkout_stream, load, load_timed};
use crate::store::{EventMetadata, StoreError, StreamId};
use crate::view::CheckoutView;

impl Engine {
    /// Opens a PayKKa checkout session. The order appears when the shopper
    /// pays (its notification carries the session's trans_id).
    pub async fn create_checkout_session(
        &self,
        ctx: &CommandContext,
        req: CheckoutSessionCreate,
    ) -> Result<CheckoutView, EngineError> {
        let checkout_id = CheckoutId(Uuid::now_v7());
        let annotations = ctx.checked_annotations()?;
        let key = Key::of(ctx, checkout_fingerprint(&req));
        let stream = checkout_stream(checkout_id);
        // The default expiry is resolved here, once: a replay returns the
        // session (and its expiry) the first execution created.
        let expires_at = req
            .expires_at
            .unwrap_or_else(|| self.clock.now() + self.config.checkout_ttl);
        let trans_id = OrderId(checkout_id.0).trans_id();
        let requested = payorch_schemas::events::checkout::CheckoutSessionRequested {
            checkout_id,
            merchant_id: ctx.merchant_id.clone(),
            trans_id: trans_id.clone(),
            amount: req.amount,
            payment_type: req.payment_type,
            capture_method: req.capture_method,
            session_mode: req.session_mode.as_str().to_owned(),
            expires_at,
            merchant_reference: annotations.merchant_reference,
            metadata: annotations.metadata,
        };
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
            expires_at,
        ));
        // What PayKKa's schema rules refuse is refused before anything is
        // written.
        if let Err(e) = create.validate() {
            return Err(EngineError::InvalidField {
                field: e.field,
                problem: e.problem.to_string(),
            });
        }
        let meta = ctx.metadata();
        let idem = Idem::begin(
            key.as_ref()
                .map(|k| k.begin(Some(&stream), self.clock.now())),
        );
        let begun = match self
            .execute::<CheckoutAggregate>(&stream, &meta, idem, Some(Loaded::empty()), |_| {
                CheckoutCommand::Create(requested.clone())
            })
            .await
        {
            Ok(done) => done,
            Err(EngineError::Store(StoreError::IdempotencyKeyTaken { .. })) => match &key {
                Some(k) => return self.replay(ctx, k, Resolves::Checkout).await,
                None => {
                    return Err(EngineError::Contention {
                        stream: stream.to_string(),
                        attempts: 1,
                    });
                }
            },
            Err(e) => return Err(e),
        };
        let gw = self.gateway.clone();
        let answer = self
            .call(
                "checkout_session_create",
                self.call_span("checkout_session_create", ctx, OrderId(checkout_id.0)),
                || gw.checkout_session_create(&create),
            )
            .await;
        // Never left: recorded declined without completing the key, which
        // is released (as for payments, see `finish_or_unreachable`).
        let not_sent = match &answer {
            GatewayOutcome::NotSent { reason } => Some(reason.clone()),
            _ => None,
        };
        let outcome = match answer {
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
        let respond =
            |s: &CheckoutState, t: crate::read::StreamTimes| match CheckoutView::from_state(s) {
                Some(v) => to_raw(&v.with_times(t)),
                None => Err(EngineError::NotFound {
                    what: "checkout session",
                    id: checkout_id.to_string(),
                }),
            };
        let idem = match (&key, &not_sent) {
            (Some(k), None) => Idem::Complete(k, &respond as &Respond<'_, CheckoutState>),
            _ => Idem::None,
        };
        let done = self
            .execute::<CheckoutAggregate>(&stream, &meta, idem, Some(begun.held()), |_| {
                CheckoutCommand::RecordCreateOutcome(outcome.clone())
            })
            .await?;
        if let Some(reason) = not_sent {
            if let Some(k) = &key {
                self.idempotency
                    .release_idempotency(&k.scope, &k.key)
                    .await?;
                self.idempotency_done.notify_waiters();
            }
            return Err(EngineError::PaykkaUnreachable {
                operation: "checkout_session_create",
                reason,
            });
        }
        let view = CheckoutView::from_state(&done.state)
            .ok_or(EngineError::NotFound {
                what: "checkout session",
                id: checkout_id.to_string(),
            })?
            .with_times(done.times);
        if done.events.is_empty() {
            return self.complete_alone(key.as_ref(), view).await;
        }
        Ok(view)
    }

    pub(crate) async fn checkout_view(
        &self,
        ctx: &CommandContext,
        stream: &StreamId,
    ) -> Result<CheckoutView, EngineError> {
        let l = load_timed::<CheckoutAggregate>(self.store.as_ref(), stream).await?;
        let view = CheckoutView::from_state(&l.state)
            .filter(|v| v.merchant_id == ctx.merchant_id)
            .ok_or_else(|| EngineError::NotFound {
                what: "checkout session",
                id: stream.to_string(),
            })?;
        Ok(view.with_times(l.times))
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
        self.execute::<CheckoutAggregate>(&stream, &ctx.metadata(), Idem::None, None, |_| {
            cmd.clone()
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
    pub(crate) async fn start_order_from_checkout(
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
            // The payment of a session carries the session's labels.
            annotations: Annotations {
                merchant_reference: r.merchant_reference.clone(),
                metadata: r.metadata.clone(),
            },
        };
        self.order_command(order_id, &meta, Idem::None, None, |_| {
            OrderCommand::Place(place.clone())
        })
        .await?;
        self.execute::<CheckoutAggregate>(&stream, &meta, Idem::None, None, |_| {
            CheckoutCommand::Complete { order_id }
        })
        .await?;
        Ok(true)
    }

    /// Resolves a checkout session whose create call is in flight or whose
    /// outcome is unknown (the reconciler uses this): Checkout Session
    /// Query by `trans_id`. A session PayKKa shows opens ours; "does not
    /// exist" (206011/206024) counts only when `past_grace` (past the
    /// reconciler's grace period), then the session is declined; anything
    /// else changes nothing. If the answer already shows a payment, the
    /// order starts as in [`Self::check_checkout_payment`]. `Ok(true)` when
    /// the state changed.
    pub async fn refresh_checkout_session(
        &self,
        checkout_id: CheckoutId,
        past_grace: bool,
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
            } if past_grace => CallOutcome::Declined { code, description },
            _ => return Ok(false),
        };
        let events = self
            .execute::<CheckoutAggregate>(&stream, &ctx.metadata(), Idem::None, None, |_| {
                CheckoutCommand::RecordCreateOutcome(outcome.clone())
            })
            .await?
            .events;
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
    pub(crate) async fn query_checkout_session(
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
    /// only when `past_grace` (past the reconciler's grace period since the
    /// session was requested); before that it is no answer.
    pub async fn check_checkout_payment(
        &self,
        checkout_id: CheckoutId,
        past_grace: bool,
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
            } if past_grace => Ok(SessionPaymentCheck::NotPaid),
            _ => Ok(SessionPaymentCheck::NoAnswer),
        }
    }

    /// Records the payment a Checkout Session Query answer shows, if any
    /// (shared by [`Self::check_checkout_payment`] and
    /// [`Self::refresh_checkout_session`]).
    pub(crate) async fn apply_session_payment(
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
}
