-- The open-work index (engine::open_work) and the event wake-up channel.
--
-- open_work: one row per stream with open work (an unanswered PayKKa call,
-- an open checkout session, a pending agreement cancel), written by the
-- reconciler's checkpointed projection (not by appends), so a reconciler
-- pass reads what is open instead of every stream ever written. Rebuildable
-- from the events table at any time (checkpoint projection:open_work:v1).
CREATE TABLE open_work (
    stream_id  TEXT        COLLATE "C" PRIMARY KEY,  -- byte order, as in Rust
    kind       TEXT        NOT NULL,
    since      TIMESTAMPTZ NOT NULL,
    touched_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX open_work_kind_idx ON open_work (kind, stream_id);

-- Wake-up: every statement that inserts events notifies channel
-- payorch_events once (statement-level trigger; delivered at commit, and
-- duplicate notifications of one transaction fold into one). Tailers (the
-- relay) LISTEN instead of polling; the notification carries no data, the
-- tailer reads from its checkpoint as before, so a lost notification only
-- delays until the tailer's fallback poll.
CREATE FUNCTION payorch_notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('payorch_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT
    EXECUTE FUNCTION payorch_notify_events();
