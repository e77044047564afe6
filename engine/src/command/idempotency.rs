//! Idempotency of merchant commands: fingerprints, the record committed
//! with a command's first events, and the answer to a repeated key.

use payorch_schemas::events::AgreementId;
use payorch_schemas::events::order::InstrumentSummary;
use serde::Serialize;
use serde_json::value::RawValue;

use super::*;
use crate::codec::CodecError;
use crate::store::{IdempotencyRecord, StreamId};
use crate::view::OrderView;

/// 64-bit FNV-1a, hex: the request fingerprint for idempotency (stable
/// across Rust versions, unlike `DefaultHasher`).
pub(crate) fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The idempotency fingerprint of a payment request (no card secrets: the
/// summary stands for the card).
pub(crate) fn place_fingerprint(
    req: &PlacePaymentRequest,
    summary: &InstrumentSummary,
    agreement: Option<AgreementId>,
) -> String {
    fingerprint(&format!(
        "place|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        req.amount,
        req.payment_type,
        req.authorisation_type,
        req.capture_method,
        summary,
        req.store_token,
        req.return_url,
        agreement,
        req.payment.encrypted_card_no.is_some()
    ))
}

impl Engine {
    /// Checks an idempotency key: `Ok(Some(stream))` when the same request
    /// was already handled, `Err` when the key was used for another one.
    pub(crate) async fn check_idempotency(
        &self,
        ctx: &CommandContext,
        fingerprint: &str,
    ) -> Result<Option<StreamId>, EngineError> {
        let Some(key) = &ctx.idempotency_key else {
            return Ok(None);
        };
        match self
            .idempotency
            .get_idempotency(ctx.merchant_id.as_str(), key)
            .await?
        {
            Some(rec) if rec.fingerprint == fingerprint => Ok(rec.stream_id),
            Some(_) => Err(EngineError::IdempotencyConflict { key: key.clone() }),
            None => Ok(None),
        }
    }

    pub(crate) fn idempotency_record(
        &self,
        ctx: &CommandContext,
        fingerprint: String,
        stream: &StreamId,
        response: &impl Serialize,
    ) -> Result<Option<IdempotencyRecord>, EngineError> {
        let Some(key) = &ctx.idempotency_key else {
            return Ok(None);
        };
        let text = serde_json::to_string(response).map_err(|e| CodecError::Encode {
            event_type: "idempotency_response",
            message: e.to_string(),
        })?;
        let response = RawValue::from_string(text).map_err(|e| CodecError::Encode {
            event_type: "idempotency_response",
            message: e.to_string(),
        })?;
        Ok(Some(IdempotencyRecord {
            scope: ctx.merchant_id.as_str().to_owned(),
            key: key.clone(),
            fingerprint,
            response,
            stream_id: Some(stream.clone()),
            created_at: self.clock.now(),
        }))
    }

    /// Maps an idempotency race on append to the stored result.
    pub(crate) async fn replay_after_race(
        &self,
        ctx: &CommandContext,
        fingerprint: &str,
    ) -> Result<OrderView, EngineError> {
        match self.check_idempotency(ctx, fingerprint).await? {
            Some(stream) => self.view_of_stream(ctx, &stream).await,
            None => Err(EngineError::Contention {
                stream: "idempotency".into(),
                attempts: 1,
            }),
        }
    }
}
