//! Prometheus metrics, hand-rolled (text exposition format 0.0.4).
//!
//! [`Metrics`] is a cheap, clonable handle. The HTTP layer records requests
//! by route template and status; [`MeteredGateway`] wraps any
//! [`PaymentGateway`] and records PayKKa call latency and outcome per
//! operation; the binary sets the relay-lag and reconciler-backlog gauges.
//!
//! Series:
//! * `payorch_http_requests_total{method,route,status}` (counter)
//! * `payorch_http_request_duration_seconds{method,route}` (histogram)
//! * `payorch_paykka_calls_total{operation,outcome}` (counter)
//! * `payorch_paykka_call_duration_seconds{operation}` (histogram)
//! * `payorch_webhook_notifications_total{kind,result}` (counter)
//! * `payorch_relay_lag_events` (gauge)
//! * `payorch_role{role}` (gauge): 1 while this node holds the leader lease
//!   of `role` (`relay`, `reconciler`), 0 while it stands by
//! * `payorch_reconciler_open_orders`, `payorch_reconciler_open_agreements`,
//!   `payorch_reconciler_open_checkout_sessions` (gauges): per kind, the
//!   streams the last reconciler pass found with work open for longer than
//!   its threshold (backed-off ones included)
//! * `payorch_reconciler_backlog_orders` (gauge, kept for dashboards: the
//!   streams of every kind with a PayKKa call open past the threshold;
//!   despite its name not only orders; prefer the three above)
//! * `payorch_reconciler_needs_attention` (gauge): refunds the reconciler
//!   stopped re-sending (PayKKa kept not knowing them past
//!   `reconcile_max_refund_resends`); still unknown, queried hourly; a
//!   person must look (the warn log names order and refund)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway};
use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionQueryResponse, CheckoutSessionRequest, CheckoutSessionResponse, InitiateRequest,
    PaymentResponse, QueryRequest, RecurringCancelRequest, RefundQueryRequest, RefundRequest,
    RefundResponse, TokenQueryRequest, TokenQueryResponse, TokenRemoveRequest, VoidRequest,
};

/// Histogram bucket upper bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    request_latency: BTreeMap<(String, String), Histogram>,
    paykka_calls: BTreeMap<(&'static str, &'static str), u64>,
    paykka_latency: BTreeMap<&'static str, Histogram>,
    webhooks: BTreeMap<(&'static str, &'static str), u64>,
    roles: BTreeMap<&'static str, bool>,
}

