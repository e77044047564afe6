-- The merchant webhook delivery log (engine::webhook_out): one row per
-- (endpoint, event) delivery with its current state, one row per HTTP
-- attempt. Written by the webhook dispatcher (one statement per attempt);
-- read by GET /v1/webhook_endpoints/{id}/deliveries and `payorch webhooks`.
-- A manual redelivery is queued by setting redelivery_requested_at; the
-- dispatcher polls the partial index below and clears it with the attempt
-- that answers it. No response bodies are kept: rows stay small.
CREATE TABLE webhook_deliveries (
    endpoint_id             TEXT        NOT NULL,
    event_id                UUID        NOT NULL,
    merchant_id             TEXT        NOT NULL,
    stream_id               TEXT        NOT NULL,
    event_type              TEXT        NOT NULL,
    position                BIGINT      NOT NULL,   -- the event's global_position
    state                   TEXT        NOT NULL,   -- delivered | failed_retrying | given_up
    attempt_count           INTEGER     NOT NULL,
    first_attempt_at        TIMESTAMPTZ NOT NULL,
    last_attempt_at         TIMESTAMPTZ NOT NULL,
    next_attempt_at         TIMESTAMPTZ,
    redelivery_requested_at TIMESTAMPTZ,
    PRIMARY KEY (endpoint_id, event_id)
);

-- Pages of one endpoint, newest event first.
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, position DESC);
-- A restarted dispatcher reads what it did past its checkpoint.
CREATE INDEX webhook_deliveries_position_idx ON webhook_deliveries (position);
-- The redelivery queue (normally empty).
CREATE INDEX webhook_deliveries_queued_idx ON webhook_deliveries (redelivery_requested_at)
    WHERE redelivery_requested_at IS NOT NULL;

CREATE TABLE webhook_delivery_attempts (
    endpoint_id TEXT        NOT NULL,
    event_id    UUID        NOT NULL,
    number      INTEGER     NOT NULL,             -- 1-based per delivery
    at          TIMESTAMPTZ NOT NULL,
    status      INTEGER,                          -- HTTP status, when one came back
    error_class TEXT,                             -- timeout | connect | other
    latency_ms  BIGINT      NOT NULL,
    manual      BOOLEAN     NOT NULL,             -- a manual redelivery
    PRIMARY KEY (endpoint_id, event_id, number)
);
