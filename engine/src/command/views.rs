//! Queries of the merchant API: the current view of an order, its events.

use payorch_schemas::events::{OrderEvent, OrderId};

use super::*;
use crate::aggregate::OrderAggregate;
use crate::codec::{self};
use crate::order::OrderState;
use crate::read::{load, order_stream, read_whole_stream};
use crate::store::Version;
use crate::view::OrderView;

pub(crate) fn view_of(state: &OrderState, order_id: OrderId) -> Result<OrderView, EngineError> {
    OrderView::from_state(state).ok_or(EngineError::NotFound {
        what: "order",
        id: order_id.to_string(),
    })
}

impl Engine {
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
}
