//! Test cards, wallet tokens and magic amounts that choose the simulated
//! outcome (the table in the crate README).
//!
//! The PAN never leaves this module: an instrument is reduced to a
//! [`CardProfile`] (outcome + display data) that the ledger may keep.

use payorch_schemas::paykka::{CardBrand, CardInfo};

/// What the "issuer" does with an instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardBehaviour {
    /// Authorised at once.
    Approve,
    /// `FAILURE` with this transaction error code.
    Decline(&'static str, &'static str),
    /// Envelope `ret_code` 206022 and `FAILURE` / `2006`.
    NotSupported,
    /// `PROCESSING` with a 3DS challenge URL.
    Challenge,
    /// `PROCESSING`, then asynchronously approved.
    AsyncApprove,
    /// `PROCESSING`, then asynchronously declined (`2099`).
    AsyncDecline,
    /// Approved, automatic capture shown in two steps: `AUTHORIZED` first,
    /// captured (`SUCCESS`) at the next settlement (the interim state
    /// codes.md §5 says to expect).
    AuthorizeThenCapture,
    /// The request is refused: HTTP 400 with this envelope `ret_code`
    /// (codes.md §1: PayKKa puts 4-digit transaction codes there too);
    /// nothing is booked.
    Refuse(&'static str, &'static str),
}

/// Test cards that make the initiate answer HTTP 400 with a codes.md code
/// in `ret_code` (nothing booked): `4` + the code on six digits + zeros +
/// the Luhn digit. (PAN, ret_code, PayKKa's label.)
pub const REFUSING_CARDS: &[(&str, &str, &str)] = &[
    (
        "4002008000000003",
        "2008",
        "shopperReference is a required field",
    ),
    ("4002009000000001", "2009", "shipping is a required field"),
    (
        "4002010000000009",
        "2010",
        "mit is a required field in recurring payment scenarios",
    ),
    (
        "4002011000000007",
        "2011",
        "For non-first recurring payments, mit must be set to true",
    ),
    (
        "4002012000000005",
        "2012",
        "For first recurring payment, mit must be set to false",
    ),
    (
        "4002013000000003",
        "2013",
        "For transactions storing card information, paymentMethod must be set to BANKCARD",
    ),
    (
        "4002014000000001",
        "2014",
        "For first recurring payment, storePaymentMethod must be set to true",
    ),
    (
        "4210002000000004",
        "210002",
        "shopperReference cannot be empty",
    ),
    ("4210003000000002", "210003", "shipping cannot be empty"),
    ("4206017000000008", "206017", "PCI compliance insufficient"),
];

/// The outcome-relevant, non-secret view of an instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardProfile {
    pub behaviour: CardBehaviour,
    pub bin: String,
    pub last4: String,
    pub brand: CardBrand,
}

impl CardProfile {
    pub fn card_info(&self) -> CardInfo {
        CardInfo {
            bin: Some(self.bin.clone()),
            last4: Some(self.last4.clone()),
            card_brand: Some(self.brand.clone()),
        }
    }
}

/// `2099` Invalid Card (codes.md §4).
pub const INVALID_CARD: (&str, &str) = ("2099", "Invalid Card");

/// Chooses the behaviour of a plain PAN (already Luhn-checked by the
/// request validation).
pub fn card_profile(pan: &str) -> CardProfile {
    let behaviour = match pan {
        "4000000000000002" => CardBehaviour::Decline(INVALID_CARD.0, INVALID_CARD.1),
        "4000000000000010" => CardBehaviour::NotSupported,
        "4000000000003220" => CardBehaviour::Challenge,
        "4000000000000036" => CardBehaviour::AsyncApprove,
        "4000000000000044" => CardBehaviour::AsyncDecline,
        "4000000000000051" => CardBehaviour::Decline("1016", "Route does not exist"),
        "4000000000000069" => CardBehaviour::Decline("1022", "This merchant is not allowed to pay"),
        "4002017000000004" => CardBehaviour::Decline("2017", "Recurring payment creation failed"),
        "4000000000000077" => CardBehaviour::AuthorizeThenCapture,
        other => match REFUSING_CARDS.iter().find(|(p, _, _)| *p == other) {
            Some((_, code, label)) => CardBehaviour::Refuse(code, label),
            None => CardBehaviour::Approve,
        },
    };
    let brand = match pan.as_bytes().first() {
        Some(b'4') => CardBrand::Visa,
        Some(b'5') | Some(b'2') => CardBrand::Mastercard,
        Some(b'3') if pan.starts_with("34") || pan.starts_with("37") => CardBrand::Amex,
        Some(b'3') if pan.starts_with("35") => CardBrand::Jcb,
        Some(b'3') => CardBrand::Diners,
        Some(b'6') => CardBrand::Discover,
        _ => CardBrand::Unknown("UNKNOWN".into()),
    };
    let (bin, last4) = if pan.len() >= 10 {
        (pan[..6].to_owned(), pan[pan.len() - 4..].to_owned())
    } else {
        (String::new(), String::new())
    };
    CardProfile {
        behaviour,
        bin,
        last4,
        brand,
    }
}

