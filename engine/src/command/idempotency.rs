//! Idempotency of merchant commands: one capability, one store.
//!
//! Every POST of the merchant API runs through here with its
//! `Idempotency-Key` (semantics of the IETF `Idempotency-Key` header draft):
//!
//! * **Scope**: keys are per merchant (`scope` = merchant id); one key means
//!   one request across every operation.
//! * **Fingerprint**: SHA-256 (hex) over a canonical JSON form of everything
//!   that changes what PayKKa is asked to do, tagged with the operation.
//!   Secrets (PAN, CVV, encrypted card fields, wallet `token_data`) go into
//!   the hash only; the record stores the hash, never them. The fields:
//!   - place payment: amount (minor units, currency), payment type,
//!     authorisation type, capture method, every field of the payment
//!     method (method, store flag, token usage, shopper reference, token,
//!     card number, expiry month and year, CVV, holder name, the four
//!     encrypted card fields, wallet `token_data`), the token to store
//!     (purpose, shopper reference), `return_url` and `browser` as sent;
//!   - capture: payment id, amount (absent = the rest), `final_capture`;
//!   - void: payment id, reason; refund: payment id, amount, reason;
//!   - checkout session: amount, payment type, capture method, session
//!     mode, `return_url`, `expires_at` as sent (absent stays absent: the
//!     default is resolved by the first execution and replayed with it);
//!   - agreement charge: agreement id, amount; cancel: agreement id, reason;
//!   - token query: shopper reference; token remove: token, shopper
//!     reference; Apple Pay session: domain name, display name.
//!
//!   `fingerprint_fields_table` (tests) changes each field in turn.
//! * **One execution**: the record is *begun* (in progress: fingerprint and
//!   stream, no response) in the same append as the command's first events,
//!   and *completed* with the response of the request that executed, in the
//!   same append as its outcome events (or on its own when the outcome
//!   appends nothing). A replay returns the stored response: the body the
//!   first caller got, from which the HTTP status derives.
//! * **Concurrency**: a second request with the key loses the append
//!   (`IdempotencyKeyTaken`), then waits for the record to complete
//!   (polling with backoff, woken at once by completions in this process)
//!   for at most [`EngineConfig::idempotency_wait`], and returns the stored
//!   response, or [`EngineError::IdempotencyInProgress`] (HTTP 409
//!   `idempotency_key_in_progress` with `Retry-After`). The same key with
//!   another fingerprint is [`EngineError::IdempotencyConflict`].
//! * **After a crash** (a record begun, never completed): once the record
//!   is older than [`EngineConfig::idempotency_stale_after`] (longer than
//!   any live execution) and its stream has no open call any more (the
//!   reconciler resolved it), a request with the key answers the stream's
//!   current view and completes the record with it; until then it is "in
//!   progress". A pass-through call (token query/remove, Apple Pay
//!   session: no stream, no money moved) interrupted by a crash is "in
//!   progress" until its record is stale; then a request with the key and
//!   the same fingerprint releases the record and executes again (token
//!   remove is idempotent in effect at PayKKa). Two such retries racing
//!   at that moment may both execute: harmless for these calls.
//! * **Not sent**: a call that provably never left
//!   ([`EngineError::PaykkaUnreachable`]) records its decline and
//!   releases the key in one append, so the same key executes afresh
//!   later; there is no crash window in which the key would answer the
//!   decline instead.
//! * **Agreement charges**: the record is begun with the agreement's
//!   `agreement_charged` and points at the charge's order stream. A crash
//!   before the order was placed leaves that stream empty: once the record
//!   is stale, a request with the key places the order and runs it (or,
//!   if the agreement is no longer active, records it declined with
//!   [`CHARGE_NOT_SENT_CODE`] without calling PayKKa) and answers its
//!   view; the reconciler does the same for a charge without a key
//!   ([`Engine::resume_charge`]).
//! * **Release after a final partial capture** (`void_after_capture`): a
//!   capture's key is completed with the view after the Void the engine
//!   sends, which is what its first caller got; a replay answers exactly
//!   that, as for every other operation.
//! * Refusals (invalid request, illegal state) store nothing: the key
//!   stays free and a retry is decided again. A pass-through call that
//!   PayKKa refused or did not answer is stored as that failure.

