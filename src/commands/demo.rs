//! `payorch demo`: a scripted marketplace run through every flow against an
//! in-process PayKKa sandbox, over real HTTP and real signatures, with our
//! own webhook endpoints receiving the sandbox's notifications.
//!
//! Flows: purchase; pre-auth with partial captures and partial refunds;
//! 3-D Secure challenge; void; recurring agreement (first payment, two
//! charges, cancel); hosted checkout session. Prints each flow's final state
//! and the event timeline of the store (`--json`: one document). Exit 1 if
//! a flow did not reach its expected state.
//!
//! Only against the sandbox: the script plays the shopper too (it completes
//! 3-D Secure challenges and hosted checkout pages through the sandbox's
//! test hooks) and picks outcomes with sandbox test cards and amounts, none
//! of which a real PayKKa offers, and it would move real money. So a
//! configuration that points at a PayKKa (`[paykka] base_url` or
//! `PAYORCH_PAYKKA_BASE_URL`) is refused with an error saying so, rather
//! than silently ignored; a configuration that cannot be loaded is an
//! error too. Everything else of the configuration (reconciler settings)
//! applies; the store is `--store` or a new temp file, never the
//! configured one. A `--store` that already holds events is refused (the
//! demo's idempotency keys and timeline assume an empty store).

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use payorch_engine::agreement::AgreementPhase;
use payorch_engine::checkout::CheckoutPhase;
use payorch_engine::orchestrator::{
    CheckoutSessionCreate, CommandContext, Engine, OrderView, PlacePaymentRequest,
};
use payorch_engine::order::Phase;
use payorch_engine::store::Position;
use payorch_engine::stream::StreamRef;
use payorch_http::AppState;
use payorch_sandbox::cards;
use payorch_schemas::events::order::TokenRequest;
use payorch_schemas::events::{
    AgreementId, AuthorisationKind, CaptureMode, OrderId, PaymentKind, TokenPurpose,
};
use payorch_schemas::paykka::{PaymentRequest, SessionMode};
use payorch_schemas::{Currency, Money};
use serde::Serialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::Globals;
use crate::app::{App, DEMO_MERCHANT};
use crate::config::Config;
use crate::output::Output;

/// Runs every payment flow against an in-process PayKKa sandbox.
///
/// The demo only runs against the sandbox: it plays the shopper (3-D Secure
/// and hosted checkout) through sandbox-only hooks and uses sandbox test
/// cards. A configuration with a PayKKa base URL (`[paykka] base_url` or
/// PAYORCH_PAYKKA_BASE_URL) is refused; use `payorch serve` for a real
/// PayKKa.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store to record into (default: a new SQLite file in the temp dir,
    /// kept so that `payorch replay` can read it afterwards). It must be
    /// empty: a store that already holds events is refused.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// How long to wait for each asynchronous outcome (notification).
    #[arg(long, default_value_t = 15)]
    wait_secs: u64,
}

/// One flow's result.
#[derive(Debug, Serialize)]
pub struct FlowResult {
    pub flow: &'static str,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
    pub stream: Option<String>,
    pub detail: String,
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn card(pan: &str, minor: i64, capture: CaptureMode) -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: eur(minor),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: capture,
        payment: PaymentRequest::card(pan, "07", "2031", "123"),
        store_token: None,
        return_url: None,
        browser: None,
    }
}

fn stream_of(o: &OrderView) -> Option<String> {
    Some(StreamRef::Order(o.order_id).to_string())
}

struct Demo<'a> {
    engine: &'a Engine,
    ctx: CommandContext,
    wait: Duration,
    seq: std::cell::Cell<u32>,
}

