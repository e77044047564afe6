//! Compatibility facade: the names `payorch_engine::orchestrator` had
//! before the engine was split by capability. New code imports from
//! [`crate::command`], [`crate::aggregate`], [`crate::read`] and
//! [`crate::view`] directly.

pub use crate::aggregate::{Aggregate, AgreementAggregate, CheckoutAggregate, OrderAggregate};
pub use crate::command::{
    CheckoutSessionCreate, CommandContext, Engine, EngineConfig, EngineError, Orchestrator,
    PlacePaymentRequest, ReleaseMode, SessionPaymentCheck,
};
pub use crate::read::{
    agreement_stream, checkout_stream, fold_recorded, load, order_of_trans_id, order_stream,
    read_whole_stream,
};
pub use crate::view::{AgreementView, CheckoutView, OrderView};