use std::io::Write;
use std::time::Duration;

use payorch_schemas::Money;
use payorch_schemas::events::{AgreementId, OrderId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::*;
use crate::aggregate::{AgreementAggregate, CheckoutAggregate, OrderAggregate};
use crate::agreement::AgreementPhase;
use crate::checkout::CheckoutPhase;
use crate::codec::CodecError;
use crate::read::load_timed;

use super::views::Stamped;
use crate::store::{IdempotencyCompletion, IdempotencyRecord, StoreError, StreamId};

/// SHA-256 of the canonical JSON of `value`, hex. The JSON text is fed to
/// the hasher as it is written: secrets never sit in a buffer.
pub fn fingerprint_of(operation: &str, value: &impl Serialize) -> String {
    struct HashWriter(Sha256);
    impl Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(Sha256::new());
    w.0.update(operation.as_bytes());
    w.0.update(b"\n");
    // Serializing plain data types into a writer that never fails cannot
    // fail; should it, the error text still makes a distinct fingerprint.
    if let Err(e) = serde_json::to_writer(&mut w, value) {
        w.0.update(e.to_string().as_bytes());
    }
    w.0.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The fingerprint of a payment (see the module docs for the fields).
pub fn place_fingerprint(req: &PlacePaymentRequest, agreement: Option<AgreementId>) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        amount: &'a Money,
        payment_type: &'a payorch_schemas::events::PaymentKind,
        authorisation_type: &'a payorch_schemas::events::AuthorisationKind,
        capture_method: &'a payorch_schemas::events::CaptureMode,
        payment: &'a payorch_schemas::paykka::PaymentRequest,
        store_token: Option<(&'a payorch_schemas::events::TokenPurpose, &'a str)>,
        return_url: &'a Option<String>,
        browser: &'a Option<payorch_schemas::paykka::Browser>,
        agreement: Option<AgreementId>,
    }
    fingerprint_of(
        "place_payment",
        &Canonical {
            amount: &req.amount,
            payment_type: &req.payment_type,
            authorisation_type: &req.authorisation_type,
            capture_method: &req.capture_method,
            payment: &req.payment,
            store_token: req
                .store_token
                .as_ref()
                .map(|t| (&t.purpose, t.shopper_reference.as_str())),
            return_url: &req.return_url,
            browser: &req.browser,
            agreement,
        },
    )
}

/// The fingerprint of a capture.
pub fn capture_fingerprint(order: OrderId, amount: Option<Money>, final_capture: bool) -> String {
    fingerprint_of("capture", &(order, amount, final_capture))
}

/// The fingerprint of a void.
pub fn void_fingerprint(order: OrderId, reason: &Option<String>) -> String {
    fingerprint_of("void", &(order, reason))
}

/// The fingerprint of a refund.
pub fn refund_fingerprint(order: OrderId, amount: Money, reason: &Option<String>) -> String {
    fingerprint_of("refund", &(order, amount, reason))
}

/// The fingerprint of a checkout session (`expires_at` as sent).
pub fn checkout_fingerprint(req: &CheckoutSessionCreate) -> String {
    fingerprint_of(
        "checkout_session",
        &(
            req.amount,
            req.payment_type,
            req.capture_method,
            req.session_mode.as_str(),
            &req.return_url,
            req.expires_at.map(|t| t.unix_timestamp_nanos()),
        ),
    )
}

/// The fingerprint of a charge on an agreement.
pub fn charge_fingerprint(agreement: AgreementId, amount: Money) -> String {
    fingerprint_of("charge_agreement", &(agreement, amount))
}

/// The fingerprint of an agreement cancel.
pub fn cancel_fingerprint(agreement: AgreementId, reason: &Option<String>) -> String {
    fingerprint_of("cancel_agreement", &(agreement, reason))
}

/// A merchant command's key: scope, key and fingerprint.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
}

