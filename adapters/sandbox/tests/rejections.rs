//! Every authentication / request rejection answers the documented code and
//! leaves the ledger unchanged.

mod common;

use common::*;
use payorch_sandbox::cards;
use serde_json::json;

fn body(trans_id: &str, ts: i64) -> Vec<u8> {
    let mut b = payment_body(trans_id, 100, cards::VISA_SUCCESS, false, None);
    b["merchant_id"] = json!(MID);
    b["timestamp"] = json!(ts);
    serde_json::to_vec(&b).unwrap()
}

fn headers(sig: String) -> Vec<(&'static str, String)> {
    vec![
        ("signature", sig),
        ("type", "RSA256".into()),
        ("version", "v1.2".into()),
    ]
}

async fn assert_rejected(h: &Harness, resp: Resp, status: u16, code: &str) {
    assert_eq!(
        (resp.status, resp.ret_code()),
        (status, code),
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
    assert!(resp.json.get("data").is_none());
    assert_eq!(
        h.sandbox.ledger().record_count(),
        0,
        "ledger must not change"
    );
    assert!(h.sandbox.notifications_sent().is_empty());
}

#[tokio::test]
async fn signature_and_header_rejections_change_nothing() {
    let h = start().await;
    let ts = now_ms();
    let b = body("t1", ts);
    let good = h.merchant.sign(MID, ts, &b);

    // Missing signature.
    let r = h
        .raw(
            "/payments",
            b.clone(),
            &[("type", "RSA256".into()), ("version", "v1.2".into())],
        )
        .await;
    // Error answers are signed with the request's merchant_id/timestamp.
    h.assert_response_signed(&r, MID, ts);
    assert_rejected(&h, r, 401, "206002").await;

    // Wrong signature (another key), garbage signature, body changed after signing.
    let other = TestMerchant::new(MID);
    let r = h
        .raw("/payments", b.clone(), &headers(other.sign(MID, ts, &b)))
        .await;
    assert_rejected(&h, r, 401, "206003").await;
    let r = h
        .raw("/payments", b.clone(), &headers("%%%not-base64".into()))
        .await;
    assert_rejected(&h, r, 401, "206003").await;
    let tampered = body("t2", ts);
    let r = h.raw("/payments", tampered, &headers(good.clone())).await;
    assert_rejected(&h, r, 401, "206003").await;
    let mut wrong_type = headers(good.clone());
    wrong_type[1].1 = "RSA512".into();
    let r = h.raw("/payments", b.clone(), &wrong_type).await;
    assert_rejected(&h, r, 401, "206003").await;

    // Wrong or missing version.
    let mut v = headers(good.clone());
    v[2].1 = "v3".into();
    let r = h.raw("/payments", b.clone(), &v).await;
    assert_rejected(&h, r, 401, "206001").await;
    let r = h
        .raw("/payments", b.clone(), &headers(good.clone())[..2])
        .await;
    assert_rejected(&h, r, 401, "206001").await;

    // Stale timestamp (6 minutes old), correctly signed.
    let old = ts - 360_000;
    let stale = body("t3", old);
    let r = h
        .raw(
            "/payments",
            stale.clone(),
            &headers(h.merchant.sign(MID, old, &stale)),
        )
        .await;
    assert_rejected(&h, r, 401, "206004").await;

    // Absurd timestamps must not overflow the window check.
    for ts_bad in [i64::MIN, i64::MAX] {
        let b = body("t5", ts_bad);
        let r = h
            .raw(
                "/payments",
                b.clone(),
                &headers(h.merchant.sign(MID, ts_bad, &b)),
            )
            .await;
        assert_rejected(&h, r, 401, "206004").await;
    }

    // Unknown merchant.
    let mut u = payment_body("t4", 100, cards::VISA_SUCCESS, false, None);
    u["merchant_id"] = json!("99999999999999");
    u["timestamp"] = json!(ts);
    let u = serde_json::to_vec(&u).unwrap();
    let r = h
        .raw(
            "/payments",
            u.clone(),
            &headers(h.merchant.sign("99999999999999", ts, &u)),
        )
        .await;
    assert_rejected(&h, r, 401, "206005").await;

    // The good request still works, with a raw (not percent-encoded) signature too.
    let raw_sig = h.merchant.sign_b64(MID, ts, &b);
    let ok = h.raw("/payments", b, &headers(raw_sig)).await;
    assert_eq!(ok.ret_code(), "000000");
    assert_eq!(h.sandbox.ledger().record_count(), 1);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn malformed_and_invalid_bodies_change_nothing() {
    let h = start().await;
    let ts = now_ms();
    let junk = b"{not json".to_vec();
    let r = h
        .raw(
            "/payments",
            junk.clone(),
            &headers(h.merchant.sign(MID, ts, &junk)),
        )
        .await;
    assert!(r.signature.is_none(), "nothing to sign with");
    assert_rejected(&h, r, 400, "010000").await;

    // Signed correctly but fails validation (Luhn).
    let mut b = payment_body("t1", 100, "4111111111111112", false, None);
    b["merchant_id"] = json!(MID);
    b["timestamp"] = json!(ts);
    let b = serde_json::to_vec(&b).unwrap();
    let r = h
        .raw(
            "/payments",
            b.clone(),
            &headers(h.merchant.sign(MID, ts, &b)),
        )
        .await;
    assert!(
        r.json["ret_msg"]
            .as_str()
            .unwrap()
            .contains("payment.card_no")
    );
    assert_rejected(&h, r, 400, "010000").await;

    // Missing required field (amount), via the normal client.
    let r = h
        .call(
            "/payments",
            json!({"payment_type": "PURCHASE", "trans_id": "x", "currency": "EUR",
                                       "payment": {"payment_method": "BANKCARD"}}),
        )
        .await;
    assert_rejected(&h, r, 400, "010000").await;
    let r = h
        .call(
            "/payments/capture",
            json!({"order_id": "GW1", "amount": -5}),
        )
        .await;
    assert_rejected(&h, r, 400, "010000").await;

    // Oversized body: 413 with an envelope.
    let big = vec![b' '; 70 * 1024];
    let r = h.raw("/payments", big, &headers("x".into())).await;
    assert_rejected(&h, r, 413, "010000").await;

    // Unknown path.
    let r = h.raw("/nope", b"{}".to_vec(), &[]).await;
    assert_eq!(r.status, 404);
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn body_version_dialect() {
    let h = start_with(|c| c.dialect.require_body_version = true).await;
    let ts = now_ms();
    let b = body("t1", ts);
    let r = h
        .raw(
            "/payments",
            b.clone(),
            &headers(h.merchant.sign(MID, ts, &b)),
        )
        .await;
    assert_rejected(&h, r, 401, "206001").await;
    let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    v["version"] = json!("v1.2");
    let b = serde_json::to_vec(&v).unwrap();
    let r = h
        .raw(
            "/payments",
            b.clone(),
            &headers(h.merchant.sign(MID, ts, &b))[..2],
        )
        .await;
    assert_eq!(r.ret_code(), "000000");
    h.sandbox.shutdown().await;
}

#[tokio::test]
async fn merchants_see_only_their_own_orders() {
    let other = TestMerchant::new("20000000000002");
    let other_pem = other.public_pem.clone();
    let h = start_with(|c| {
        c.merchants.push(payorch_sandbox::SandboxMerchant::new(
            "20000000000002",
            other_pem,
        ));
    })
    .await;
    let id = h
        .pay("mine", 100, cards::VISA_SUCCESS, false)
        .await
        .order_id();
    let ts = now_ms();
    let b = serde_json::to_vec(
        &json!({"merchant_id": "20000000000002", "timestamp": ts, "order_id": id}),
    )
    .unwrap();
    let r = h
        .raw(
            "/payments/query",
            b.clone(),
            &headers(other.sign("20000000000002", ts, &b)),
        )
        .await;
    assert_eq!(r.ret_code(), "206024");
    h.assert_response_signed(&r, "20000000000002", ts);
    // Signed by merchant 1's key but claiming merchant 2: 206003.
    let r = h
        .raw(
            "/payments/query",
            b.clone(),
            &headers(h.merchant.sign("20000000000002", ts, &b)),
        )
        .await;
    assert_eq!(r.ret_code(), "206003");
    h.sandbox.shutdown().await;
}
