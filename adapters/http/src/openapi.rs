//! The OpenAPI 3.1 document served at `GET /openapi.json`, built in code
//! from the route table ([`crate::routes::routes`]) plus hand-written
//! component schemas for the types in [`crate::dto`].

use serde_json::{Map, Value, json};

use crate::routes::{Access, Method, routes};

fn money() -> Value {
    json!({
        "type": "object",
        "required": ["minor", "currency"],
        "properties": {
            "minor": {"type": "integer", "format": "int64", "description": "Amount in minor units (cents)"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code"}
        },
        "additionalProperties": false
    })
}

/// `merchant_reference` and `metadata` of a create request.
fn label_inputs() -> (Value, Value) {
    (
        json!({"type": "string", "minLength": 1, "maxLength": 128, "description": "Your own reference (not unique; filter lists with merchant_reference=)"}),
        json!({"type": "object", "maxProperties": 20, "propertyNames": {"minLength": 1, "maxLength": 40}, "additionalProperties": {"type": "string", "maxLength": 500},
               "description": "Key/value text (at most 20 keys, keys 1-40 characters, values up to 500); filter lists with metadata[KEY]=VALUE. A violation is 400 invalid_field with param metadata.KEY"}),
    )
}

/// Adds the labels and times every resource shows to `schema`.
fn with_labels_and_times(mut schema: Value) -> Value {
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("merchant_reference".into(), json!({"type": "string"}));
        props.insert(
            "metadata".into(),
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
        );
        props.insert("created_at".into(), json!({"type": "string", "format": "date-time", "description": "When the resource's first event was recorded (engine clock)"}));
        props.insert("updated_at".into(), json!({"type": "string", "format": "date-time", "description": "When its latest event was recorded"}));
    }
    if let Some(req) = schema.get_mut("required").and_then(Value::as_array_mut) {
        req.extend([json!("metadata"), json!("created_at"), json!("updated_at")]);
    }
    schema
}

/// Adds `merchant_reference` and `metadata` to a create request `schema`.
fn with_label_inputs(mut schema: Value) -> Value {
    let (reference, metadata) = label_inputs();
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("merchant_reference".into(), reference);
        props.insert("metadata".into(), metadata);
    }
    schema
}

fn schemas() -> Value {
    let mut all = base_schemas();
    if let (Some(m), Value::Object(hooks)) = (all.as_object_mut(), webhook_schemas()) {
        m.extend(hooks);
    }
    if let Some(m) = all.as_object_mut() {
        for name in ["Payment", "CheckoutSession", "RecurringAgreement"] {
            if let Some(s) = m.remove(name) {
                m.insert(name.into(), with_labels_and_times(s));
            }
        }
        for name in ["CreatePayment", "CreateCheckoutSession", "Charge"] {
            if let Some(s) = m.remove(name) {
                m.insert(name.into(), with_label_inputs(s));
            }
        }
    }
    all
}

/// The merchant webhook endpoints' schemas (see [`crate::webhooks_out`]).
fn webhook_schemas() -> Value {
    json!({
        "WebhookEndpoint": {"type": "object", "required": ["object", "id", "url", "events"], "properties": {
            "object": {"const": "webhook_endpoint"},
            "id": {"type": "string"},
            "url": {"type": "string", "format": "uri"},
            "events": {"type": "array", "items": {"type": "string"}, "description": "Filters on <stream_type>.<event_type> (order.*, order.captured, *); empty: every event"}
        }},
        "WebhookEndpointList": list_of("WebhookEndpoint"),
        "WebhookAttempt": {"type": "object", "required": ["number", "at", "latency_ms", "manual"], "properties": {
            "number": {"type": "integer", "minimum": 1},
            "at": {"type": "string", "format": "date-time"},
            "http_status": {"type": ["integer", "null"], "description": "The receiver's HTTP status, when one came back"},
            "error": {"type": ["string", "null"], "enum": ["timeout", "connect", "other", null], "description": "Why no status came back"},
            "latency_ms": {"type": "integer"},
            "manual": {"type": "boolean", "description": "A manual redelivery (API or CLI)"}
        }},
        "WebhookDelivery": {"type": "object", "required": ["object", "endpoint_id", "event_id", "stream_id", "event_type", "status", "attempt_count", "attempts"], "properties": {
            "object": {"const": "webhook_delivery"},
            "endpoint_id": {"type": "string"},
            "event_id": {"type": "string", "format": "uuid", "description": "The event delivered (also the Payorch-Event-Id header)"},
            "stream_id": {"type": "string"},
            "event_type": {"type": "string"},
            "status": {"enum": ["delivered", "failed_retrying", "given_up"]},
            "attempt_count": {"type": "integer"},
            "first_attempt_at": {"type": "string", "format": "date-time"},
            "last_attempt_at": {"type": "string", "format": "date-time"},
            "next_attempt_at": {"type": ["string", "null"], "format": "date-time", "description": "The next automatic attempt (failed_retrying)"},
            "redelivery_requested_at": {"type": ["string", "null"], "format": "date-time", "description": "A manual redelivery is queued"},
            "attempts": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookAttempt"}, "description": "Oldest first"}
        }},
        "WebhookDeliveryList": list_of("WebhookDelivery")
    })
}

