//! # payorch-schemas
//!
//! Every wire format payorch speaks, and nothing else:
//!
//! * [`money`]: amounts in ISO 4217 minor units with the exponent table.
//!
//! A subscriber in another service depends on this crate alone to read
//! payorch's events. Dependencies are limited to serde, rust_decimal, uuid and
//! time on purpose (ARCHITECTURE.md §1).

pub mod money;

pub use money::{Currency, Money, MoneyError};
