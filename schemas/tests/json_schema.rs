//! The JSON Schema files under `schemas/json/` are generated from the event
//! types and must stay current.
//!
//! * `checked_in_schemas_are_current` regenerates every schema and compares
//!   it with the checked-in file. To rewrite the files after changing an
//!   event type, run
//!   `UPDATE_JSON_SCHEMAS=1 cargo test -p payorch-schemas --features json-schema --test json_schema`.
//! * `every_variant_sample_matches_its_schema` serializes one sample of every
//!   event variant and checks it against the generated schema with a small
//!   structural validator (below): the schema must accept what serde really
//!   produces, and must declare every field serde writes.
//! * The `validator_rejects_*` tests show the validator can fail.
#![cfg(feature = "json-schema")]

use std::collections::BTreeSet;
use std::path::PathBuf;

use payorch_schemas::events::agreement::*;
use payorch_schemas::events::checkout::*;
use payorch_schemas::events::order::*;
use payorch_schemas::events::*;
use payorch_schemas::{Currency, Money};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const UPDATE_HINT: &str =
    "UPDATE_JSON_SCHEMAS=1 cargo test -p payorch-schemas --features json-schema --test json_schema";

/// The schema of `T` as checked in: draft 2020-12, describing what payorch
/// serializes.
fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// Every generated file: name under `schemas/json/` and schema.
fn generated() -> Vec<(&'static str, Value)> {
    vec![
        ("order_event.schema.json", schema_of::<OrderEvent>()),
        ("agreement_event.schema.json", schema_of::<AgreementEvent>()),
        ("checkout_event.schema.json", schema_of::<CheckoutEvent>()),
    ]
}

fn json_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json")
}

