//! Engine hot paths beside serde_json, in the same run.
//!
//! * `decide_evolve/<command>`: `order::decide` on a representative state
//!   plus `order::evolve` of the emitted events (state and command are
//!   cloned in the untimed setup), against `serde_json::to_string` of the
//!   same emitted events. Target: ratio <= 0.5.
//! * `rehydrate/<n>`: fold an order from `n` stored JSON events exactly as
//!   `orchestrator::load` folds each page (`fold_recorded`: typed decode
//!   straight from the payload text, upcaster chain for old versions, then
//!   `evolve`), against serializing the same `n` events. Target: >= 1,000,000 events/s per core.
//!
//! Run: `cargo bench -p payorch-benches --bench engine`. After criterion's
//! report a table prints each ratio (median of repeated timed loops).
//!
//! Instruction counts (stable on a loaded machine): with `ENGINE_CALLGRIND`
//! set, the binary skips criterion and runs each case 1,000 times through
//! `cg_ours` (rehydrate, or decide+evolve through `decide_evolve`) and
//! `cg_reference` (serialize): `ENGINE_CALLGRIND=<case> valgrind
//! --tool=callgrind --toggle-collect='*cg_reference*'
//! --toggle-collect='*decide_evolve*' (or '*cg_ours*' for rehydrate)
//! <bench binary>`, then the inclusive cost of each function from
//! `callgrind_annotate --inclusive=yes`, divided by the calls
//! (the exact commands are in `docs/BENCHMARKS.md`, "## Engine").
//! `ENGINE_CALLGRIND=<case>` runs one case only (`place`, `rehydrate_10`, ...).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use payorch_engine::codec;
use payorch_engine::orchestrator::{self, OrderAggregate};
use payorch_engine::order::{
    self, CallOutcome, CapturePayment, Observation, ObservationSource, ObservedStatus,
    OrderCommand, OrderState, PaymentObservation, PlacePayment, RefundPayment,
};
use payorch_engine::store::{EventMetadata, Position, RecordedEvent, StreamId, Version};
use payorch_schemas::events::order::{
    AuthorisationRequested, Authorised, CaptureRequested, Captured, InstrumentSummary,
    RefundRequested, Refunded,
};
use payorch_schemas::events::{
    AuthorisationKind, CaptureId, CaptureMode, CardSummary, GatewayOrderId, MerchantId, OrderEvent,
    OrderId, PaymentKind, RefundId,
};
use payorch_schemas::{Currency, Money};
use uuid::Uuid;

fn eur(m: i64) -> Money {
    Money::new(m, Currency::EUR)
}

fn order_id() -> OrderId {
    OrderId(Uuid::from_u128(0x0193_6f2e_8a4b_7c3d_9e2f_1a2b_3c4d_5e6f))
}

fn place() -> PlacePayment {
    PlacePayment {
        order_id: order_id(),
        merchant_id: MerchantId::new("18356675194960"),
        amount: eur(1_000_000),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: CaptureMode::Manual,
        instrument: InstrumentSummary {
            method: "BANKCARD".into(),
            card: Some(CardSummary {
                brand: Some("VISA".into()),
                bin: Some("411111".into()),
                last4: Some("1111".into()),
                exp_month: Some(7),
                exp_year: Some(2031),
            }),
            token: None,
        },
        store_token: None,
        agreement_id: None,
        checkout: None,
        annotations: Default::default(),
    }
}

/// A long but realistic order history: placed, authorised, then pairs of
/// capture_requested/captured and refund_requested/refunded.
fn history(n: usize) -> Vec<OrderEvent> {
    let mut h: Vec<OrderEvent> = vec![
        order::decide(&OrderState::default(), OrderCommand::Place(place())).unwrap()[0].clone(),
        AuthorisationRequested {
            trans_id: order_id().trans_id(),
        }
        .into(),
        Authorised {
            gateway_order_id: GatewayOrderId::new("GW10000000000000001"),
            amount: eur(1_000_000),
            card: None,
        }
        .into(),
    ];
    let mut i: u128 = 0;
    while h.len() < n {
        i += 1;
        if i % 2 == 1 {
            let capture_id = CaptureId(Uuid::from_u128(i));
            h.push(
                CaptureRequested {
                    capture_id,
                    amount: eur(100),
                    final_capture: false,
                }
                .into(),
            );
            h.push(
                Captured {
                    capture_id,
                    amount: eur(100),
                    remainder_released: false,
                }
                .into(),
            );
        } else {
            let refund_id = RefundId(Uuid::from_u128(i));
            let seq = u32::try_from(i / 2).unwrap_or(u32::MAX);
            h.push(
                RefundRequested {
                    refund_id,
                    refund_trans_id: order_id().refund_trans_id(seq),
                    amount: eur(50),
                    reason: None,
                }
                .into(),
            );
            h.push(
                Refunded {
                    refund_id,
                    gateway_refund_id: None,
                    amount: eur(50),
                }
                .into(),
            );
        }
    }
    h.truncate(n);
    h
}

