-- The wake-up trigger of 0004 notifies unless the appending session set
-- `payorch.append_notify = off`.
--
-- Why: a NOTIFY inside a transaction makes Postgres take one lock per
-- database in PreCommit_Notify and hold it until the commit is flushed,
-- so the commits of all notifying transactions are serialised through
-- the WAL flush: concurrent appends could not share a flush (no group
-- commit). payorch's store sets the setting on its sessions and announces
-- its appends itself, after they committed (adapters/postgres wakeup.rs:
-- an in-process signal, and one coalesced NOTIFY per few ms for the other
-- processes). Other writers (older payorch versions, psql) still notify
-- from the trigger; a session that never heard of the setting gets NULL
-- from current_setting(..., true) and notifies as before.
CREATE OR REPLACE FUNCTION payorch_notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('payorch.append_notify', true) IS DISTINCT FROM 'off' THEN
        PERFORM pg_notify('payorch_events', '');
    END IF;
    RETURN NULL;
END
$$;
