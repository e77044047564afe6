//! The PayKKa client over real HTTP against the sandbox: every operation,
//! every decline class, 3DS, lost answers resolved by query, and signature
//! failures in both directions.

mod client_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use client_support::*;
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway, RejectionClass};
use payorch_engine::store::Clock;
use payorch_paykka::keys::generate_merchant_key_pair;
use payorch_paykka::{
    MerchantConfig, OperationTimeouts, PaykkaClient, PaykkaPublicKey, RetryPolicy, SignatureMode,
};
use payorch_sandbox::{RefundMode, amounts, cards};
use payorch_schemas::paykka::{
    ApplePaySessionRequest, CaptureMethod, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionRequest, GatewayOrderStatus, InitiateRequest, PaymentRequest, PaymentResponse,
    PaymentType, QueryRequest, Reason, RecurringCancelRequest, RefundQueryRequest, RefundRequest,
    RefundStatus, SessionMode, TokenQueryRequest, TokenRemoveRequest, TokenUsage, VoidRequest,
};

fn success<T: std::fmt::Debug>(o: GatewayOutcome<T>) -> T {
    match o {
        GatewayOutcome::Success(t) => t,
        other => panic!("expected success, got {other:?}"),
    }
}

fn status(r: &PaymentResponse) -> GatewayOrderStatus {
    r.status.clone().expect("status")
}

async fn query_trans(client: &PaykkaClient, trans_id: &str) -> GatewayOutcome<PaymentResponse> {
    client
        .query(&QueryRequest::by_trans_id(MERCHANT, 0, trans_id))
        .await
}

