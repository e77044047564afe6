-- Idempotency records are begun (in progress, no response yet) with a
-- command's first events and completed with the response of the request
-- that executed it (issue 12). SQLite cannot drop NOT NULL in place: the
-- table is rebuilt with `response` nullable (NULL = in progress).
CREATE TABLE idempotency_new (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response    TEXT CHECK (response IS NULL OR json_valid(response)),
    stream_id   TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
INSERT INTO idempotency_new (scope, key, fingerprint, response, stream_id, created_at)
    SELECT scope, key, fingerprint, response, stream_id, created_at FROM idempotency;
DROP TABLE idempotency;
ALTER TABLE idempotency_new RENAME TO idempotency;