fn recorded(events: &[OrderEvent]) -> Vec<RecordedEvent> {
    let stream = StreamId::new(format!("order-{}", order_id().0));
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let new = codec::encode(
                e,
                Uuid::from_u128(i as u128 + 1),
                EventMetadata::default(),
                time::OffsetDateTime::UNIX_EPOCH,
            )
            .unwrap();
            RecordedEvent {
                global_position: Position(i as u64 + 1),
                stream_id: stream.clone(),
                stream_type: "order".into(),
                version: Version(i as u64 + 1),
                event_id: new.event_id,
                event_type: new.event_type,
                schema_version: new.schema_version,
                payload: new.payload,
                metadata: new.metadata,
                recorded_at: new.recorded_at,
            }
        })
        .collect()
}

/// What `orchestrator::load` does with each page read from the store.
fn rehydrate(events: &[RecordedEvent]) -> OrderState {
    orchestrator::fold_recorded::<OrderAggregate>(OrderState::default(), events).unwrap()
}

fn serialize_all(events: &[OrderEvent]) -> usize {
    events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap().len())
        .sum()
}

/// Representative (state, command) pairs.
fn cases() -> Vec<(&'static str, OrderState, OrderCommand)> {
    let authorised = order::fold(&history(3));
    let placed = order::fold(&history(2));
    let captured = order::fold(&history(5));
    let success =
        PaymentObservation::status(ObservationSource::Notification, ObservedStatus::Authorised)
            .with_gateway_order_id("GW10000000000000001");
    vec![
        ("place", OrderState::default(), OrderCommand::Place(place())),
        (
            "capture",
            authorised.clone(),
            OrderCommand::Capture(CapturePayment {
                capture_id: CaptureId(Uuid::from_u128(99)),
                amount: Some(eur(500)),
                final_capture: false,
            }),
        ),
        (
            "refund",
            captured,
            OrderCommand::Refund(RefundPayment {
                refund_id: RefundId(Uuid::from_u128(98)),
                amount: eur(10),
                reason: None,
            }),
        ),
        (
            "initiate_outcome",
            placed,
            OrderCommand::RecordInitiateOutcome(CallOutcome::Accepted(success.clone())),
        ),
        (
            "duplicate_webhook",
            authorised,
            OrderCommand::ApplyGatewayObservation(Observation::Payment(success)),
        ),
    ]
}

