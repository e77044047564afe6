//! # payorch-schemas
//!
//! Every wire format payorch speaks, and nothing else:
//!
//! * [`money`]: amounts in ISO 4217 minor units with the exponent table.
//! * [`paykka`]: PayKKa v1.2 requests, responses, notifications and enums.
//! * [`events`]: the public payment event contract (what payorch appends to
//!   its store and publishes to subscribers).
//!
//! A subscriber in another service depends on this crate alone to read
//! payorch's events. Dependencies are limited to serde, rust_decimal, uuid and
//! time on purpose (ARCHITECTURE.md §1).

pub mod events;
pub mod money;
pub mod paykka;

pub use money::{Currency, Money, MoneyError};
