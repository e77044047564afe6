//! PayKKa client bench: full signed round trips over loopback HTTP against
//! an in-process sandbox, beside the raw crypto cost of the same exchange.
//!
//! Run: `cargo bench -p payorch-benches --bench client`
//!
//! Measured by criterion:
//! * `round_trip`: one transaction query through `PaykkaClient` (fresh
//!   timestamp, serialize, RSA-2048 sign, HTTP/1.1 POST on a pooled
//!   connection, the sandbox verifies, looks up its ledger, signs the
//!   answer, the client verifies the response signature in `enforce` mode
//!   and parses the envelope), one at a time;
//! * `round_trip_x8`: eight such queries in flight at once (per iteration);
//! * `raw_crypto`: the same request and response with no HTTP: sign the
//!   request, verify it with the merchant public key, sign the response
//!   body, verify it with the platform public key (two signs, two verifies).
//!
//! Reference: after criterion, the same process times N sequential round
//! trips and N raw exchanges and prints round trips/s, raw exchanges/s and
//! their ratio (the share of a round trip's capacity that is not crypto:
//! HTTP, JSON, the sandbox's ledger and tokio scheduling).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway};
use payorch_paykka::keys::{GeneratedKeyPair, generate_merchant_key_pair};
use payorch_paykka::signing::{RequestSigner, SigningConfig, verify, verify_response};
use payorch_paykka::{
    MerchantConfig, OperationTimeouts, PaykkaClient, PaykkaPublicKey, SignatureMode,
};
use payorch_sandbox::{PlatformKey, SandboxConfig, SandboxMerchant, cards};
use payorch_schemas::money::{Currency, Money};
use payorch_schemas::paykka::{
    CaptureMethod, InitiateRequest, PaymentRequest, PaymentType, QueryRequest,
};

const MERCHANT: &str = "18356675194960";

