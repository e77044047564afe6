//! # payorch-engine
//!
//! The pure domain of payorch and the ports it talks through. No I/O of its
//! own: storage, PayKKa, brokers and HTTP live in `adapters/*`, which
//! implement the traits declared here (ARCHITECTURE.md §2).
//!
//! Aggregates (pure `decide` / `evolve`):
//!
//! * [`aggregate`]: the `Aggregate` trait and its three implementations.
//! * [`order`]: the Order aggregate: the `decide` match and state types in
//!   `order/mod.rs`, its transition helpers (`order/rules.rs`), gateway
//!   observations (`order/observe.rs`), `evolve` (`order/evolve.rs`), the
//!   transition table.
//! * [`agreement`]: the RecurringAgreement aggregate.
//! * [`checkout`]: the CheckoutSession aggregate.
//! * [`codec`]: event payloads to and from stored JSON, upcasters, and
//!   (`codec/fast.rs`) the strict reader of payorch's own compact JSON.
//!
//! Write side:
//!
//! * [`command`]: the `Engine`: the command runner and one module per
//!   capability (payments, observations, checkout sessions, agreements,
//!   pass-through operations, idempotency, PayKKa request building).
//! * [`orchestrator`]: re-exports of the names the engine had before the
//!   split, for existing callers.
//! * [`reconciler`]: resolves calls whose outcome is open by querying PayKKa.
//! * [`open_work`]: the open-work index the reconciler reads (port,
//!   in-memory implementation, checkpointed projector).
//!
//! Read side (imports nothing from the write side):
//!
//! * [`read`]: stream ids, reading and folding whole streams.
//! * [`view`]: read models (order, agreement, checkout session views).
//! * [`replay`]: fold to a version or time, explain, projections.
//!
//! Ports and infrastructure-free implementations:
//!
//! * [`store`]: the event store, idempotency and checkpoint ports, their
//!   vocabulary types, an in-memory implementation and (feature `testkit`)
//!   the conformance suite every store adapter runs.
//! * [`gateway`]: the PayKKa port, outcome classes and a fake gateway.
//! * [`bus`]: events out: envelope, routing keys, subscriber API, in-process bus, leader lock.
//! * [`wakeup`]: "new events were committed" signals (Postgres
//!   LISTEN/NOTIFY, in process elsewhere) so tailers sleep instead of poll.
//! * [`testing`]: helpers for tests (fixed clock...).

pub mod aggregate;
pub mod agreement;
pub mod bulk;
pub mod bus;
pub mod checkout;
pub mod codec;
pub mod command;
pub mod gateway;
pub mod listing;
pub mod open_work;
pub mod orchestrator;
pub mod order;
pub mod read;
pub mod reconciler;
pub mod replay;
pub mod store;
pub mod stream;
pub mod testing;
pub mod view;
pub mod wakeup;