fn base_schemas() -> Value {
    let call_progress = json!({"type": "string", "enum": ["requested", "outcome_unknown", "succeeded", "declined"]});
    json!({
        "Money": money(),
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["type", "code", "message", "request_id"],
                "properties": {
                    "type": {"type": "string", "enum": ["invalid_request_error", "authentication_error", "idempotency_error", "card_error", "rate_limit_error", "api_error"], "description": "Broad class of the error"},
                    "code": {"type": "string", "description": "Stable snake_case code"},
                    "message": {"type": "string"},
                    "param": {"type": "string", "description": "The request field at fault (e.g. amount.minor), when one is"},
                    "request_id": {"type": "string", "description": "The request's X-Request-Id (given or generated)"}
                }
            }}
        },
        "PaymentMethod": {
            "oneOf": [
                {"type": "object", "required": ["type", "number", "exp_month", "exp_year"], "properties": {
                    "type": {"const": "card"},
                    "number": {"type": "string", "pattern": "^[0-9]{12,19}$", "writeOnly": true},
                    "exp_month": {"type": "string", "example": "07"},
                    "exp_year": {"type": "string", "example": "2031"},
                    "cvv": {"type": "string", "pattern": "^[0-9]{3,4}$", "writeOnly": true},
                    "holder_name": {"type": "string"}
                }},
                {"type": "object", "required": ["type", "encrypted_card_number", "encrypted_exp_month", "encrypted_exp_year"], "properties": {
                    "type": {"const": "encrypted_card"},
                    "encrypted_card_number": {"type": "string"},
                    "encrypted_exp_month": {"type": "string"},
                    "encrypted_exp_year": {"type": "string"},
                    "encrypted_cvv": {"type": "string"}
                }},
                {"type": "object", "required": ["type", "token", "shopper_reference"], "properties": {
                    "type": {"const": "token"},
                    "token": {"type": "string", "maxLength": 64},
                    "shopper_reference": {"type": "string", "maxLength": 64},
                    "usage": {"enum": ["CARD_ON_FILE", "SUBSCRIPTION"]}
                }},
                {"type": "object", "required": ["type", "wallet", "token_data"], "properties": {
                    "type": {"const": "wallet"},
                    "wallet": {"enum": ["GOOGLE_PAY", "APPLE_PAY"]},
                    "token_data": {"type": "string", "writeOnly": true}
                }}
            ],
            "discriminator": {"propertyName": "type"}
        },
        "CreatePayment": {
            "type": "object",
            "required": ["amount", "payment_method"],
            "additionalProperties": false,
            "properties": {
                "amount": {"$ref": "#/components/schemas/Money"},
                "payment_type": {"enum": ["PURCHASE", "RECURRING"], "default": "PURCHASE"},
                "authorisation_type": {"enum": ["FINAL_AUTH", "PRE_AUTH"], "default": "FINAL_AUTH"},
                "capture_method": {"enum": ["AUTOMATIC", "MANUAL"], "default": "AUTOMATIC"},
                "payment_method": {"$ref": "#/components/schemas/PaymentMethod"},
                "store_token": {"type": "object", "required": ["purpose", "shopper_reference"], "properties": {
                    "purpose": {"enum": ["CARD_ON_FILE", "SUBSCRIPTION"]},
                    "shopper_reference": {"type": "string", "maxLength": 64}
                }},
                "return_url": {"type": "string", "format": "uri"},
                "browser": {"type": "object", "description": "PayKKa BrowserReqDto for 3-D Secure 2"}
            }
        },
        "Capture": {"type": "object", "additionalProperties": false, "properties": {
            "amount": {"$ref": "#/components/schemas/Money"},
            "final_capture": {"type": "boolean", "default": false}
        }},
        "Void": {"type": "object", "additionalProperties": false, "properties": {
            "reason": {"enum": ["DUPLICATE", "FRAUDULENT", "REQUESTED_BY_CUSTOMER", "OTHER"]}
        }},
        "Refund": {"type": "object", "required": ["amount"], "additionalProperties": false, "properties": {
            "amount": {"$ref": "#/components/schemas/Money"},
            "reason": {"enum": ["DUPLICATE", "FRAUDULENT", "REQUESTED_BY_CUSTOMER", "OTHER"]}
        }},
        "Payment": {
            "type": "object",
            "required": ["id", "status", "amount", "authorised", "captured", "refunded", "payment_type", "capture_method", "trans_id", "captures", "refunds", "version"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "status": {"enum": ["authorisation_pending", "authorisation_unknown", "challenge_required", "authorised", "partially_captured", "captured", "partially_refunded", "refunded", "declined", "voided"]},
                "amount": {"$ref": "#/components/schemas/Money"},
                "authorised": {"$ref": "#/components/schemas/Money"},
                "captured": {"$ref": "#/components/schemas/Money"},
                "refunded": {"$ref": "#/components/schemas/Money"},
                "payment_type": {"enum": ["PURCHASE", "RECURRING"]},
                "capture_method": {"enum": ["AUTOMATIC", "MANUAL"]},
                "trans_id": {"type": "string"},
                "gateway_order_id": {"type": "string"},
                "next_action": {"type": "object", "properties": {"type": {"const": "redirect_to_url"}, "url": {"type": "string"}}},
                "decline": {"type": "object", "properties": {"code": {"type": "string"}, "description": {"type": "string"}}},
                "card": {"type": "object", "properties": {
                    "brand": {"type": "string"}, "bin": {"type": "string"}, "last4": {"type": "string"},
                    "exp_month": {"type": "integer"}, "exp_year": {"type": "integer"}
                }},
                "token": {"type": "string"},
                "agreement_id": {"type": "string", "format": "uuid"},
                "captures": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "amount": {"$ref": "#/components/schemas/Money"},
                    "final_capture": {"type": "boolean"},
                    "status": call_progress
                }}},
                "refunds": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "refund_trans_id": {"type": "string"},
                    "amount": {"$ref": "#/components/schemas/Money"},
                    "status": call_progress
                }}},
                "void": call_progress,
                "version": {"type": "integer"}
            }
        },
        "PaymentEvents": {"type": "object", "properties": {
            "payment_id": {"type": "string", "format": "uuid"},
            "events": {"type": "array", "items": {"type": "object", "description": "EventEnvelope of an order event (payorch-schemas)"}},
            "has_more": {"type": "boolean"}
        }},
        "PaymentList": list_of("Payment"),
        "CheckoutSessionList": list_of("CheckoutSession"),
        "RecurringAgreementList": list_of("RecurringAgreement"),
        "CreateCheckoutSession": {"type": "object", "required": ["amount"], "additionalProperties": false, "properties": {
            "amount": {"$ref": "#/components/schemas/Money"},
            "payment_type": {"enum": ["PURCHASE", "RECURRING"]},
            "capture_method": {"enum": ["AUTOMATIC", "MANUAL"]},
            "session_mode": {"enum": ["HOSTED", "DROP_IN", "COMPONENT"], "default": "HOSTED"},
            "return_url": {"type": "string", "format": "uri"},
            "expires_at": {"type": "string", "format": "date-time"}
        }},
        "CheckoutSession": {"type": "object", "required": ["id", "status", "amount", "expires_at", "version"], "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"enum": ["requested", "open", "completed", "expired", "cancelled"]},
            "amount": {"$ref": "#/components/schemas/Money"},
            "session_id": {"type": "string"},
            "session_url": {"type": "string"},
            "payment_id": {"type": "string", "format": "uuid"},
            "expires_at": {"type": "string", "format": "date-time", "description": "The request's expires_at, or the default fixed when the session was created (replays return the same)"},
            "version": {"type": "integer"}
        }},
        "Charge": {"type": "object", "required": ["amount"], "additionalProperties": false, "properties": {
            "amount": {"$ref": "#/components/schemas/Money"}
        }},
        "CancelAgreement": {"type": "object", "additionalProperties": false, "properties": {
            "reason": {"type": "string"}
        }},
        "RecurringAgreement": {"type": "object", "required": ["id", "status", "first_payment_id", "shopper_reference", "charges", "version"], "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"enum": ["active", "cancelling", "cancelled"]},
            "first_payment_id": {"type": "string", "format": "uuid"},
            "shopper_reference": {"type": "string"},
            "charges": {"type": "array", "items": {"type": "string", "format": "uuid"}},
            "version": {"type": "integer"}
        }},
        "TokenQuery": {"type": "object", "required": ["shopper_reference"], "additionalProperties": false, "properties": {
            "shopper_reference": {"type": "string", "maxLength": 64}
        }},
        "TokenList": {"type": "object", "properties": {
            "shopper_reference": {"type": "string"},
            "tokens": {"type": "array", "items": {"type": "object"}}
        }},
        "TokenRemove": {"type": "object", "required": ["token", "shopper_reference"], "additionalProperties": false, "properties": {
            "token": {"type": "string"},
            "shopper_reference": {"type": "string"}
        }},
        "TokenRemoved": {"type": "object", "properties": {"token": {"type": "string"}, "removed": {"type": "boolean"}}},
        "ApplePaySession": {"type": "object", "required": ["domain_name"], "additionalProperties": false, "properties": {
            "domain_name": {"type": "string"},
            "display_name": {"type": "string"}
        }},
        "ApplePayMerchantSession": {"type": "object", "properties": {"merchant_session": {}}},
        "PaykkaNotification": {"type": "object", "description": "PayKKa v1.2 notification body, verified against the `signature` header"},
        "PaykkaAck": {"type": "object", "properties": {"ret_code": {"type": "string"}, "ret_msg": {"type": "string"}}},
        "Health": {"type": "object", "properties": {
            "status": {"enum": ["ok", "degraded", "unavailable"], "description": "degraded (HTTP 200): only a non-critical check failed (paykka reachability)"},
            "checks": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "status": {"enum": ["ok", "unavailable"]}, "error": {"type": "string"}
            }}}
        }},
        "PrometheusText": {"type": "string"},
        "OpenApiDocument": {"type": "object"}
    })
}