struct Setup {
    rt: tokio::runtime::Runtime,
    sandbox: Option<payorch_sandbox::RunningSandbox>,
    client: Arc<PaykkaClient>,
    query: QueryRequest,
    merchant: GeneratedKeyPair,
    platform: GeneratedKeyPair,
    response_body: Vec<u8>,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let merchant = generate_merchant_key_pair().expect("merchant keys");
    let platform = generate_merchant_key_pair().expect("platform keys");
    let sandbox = rt.block_on(async {
        let config = SandboxConfig {
            merchants: vec![SandboxMerchant::new(
                MERCHANT,
                merchant.public.to_spki_pem(),
            )],
            platform_key: Some(
                PlatformKey::from_pem(platform.private_pkcs8_pem()).expect("platform key"),
            ),
            ..SandboxConfig::default()
        };
        payorch_sandbox::spawn(config, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("sandbox")
    });
    let platform_public =
        PaykkaPublicKey::parse(&sandbox.platform_public_key_pem()).expect("platform public");
    let config = MerchantConfig::new(
        MERCHANT,
        merchant.private_key().expect("private key"),
        platform_public,
    )
    .with_base_url(sandbox.base_url())
    .with_response_signature(SignatureMode::Enforce)
    .with_timeouts(OperationTimeouts::uniform(Duration::from_secs(10)));
    let client = Arc::new(PaykkaClient::new(config).expect("client"));
    let trans_id = "bench-order-1".to_owned();
    let (query, response_body) = rt.block_on(async {
        let mut init = InitiateRequest::new(
            MERCHANT,
            0,
            PaymentType::Purchase,
            &trans_id,
            Money::new(12_999, Currency::new("EUR").expect("EUR")),
            PaymentRequest::card(cards::VISA_SUCCESS, "07", "2031", "123"),
        );
        init.capture_method = Some(CaptureMethod::Manual);
        init.return_url = Some("https://shop.example.com/return".into());
        let auth = match client.initiate(&init).await {
            GatewayOutcome::Success(r) => r,
            other => panic!("initiate: {other:?}"),
        };
        let query = QueryRequest::by_trans_id(MERCHANT, 0, &trans_id);
        // A realistic answer body for the raw crypto path.
        let body = serde_json::to_vec(&serde_json::json!({
            "ret_code": "000000", "ret_msg": "Success", "data": auth
        }))
        .expect("body");
        (query, body)
    });
    Setup {
        rt,
        sandbox: Some(sandbox),
        client,
        query,
        merchant,
        platform,
        response_body,
    }
}

/// Two signs and two verifies: the crypto of one round trip, no HTTP.
fn raw_exchange(
    req_signer: &RequestSigner,
    resp_signer: &RequestSigner,
    merchant_public: &PaykkaPublicKey,
    platform_public: &PaykkaPublicKey,
    query: &QueryRequest,
    response_body: &[u8],
    timestamp: u64,
) {
    let mut q = query.clone();
    q.timestamp = timestamp as i64;
    let signed = req_signer.sign_json(MERCHANT, timestamp, &q).expect("sign");
    verify(
        merchant_public,
        MERCHANT,
        timestamp,
        signed.body(),
        signed.signature_header(),
    )
    .expect("verify request");
    let answer = resp_signer
        .sign_raw_body(MERCHANT, timestamp, response_body.to_vec())
        .expect("sign response");
    verify_response(
        platform_public,
        answer.body(),
        answer.signature_header(),
        MERCHANT,
        timestamp,
    )
    .expect("verify response");
}

fn main() {
    let mut s = setup();
    let req_signer = RequestSigner::new(
        s.merchant.private_key().expect("key"),
        SigningConfig::default(),
    );
    let resp_signer = RequestSigner::new(
        s.platform.private_key().expect("key"),
        SigningConfig::default(),
    );
    let merchant_public = s.merchant.public.clone();
    let platform_public = s.platform.public.clone();
    let ts = 1_704_067_200_000u64;

    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut g = criterion.benchmark_group("client");
        g.throughput(Throughput::Elements(1));
        g.bench_function("round_trip", |b| {
            b.to_async(&s.rt).iter(|| async {
                match s.client.query(black_box(&s.query)).await {
                    GatewayOutcome::Success(r) => black_box(r),
                    other => panic!("query: {other:?}"),
                };
            })
        });
        g.bench_function("raw_crypto", |b| {
            b.iter(|| {
                raw_exchange(
                    &req_signer,
                    &resp_signer,
                    &merchant_public,
                    &platform_public,
                    &s.query,
                    &s.response_body,
                    ts,
                )
            })
        });
        g.throughput(Throughput::Elements(8));
        g.bench_function("round_trip_x8", |b| {
            b.to_async(&s.rt).iter(|| async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..8 {
                    let client = s.client.clone();
                    let q = s.query.clone();
                    set.spawn(async move { client.query(&q).await.kind() });
                }
                while let Some(kind) = set.join_next().await {
                    assert_eq!(kind.expect("task"), "success");
                }
            })
        });
        g.finish();
    }
    criterion.final_summary();

    // Reference: the same work timed in this process, reported as a ratio.
    let n = 2_000u32;
    let started = Instant::now();
    s.rt.block_on(async {
        for _ in 0..n {
            assert_eq!(s.client.query(&s.query).await.kind(), "success");
        }
    });
    let http_per_s = f64::from(n) / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..n {
        raw_exchange(
            &req_signer,
            &resp_signer,
            &merchant_public,
            &platform_public,
            &s.query,
            &s.response_body,
            ts,
        );
    }
    let raw_per_s = f64::from(n) / started.elapsed().as_secs_f64();
    println!(
        "client reference: {http_per_s:.0} round trips/s (sequential, loopback HTTP), \
         {raw_per_s:.0} raw sign+verify exchanges/s (2 signs + 2 verifies, no HTTP); \
         ratio round trip / raw = {:.2}",
        http_per_s / raw_per_s
    );
    if let Some(sandbox) = s.sandbox.take() {
        s.rt.block_on(sandbox.shutdown());
    }
}
