-- payorch event store (ARCHITECTURE.md section 3), Postgres flavour.
--
-- global_position comes from an identity sequence; tx_id records the writing
-- transaction (xid8). Appends take a short advisory lock around position
-- assignment so that tx_id order == position order; read_all only returns
-- rows whose transaction is older than pg_snapshot_xmin(pg_current_snapshot())
-- and therefore never skips a lower position that commits later.
-- payload/metadata are `json`, not `jsonb`: stored and returned as the exact
-- text written (reading jsonb back as text costs ~10x more per row); add an
-- expression index on (payload::jsonb ->> ...) if a query ever needs one.
CREATE TABLE events (
    global_position BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       TEXT        COLLATE "C" NOT NULL,  -- byte order, as in Rust
    stream_type     TEXT        NOT NULL,
    version         BIGINT      NOT NULL CHECK (version >= 1),
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL,
    payload         JSON        NOT NULL,  -- text kept verbatim: no re-serialisation on read
    metadata        JSON        NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    tx_id           XID8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

CREATE INDEX events_stream_type_idx ON events (stream_type, stream_id, version);

CREATE TABLE idempotency (
    scope       TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    fingerprint TEXT        NOT NULL,
    response    JSON        NOT NULL,
    stream_id   TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT idempotency_pkey PRIMARY KEY (scope, key)
);

CREATE TABLE checkpoints (
    name       TEXT        PRIMARY KEY,
    position   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
