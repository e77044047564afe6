//! PayKKa v1.2 wire types: requests, responses, notifications and enums,
//! exactly as they travel as JSON (spec: `shared/paykka-api/`).
//!
//! | Module | Spec | Types |
//! | --- | --- | --- |
//! | [`envelope`] | README §5, endpoints.md §13 | [`Envelope`], [`Ack`] |
//! | [`payment`] | endpoints.md §1–§4 | [`InitiateRequest`], [`PaymentRequest`], [`PaymentResponse`], [`QueryRequest`], [`CaptureRequest`], [`VoidRequest`] |
//! | [`token`] | endpoints.md §5–§8 | [`TokenQueryRequest`], [`TokenQueryResponse`], [`TokenInfo`], [`TokenRemoveRequest`], [`RecurringCancelRequest`], [`ApplePaySessionRequest`], [`ApplePaySessionResponse`] |
//! | [`session`] | endpoints.md §9–§10 | [`CheckoutSessionRequest`], [`CheckoutSessionResponse`], [`CheckoutSessionQueryRequest`], [`CheckoutSessionQueryResponse`] |
//! | [`refund`] | endpoints.md §11–§12 | [`RefundRequest`], [`RefundQueryRequest`], [`RefundResponse`] |
//! | [`notification`] | endpoints.md §13–§14, flows.md §9 | [`PaymentNotification`], [`RefundNotification`], [`Notification`] |
//! | [`objects`] | models.md §6–§13 | [`Authentication`], [`AuthenticationResult`], [`Browser`], [`Goods`], [`Bill`], [`Shipping`], [`Customer`], [`CardInfo`], [`Balances`], [`PaymentInfo`] |
//! | [`enums`] | models.md §2–§5, §12 | [`PaymentType`], [`AuthorisationType`], [`CaptureMethod`], [`PaymentMethod`], [`TokenUsage`], [`GatewayOrderStatus`], [`RefundStatus`], [`NotifyType`], [`SessionMode`], [`Reason`], [`CardBrand`] |
//! | [`secret`] | ARCHITECTURE.md §2 | [`CardNumber`], [`Cvv`], [`SecretString`] |
//! | [`wire`] | README §5, models.md §15 | [`PaykkaDateTime`], lenient amount serde |
//! | [`validate`] | endpoints.md, codes.md §4 | [`ValidationError`], [`Problem`], [`Validate`] |
//!
//! Conventions shared by every type:
//!
//! * Every request has `merchant_id: String` and `timestamp: i64` (epoch ms).
//! * Amounts are `i64` minor units. Parsing accepts a JSON integer or a
//!   string holding one (`"300"`, seen in doc examples); serializing always
//!   writes an integer.
//! * Currency: requests we build use [`crate::money::Currency`] (only ISO
//!   4217 codes can be sent); responses and notifications keep `String`,
//!   because PayKKa may send any code and an unknown one must not make a
//!   payment result unreadable. `amount_money()` / `balances()` convert.
//! * Read liberally, write strictly: ids (`merchant_id`, `trans_id`,
//!   `order_id`, `goods[].id`, `customer.id`, ...) are accepted as JSON
//!   strings or integers and always written as strings; explicit `null`s
//!   are `None`; date-times without offset are PayKKa local time
//!   ([`PAYKKA_LOCAL_OFFSET`], +08:00).
//! * Unknown fields are ignored in requests and **kept** (`extra`) in
//!   PayKKa's answers and notifications ([`PaymentResponse`],
//!   [`RefundResponse`], [`PaymentNotification`], [`RefundNotification`]);
//!   `Option` fields are skipped when `None` and an empty `extra` writes
//!   nothing, so what we build serializes exactly as before.
//! * Enums never fail: unknown values become `Unknown(raw)` and round-trip.
//! * PAN, CVV, Encrypted Card values, wallet `token_data` and the 3DS
//!   `cryptogram` are masked in `Debug`/`Display` but serialized for real.

pub mod enums;
pub mod envelope;
pub mod notification;
pub mod objects;
pub mod payment;
pub mod refund;
pub mod secret;
pub mod session;
pub mod token;
pub mod validate;
pub mod wire;

pub use enums::{
    AuthorisationType, CaptureMethod, CardBrand, GatewayOrderStatus, NotifyType, PaymentMethod,
    PaymentType, Reason, RefundStatus, SessionMode, TokenUsage,
};
pub use envelope::{Ack, ERROR_CODE_SUCCESS, Envelope, RET_CODE_SUCCESS, RET_MSG_SUCCESS};
pub use notification::{Notification, PaymentNotification, RefundNotification};
pub use objects::{
    Authentication, AuthenticationResult, Balances, Bill, Browser, CardInfo, Customer, Goods,
    MoneyBalances, PaymentInfo, Shipping,
};
pub use payment::{
    CaptureRequest, InitiateRequest, PaymentRequest, PaymentResponse, QueryRequest, VoidRequest,
};
pub use refund::{RefundQueryRequest, RefundRequest, RefundResponse};
pub use secret::{CardNumber, Cvv, SecretString};
pub use session::{
    CheckoutSessionQueryRequest, CheckoutSessionQueryResponse, CheckoutSessionRequest,
    CheckoutSessionResponse,
};
pub use token::{
    ApplePaySessionRequest, ApplePaySessionResponse, RecurringCancelRequest, TokenInfo,
    TokenQueryRequest, TokenQueryResponse, TokenRemoveRequest,
};
pub use validate::{Problem, Validate, ValidationError, luhn_valid};
pub use wire::{DateTimeError, PAYKKA_LOCAL_OFFSET, PaykkaDateTime, normalize_timestamp_ms};
