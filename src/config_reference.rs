//! The configuration reference: one table of every setting (file key,
//! environment variable, flag, default, meaning), rendered to
//! `docs/CONFIG.md`. A test renders it and fails when the committed page
//! differs (run it with `PAYORCH_UPDATE_DOCS=1` to rewrite the page), and
//! another fails when `Config` accepts a key the table does not list (or
//! the table lists one it refuses), so the page follows the code.

/// One setting.
pub struct Setting {
    /// TOML key, with its table (`paykka.base_url`, `merchants[].merchant_id`).
    pub key: &'static str,
    /// `PAYORCH_*` environment override, if any.
    pub env: Option<&'static str>,
    /// Command-line flag, if any (`serve --addr`).
    pub flag: Option<&'static str>,
    /// Default, as TOML text or a sentence.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

const fn s(
    key: &'static str,
    env: Option<&'static str>,
    flag: Option<&'static str>,
    default: &'static str,
    doc: &'static str,
) -> Setting {
    Setting {
        key,
        env,
        flag,
        default,
        doc,
    }
}

/// Every setting of `payorch.toml`.
pub const SETTINGS: &[Setting] = &[
    s(
        "store_url",
        Some("PAYORCH_STORE_URL"),
        Some("--store-url"),
        "`\"sqlite://payorch.db\"`",
        "Event store: `sqlite://FILE` (embedded) or `postgres://user:pass@host/db`. `serve`, `migrate`, `demo --store` create a missing SQLite file; `replay` and `export` refuse one.",
    ),
    s(
        "amqp_url",
        Some("PAYORCH_AMQP_URL"),
        Some("serve --amqp-url"),
        "unset (in-process bus)",
        "RabbitMQ URL for events out (`amqp://` or `amqps://`; `PAYORCH_AMQP_URL=none` unsets it): the relay publishes every committed event to the `payorch.events` exchange.",
    ),
    s(
        "addr",
        Some("PAYORCH_ADDR"),
        Some("serve --addr"),
        "`\"127.0.0.1:8080\"`",
        "Listen address of `serve` (`HOST:PORT`; port 0 picks a free one).",
    ),
    s(
        "public_url",
        Some("PAYORCH_PUBLIC_URL"),
        None,
        "`http://<addr>`",
        "The URL PayKKa reaches this service at; notification URLs (`notify_url`) are built from it.",
    ),
    s(
        "log_format",
        Some("PAYORCH_LOG_FORMAT"),
        Some("serve --log-format"),
        "`\"text\"`",
        "`text` (colours only on a terminal) or `json` (one object per line with the request span's `request_id`). `RUST_LOG` filters (default `info`).",
    ),
    s(
        "reconcile_interval_secs",
        Some("PAYORCH_RECONCILE_INTERVAL_SECS"),
        None,
        "`5`",
        "Seconds between reconciler passes.",
    ),
    s(
        "reconcile_threshold_secs",
        Some("PAYORCH_RECONCILE_THRESHOLD_SECS"),
        None,
        "`5`",
        "Age of an order's last event before the reconciler queries PayKKa about its open call (0: at once).",
    ),
    s(
        "reconcile_grace_secs",
        Some("PAYORCH_RECONCILE_GRACE_SECS"),
        None,
        "`86400`",
        "Seconds after a call was requested from which PayKKa's \"not found\" / \"not applied\" answers count as definitive.",
    ),
    s(
        "reconcile_backoff_base_secs",
        Some("PAYORCH_RECONCILE_BACKOFF_BASE_SECS"),
        None,
        "`5`",
        "First wait between two queries of one order (doubles after each); at least 1.",
    ),
    s(
        "reconcile_backoff_max_secs",
        Some("PAYORCH_RECONCILE_BACKOFF_MAX_SECS"),
        None,
        "`3600`",
        "Longest wait between two queries of one order; at least `reconcile_backoff_base_secs`.",
    ),
    s(
        "reconcile_max_refund_resends",
        Some("PAYORCH_RECONCILE_MAX_REFUND_RESENDS"),
        None,
        "`24`",
        "Re-sends of one refund PayKKa keeps not knowing (past the grace period) before the reconciler stops re-sending it: it stays unknown (never declined), is queried at the longest backoff, logged at warn and counted in `payorch_reconciler_needs_attention`.",
    ),
    s(
        "paykka",
        None,
        None,
        "absent (in-process sandbox)",
        "Table of PayKKa settings shared by every merchant (keys below). Setting `paykka.base_url` needs at least one `[[merchants]]`.",
    ),
    s(
        "paykka.base_url",
        Some("PAYORCH_PAYKKA_BASE_URL"),
        None,
        "unset",
        "PayKKa host plus prefix, e.g. `https://api.paykka.example/apis` ([INFERRED] prefix).",
    ),
    s(
        "paykka.response_signature",
        Some("PAYORCH_PAYKKA_RESPONSE_SIGNATURE"),
        None,
        "`\"warn\"`",
        "Check of PayKKa's response signatures: `enforce`, `warn` or `off`.",
    ),
    s(
        "paykka.webhook_signature",
        Some("PAYORCH_PAYKKA_WEBHOOK_SIGNATURE"),
        None,
        "`\"warn\"`",
        "Check of PayKKa's notification signatures ([INFERRED] scheme): `warn` (report-only: a failing notification only makes payorch query PayKKa), `enforce` (401) or `off`.",
    ),
    s(
        "paykka.webhook_tolerance_ms",
        None,
        None,
        "`300000`",
        "Notification timestamp window in ms; 0 turns the freshness check off.",
    ),
    s(
        "paykka.percent_encode_signature",
        None,
        None,
        "`true`",
        "Percent-encode the base64 signature header ([INFERRED]).",
    ),
    s(
        "paykka.body_version_field",
        None,
        None,
        "`false`",
        "Send the `version` field in the request body instead of the header only ([INFERRED]).",
    ),
    s(
        "paykka.timeout_secs",
        None,
        None,
        "the client's per-operation defaults",
        "Total timeout of every PayKKa call, in seconds. A timeout is an unknown outcome, never a failure.",
    ),
    s(
        "paykka.release_mode",
        Some("PAYORCH_PAYKKA_RELEASE_MODE"),
        None,
        "`\"capture_flag\"`",
        "How PayKKa releases the uncaptured rest of a final partial capture ([INFERRED]): `capture_flag` (the capture carries `final_capture: true`), `void_after_capture` (payorch sends a Void for the rest once the capture is confirmed) or `on_expiry` (nothing is sent; PayKKa releases it when the authorisation expires). In every mode the rest shows as released only when PayKKa's balances say so.",
    ),
    s(
        "paykka.paths",
        None,
        None,
        "the spec's paths",
        "Table of relative paths per operation ([INFERRED]): `initiate`, `query`, `capture`, `void`, `token_query`, `token_remove`, `recurring_cancel`, `apple_pay_session`, `session_create`, `session_query`, `refund`, `refund_query`.",
    ),
    s(
        "merchants",
        None,
        None,
        "none (a generated sandbox merchant)",
        "Array of tables `[[merchants]]`, one per merchant this instance serves (keys below). Each needs a PayKKa base URL (`paykka.base_url` or its own).",
    ),
    s(
        "merchants[].merchant_id",
        None,
        None,
        "required",
        "PayKKa merchant number.",
    ),
    s(
        "merchants[].private_key_path",
        None,
        None,
        "required",
        "PEM file of the merchant's RSA private key that signs requests (`payorch keygen` makes one).",
    ),
    s(
        "merchants[].paykka_public_key_path",
        None,
        None,
        "required",
        "PayKKa's platform public key (PEM or bare base64) that verifies responses and notifications.",
    ),
    s(
        "merchants[].api_key_sha256",
        None,
        None,
        "required",
        "Hex SHA-256 of the merchant's payorch API key (`Authorization: Bearer <key>`); the key itself is never stored.",
    ),
    s(
        "merchants[].paykka",
        None,
        None,
        "absent",
        "Table `[merchants.paykka]`: any key of `[paykka]`, overriding it for this merchant only.",
    ),
    s(
        "webhooks",
        None,
        None,
        "none",
        "Array of tables `[[webhooks]]`: merchant endpoints that receive the merchant's events, signed (`Payorch-Signature: t=..,v1=<hex HMAC-SHA256(secret, t.body)>`), retried with backoff for a day, in order per payment (crate payorch-webhooks).",
    ),
    s(
        "webhooks[].id",
        None,
        None,
        "`<merchant_id>-<index>`",
        "Name of the endpoint in logs, the delivery log, the API (`/v1/webhook-endpoints/{id}`) and `payorch webhooks --endpoint`; unique. Keep it stable: the delivery log is keyed by it.",
    ),
    s(
        "webhooks[].merchant_id",
        None,
        None,
        "required",
        "The merchant whose events go to this endpoint.",
    ),
    s(
        "webhooks[].url",
        None,
        None,
        "required",
        "`https://...` (or `http://`).",
    ),
    s(
        "webhooks[].secret",
        None,
        None,
        "required",
        "Signing secret shared with the merchant, at least 16 characters.",
    ),
    s(
        "webhooks[].events",
        None,
        None,
        "every event",
        "Filters on `<stream_type>.<event_type>`: `order.*`, `order.captured`, `*`.",
    ),
    s(
        "webhook_timeout_ms",
        Some("PAYORCH_WEBHOOK_TIMEOUT_MS"),
        None,
        "`10000`",
        "Per-attempt timeout of a webhook delivery (logged as error class `timeout`).",
    ),
    s(
        "webhook_backoff_base_ms",
        Some("PAYORCH_WEBHOOK_BACKOFF_BASE_MS"),
        None,
        "`10000`",
        "Wait after a delivery's first failed attempt; doubles after each failure.",
    ),
    s(
        "webhook_backoff_max_ms",
        Some("PAYORCH_WEBHOOK_BACKOFF_MAX_MS"),
        None,
        "`3600000`",
        "Longest wait between two attempts of one delivery; at least `webhook_backoff_base_ms`.",
    ),
    s(
        "webhook_give_up_after_secs",
        Some("PAYORCH_WEBHOOK_GIVE_UP_AFTER_SECS"),
        None,
        "`86400`",
        "Retries of a delivery stop this long after its first attempt (state `given_up`; redeliver with the API or `payorch webhooks redeliver`).",
    ),
];

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `docs/CONFIG.md`.
pub fn render() -> String {
    let mut out = String::from(
        "# payorch configuration reference\n\n\
         <!-- Generated from src/config_reference.rs by its tests \
         (PAYORCH_UPDATE_DOCS=1 cargo test -p payorch --bin payorch config_reference). \
         Do not edit by hand. -->\n\n\
         Settings come from, lowest precedence first: the defaults below; the config \
         file (`--config FILE`, else `$PAYORCH_CONFIG`, else `./payorch.toml` if present; \
         unknown keys are an error naming them); `PAYORCH_*` environment variables; \
         command-line flags. Errors name the key at fault.\n\n\
         | Key | Environment | Flag | Default | Meaning |\n\
         |---|---|---|---|---|\n",
    );
    for st in SETTINGS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            st.key,
            st.env
                .map(|e| format!("`{e}`"))
                .unwrap_or_else(|| "-".into()),
            st.flag
                .map(|f| format!("`{f}`"))
                .unwrap_or_else(|| "-".into()),
            cell(st.default),
            cell(st.doc),
        ));
    }
    out.push_str(
        "\nExample (a real PayKKa, one merchant):\n\n```toml\n\
         store_url = \"postgres://payorch:secret@db/payorch\"\n\
         amqp_url = \"amqp://guest:guest@rabbitmq:5672/%2f\"\n\
         addr = \"0.0.0.0:8080\"\n\
         public_url = \"https://payments.example.com\"\n\
         log_format = \"json\"\n\n\
         [paykka]\n\
         base_url = \"https://api.paykka.example/apis\"\n\n\
         [[merchants]]\n\
         merchant_id = \"18356675194960\"\n\
         private_key_path = \"keys/merchant_private.pem\"\n\
         paykka_public_key_path = \"keys/paykka_public.pem\"\n\
         api_key_sha256 = \"<hex SHA-256 of the merchant's payorch API key>\"\n\
         ```\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::Config;

    fn page_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md")
    }

    #[test]
    fn committed_page_matches_the_table() {
        let want = render();
        if std::env::var_os("PAYORCH_UPDATE_DOCS").is_some() {
            std::fs::write(page_path(), &want).expect("write docs/CONFIG.md");
        }
        let have = std::fs::read_to_string(page_path()).unwrap_or_default();
        assert!(
            have == want,
            "docs/CONFIG.md differs from src/config_reference.rs: run \
             PAYORCH_UPDATE_DOCS=1 cargo test -p payorch --bin payorch config_reference"
        );
    }

    /// The keys a table accepts, read from the parser's own "unknown
    /// field, expected one of ..." message.
    fn accepted_keys(toml_text: &str) -> BTreeSet<String> {
        let err = Config::from_toml(toml_text, Path::new("probe.toml"))
            .expect_err("an unknown key is refused")
            .to_string();
        let list = err
            .split("expected one of")
            .nth(1)
            .unwrap_or_else(|| panic!("no key list in {err}"));
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    fn table_keys(prefix: &str) -> BTreeSet<String> {
        SETTINGS
            .iter()
            .filter_map(|st| {
                if prefix.is_empty() {
                    (!st.key.contains('.')).then(|| st.key.to_owned())
                } else {
                    st.key.strip_prefix(prefix).map(str::to_owned)
                }
            })
            .collect()
    }

    #[test]
    fn the_table_lists_exactly_the_keys_config_accepts() {
        assert_eq!(
            accepted_keys("probe_unknown = 1\n"),
            table_keys(""),
            "top-level keys"
        );
        assert_eq!(
            accepted_keys("[paykka]\nprobe_unknown = 1\n"),
            table_keys("paykka."),
            "[paykka] keys"
        );
        assert_eq!(
            accepted_keys("[[merchants]]\nprobe_unknown = 1\n"),
            table_keys("merchants[]."),
            "[[merchants]] keys"
        );
        assert_eq!(
            accepted_keys("[[webhooks]]\nprobe_unknown = 1\n"),
            table_keys("webhooks[]."),
            "[[webhooks]] keys"
        );
    }
}
