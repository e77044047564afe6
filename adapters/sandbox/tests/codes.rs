//! The codes of codes.md that a test card or amount triggers (issue 17,
//! point 7), over HTTP: each refusing card's `ret_code`, the 2017 decline,
//! the interim `AUTHORIZED` of an automatic capture, and a failed refund's
//! code.

mod common;

use common::*;
use payorch_sandbox::{RefundMode, cards};
use serde_json::json;

/// (PAN, ret_code) pairs, kept here independently of the crate's table so
/// a changed card or code fails this test.
const REFUSED: &[(&str, &str)] = &[
    ("4002008000000003", "2008"),
    ("4002009000000001", "2009"),
    ("4002010000000009", "2010"),
    ("4002011000000007", "2011"),
    ("4002012000000005", "2012"),
    ("4002013000000003", "2013"),
    ("4002014000000001", "2014"),
    ("4210002000000004", "210002"),
    ("4210003000000002", "210003"),
    ("4206017000000008", "206017"),
];

#[tokio::test]
async fn each_refusing_card_answers_its_code_and_books_nothing() {
    let h = start().await;
    for (i, (pan, code)) in REFUSED.iter().enumerate() {
        let r = h.pay(&format!("code-{i}"), 1_000, pan, false).await;
        assert_eq!((r.status, r.ret_code()), (400, *code), "card {pan}");
        assert!(!r.json["ret_msg"].as_str().unwrap_or_default().is_empty());
    }
    // Encrypted card data with the same PAN: the same answer.
    let mut body = payment_body("code-enc", 1_000, "4002008000000003", false, None);
    body["payment"] = json!({"payment_method": "BANKCARD",
        "encrypted_card_no": "enc:4002008000000003", "encrypted_exp_month": "x",
        "encrypted_exp_year": "y"});
    assert_eq!(h.call("/payments", body).await.ret_code(), "2008");
    assert_eq!(h.sandbox.ledger().record_count(), 0, "nothing booked");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn the_2017_card_declines_with_2017() {
    let h = start().await;
    let r = h.pay("code-2017", 1_000, "4002017000000004", false).await;
    assert_eq!((r.ret_code(), r.status_text()), ("000000", "FAILURE"));
    assert_eq!(r.data()["error_code"], "2017");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn an_automatic_capture_shows_authorized_first() {
    let h = start_with(|c| c.behaviour.async_settle_after = None).await;
    let r = h.pay("code-auto", 1_000, "4000000000000077", false).await;
    assert_eq!(r.status_text(), "AUTHORIZED");
    assert_eq!(r.data()["capture_method"], "AUTOMATIC");
    assert_eq!(r.data()["balances"]["captured_amount"], 0);
    assert_eq!(h.sandbox.settle_pending(), 1);
    let q = h
        .call("/payments/query", json!({"order_id": r.order_id()}))
        .await;
    assert_eq!(q.status_text(), "SUCCESS");
    assert_eq!(q.data()["balances"]["captured_amount"], 1_000);
    let o = &h.sandbox.ledger().merchants[MID].orders[&r.order_id()];
    assert_eq!(o.captures, vec![1_000]);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn a_failed_refund_carries_a_code_of_codes_md() {
    let h = start_with(|c| c.behaviour.refunds = RefundMode::Immediate).await;
    let id = h
        .pay("code-rf", 5_000, cards::VISA_SUCCESS, false)
        .await
        .order_id();
    let r = h
        .call(
            "/refund",
            json!({"refund_trans_id": "code-rf-1", "ori_order_id": id,
                   "refund_amount": 995, "currency": "EUR"}),
        )
        .await;
    assert_eq!(r.status_text(), "FAILURE");
    assert_eq!(r.data()["error_code"], "1006");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn a_5xx_before_commit_books_nothing() {
    let h = start_with(|c| c.faults.error_before_commit = 1.0).await;
    let r = h.pay("fault-5xx", 1_000, cards::VISA_SUCCESS, false).await;
    assert_eq!((r.status, r.ret_code()), (500, "999999"));
    assert_eq!(h.sandbox.ledger().record_count(), 0);
    // Reads are not affected.
    let q = h
        .call("/payments/query", json!({"trans_id": "fault-5xx"}))
        .await;
    assert_eq!(q.ret_code(), "206024");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn the_random_decline_fault_declines_an_approving_card() {
    let h = start_with(|c| c.faults.decline_probability = 1.0).await;
    let r = h
        .pay("fault-decline", 1_000, cards::VISA_SUCCESS, false)
        .await;
    assert_eq!((r.ret_code(), r.status_text()), ("000000", "FAILURE"));
    assert_eq!(r.data()["error_code"], "2099");
    h.sandbox.shutdown().await;
}

/// The late-and-hidden fault (`...994`) also holds the notification back:
/// a merchant must not learn of the capture before its late answer.
#[tokio::test]
async fn a_late_capture_is_not_notified_while_hidden() {
    const LATE: std::time::Duration = std::time::Duration::from_secs(3);
    const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
    let h = start_with(|c| c.faults.late_answer = LATE).await;
    let rx = Receiver::start(0).await;
    let id = h
        .call(
            "/payments",
            payment_body(
                "late-notify",
                5_000,
                cards::VISA_SUCCESS,
                true,
                Some(&rx.url),
            ),
        )
        .await
        .order_id();
    assert_eq!(rx.wait_for(1, WAIT).await.len(), 1, "authorisation notice");
    let capture = h.call("/payments/capture", json!({"order_id": id, "amount": 994}));
    let check = async {
        // Once the capture is committed (but not yet answered) ...
        let committed = h
            .sandbox
            .wait_until(WAIT, |s| {
                s.ledger().merchants[MID].orders[&id].captured == 994
            })
            .await;
        assert!(committed, "the capture never committed");
        // ... its notification is queued but not delivered.
        let records = h.sandbox.notifications_sent();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].attempts, 0, "notified while hidden");
        assert_eq!(rx.all().len(), 1);
    };
    let (r, ()) = tokio::join!(capture, check);
    assert_eq!(r.status_text(), "SUCCESS");
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "the capture's notification never came");
    assert_eq!(got[1].json()["notify_type"], "PAYMENT.SUCCESS");
    h.sandbox.shutdown().await;
}
