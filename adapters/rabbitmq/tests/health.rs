//! `BrokerHealth` against the real broker and against a closed port.

mod common;

use std::time::Duration;

use payorch_rabbitmq::BrokerHealth;

#[tokio::test]
async fn healthy_broker_answers_every_probe() {
    let Some(url) = common::amqp_url("healthy_broker_answers_every_probe").await else {
        return;
    };
    let probe = BrokerHealth::new(url, Duration::from_secs(5));
    for i in 0..3 {
        probe
            .check()
            .await
            .unwrap_or_else(|e| panic!("probe {i} failed: {e}"));
    }
    probe.close().await;
    // After close the next probe reconnects.
    probe.check().await.expect("probe after close");
    probe.close().await;
}

#[tokio::test]
async fn closed_port_fails_within_the_timeout() {
    // A port nobody listens on: bind, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let probe = BrokerHealth::new(
        format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        Duration::from_secs(3),
    );
    for _ in 0..2 {
        let e = probe.check().await.expect_err("no broker there");
        assert!(!e.to_string().is_empty());
    }
    // A blackholed probe is bounded by the timeout, not hanging: an
    // unroutable-but-local listener that never speaks AMQP.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let probe = BrokerHealth::new(
        format!("amqp://guest:guest@{addr}/%2f"),
        Duration::from_millis(300),
    );
    let e = probe.check().await.expect_err("silent listener");
    assert!(e.to_string().contains("did not answer"), "{e}");
    drop(silent);
}
