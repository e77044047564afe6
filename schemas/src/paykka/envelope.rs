//! The response envelope and the notification acknowledgement (README §5,
//! endpoints.md §13, codes.md §1).

use serde::{Deserialize, Serialize};

/// `ret_code` of an accepted request / a successful acknowledgement.
pub const RET_CODE_SUCCESS: &str = "000000";
/// `ret_msg` PayKKa sends (and expects back) with `000000`.
pub const RET_MSG_SUCCESS: &str = "Success";
/// `error_code` of a business success inside `data`.
pub const ERROR_CODE_SUCCESS: &str = "0000";

/// Every PayKKa response: `{"ret_code":"000000","ret_msg":"Success","data":{...}}`.
///
/// `ret_code` is the transport/system outcome (codes.md §3); `data` is the
/// business object and may be absent on failure or for operations without a
/// result (token remove, recurring cancel). A `000000` envelope can still
/// carry a declined payment (`data.status = FAILURE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub ret_code: String,
    #[serde(default)]
    pub ret_msg: String,
    // No `default` here: serde already maps a missing Option to None, and
    // `default` would add a `T: Default` bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

impl<T> Envelope<T> {
    /// A `000000`/`Success` envelope around `data` (used by the sandbox).
    pub fn success(data: T) -> Self {
        Envelope {
            ret_code: RET_CODE_SUCCESS.to_owned(),
            ret_msg: RET_MSG_SUCCESS.to_owned(),
            data: Some(data),
        }
    }

    /// An error envelope without `data`.
    pub fn error(ret_code: impl Into<String>, ret_msg: impl Into<String>) -> Self {
        Envelope {
            ret_code: ret_code.into(),
            ret_msg: ret_msg.into(),
            data: None,
        }
    }

    /// `ret_code == "000000"`: PayKKa accepted the request (the business
    /// outcome is still in `data`).
    pub fn is_success(&self) -> bool {
        self.ret_code == RET_CODE_SUCCESS
    }
}

/// Body of an answer that has only `ret_code`/`ret_msg`: our acknowledgement
/// of a notification (`{"ret_code":"000000","ret_msg":"Success"}`) and
/// PayKKa's answer to token remove / recurring cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub ret_code: String,
    #[serde(default)]
    pub ret_msg: String,
}

impl Ack {
    /// `{"ret_code":"000000","ret_msg":"Success"}`.
    pub fn success() -> Self {
        Ack {
            ret_code: RET_CODE_SUCCESS.to_owned(),
            ret_msg: RET_MSG_SUCCESS.to_owned(),
        }
    }

    pub fn is_success(&self) -> bool {
        self.ret_code == RET_CODE_SUCCESS
    }
}

impl Default for Ack {
    fn default() -> Self {
        Ack::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_is_the_documented_literal() {
        assert_eq!(
            serde_json::to_string(&Ack::success()).unwrap(),
            r#"{"ret_code":"000000","ret_msg":"Success"}"#
        );
    }

    #[test]
    fn envelope_without_data() {
        let e: Envelope<serde_json::Value> =
            serde_json::from_str(r#"{"ret_code":"206024","ret_msg":"the order doesn't exist"}"#)
                .unwrap();
        assert!(!e.is_success());
        assert!(e.data.is_none());
        let e: Envelope<serde_json::Value> =
            serde_json::from_str(r#"{"ret_code":"000000","ret_msg":"Success","data":null}"#)
                .unwrap();
        assert!(e.is_success());
    }
}