/// Not inlined, so callgrind can count it alone (`--toggle-collect`).
#[inline(never)]
fn decide_evolve(mut state: OrderState, cmd: OrderCommand) -> OrderState {
    let events = order::decide(&state, cmd).unwrap();
    // `evolve` in place (`order::apply`), as the command runner's fold.
    for e in &events {
        order::apply(&mut state, e);
    }
    state
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide_evolve");
    for (name, state, cmd) in cases() {
        g.bench_function(name, |b| {
            b.iter_batched(
                || (state.clone(), cmd.clone()),
                |(s, c)| decide_evolve(s, c),
                BatchSize::SmallInput,
            )
        });
        let events = order::decide(&state, cmd.clone()).unwrap();
        g.bench_function(format!("{name}/serde_json_serialize"), |b| {
            b.iter(|| serialize_all(black_box(&events)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("rehydrate");
    for n in [10usize, 100, 1000] {
        let events = history(n);
        let stored = recorded(&events);
        g.throughput(criterion::Throughput::Elements(n as u64));
        g.bench_function(format!("{n}"), |b| b.iter(|| rehydrate(black_box(&stored))));
        g.bench_function(format!("{n}/serde_json_serialize"), |b| {
            b.iter(|| serialize_all(black_box(&events)))
        });
    }
    g.finish();
}

/// Median ns per call of `f` over several timed loops.
fn time_ns(mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let mut samples = Vec::new();
    for _ in 0..15 {
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        samples.push(t.elapsed().as_nanos() as f64 / f64::from(n));
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn ratios() {
    println!("\nengine: ours vs serde_json serialization of the same events (median ns)");
    println!(
        "{:<28} {:>10} {:>12} {:>8} {:>8}",
        "case", "ours ns", "serialize ns", "ratio", "target"
    );
    for (name, state, cmd) in cases() {
        let events = order::decide(&state, cmd.clone()).unwrap();
        let mut setup = Vec::with_capacity(2000);
        let mut outputs = Vec::with_capacity(2000);
        let ours = {
            // Clones are prepared and the resulting states dropped outside
            // the timed loop, as criterion's `iter_batched` does.
            let mut runs = Vec::new();
            for _ in 0..15 {
                setup.clear();
                setup.extend((0..2000).map(|_| (state.clone(), cmd.clone())));
                let t = Instant::now();
                for (s, c) in setup.drain(..) {
                    outputs.push(black_box(decide_evolve(s, c)));
                }
                let v = t.elapsed().as_nanos() as f64 / 2000.0;
                outputs.clear();
                runs.push(v);
            }
            runs.sort_by(f64::total_cmp);
            runs[runs.len() / 2]
        };
        let ser = time_ns(|| {
            black_box(serialize_all(black_box(&events)));
        });
        println!(
            "{:<28} {:>10.0} {:>12.0} {:>8.2} {:>8}",
            format!("decide+evolve {name}"),
            ours,
            ser,
            ours / ser,
            "<= 0.5"
        );
    }
    for n in [10usize, 100, 1000] {
        let events = history(n);
        let stored = recorded(&events);
        let ours = time_ns(|| {
            black_box(rehydrate(black_box(&stored)));
        });
        let ser = time_ns(|| {
            black_box(serialize_all(black_box(&events)));
        });
        println!(
            "{:<28} {:>10.0} {:>12.0} {:>8.2} {:>8}   {:.2} M events/s (target >= 1.0)",
            format!("rehydrate {n}"),
            ours,
            ser,
            ours / ser,
            "-",
            n as f64 / ours * 1000.0
        );
    }
}

/// Runs `reps` times; callgrind attributes the cost to this function.
#[inline(never)]
fn cg_ours<T>(reps: usize, mut f: impl FnMut(usize) -> T) {
    for i in 0..reps {
        black_box(f(i));
    }
}

#[inline(never)]
fn cg_reference<T>(reps: usize, mut f: impl FnMut(usize) -> T) {
    for i in 0..reps {
        black_box(f(i));
    }
}

/// The callgrind driver: each selected case 1,000 times (divide by 1,000).
fn callgrind(only: &str) {
    const REPS: usize = 1000;
    let pick = |name: &str| only == "1" || only == name;
    for (name, state, cmd) in cases() {
        if !pick(name) {
            continue;
        }
        let events = order::decide(&state, cmd.clone()).unwrap();
        let mut inputs: Vec<_> = (0..REPS)
            .map(|_| Some((state.clone(), cmd.clone())))
            .collect();
        // Outputs are dropped outside the measured function, as in criterion.
        let mut outputs = Vec::with_capacity(REPS);
        cg_ours(REPS, |i| {
            let (s, c) = inputs[i].take().unwrap();
            outputs.push(decide_evolve(s, c));
        });
        drop(outputs);
        cg_reference(REPS, |_| serialize_all(black_box(&events)));
    }
    for n in [10usize, 100, 1000] {
        if !pick(&format!("rehydrate_{n}")) {
            continue;
        }
        let events = history(n);
        let stored = recorded(&events);
        let reps = REPS * 10 / n.max(10);
        cg_ours(reps, |_| rehydrate(black_box(&stored)));
        cg_reference(reps, |_| serialize_all(black_box(&events)));
    }
}

fn main() {
    if let Ok(only) = std::env::var("ENGINE_CALLGRIND") {
        callgrind(&only);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    ratios();
}