impl Demo<'_> {
    /// A command context with a fresh idempotency key.
    fn ctx(&self, what: &str) -> CommandContext {
        self.seq.set(self.seq.get() + 1);
        self.ctx
            .clone()
            .with_idempotency_key(format!("demo-{what}-{}", self.seq.get()))
    }

    /// Polls the order until `done` holds or the wait expires.
    async fn wait_order(
        &self,
        id: OrderId,
        done: impl Fn(&OrderView) -> bool,
    ) -> anyhow::Result<OrderView> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let o = self.engine.get_order(&self.ctx, id).await?;
            if done(&o) || tokio::time::Instant::now() >= deadline {
                return Ok(o);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn result(
    flow: &'static str,
    expected: Phase,
    o: &OrderView,
    extra_ok: bool,
    detail: String,
) -> FlowResult {
    FlowResult {
        flow,
        expected: expected.to_string(),
        actual: o.status.to_string(),
        ok: o.status == expected && extra_ok,
        stream: stream_of(o),
        detail,
    }
}

async fn flow<F: Future<Output = anyhow::Result<FlowResult>>>(
    name: &'static str,
    f: F,
) -> FlowResult {
    eprintln!("demo: {name} ...");
    match f.await {
        Ok(r) => r,
        Err(e) => FlowResult {
            flow: name,
            expected: "-".into(),
            actual: format!("error: {e:#}"),
            ok: false,
            stream: None,
            detail: String::new(),
        },
    }
}

async fn purchase(d: &Demo<'_>) -> anyhow::Result<FlowResult> {
    let o = d
        .engine
        .place_payment(
            &d.ctx("purchase"),
            card(cards::VISA_SUCCESS, 2500, CaptureMode::Automatic),
        )
        .await?;
    Ok(result(
        "purchase",
        Phase::Captured,
        &o,
        o.captured == eur(2500),
        format!("captured {}", o.captured),
    ))
}

async fn preauth(d: &Demo<'_>) -> anyhow::Result<FlowResult> {
    let mut req = card(cards::MASTERCARD_SUCCESS, 10_000, CaptureMode::Manual);
    req.authorisation_type = AuthorisationKind::PreAuth;
    let o = d.engine.place_payment(&d.ctx("preauth"), req).await?;
    if o.status != Phase::Authorised {
        return Ok(result(
            "preauth_partial_capture_refunds",
            Phase::Authorised,
            &o,
            true,
            "authorisation".into(),
        ));
    }
    let id = o.order_id;
    // Two partial captures: 40.00 now, 20.00 later as the final one, which
    // releases the remaining 40.00 of the authorisation.
    d.engine
        .capture(&d.ctx("capture"), id, Some(eur(4000)), false)
        .await?;
    d.engine
        .capture(&d.ctx("capture"), id, Some(eur(2000)), true)
        .await?;
    d.engine
        .refund(&d.ctx("refund"), id, eur(1500), Some("damaged item".into()))
        .await?;
    d.engine
        .refund(
            &d.ctx("refund"),
            id,
            eur(1000),
            Some("late delivery".into()),
        )
        .await?;
    // Refunds settle asynchronously (REFUND notifications).
    let o = d
        .wait_order(id, |o| {
            o.refunded == eur(2500) && o.status == Phase::PartiallyRefunded
        })
        .await?;
    Ok(result(
        "preauth_partial_capture_refunds",
        Phase::PartiallyRefunded,
        &o,
        o.captured == eur(6000) && o.refunded == eur(2500),
        format!(
            "pre-auth 100.00 EUR, captured {} in 2 captures (rest released), refunded {} in 2 refunds",
            o.captured, o.refunded
        ),
    ))
}

async fn three_ds(
    d: &Demo<'_>,
    sandbox: &payorch_sandbox::RunningSandbox,
) -> anyhow::Result<FlowResult> {
    let o = d
        .engine
        .place_payment(
            &d.ctx("3ds"),
            card(cards::CHALLENGE_3DS, 3000, CaptureMode::Automatic),
        )
        .await?;
    if o.status != Phase::ChallengeRequired {
        return Ok(result(
            "3ds_challenge",
            Phase::ChallengeRequired,
            &o,
            true,
            "challenge".into(),
        ));
    }
    // The PayKKa order id of the challenge (the shopper's page knows it).
    let gw = match o.gateway_order_id.clone() {
        Some(gw) => gw,
        None => sandbox
            .ledger()
            .merchant(DEMO_MERCHANT)
            .and_then(|m| {
                m.orders
                    .values()
                    .find(|r| r.trans_id == o.trans_id)
                    .map(|r| r.order_id.clone())
            })
            .context("the sandbox has no order for the challenge")?,
    };
    // The shopper passes the challenge on the authentication page.
    sandbox
        .complete_challenge(DEMO_MERCHANT, &gw, true)
        .await
        .context("sandbox challenge")?;
    let o = d
        .wait_order(o.order_id, |o| o.status == Phase::Captured)
        .await?;
    Ok(result(
        "3ds_challenge",
        Phase::Captured,
        &o,
        true,
        "challenge passed, captured by notification".into(),
    ))
}

async fn void(d: &Demo<'_>) -> anyhow::Result<FlowResult> {
    let o = d
        .engine
        .place_payment(
            &d.ctx("void"),
            card(cards::VISA_SUCCESS, 5000, CaptureMode::Manual),
        )
        .await?;
    let o = d
        .engine
        .void(&d.ctx("void"), o.order_id, Some("order cancelled".into()))
        .await?;
    let o = d
        .wait_order(o.order_id, |o| o.status == Phase::Voided)
        .await?;
    Ok(result(
        "void",
        Phase::Voided,
        &o,
        true,
        "authorisation released".into(),
    ))
}

async fn recurring(d: &Demo<'_>) -> anyhow::Result<FlowResult> {
    let mut first = card(cards::VISA_SUCCESS, 1200, CaptureMode::Automatic);
    first.payment_type = PaymentKind::Recurring;
    first.store_token = Some(TokenRequest {
        purpose: TokenPurpose::Subscription,
        shopper_reference: "shopper-42".into(),
    });
    let o = d.engine.place_payment(&d.ctx("recurring"), first).await?;
    let agreement = o.agreement_id.unwrap_or(AgreementId(o.order_id.0));
    let c1 = d
        .engine
        .charge_agreement(&d.ctx("charge"), agreement, eur(1200))
        .await?;
    let c2 = d
        .engine
        .charge_agreement(&d.ctx("charge"), agreement, eur(1200))
        .await?;
    let a = d
        .engine
        .cancel_agreement(
            &d.ctx("cancel"),
            agreement,
            Some("subscription ended".into()),
        )
        .await?;
    let ok = o.status == Phase::Captured
        && c1.status == Phase::Captured
        && c2.status == Phase::Captured
        && a.charges.len() == 2;
    Ok(FlowResult {
        flow: "recurring_charges_cancel",
        expected: AgreementPhase::Cancelled.to_string(),
        actual: a.status.to_string(),
        ok: ok && a.status == AgreementPhase::Cancelled,
        stream: Some(StreamRef::Agreement(agreement).to_string()),
        detail: format!(
            "first payment {}, charges {}/{}, {} charge(s) on the agreement",
            o.status,
            c1.status,
            c2.status,
            a.charges.len()
        ),
    })
}

async fn checkout(
    d: &Demo<'_>,
    sandbox: &payorch_sandbox::RunningSandbox,
) -> anyhow::Result<FlowResult> {
    let s = d
        .engine
        .create_checkout_session(
            &d.ctx("checkout"),
            CheckoutSessionCreate {
                amount: eur(4200),
                payment_type: PaymentKind::Purchase,
                capture_method: CaptureMode::Automatic,
                session_mode: SessionMode::Hosted,
                return_url: None,
                expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::minutes(30)),
            },
        )
        .await?;
    let session_id = s.session_id.clone().context("session without an id")?;
    // The shopper pays on the hosted page.
    sandbox
        .pay_session(DEMO_MERCHANT, &session_id, cards::VISA_SUCCESS)
        .await
        .context("sandbox pay_session")?;
    let deadline = tokio::time::Instant::now() + d.wait;
    let view = loop {
        let v = d.engine.get_checkout_session(&d.ctx, s.checkout_id).await?;
        if v.status == CheckoutPhase::Completed || tokio::time::Instant::now() >= deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let order = match view.order_id {
        Some(id) => Some(d.wait_order(id, |o| o.status == Phase::Captured).await?),
        None => None,
    };
    Ok(FlowResult {
        flow: "checkout_session",
        expected: CheckoutPhase::Completed.to_string(),
        actual: view.status.to_string(),
        ok: view.status == CheckoutPhase::Completed
            && order.as_ref().is_some_and(|o| o.status == Phase::Captured),
        stream: Some(StreamRef::Checkout(s.checkout_id).to_string()),
        detail: match &order {
            Some(o) => format!("paid on the hosted page: order {} {}", o.status, o.captured),
            None => "no order yet".into(),
        },
    })
}

/// The refusal when the configuration points at a PayKKa (see module docs).
pub fn refuse_real_paykka(config: &Config) -> anyhow::Result<()> {
    if let Some(url) = config.paykka_base_url() {
        bail!(
            "payorch demo runs only against the in-process PayKKa sandbox, but the configuration \
             sets paykka.base_url ({url}): the demo completes 3-D Secure and hosted checkout as \
             the shopper through sandbox-only hooks and uses sandbox test cards, which a real \
             PayKKa does not offer (and it would move real money). Run it without that setting \
             (no --config / PAYORCH_CONFIG, unset PAYORCH_PAYKKA_BASE_URL), or use \
             `payorch serve` for the configured PayKKa."
        );
    }
    Ok(())
}

pub fn run(args: &Args, globals: &Globals, out: &Output) -> anyhow::Result<ExitCode> {
    let base = globals.config()?;
    refuse_real_paykka(&base)?;
    let store_url = match &args.store {
        Some(s) => s.clone(),
        None => {
            let p = std::env::temp_dir().join(format!("payorch-demo-{}.db", uuid::Uuid::now_v7()));
            format!("sqlite://{}", p.display())
        }
    };
    // The demo always runs against the in-process sandbox.
    let config = Config {
        store_url: store_url.clone(),
        amqp_url: None,
        paykka: None,
        merchants: Vec::new(),
        ..base
    };
    config.validate()?;
    let wait = Duration::from_secs(args.wait_secs);
    crate::block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = App::build(&config, &url).await?;
        // Its idempotency keys and timeline assume an empty store: a second
        // run into the same store would replay the first run's answers.
        if !app
            .store
            .events()
            .read_all(Position(0), 1)
            .await?
            .is_empty()
        {
            app.store.close().await;
            bail!(
                "store {} already holds events (an earlier demo run?); the demo records into \
                 an empty store: omit --store for a new temp file, or give a new one",
                crate::config::redact_url(&store_url)
            );
        }
        let state = AppState::new(
            app.engine.clone(),
            app.api_keys.clone(),
            app.verifier.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(payorch_http::serve(
            listener,
            payorch_http::router(state),
            async move {
                let _ = stopped.await;
            },
        ));
        let Some(sandbox) = app.sandbox.as_ref() else {
            bail!("the demo needs the in-process sandbox");
        };
        let d = Demo {
            engine: &app.engine,
            ctx: CommandContext::new(DEMO_MERCHANT),
            wait,
            seq: std::cell::Cell::new(0),
        };
        let flows = vec![
            flow("purchase", purchase(&d)).await,
            flow("preauth_partial_capture_refunds", preauth(&d)).await,
            flow("3ds_challenge", three_ds(&d, sandbox)).await,
            flow("void", void(&d)).await,
            flow("recurring_charges_cancel", recurring(&d)).await,
            flow("checkout_session", checkout(&d, sandbox)).await,
        ];
        let _ = stop.send(());
        let _ = server.await;

        let events = app.store.events();
        let mut timeline = Vec::new();
        let mut after = Position::START;
        loop {
            let batch = events.read_all(after, 1000).await?;
            let Some(last) = batch.last() else { break };
            after = last.global_position;
            timeline.extend(batch);
        }
        app.shutdown().await;

        let ok = flows.iter().all(|f| f.ok);
        let json_timeline: Vec<_> = timeline
            .iter()
            .map(|e| {
                json!({
                    "position": e.global_position.0,
                    "recorded_at": e.recorded_at.format(&Rfc3339).unwrap_or_default(),
                    "stream_id": e.stream_id.as_str(),
                    "stream_type": e.stream_type,
                    "version": e.version.0,
                    "event_type": e.event_type,
                })
            })
            .collect();
        let value = json!({
            "ok": ok,
            "store_url": store_url,
            "flows": flows,
            "timeline": json_timeline,
        });
        out.emit(&value, || {
            let mut s = String::from("Flows:\n");
            for f in &flows {
                s.push_str(&format!(
                    "  {} {:<34} {:<18} {}\n",
                    if f.ok { "ok  " } else { "FAIL" },
                    f.flow,
                    f.actual,
                    f.detail
                ));
            }
            s.push_str(&format!("\nEvent timeline ({} events):\n", timeline.len()));
            let mut last_stream = String::new();
            for e in &timeline {
                let t = e.recorded_at;
                let stream = e.stream_id.as_str();
                let marker = if stream != last_stream { "*" } else { " " };
                last_stream = stream.to_owned();
                s.push_str(&format!(
                    "  {:02}:{:02}:{:02}.{:03} {marker} {stream:<46} v{:<3} {}\n",
                    t.hour(),
                    t.minute(),
                    t.second(),
                    t.millisecond(),
                    e.version.0,
                    e.event_type
                ));
            }
            s.push_str(&format!(
                "\nRecorded in {store_url}\nTry: payorch replay --store-url {store_url} <stream> --explain\n"
            ));
            s
        });
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}
