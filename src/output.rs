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
        if self.json {
            println!("{:#}", serde_json::json!({ "error": format!("{err:#}") }));
        } else {
            eprintln!("error: {err:#}");
        }
    }
}