#[tokio::test]
async fn every_operation_round_trips() {
    let env = env_with(|c| c.behaviour.refunds = RefundMode::Immediate, |m| m).await;
    let c = &env.client;

    // Initiate (manual capture, tokenising), query, partial capture, capture rest.
    let mut req = card_initiate(cards::VISA_SUCCESS, 5_000, CaptureMethod::Manual);
    req.payment.store_payment_method = Some(true);
    req.payment.token_usage = Some(TokenUsage::CardOnFile);
    req.payment.shopper_reference = Some("shopper-1".into());
    let auth = success(c.initiate(&req).await);
    assert_eq!(status(&auth), GatewayOrderStatus::Authorized);
    let order_id = auth.order_id.clone().expect("order id");
    let token = auth.token.clone().expect("token");
    let q = success(query_trans(c, &req.trans_id).await);
    assert_eq!(q.order_id.as_deref(), Some(order_id.as_str()));
    let captured = success(
        c.capture(&CaptureRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            order_id: order_id.clone(),
            amount: Some(5_000),
            currency: Some(eur(0).currency),
            final_capture: None,
        })
        .await,
    );
    assert_eq!(status(&captured), GatewayOrderStatus::Success);

    // Refund part of it and read it back.
    let refund_trans_id = unique("rf");
    let refund = success(
        c.refund(&RefundRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            refund_trans_id: refund_trans_id.clone(),
            ori_order_id: order_id.clone(),
            refund_amount: 1_200,
            currency: eur(0).currency,
            reason: Some(Reason::RequestedByCustomer),
            notify_url: None,
        })
        .await,
    );
    assert_eq!(refund.status, Some(RefundStatus::Success));
    let rq = success(
        c.refund_query(&RefundQueryRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            refund_trans_id: Some(refund_trans_id.clone()),
            refund_order_id: None,
        })
        .await,
    );
    assert_eq!(rq.refund_order_id, refund.refund_order_id);
    let ledger = env.sandbox.ledger();
    let order = &ledger.merchants[MERCHANT].orders[&order_id];
    assert_eq!((order.captured, order.refunded), (5_000, 1_200));

    // Tokens: query then remove.
    let tokens = success(
        c.token_query(&TokenQueryRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            shopper_reference: "shopper-1".into(),
            token: None,
        })
        .await,
    );
    assert!(
        tokens
            .tokens
            .iter()
            .any(|t| t.token.as_deref() == Some(&token))
    );
    success(
        c.token_remove(&TokenRemoveRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            token: token.clone(),
            shopper_reference: "shopper-1".into(),
        })
        .await,
    );
    assert!(
        !env.sandbox.ledger().merchants[MERCHANT]
            .tokens
            .contains_key(&token)
    );

    // Void an authorisation.
    let req2 = card_initiate(cards::MASTERCARD_SUCCESS, 700, CaptureMethod::Manual);
    let auth2 = success(c.initiate(&req2).await);
    let voided = success(
        c.void(&VoidRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            order_id: auth2.order_id.clone().expect("order id"),
            reason: Some(Reason::RequestedByCustomer),
        })
        .await,
    );
    assert_eq!(status(&voided), GatewayOrderStatus::Canceled);

    // Recurring: first payment creates an agreement, cancel it.
    let mut first = card_initiate(cards::VISA_SUCCESS, 999, CaptureMethod::Automatic);
    first.payment_type = PaymentType::Recurring;
    first.mit = Some(false);
    first.payment.store_payment_method = Some(true);
    first.payment.token_usage = Some(TokenUsage::Subscription);
    first.payment.shopper_reference = Some("shopper-2".into());
    let paid = success(c.initiate(&first).await);
    let agreement = paid.recurring_agreement_id.clone().expect("agreement");
    success(
        c.recurring_cancel(&RecurringCancelRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            recurring_agreement_id: agreement,
        })
        .await,
    );

    // Apple Pay merchant validation.
    let apple = success(
        c.apple_pay_session(&ApplePaySessionRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            display_name: Some("Shop".into()),
            domain_name: "www.merchant.example".into(),
        })
        .await,
    );
    assert!(apple.merchant_session().is_ok());

    // Checkout session: create, pay on the hosted page, query.
    let mut session = CheckoutSessionRequest::new(
        MERCHANT,
        0,
        PaymentType::Purchase,
        unique("cs"),
        eur(2_500),
        SessionMode::Hosted,
    );
    session.return_url = Some("https://merchant.example/return".into());
    let created = success(c.checkout_session_create(&session).await);
    let session_id = created.session_id.clone().expect("session id");
    assert!(created.session_url.is_some());
    let paid_order = env
        .sandbox
        .pay_session(MERCHANT, &session_id, cards::VISA_SUCCESS)
        .await
        .expect("pay session");
    let sq = success(
        c.checkout_session_query(&CheckoutSessionQueryRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            session_id: Some(session_id.clone()),
            trans_id: None,
        })
        .await,
    );
    assert_eq!(sq.order.order_id.as_deref(), Some(paid_order.as_str()));
    let by_session = success(
        c.query(&QueryRequest::by_session_id(MERCHANT, 0, &session_id))
            .await,
    );
    assert_eq!(by_session.order_id.as_deref(), Some(paid_order.as_str()));
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn decline_classes() {
    let env = env().await;
    let c = &env.client;

    // Issuer declines inside a 200: Success with data FAILURE (engine reads it).
    for (pan, code) in [
        (cards::DECLINE_INVALID_CARD, "2099"),
        (cards::DECLINE_NO_ROUTE, "1016"),
        (cards::DECLINE_NOT_ALLOWED, "1022"),
    ] {
        let r = success(
            c.initiate(&card_initiate(pan, 1_000, CaptureMethod::Automatic))
                .await,
        );
        assert_eq!(status(&r), GatewayOrderStatus::Failure, "{pan}");
        assert_eq!(r.error_code.as_deref(), Some(code), "{pan}");
    }

    // FINAL_DECLINE in the envelope (206022).
    match c
        .initiate(&card_initiate(
            cards::NOT_SUPPORTED,
            1_000,
            CaptureMethod::Automatic,
        ))
        .await
    {
        GatewayOutcome::Declined { code, .. } => assert_eq!(code, "206022"),
        other => panic!("{other:?}"),
    }

    // NEED_NEW_CARD_DATA: expired and undecryptable Encrypted Card values.
    for (value, code) in [("enc:expired", "206021"), ("garbage", "206020")] {
        let mut req = card_initiate(cards::VISA_SUCCESS, 1_000, CaptureMethod::Automatic);
        req.payment = PaymentRequest::encrypted_card(value, "enc:07", "enc:2031", None);
        match c.initiate(&req).await {
            GatewayOutcome::Rejected {
                class, code: got, ..
            } => {
                assert_eq!(class, RejectionClass::NeedNewCardData, "{value}");
                assert_eq!(got, code, "{value}");
            }
            other => panic!("{value}: {other:?}"),
        }
    }

    // NOT_FOUND: query an unknown trans_id.
    match query_trans(c, "never-sent").await {
        GatewayOutcome::Rejected { class, code, .. } => {
            assert_eq!(class, RejectionClass::NotFound);
            assert_eq!(code, "206024");
        }
        other => panic!("{other:?}"),
    }

    // FINAL_REQUEST: a PAN that fails Luhn is a parameter error.
    match c
        .initiate(&card_initiate(
            "4111111111111112",
            1_000,
            CaptureMethod::Automatic,
        ))
        .await
    {
        GatewayOutcome::Rejected { class, .. } => assert_eq!(class, RejectionClass::Request),
        other => panic!("{other:?}"),
    }

    // FINAL_REQUEST: capture more than authorised.
    let auth = success(
        c.initiate(&card_initiate(
            cards::VISA_SUCCESS,
            1_000,
            CaptureMethod::Manual,
        ))
        .await,
    );
    match c
        .capture(&CaptureRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            order_id: auth.order_id.clone().expect("order id"),
            amount: Some(5_000),
            currency: None,
            final_capture: None,
        })
        .await
    {
        GatewayOutcome::Rejected { class, .. } => assert_eq!(class, RejectionClass::Request),
        other => panic!("{other:?}"),
    }
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn unknown_merchant_is_config_rejection() {
    let env = env().await;
    // The sandbox does not know this merchant: 206005, FINAL_CONFIG.
    let other = MerchantConfig::new(
        "10000000000999",
        env.keys.private_key().expect("key"),
        env.platform_key.clone(),
    )
    .with_base_url(env.sandbox.base_url());
    let client = PaykkaClient::new(other).expect("client");
    let mut req = card_initiate(cards::VISA_SUCCESS, 100, CaptureMethod::Automatic);
    req.merchant_id = "10000000000999".into();
    match client.initiate(&req).await {
        GatewayOutcome::Rejected { class, code, .. } => {
            assert_eq!(class, RejectionClass::Config);
            assert_eq!(code, "206005");
        }
        other => panic!("{other:?}"),
    }
    // The client itself does not know this one: rejected without a call.
    req.merchant_id = "42".into();
    match env.client.initiate(&req).await {
        GatewayOutcome::Rejected { class, code, .. } => {
            assert_eq!(class, RejectionClass::Config);
            assert_eq!(code, "UNKNOWN_MERCHANT");
        }
        other => panic!("{other:?}"),
    }
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn three_ds_completed_and_abandoned() {
    let env = env().await;
    let c = &env.client;

    let done = card_initiate(cards::CHALLENGE_3DS, 1_500, CaptureMethod::Automatic);
    let pending = success(c.initiate(&done).await);
    assert_eq!(status(&pending), GatewayOrderStatus::Processing);
    assert!(pending.pending_challenge_url().is_some());
    let order_id = pending.order_id.clone().expect("order id");
    env.sandbox
        .complete_challenge(MERCHANT, &order_id, true)
        .await
        .expect("complete");
    let after = success(query_trans(c, &done.trans_id).await);
    assert!(matches!(
        status(&after),
        GatewayOrderStatus::Success | GatewayOrderStatus::Authorized
    ));

    // Abandoned: the challenge expires and the payment fails.
    let abandoned = card_initiate(
        cards::VISA_SUCCESS,
        amounts::CHALLENGE + 1_000,
        CaptureMethod::Automatic,
    );
    let pending = success(c.initiate(&abandoned).await);
    assert_eq!(status(&pending), GatewayOrderStatus::Processing);
    assert!(env.sandbox.expire_challenges() >= 1);
    let after = success(query_trans(c, &abandoned.trans_id).await);
    assert_eq!(status(&after), GatewayOrderStatus::Failure);
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn timeout_is_unknown_and_query_resolves_it() {
    let env = env_with(
        |c| c.faults.slow_response = Duration::from_secs(4),
        |m| m.with_timeouts(OperationTimeouts::uniform(Duration::from_millis(1_000))),
    )
    .await;
    let c = &env.client;
    let req = card_initiate(
        cards::VISA_SUCCESS,
        2_000 + amounts::SLOW_RESPONSE,
        CaptureMethod::Manual,
    );
    match c.initiate(&req).await {
        GatewayOutcome::Unknown { reason } => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Committed before the slow answer: the query (through a client with
    // ordinary timeouts, so a loaded machine cannot make it flaky) finds it.
    let resolver = PaykkaClient::new(test_merchant_config(
        &env.keys,
        env.platform_key.clone(),
        env.sandbox.base_url(),
    ))
    .expect("client");
    let found = success(query_trans(&resolver, &req.trans_id).await);
    assert_eq!(status(&found), GatewayOrderStatus::Authorized);
    // Nothing was sent twice: exactly one order for this trans_id.
    let ledger = env.sandbox.ledger();
    let count = ledger.merchants[MERCHANT]
        .orders
        .values()
        .filter(|o| o.trans_id == req.trans_id)
        .count();
    assert_eq!(count, 1);
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn error_after_commit_is_unknown_and_query_shows_it_committed() {
    let env = env().await;
    let c = &env.client;

    // Initiate: 500 / 999999 after commit.
    let req = card_initiate(
        cards::VISA_SUCCESS,
        1_000 + amounts::ERROR_AFTER_COMMIT,
        CaptureMethod::Manual,
    );
    assert!(matches!(
        c.initiate(&req).await,
        GatewayOutcome::Unknown { .. }
    ));
    let found = success(query_trans(c, &req.trans_id).await);
    assert_eq!(status(&found), GatewayOrderStatus::Authorized);
    let order_id = found.order_id.clone().expect("order id");

    // Capture: same, and it is not sent twice.
    let capture = CaptureRequest {
        merchant_id: MERCHANT.into(),
        timestamp: 0,
        order_id: order_id.clone(),
        amount: Some(amounts::ERROR_AFTER_COMMIT),
        currency: None,
        final_capture: None,
    };
    assert!(matches!(
        c.capture(&capture).await,
        GatewayOutcome::Unknown { .. }
    ));
    let after = success(
        c.query(&QueryRequest::by_order_id(MERCHANT, 0, &order_id))
            .await,
    );
    assert_eq!(
        after.balances.as_ref().and_then(|b| b.captured_amount),
        Some(amounts::ERROR_AFTER_COMMIT)
    );
    let ledger = env.sandbox.ledger();
    assert_eq!(
        ledger.merchants[MERCHANT].orders[&order_id].captures,
        vec![amounts::ERROR_AFTER_COMMIT]
    );

    // Refund: same; refund query shows it.
    let refund = RefundRequest {
        merchant_id: MERCHANT.into(),
        timestamp: 0,
        refund_trans_id: unique("rf"),
        ori_order_id: order_id.clone(),
        refund_amount: amounts::ERROR_AFTER_COMMIT,
        currency: eur(0).currency,
        reason: None,
        notify_url: None,
    };
    assert!(matches!(
        c.refund(&refund).await,
        GatewayOutcome::Unknown { .. }
    ));
    let rq = success(
        c.refund_query(&RefundQueryRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            refund_trans_id: Some(refund.refund_trans_id.clone()),
            refund_order_id: None,
        })
        .await,
    );
    assert_eq!(rq.amount, Some(amounts::ERROR_AFTER_COMMIT));
    assert_eq!(env.sandbox.ledger().merchants[MERCHANT].refunds.len(), 1);
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_rejects_a_request_signed_with_the_wrong_key() {
    let env = env().await;
    let wrong = generate_merchant_key_pair().expect("keygen");
    let client = PaykkaClient::new(
        test_merchant_config(&wrong, env.platform_key.clone(), env.sandbox.base_url())
            .with_response_signature(SignatureMode::Warn),
    )
    .expect("client");
    let req = card_initiate(cards::VISA_SUCCESS, 100, CaptureMethod::Automatic);
    match client.initiate(&req).await {
        GatewayOutcome::Rejected { class, code, .. } => {
            assert_eq!(class, RejectionClass::Config);
            assert_eq!(code, "206003");
        }
        other => panic!("{other:?}"),
    }
    assert!(env.sandbox.ledger().merchants[MERCHANT].orders.is_empty());
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn enforce_mode_flags_responses_signed_with_another_platform_key() {
    let env = env().await;
    let impostor = generate_merchant_key_pair().expect("keygen").public.clone();
    let strict = PaykkaClient::new(
        test_merchant_config(&env.keys, impostor.clone(), env.sandbox.base_url())
            .with_response_signature(SignatureMode::Enforce),
    )
    .expect("client");
    let req = card_initiate(cards::VISA_SUCCESS, 100, CaptureMethod::Manual);
    match strict.initiate(&req).await {
        GatewayOutcome::Unknown { reason } => {
            assert!(reason.contains("signature"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The initiate did land (only the answer is untrusted).
    let trusted = success(query_trans(&env.client, &req.trans_id).await);
    assert_eq!(status(&trusted), GatewayOrderStatus::Authorized);
    // A read whose answer cannot be trusted is retryable.
    assert!(matches!(
        query_trans(&strict, &req.trans_id).await,
        GatewayOutcome::Retryable { .. }
    ));
    // Report-only mode logs and goes on.
    let lenient = PaykkaClient::new(
        test_merchant_config(&env.keys, impostor, env.sandbox.base_url())
            .with_response_signature(SignatureMode::Warn),
    )
    .expect("client");
    success(query_trans(&lenient, &req.trans_id).await);
    env.sandbox.shutdown().await;
}

/// Reports a time 10 minutes in the past once, then the real time.
struct StaleOnce(AtomicBool);

impl Clock for StaleOnce {
    fn now(&self) -> time::OffsetDateTime {
        let now = time::OffsetDateTime::now_utc();
        if self.0.swap(false, Ordering::SeqCst) {
            now - time::Duration::minutes(10)
        } else {
            now
        }
    }
}

#[tokio::test]
async fn stale_timestamp_re_signs_a_read_once_but_never_resends_a_payment() {
    let env = env().await;
    let stale_client = |retry: RetryPolicy| {
        PaykkaClient::builder()
            .merchant(
                test_merchant_config(&env.keys, env.platform_key.clone(), env.sandbox.base_url())
                    .with_retry(retry),
            )
            .clock(Arc::new(StaleOnce(AtomicBool::new(true))))
            .build()
            .expect("client")
    };
    // A money-moving call answered 206004 comes back Retryable: the client
    // does not send it again (the engine decides) and nothing landed.
    let client = stale_client(RetryPolicy::default());
    let req = card_initiate(cards::VISA_SUCCESS, 100, CaptureMethod::Automatic);
    assert!(matches!(
        client.initiate(&req).await,
        GatewayOutcome::Retryable { .. }
    ));
    assert!(
        !env.sandbox.ledger().merchants[MERCHANT]
            .orders
            .values()
            .any(|o| o.trans_id == req.trans_id)
    );
    let landed = success(env.client.initiate(&req).await);
    assert_eq!(status(&landed), GatewayOrderStatus::Success);

    // A read is re-signed with a fresh timestamp and sent once more.
    let client = stale_client(RetryPolicy::default());
    let q = QueryRequest::by_trans_id(MERCHANT, 0, &req.trans_id);
    let r = success(client.query(&q).await);
    assert_eq!(status(&r), GatewayOrderStatus::Success);

    // With the retry switched off the stale answer surfaces as retryable.
    let client = stale_client(RetryPolicy::none());
    assert!(matches!(
        client.query(&q).await,
        GatewayOutcome::Retryable { .. }
    ));
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn connection_refused_and_dns_failure_are_not_sent() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let keys = generate_merchant_key_pair().expect("keygen");
    let client = PaykkaClient::new(
        test_merchant_config(
            &keys,
            keys.public.clone(),
            format!("http://127.0.0.1:{port}/apis"),
        )
        .with_retry(RetryPolicy::none()),
    )
    .expect("client");
    let req: InitiateRequest = card_initiate(cards::VISA_SUCCESS, 100, CaptureMethod::Automatic);
    match client.initiate(&req).await {
        GatewayOutcome::NotSent { reason } => {
            assert!(reason.contains("before sending"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A name that cannot resolve (RFC 2606 `.invalid`): never sent either.
    let unresolvable = PaykkaClient::new(
        test_merchant_config(
            &keys,
            keys.public.clone(),
            "http://paykka.payorch-test.invalid/apis".into(),
        )
        .with_retry(RetryPolicy::none()),
    )
    .expect("client");
    match unresolvable.initiate(&req).await {
        GatewayOutcome::NotSent { reason } => {
            assert!(reason.contains("before sending"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let _: PaykkaPublicKey = keys.public.clone();
}
