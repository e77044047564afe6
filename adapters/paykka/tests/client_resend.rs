//! The client never re-sends a money-moving call (issue 17, point 1), over
//! real HTTP against the sandbox:
//!
//! * the sandbox's "late and hidden" fault (magic amount `...994`): the
//!   capture / refund / initiate commits, its answer comes after the
//!   client's timeout, and an immediate query does not show it yet. The
//!   client reports `Unknown` and the sandbox ledger holds exactly one
//!   capture, one refund, one order: the old query-then-resend rule would
//!   have taken the money twice here.
//! * a TCP relay that swallows the first connection (reads the request,
//!   hangs up): the client opens no second connection.

mod client_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use client_support::*;
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway, RejectionClass};
use payorch_paykka::{OperationTimeouts, PaykkaClient};
use payorch_sandbox::{amounts, cards};
use payorch_schemas::paykka::{
    CaptureMethod, CaptureRequest, GatewayOrderStatus, QueryRequest, RefundQueryRequest,
    RefundRequest,
};
use tokio::io::AsyncReadExt;

/// The sandbox answers late by this much; the client gives up long before.
const LATE: Duration = Duration::from_millis(1_500);
const CLIENT_TIMEOUT: Duration = Duration::from_millis(300);

async fn late_env() -> Env {
    env_with(
        |c| c.faults.late_answer = LATE,
        |m| m.with_timeouts(OperationTimeouts::uniform(CLIENT_TIMEOUT)),
    )
    .await
}

fn unknown<T: std::fmt::Debug>(o: GatewayOutcome<T>) -> String {
    match o {
        GatewayOutcome::Unknown { reason } => reason,
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[tokio::test]
async fn a_late_capture_and_a_late_refund_land_exactly_once_and_stay_unknown() {
    let env = late_env().await;
    let auth = card_initiate(cards::VISA_SUCCESS, 10_000, CaptureMethod::Manual);
    let order = match env.client.initiate(&auth).await {
        GatewayOutcome::Success(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(order.status, Some(GatewayOrderStatus::Authorized));
    let order_id = order.order_id.clone().expect("order_id");

    // Capture 5 994: commits, answers after the client's timeout.
    let capture = CaptureRequest {
        merchant_id: MERCHANT.into(),
        timestamp: 0,
        order_id: order_id.clone(),
        amount: Some(5_000 + amounts::LATE_HIDDEN),
        currency: None,
        final_capture: None,
    };
    let reason = unknown(env.client.capture(&capture).await);
    assert!(reason.contains("timed out"), "{reason}");
    // The fault is real: the immediate query still shows nothing captured
    // (exactly what the old client took as "did not land" and re-sent).
    let q = QueryRequest::by_order_id(MERCHANT, 0, &order_id);
    match env.client.query(&q).await {
        GatewayOutcome::Success(r) => {
            assert_eq!(r.status, Some(GatewayOrderStatus::Authorized));
            assert_eq!(r.balances.and_then(|b| b.captured_amount), Some(0));
        }
        other => panic!("{other:?}"),
    }

    // Refund 1 994 of it: commits, answers late, the refund query cannot
    // find it.
    let refund = RefundRequest {
        merchant_id: MERCHANT.into(),
        timestamp: 0,
        refund_trans_id: unique("rf"),
        ori_order_id: order_id.clone(),
        refund_amount: 1_000 + amounts::LATE_HIDDEN,
        currency: eur(0).currency,
        reason: None,
        notify_url: None,
    };
    let reason = unknown(env.client.refund(&refund).await);
    assert!(reason.contains("timed out"), "{reason}");
    let rq = RefundQueryRequest {
        merchant_id: MERCHANT.into(),
        timestamp: 0,
        refund_trans_id: Some(refund.refund_trans_id.clone()),
        refund_order_id: None,
    };
    assert!(matches!(
        env.client.refund_query(&rq).await,
        GatewayOutcome::Rejected {
            class: RejectionClass::NotFound,
            ..
        }
    ));

    // After the late answers: exactly one capture and one refund at PayKKa.
    let found = env
        .sandbox
        .wait_until(Duration::from_secs(10), |s| {
            s.ledger().merchants[MERCHANT]
                .refunds
                .values()
                .any(|r| r.refund_trans_id == refund.refund_trans_id && r.status.is_final())
        })
        .await;
    assert!(found, "the late refund never settled");
    let ledger = env.sandbox.ledger();
    let books = &ledger.merchants[MERCHANT];
    let o = &books.orders[&order_id];
    assert_eq!(o.captures, vec![5_994], "exactly one capture");
    assert_eq!(o.captured, 5_994);
    let refunds: Vec<_> = books
        .refunds
        .values()
        .filter(|r| r.ori_order_id == order_id)
        .collect();
    assert_eq!(refunds.len(), 1, "exactly one refund: {refunds:?}");
    assert_eq!(refunds[0].amount, 1_994);
    assert_eq!(o.refunded, 1_994);
    // And now the queries show them.
    assert!(matches!(
        env.client.refund_query(&rq).await,
        GatewayOutcome::Success(_)
    ));
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn a_late_initiate_lands_once_and_the_client_does_not_resend_it() {
    let env = late_env().await;
    let req = card_initiate(
        cards::VISA_SUCCESS,
        1_000 + amounts::LATE_HIDDEN,
        CaptureMethod::Manual,
    );
    unknown(env.client.initiate(&req).await);
    // Not found right after the timeout (the old client re-sent here).
    let q = QueryRequest::by_trans_id(MERCHANT, 0, &req.trans_id);
    assert!(matches!(
        env.client.query(&q).await,
        GatewayOutcome::Rejected {
            class: RejectionClass::NotFound,
            ..
        }
    ));
    let orders = env.sandbox.ledger().merchants[MERCHANT]
        .orders
        .values()
        .filter(|o| o.trans_id == req.trans_id)
        .count();
    assert_eq!(orders, 1, "committed exactly once");
    // Once the late answer is out, the query shows it.
    let mut shown = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let GatewayOutcome::Success(r) = env.client.query(&q).await {
            assert_eq!(r.status, Some(GatewayOrderStatus::Authorized));
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(shown, "the late initiate never became visible");
    env.sandbox.shutdown().await;
}

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
async fn a_lost_initiate_answer_is_unknown_and_nothing_else_is_sent() {
    let env = env().await;
    let (base_url, accepted) = swallow_first(env.sandbox.addr()).await;
    let client = PaykkaClient::new(test_merchant_config(
        &env.keys,
        env.platform_key.clone(),
        base_url,
    ))
    .expect("client");
    let req = card_initiate(cards::VISA_SUCCESS, 1_234, CaptureMethod::Manual);
    let reason = unknown(client.initiate(&req).await);
    assert!(reason.contains("after sending"), "{reason}");
    // One connection, no query, no re-send.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert!(
        !env.sandbox.ledger().merchants[MERCHANT]
            .orders
            .values()
            .any(|o| o.trans_id == req.trans_id)
    );
    env.sandbox.shutdown().await;
}
