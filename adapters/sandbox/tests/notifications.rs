//! Notifications (signed, retried until acknowledged, faults under a seed),
//! 3DS challenges, and answer-side faults (slow response, 5xx after commit).

mod common;

use std::time::Duration;

use common::*;
use payorch_sandbox::{DeliveryOutcome, RefundMode, cards};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn assert_signed(h: &Harness, rec: &Received) {
    let j = rec.json();
    let m = j["merchant_id"].as_str().unwrap();
    let ts = j["timestamp"].as_i64().unwrap();
    assert_eq!(rec.headers["type"], "RSA256");
    assert_eq!(rec.headers["version"], "v1.2");
    let sig = rec.headers["signature"].to_str().unwrap();
    assert!(
        verify_platform(&h.platform_pem, m, ts, &rec.body, sig),
        "notification must verify"
    );
}

#[tokio::test]
async fn payment_and_refund_notifications_are_signed_and_retried_until_acked() {
    let rx = Receiver::start(2).await; // first two deliveries get HTTP 500
    let h = start_with(|c| {
        c.notify.initial_backoff = Duration::from_millis(10);
        c.behaviour.refunds = RefundMode::Immediate;
    })
    .await;
    let r = h
        .call(
            "/payments",
            payment_body("n1", 100, cards::VISA_SUCCESS, false, Some(&rx.url)),
        )
        .await;
    let got = rx.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3, "two failures then an ack");
    for g in &got {
        assert_signed(&h, g);
        assert_eq!(g.json()["notify_type"], "PAYMENT.SUCCESS");
        assert_eq!(g.json()["order_id"], r.order_id().as_str());
        assert_eq!(g.body, got[0].body, "retries resend the same body");
    }
    assert!(
        h.sandbox
            .wait_until(WAIT, |s| s.notifications_sent()[0].outcome
                == DeliveryOutcome::Acknowledged)
            .await
    );
    assert_eq!(h.sandbox.notifications_sent()[0].attempts, 3);

    h.call(
        "/refund",
        json!({"refund_trans_id": "nr1", "ori_order_id": r.order_id(), "refund_amount": 40, "currency": "EUR",
               "notify_url": rx.url}),
    )
    .await;
    let got = rx.wait_for(4, WAIT).await;
    let refund = got[3].json();
    assert_signed(&h, &got[3]);
    assert_eq!(refund["notify_type"], "REFUND.SUCCESS");
    assert_eq!(refund["trans_id"], "nr1");
    assert_eq!(refund["order_id"], r.order_id().as_str());
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let rx = Receiver::start(usize::MAX).await;
    let h = start_with(|c| {
        c.notify.initial_backoff = Duration::from_millis(5);
        c.notify.max_attempts = 3;
    })
    .await;
    h.call(
        "/payments",
        payment_body("g1", 100, cards::DECLINE_INVALID_CARD, false, Some(&rx.url)),
    )
    .await;
    assert!(
        h.sandbox
            .wait_until(WAIT, |s| s.notifications_sent()[0].outcome
                == DeliveryOutcome::GaveUp)
            .await
    );
    assert_eq!(rx.all().len(), 3);
    assert_eq!(rx.all()[0].json()["notify_type"], "PAYMENT.FAILURE");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn duplicate_drop_and_reorder_faults() {
    // Duplicate everything.
    let rx = Receiver::start(0).await;
    let h = start_with(|c| c.faults.notify_duplicate = 1.0).await;
    h.call(
        "/payments",
        payment_body("f1", 100, cards::VISA_SUCCESS, false, Some(&rx.url)),
    )
    .await;
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(h.sandbox.notifications_sent()[1].duplicate_of, Some(1));
    h.sandbox.shutdown().await;

    // Drop everything: nothing arrives, recorded as dropped.
    let rx = Receiver::start(0).await;
    let h = start_with(|c| c.faults.notify_drop = 1.0).await;
    h.call(
        "/payments",
        payment_body("f2", 100, cards::VISA_SUCCESS, false, Some(&rx.url)),
    )
    .await;
    let sent = h.sandbox.notifications_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].outcome, DeliveryOutcome::Dropped);
    assert!(rx.all().is_empty());
    h.sandbox.shutdown().await;

    // Reorder: the AUTHORIZATION is held and arrives after the SUCCESS.
    let rx = Receiver::start(0).await;
    let h = start_with(|c| {
        c.faults.notify_reorder = 1.0;
        c.faults.reorder_hold = Duration::from_secs(30);
    })
    .await;
    let id = h.pay_with_notify("f3", &rx.url).await;
    h.call("/payments/capture", json!({"order_id": id})).await;
    let got = rx.wait_for(2, WAIT).await;
    let kinds: Vec<String> = got
        .iter()
        .map(|g| g.json()["notify_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["PAYMENT.SUCCESS", "PAYMENT.AUTHORIZATION"]);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn seeded_faults_are_deterministic() {
    async fn pattern(seed: u64) -> Vec<(bool, bool)> {
        let rx = Receiver::start(0).await;
        let h = start_with(|c| {
            c.faults.seed = seed;
            c.faults.notify_drop = 0.3;
            c.faults.notify_duplicate = 0.3;
        })
        .await;
        for i in 0..12 {
            h.call(
                "/payments",
                payment_body(
                    &format!("s{i}"),
                    100,
                    cards::VISA_SUCCESS,
                    false,
                    Some(&rx.url),
                ),
            )
            .await;
        }
        let p = h
            .sandbox
            .notifications_sent()
            .iter()
            .map(|r| {
                (
                    r.outcome == DeliveryOutcome::Dropped,
                    r.duplicate_of.is_some(),
                )
            })
            .collect();
        h.sandbox.shutdown().await;
        p
    }
    let a = pattern(42).await;
    let b = pattern(42).await;
    assert_eq!(a, b);
    assert!(
        a.iter().any(|x| x.0) && a.iter().any(|x| x.1),
        "seed 42 should drop and duplicate some: {a:?}"
    );
    assert_ne!(a, pattern(43).await);
}

#[tokio::test]
async fn three_ds_challenge_complete_fail_and_expire() {
    let rx = Receiver::start(0).await;
    let h = start().await;
    let r = h
        .call(
            "/payments",
            payment_body("c1", 100, cards::CHALLENGE_3DS, false, Some(&rx.url)),
        )
        .await;
    assert_eq!(r.status_text(), "PROCESSING");
    let url = r.data()["authentication_result"]["authentication_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.ends_with(&format!("/sandbox/3ds/{}", r.order_id())));
    assert!(
        h.sandbox.notifications_sent().is_empty(),
        "PROCESSING is not notified"
    );
    let page = h.http.get(&url).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("3-D Secure"));
    let done = h
        .http
        .post(format!("{url}?result=success"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let q = h
        .call("/payments/query", json!({"order_id": r.order_id()}))
        .await;
    assert_eq!(q.status_text(), "SUCCESS");
    assert!(q.data().get("authentication_result").is_none());
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["notify_type"], "PAYMENT.SUCCESS");
    // Completing twice is refused.
    let again = h
        .http
        .post(format!("{url}?result=success"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    // Magic amount 993 challenges any card; the hook fails it.
    let r = h.pay("c2", 1993, cards::VISA_SUCCESS, false).await;
    assert_eq!(r.status_text(), "PROCESSING");
    h.sandbox
        .complete_challenge(MID, &r.order_id(), false)
        .await
        .unwrap();
    let q = h
        .call("/payments/query", json!({"order_id": r.order_id()}))
        .await;
    assert_eq!(q.status_text(), "FAILURE");

    // Abandoned: expires to FAILURE.
    let r = h.pay("c3", 100, cards::CHALLENGE_3DS, false).await;
    assert_eq!(h.sandbox.expire_challenges(), 1);
    let q = h
        .call("/payments/query", json!({"order_id": r.order_id()}))
        .await;
    assert_eq!(q.status_text(), "FAILURE");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn slow_and_failing_answers_after_commit() {
    let h = start_with(|c| c.faults.slow_response = Duration::from_secs(3)).await;
    // 5xx after commit: the order exists and a retry with the same
    // trans_id returns it.
    let r = h.pay("e1", 1992, cards::VISA_SUCCESS, false).await;
    assert_eq!((r.status, r.ret_code()), (500, "999999"));
    let q = h.call("/payments/query", json!({"trans_id": "e1"})).await;
    assert_eq!(q.status_text(), "SUCCESS");
    let retry = h.pay("e1", 1992, cards::VISA_SUCCESS, false).await;
    assert_eq!(retry.ret_code(), "000000");

    // Capture 5xx after commit.
    let id = h
        .pay("e2", 5000, cards::VISA_SUCCESS, true)
        .await
        .order_id();
    let c = h
        .call("/payments/capture", json!({"order_id": id, "amount": 992}))
        .await;
    assert_eq!(c.status, 500);
    assert_eq!(
        h.sandbox.ledger().merchant(MID).unwrap().orders[&id].captured,
        992
    );

    // Slow answer: the client times out, the payment is committed anyway.
    let ts = now_ms();
    let mut b = payment_body("e3", 2991, cards::VISA_SUCCESS, false, None);
    b["merchant_id"] = json!(MID);
    b["timestamp"] = json!(ts);
    let bytes = serde_json::to_vec(&b).unwrap();
    let res = h
        .http
        .post(h.url("/payments"))
        .header("signature", h.merchant.sign(MID, ts, &bytes))
        .header("type", "RSA256")
        .header("version", "v1.2")
        .header("content-type", "application/json")
        .timeout(Duration::from_millis(300))
        .body(bytes)
        .send()
        .await;
    assert!(res.is_err_and(|e| e.is_timeout()));
    let q = h.call("/payments/query", json!({"trans_id": "e3"})).await;
    assert_eq!(q.status_text(), "SUCCESS");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn delayed_notifications_still_arrive_and_random_errors_follow_commit() {
    let rx = Receiver::start(0).await;
    let h = start_with(|c| {
        c.faults.notify_delay_probability = 1.0;
        c.faults.notify_delay = Duration::from_millis(50);
    })
    .await;
    h.call(
        "/payments",
        payment_body("dl1", 100, cards::VISA_SUCCESS, false, Some(&rx.url)),
    )
    .await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert!(h.sandbox.notifications_sent()[0].delayed);
    h.sandbox.shutdown().await;

    // error_after_commit = 1: a void answers 500 but the order is cancelled.
    let h2 = start_with(|c| c.faults.error_after_commit = 1.0).await;
    let r = h2.pay("v2", 100, cards::VISA_SUCCESS, true).await;
    assert_eq!((r.status, r.ret_code()), (500, "999999"));
    let q = h2.call("/payments/query", json!({"trans_id": "v2"})).await;
    assert_eq!(q.status_text(), "AUTHORIZED", "reads are not failed");
    let v = h2
        .call("/payments/void", json!({"order_id": q.order_id()}))
        .await;
    assert_eq!(v.status, 500);
    let q = h2.call("/payments/query", json!({"trans_id": "v2"})).await;
    assert_eq!(q.status_text(), "CANCELED");
    h2.sandbox.shutdown().await;
}

/// A checkout session paid on the hosted page whose notification is
/// dropped: Checkout Session Query is then the merchant's only source, so
/// it must report the transaction (endpoints.md §10: `order_id`, `status`,
/// amounts, payment method) — and report none before the shopper paid.
#[tokio::test]
async fn session_query_reports_a_payment_whose_notification_was_dropped() {
    use payorch_schemas::paykka::{CheckoutSessionQueryResponse, GatewayOrderStatus};

    let rx = Receiver::start(0).await;
    let h = start_with(|c| c.faults.notify_drop = 1.0).await;
    let s = h
        .call(
            "/session",
            json!({"payment_type": "PURCHASE", "trans_id": "s-drop", "amount": 2500,
                   "currency": "EUR", "session_mode": "HOSTED", "notify_url": rx.url,
                   "return_url": "https://m.example/r"}),
        )
        .await;
    let sid = s.data()["session_id"].as_str().unwrap().to_owned();
    let url = s.data()["session_url"].as_str().unwrap().to_owned();

    // Not paid yet: no transaction fields.
    let q = h
        .call("/session/query", json!({"trans_id": "s-drop"}))
        .await;
    assert_eq!(q.ret_code(), "000000");
    let unpaid: CheckoutSessionQueryResponse = serde_json::from_value(q.data().clone()).unwrap();
    assert_eq!((unpaid.order.status, unpaid.order.order_id), (None, None));

    let paid = h
        .http
        .post(format!("{url}?card={}", cards::VISA_SUCCESS))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let sent = h.sandbox.notifications_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].outcome, DeliveryOutcome::Dropped);
    assert!(rx.all().is_empty());

    let q = h
        .call("/session/query", json!({"trans_id": "s-drop"}))
        .await;
    assert_eq!(q.ret_code(), "000000");
    assert_eq!(q.data()["session_status"], "PAID");
    let r: CheckoutSessionQueryResponse = serde_json::from_value(q.data().clone()).unwrap();
    let o = &r.order;
    assert_eq!(o.status, Some(GatewayOrderStatus::Success));
    assert!(o.order_id.as_deref().is_some_and(|id| id.starts_with("GW")));
    assert_eq!(o.trans_id.as_deref(), Some("s-drop"));
    assert_eq!(o.session_id.as_deref(), Some(sid.as_str()));
    assert_eq!((o.amount, o.currency.as_deref()), (Some(2500), Some("EUR")));
    assert_eq!(
        o.payment
            .as_ref()
            .and_then(|p| p.payment_method.as_ref())
            .map(|m| m.as_str()),
        Some("BANKCARD")
    );
    assert_eq!(
        o.balances.as_ref().and_then(|b| b.captured_amount),
        Some(2500)
    );
    // The same transaction Transaction Query shows.
    let t = h
        .call("/payments/query", json!({"trans_id": "s-drop"}))
        .await;
    assert_eq!(t.data()["order_id"], q.data()["order_id"]);
    h.sandbox.shutdown().await;
}

/// `drop_session_notifications` drops the payment notification of that one
/// checkout session and no other: the other session's arrives and is
/// acknowledged.
#[tokio::test]
async fn targeted_drop_eats_only_that_sessions_notifications() {
    let rx = Receiver::start(0).await;
    let h = start().await;
    let mut sessions = Vec::new();
    for trans_id in ["s-target", "s-other"] {
        let s = h
            .call(
                "/session",
                json!({"payment_type": "PURCHASE", "trans_id": trans_id, "amount": 2500,
                       "currency": "EUR", "session_mode": "HOSTED", "notify_url": rx.url,
                       "return_url": "https://m.example/r"}),
            )
            .await;
        sessions.push((
            s.data()["session_id"].as_str().unwrap().to_owned(),
            s.data()["session_url"].as_str().unwrap().to_owned(),
        ));
    }
    h.sandbox.drop_session_notifications(&sessions[0].0);
    for (_, url) in &sessions {
        let paid = h
            .http
            .post(format!("{url}?card={}", cards::VISA_SUCCESS))
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status(), 200);
    }
    assert!(
        h.sandbox
            .wait_until(WAIT, |s| s
                .notifications_sent()
                .iter()
                .any(|n| n.outcome == DeliveryOutcome::Acknowledged))
            .await
    );
    let sent = h.sandbox.notifications_sent();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let of = |sid: &str| {
        sent.iter()
            .find(|n| n.body.contains(sid))
            .unwrap_or_else(|| panic!("no notification of {sid}: {sent:#?}"))
    };
    assert_eq!(of(&sessions[0].0).outcome, DeliveryOutcome::Dropped);
    assert_eq!(of(&sessions[0].0).attempts, 0);
    assert_eq!(of(&sessions[1].0).outcome, DeliveryOutcome::Acknowledged);
    let got = rx.all();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["trans_id"], "s-other");
    h.sandbox.shutdown().await;
}

/// A notify endpoint that answers nothing until `together` deliveries are
/// in flight at once (then acknowledges all of them), or answers 500 after
/// `patience`: with one delivery lane the first request would wait alone.
async fn rendezvous_receiver(
    together: usize,
    patience: Duration,
) -> (String, tokio::task::JoinHandle<()>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let arrived = Arc::new(AtomicUsize::new(0));
    let all_here = Arc::new(tokio::sync::Notify::new());
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move || {
            let (arrived, all_here) = (arrived.clone(), all_here.clone());
            async move {
                let waiting = all_here.notified();
                if arrived.fetch_add(1, Ordering::SeqCst) + 1 >= together {
                    all_here.notify_waiters();
                } else if tokio::time::timeout(patience, waiting).await.is_err() {
                    return (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "alone".to_owned(),
                    );
                }
                (
                    axum::http::StatusCode::OK,
                    r#"{"ret_code":"000000","ret_msg":"Success"}"#.to_owned(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/notify"), task)
}

#[tokio::test]
async fn different_payments_are_notified_in_parallel() {
    // Two payments whose trans ids fall in different lanes (the lane hash is
    // fixed, so this holds on every run): their first deliveries must be in
    // flight together, so each is acknowledged at its first attempt. With
    // `lanes = 1` the first waits alone, gets 500 and is retried.
    let (url, task) = rendezvous_receiver(2, Duration::from_secs(5)).await;
    let h = start_with(|c| {
        c.notify.lanes = 16;
        c.notify.initial_backoff = Duration::from_millis(10);
    })
    .await;
    for id in ["lane-a", "lane-b"] {
        h.call(
            "/payments",
            payment_body(id, 100, cards::VISA_SUCCESS, false, Some(&url)),
        )
        .await;
    }
    assert!(
        h.sandbox
            .wait_until(WAIT, |s| s.notifications_sent().len() == 2
                && s.notifications_sent()
                    .iter()
                    .all(|n| n.outcome == DeliveryOutcome::Acknowledged))
            .await
    );
    let attempts: Vec<u32> = h
        .sandbox
        .notifications_sent()
        .iter()
        .map(|n| n.attempts)
        .collect();
    assert_eq!(
        attempts,
        [1, 1],
        "both delivered at once, at the first attempt"
    );
    h.sandbox.shutdown().await;
    task.abort();
}