fn list_of(item: &str) -> Value {
    json!({"type": "object", "required": ["object", "url", "has_more", "data"], "properties": {
        "object": {"const": "list"},
        "url": {"type": "string"},
        "has_more": {"type": "boolean", "description": "More items follow: ask again with starting_after = the last id"},
        "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}}
    }})
}

/// Query parameters of the lists (see [`crate::listing`]).
fn list_parameters() -> Vec<Value> {
    let q = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema});
    vec![
        q(
            "limit",
            "Items per page, 1 to 100 (default 10)",
            json!({"type": "integer", "minimum": 1, "maximum": 100}),
        ),
        q(
            "starting_after",
            "The id of the last item of the previous page",
            json!({"type": "string", "format": "uuid"}),
        ),
        q(
            "status",
            "One state (snake_case)",
            json!({"type": "string"}),
        ),
        q(
            "created[gte]",
            "Created at or after (unix seconds or RFC 3339)",
            json!({"type": "string"}),
        ),
        q(
            "created[lte]",
            "Created at or before (unix seconds or RFC 3339)",
            json!({"type": "string"}),
        ),
        q(
            "merchant_reference",
            "The merchant's own reference",
            json!({"type": "string"}),
        ),
        json!({"name": "metadata", "in": "query", "required": false, "style": "deepObject", "explode": true,
               "description": "One metadata key/value: metadata[KEY]=VALUE",
               "schema": {"type": "object", "additionalProperties": {"type": "string"}}}),
    ]
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in routes() {
        let mut op = Map::new();
        op.insert("operationId".into(), json!(r.operation_id));
        op.insert("summary".into(), json!(r.summary));
        op.insert("tags".into(), json!([r.tag]));
        let mut params = Vec::new();
        if r.path.starts_with("/v1/webhook-endpoints/") {
            params.push(json!({"name": "id", "in": "path", "required": true, "description": "The endpoint id ([[webhooks]] id)", "schema": {"type": "string"}}));
        } else if r.path.contains("{id}") {
            params.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}));
        }
        if r.path.contains("{event_id}") {
            params.push(json!({"name": "event_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}));
        }
        match r.access {
            Access::Merchant => {
                op.insert("security".into(), json!([{"merchantApiKey": []}]));
                if r.method == Method::Post {
                    params.push(json!({
                        "name": "Idempotency-Key", "in": "header", "required": true,
                        "description": "Unique per request, scoped per merchant; resend it on retries. Same key + same request returns the stored response of the request that executed (same status and body); same key + another request is 409 idempotency_key_reused; while that request still executes, 409 idempotency_key_in_progress with Retry-After.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255}
                    }));
                }
            }
            Access::PaykkaSignature => {
                op.insert("security".into(), json!([{"paykkaSignature": []}]));
            }
            Access::Public => {
                op.insert("security".into(), json!([]));
            }
        }
        if r.method == Method::Get && r.operation_id.starts_with("list") {
            if r.operation_id == "listWebhookEndpoints" {
                // No parameters: a merchant has few endpoints.
            } else if r.operation_id == "listWebhookDeliveries" {
                params.push(json!({"name": "limit", "in": "query", "required": false, "description": "Deliveries per page, 1 to 100 (default 10)", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}));
                params.push(json!({"name": "starting_after", "in": "query", "required": false, "description": "The event_id of the last delivery of the previous page", "schema": {"type": "string", "format": "uuid"}}));
                params.push(json!({"name": "status", "in": "query", "required": false, "schema": {"enum": ["delivered", "failed_retrying", "given_up"]}}));
                params.push(json!({"name": "event_id", "in": "query", "required": false, "description": "Only the delivery of this event", "schema": {"type": "string", "format": "uuid"}}));
            } else if r.operation_id == "listPaymentEvents" {
                params.push(json!({"name": "limit", "in": "query", "required": false, "description": "Events per page, 1 to 100 (default 100)", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}));
                params.push(json!({"name": "starting_after", "in": "query", "required": false, "description": "The event_id of the last event of the previous page", "schema": {"type": "string", "format": "uuid"}}));
            } else {
                params.extend(list_parameters());
            }
        }
        params.push(json!({
            "name": "X-Request-Id", "in": "header", "required": false,
            "description": "Your id for this request (1-128 visible ASCII characters; a UUID also becomes the events' correlation id); generated when absent, echoed in the response header and error bodies.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 128}
        }));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(schema) = r.request {
            op.insert(
                "requestBody".into(),
                json!({
                    "required": !r.request_optional,
                    "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
                }),
            );
        }
        let mut responses = Map::new();
        for (status, schema) in r.responses {
            let media = if *schema == "PrometheusText" {
                "text/plain"
            } else {
                "application/json"
            };
            responses.insert(
                status.to_string(),
                json!({
                    "description": format!("{schema}"),
                    "content": {media: {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
                }),
            );
        }
        match r.access {
            Access::Merchant => {
                responses.insert(
                    "400".into(),
                    error_response("Invalid request (invalid_field with param naming the field, also for anything PayKKa's schema rules refuse; nothing recorded), malformed JSON or missing Idempotency-Key"),
                );
                responses.insert("401".into(), error_response("Missing or unknown API key"));
                responses.insert(
                    "404".into(),
                    error_response("Not found (or owned by another merchant)"),
                );
                if r.method == Method::Post {
                    responses.insert("409".into(), error_response("Illegal in the current state, Idempotency-Key reused with another request, or its request still in progress (Retry-After)"));
                    responses.insert("413".into(), error_response("Body larger than the limit"));
                    responses.insert(
                        "422".into(),
                        error_response("Amount or currency not acceptable for this payment"),
                    );
                }
                responses.insert(
                    "503".into(),
                    error_response("Storage unavailable, or PayKKa unreachable before anything was sent (paykka_unreachable, Retry-After); retry with the same Idempotency-Key"),
                );
            }
            Access::PaykkaSignature => {
                responses.insert("401".into(), json!({"description": "Invalid signature or stale timestamp; nothing recorded", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaykkaAck"}}}}));
                responses.insert("503".into(), json!({"description": "Storage unavailable; PayKKa redelivers", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaykkaAck"}}}}));
            }
            Access::Public => {
                if r.path == "/healthz" {
                    responses.insert("503".into(), json!({"description": "A dependency is down", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}));
                }
            }
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(r.method.as_str().to_ascii_lowercase(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "payorch merchant API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Payments on PayKKa v1.2 through payorch. Every POST needs an Idempotency-Key header. Errors are {\"error\":{\"type\",\"code\",\"message\",\"param\",\"request_id\"}}; every response carries X-Request-Id."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "merchantApiKey": {"type": "http", "scheme": "bearer", "description": "Per-merchant API key"},
                "paykkaSignature": {"type": "apiKey", "in": "header", "name": "signature", "description": "PayKKa RSA signature of the raw body"}
            },
            "schemas": schemas()
        }
    })
}
