//! Gateway observations: PayKKa notifications and query results are
//! commands too; duplicates and late arrivals emit nothing.

use payorch_schemas::events::{OrderId, RefundId};
use payorch_schemas::paykka::{
    PaymentNotification, QueryRequest, RefundNotification, RefundQueryRequest,
};
use tracing::Instrument;
use uuid::Uuid;

use super::runner::Idem;
use super::views::Stamped;
use super::*;
use crate::aggregate::OrderAggregate;
use crate::gateway::{self, GatewayOutcome, RejectionClass};
use crate::order::{Observation, ObservationSource, OrderCommand, OrderState};
use crate::read::{Loaded, load, load_timed, order_of_trans_id, order_stream};
use crate::store::{EventMetadata, Version};
use crate::view::OrderView;

/// Refuses a notification whose merchant, currency or amount contradicts
/// the order (or, for a refund notification, the refund): a mix-up or a
/// forgery must not move money in our books. Absent fields are not
/// contradictions (PayKKa's bodies vary).
fn contradiction(
    order_id: OrderId,
    merchant: &str,
    expected: payorch_schemas::Money,
    named_merchant: Option<&str>,
    currency: Option<&str>,
    amount: Option<i64>,
) -> Result<(), EngineError> {
    let refuse = |field: &'static str, expected: String, observed: &str| {
        Err(EngineError::NotificationContradicts {
            order_id,
            field,
            expected,
            observed: observed.to_owned(),
        })
    };
    if let Some(m) = named_merchant
        && m != merchant
    {
        return refuse("merchant_id", merchant.to_owned(), m);
    }
    if let Some(c) = currency
        && !c.eq_ignore_ascii_case(expected.currency.code())
    {
        return refuse("currency", expected.currency.code().to_owned(), c);
    }
    if let Some(a) = amount
        && a != expected.minor
    {
        return refuse("amount", expected.minor.to_string(), &a.to_string());
    }
    Ok(())
}

impl Engine {
    /// Applies a webhook or query result to an order. Duplicates and late
    /// arrivals emit nothing; the current view is returned.
    pub async fn apply_observation(
        &self,
        order_id: OrderId,
        observation: Observation,
        correlation_id: Option<Uuid>,
    ) -> Result<OrderView, EngineError> {
        self.observe(order_id, observation, correlation_id, None)
            .await
    }

    /// [`Self::apply_observation`] from a state the caller just loaded.
    /// The metadata names no merchant: the runner takes the order's.
    pub(crate) async fn observe(
        &self,
        order_id: OrderId,
        observation: Observation,
        correlation_id: Option<Uuid>,
        held: Option<Loaded<OrderState>>,
    ) -> Result<OrderView, EngineError> {
        let meta = EventMetadata {
            correlation_id,
            causation_id: None,
            merchant_id: None,
            actor: Some("paykka".into()),
        };
        let span = tracing::info_span!("command", command = "apply_observation", order_id = %order_id, trans_id = %order_id.trans_id(), correlation_id = ?correlation_id);
        async {
            let done = self
                .order_command(order_id, &meta, Idem::None, held, |_| {
                    OrderCommand::ApplyGatewayObservation(observation.clone())
                })
                .await?;
            OrderView::from_state(&done.state)
                .map(|v| v.with_times(done.times))
                .ok_or(EngineError::NotFound {
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
        // One read: the order as it is (its fact may already be recorded
        // by the PayKKa response, then nothing is appended).
        let mut held =
            load_timed::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        if held.version == Version::NONE {
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
            held =
                load_timed::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        }
        if let Some(placed) = held.state.placed() {
            contradiction(
                order_id,
                placed.merchant_id.as_str(),
                placed.amount,
                n.merchant_id.as_deref(),
                n.currency.as_deref(),
                n.amount,
            )?;
        }
        let obs = gateway::notification_observation(n);
        self.observe(
            order_id,
            Observation::Payment(obs),
            correlation_id,
            Some(held),
        )
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
        let held =
            load_timed::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        let Some(refund) = usize::try_from(seq)
            .ok()
            .and_then(|i| held.state.refunds().get(i.wrapping_sub(1)))
        else {
            return Ok(None);
        };
        if let Some(placed) = held.state.placed() {
            contradiction(
                order_id,
                placed.merchant_id.as_str(),
                refund.amount,
                n.merchant_id.as_deref(),
                n.currency.as_deref(),
                n.amount,
            )?;
        }
        let obs = gateway::refund_notification_observation(n, refund.refund_id);
        self.observe(
            order_id,
            Observation::Refund(obs),
            correlation_id,
            Some(held),
        )
        .await
        .map(Some)
    }

    /// Queries PayKKa about an order now and applies the answer (the
    /// browser-return handler and the reconciler use this). `past_grace` marks
    /// the answer as past the grace period (see `crate::reconciler`): only
    /// then is a refund that Refund Query does not know sent again
    /// ([`Engine::resend_refund`]); a capture is never sent again.
    pub async fn refresh_order(
        &self,
        order_id: OrderId,
        past_grace: bool,
    ) -> Result<OrderView, EngineError> {
        self.refresh_order_resending(order_id, past_grace, &|_| true)
            .await
    }

    /// [`Engine::refresh_order`], asking `may_resend` before each refund
    /// re-send (the reconciler bounds them: a refund PayKKa keeps refusing
    /// stays unknown and is only queried once the bound is reached).
    pub(crate) async fn refresh_order_resending(
        &self,
        order_id: OrderId,
        past_grace: bool,
        may_resend: &(dyn Fn(RefundId) -> bool + Send + Sync),
    ) -> Result<OrderView, EngineError> {
        let (state, _) =
            load::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        let Some(p) = state.placed() else {
            return Err(EngineError::NotFound {
                what: "order",
                id: order_id.to_string(),
            });
        };
        let ctx = CommandContext::new(p.merchant_id.as_str());
        let req = match state.gateway_order_id() {
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
                o.past_grace = past_grace;
                Some(Observation::Payment(o))
            }
            GatewayOutcome::Rejected {
                class: RejectionClass::NotFound,
                ..
            } => Some(Observation::PaymentNotFound { past_grace }),
            _ => None, // no definitive answer: change nothing
        };
        if let Some(obs) = obs {
            view = Some(self.apply_observation(order_id, obs, None).await?);
        }
        // Open refunds: Refund Query each.
        let (state, _) =
            load::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        for r in state.refunds().iter().filter(|r| r.progress.is_open()) {
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
                // Past the grace period PayKKa still does not know the
                // refund: the reconciler sends it again, with the same
                // `refund_trans_id` (never declined on "not found": the
                // first send may have been lost before PayKKa saw it).
                GatewayOutcome::Rejected {
                    class: RejectionClass::NotFound,
                    ..
                } if past_grace && may_resend(r.refund_id) => {
                    let gateway_order_id = state
                        .gateway_order_id()
                        .map(|g| g.as_str().to_owned())
                        .unwrap_or_default();
                    view = Some(
                        self.resend_refund(&ctx, order_id, r, gateway_order_id)
                            .await?,
                    );
                    None
                }
                // Past the grace period but out of re-sends: stays
                // unknown (never declined), queried again later.
                GatewayOutcome::Rejected {
                    class: RejectionClass::NotFound,
                    ..
                } if past_grace => None,
                GatewayOutcome::Rejected {
                    class: RejectionClass::NotFound,
                    ..
                } => Some(Observation::RefundNotFound {
                    refund_id: r.refund_id,
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
}
