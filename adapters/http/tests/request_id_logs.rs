//! Every log line of a request carries its request id (issue 15 point
//! 5). Alone in its test binary: a scoped (thread-local) subscriber would
//! race with other tests' threads over tracing's cached callsite interest.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn with_id(mut req: Request<Body>, id: &str) -> Request<Body> {
    req.headers_mut()
        .insert("x-request-id", id.parse().expect("header value"));
    req
}

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_id() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .json()
        .with_span_list(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = harness();
    h.store.set_down(true);
    let r = send(
        &h.router,
        with_id(
            post(
                "/v1/payments",
                Some(KEY_A),
                Some("log-1"),
                &card_payment("MANUAL"),
            ),
            "req-logged-1",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["error"]["request_id"], "req-logged-1");

    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    // At least the store error and the request's own trace lines.
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "store unavailable"),
        "{text}"
    );
    for l in &lines {
        let spans = l["spans"]
            .as_array()
            .unwrap_or_else(|| panic!("no span list: {l}"));
        assert!(
            spans.iter().any(|s| s["request_id"] == "req-logged-1"),
            "log line without the request id: {l}"
        );
    }
}
