//! `payorch serve` with `[[webhooks]]`: a payment created over the API
//! reaches the merchant's own HTTP endpoint as signed deliveries, in order
//! (issue 15 point 6, end to end through the binary).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_e2e_0123456789";

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal HTTP/1.1 receiver (its own thread): records (signature
/// header, event id header, body) and answers 200.
/// (signature header, event id header, body) of each request.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut sig, mut id, mut len) = (String::new(), String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                } else if lower.starts_with("payorch-signature:") {
                    sig = line["payorch-signature:".len()..].trim().to_owned();
                } else if lower.starts_with("payorch-event-id:") {
                    id = line["payorch-event-id:".len()..].trim().to_owned();
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_ok() {
                sink.lock().unwrap().push((sig, id, body));
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn serve_delivers_signed_events_to_the_merchant_endpoint() {
    let (hook, got) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("payorch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[webhooks]]\nmerchant_id = \"10000000000001\"\nurl = \"{hook}\"\nsecret = \"{SECRET}\"\nevents = [\"order.*\"]\n"
        ),
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args(["--config", cfg.to_str().unwrap(), "--store-url", &store])
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env_remove("PAYORCH_AMQP_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut url, mut key) = (None, None);
    while url.is_none() || key.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("banner");
        if let Some(u) = line.strip_prefix("payorch listening on ") {
            url = Some(u.trim().to_owned());
        }
        if let Some(k) = line.trim().strip_prefix("api key: ") {
            key = Some(k.trim().to_owned());
        }
    }
    let (url, key) = (url.unwrap(), key.unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{url}/v1/payments"))
            .bearer_auth(&key)
            .header("idempotency-key", "hook-1")
            .json(&serde_json::json!({
                "amount": {"minor": 1000, "currency": "EUR"},
                "capture_method": "AUTOMATIC",
                "payment_method": {"type": "card", "number": "4111111111111111",
                    "exp_month": "07", "exp_year": "2031", "cvv": "737"},
                "return_url": "https://shop.example/return"
            }))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "{status}");

    // Wait (with a deadline) for the order's events at the endpoint.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = got.lock().unwrap().len();
        if n >= 2 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = got.lock().unwrap().clone();
    assert!(got.len() >= 2, "deliveries: {}", got.len());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut versions = Vec::new();
    for (sig, id, body) in &got {
        assert!(
            payorch_webhooks::verify(&payorch_webhooks::Secret::new(SECRET), sig, body, now, 300),
            "bad signature {sig}"
        );
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["event_id"].as_str(), Some(id.as_str()));
        assert_eq!(v["stream_type"], "order");
        assert_eq!(v["metadata"]["merchant_id"], "10000000000001");
        versions.push(v["version"].as_u64().unwrap());
    }
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(versions, sorted, "in order per payment");
}
