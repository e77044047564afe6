//! A strict reader for the compact JSON payorch itself writes
//! (`serde_json::to_string` of the current event types): keys in
//! declaration order, no whitespace, no escapes, no `null`s. It decodes the
//! order event types that make up nearly every stored order (placed,
//! authorisation requested, authorised, succeeded, capture and refund
//! requested/done) about 2-3x faster than serde_json's generic
//! deserializer. Anything else (another type, spacing, an escape, reordered
//! or unknown keys, a malformed value) returns `None` and the caller uses
//! serde_json, so the result is always the one serde_json would give: the
//! reader only accepts text that serde_json parses to the same value.

use payorch_schemas::events::order::*;
use payorch_schemas::events::{
    AgreementId, AuthorisationKind, CaptureId, CaptureMode, CardSummary, CheckoutId,
    GatewayOrderId, GatewayRefundId, MerchantId, OrderEvent, OrderId, PaymentKind, RefundId,
    RefundTransId, SessionId, TokenPurpose, TransId,
};
use payorch_schemas::{Currency, Money};
use uuid::Uuid;

/// Whether any of the eight bytes of `w` is a quote, a backslash or a
/// control character (exact: no false negatives; the classic
/// "has a byte less than n" bit trick).
fn needs_look(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let less_than = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    (less_than(quote, 1) | less_than(backslash, 1) | less_than(w, 0x20)) != 0
}

struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Consumes `lit` if the input continues with it.
    fn eat(&mut self, lit: &[u8]) -> bool {
        match self.bytes().get(self.pos..) {
            Some(rest) if rest.starts_with(lit) => {
                self.pos += lit.len();
                true
            }
            _ => false,
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        self.eat(lit).then_some(())
    }

    /// A string without escapes or control characters.
    fn str(&mut self) -> Option<&'a str> {
        self.literal(b"\"")?;
        let start = self.pos;
        let b = self.bytes();
        let mut i = start;
        // Eight bytes at a time while none needs a closer look.
        while let Some(chunk) = b.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            if needs_look(u64::from_le_bytes(w)) {
                break;
            }
            i += 8;
        }
        loop {
            match *b.get(i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        // Both ends sit next to an ASCII quote: char boundaries.
        self.text.get(start..i)
    }

    fn string(&mut self) -> Option<String> {
        self.str().map(str::to_owned)
    }

    /// An unsigned decimal integer as serde_json writes it.
    fn digits(&mut self) -> Option<u64> {
        let b = self.bytes();
        let start = self.pos;
        let mut n: u64 = 0;
        while let Some(&d) = b.get(self.pos).filter(|d| d.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.pos += 1;
        }
        let len = self.pos - start;
        // No digits, a leading zero, or a fraction/exponent: not ours.
        if len == 0 || (len > 1 && b[start] == b'0') {
            return None;
        }
        if matches!(b.get(self.pos), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(n)
    }

    fn i64(&mut self) -> Option<i64> {
        if self.eat(b"-") {
            let n = self.digits()?;
            // `-0` and i64::MIN are left to serde_json.
            if n == 0 {
                return None;
            }
            i64::try_from(n).ok().map(|n| -n)
        } else {
            i64::try_from(self.digits()?).ok()
        }
    }

    fn bool(&mut self) -> Option<bool> {
        if self.eat(b"true") {
            Some(true)
        } else if self.eat(b"false") {
            Some(false)
        } else {
            None
        }
    }

    fn uuid(&mut self) -> Option<Uuid> {
        // The hyphenated form payorch writes: 36 characters in quotes.
        let b = self.bytes();
        if let (Some(b'"'), Some(b'"')) = (b.get(self.pos), b.get(self.pos + 37)) {
            let id = Uuid::try_parse_ascii(&b[self.pos + 1..self.pos + 37]).ok()?;
            self.pos += 38;
            return Some(id);
        }
        Uuid::try_parse(self.str()?).ok()
    }

    /// `{"minor":N,"currency":"XXX"}`
    fn money(&mut self) -> Option<Money> {
        self.literal(b"{\"minor\":")?;
        let minor = self.i64()?;
        self.literal(b",\"currency\":")?;
        let currency = Currency::new(self.str()?).ok()?;
        self.literal(b"}")?;
        Some(Money::new(minor, currency))
    }

    /// `,"key":` followed by a string, when present.
    fn opt_string(&mut self, key: &[u8]) -> Option<Option<String>> {
        if self.eat(key) {
            self.string().map(Some)
        } else {
            Some(None)
        }
    }

    /// `{...}` of a [`CardSummary`] (every field optional).
    fn card(&mut self) -> Option<CardSummary> {
        self.literal(b"{")?;
        let mut card = CardSummary::default();
        // The first present field has no leading comma.
        let mut sep: &[u8] = b"";
        let mut key = |r: &mut Self, name: &[u8]| -> bool {
            let at = r.pos;
            if r.eat(sep) && r.eat(name) {
                sep = b",";
                true
            } else {
                r.pos = at;
                false
            }
        };
        if key(self, b"\"brand\":") {
            card.brand = Some(self.string()?);
        }
        if key(self, b"\"bin\":") {
            card.bin = Some(self.string()?);
        }
        if key(self, b"\"last4\":") {
            card.last4 = Some(self.string()?);
        }
        if key(self, b"\"exp_month\":") {
            card.exp_month = Some(u8::try_from(self.digits()?).ok()?);
        }
        if key(self, b"\"exp_year\":") {
            card.exp_year = Some(u16::try_from(self.digits()?).ok()?);
        }
        self.literal(b"}")?;
        Some(card)
    }

    fn opt_card(&mut self, key: &[u8]) -> Option<Option<CardSummary>> {
        if self.eat(key) {
            self.card().map(Some)
        } else {
            Some(None)
        }
    }

    fn opt_uuid(&mut self, key: &[u8]) -> Option<Option<Uuid>> {
        if self.eat(key) {
            self.uuid().map(Some)
        } else {
            Some(None)
        }
    }

    /// The closing brace, then nothing.
    fn end(&mut self) -> Option<()> {
        self.literal(b"}")?;
        (self.pos == self.text.len()).then_some(())
    }
}

fn payment_placed(r: &mut Reader) -> Option<PaymentPlaced> {
    r.literal(b",\"order_id\":")?;
    let order_id = OrderId(r.uuid()?);
    r.literal(b",\"merchant_id\":")?;
    let merchant_id = MerchantId(r.string()?);
    r.literal(b",\"trans_id\":")?;
    let trans_id = TransId::new(r.str()?);
    r.literal(b",\"amount\":")?;
    let amount = r.money()?;
    r.literal(b",\"payment_type\":")?;
    let payment_type = match r.str()? {
        "PURCHASE" => PaymentKind::Purchase,
        "RECURRING" => PaymentKind::Recurring,
        _ => return None,
    };
    r.literal(b",\"authorisation_type\":")?;
    let authorisation_type = match r.str()? {
        "FINAL_AUTH" => AuthorisationKind::FinalAuth,
        "PRE_AUTH" => AuthorisationKind::PreAuth,
        _ => return None,
    };
    r.literal(b",\"capture_method\":")?;
    let capture_method = match r.str()? {
        "AUTOMATIC" => CaptureMode::Automatic,
        "MANUAL" => CaptureMode::Manual,
        _ => return None,
    };
    r.literal(b",\"instrument\":{\"method\":")?;
    let method = r.string()?;
    let card = r.opt_card(b",\"card\":")?;
    let token = r.opt_string(b",\"token\":")?;
    r.literal(b"}")?;
    let store_token = if r.eat(b",\"store_token\":{\"purpose\":") {
        let purpose = match r.str()? {
            "CARD_ON_FILE" => TokenPurpose::CardOnFile,
            "SUBSCRIPTION" => TokenPurpose::Subscription,
            _ => return None,
        };
        r.literal(b",\"shopper_reference\":")?;
        let shopper_reference = r.string()?;
        r.literal(b"}")?;
        Some(TokenRequest {
            purpose,
            shopper_reference,
        })
    } else {
        None
    };
    let agreement_id = r.opt_uuid(b",\"agreement_id\":")?.map(AgreementId);
    let checkout_id = r.opt_uuid(b",\"checkout_id\":")?.map(CheckoutId);
    let session_id = r.opt_string(b",\"session_id\":")?.map(SessionId);
    let merchant_reference = r.opt_string(b",\"merchant_reference\":")?;
    // Metadata (a map) is left to serde_json: `end` fails on it.
    r.end()?;
    Some(PaymentPlaced {
        order_id,
        merchant_id,
        trans_id,
        amount,
        payment_type,
        authorisation_type,
        capture_method,
        instrument: InstrumentSummary {
            method,
            card,
            token,
        },
        store_token,
        agreement_id,
        checkout_id,
        session_id,
        merchant_reference,
        metadata: Default::default(),
    })
}

fn body(event_type: &str, r: &mut Reader) -> Option<OrderEvent> {
    Some(match event_type {
        "payment_placed" => payment_placed(r)?.into(),
        "authorisation_requested" => {
            r.literal(b",\"trans_id\":")?;
            let trans_id = TransId::new(r.str()?);
            r.end()?;
            AuthorisationRequested { trans_id }.into()
        }
        "authorised" => {
            r.literal(b",\"gateway_order_id\":")?;
            let gateway_order_id = GatewayOrderId::new(r.str()?);
            r.literal(b",\"amount\":")?;
            let amount = r.money()?;
            let card = r.opt_card(b",\"card\":")?;
            r.end()?;
            Authorised {
                gateway_order_id,
                amount,
                card,
            }
            .into()
        }
        "succeeded" => {
            let gateway_order_id = if r.eat(b",\"gateway_order_id\":") {
                Some(GatewayOrderId::new(r.str()?))
            } else {
                None
            };
            r.literal(b",\"captured\":")?;
            let captured = r.money()?;
            r.end()?;
            Succeeded {
                gateway_order_id,
                captured,
            }
            .into()
        }
        "capture_requested" => {
            r.literal(b",\"capture_id\":")?;
            let capture_id = CaptureId(r.uuid()?);
            r.literal(b",\"amount\":")?;
            let amount = r.money()?;
            r.literal(b",\"final_capture\":")?;
            let final_capture = r.bool()?;
            r.end()?;
            CaptureRequested {
                capture_id,
                amount,
                final_capture,
            }
            .into()
        }
        "captured" => {
            r.literal(b",\"capture_id\":")?;
            let capture_id = CaptureId(r.uuid()?);
            r.literal(b",\"amount\":")?;
            let amount = r.money()?;
            r.literal(b",\"remainder_released\":")?;
            let remainder_released = r.bool()?;
            r.end()?;
            Captured {
                capture_id,
                amount,
                remainder_released,
            }
            .into()
        }
        "refund_requested" => {
            r.literal(b",\"refund_id\":")?;
            let refund_id = RefundId(r.uuid()?);
            r.literal(b",\"refund_trans_id\":")?;
            let refund_trans_id = RefundTransId::new(r.str()?);
            r.literal(b",\"amount\":")?;
            let amount = r.money()?;
            let reason = r.opt_string(b",\"reason\":")?;
            r.end()?;
            RefundRequested {
                refund_id,
                refund_trans_id,
                amount,
                reason,
            }
            .into()
        }
        "refunded" => {
            r.literal(b",\"refund_id\":")?;
            let refund_id = RefundId(r.uuid()?);
            let gateway_refund_id = r
                .opt_string(b",\"gateway_refund_id\":")?
                .map(GatewayRefundId);
            r.literal(b",\"amount\":")?;
            let amount = r.money()?;
            r.end()?;
            Refunded {
                refund_id,
                gateway_refund_id,
                amount,
            }
            .into()
        }
        _ => return None,
    })
}

/// The event, when `json` is exactly what payorch writes for it.
pub(super) fn order_event(event_type: &str, json: &str) -> Option<OrderEvent> {
    let mut r = Reader { text: json, pos: 0 };
    r.literal(b"{\"event_type\":")?;
    if r.str()? != event_type {
        return None;
    }
    body(event_type, &mut r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(0x0193_6f2e_8a4b_7c3d_9e2f_1a2b_3c4d_0000 + n)
    }

    fn eur(m: i64) -> Money {
        Money::new(m, Currency::EUR)
    }

    fn full_card() -> CardSummary {
        CardSummary {
            brand: Some("VISA".into()),
            bin: Some("411111".into()),
            last4: Some("1111".into()),
            exp_month: Some(7),
            exp_year: Some(2031),
        }
    }

    /// Every type the reader knows, with optional fields set and unset.
    fn samples() -> Vec<OrderEvent> {
        let placed = PaymentPlaced {
            order_id: OrderId(uuid(1)),
            merchant_id: MerchantId::new("18356675194960"),
            trans_id: TransId::new("01936f2e8a4b7c3d9e2f1a2b3c4d0001"),
            amount: Money::new(-12, Currency::new("JPY").unwrap()),
            payment_type: PaymentKind::Recurring,
            authorisation_type: AuthorisationKind::PreAuth,
            capture_method: CaptureMode::Automatic,
            instrument: InstrumentSummary {
                method: "BANKCARD".into(),
                card: Some(full_card()),
                token: Some("tok_ü€".into()),
            },
            store_token: Some(TokenRequest {
                purpose: TokenPurpose::Subscription,
                shopper_reference: "shopper-1".into(),
            }),
            agreement_id: Some(AgreementId(uuid(2))),
            checkout_id: Some(CheckoutId(uuid(3))),
            session_id: Some(SessionId::new("CS1")),
            merchant_reference: Some("order-42".into()),
            metadata: Default::default(),
        };
        let bare = PaymentPlaced {
            payment_type: PaymentKind::Purchase,
            authorisation_type: AuthorisationKind::FinalAuth,
            capture_method: CaptureMode::Manual,
            amount: eur(i64::MAX),
            instrument: InstrumentSummary {
                method: "GOOGLE_PAY".into(),
                card: Some(CardSummary {
                    exp_year: Some(0),
                    ..CardSummary::default()
                }),
                token: None,
            },
            store_token: Some(TokenRequest {
                purpose: TokenPurpose::CardOnFile,
                shopper_reference: String::new(),
            }),
            agreement_id: None,
            checkout_id: None,
            session_id: None,
            merchant_reference: None,
            ..placed.clone()
        };
        let no_card = PaymentPlaced {
            instrument: InstrumentSummary::default(),
            store_token: None,
            ..bare.clone()
        };
        vec![
            placed.into(),
            bare.into(),
            no_card.into(),
            AuthorisationRequested {
                trans_id: TransId::new("t"),
            }
            .into(),
            Authorised {
                gateway_order_id: GatewayOrderId::new("GW1"),
                amount: eur(0),
                card: Some(full_card()),
            }
            .into(),
            Authorised {
                gateway_order_id: GatewayOrderId::new(""),
                amount: eur(10),
                card: Some(CardSummary::default()),
            }
            .into(),
            Authorised {
                gateway_order_id: GatewayOrderId::new("GW1"),
                amount: eur(10),
                card: None,
            }
            .into(),
            Succeeded {
                gateway_order_id: Some(GatewayOrderId::new("GW2")),
                captured: eur(5),
            }
            .into(),
            Succeeded {
                gateway_order_id: None,
                captured: eur(5),
            }
            .into(),
            CaptureRequested {
                capture_id: CaptureId(uuid(4)),
                amount: eur(100),
                final_capture: true,
            }
            .into(),
            Captured {
                capture_id: CaptureId(uuid(4)),
                amount: eur(100),
                remainder_released: false,
            }
            .into(),
            RefundRequested {
                refund_id: RefundId(uuid(5)),
                refund_trans_id: RefundTransId::new("01936f2e8a4b7c3d9e2f1a2b3c4d0001r1"),
                amount: eur(50),
                reason: Some("customer \"asked\"\n".into()),
            }
            .into(),
            RefundRequested {
                refund_id: RefundId(uuid(5)),
                refund_trans_id: RefundTransId::new("r"),
                amount: eur(50),
                reason: None,
            }
            .into(),
            Refunded {
                refund_id: RefundId(uuid(5)),
                gateway_refund_id: Some(GatewayRefundId::new("RG1")),
                amount: eur(50),
            }
            .into(),
            Refunded {
                refund_id: RefundId(uuid(5)),
                gateway_refund_id: None,
                amount: eur(50),
            }
            .into(),
        ]
    }

    /// What serde_json makes of the text (the reference).
    fn serde(e: &OrderEvent, json: &str) -> Option<OrderEvent> {
        OrderEvent::from_json(e.event_type(), json).ok()
    }

    #[test]
    fn reads_what_serde_json_writes() {
        for e in samples() {
            let json = serde_json::to_string(&e).unwrap();
            let fast = order_event(e.event_type(), &json);
            if json.contains('\\') {
                // Escapes are left to serde_json.
                assert_eq!(fast, None, "{json}");
            } else {
                assert_eq!(fast.as_ref(), Some(&e), "{json}");
            }
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde_json() {
        for e in samples() {
            let json = serde_json::to_string(&e).unwrap();
            let t = e.event_type();
            let mut variants = vec![
                json.replace(',', ", "),
                json.replace(':', " :"),
                format!("{json} "),
                format!(" {json}"),
                json.replace("\"EUR\"", "\"eur\""),
                json.replace("\"EUR\"", "\"XXX\""),
                json.replace("\"minor\":", "\"minor\":0"),
                json.replace("\"minor\":", "\"minor\":-"),
                json.replace("\"minor\":", "\"minor\":+"),
                json.replace("\"minor\":5", "\"minor\":5.0"),
                json.replace("\"minor\":1", "\"minor\":1e2"),
                json.replace("}", ",\"extra\":1}"),
                json.replace("{\"event_type\"", "{\"extra\":null,\"event_type\""),
                json.replace("true", "1"),
                json.replace("\"exp_month\":7", "\"exp_month\":700"),
                json.replace("\"exp_year\":2031", "\"exp_year\":99999"),
                json.replace("\"exp_month\":7,", ""),
                json.replace("0-", "0_"),
            ];
            // Keys out of declaration order.
            if let Some((head, tail)) = json.split_once(",\"amount\":") {
                let money_end = tail.find('}').unwrap() + 1;
                let (money, rest) = tail.split_at(money_end);
                variants.push(format!("{{\"amount\":{money},{}{rest}", &head[1..]));
            }
            variants.push(json.replace(t, "other"));
            variants.push(json[..json.len() - 1].to_owned());
            for v in variants {
                if v == json {
                    continue;
                }
                // Either the reader declines, or it agrees with serde_json.
                if let Some(fast) = order_event(t, &v) {
                    assert_eq!(Some(fast), serde(&e, &v), "{v}");
                }
            }
        }
    }

    proptest::proptest! {
        /// Random edits of valid payloads: the reader declines or
        /// agrees with serde_json.
        #[test]
        fn edits_never_make_the_reader_disagree(
            which in 0usize..15,
            at in 0usize..400,
            cut in 0usize..4,
            insert in proptest::sample::select(vec![
                "", " ", "0", "-", "1", "\"", "\\", ",", "}", "{", "null", "e5", ".5",
                "\"x\":1,", "true", "\\u0041", "é",
            ]),
        ) {
            let e = &samples()[which];
            let json = serde_json::to_string(e).unwrap();
            let mut at = at.min(json.len());
            while !json.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(json.len());
            while !json.is_char_boundary(end) {
                end += 1;
            }
            let edited = format!("{}{insert}{}", &json[..at], &json[end..]);
            if let Some(fast) = order_event(e.event_type(), &edited) {
                proptest::prop_assert_eq!(Some(fast), serde(e, &edited), "{}", edited);
            }
        }
    }

    #[test]
    fn other_types_and_mismatched_tags_are_declined() {
        let e: OrderEvent = Voided {}.into();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(order_event("voided", &json), None);
        let e = &samples()[3];
        let json = serde_json::to_string(e).unwrap();
        assert_eq!(order_event("captured", &json), None);
    }
}
