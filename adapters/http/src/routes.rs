//! The one route table. [`crate::router`] registers exactly these routes
//! and [`crate::openapi::document`] describes exactly these, so the two
//! cannot drift (a test also requests every route with its method).

use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post};

use crate::handlers as h;
use crate::listing as l;
use crate::state::{AppState, HttpConfig};
use crate::webhook;
use crate::webhooks_out as w;

/// HTTP method of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    /// Upper case (`GET`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `Authorization: Bearer <merchant api key>`; POSTs also need
    /// `Idempotency-Key`.
    Merchant,
    /// PayKKa, authenticated by the notification signature.
    PaykkaSignature,
    /// Unauthenticated (health, metrics, API description).
    Public,
}

/// One route: method, path template (`{id}`, same syntax in axum 0.8 and
/// OpenAPI) and what the OpenAPI document says about it.
#[derive(Clone, Copy)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub access: Access,
    /// Name of the request body schema in `components.schemas`.
    pub request: Option<&'static str>,
    /// Whether the request body may be omitted.
    pub request_optional: bool,
    /// Success statuses and the response schema name.
    pub responses: &'static [(u16, &'static str)],
    make: fn(&HttpConfig) -> MethodRouter<AppState>,
}

impl RouteSpec {
    /// The axum method router of this route.
    pub fn method_router(&self, config: &HttpConfig) -> MethodRouter<AppState> {
        (self.make)(config)
    }
}

const PAYMENT: &[(u16, &str)] = &[(200, "Payment"), (202, "Payment")];
const PAYMENT_CREATED: &[(u16, &str)] = &[(201, "Payment"), (202, "Payment")];