fn pretty(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[test]
fn checked_in_schemas_are_current() {
    let update = std::env::var_os("UPDATE_JSON_SCHEMAS").is_some_and(|v| !v.is_empty() && v != "0");
    let dir = json_dir();
    let mut stale = Vec::new();
    for (name, schema) in generated() {
        let path = dir.join(name);
        let want = pretty(&schema);
        if update {
            std::fs::create_dir_all(&dir).expect("create schemas/json");
            std::fs::write(&path, &want).expect("write schema file");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => stale.push(format!("{} differs from the event types", path.display())),
            Err(e) => stale.push(format!("{} cannot be read: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "JSON Schema files are out of date:\n  {}\nRegenerate them with:\n  {UPDATE_HINT}",
        stale.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Samples: one of every variant, optional fields set so their schemas are
// exercised too.

fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x0193_6f2e_8a4b_7c3d_9e2f_0000_0000_0000 + n)
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn card() -> CardSummary {
    CardSummary {
        brand: Some("VISA".into()),
        bin: Some("411111".into()),
        last4: Some("1111".into()),
        exp_month: Some(12),
        exp_year: Some(2030),
    }
}

fn order_samples() -> Vec<OrderEvent> {
    let order_id = OrderId(uuid(1));
    let capture_id = CaptureId(uuid(2));
    let refund_id = RefundId(uuid(3));
    vec![
        PaymentPlaced {
            order_id,
            merchant_id: MerchantId::new("M100"),
            trans_id: order_id.trans_id(),
            amount: eur(1299),
            payment_type: PaymentKind::Recurring,
            authorisation_type: AuthorisationKind::PreAuth,
            capture_method: CaptureMode::Manual,
            instrument: InstrumentSummary {
                method: "BANKCARD".into(),
                card: Some(card()),
                token: Some("tok_1".into()),
            },
            store_token: Some(TokenRequest {
                purpose: TokenPurpose::Subscription,
                shopper_reference: "shopper-1".into(),
            }),
            agreement_id: Some(AgreementId(uuid(4))),
            checkout_id: Some(CheckoutId(uuid(5))),
            session_id: Some(SessionId::new("CS123")),
            merchant_reference: Some("order-1299".into()),
            metadata: [("shop".to_owned(), "berlin".to_owned())].into(),
        }
        .into(),
        AuthorisationRequested {
            trans_id: order_id.trans_id(),
        }
        .into(),
        ChallengeRequired {
            authentication_url: "https://3ds.example/challenge".into(),
        }
        .into(),
        ChallengeCompleted {}.into(),
        ChallengeFailed {
            code: "300001".into(),
            description: "3DS failed".into(),
        }
        .into(),
        ChallengeExpired {}.into(),
        Authorised {
            gateway_order_id: GatewayOrderId::new("GW1"),
            amount: eur(1299),
            card: Some(card()),
        }
        .into(),
        AuthorisationDeclined {
            code: "200005".into(),
            description: "Do not honour".into(),
        }
        .into(),
        AuthorisationOutcomeUnknown {
            reason: "timeout".into(),
        }
        .into(),
        Succeeded {
            gateway_order_id: Some(GatewayOrderId::new("GW1")),
            captured: eur(1299),
        }
        .into(),
        CaptureRequested {
            capture_id,
            amount: eur(500),
            final_capture: false,
        }
        .into(),
        Captured {
            capture_id,
            amount: eur(500),
            remainder_released: true,
        }
        .into(),
        CaptureDeclined {
            capture_id,
            code: "1".into(),
            description: "no".into(),
        }
        .into(),
        CaptureOutcomeUnknown {
            capture_id,
            reason: "5xx".into(),
        }
        .into(),
        VoidRequested {
            reason: Some("customer cancelled".into()),
        }
        .into(),
        Voided {}.into(),
        VoidDeclined {
            code: "1".into(),
            description: "no".into(),
        }
        .into(),
        VoidOutcomeUnknown {
            reason: "timeout".into(),
        }
        .into(),
        RemainderReleased {
            amount: Money::new(700, Currency::EUR),
        }
        .into(),
        RefundRequested {
            refund_id,
            refund_trans_id: order_id.refund_trans_id(1),
            amount: eur(100),
            reason: Some("returned".into()),
        }
        .into(),
        Refunded {
            refund_id,
            gateway_refund_id: Some(GatewayRefundId::new("RG1")),
            amount: eur(100),
        }
        .into(),
        RefundDeclined {
            refund_id,
            code: "1".into(),
            description: "no".into(),
        }
        .into(),
        RefundOutcomeUnknown {
            refund_id,
            reason: "timeout".into(),
        }
        .into(),
        TokenStored {
            token: "tok_1".into(),
            shopper_reference: "shopper-1".into(),
            recurring_agreement_ref: Some(RecurringAgreementRef::new("RA1")),
        }
        .into(),
    ]
}

fn agreement_samples() -> Vec<AgreementEvent> {
    vec![
        AgreementCreated {
            agreement_id: AgreementId(uuid(4)),
            merchant_id: MerchantId::new("M100"),
            first_order_id: OrderId(uuid(1)),
            token: "tok_1".into(),
            shopper_reference: "shopper-1".into(),
            recurring_agreement_ref: Some(RecurringAgreementRef::new("RA1")),
            card: Some(card()),
            merchant_reference: Some("order-1299".into()),
            metadata: [("shop".to_owned(), "berlin".to_owned())].into(),
        }
        .into(),
        AgreementCharged {
            order_id: OrderId(uuid(6)),
            amount: Money::new(1000, Currency::new("JPY").expect("JPY is ISO 4217")),
        }
        .into(),
        AgreementCancelRequested {
            reason: Some("churn".into()),
        }
        .into(),
        AgreementCancelled {}.into(),
        AgreementCancelDeclined {
            code: "1".into(),
            description: "no".into(),
        }
        .into(),
        AgreementCancelOutcomeUnknown {
            reason: "timeout".into(),
        }
        .into(),
    ]
}

fn checkout_samples() -> Vec<CheckoutEvent> {
    let expires_at =
        OffsetDateTime::parse("2026-11-25T17:30:00.123Z", &Rfc3339).expect("valid RFC 3339");
    vec![
        CheckoutSessionRequested {
            checkout_id: CheckoutId(uuid(5)),
            merchant_id: MerchantId::new("M100"),
            trans_id: OrderId(uuid(5)).trans_id(),
            amount: eur(2500),
            payment_type: PaymentKind::Purchase,
            capture_method: CaptureMode::Automatic,
            session_mode: "HOSTED".into(),
            expires_at,
            merchant_reference: None,
            metadata: Default::default(),
        }
        .into(),
        CheckoutSessionCreated {
            session_id: SessionId::new("CS123"),
            session_url: Some("https://pay.example/CS123".into()),
        }
        .into(),
        CheckoutSessionDeclined {
            code: "1".into(),
            description: "no".into(),
        }
        .into(),
        CheckoutSessionOutcomeUnknown {
            reason: "timeout".into(),
        }
        .into(),
        CheckoutSessionCompleted {
            order_id: OrderId(uuid(5)),
        }
        .into(),
        CheckoutSessionExpired {}.into(),
        CheckoutSessionCancelled {}.into(),
    ]
}

/// (schema file, event types of the enum, serialized samples).
fn cases() -> Vec<(&'static str, &'static [&'static str], Vec<Value>)> {
    fn values<T: serde::Serialize>(samples: Vec<T>) -> Vec<Value> {
        samples
            .iter()
            .map(|s| serde_json::to_value(s).expect("an event serializes"))
            .collect()
    }
    vec![
        (
            "order_event.schema.json",
            OrderEvent::EVENT_TYPES,
            values(order_samples()),
        ),
        (
            "agreement_event.schema.json",
            AgreementEvent::EVENT_TYPES,
            values(agreement_samples()),
        ),
        (
            "checkout_event.schema.json",
            CheckoutEvent::EVENT_TYPES,
            values(checkout_samples()),
        ),
    ]
}

fn schema_named(name: &str) -> Value {
    generated()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no generated schema {name}"))
}

/// The `event_type` constants of the root `oneOf`.
fn schema_event_types(schema: &Value) -> Vec<String> {
    schema["oneOf"]
        .as_array()
        .expect("an event schema is a oneOf")
        .iter()
        .map(|branch| {
            branch["properties"]["event_type"]["const"]
                .as_str()
                .expect("each branch fixes event_type")
                .to_owned()
        })
        .collect()
}

#[test]
fn every_event_type_appears_in_its_schema() {
    for (file, event_types, samples) in cases() {
        let schema = schema_named(file);
        let in_schema: BTreeSet<String> = schema_event_types(&schema).into_iter().collect();
        let declared: BTreeSet<String> = event_types.iter().map(|t| t.to_string()).collect();
        assert_eq!(in_schema, declared, "{file}: oneOf vs EVENT_TYPES");
        // One sample per variant: a new variant without a sample fails here.
        let sampled: BTreeSet<String> = samples
            .iter()
            .map(|s| s["event_type"].as_str().expect("tagged").to_owned())
            .collect();
        assert_eq!(sampled, declared, "{file}: every variant needs a sample");
        assert_eq!(samples.len(), event_types.len(), "{file}: one sample each");
    }
}

#[test]
fn every_variant_sample_matches_its_schema() {
    for (file, _, samples) in cases() {
        let schema = schema_named(file);
        for sample in &samples {
            if let Err(e) = validate(&schema, &schema, sample, &[], "$") {
                panic!("{file}: sample {sample} does not match: {e}");
            }
        }
    }
}

#[test]
fn minimal_samples_match_too() {
    // Optional fields absent: what most events look like on the wire.
    let schema = schema_named("order_event.schema.json");
    let minimal = serde_json::to_value(OrderEvent::from(Succeeded {
        gateway_order_id: None,
        captured: eur(1),
    }))
    .expect("serializes");
    assert_eq!(
        minimal,
        json!({"event_type": "succeeded", "captured": {"minor": 1, "currency": "EUR"}})
    );
    validate(&schema, &schema, &minimal, &[], "$").expect("minimal sample matches");
}

// ---------------------------------------------------------------------------
// The validator can fail.

fn placed_sample() -> (Value, Value) {
    let schema = schema_named("order_event.schema.json");
    let sample = serde_json::to_value(&order_samples()[0]).expect("serializes");
    assert_eq!(sample["event_type"], "payment_placed");
    validate(&schema, &schema, &sample, &[], "$").expect("the untouched sample matches");
    (schema, sample)
}

fn rejected(schema: &Value, sample: &Value) -> String {
    match validate(schema, schema, sample, &[], "$") {
        Ok(()) => panic!("sample {sample} was accepted"),
        Err(e) => e,
    }
}

#[test]
fn validator_rejects_a_missing_required_field() {
    let (schema, mut sample) = placed_sample();
    sample.as_object_mut().expect("object").remove("amount");
    rejected(&schema, &sample);
}

#[test]
fn validator_rejects_a_bad_currency_and_uuid() {
    let (schema, mut sample) = placed_sample();
    sample["amount"]["currency"] = json!("eur");
    rejected(&schema, &sample);
    let (schema, mut sample) = placed_sample();
    sample["order_id"] = json!("not-a-uuid");
    rejected(&schema, &sample);
    let (schema, mut sample) = placed_sample();
    sample["amount"]["minor"] = json!("1299");
    rejected(&schema, &sample);
}

#[test]
fn validator_rejects_an_unknown_event_type_and_undeclared_fields() {
    let (schema, mut sample) = placed_sample();
    sample["event_type"] = json!("payment_teleported");
    rejected(&schema, &sample);
    let (schema, mut sample) = placed_sample();
    sample["surprise"] = json!(1);
    rejected(&schema, &sample);
    let (schema, mut sample) = placed_sample();
    sample["instrument"]["card"]["pan"] = json!("4111111111111111");
    rejected(&schema, &sample);
}

#[test]
fn validator_rejects_a_bad_enum_value_and_date() {
    let (schema, mut sample) = placed_sample();
    sample["capture_method"] = json!("manual");
    rejected(&schema, &sample);
    let schema = schema_named("checkout_event.schema.json");
    let mut sample = serde_json::to_value(&checkout_samples()[0]).expect("serializes");
    validate(&schema, &schema, &sample, &[], "$").expect("untouched sample matches");
    sample["expires_at"] = json!("tomorrow");
    rejected(&schema, &sample);
}

// ---------------------------------------------------------------------------
// A small structural JSON Schema validator: the subset of draft 2020-12 that
// schemars emits for these types. It refuses keywords it does not know, so a
// schema change can never be silently unchecked. It is also stricter than
// JSON Schema on purpose: an object may only carry declared properties (the
// files leave `additionalProperties` open for forward compatibility, but
// every field payorch writes must be documented).

/// Annotation keywords without a validation meaning.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$defs",
    "title",
    "description",
    "default",
    "examples",
];

fn resolve<'a>(root: &'a Value, reference: &str) -> Result<&'a Value, String> {
    let name = reference
        .strip_prefix("#/$defs/")
        .ok_or_else(|| format!("unsupported $ref {reference}"))?;
    root["$defs"]
        .get(name)
        .ok_or_else(|| format!("dangling $ref {reference}"))
}

/// The property names declared by `schema` itself and, through `$ref`, by
/// the schema it refers to.
fn declared_properties(root: &Value, schema: &Value) -> Result<BTreeSet<String>, String> {
    let mut names: BTreeSet<String> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        names.extend(declared_properties(root, resolve(root, reference)?)?);
    }
    Ok(names)
}

fn type_matches(ty: &str, value: &Value) -> Result<bool, String> {
    Ok(match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        other => return Err(format!("unsupported type {other}")),
    })
}

fn check_format(format: &str, text: &str) -> Result<(), String> {
    match format {
        "uuid" => {
            // serde writes uuids hyphenated, lower case.
            let ok = text.len() == 36
                && Uuid::try_parse(text).is_ok()
                && !text.chars().any(|c| c.is_ascii_uppercase());
            if ok {
                Ok(())
            } else {
                Err(format!("{text:?} is not a uuid"))
            }
        }
        "date-time" => OffsetDateTime::parse(text, &Rfc3339)
            .map(|_| ())
            .map_err(|e| format!("{text:?} is not an RFC 3339 date-time: {e}")),
        other => Err(format!("unsupported string format {other}")),
    }
}

fn check_pattern(pattern: &str, text: &str) -> Result<(), String> {
    match pattern {
        "^[A-Z]{3}$" => {
            if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(())
            } else {
                Err(format!("{text:?} does not match {pattern}"))
            }
        }
        other => Err(format!(
            "unsupported pattern {other} (teach the test validator)"
        )),
    }
}

