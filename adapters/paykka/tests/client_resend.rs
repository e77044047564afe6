//! The "resend only when the query proves it did not land" rule, over real
//! HTTP: a TCP relay in front of the sandbox swallows the first connection
//! (reads the request, closes without answering: the client cannot know
//! whether PayKKa acted), then relays everything else.

mod client_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use client_support::*;
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway};
use payorch_paykka::{PaykkaClient, RetryPolicy};
use payorch_sandbox::cards;
use payorch_schemas::paykka::{CaptureMethod, GatewayOrderStatus};
use tokio::io::AsyncReadExt;

/// Relays 127.0.0.1:<port> to `target`, swallowing the first connection.
async fn swallow_first(target: std::net::SocketAddr) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if n == 0 {
                    // Read the whole request (headers + body arrive together
                    // on loopback), then hang up without an answer.
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = inbound.read(&mut buf).await;
                    return;
                }
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("http://{addr}/apis"), accepted)
}

#[tokio::test]
async fn lost_initiate_is_resent_only_after_the_query_says_not_found() {
    let env = env().await;
    let (base_url, accepted) = swallow_first(env.sandbox.addr()).await;
    let client = PaykkaClient::new(test_merchant_config(
        &env.keys,
        env.platform_key.clone(),
        base_url.clone(),
    ))
    .expect("client");
    let req = card_initiate(cards::VISA_SUCCESS, 1_234, CaptureMethod::Manual);
    let r = match client.initiate(&req).await {
        GatewayOutcome::Success(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.status, Some(GatewayOrderStatus::Authorized));
    assert!(accepted.load(Ordering::SeqCst) >= 2);
    let ledger = env.sandbox.ledger();
    let orders: Vec<_> = ledger.merchants[MERCHANT]
        .orders
        .values()
        .filter(|o| o.trans_id == req.trans_id)
        .collect();
    assert_eq!(orders.len(), 1);

    // With resends off the same loss stays Unknown and nothing lands.
    let (base_url, _) = swallow_first(env.sandbox.addr()).await;
    let client = PaykkaClient::new(
        test_merchant_config(&env.keys, env.platform_key.clone(), base_url).with_retry(
            RetryPolicy {
                resend_when_not_landed: false,
                ..RetryPolicy::default()
            },
        ),
    )
    .expect("client");
    let req = card_initiate(cards::VISA_SUCCESS, 1_234, CaptureMethod::Manual);
    assert!(matches!(
        client.initiate(&req).await,
        GatewayOutcome::Unknown { .. }
    ));
    assert!(
        !env.sandbox.ledger().merchants[MERCHANT]
            .orders
            .values()
            .any(|o| o.trans_id == req.trans_id)
    );
    env.sandbox.shutdown().await;
}