/// Outcome of an Encrypted Card value. In the sandbox, `encrypted_card_no`
/// is `enc:<PAN>`; `enc:expired` simulates expired encryption data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptedCard {
    Card(CardProfile),
    /// ret_code 206021 / error 2005.
    Expired,
    /// ret_code 206020 / error 2004.
    Undecryptable,
}

pub fn encrypted_card(value: &str) -> EncryptedCard {
    match value.strip_prefix("enc:") {
        Some("expired") => EncryptedCard::Expired,
        Some(pan)
            if (12..=19).contains(&pan.len())
                && pan.bytes().all(|b| b.is_ascii_digit())
                && payorch_schemas::paykka::luhn_valid(pan) =>
        {
            EncryptedCard::Card(card_profile(pan))
        }
        _ => EncryptedCard::Undecryptable,
    }
}

/// Wallet `token_data`: `decline` declines, `3ds` challenges, anything else
/// approves; displayed as a VISA 411111…1111.
pub fn wallet_profile(token_data: &str) -> CardProfile {
    let behaviour = match token_data.trim() {
        "decline" => CardBehaviour::Decline(INVALID_CARD.0, INVALID_CARD.1),
        "3ds" => CardBehaviour::Challenge,
        _ => CardBehaviour::Approve,
    };
    CardProfile {
        behaviour,
        bin: "411111".into(),
        last4: "1111".into(),
        brand: CardBrand::Visa,
    }
}

/// What the last three digits of an amount ask for (initiate `amount`,
/// capture `amount`, refund `refund_amount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MagicAmount {
    None,
    /// `...991`: committed, answer delayed by `FaultConfig::slow_response`.
    SlowResponse,
    /// `...992`: committed, then HTTP 500 / `999999`.
    ErrorAfterCommit,
    /// `...993`: (initiate) 3DS challenge whatever the card.
    Challenge,
    /// `...994`: (initiate, capture, refund) committed, answered
    /// `FaultConfig::late_answer` later, and hidden from queries (and its
    /// notifications held back) until then.
    LateHidden,
    /// `...995`: (refund) the refund settles to `FAILURE`.
    RefundFailure,
}

pub fn magic_amount(amount: i64) -> MagicAmount {
    match amount.rem_euclid(1000) {
        991 => MagicAmount::SlowResponse,
        992 => MagicAmount::ErrorAfterCommit,
        993 => MagicAmount::Challenge,
        994 => MagicAmount::LateHidden,
        995 => MagicAmount::RefundFailure,
        _ => MagicAmount::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payorch_schemas::paykka::luhn_valid;

    #[test]
    fn every_test_card_is_luhn_valid() {
        for pan in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "4000000000000002",
            "4000000000000010",
            "4000000000003220",
            "4000000000000036",
            "4000000000000044",
            "4000000000000051",
            "4000000000000069",
            "4002017000000004",
            "4000000000000077",
        ] {
            assert!(luhn_valid(pan), "{pan}");
        }
        for (pan, code, _) in REFUSING_CARDS {
            assert!(
                matches!(card_profile(pan).behaviour, CardBehaviour::Refuse(c, _) if c == *code)
            );
            assert!(luhn_valid(pan), "{pan}");
        }
    }

    #[test]
    fn encrypted_values() {
        assert_eq!(encrypted_card("enc:expired"), EncryptedCard::Expired);
        assert_eq!(encrypted_card("garbage"), EncryptedCard::Undecryptable);
        assert_eq!(
            encrypted_card("enc:4111111111111112"),
            EncryptedCard::Undecryptable
        );
        match encrypted_card("enc:4000000000000002") {
            EncryptedCard::Card(p) => assert!(matches!(p.behaviour, CardBehaviour::Decline(..))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn magic() {
        assert_eq!(magic_amount(1991), MagicAmount::SlowResponse);
        assert_eq!(magic_amount(992), MagicAmount::ErrorAfterCommit);
        assert_eq!(magic_amount(1000), MagicAmount::None);
    }
}