/// Validates `value` against `schema` (inside `root`). `extra` are property
/// names declared by an enclosing schema that sits beside a `$ref` (the
/// `event_type` tag of an internally tagged enum branch).
fn validate(
    root: &Value,
    schema: &Value,
    value: &Value,
    extra: &[String],
    at: &str,
) -> Result<(), String> {
    let obj: &Map<String, Value> = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{at}: schema `false`")),
        Value::Object(o) => o,
        other => return Err(format!("{at}: not a schema: {other}")),
    };
    for (keyword, arg) in obj {
        match keyword.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "$ref" => {
                let reference = arg.as_str().ok_or("$ref is not a string")?;
                let mut inherited: Vec<String> = extra.to_vec();
                if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                    inherited.extend(props.keys().cloned());
                }
                validate(root, resolve(root, reference)?, value, &inherited, at)?;
            }
            "type" => {
                let types: Vec<&str> = match arg {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => return Err(format!("{at}: bad type keyword")),
                };
                let mut ok = false;
                for t in types.iter().copied() {
                    ok |= type_matches(t, value)?;
                }
                if !ok {
                    return Err(format!("{at}: {value} is not of type {types:?}"));
                }
            }
            "const" => {
                if value != arg {
                    return Err(format!("{at}: {value} is not {arg}"));
                }
            }
            "enum" => {
                let options = arg.as_array().ok_or("enum is not an array")?;
                if !options.contains(value) {
                    return Err(format!("{at}: {value} is not one of {arg}"));
                }
            }
            "format" => {
                if let Value::String(text) = value {
                    check_format(arg.as_str().ok_or("format is not a string")?, text)
                        .map_err(|e| format!("{at}: {e}"))?;
                }
                // Integer formats (int64, uint8, ...) are enforced through
                // minimum/maximum and `integer`.
            }
            "pattern" => {
                if let Value::String(text) = value {
                    check_pattern(arg.as_str().ok_or("pattern is not a string")?, text)
                        .map_err(|e| format!("{at}: {e}"))?;
                }
            }
            "minimum" | "maximum" => {
                if let (Some(n), Some(bound)) = (value.as_f64(), arg.as_f64()) {
                    let ok = if keyword == "minimum" {
                        n >= bound
                    } else {
                        n <= bound
                    };
                    if !ok {
                        return Err(format!("{at}: {n} violates {keyword} {bound}"));
                    }
                }
            }
            "properties" => {
                let props = arg.as_object().ok_or("properties is not an object")?;
                if let Value::Object(fields) = value {
                    for (name, sub) in props {
                        if let Some(field) = fields.get(name) {
                            validate(root, sub, field, &[], &format!("{at}.{name}"))?;
                        }
                    }
                }
            }
            "required" => {
                if let Value::Object(fields) = value {
                    for name in arg.as_array().ok_or("required is not an array")? {
                        let name = name.as_str().ok_or("required name is not a string")?;
                        if !fields.contains_key(name) {
                            return Err(format!("{at}: required field {name} is missing"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if arg == &Value::Bool(false) {
                    // Covered by the stricter check below.
                } else if arg.is_object() {
                    // A map (`metadata`): every value not declared in
                    // `properties` must match the value schema.
                    if let Value::Object(fields) = value {
                        let declared = obj.get("properties").and_then(Value::as_object);
                        for (name, field) in fields {
                            if declared.is_none_or(|d| !d.contains_key(name)) {
                                validate(root, arg, field, &[], &format!("{at}.{name}"))?;
                            }
                        }
                    }
                } else {
                    return Err(format!("{at}: unsupported additionalProperties {arg}"));
                }
            }
            "oneOf" | "anyOf" | "allOf" => {
                let branches = arg.as_array().ok_or("combinator is not an array")?;
                let mut errors = Vec::new();
                for (i, branch) in branches.iter().enumerate() {
                    if let Err(e) =
                        validate(root, branch, value, extra, &format!("{at}<{keyword}{i}>"))
                    {
                        errors.push(e);
                    }
                }
                let matched = branches.len() - errors.len();
                let ok = match keyword.as_str() {
                    "oneOf" => matched == 1,
                    "anyOf" => matched >= 1,
                    _ => errors.is_empty(),
                };
                if !ok {
                    return Err(format!(
                        "{at}: {matched} of {} {keyword} branches match; failures: {}",
                        branches.len(),
                        errors.join("; ")
                    ));
                }
            }
            other => {
                return Err(format!(
                    "{at}: unsupported keyword {other} (teach the test validator)"
                ));
            }
        }
    }
    // Undeclared fields: checked where the object's own properties are
    // (a schema with `$ref` hands its names down instead).
    if let Value::Object(fields) = value
        && obj.get("type").and_then(Value::as_str) == Some("object")
        && !obj.contains_key("$ref")
        && !obj
            .get("additionalProperties")
            .is_some_and(Value::is_object)
    {
        let mut declared = declared_properties(root, schema)?;
        declared.extend(extra.iter().cloned());
        for name in fields.keys() {
            if !declared.contains(name) {
                return Err(format!("{at}: field {name} is not declared in the schema"));
            }
        }
    }
    Ok(())
}
