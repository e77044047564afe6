//! Text or JSON output, chosen once by the global `--json` flag.

use serde_json::Value;

/// Where subcommands print results and errors.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Whether `--json` was given.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints a result: `value` as one JSON document with `--json`, otherwise
    /// the text produced by `text`.
    pub fn emit(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value:#}");
        } else {
            let text = text();
            if text.ends_with('\n') {
                print!("{text}");
            } else {
                println!("{text}");
            }
        }
    }

    /// Prints a fatal error (exit code 2): on stderr as text, or on stdout as
    /// `{"error": "..."}` with `--json`.
    pub fn error(&self, err: &anyhow::Error) {
        let text = error_text(err);
        if self.json {
            println!("{:#}", serde_json::json!({ "error": text }));
        } else {
            eprintln!("error: {text}");
        }
    }
}

/// The error and its causes joined by `: `, each text once: library errors
/// often include their source's text in their own message *and* return it
/// as `source()`, so `{:#}` would print an OS or database error two or
/// three times. A cause whose text the message already holds is skipped.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let c = cause.to_string();
        if c.is_empty() || text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read key file k.pem: {0}")]
    struct KeyError(#[source] std::io::Error);

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file (os error 2)");
        let err = anyhow::Error::new(KeyError(io)).context("merchants[0].private_key_path");
        assert_eq!(
            error_text(&err),
            "merchants[0].private_key_path: cannot read key file k.pem: No such file (os error 2)"
        );
        let plain = anyhow::anyhow!("disk full").context("cannot write export.jsonl");
        assert_eq!(error_text(&plain), "cannot write export.jsonl: disk full");
    }
}
