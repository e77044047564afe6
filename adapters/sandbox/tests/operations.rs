//! Each v1.2 operation's happy path and the ledger rules, over real HTTP,
//! with every response signature verified against the platform key.

mod common;

use std::time::Duration;

use common::*;
use payorch_sandbox::{RefundMode, cards};
use serde_json::json;

#[tokio::test]
async fn automatic_capture_payment_succeeds_and_queries() {
    let h = start().await;
    let r = h.pay("t-auto", 1299, cards::VISA_SUCCESS, false).await;
    assert_eq!((r.status, r.ret_code()), (200, "000000"));
    assert_eq!(r.status_text(), "SUCCESS");
    let d = r.data();
    assert_eq!(d["error_code"], "0000");
    assert_eq!(d["card_info"]["card_brand"], "VISA");
    assert_eq!(d["card_info"]["bin"], "411111");
    assert_eq!(d["balances"]["captured_amount"], 1299);
    assert_eq!(d["balances"]["able_to_refund_amount"], 1299);
    assert_eq!(d["balances"]["able_to_capture_amount"], 0);
    let order_id = r.order_id();
    assert!(order_id.starts_with("GW"));

    let q = h
        .call("/payments/query", json!({"order_id": order_id}))
        .await;
    assert_eq!(q.status_text(), "SUCCESS");
    let q = h
        .call("/payments/query", json!({"trans_id": "t-auto"}))
        .await;
    assert_eq!(q.data()["order_id"], order_id.as_str());
    let missing = h.call("/payments/query", json!({"trans_id": "nope"})).await;
    assert_eq!(missing.ret_code(), "206024");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn manual_capture_partial_captures_then_final_releases_rest() {
    let h = start().await;
    let r = h.pay("t-man", 1000, cards::MASTERCARD_SUCCESS, true).await;
    assert_eq!(r.status_text(), "AUTHORIZED");
    assert_eq!(r.data()["balances"]["able_to_void_amount"], 1000);
    assert_eq!(r.data()["balances"]["able_to_refund_amount"], 0);
    let id = r.order_id();

    let c1 = h
        .call(
            "/payments/capture",
            json!({"order_id": id, "amount": 300, "currency": "EUR"}),
        )
        .await;
    assert_eq!(c1.ret_code(), "000000");
    assert_eq!(c1.status_text(), "SUCCESS");
    assert_eq!(c1.data()["balances"]["captured_amount"], 300);
    assert_eq!(c1.data()["balances"]["able_to_capture_amount"], 700);
    assert_eq!(c1.data()["balances"]["able_to_void_amount"], 0);

    let c2 = h
        .call("/payments/capture", json!({"order_id": id, "amount": 200}))
        .await;
    assert_eq!(c2.data()["balances"]["captured_amount"], 500);

    let over = h
        .call("/payments/capture", json!({"order_id": id, "amount": 501}))
        .await;
    assert_eq!((over.status, over.ret_code()), (400, "010000"));

    let last = h
        .call(
            "/payments/capture",
            json!({"order_id": id, "amount": 100, "final_capture": true}),
        )
        .await;
    let b = &last.data()["balances"];
    assert_eq!(b["captured_amount"], 600);
    assert_eq!(b["voided_amount"], 400);
    assert_eq!(b["able_to_capture_amount"], 0);
    let more = h.call("/payments/capture", json!({"order_id": id})).await;
    assert_eq!(more.ret_code(), "010000");

    let book = h.sandbox.ledger();
    let o = &book.merchant(MID).unwrap().orders[&id];
    assert_eq!((o.authorised, o.captured, o.voided), (1000, 600, 400));
    assert_eq!(o.captures, vec![300, 200, 100]);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn void_only_before_capture() {
    let h = start().await;
    let id = h
        .pay("t-void", 500, cards::VISA_SUCCESS, true)
        .await
        .order_id();
    let v = h
        .call(
            "/payments/void",
            json!({"order_id": id, "reason": "REQUESTED_BY_CUSTOMER"}),
        )
        .await;
    assert_eq!(v.status_text(), "CANCELED");
    assert_eq!(v.data()["balances"]["voided_amount"], 500);
    let again = h.call("/payments/void", json!({"order_id": id})).await;
    assert_eq!(again.ret_code(), "010000");

    let id2 = h
        .pay("t-void2", 500, cards::VISA_SUCCESS, true)
        .await
        .order_id();
    h.call("/payments/capture", json!({"order_id": id2, "amount": 100}))
        .await;
    let after = h.call("/payments/void", json!({"order_id": id2})).await;
    assert_eq!((after.status, after.ret_code()), (400, "010000"));
    assert_eq!(
        h.sandbox.ledger().merchant(MID).unwrap().orders[&id2].voided,
        0
    );

    let unknown = h.call("/payments/void", json!({"order_id": "GW404"})).await;
    assert_eq!(unknown.ret_code(), "206024");
    let unknown = h
        .call("/payments/capture", json!({"order_id": "GW404"}))
        .await;
    assert_eq!(unknown.ret_code(), "206024");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn refunds_are_async_bounded_and_idempotent() {
    let h = start_with(|c| {
        c.behaviour.refunds = RefundMode::Async { settle_after: None };
    })
    .await;
    let id = h
        .pay("t-ref", 1000, cards::VISA_SUCCESS, false)
        .await
        .order_id();
    let body = json!({"refund_trans_id": "r-1", "ori_order_id": id, "refund_amount": 400, "currency": "EUR"});
    let r = h.call("/refund", body.clone()).await;
    assert_eq!(r.ret_code(), "000000");
    assert_eq!(r.data()["status"], "REVIEWING");
    let rg = r.data()["refund_order_id"].as_str().unwrap().to_owned();
    assert!(rg.starts_with("RG"));

    // Same refund_trans_id again: the same refund, no second one.
    let again = h.call("/refund", body).await;
    assert_eq!(again.data()["refund_order_id"], rg.as_str());
    let other = h
        .call("/refund", json!({"refund_trans_id": "r-1", "ori_order_id": id, "refund_amount": 100, "currency": "EUR"}))
        .await;
    assert_eq!(other.ret_code(), "010000");

    // Pending refunds reserve their amount.
    let over = h
        .call("/refund", json!({"refund_trans_id": "r-2", "ori_order_id": id, "refund_amount": 601, "currency": "EUR"}))
        .await;
    assert_eq!((over.status, over.ret_code()), (400, "010000"));

    assert_eq!(h.sandbox.settle_refunds(), 1);
    let q = h
        .call("/refund/query", json!({"refund_trans_id": "r-1"}))
        .await;
    assert_eq!(q.data()["status"], "SUCCESS");
    let q = h
        .call("/refund/query", json!({"refund_order_id": rg}))
        .await;
    assert_eq!(q.data()["amount"], 400);
    let o = h.call("/payments/query", json!({"order_id": id})).await;
    assert_eq!(o.status_text(), "PARTIALLY_REFUNDED");
    assert_eq!(o.data()["balances"]["refunded_amount"], 400);

    h.call("/refund", json!({"refund_trans_id": "r-3", "ori_order_id": id, "refund_amount": 600, "currency": "EUR"}))
        .await;
    h.sandbox.settle_refunds();
    let o = h.call("/payments/query", json!({"order_id": id})).await;
    assert_eq!(o.status_text(), "REFUNDED");
    assert_eq!(o.data()["balances"]["able_to_refund_amount"], 0);

    let none = h
        .call("/refund/query", json!({"refund_trans_id": "zzz"}))
        .await;
    assert_eq!(none.ret_code(), "206024");
    let no_order = h
        .call("/refund", json!({"refund_trans_id": "r-9", "ori_order_id": "GW1", "refund_amount": 1, "currency": "EUR"}))
        .await;
    assert_eq!(no_order.ret_code(), "206024");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn refund_of_authorised_only_order_is_rejected_and_failure_amount_fails() {
    let h = start_with(|c| c.behaviour.refunds = RefundMode::Immediate).await;
    let id = h
        .pay("t-auth", 1000, cards::VISA_SUCCESS, true)
        .await
        .order_id();
    let r = h
        .call("/refund", json!({"refund_trans_id": "ra", "ori_order_id": id, "refund_amount": 1, "currency": "EUR"}))
        .await;
    assert_eq!(r.ret_code(), "010000", "nothing captured yet");

    let id = h
        .pay("t-cap", 5000, cards::VISA_SUCCESS, false)
        .await
        .order_id();
    let ok = h
        .call("/refund", json!({"refund_trans_id": "rb", "ori_order_id": id, "refund_amount": 100, "currency": "EUR"}))
        .await;
    assert_eq!(ok.data()["status"], "SUCCESS");
    let fail = h
        .call("/refund", json!({"refund_trans_id": "rc", "ori_order_id": id, "refund_amount": 995, "currency": "EUR"}))
        .await;
    assert_eq!(fail.data()["status"], "FAILURE");
    let o = h.call("/payments/query", json!({"order_id": id})).await;
    assert_eq!(o.data()["balances"]["refunded_amount"], 100);
    assert_eq!(o.data()["balances"]["able_to_refund_amount"], 4900);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn duplicate_trans_id_returns_existing_or_rejects_other_amount() {
    let h = start().await;
    let first = h.pay("t-dup", 700, cards::VISA_SUCCESS, false).await;
    let again = h.pay("t-dup", 700, cards::VISA_SUCCESS, false).await;
    assert_eq!(again.order_id(), first.order_id());
    let other = h.pay("t-dup", 701, cards::VISA_SUCCESS, false).await;
    assert_eq!((other.status, other.ret_code()), (400, "010000"));
    assert_eq!(h.sandbox.ledger().merchant(MID).unwrap().orders.len(), 1);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn declines_by_test_card() {
    let h = start().await;
    let r = h.pay("d1", 100, cards::DECLINE_INVALID_CARD, false).await;
    assert_eq!((r.ret_code(), r.status_text()), ("000000", "FAILURE"));
    assert_eq!(r.data()["error_code"], "2099");
    assert_eq!(r.data()["error_description"], "Invalid Card");
    let r = h.pay("d2", 100, cards::NOT_SUPPORTED, false).await;
    assert_eq!(r.ret_code(), "206022");
    assert_eq!(r.data()["error_code"], "2006");
    let r = h.pay("d3", 100, cards::DECLINE_NO_ROUTE, false).await;
    assert_eq!(r.data()["error_code"], "1016");
    // Encrypted cards: enc:<PAN>.
    let mut b = payment_body("d4", 100, cards::VISA_SUCCESS, false, None);
    b["payment"] = json!({"payment_method": "BANKCARD", "encrypted_card_no": "enc:4000000000000002",
                          "encrypted_exp_month": "enc:07", "encrypted_exp_year": "enc:2031"});
    let r = h.call("/payments", b.clone()).await;
    assert_eq!(r.data()["error_code"], "2099");
    b["trans_id"] = json!("d5");
    b["payment"]["encrypted_card_no"] = json!("enc:expired");
    assert_eq!(h.call("/payments", b.clone()).await.ret_code(), "206021");
    b["payment"]["encrypted_card_no"] = json!("garbage");
    assert_eq!(h.call("/payments", b).await.ret_code(), "206020");
    // Wallets.
    let mut w = payment_body("w1", 100, cards::VISA_SUCCESS, false, None);
    w["payment"] = json!({"payment_method": "GOOGLE_PAY", "token_data": "success"});
    assert_eq!(
        h.call("/payments", w.clone()).await.status_text(),
        "SUCCESS"
    );
    w["trans_id"] = json!("w2");
    w["payment"] = json!({"payment_method": "APPLE_PAY", "token_data": "decline"});
    assert_eq!(h.call("/payments", w).await.status_text(), "FAILURE");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn tokens_and_recurring_agreements() {
    let h = start().await;
    let mut first = payment_body("rec-1", 999, cards::VISA_SUCCESS, false, None);
    first["payment_type"] = json!("RECURRING");
    first["mit"] = json!(false);
    first["payment"]["store_payment_method"] = json!(true);
    first["payment"]["token_usage"] = json!("SUBSCRIPTION");
    first["payment"]["shopper_reference"] = json!("cust-1");
    let r = h.call("/payments", first).await;
    assert_eq!(r.status_text(), "SUCCESS");
    let token = r.data()["token"].as_str().unwrap().to_owned();
    let agreement = r.data()["recurring_agreement_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(token.starts_with("TK"));

    let tq = h
        .call(
            "/payments/token/query",
            json!({"shopper_reference": "cust-1"}),
        )
        .await;
    assert_eq!(tq.data()["tokens"][0]["token"], token.as_str());
    assert_eq!(tq.data()["tokens"][0]["card_info"]["last4"], "1111");
    let other = h
        .call(
            "/payments/token/query",
            json!({"shopper_reference": "cust-2"}),
        )
        .await;
    assert_eq!(other.data()["tokens"].as_array().unwrap().len(), 0);

    let mit = |trans: &str, agreement: &str| {
        json!({"payment_type": "RECURRING", "mit": true, "trans_id": trans, "amount": 999, "currency": "EUR",
               "recurring_agreement_id": agreement,
               "payment": {"payment_method": "BANKCARD", "token": token, "token_usage": "SUBSCRIPTION", "shopper_reference": "cust-1"}})
    };
    assert_eq!(
        h.call("/payments", mit("rec-2", &agreement))
            .await
            .status_text(),
        "SUCCESS"
    );
    let unknown = h.call("/payments", mit("rec-3", "RA0")).await;
    assert_eq!(unknown.data()["error_code"], "2015");

    let c = h
        .call(
            "/payments/recurring/cancel",
            json!({"recurring_agreement_id": agreement}),
        )
        .await;
    assert_eq!(c.ret_code(), "000000");
    assert!(c.json.get("data").is_none());
    let cancelled = h.call("/payments", mit("rec-4", &agreement)).await;
    assert_eq!(cancelled.data()["error_code"], "2016");
    assert_eq!(
        h.call(
            "/payments/recurring/cancel",
            json!({"recurring_agreement_id": "RA0"})
        )
        .await
        .ret_code(),
        "2015"
    );

    // Card on file with the token, then remove it.
    let cof = |trans: &str| {
        json!({"payment_type": "PURCHASE", "trans_id": trans, "amount": 50, "currency": "EUR",
               "return_url": "https://m.example/r",
               "payment": {"payment_method": "BANKCARD", "token": token, "token_usage": "CARD_ON_FILE", "shopper_reference": "cust-1"}})
    };
    assert_eq!(
        h.call("/payments", cof("cof-1")).await.status_text(),
        "SUCCESS"
    );
    let rm = h
        .call(
            "/payments/token/remove",
            json!({"token": token, "shopper_reference": "cust-1"}),
        )
        .await;
    assert_eq!(rm.ret_code(), "000000");
    let after = h.call("/payments", cof("cof-2")).await;
    assert_eq!(after.status_text(), "FAILURE");
    let rm = h
        .call(
            "/payments/token/remove",
            json!({"token": token, "shopper_reference": "cust-1"}),
        )
        .await;
    assert_eq!(rm.ret_code(), "010000");
    let book = h.sandbox.ledger();
    let m = book.merchant(MID).unwrap();
    assert!(m.tokens.is_empty());
    assert!(!m.agreements[&agreement].active);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn checkout_session_create_query_pay() {
    let h = start().await;
    let body = json!({"payment_type": "PURCHASE", "trans_id": "s-1", "amount": 2500, "currency": "EUR",
                      "session_mode": "HOSTED", "return_url": "https://m.example/r"});
    let s = h.call("/session", body.clone()).await;
    let sid = s.data()["session_id"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("CS"));
    let url = s.data()["session_url"].as_str().unwrap().to_owned();
    assert!(url.ends_with(&sid));
    assert_eq!(
        h.call("/session", body).await.data()["session_id"],
        sid.as_str()
    );

    let q = h.call("/session/query", json!({"session_id": sid})).await;
    assert_eq!(q.data()["session_status"], "ACTIVE");
    let none = h.call("/payments/query", json!({"session_id": sid})).await;
    assert_eq!(none.ret_code(), "206024");

    // The shopper pays on the hosted page with one HTTP call.
    let paid = h
        .http
        .post(format!("{url}?card={}", cards::VISA_SUCCESS))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let q = h.call("/session/query", json!({"trans_id": "s-1"})).await;
    assert_eq!(q.data()["session_status"], "PAID");
    assert_eq!(q.data()["status"], "SUCCESS");
    let p = h.call("/payments/query", json!({"session_id": sid})).await;
    assert_eq!(p.data()["session_id"], sid.as_str());
    let missing = h.call("/session/query", json!({"session_id": "CS0"})).await;
    assert_eq!(missing.ret_code(), "206011");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn apple_pay_session_returns_merchant_session_string() {
    let h = start().await;
    let r = h
        .call(
            "/payments/apple-pay/create-session",
            json!({"domain_name": "shop.example", "display_name": "Shop"}),
        )
        .await;
    assert_eq!(r.ret_code(), "000000");
    let s: serde_json::Value = serde_json::from_str(r.data().as_str().unwrap()).unwrap();
    assert_eq!(s["domainName"], "shop.example");
    let bad = h
        .call(
            "/payments/apple-pay/create-session",
            json!({"domain_name": "https://x"}),
        )
        .await;
    assert_eq!(bad.ret_code(), "010000");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn async_processing_cards_settle() {
    let h = start_with(|c| c.behaviour.async_settle_after = None).await;
    let ok = h.pay("a1", 100, cards::ASYNC_SUCCESS, false).await;
    assert_eq!(ok.status_text(), "PROCESSING");
    let ko = h.pay("a2", 100, cards::ASYNC_DECLINE, false).await;
    assert_eq!(ko.status_text(), "PROCESSING");
    assert_eq!(h.sandbox.settle_pending(), 2);
    assert_eq!(
        h.call("/payments/query", json!({"trans_id": "a1"}))
            .await
            .status_text(),
        "SUCCESS"
    );
    assert_eq!(
        h.call("/payments/query", json!({"trans_id": "a2"}))
            .await
            .status_text(),
        "FAILURE"
    );

    // With a settle delay the background task does it.
    let h2 = start_with(|c| c.behaviour.async_settle_after = Some(Duration::from_millis(20))).await;
    h2.pay("a3", 100, cards::ASYNC_SUCCESS, false).await;
    let settled = h2
        .sandbox
        .wait_until(Duration::from_secs(10), |s| {
            s.ledger()
                .merchant(MID)
                .unwrap()
                .order_by_trans_id("a3")
                .unwrap()
                .status
                .as_str()
                == "SUCCESS"
        })
        .await;
    assert!(settled);
    h.sandbox.shutdown().await;
    h2.sandbox.shutdown().await;
}
