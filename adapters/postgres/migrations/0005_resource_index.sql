-- Listing and search (issue 15 point 1): one row per payment, checkout
-- session and recurring agreement, fed from the event log by the engine's
-- Indexer (checkpoint `resource_index`), rebuildable from position 0.
-- Times are unix microseconds (numeric range filters on both stores).
CREATE TABLE resource_index (
    kind               TEXT    NOT NULL,   -- payment | checkout_session | agreement
    id                 TEXT    NOT NULL,   -- uuid, hyphenated
    merchant_id        TEXT    NOT NULL,
    status             TEXT    NOT NULL,   -- snake_case, as the API shows it
    merchant_reference TEXT,
    created_position   BIGINT NOT NULL,   -- global position of the first event: list order
    created_at_us      BIGINT NOT NULL,
    updated_at_us      BIGINT NOT NULL,
    version            BIGINT NOT NULL,   -- upsert guard
    PRIMARY KEY (kind, id)
);

-- Every list is per merchant and kind, newest first; one index per filter.
CREATE INDEX resource_index_list ON resource_index (merchant_id, kind, created_position DESC);
CREATE INDEX resource_index_status ON resource_index (merchant_id, kind, status, created_position DESC);
CREATE INDEX resource_index_created ON resource_index (merchant_id, kind, created_at_us);
CREATE INDEX resource_index_reference ON resource_index (merchant_id, kind, merchant_reference)
    WHERE merchant_reference IS NOT NULL;

CREATE TABLE resource_index_metadata (
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (kind, id, key)
);

CREATE INDEX resource_index_metadata_kv ON resource_index_metadata (merchant_id, kind, key, value);
