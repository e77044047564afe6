//! Vocabulary types for the ids that appear in payorch events.
//!
//! payorch's own ids (`OrderId`, `AgreementId`, `CheckoutId`, `CaptureId`,
//! `RefundId`) are uuid v7 chosen by the engine; PayKKa's and the merchant's
//! ids (`MerchantId`, `TransId`, `GatewayOrderId`, ...) are opaque strings.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The stream-id / display prefix of this id kind.
            pub const PREFIX: &'static str = $prefix;
            pub const fn from_uuid(id: Uuid) -> Self {
                $name(id)
            }
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
            /// Parses the bare uuid or the prefixed form (`order-<uuid>`).
            pub fn parse(text: &str) -> Option<Self> {
                let t = text.trim();
                let t = t
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('-'))
                    .unwrap_or(t);
                Uuid::parse_str(t).ok().map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

/// What every string id has, whatever holds its text: `new`, `as_str`,
/// `Display` (the bare text), `Debug` (`Name("text")`), `From<&str>`.
macro_rules! string_id_text {
    ($name:ident, $inner:ty) => {
        impl $name {
            pub fn new(id: impl Into<$inner>) -> Self {
                $name(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(<$inner>::from(s))
            }
        }
    };
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
        #[serde(transparent)]
        pub struct $name(pub String);

        string_id_text!($name, String);
    };
}

/// A string id that is shared, not copied: the text lives once behind an
/// `Arc<str>`, so an id moving from a gateway observation into an event and
/// from the event into the order state costs a reference-count bump, not an
/// allocation and a copy. Serialized exactly as a plain string.
macro_rules! shared_string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema), schemars(transparent))]
        pub struct $name(pub Arc<str>);

        string_id_text!($name, Arc<str>);

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Straight from the input text into the shared buffer: one
                // allocation (not a `String` first, then a copy into an `Arc`).
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name(Arc::from(v)))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

uuid_id!(
    /// One payment attempt (one PayKKa `trans_id`); stream `order-<uuid>`.
    OrderId,
    "order"
);
uuid_id!(
    /// A recurring agreement; stream `agreement-<uuid>`.
    AgreementId,
    "agreement"
);
uuid_id!(
    /// A checkout session; stream `checkout-<uuid>`.
    CheckoutId,
    "checkout"
);
uuid_id!(
    /// One capture of an order (several partial captures are possible).
    CaptureId,
    "capture"
);
uuid_id!(
    /// One refund of an order (several partial refunds are possible).
    RefundId,
    "refund"
);

string_id!(
    /// The PayKKa merchant number (`merchant_id`, up to 32 characters).
    MerchantId
);
shared_string_id!(
    /// The merchant's attempt number sent to PayKKa (`trans_id`, <= 64);
    /// PayKKa's idempotency key for one payment.
    TransId
);
shared_string_id!(
    /// The merchant's refund number (`refund_trans_id`, <= 64).
    RefundTransId
);
shared_string_id!(
    /// PayKKa's order number (`order_id`, `GW...`).
    GatewayOrderId
);
string_id!(
    /// PayKKa's refund number (`refund_order_id`, `RG...`).
    GatewayRefundId
);
string_id!(
    /// PayKKa's recurring agreement id (`recurring_agreement_id`).
    RecurringAgreementRef
);
string_id!(
    /// PayKKa's checkout session id (`session_id`, `CS...`).
    SessionId
);

impl OrderId {
    /// The PayKKa `trans_id` of this order: the uuid in simple (32 hex)
    /// form, so a notification's `trans_id` leads straight to the stream.
    pub fn trans_id(&self) -> TransId {
        // Encoded straight into the string (no `fmt` machinery): this runs
        // on every placement.
        let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
        TransId(Arc::from(&*self.0.simple().encode_lower(&mut buf)))
    }

    /// The `refund_trans_id` of the `seq`-th refund (1-based) of this order:
    /// `<trans_id>r<seq>`, which maps a refund notification back to its order.
    pub fn refund_trans_id(&self, seq: u32) -> RefundTransId {
        // Written into a stack buffer, then one allocation for the shared
        // text: 32 hex digits, 'r', then `seq` in decimal (at most 10 digits).
        const HEX: usize = uuid::fmt::Simple::LENGTH;
        // Word-aligned, so the UTF-8 check below takes its ASCII fast path.
        #[repr(align(16))]
        struct Buf([u8; 48]);
        let mut buf = Buf([0u8; 48]);
        let out = &mut buf.0;
        self.0.simple().encode_lower(&mut out[..HEX]);
        out[HEX] = b'r';
        let mut digits = [0u8; 10];
        let mut n = seq;
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let len = HEX + 1 + (digits.len() - start);
        out[HEX + 1..len].copy_from_slice(&digits[start..]);
        // Only ASCII hex digits, 'r' and decimal digits were written.
        let text = std::str::from_utf8(&out[..len]).unwrap_or_default();
        RefundTransId(Arc::from(text))
    }

    /// Inverse of [`OrderId::refund_trans_id`].
    pub fn from_refund_trans_id(r: &RefundTransId) -> Option<(OrderId, u32)> {
        let (id, seq) = r.as_str().split_once('r')?;
        Some((OrderId(Uuid::try_parse(id).ok()?), seq.parse::<u32>().ok()?))
    }

    /// Inverse of [`OrderId::trans_id`].
    pub fn from_trans_id(t: &TransId) -> Option<OrderId> {
        Uuid::try_parse(t.as_str()).ok().map(OrderId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trans_ids_round_trip() {
        let id = OrderId(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001));
        let t = id.trans_id();
        assert_eq!(t.as_str().len(), 32);
        assert_eq!(OrderId::from_trans_id(&t), Some(id));
        let r = id.refund_trans_id(3);
        assert_eq!(OrderId::from_refund_trans_id(&r), Some((id, 3)));
        assert!(r.as_str().len() <= 64);
        assert_eq!(OrderId::parse(&format!("order-{id}")), Some(id));
        assert_eq!(OrderId::parse(&id.to_string()), Some(id));
    }

    #[test]
    fn trans_ids_match_the_formatted_spelling() {
        let id = OrderId(Uuid::from_u128(0x0193_6f2e_8a4b_7c3d_9e2f_1a2b_3c4d_5e6f));
        assert_eq!(id.trans_id().as_str(), format!("{}", id.0.simple()));
        for seq in [0, 1, 9, 10, 99, 100, 12_345, u32::MAX] {
            assert_eq!(
                id.refund_trans_id(seq).as_str(),
                format!("{}r{seq}", id.0.simple())
            );
        }
    }
}
