//! Embedding payorch in a marketplace service: the `Engine` on a SQLite
//! store, talking to a PayKKa sandbox over real HTTP through
//! `PaykkaClient`. Places a manual-capture payment, captures part of it,
//! refunds some, and prints the order and its event history.
//!
//! Run: `cargo run --example embed` (creates `embed-example.db` in a temp
//! dir; no services needed).

use std::sync::Arc;

use payorch_engine::orchestrator::{CommandContext, Engine, EngineConfig, PlacePaymentRequest};
use payorch_engine::store::SystemClock;
use payorch_paykka::keys::generate_merchant_key_pair;
use payorch_paykka::{MerchantConfig, PaykkaClient, PaykkaPublicKey};
use payorch_sandbox::{SandboxConfig, SandboxMerchant, cards};
use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind};
use payorch_schemas::paykka::PaymentRequest;
use payorch_schemas::{Currency, Money};
use payorch_sqlite::SqliteStore;

const MERCHANT: &str = "10000000000001";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. PayKKa: here a local simulator; in production the PayKKa base URL
    //    and the key files you registered in the PayKKa portal.
    let keys = generate_merchant_key_pair()?;
    let sandbox = payorch_sandbox::spawn(
        SandboxConfig {
            merchants: vec![SandboxMerchant::new(MERCHANT, keys.public.to_spki_pem())],
            ..SandboxConfig::default()
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await?;
    let platform_key = PaykkaPublicKey::parse(&sandbox.platform_public_key_pem())?;
    let client = PaykkaClient::new(
        MerchantConfig::new(MERCHANT, keys.private_key()?, platform_key)
            .with_base_url(sandbox.base_url()),
    )?;

    // 2. Storage: an embedded SQLite file.
    let path = std::env::temp_dir().join("embed-example.db");
    let store =
        Arc::new(SqliteStore::open(&format!("sqlite://{}?mode=rwc", path.display())).await?);
    store.migrate().await?;

    // 3. The engine.
    let engine = Engine::new(
        store.clone(),
        store.clone(),
        Arc::new(client),
        Arc::new(SystemClock),
        EngineConfig {
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    );
    let eur = |minor| Money::new(minor, Currency::EUR);
    let ctx = CommandContext::new(MERCHANT)
        .with_idempotency_key(format!("basket-{}", uuid::Uuid::now_v7()));
    let order = engine
        .place_payment(
            &ctx,
            PlacePaymentRequest {
                amount: eur(4999),
                payment_type: PaymentKind::Purchase,
                authorisation_type: AuthorisationKind::FinalAuth,
                capture_method: CaptureMode::Manual,
                payment: PaymentRequest::card(cards::VISA_SUCCESS, "07", "2031", "123"),
                store_token: None,
                return_url: Some("https://shop.example/return".into()),
                browser: None,
            },
        )
        .await?;
    println!("placed {} -> {}", order.order_id, order.status);

    // Ship, then capture what shipped (releasing the rest).
    let ctx = CommandContext::new(MERCHANT);
    let order = engine
        .capture(
            &ctx.clone().with_idempotency_key("ship-1"),
            order.order_id,
            Some(eur(3000)),
            true,
        )
        .await?;
    println!("captured {} -> {}", order.captured, order.status);
    let order = engine
        .refund(
            &ctx.clone().with_idempotency_key("rma-1"),
            order.order_id,
            eur(500),
            Some("returned item".into()),
        )
        .await?;
    println!(
        "refund requested: {} refunds on the order",
        order.refunds.len()
    );

    for e in engine.list_order_events(&ctx, order.order_id).await? {
        println!("  v{} {}", e.version, e.event_type);
    }
    sandbox.shutdown().await;
    store.close().await;
    println!("events recorded in {}", path.display());
    Ok(())
}
