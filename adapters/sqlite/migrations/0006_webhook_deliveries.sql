-- The merchant webhook delivery log (engine::webhook_out): one row per
-- (endpoint, event) delivery with its current state, one row per HTTP
-- attempt. Written by the webhook dispatcher (one transaction per
-- attempt); read by GET /v1/webhook_endpoints/{id}/deliveries and
-- `payorch webhooks`. A manual redelivery is queued by setting
-- redelivery_requested_us; the dispatcher polls it and clears it with the
-- attempt that answers it. Times are Unix microseconds (UTC). No response
-- bodies are kept: rows stay small.
CREATE TABLE webhook_deliveries (
    endpoint_id             TEXT    NOT NULL,
    event_id                TEXT    NOT NULL,   -- uuid, hyphenated
    merchant_id             TEXT    NOT NULL,
    stream_id               TEXT    NOT NULL,
    event_type              TEXT    NOT NULL,
    position                INTEGER NOT NULL,   -- the event's global_position
    state                   TEXT    NOT NULL,   -- delivered | failed_retrying | given_up
    attempt_count           INTEGER NOT NULL,
    first_attempt_us        INTEGER NOT NULL,
    last_attempt_us         INTEGER NOT NULL,
    next_attempt_us         INTEGER,
    redelivery_requested_us INTEGER,
    PRIMARY KEY (endpoint_id, event_id)
);

CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, position);
CREATE INDEX webhook_deliveries_position ON webhook_deliveries (position);
CREATE INDEX webhook_deliveries_queued ON webhook_deliveries (redelivery_requested_us)
    WHERE redelivery_requested_us IS NOT NULL;

CREATE TABLE webhook_delivery_attempts (
    endpoint_id TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    number      INTEGER NOT NULL,   -- 1-based per delivery
    at_us       INTEGER NOT NULL,
    status      INTEGER,            -- HTTP status, when one came back
    error_class TEXT,               -- timeout | connect | other
    latency_ms  INTEGER NOT NULL,
    manual      INTEGER NOT NULL,   -- 1: a manual redelivery
    PRIMARY KEY (endpoint_id, event_id, number)
);
