-- payorch event store (ARCHITECTURE.md section 3), SQLite flavour.
-- One writer at a time (BEGIN IMMEDIATE on a single-connection write pool),
-- so positions commit in order and read_all needs no horizon.
CREATE TABLE events (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT    NOT NULL,
    stream_type     TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    event_id        TEXT    NOT NULL UNIQUE,      -- uuid, hyphenated
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    metadata        TEXT    NOT NULL CHECK (json_valid(metadata)),
    recorded_at     TEXT    NOT NULL,             -- RFC 3339, UTC
    UNIQUE (stream_id, version)
);

CREATE INDEX events_stream_type ON events (stream_type, stream_id, version);

CREATE TABLE idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response    TEXT NOT NULL CHECK (json_valid(response)),
    stream_id   TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE checkpoints (
    name       TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at TEXT    NOT NULL
);
