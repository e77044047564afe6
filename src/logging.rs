//! Log set-up of `serve`: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info`), as text or JSON lines (`--log-format`, config key
//! `log_format`, `PAYORCH_LOG_FORMAT`).
//!
//! Text has ANSI colours only when stderr is a terminal (a file or a pipe
//! gets plain text). JSON lines carry the event's fields as JSON values
//! and the fields of its spans (`request_id`, `method`, `path` of the HTTP
//! request span), so a collector can select every line of one request.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber (a no-op when one is already set, as in
/// tests that run several commands in one process).
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