impl Key {
    /// The key of `ctx`, if it has one.
    pub fn of(ctx: &CommandContext, fingerprint: String) -> Option<Key> {
        // Labels change what is recorded, so they are part of the request;
        // without labels the fingerprint is the one it always was.
        let fingerprint = if ctx.annotations.is_empty() {
            fingerprint
        } else {
            fingerprint_of("annotated", &(fingerprint, &ctx.annotations))
        };
        ctx.idempotency_key.as_ref().map(|k| Key {
            scope: ctx.merchant_id.as_str().to_owned(),
            key: k.clone(),
            fingerprint,
        })
    }

    /// The in-progress record begun with the command's first events.
    pub fn begin(&self, stream: Option<&StreamId>, now: time::OffsetDateTime) -> IdempotencyRecord {
        IdempotencyRecord {
            scope: self.scope.clone(),
            key: self.key.clone(),
            fingerprint: self.fingerprint.clone(),
            response: None,
            stream_id: stream.cloned(),
            created_at: now,
        }
    }

    pub fn completion(&self, response: Box<RawValue>) -> IdempotencyCompletion {
        IdempotencyCompletion {
            scope: self.scope.clone(),
            key: self.key.clone(),
            response,
        }
    }
}

/// What a stream-backed key answers after a crash (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolves {
    /// An order: its view once it has no open call.
    Order,
    /// A charge on this agreement: as `Order`, and an order the crash left
    /// unplaced is placed and run ([`Engine::resume_charge`]).
    Charge(AgreementId),
    /// A checkout session: its view once the create call is answered.
    Checkout,
    /// An agreement: its view once no cancel is in flight.
    Agreement,
    /// No stream (pass-through): stays in progress.
    Nothing,
}

pub(crate) fn to_raw<R: Serialize>(r: &R) -> Result<Box<RawValue>, EngineError> {
    let text = serde_json::to_string(r).map_err(|e| CodecError::Encode {
        event_type: "idempotency_response",
        message: e.to_string(),
    })?;
    RawValue::from_string(text).map_err(|e| {
        EngineError::Codec(CodecError::Encode {
            event_type: "idempotency_response",
            message: e.to_string(),
        })
    })
}

fn from_raw<R: DeserializeOwned>(raw: &RawValue) -> Result<R, EngineError> {
    serde_json::from_str(raw.get()).map_err(|e| {
        EngineError::Store(StoreError::Corrupt(format!(
            "stored idempotency response does not decode: {e}"
        )))
    })
}

/// How long a waiter sleeps between looks at the record at most.
const MAX_POLL: Duration = Duration::from_millis(100);

