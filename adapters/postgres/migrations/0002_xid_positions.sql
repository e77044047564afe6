-- Positions derived from the writing transaction's id, with no lock.
--
-- An append's rows get global_position = (xid << 16) | ordinal, where xid is
-- the appending transaction's full 64-bit id (pg_current_xact_id(), assigned
-- inside the append statement) and ordinal = 1..n within the batch. So
-- position order is xid order by construction, and read_all can stop at
-- pg_snapshot_xmin(pg_current_snapshot()) << 16: every transaction below the
-- horizon has ended, every one at or above it (running, or not yet started)
-- writes positions at or above it. 0001 kept xid order == position order with
-- an advisory lock around nextval + pg_current_xact_id(); this does it with
-- arithmetic. Positions are strictly increasing and dense within a batch,
-- sparse across batches. The shift leaves room for 2^47 transaction ids.
--
-- Existing rows keep their positions; they must lie below every position the
-- new rule can produce (true unless one transaction wrote > 65,535 events).
DO $$
BEGIN
    IF COALESCE((SELECT max(global_position) FROM events), 0)
       >= (pg_current_xact_id()::text::int8 << 16) THEN
        RAISE EXCEPTION 'events.global_position is already beyond the xid-derived range; cannot switch position scheme';
    END IF;
END
$$;

ALTER TABLE events ALTER COLUMN global_position DROP IDENTITY;
ALTER TABLE events DROP COLUMN tx_id;
