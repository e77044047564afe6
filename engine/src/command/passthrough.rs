//! Pass-through operations that record no events: token query/remove and
//! Apple Pay merchant validation. They run under the same idempotency
//! keys as every other command: the record is begun before the call and
//! completed with its answer, a success or PayKKa's refusal.

use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, TokenQueryRequest, TokenQueryResponse,
    TokenRemoveRequest,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::idempotency::*;
use super::paykka_requests::*;
use super::*;
use crate::gateway::GatewayOutcome;

/// A pass-through call's stored answer.
#[derive(Serialize, Deserialize)]
enum Answer<T> {
    Ok(T),
    Failed {
        kind: String,
        code: String,
        description: String,
    },
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        "declined" => "declined",
        "rejected" => "rejected",
        "retryable" => "retryable",
        _ => "unknown",
    }
}

fn unpack<T>(operation: &'static str, a: Answer<T>) -> Result<T, EngineError> {
    match a {
        Answer::Ok(t) => Ok(t),
        Answer::Failed {
            kind,
            code,
            description,
        } => Err(EngineError::Gateway {
            operation,
            kind: kind_name(&kind),
            code,
            description,
        }),
    }
}

impl Engine {
    /// Runs a pass-through call once per idempotency key.
    async fn passthrough_once<T, F, Fut>(
        &self,
        ctx: &CommandContext,
        operation: &'static str,
        fingerprint: String,
        f: F,
    ) -> Result<T, EngineError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = GatewayOutcome<T>>,
    {
        let key = Key::of(ctx, fingerprint);
        if let Some(answer) = self.begin_alone::<Answer<T>>(ctx, key.as_ref()).await? {
            return unpack(operation, answer);
        }
        let span = tracing::info_span!("paykka_call", operation, merchant_id = %ctx.merchant_id);
        let answer = match passthrough(operation, self.call(operation, span, f).await) {
            Ok(t) => Answer::Ok(t),
            Err(EngineError::Gateway {
                kind,
                code,
                description,
                ..
            }) => Answer::Failed {
                kind: kind.to_owned(),
                code,
                description,
            },
            Err(e) => return Err(e),
        };
        let answer = self.complete_alone(key.as_ref(), answer).await?;
        unpack(operation, answer)
    }

    /// Lists a shopper's stored tokens (no events).
    pub async fn token_query(
        &self,
        ctx: &CommandContext,
        shopper_reference: &str,
    ) -> Result<TokenQueryResponse, EngineError> {
        let req = TokenQueryRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            shopper_reference: shopper_reference.to_owned(),
            token: None,
        };
        let gw = self.gateway.clone();
        let fp = fingerprint_of("token_query", &shopper_reference);
        self.passthrough_once(ctx, "token_query", fp, || gw.token_query(&req))
            .await
    }

    /// Deletes a stored token (no events; cancel agreements explicitly).
    pub async fn token_remove(
        &self,
        ctx: &CommandContext,
        token: &str,
        shopper_reference: &str,
    ) -> Result<(), EngineError> {
        let req = TokenRemoveRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            token: token.to_owned(),
            shopper_reference: shopper_reference.to_owned(),
        };
        let gw = self.gateway.clone();
        let fp = fingerprint_of("token_remove", &(token, shopper_reference));
        self.passthrough_once(ctx, "token_remove", fp, || gw.token_remove(&req))
            .await
    }

    /// Apple Pay merchant validation (no events).
    pub async fn apple_pay_session(
        &self,
        ctx: &CommandContext,
        domain_name: &str,
        display_name: Option<String>,
    ) -> Result<ApplePaySessionResponse, EngineError> {
        let fp = fingerprint_of("apple_pay_session", &(domain_name, &display_name));
        let req = ApplePaySessionRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            display_name,
            domain_name: domain_name.to_owned(),
        };
        let gw = self.gateway.clone();
        self.passthrough_once(ctx, "apple_pay_session", fp, || gw.apple_pay_session(&req))
            .await
    }
}
