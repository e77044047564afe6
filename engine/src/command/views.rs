//! Queries of the merchant API: the current view of an order, its events.

use payorch_schemas::events::{OrderEvent, OrderId};

use super::*;
use crate::aggregate::OrderAggregate;
use crate::codec::{self};
use crate::order::OrderState;
use crate::read::{agreement_stream, checkout_stream, load, order_stream, read_whole_stream};
use crate::store::{StreamId, Version};
use crate::view::{AgreementView, CheckoutView, OrderView};

pub(crate) fn view_of(state: &OrderState, order_id: OrderId) -> Result<OrderView, EngineError> {
    OrderView::from_state(state).ok_or(EngineError::NotFound {
        what: "order",
        id: order_id.to_string(),
    })
}

/// A view whose `created_at`/`updated_at` are the recorded times (the
/// engine clock's, when the events were decided) of its stream's first
/// event and of the event at the view's version.
pub trait Stamped {
    /// The stream the view was folded from.
    fn stream(&self) -> StreamId;
    /// The stream version the view reflects.
    fn stream_version(&self) -> u64;
    /// Sets the two times.
    fn set_times(&mut self, created_at: time::OffsetDateTime, updated_at: time::OffsetDateTime);
}

impl Stamped for OrderView {
    fn stream(&self) -> StreamId {
        order_stream(self.order_id)
    }
    fn stream_version(&self) -> u64 {
        self.version
    }
    fn set_times(&mut self, created_at: time::OffsetDateTime, updated_at: time::OffsetDateTime) {
        self.created_at = Some(created_at);
        self.updated_at = Some(updated_at);
    }
}

impl Stamped for CheckoutView {
    fn stream(&self) -> StreamId {
        checkout_stream(self.checkout_id)
    }
    fn stream_version(&self) -> u64 {
        self.version
    }
    fn set_times(&mut self, created_at: time::OffsetDateTime, updated_at: time::OffsetDateTime) {
        self.created_at = Some(created_at);
        self.updated_at = Some(updated_at);
    }
}

impl Stamped for AgreementView {
    fn stream(&self) -> StreamId {
        agreement_stream(self.agreement_id)
    }
    fn stream_version(&self) -> u64 {
        self.version
    }
    fn set_times(&mut self, created_at: time::OffsetDateTime, updated_at: time::OffsetDateTime) {
        self.created_at = Some(created_at);
        self.updated_at = Some(updated_at);
    }
}

impl Engine {
    /// Sets a view's `created_at`/`updated_at` from its stream: two point
    /// reads (version 1 and the view's version; one when they are the
    /// same). The times are the events' recorded times (the engine clock's),
    /// never the caller's wall clock. The `get_*` queries answer stamped
    /// views; commands answer views without times (their store round
    /// trips stay what they were), which a caller that shows them stamps
    /// (the HTTP API does).
    pub async fn stamp<V: Stamped>(&self, mut v: V) -> Result<V, EngineError> {
        let stream = v.stream();
        let version = v.stream_version().max(1);
        let first = self.store.read_stream(&stream, Version(1), 1).await?;
        let last = if version == 1 {
            first.clone()
        } else {
            self.store.read_stream(&stream, Version(version), 1).await?
        };
        if let (Some(f), Some(l)) = (first.first(), last.first()) {
            v.set_times(f.recorded_at, l.recorded_at);
        }
        Ok(v)
    }

    pub(crate) async fn load_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<(OrderState, Version), EngineError> {
        let (state, version) =
            load::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        if state.merchant_id() != Some(&ctx.merchant_id) {
            return Err(EngineError::NotFound {
                what: "order",
                id: order_id.to_string(),
            });
        }
        Ok((state, version))
    }

    /// The current view of an order of this merchant.
    pub async fn get_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        let (state, _) = self.load_order(ctx, order_id).await?;
        let view = OrderView::from_state(&state).ok_or(EngineError::NotFound {
            what: "order",
            id: order_id.to_string(),
        })?;
        self.stamp(view).await
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
}
