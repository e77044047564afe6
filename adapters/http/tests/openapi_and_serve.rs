//! The OpenAPI document matches the router (both read `routes::routes()`,
//! and every route answers with its own handler), and `serve` shuts down
//! gracefully over a real socket.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{Method, Request, StatusCode};
use common::*;
use payorch_http::routes::{Access, routes};
use payorch_http::{AppState, HealthCheck};
use tokio::sync::Notify;

#[tokio::test]
async fn openapi_lists_exactly_the_routes_of_the_router() {
    let h = harness();
    let r = send(&h.router, get("/openapi.json", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.body;
    assert_eq!(doc["openapi"], "3.1.0");

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let table: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, table);
    assert_eq!(table.len(), routes().len(), "a route is listed twice");

    // Every $ref resolves.
    let text = doc.to_string();
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap_or("");
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }

    // Every documented route is served by its handler with its method:
    // anonymous calls get the route's own answer, never the router's
    // 404/405 fallbacks.
    for spec in routes() {
        let path = spec
            .path
            .replace("{id}", "0193a000-0000-7000-8000-000000000001")
            .replace("{event_id}", "0193a000-0000-7000-8000-000000000002");
        let method = match spec.method {
            payorch_http::routes::Method::Get => Method::GET,
            payorch_http::routes::Method::Post => Method::POST,
        };
        let req = Request::builder()
            .method(method)
            .uri(&path)
            .body(axum::body::Body::from("{}"))
            .expect("request");
        let resp = send(&h.router, req).await;
        let expected = match spec.access {
            Access::Merchant | Access::PaykkaSignature => StatusCode::UNAUTHORIZED,
            Access::Public => StatusCode::OK,
        };
        assert_eq!(
            resp.status,
            expected,
            "{} {} answered {}",
            spec.method.as_str(),
            spec.path,
            resp.text
        );
        // Merchant POSTs document the Idempotency-Key header.
        let op = &doc["paths"][spec.path][spec.method.as_str().to_ascii_lowercase()];
        let has_idem = op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key"));
        assert_eq!(
            has_idem,
            spec.access == Access::Merchant && spec.method == payorch_http::routes::Method::Post,
            "{}",
            spec.path
        );
    }
}

/// A health check that blocks until released, to hold a request in flight.
struct Gate {
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl HealthCheck for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    async fn check(&self) -> Result<(), String> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn serve_finishes_in_flight_requests_on_shutdown() {
    let h = harness();
    let gate = Arc::new(Gate {
        entered: Notify::new(),
        release: Notify::new(),
    });
    let state: AppState = h.state.clone().with_health_check(gate.clone());
    let router = payorch_http::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Arc::new(Notify::new());
    let stop2 = stop.clone();
    let server = tokio::spawn(payorch_http::serve(listener, router, async move {
        stop2.notified().await;
    }));

    let client = reqwest::Client::new();
    let url = format!("http://{addr}/healthz");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    // Wait until the request is inside the handler, then ask to stop.
    tokio::time::timeout(std::time::Duration::from_secs(10), gate.entered.notified())
        .await
        .expect("request reached the handler");
    stop.notify_one();
    // The server must not finish while the request is in flight.
    tokio::task::yield_now().await;
    assert!(!server.is_finished());
    gate.release.notify_one();

    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), in_flight)
        .await
        .expect("response in time")
        .expect("task")
        .expect("in-flight request completed");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["checks"]["gate"]["status"], "ok");
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("server stopped")
        .expect("task")
        .expect("serve ok");
}

#[tokio::test]
async fn real_socket_round_trip() {
    let h = harness();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(payorch_http::serve(
        listener,
        h.router.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{addr}/v1/payments"))
        .bearer_auth(KEY_A)
        .header("Idempotency-Key", "socket-1")
        .header("content-type", "application/json")
        .body(card_payment("MANUAL"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["status"], "authorised");
    let _ = tx.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("server stopped")
        .expect("task")
        .expect("serve ok");
}