/// See the module docs. Clones share the same series.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
    relay_lag: Arc<AtomicI64>,
    reconciler_backlog: Arc<AtomicI64>,
    open_orders: Arc<AtomicI64>,
    open_agreements: Arc<AtomicI64>,
    open_checkout_sessions: Arc<AtomicI64>,
    needs_attention: Arc<AtomicI64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counters stay usable even if a panic poisoned the lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one HTTP request by route template (`/v1/payments/{id}`).
    pub fn record_request(&self, method: &str, route: &str, status: u16, latency: Duration) {
        let mut g = self.lock();
        *g.requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        g.request_latency
            .entry((method.to_owned(), route.to_owned()))
            .or_default()
            .observe(latency.as_secs_f64());
    }

    /// Records one PayKKa call (`outcome` = `GatewayOutcome::kind`).
    pub fn record_paykka_call(
        &self,
        operation: &'static str,
        outcome: &'static str,
        latency: Duration,
    ) {
        let mut g = self.lock();
        *g.paykka_calls.entry((operation, outcome)).or_default() += 1;
        g.paykka_latency
            .entry(operation)
            .or_default()
            .observe(latency.as_secs_f64());
    }

    /// Records one webhook delivery (`kind` payment/refund/unknown,
    /// `result` applied/unknown_order/rejected/unavailable/error).
    pub fn record_webhook(&self, kind: &'static str, result: &'static str) {
        *self.lock().webhooks.entry((kind, result)).or_default() += 1;
    }

    /// Sets how many committed events the relay has not yet published.
    pub fn set_relay_lag(&self, events: i64) {
        self.relay_lag.store(events, Ordering::Relaxed);
    }

    /// Sets how many orders wait for the reconciler.
    pub fn set_reconciler_backlog(&self, orders: i64) {
        self.reconciler_backlog.store(orders, Ordering::Relaxed);
    }

    /// Records whether this node holds the leader lease of `role`
    /// (`relay`, `reconciler`).
    pub fn set_role(&self, role: &'static str, held: bool) {
        self.lock().roles.insert(role, held);
    }

    /// Sets `payorch_reconciler_needs_attention` (see the module docs).
    pub fn set_reconciler_needs_attention(&self, refunds: i64) {
        self.needs_attention.store(refunds, Ordering::Relaxed);
    }

    /// Sets the per-kind reconciler backlog: orders, agreements and
    /// checkout sessions with work open past the reconciler's threshold.
    pub fn set_reconciler_open(&self, orders: i64, agreements: i64, checkout_sessions: i64) {
        self.open_orders.store(orders, Ordering::Relaxed);
        self.open_agreements.store(agreements, Ordering::Relaxed);
        self.open_checkout_sessions
            .store(checkout_sessions, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut out = String::new();
        out.push_str("# HELP payorch_http_requests_total HTTP requests by route template and status.\n# TYPE payorch_http_requests_total counter\n");
        for ((method, route, status), n) in &g.requests {
            let _ = writeln!(
                out,
                "payorch_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                esc(method),
                esc(route)
            );
        }
        out.push_str("# HELP payorch_http_request_duration_seconds HTTP request latency.\n# TYPE payorch_http_request_duration_seconds histogram\n");
        for ((method, route), h) in &g.request_latency {
            h.render(
                &mut out,
                "payorch_http_request_duration_seconds",
                &format!("method=\"{}\",route=\"{}\"", esc(method), esc(route)),
            );
        }
        out.push_str("# HELP payorch_paykka_calls_total PayKKa calls by operation and outcome class.\n# TYPE payorch_paykka_calls_total counter\n");
        for ((op, outcome), n) in &g.paykka_calls {
            let _ = writeln!(
                out,
                "payorch_paykka_calls_total{{operation=\"{op}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP payorch_paykka_call_duration_seconds PayKKa call latency.\n# TYPE payorch_paykka_call_duration_seconds histogram\n");
        for (op, h) in &g.paykka_latency {
            h.render(
                &mut out,
                "payorch_paykka_call_duration_seconds",
                &format!("operation=\"{op}\""),
            );
        }
        out.push_str("# HELP payorch_webhook_notifications_total PayKKa notifications by kind and result.\n# TYPE payorch_webhook_notifications_total counter\n");
        for ((kind, result), n) in &g.webhooks {
            let _ = writeln!(
                out,
                "payorch_webhook_notifications_total{{kind=\"{kind}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP payorch_role 1 while this node holds the leader lease of the role, 0 while it stands by.\n# TYPE payorch_role gauge\n");
        for (role, held) in &g.roles {
            let _ = writeln!(out, "payorch_role{{role=\"{role}\"}} {}", u8::from(*held));
        }
        let _ = writeln!(
            out,
            "# HELP payorch_relay_lag_events Committed events not yet published by the relay.\n# TYPE payorch_relay_lag_events gauge\npayorch_relay_lag_events {}",
            self.relay_lag.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP payorch_reconciler_backlog_orders Streams of every kind with a PayKKa call open past the reconciler threshold (deprecated name: see the per-kind gauges).\n# TYPE payorch_reconciler_backlog_orders gauge\npayorch_reconciler_backlog_orders {}",
            self.reconciler_backlog.load(Ordering::Relaxed)
        );
        for (name, help, v) in [
            (
                "payorch_reconciler_open_orders",
                "Orders with a PayKKa call or 3DS challenge open past the reconciler threshold.",
                &self.open_orders,
            ),
            (
                "payorch_reconciler_open_agreements",
                "Recurring agreements with a cancel unanswered past the reconciler threshold.",
                &self.open_agreements,
            ),
            (
                "payorch_reconciler_open_checkout_sessions",
                "Checkout sessions with a create unanswered, or open for the shopper, past the reconciler threshold.",
                &self.open_checkout_sessions,
            ),
            (
                "payorch_reconciler_needs_attention",
                "Refunds the reconciler stopped re-sending after the maximum number of re-sends: still unknown, a person must look.",
                &self.needs_attention,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Axum middleware recording every request (route template, not the raw
/// path, so ids do not explode the label set).
pub(crate) async fn track_requests(
    State(metrics): State<Metrics>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method()).to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics.record_request(&method, &route, resp.status().as_u16(), start.elapsed());
    resp
}

/// The `method` label: one of the standard methods, anything else `OTHER`
/// (a client choosing methods must not choose our label set or its size).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// A [`PaymentGateway`] decorator recording latency and outcome class of
/// every call in [`Metrics`]. The binary wraps the PayKKa client with it
/// before handing it to the engine.
pub struct MeteredGateway<G> {
    inner: G,
    metrics: Metrics,
}

impl<G> MeteredGateway<G> {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: G, metrics: Metrics) -> Self {
        MeteredGateway { inner, metrics }
    }

    /// The wrapped gateway.
    pub fn inner(&self) -> &G {
        &self.inner
    }

    async fn timed<T, F>(&self, operation: &'static str, f: F) -> GatewayOutcome<T>
    where
        F: std::future::Future<Output = GatewayOutcome<T>>,
    {
        let start = Instant::now();
        let out = f.await;
        self.metrics
            .record_paykka_call(operation, out.kind(), start.elapsed());
        out
    }
}

#[async_trait]
impl<G: PaymentGateway> PaymentGateway for MeteredGateway<G> {
    async fn initiate(&self, req: &InitiateRequest) -> GatewayOutcome<PaymentResponse> {
        self.timed("initiate", self.inner.initiate(req)).await
    }
    async fn query(&self, req: &QueryRequest) -> GatewayOutcome<PaymentResponse> {
        self.timed("query", self.inner.query(req)).await
    }
    async fn capture(&self, req: &CaptureRequest) -> GatewayOutcome<PaymentResponse> {
        self.timed("capture", self.inner.capture(req)).await
    }
    async fn void(&self, req: &VoidRequest) -> GatewayOutcome<PaymentResponse> {
        self.timed("void", self.inner.void(req)).await
    }
    async fn refund(&self, req: &RefundRequest) -> GatewayOutcome<RefundResponse> {
        self.timed("refund", self.inner.refund(req)).await
    }
    async fn refund_query(&self, req: &RefundQueryRequest) -> GatewayOutcome<RefundResponse> {
        self.timed("refund_query", self.inner.refund_query(req))
            .await
    }
    async fn token_query(&self, req: &TokenQueryRequest) -> GatewayOutcome<TokenQueryResponse> {
        self.timed("token_query", self.inner.token_query(req)).await
    }
    async fn token_remove(&self, req: &TokenRemoveRequest) -> GatewayOutcome<()> {
        self.timed("token_remove", self.inner.token_remove(req))
            .await
    }
    async fn recurring_cancel(&self, req: &RecurringCancelRequest) -> GatewayOutcome<()> {
        self.timed("recurring_cancel", self.inner.recurring_cancel(req))
            .await
    }
    async fn apple_pay_session(
        &self,
        req: &ApplePaySessionRequest,
    ) -> GatewayOutcome<ApplePaySessionResponse> {
        self.timed("apple_pay_session", self.inner.apple_pay_session(req))
            .await
    }
    async fn checkout_session_create(
        &self,
        req: &CheckoutSessionRequest,
    ) -> GatewayOutcome<CheckoutSessionResponse> {
        self.timed(
            "checkout_session_create",
            self.inner.checkout_session_create(req),
        )
        .await
    }
    async fn checkout_session_query(
        &self,
        req: &CheckoutSessionQueryRequest,
    ) -> GatewayOutcome<CheckoutSessionQueryResponse> {
        self.timed(
            "checkout_session_query",
            self.inner.checkout_session_query(req),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new();
        m.record_request("GET", "/v1/payments/{id}", 200, Duration::from_millis(3));
        m.record_paykka_call("capture", "success", Duration::from_millis(40));
        m.set_relay_lag(7);
        m.set_reconciler_backlog(2);
        m.set_reconciler_open(3, 4, 5);
        m.set_reconciler_needs_attention(6);
        m.set_role("relay", false);
        m.set_role("reconciler", true);
        let text = m.render();
        assert!(text.contains(
            "payorch_http_requests_total{method=\"GET\",route=\"/v1/payments/{id}\",status=\"200\"} 1"
        ));
        assert!(
            text.contains(
                "payorch_paykka_calls_total{operation=\"capture\",outcome=\"success\"} 1"
            )
        );
        assert!(text.contains(
            "payorch_paykka_call_duration_seconds_bucket{operation=\"capture\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "payorch_paykka_call_duration_seconds_bucket{operation=\"capture\",le=\"0.025\"} 0"
        ));
        assert!(text.contains("payorch_relay_lag_events 7"));
        assert!(text.contains("payorch_reconciler_backlog_orders 2"));
        assert!(text.contains("payorch_reconciler_open_orders 3"));
        assert!(text.contains("payorch_role{role=\"relay\"} 0"));
        assert!(text.contains("payorch_role{role=\"reconciler\"} 1"));
        assert!(text.contains("payorch_reconciler_open_agreements 4"));
        assert!(text.contains("payorch_reconciler_open_checkout_sessions 5"));
        assert!(text.contains("payorch_reconciler_needs_attention 6"));
    }
}
