//! A service in another team consuming payorch's payment events from
//! RabbitMQ: a durable queue bound to `order.#`, a typed handler over the
//! public event contract (`payorch-schemas`), ack after success, retries
//! then a dead-letter queue (payorch-rabbitmq's subscriber).
//!
//! Run: `cargo run --example subscribe` with RabbitMQ on
//! amqp://guest:guest@127.0.0.1:5672/%2f (or set PAYORCH_AMQP_URL), and a
//! `payorch serve --amqp-url ...` publishing events. Ctrl-C stops it.

use async_trait::async_trait;
use payorch_engine::bus::{
    DeliveryContext, EventEnvelope, EventHandler, HandlerError, SubscriptionOptions, subscribe,
};
use payorch_rabbitmq::{DEFAULT_AMQP_URL, RabbitBus, RabbitBusConfig};
use payorch_schemas::events::OrderEvent;

/// Prints each order event; a real consumer would update its own store
/// here (deduplicating on `ctx.message_id`) before returning `Ok`.
struct PrintOrders;

#[async_trait]
impl EventHandler<OrderEvent> for PrintOrders {
    async fn handle(
        &self,
        event: EventEnvelope<OrderEvent>,
        ctx: &DeliveryContext,
    ) -> Result<(), HandlerError> {
        println!(
            "{} {} v{} {} (attempt {})",
            ctx.routing_key, event.stream_id, event.version.0, event.event_type, ctx.attempt
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("PAYORCH_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let bus = RabbitBus::new(RabbitBusConfig::new(url));
    let subscription = subscribe(
        &bus,
        SubscriptionOptions::new("example.order-printer", ["order.#"]).with_max_retries(3),
        PrintOrders,
    )
    .await?;
    println!("consuming order.# from payorch.events; Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    subscription.stop().await;
    Ok(())
}
