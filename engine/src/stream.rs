//! Stream identity: the one place that formats and parses stream ids.
//!
//! Every stream is one aggregate instance: `order-<uuid>`,
//! `agreement-<uuid>` or `checkout-<uuid>`, with the stream type stored next
//! to it (`order`, `agreement`, `checkout`). Code that needs a stream id
//! builds a [`StreamRef`] and asks it; code that reads one (the CLI, a
//! listing) parses it here instead of looking at prefixes.

use payorch_schemas::events::{
    AGREEMENT_STREAM_TYPE, AgreementId, CHECKOUT_STREAM_TYPE, CheckoutId, ORDER_STREAM_TYPE,
    OrderId,
};
use uuid::Uuid;

use crate::store::StreamId;

/// Which aggregate instance a stream holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamRef {
    Order(OrderId),
    Agreement(AgreementId),
    Checkout(CheckoutId),
}

/// A stream id that is not `order-`, `agreement-` or `checkout-` followed
/// by a UUID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream id {0:?} is not order-<uuid>, agreement-<uuid> or checkout-<uuid>")]
pub struct UnknownStream(pub String);

impl StreamRef {
    /// The stream id, e.g. `order-0193...`.
    pub fn stream_id(&self) -> StreamId {
        StreamId::new(self.to_string())
    }

    /// The stream type stored with every event of the stream.
    pub fn stream_type(&self) -> &'static str {
        match self {
            StreamRef::Order(_) => ORDER_STREAM_TYPE,
            StreamRef::Agreement(_) => AGREEMENT_STREAM_TYPE,
            StreamRef::Checkout(_) => CHECKOUT_STREAM_TYPE,
        }
    }

    fn prefix(&self) -> &'static str {
        match self {
            StreamRef::Order(_) => "order-",
            StreamRef::Agreement(_) => "agreement-",
            StreamRef::Checkout(_) => "checkout-",
        }
    }

    fn uuid(&self) -> Uuid {
        match self {
            StreamRef::Order(id) => id.0,
            StreamRef::Agreement(id) => id.0,
            StreamRef::Checkout(id) => id.0,
        }
    }

    /// Parses a stream id.
    pub fn parse(s: &str) -> Result<StreamRef, UnknownStream> {
        let unknown = || UnknownStream(s.to_owned());
        let (kind, rest) = s.split_once('-').ok_or_else(unknown)?;
        let uuid = Uuid::parse_str(rest).map_err(|_| unknown())?;
        match kind {
            "order" => Ok(StreamRef::Order(OrderId(uuid))),
            "agreement" => Ok(StreamRef::Agreement(AgreementId(uuid))),
            "checkout" => Ok(StreamRef::Checkout(CheckoutId(uuid))),
            _ => Err(unknown()),
        }
    }

    /// Parses a stored stream id (see [`StreamRef::parse`]).
    pub fn of(id: &StreamId) -> Result<StreamRef, UnknownStream> {
        StreamRef::parse(id.as_str())
    }
}

impl std::fmt::Display for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.prefix(), self.uuid())
    }
}

impl std::str::FromStr for StreamRef {
    type Err = UnknownStream;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamRef::parse(s)
    }
}

impl From<StreamRef> for StreamId {
    fn from(r: StreamRef) -> StreamId {
        r.stream_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_every_kind() {
        let u = Uuid::from_u128(0x0193_6f2e_8a4b_7c3d_9e2f_1a2b_3c4d_5e6f);
        for r in [
            StreamRef::Order(OrderId(u)),
            StreamRef::Agreement(AgreementId(u)),
            StreamRef::Checkout(CheckoutId(u)),
        ] {
            let id = r.stream_id();
            assert!(id.as_str().ends_with(&u.to_string()), "{id:?}");
            assert_eq!(StreamRef::of(&id), Ok(r));
        }
        assert_eq!(
            StreamRef::Order(OrderId(u)).to_string(),
            format!("order-{u}")
        );
        assert_eq!(
            StreamRef::Agreement(AgreementId(u)).stream_type(),
            AGREEMENT_STREAM_TYPE
        );
    }

    #[test]
    fn refuses_what_is_not_a_stream_id() {
        for bad in [
            "",
            "order",
            "order-",
            "order-xyz",
            "refund-0193",
            "payment-00000000-0000-0000-0000-000000000000",
        ] {
            assert!(StreamRef::parse(bad).is_err(), "{bad}");
        }
    }
}
