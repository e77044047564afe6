//! A `/healthz` check that a remote service is reachable: a TCP connect to
//! each of its `host:port`s within a short timeout, the result cached for a
//! few seconds so `/healthz` polling never hammers the remote (the binary
//! uses it for PayKKa). It is *degrading*, not critical
//! ([`HealthCheck::critical`]): an unreachable PayKKa makes `/healthz`
//! answer `200 {"status":"degraded"}` (lists, reads and webhooks still
//! work, and every instance sees the same PayKKa, so taking this one out
//! of a load balancer would help nobody); payments then answer `503
//! paykka_unreachable`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::Uri;
use tokio::sync::Mutex;

use crate::state::HealthCheck;

/// See the module docs.
pub struct TcpReachability {
    name: String,
    targets: Vec<(String, u16)>,
    timeout: Duration,
    ttl: Duration,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl std::fmt::Debug for TcpReachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpReachability")
            .field("name", &self.name)
            .field("targets", &self.targets)
            .finish()
    }
}

impl TcpReachability {
    /// Checks `targets` (host, port), 1 s connect timeout, cached 5 s.
    pub fn new(name: impl Into<String>, targets: Vec<(String, u16)>) -> Self {
        TcpReachability {
            name: name.into(),
            targets,
            timeout: Duration::from_secs(1),
            ttl: Duration::from_secs(5),
            last: Mutex::new(None),
        }
    }

    /// The distinct `host:port`s of `urls` (`http`: port 80, `https`: 443
    /// unless given); an unparsable URL is an error naming it.
    pub fn from_urls<'a>(
        name: impl Into<String>,
        urls: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, String> {
        let mut targets: Vec<(String, u16)> = Vec::new();
        for url in urls {
            let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
            let host = uri
                .host()
                .ok_or_else(|| format!("{url:?}: no host"))?
                .trim_matches(['[', ']'])
                .to_owned();
            let port = match (uri.port_u16(), uri.scheme_str()) {
                (Some(p), _) => p,
                (None, Some("https")) => 443,
                (None, Some("http")) => 80,
                (None, other) => return Err(format!("{url:?}: unknown scheme {other:?}")),
            };
            if !targets.contains(&(host.clone(), port)) {
                targets.push((host, port));
            }
        }
        Ok(Self::new(name, targets))
    }

    /// Connect timeout of one probe.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a result is reused.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    async fn probe(&self) -> Result<(), String> {
        for (host, port) in &self.targets {
            match tokio::time::timeout(
                self.timeout,
                tokio::net::TcpStream::connect((host.as_str(), *port)),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("{host}:{port}: {e}")),
                Err(_) => {
                    return Err(format!(
                        "{host}:{port}: no connection within {} ms",
                        self.timeout.as_millis()
                    ));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl HealthCheck for TcpReachability {
    fn name(&self) -> &str {
        &self.name
    }

    fn critical(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, r)) = last.as_ref()
            && at.elapsed() < self.ttl
        {
            return r.clone();
        }
        let r = self.probe().await;
        *last = Some((Instant::now(), r.clone()));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_distinct_targets() {
        let t = TcpReachability::from_urls(
            "paykka",
            [
                "https://sandbox.aq.paykka.com/apis",
                "https://sandbox.aq.paykka.com/other",
                "http://127.0.0.1:8080/apis",
                "http://[::1]:9/apis",
            ],
        )
        .unwrap();
        assert_eq!(
            t.targets,
            vec![
                ("sandbox.aq.paykka.com".to_owned(), 443),
                ("127.0.0.1".to_owned(), 8080),
                ("::1".to_owned(), 9)
            ]
        );
        assert!(TcpReachability::from_urls("p", ["not a url"]).is_err());
    }

    #[tokio::test]
    async fn a_closed_port_fails_and_the_result_is_cached() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = TcpReachability::new("x", vec![("127.0.0.1".into(), port)])
            .with_ttl(Duration::from_secs(3600));
        assert_eq!(t.check().await, Ok(()));
        drop(listener);
        // Cached: still the first answer.
        assert_eq!(t.check().await, Ok(()));
        let fresh =
            TcpReachability::new("x", vec![("127.0.0.1".into(), port)]).with_ttl(Duration::ZERO);
        assert!(fresh.check().await.is_err());
    }
}