/// Every route of the service.
pub fn routes() -> Vec<RouteSpec> {
    use Access::*;
    use Method::*;
    vec![
        RouteSpec {
            method: Post,
            path: "/v1/payments",
            operation_id: "createPayment",
            summary: "Create a payment (card, token or wallet; purchase or first recurring; automatic or manual capture)",
            tag: "payments",
            access: Merchant,
            request: Some("CreatePayment"),
            request_optional: false,
            responses: PAYMENT_CREATED,
            make: |_| post(h::create_payment),
        },
        RouteSpec {
            method: Get,
            path: "/v1/payments",
            operation_id: "listPayments",
            summary: "List the merchant's payments, newest first (limit, starting_after, status, created[gte], created[lte], merchant_reference, metadata[KEY])",
            tag: "payments",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: &[(200, "PaymentList")],
            make: |_| get(l::list_payments),
        },
        RouteSpec {
            method: Get,
            path: "/v1/payments/{id}",
            operation_id: "getPayment",
            summary: "Get a payment",
            tag: "payments",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: PAYMENT,
            make: |_| get(h::get_payment),
        },
        RouteSpec {
            method: Post,
            path: "/v1/payments/{id}/capture",
            operation_id: "capturePayment",
            summary: "Capture (part of) a manually captured payment",
            tag: "payments",
            access: Merchant,
            request: Some("Capture"),
            request_optional: true,
            responses: PAYMENT,
            make: |_| post(h::capture),
        },
        RouteSpec {
            method: Post,
            path: "/v1/payments/{id}/void",
            operation_id: "voidPayment",
            summary: "Release an authorisation with nothing captured",
            tag: "payments",
            access: Merchant,
            request: Some("Void"),
            request_optional: true,
            responses: PAYMENT,
            make: |_| post(h::void),
        },
        RouteSpec {
            method: Post,
            path: "/v1/payments/{id}/refunds",
            operation_id: "refundPayment",
            summary: "Refund part or all of the captured amount",
            tag: "payments",
            access: Merchant,
            request: Some("Refund"),
            request_optional: false,
            responses: PAYMENT,
            make: |_| post(h::refund),
        },
        RouteSpec {
            method: Get,
            path: "/v1/payments/{id}/events",
            operation_id: "listPaymentEvents",
            summary: "The recorded events of a payment, oldest first (limit, starting_after = an event_id)",
            tag: "payments",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: &[(200, "PaymentEvents")],
            make: |_| get(l::payment_events),
        },
        RouteSpec {
            method: Post,
            path: "/v1/checkout-sessions",
            operation_id: "createCheckoutSession",
            summary: "Open a PayKKa checkout session (hosted page, drop-in or components)",
            tag: "checkout",
            access: Merchant,
            request: Some("CreateCheckoutSession"),
            request_optional: false,
            responses: &[(201, "CheckoutSession"), (202, "CheckoutSession")],
            make: |_| post(h::create_checkout_session),
        },
        RouteSpec {
            method: Get,
            path: "/v1/checkout-sessions",
            operation_id: "listCheckoutSessions",
            summary: "List the merchant's checkout sessions, newest first (same parameters as listPayments)",
            tag: "checkout",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: &[(200, "CheckoutSessionList")],
            make: |_| get(l::list_checkout_sessions),
        },
        RouteSpec {
            method: Get,
            path: "/v1/checkout-sessions/{id}",
            operation_id: "getCheckoutSession",
            summary: "Get a checkout session",
            tag: "checkout",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: &[(200, "CheckoutSession")],
            make: |_| get(h::get_checkout_session),
        },
        RouteSpec {
            method: Post,
            path: "/v1/recurring-agreements/{id}/charges",
            operation_id: "chargeRecurringAgreement",
            summary: "Charge an active recurring agreement (merchant-initiated payment)",
            tag: "recurring",
            access: Merchant,
            request: Some("Charge"),
            request_optional: false,
            responses: PAYMENT_CREATED,
            make: |_| post(h::charge_agreement),
        },
        RouteSpec {
            method: Post,
            path: "/v1/recurring-agreements/{id}/cancel",
            operation_id: "cancelRecurringAgreement",
            summary: "Cancel a recurring agreement at PayKKa",
            tag: "recurring",
            access: Merchant,
            request: Some("CancelAgreement"),
            request_optional: true,
            responses: &[(200, "RecurringAgreement"), (202, "RecurringAgreement")],
            make: |_| post(h::cancel_agreement),
        },
        RouteSpec {
            method: Get,
            path: "/v1/recurring-agreements",
            operation_id: "listRecurringAgreements",
            summary: "List the merchant's recurring agreements, newest first (same parameters as listPayments)",
            tag: "recurring",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: &[(200, "RecurringAgreementList")],
            make: |_| get(l::list_agreements),
        },
        RouteSpec {
            method: Get,
            path: "/v1/recurring-agreements/{id}",
            operation_id: "getRecurringAgreement",
            summary: "Get a recurring agreement",
            tag: "recurring",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: &[(200, "RecurringAgreement")],
            make: |_| get(h::get_agreement),
        },
        RouteSpec {
            method: Post,
            path: "/v1/tokens/query",
            operation_id: "queryTokens",
            summary: "List a shopper's stored tokens",
            tag: "tokens",
            access: Merchant,
            request: Some("TokenQuery"),
            request_optional: false,
            responses: &[(200, "TokenList")],
            make: |_| post(h::token_query),
        },
        RouteSpec {
            method: Post,
            path: "/v1/tokens/remove",
            operation_id: "removeToken",
            summary: "Delete a stored token",
            tag: "tokens",
            access: Merchant,
            request: Some("TokenRemove"),
            request_optional: false,
            responses: &[(200, "TokenRemoved")],
            make: |_| post(h::token_remove),
        },
        RouteSpec {
            method: Post,
            path: "/v1/apple-pay/sessions",
            operation_id: "createApplePaySession",
            summary: "Apple Pay merchant validation",
            tag: "wallets",
            access: Merchant,
            request: Some("ApplePaySession"),
            request_optional: false,
            responses: &[(200, "ApplePayMerchantSession")],
            make: |_| post(h::apple_pay_session),
        },
        RouteSpec {
            method: Get,
            path: "/v1/webhook-endpoints",
            operation_id: "listWebhookEndpoints",
            summary: "The merchant's webhook endpoints (configured in [[webhooks]]; secrets never shown)",
            tag: "merchant webhooks",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: &[(200, "WebhookEndpointList")],
            make: |_| get(w::list_endpoints),
        },
        RouteSpec {
            method: Get,
            path: "/v1/webhook-endpoints/{id}/deliveries",
            operation_id: "listWebhookDeliveries",
            summary: "The endpoint's delivery log, newest event first, with every attempt (limit, starting_after = an event_id, status, event_id)",
            tag: "merchant webhooks",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: &[(200, "WebhookDeliveryList")],
            make: |_| get(w::list_deliveries),
        },
        RouteSpec {
            method: Post,
            path: "/v1/webhook-endpoints/{id}/deliveries/{event_id}/redeliver",
            operation_id: "redeliverWebhook",
            summary: "Queue a redelivery of a delivered or given-up delivery: the same event body, newly signed, logged as a manual attempt (202; 409 while it is still retried automatically)",
            tag: "merchant webhooks",
            access: Merchant,
            request: None,
            request_optional: false,
            responses: &[(202, "WebhookDelivery")],
            make: |_| post(w::redeliver),
        },
        RouteSpec {
            method: Post,
            path: "/webhooks/paykka/payments",
            operation_id: "paykkaPaymentNotification",
            summary: "PayKKa transaction result notification (signed)",
            tag: "webhooks",
            access: PaykkaSignature,
            request: Some("PaykkaNotification"),
            request_optional: false,
            responses: &[(200, "PaykkaAck")],
            make: |c| {
                post(webhook::payments).layer(DefaultBodyLimit::max(c.max_webhook_body_bytes))
            },
        },
        RouteSpec {
            method: Post,
            path: "/webhooks/paykka/refunds",
            operation_id: "paykkaRefundNotification",
            summary: "PayKKa refund result notification (signed)",
            tag: "webhooks",
            access: PaykkaSignature,
            request: Some("PaykkaNotification"),
            request_optional: false,
            responses: &[(200, "PaykkaAck")],
            make: |c| post(webhook::refunds).layer(DefaultBodyLimit::max(c.max_webhook_body_bytes)),
        },
        RouteSpec {
            method: Get,
            path: "/healthz",
            operation_id: "health",
            summary: "Health of the service and its dependencies (503 when one is down)",
            tag: "operations",
            access: Public,
            request: None,
            request_optional: false,
            responses: &[(200, "Health")],
            make: |_| get(h::healthz),
        },
        RouteSpec {
            method: Get,
            path: "/metrics",
            operation_id: "metrics",
            summary: "Prometheus metrics (text format)",
            tag: "operations",
            access: Public,
            request: None,
            request_optional: false,
            responses: &[(200, "PrometheusText")],
            make: |_| get(h::metrics),
        },
        RouteSpec {
            method: Get,
            path: "/openapi.json",
            operation_id: "openapi",
            summary: "This OpenAPI 3.1 document",
            tag: "operations",
            access: Public,
            request: None,
            request_optional: false,
            responses: &[(200, "OpenApiDocument")],
            make: |_| get(h::openapi),
        },
    ]
}
