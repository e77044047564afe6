//! Queries of the merchant API: the current view of an order, its events.

use payorch_schemas::events::{OrderEvent, OrderId};

use super::*;
use crate::aggregate::OrderAggregate;
use crate::codec::{self};
use crate::order::OrderState;
use crate::read::{
    Loaded, StreamTimes, agreement_stream, checkout_stream, load_timed, order_stream,
    read_whole_stream,
};
use crate::store::{StreamId, Version};
use crate::view::Labels;
use crate::view::{AgreementView, CheckoutView, OrderView};

pub(crate) fn view_of(state: &OrderState, order_id: OrderId) -> Result<OrderView, EngineError> {
    OrderView::from_state(state).ok_or(EngineError::NotFound {
        what: "order",
        id: order_id.to_string(),
    })
}

/// The view of an order as a command leaves it, stamped with the times the
/// command knows (see [`Stamped::with_times`]).
pub(crate) fn stamped_view_of(
    state: &OrderState,
    order_id: OrderId,
    times: StreamTimes,
) -> Result<OrderView, EngineError> {
    Ok(view_of(state, order_id)?.with_times(times))
}

/// A view whose `created_at`/`updated_at` are the recorded times (the
/// engine clock's, when the events were decided) of its stream's first
/// event and of the event at the view's version.
pub trait Stamped: Sized {
    /// The stream the view was folded from.
    fn stream(&self) -> StreamId;
    /// The stream version the view reflects.
    fn stream_version(&self) -> u64;
    /// The labels and times of the view.
    fn labels(&self) -> &Labels;
    /// The labels and times of the view, to change.
    fn labels_mut(&mut self) -> &mut Labels;

    /// Sets the two times.
    fn set_times(&mut self, created_at: time::OffsetDateTime, updated_at: time::OffsetDateTime) {
        let l = self.labels_mut();
        l.created_at = Some(created_at);
        l.updated_at = Some(updated_at);
    }

    /// Whether both times are set.
    fn is_stamped(&self) -> bool {
        let l = self.labels();
        l.created_at.is_some() && l.updated_at.is_some()
    }

    /// The view with the times of the stream it was built from (the
    /// stream as a command loaded or appended it, at the view's version);
    /// unchanged when they are not known.
    fn with_times(mut self, times: StreamTimes) -> Self {
        if let (Some(first), Some(last)) = (times.first, times.last) {
            self.set_times(first, last);
        }
        self
    }
}

impl Stamped for OrderView {
    fn stream(&self) -> StreamId {
        order_stream(self.order_id)
    }
    fn stream_version(&self) -> u64 {
        self.version
    }
    fn labels(&self) -> &Labels {
        &self.labels
    }
    fn labels_mut(&mut self) -> &mut Labels {
        &mut self.labels
    }
}

impl Stamped for CheckoutView {
    fn stream(&self) -> StreamId {
        checkout_stream(self.checkout_id)
    }
    fn stream_version(&self) -> u64 {
        self.version
    }
    fn labels(&self) -> &Labels {
        &self.labels
    }
    fn labels_mut(&mut self) -> &mut Labels {
        &mut self.labels
    }
}

impl Stamped for AgreementView {
    fn stream(&self) -> StreamId {
        agreement_stream(self.agreement_id)
    }
    fn stream_version(&self) -> u64 {
        self.version
    }
    fn labels(&self) -> &Labels {
        &self.labels
    }
    fn labels_mut(&mut self) -> &mut Labels {
        &mut self.labels
    }
}

impl Engine {
    /// Makes sure a view shows its `created_at`/`updated_at`: the recorded
    /// times (the engine clock's, when the events were decided) of its
    /// stream's first event and of the event at the view's version, never
    /// the caller's wall clock. The queries and the commands answer views
    /// stamped from the events they read or appended anyway, and those
    /// pass through unchanged, with no store call. A view without times
    /// (a stored idempotency response being replayed) is stamped from its
    /// stream: two point reads (version 1 and the view's version; one when
    /// they are the same).
    pub async fn stamp<V: Stamped>(&self, mut v: V) -> Result<V, EngineError> {
        if v.is_stamped() {
            return Ok(v);
        }
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

    /// An order of this merchant, as stored.
    pub(crate) async fn load_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<Loaded<OrderState>, EngineError> {
        let loaded =
            load_timed::<OrderAggregate>(self.store.as_ref(), &order_stream(order_id)).await?;
        if loaded.state.merchant_id() != Some(&ctx.merchant_id) {
            return Err(EngineError::NotFound {
                what: "order",
                id: order_id.to_string(),
            });
        }
        Ok(loaded)
    }

    /// The current view of an order of this merchant.
    pub async fn get_order(
        &self,
        ctx: &CommandContext,
        order_id: OrderId,
    ) -> Result<OrderView, EngineError> {
        let loaded = self.load_order(ctx, order_id).await?;
        stamped_view_of(&loaded.state, order_id, loaded.times)
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
