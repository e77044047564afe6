//! # payorch-engine
//!
//! The pure domain of payorch and the ports it talks through. No I/O of its
//! own: storage, PayKKa, brokers and HTTP live in `adapters/*`, which
//! implement the traits declared here (ARCHITECTURE.md §2).
//!
//! * [`bus`]: events out: envelope, routing keys, subscriber API, in-process bus, leader lock.
//! * [`order`]: the Order aggregate (decide / evolve, transition table).
//! * [`store`]: the event store, idempotency and checkpoint ports, their
//!   vocabulary types, an in-memory implementation and (feature `testkit`)
//!   the conformance suite every store adapter runs.

pub mod agreement;
pub mod bulk;
pub mod bus;
pub mod checkout;
pub mod codec;
pub mod gateway;
pub mod open_work;
pub mod orchestrator;
pub mod order;
pub mod reconciler;
pub mod replay;
pub mod store;
pub mod testing;
pub mod wakeup;
