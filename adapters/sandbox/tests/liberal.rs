//! Read liberally (issue 17, point 6): requests shaped like a real PayKKa
//! v1.2 PHP shop plugin's, sent over HTTP: pretty-printed JSON, integer
//! `merchant_id` / `trans_id` / `goods[].id` / `customer.id`, amounts as
//! strings, explicit nulls, a body `version`, an `expire_time` without
//! offset (PayKKa local time). And the shopper pages end with the redirect
//! to `return_url`.

mod common;

use common::*;
use payorch_sandbox::cards;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::{format_description, offset};

/// Signs `body` as it is (pretty-printed bytes included) and posts it with
/// the version in the body only, like the PHP client.
async fn post_php_style(h: &Harness, path: &str, body: &Value, ts: i64) -> Resp {
    let bytes = serde_json::to_vec_pretty(body).unwrap();
    let sig = h.merchant.sign(MID, ts, &bytes);
    let resp = h
        .raw(
            path,
            bytes,
            &[("signature", sig), ("type", "RSA256".into())],
        )
        .await;
    h.assert_response_signed(&resp, MID, ts);
    resp
}

/// `YYYY-MM-DD HH:MM:SS` in Hong Kong time, `hours` from now.
fn hk_local(hours: i64) -> String {
    let t = OffsetDateTime::now_utc().to_offset(offset!(+8)) + time::Duration::hours(hours);
    t.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .unwrap()
}

fn php_initiate(ts: i64, trans_id: u64, card: &str, expire_time: &str) -> Value {
    json!({
        "version": "v1.2",
        "merchant_id": MID.parse::<u64>().unwrap(),
        "timestamp": ts,
        "payment_type": "PURCHASE",
        "authorisation_type": null,
        "capture_method": "MANUAL",
        "trans_id": trans_id,
        "currency": "EUR",
        "amount": "1299",
        "notify_url": null,
        "return_url": "https://shop.example/return",
        "expire_time": expire_time,
        "mit": null,
        "payment": {
            "payment_method": "BANKCARD",
            "store_payment_method": null,
            "card_no": card,
            "exp_month": "07",
            "exp_year": "2031",
            "cvv": "123",
            "holder_name": null
        },
        "authentication": null,
        "browser": {"user_agent": "Mozilla/5.0", "java_enabled": false, "screen_height": null},
        "goods": [
            {"id": 37, "name": "Hat", "price": "1299", "quantity": 1, "description": null},
            {"id": "38", "name": "Scarf", "price": 0, "quantity": "1"}
        ],
        "bill": null,
        "shipping": null,
        "customer": {"id": 12, "email": "a@shop.example", "past_transactions": "3", "gender": null},
        "plugin_version": "1.4.2"
    })
}

#[tokio::test]
async fn a_php_clients_initiate_is_accepted_and_booked() {
    let h = start().await;
    let ts = now_ms();
    let r = post_php_style(
        &h,
        "/payments",
        &php_initiate(ts, 9_000_001, cards::VISA_SUCCESS, &hk_local(24)),
        ts,
    )
    .await;
    assert_eq!(
        (r.status, r.ret_code()),
        (200, "000000"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.status_text(), "AUTHORIZED");
    // What we write stays strict: ids as strings.
    assert_eq!(r.data()["trans_id"], "9000001");
    assert_eq!(r.data()["merchant_id"], MID);
    let book = h.sandbox.ledger();
    let o = &book.merchant(MID).unwrap().orders[&r.order_id()];
    assert_eq!((o.trans_id.as_str(), o.amount), ("9000001", 1299));
    // A query by the integer trans_id finds it.
    let ts = now_ms();
    let q = post_php_style(
        &h,
        "/payments/query",
        &json!({"version": "v1.2", "merchant_id": MID.parse::<u64>().unwrap(),
                "timestamp": ts, "trans_id": 9_000_001, "order_id": null}),
        ts,
    )
    .await;
    assert_eq!(q.order_id(), r.order_id());
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn an_offset_less_expire_time_is_paykka_local_time() {
    let h = start().await;
    // 3DS challenge whose expire_time is one hour ago in Hong Kong time: if
    // it were read as UTC it would still be valid for 7 hours.
    let ts = now_ms();
    let r = post_php_style(
        &h,
        "/payments",
        &php_initiate(ts, 9_000_002, cards::CHALLENGE_3DS, &hk_local(-1)),
        ts,
    )
    .await;
    assert_eq!(r.ret_code(), "000000");
    assert_eq!(r.status_text(), "PROCESSING");
    let id = r.order_id();
    let expired = h
        .sandbox
        .wait_until(std::time::Duration::from_secs(5), |s| {
            s.ledger().merchant(MID).unwrap().orders[&id]
                .status
                .as_str()
                == "FAILURE"
        })
        .await;
    assert!(expired, "the challenge did not expire at the +08:00 time");

    // One expiring in an hour (local) stays pending.
    let ts = now_ms();
    let r = post_php_style(
        &h,
        "/payments",
        &php_initiate(ts, 9_000_003, cards::CHALLENGE_3DS, &hk_local(1)),
        ts,
    )
    .await;
    let id = r.order_id();
    h.sandbox.settle_pending();
    assert_eq!(
        h.sandbox.ledger().merchant(MID).unwrap().orders[&id]
            .status
            .as_str(),
        "PROCESSING"
    );
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn the_3ds_and_hosted_pages_end_with_the_redirect_to_return_url() {
    let h = start().await;
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // 3DS page, as a browser: 303 to return_url.
    let ts = now_ms();
    let r = post_php_style(
        &h,
        "/payments",
        &php_initiate(ts, 9_000_004, cards::CHALLENGE_3DS, &hk_local(1)),
        ts,
    )
    .await;
    let url = r.data()["authentication_result"]["authentication_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = no_follow
        .post(format!("{url}?result=success"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(
        done.headers()["location"].to_str().unwrap(),
        "https://shop.example/return"
    );
    assert_eq!(
        h.call("/payments/query", json!({"order_id": r.order_id()}))
            .await
            .status_text(),
        "AUTHORIZED"
    );

    // Hosted checkout page, as a script: a 200 page redirecting there.
    let s = h
        .call(
            "/session",
            json!({"trans_id": "php-s-1", "amount": 500, "currency": "EUR",
                   "payment_type": "PURCHASE", "session_mode": "HOSTED",
                   "return_url": "https://shop.example/back?o=1"}),
        )
        .await;
    let page = s.data()["session_url"].as_str().unwrap().to_owned();
    let paid = no_follow
        .post(format!("{page}?card={}", cards::VISA_SUCCESS))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    assert_eq!(
        paid.headers()["refresh"].to_str().unwrap(),
        "0;url=https://shop.example/back?o=1"
    );
    let html = paid.text().await.unwrap();
    assert!(html.contains("url=https://shop.example/back?o=1"), "{html}");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn the_notification_delay_is_a_setting() {
    const DELAY: std::time::Duration = std::time::Duration::from_millis(700);
    let h = start_with(|c| c.notify.delay = DELAY).await;
    let rx = Receiver::start(0).await;
    let sent_at = std::time::Instant::now();
    h.pay_with_notify("delay-1", &rx.url).await;
    // Queued at once, but not delivered before the delay has passed.
    assert_eq!(h.sandbox.notifications_sent().len(), 1);
    let got = rx.wait_for(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "the delayed notification never came");
    assert!(
        sent_at.elapsed() >= DELAY,
        "delivered after {:?}, before the {DELAY:?} delay",
        sent_at.elapsed()
    );
    h.sandbox.shutdown().await;
}
