-- The open-work index (engine::open_work): one row per stream with open
-- work (an unanswered PayKKa call, an open checkout session, a pending
-- agreement cancel), written by the reconciler's checkpointed projection,
-- not by appends. Times are Unix microseconds (UTC), so they compare as
-- numbers. Rebuildable from the events table (checkpoint
-- projection:open_work:v1).
CREATE TABLE open_work (
    stream_id  TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    since_us   INTEGER NOT NULL,
    touched_us INTEGER NOT NULL
);

CREATE INDEX open_work_kind ON open_work (kind, stream_id);