impl Engine {
    /// The answer a key already gives: waits (bounded) for the request that
    /// holds it to complete. Called after `IdempotencyKeyTaken`, or when a
    /// request with a key was refused (a twin may have changed the state).
    pub(crate) async fn replay<R: Serialize + DeserializeOwned>(
        &self,
        ctx: &CommandContext,
        key: &Key,
        resolves: Resolves,
    ) -> Result<R, EngineError> {
        let deadline = tokio::time::Instant::now() + self.config.idempotency_wait;
        let mut pause = Duration::from_millis(2);
        loop {
            let woken = self.idempotency_done.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let Some(rec) = self
                .idempotency
                .get_idempotency(&key.scope, &key.key)
                .await?
            else {
                // The holder's append failed after all: nothing to answer.
                return Err(EngineError::IdempotencyInProgress {
                    key: key.key.clone(),
                    retry_after: Duration::from_secs(1),
                });
            };
            if rec.fingerprint != key.fingerprint {
                return Err(EngineError::IdempotencyConflict {
                    key: key.key.clone(),
                });
            }
            if let Some(raw) = &rec.response {
                return from_raw(raw);
            }
            if let Some(answer) = self.resolve_stale(ctx, key, &rec, resolves).await? {
                return Ok(answer);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(EngineError::IdempotencyInProgress {
                    key: key.key.clone(),
                    retry_after: Duration::from_secs(1),
                });
            }
            let wait = pause.min(deadline - now);
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(wait) => {}
            }
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// The crash rule: a stale in-progress record whose stream has no open
    /// call answers (and completes with) the stream's current view.
    async fn resolve_stale<R: Serialize + DeserializeOwned>(
        &self,
        ctx: &CommandContext,
        key: &Key,
        rec: &IdempotencyRecord,
        resolves: Resolves,
    ) -> Result<Option<R>, EngineError> {
        let stale_at = rec.created_at + self.config.idempotency_stale_after;
        let Some(stream) = rec.stream_id.as_ref() else {
            return Ok(None);
        };
        if self.clock.now() < stale_at {
            return Ok(None);
        }
        if let Resolves::Charge(agreement_id) = resolves {
            let l = load_timed::<OrderAggregate>(self.store.as_ref(), stream).await?;
            if l.state.placed().is_none() {
                // The crash came between the agreement's charge and the
                // order's placement: nothing reached PayKKa. Place it now.
                let Some(order_id) = self.charge_of(agreement_id, stream, ctx).await? else {
                    return Ok(None);
                };
                tracing::warn!(key = %key.key, %agreement_id, %order_id, "resuming a charge interrupted before its order was placed");
                let view =
                    Box::pin(self.resume_charge_keyed(agreement_id, order_id, Some(key))).await?;
                return match self
                    .idempotency
                    .get_idempotency(&key.scope, &key.key)
                    .await?
                    .and_then(|r| r.response)
                {
                    Some(raw) => from_raw(&raw).map(Some),
                    None => from_raw(&to_raw(&view)?).map(Some),
                };
            }
        }
        let raw = match resolves {
            Resolves::Order | Resolves::Charge(_) => {
                let l = load_timed::<OrderAggregate>(self.store.as_ref(), stream).await?;
                let s = &l.state;
                if s.has_open_call() || s.merchant_id() != Some(&ctx.merchant_id) {
                    return Ok(None);
                }
                match crate::view::OrderView::from_state(s) {
                    Some(v) => to_raw(&v.with_times(l.times))?,
                    None => return Ok(None),
                }
            }
            Resolves::Checkout => {
                let l = load_timed::<CheckoutAggregate>(self.store.as_ref(), stream).await?;
                if l.state.phase == CheckoutPhase::Requested {
                    return Ok(None);
                }
                match crate::view::CheckoutView::from_state(&l.state) {
                    Some(v) if v.merchant_id == ctx.merchant_id => to_raw(&v.with_times(l.times))?,
                    _ => return Ok(None),
                }
            }
            Resolves::Agreement => {
                let l = load_timed::<AgreementAggregate>(self.store.as_ref(), stream).await?;
                if l.state.phase == AgreementPhase::Cancelling {
                    return Ok(None);
                }
                match crate::view::AgreementView::from_state(&l.state) {
                    Some(v) if v.merchant_id == ctx.merchant_id => to_raw(&v.with_times(l.times))?,
                    _ => return Ok(None),
                }
            }
            Resolves::Nothing => return Ok(None),
        };
        tracing::warn!(key = %key.key, stream = %stream, "completing a stale idempotency record from its resolved stream");
        self.idempotency
            .complete_idempotency(key.completion(raw))
            .await?;
        self.idempotency_done.notify_waiters();
        match self
            .idempotency
            .get_idempotency(&key.scope, &key.key)
            .await?
            .and_then(|r| r.response)
        {
            Some(raw) => from_raw(&raw).map(Some),
            None => Ok(None),
        }
    }

    /// A refused command with a key: if the key is held (by a twin that
    /// changed the state first), its answer; otherwise the refusal.
    pub(crate) async fn replay_or_refuse<R: Serialize + DeserializeOwned>(
        &self,
        ctx: &CommandContext,
        key: Option<&Key>,
        resolves: Resolves,
        refusal: EngineError,
    ) -> Result<R, EngineError> {
        let Some(key) = key else {
            return Err(refusal);
        };
        match self
            .idempotency
            .get_idempotency(&key.scope, &key.key)
            .await?
        {
            Some(_) => self.replay(ctx, key, resolves).await,
            None => Err(refusal),
        }
    }

    /// Completes a begun record on its own (the outcome appended nothing)
    /// and returns what the key answers: `answer`, or the response stored
    /// first.
    pub(crate) async fn complete_alone<R: Serialize + DeserializeOwned>(
        &self,
        key: Option<&Key>,
        answer: R,
    ) -> Result<R, EngineError> {
        let Some(key) = key else {
            return Ok(answer);
        };
        let completed = self
            .idempotency
            .complete_idempotency(key.completion(to_raw(&answer)?))
            .await?;
        self.idempotency_done.notify_waiters();
        if completed {
            return Ok(answer);
        }
        match self
            .idempotency
            .get_idempotency(&key.scope, &key.key)
            .await?
            .and_then(|r| r.response)
        {
            Some(raw) => from_raw(&raw),
            None => Ok(answer),
        }
    }

    /// Stores a completed record on its own (a command that appends
    /// nothing: its answer is the current state). A twin that got there
    /// first gives its answer.
    pub(crate) async fn record_alone<R: Serialize + DeserializeOwned>(
        &self,
        ctx: &CommandContext,
        key: Option<&Key>,
        stream: Option<&StreamId>,
        resolves: Resolves,
        answer: R,
    ) -> Result<R, EngineError> {
        let Some(key) = key else {
            return Ok(answer);
        };
        let mut rec = key.begin(stream, self.clock.now());
        rec.response = Some(to_raw(&answer)?);
        match self.idempotency.put_idempotency(rec).await {
            Ok(()) => {
                self.idempotency_done.notify_waiters();
                Ok(answer)
            }
            Err(StoreError::IdempotencyKeyTaken { .. }) => self.replay(ctx, key, resolves).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Begins a record on its own (a pass-through call: no events).
    /// `Ok(None)`: begun, execute; `Ok(Some(answer))`: the key's answer.
    pub(crate) async fn begin_alone<R: Serialize + DeserializeOwned>(
        &self,
        ctx: &CommandContext,
        key: Option<&Key>,
    ) -> Result<Option<R>, EngineError> {
        let Some(key) = key else {
            return Ok(None);
        };
        for _ in 0..2 {
            match self
                .idempotency
                .put_idempotency(key.begin(None, self.clock.now()))
                .await
            {
                Ok(()) => return Ok(None),
                Err(StoreError::IdempotencyKeyTaken { .. }) => {
                    if !self.release_stale_passthrough(key).await? {
                        break;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.replay(ctx, key, Resolves::Nothing).await.map(Some)
    }

    /// The pass-through crash rule (see the module docs): an in-progress
    /// record without a stream, with this request's fingerprint, older
    /// than [`EngineConfig::idempotency_stale_after`] was left by a crash.
    /// It is released so the request executes again (a pass-through call
    /// moves no money: a query, an Apple Pay session, a token removal that
    /// is idempotent in effect). `Ok(true)`: released.
    async fn release_stale_passthrough(&self, key: &Key) -> Result<bool, EngineError> {
        let Some(rec) = self
            .idempotency
            .get_idempotency(&key.scope, &key.key)
            .await?
        else {
            // Gone meanwhile (released by a twin): begin again.
            return Ok(true);
        };
        let stale = self.clock.now() >= rec.created_at + self.config.idempotency_stale_after;
        if rec.response.is_some()
            || rec.stream_id.is_some()
            || rec.fingerprint != key.fingerprint
            || !stale
        {
            return Ok(false);
        }
        tracing::warn!(key = %key.key, "releasing a stale pass-through idempotency record left by a crash");
        let released = self
            .idempotency
            .release_idempotency(&key.scope, &key.key)
            .await?;
        self.idempotency_done.notify_waiters();
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use payorch_schemas::events::order::TokenRequest;
    use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind, TokenPurpose};
    use payorch_schemas::paykka::secret::{CardNumber, Cvv, SecretString};
    use payorch_schemas::paykka::{Browser, PaymentMethod, PaymentRequest, SessionMode};
    use payorch_schemas::{Currency, Money};
    use uuid::Uuid;

    use super::*;

    /// A payment with every fingerprinted field set.
    fn full() -> PlacePaymentRequest {
        let mut payment = PaymentRequest::card("4111111111111111", "07", "2031", "987");
        payment.store_payment_method = Some(false);
        payment.token_usage = Some(payorch_schemas::paykka::TokenUsage::CardOnFile);
        payment.shopper_reference = Some("shopper-1".into());
        payment.token = Some("TK1".into());
        payment.holder_name = Some("A Holder".into());
        payment.encrypted_card_no = Some(SecretString::new("enc-no"));
        payment.encrypted_exp_year = Some(SecretString::new("enc-year"));
        payment.encrypted_exp_month = Some(SecretString::new("enc-month"));
        payment.encrypted_cvv = Some(SecretString::new("enc-cvv"));
        payment.token_data = Some(SecretString::new("wallet-token"));
        PlacePaymentRequest {
            amount: Money::new(1000, Currency::EUR),
            payment_type: PaymentKind::Purchase,
            authorisation_type: AuthorisationKind::FinalAuth,
            capture_method: CaptureMode::Manual,
            payment,
            store_token: Some(TokenRequest {
                purpose: TokenPurpose::CardOnFile,
                shopper_reference: "shopper-1".into(),
            }),
            return_url: Some("https://shop.example/return".into()),
            browser: Some(Browser {
                user_agent: Some("UA/1".into()),
                language: Some("en".into()),
                ..Browser::default()
            }),
        }
    }

    #[test]
    fn fingerprint_fields_table() {
        type Change = fn(&mut PlacePaymentRequest);
        let changes: &[(&str, Change)] = &[
            ("amount.minor", |r| {
                r.amount = Money::new(1001, Currency::EUR)
            }),
            ("amount.currency", |r| {
                r.amount = Money::new(1000, Currency::USD)
            }),
            ("payment_type", |r| r.payment_type = PaymentKind::Recurring),
            ("authorisation_type", |r| {
                r.authorisation_type = AuthorisationKind::PreAuth
            }),
            ("capture_method", |r| {
                r.capture_method = CaptureMode::Automatic
            }),
            ("payment.payment_method", |r| {
                r.payment.payment_method = PaymentMethod::GooglePay
            }),
            ("payment.store_payment_method", |r| {
                r.payment.store_payment_method = Some(true)
            }),
            ("payment.token_usage", |r| {
                r.payment.token_usage = Some(payorch_schemas::paykka::TokenUsage::Subscription)
            }),
            ("payment.shopper_reference", |r| {
                r.payment.shopper_reference = Some("shopper-2".into())
            }),
            ("payment.token", |r| r.payment.token = Some("TK2".into())),
            ("payment.card_no", |r| {
                r.payment.card_no = Some(CardNumber::new("5555555555554444"))
            }),
            ("payment.exp_month", |r| {
                r.payment.exp_month = Some("08".into())
            }),
            ("payment.exp_year", |r| {
                r.payment.exp_year = Some("2032".into())
            }),
            ("payment.cvv", |r| r.payment.cvv = Some(Cvv::new("123"))),
            ("payment.holder_name", |r| {
                r.payment.holder_name = Some("B Holder".into())
            }),
            ("payment.encrypted_card_no", |r| {
                r.payment.encrypted_card_no = Some(SecretString::new("enc-no-2"))
            }),
            ("payment.encrypted_exp_year", |r| {
                r.payment.encrypted_exp_year = Some(SecretString::new("enc-year-2"))
            }),
            ("payment.encrypted_exp_month", |r| {
                r.payment.encrypted_exp_month = Some(SecretString::new("enc-month-2"))
            }),
            ("payment.encrypted_cvv", |r| {
                r.payment.encrypted_cvv = Some(SecretString::new("enc-cvv-2"))
            }),
            ("payment.token_data", |r| {
                r.payment.token_data = Some(SecretString::new("wallet-token-2"))
            }),
            ("store_token.purpose", |r| {
                if let Some(t) = r.store_token.as_mut() {
                    t.purpose = TokenPurpose::Subscription;
                }
            }),
            ("store_token.shopper_reference", |r| {
                if let Some(t) = r.store_token.as_mut() {
                    t.shopper_reference = "shopper-3".into();
                }
            }),
            ("store_token absent", |r| r.store_token = None),
            ("return_url", |r| {
                r.return_url = Some("https://shop.example/other".into())
            }),
            ("browser.user_agent", |r| {
                if let Some(b) = r.browser.as_mut() {
                    b.user_agent = Some("UA/2".into());
                }
            }),
            ("browser.language", |r| {
                if let Some(b) = r.browser.as_mut() {
                    b.language = Some("de".into());
                }
            }),
            ("browser absent", |r| r.browser = None),
        ];
        let base = place_fingerprint(&full(), None);
        assert_eq!(base, place_fingerprint(&full(), None), "identical request");
        assert_eq!(base.len(), 64, "SHA-256 hex");
        let mut seen = std::collections::BTreeMap::new();
        seen.insert(base.clone(), "base");
        for (field, change) in changes {
            let mut r = full();
            change(&mut r);
            let fp = place_fingerprint(&r, None);
            assert_ne!(fp, base, "changing {field} must change the fingerprint");
            assert_eq!(fp, place_fingerprint(&r, None), "{field}: stable");
            if let Some(other) = seen.insert(fp, field) {
                panic!("{field} and {other} give the same fingerprint");
            }
        }
        // The agreement a charge names.
        let agreement = AgreementId(Uuid::nil());
        assert_ne!(place_fingerprint(&full(), Some(agreement)), base);

        // The other commands: every field, and the operation itself.
        let order = OrderId(Uuid::nil());
        let other = OrderId(Uuid::from_u128(1));
        let eur = |m| Money::new(m, Currency::EUR);
        let cases = [
            capture_fingerprint(order, Some(eur(5)), false),
            capture_fingerprint(other, Some(eur(5)), false),
            capture_fingerprint(order, Some(eur(6)), false),
            capture_fingerprint(order, None, false),
            capture_fingerprint(order, Some(eur(5)), true),
            void_fingerprint(order, &None),
            void_fingerprint(other, &None),
            void_fingerprint(order, &Some("r".into())),
            refund_fingerprint(order, eur(5), &None),
            refund_fingerprint(other, eur(5), &None),
            refund_fingerprint(order, eur(6), &None),
            refund_fingerprint(order, eur(5), &Some("r".into())),
            charge_fingerprint(agreement, eur(5)),
            charge_fingerprint(AgreementId(Uuid::from_u128(1)), eur(5)),
            charge_fingerprint(agreement, eur(6)),
            cancel_fingerprint(agreement, &None),
            cancel_fingerprint(agreement, &Some("r".into())),
            fingerprint_of("token_query", &"s1"),
            fingerprint_of("token_query", &"s2"),
            fingerprint_of("token_remove", &("t", "s1")),
            fingerprint_of("token_remove", &("t2", "s1")),
            fingerprint_of("apple_pay_session", &("d", &None::<String>)),
            fingerprint_of("apple_pay_session", &("d", &Some("n"))),
        ];
        let distinct: std::collections::BTreeSet<_> = cases.iter().collect();
        assert_eq!(
            distinct.len(),
            cases.len(),
            "every field and operation counts"
        );

        let checkout = |f: fn(&mut CheckoutSessionCreate)| {
            let mut c = CheckoutSessionCreate {
                amount: eur(2500),
                payment_type: PaymentKind::Purchase,
                capture_method: CaptureMode::Automatic,
                session_mode: SessionMode::Hosted,
                return_url: None,
                expires_at: None,
            };
            f(&mut c);
            checkout_fingerprint(&c)
        };
        let base = checkout(|_| {});
        assert_eq!(
            base,
            checkout(|_| {}),
            "an identical retry without expires_at"
        );
        let changed = [
            checkout(|c| c.amount = Money::new(2501, Currency::EUR)),
            checkout(|c| c.payment_type = PaymentKind::Recurring),
            checkout(|c| c.capture_method = CaptureMode::Manual),
            checkout(|c| c.session_mode = SessionMode::DropIn),
            checkout(|c| c.return_url = Some("https://x".into())),
            checkout(|c| {
                c.expires_at = Some(time::OffsetDateTime::UNIX_EPOCH);
            }),
        ];
        for fp in &changed {
            assert_ne!(*fp, base);
        }
    }

    #[test]
    fn secrets_are_hashed_not_kept() {
        let fp = place_fingerprint(&full(), None);
        for secret in ["4111111111111111", "987", "enc-no", "wallet-token"] {
            assert!(!fp.contains(secret));
        }
    }
}
