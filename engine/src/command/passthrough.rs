//! Pass-through operations that record no events: token query/remove and
//! Apple Pay merchant validation.

use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, TokenQueryRequest, TokenQueryResponse,
    TokenRemoveRequest,
};

use super::paykka_requests::*;
use super::*;

impl Engine {
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
        passthrough("token_query", self.call("token_query", tracing::info_span!("paykka_call", operation = "token_query", merchant_id = %ctx.merchant_id), || gw.token_query(&req)).await)
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
        passthrough("token_remove", self.call("token_remove", tracing::info_span!("paykka_call", operation = "token_remove", merchant_id = %ctx.merchant_id), || gw.token_remove(&req)).await)
    }

    /// Apple Pay merchant validation (no events).
    pub async fn apple_pay_session(
        &self,
        ctx: &CommandContext,
        domain_name: &str,
        display_name: Option<String>,
    ) -> Result<ApplePaySessionResponse, EngineError> {
        let req = ApplePaySessionRequest {
            merchant_id: ctx.merchant_id.as_str().to_owned(),
            timestamp: self.now_ms(),
            display_name,
            domain_name: domain_name.to_owned(),
        };
        let gw = self.gateway.clone();
        passthrough("apple_pay_session", self.call("apple_pay_session", tracing::info_span!("paykka_call", operation = "apple_pay_session", merchant_id = %ctx.merchant_id), || gw.apple_pay_session(&req)).await)
    }
}
