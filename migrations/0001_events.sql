-- The deployment's event log: every hub ships what its queue core records (the same JSON
-- records as the hub's event log file, which stays the hub's own journal); `kioskd report
-- --database` reads the whole deployment's.
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    -- The hub that recorded the event (its certificate's id) and the record's line number in
    -- that hub's event log file, from 0: a line shipped twice (an answer lost to a broken
    -- connection) is stored once.
    hub text NOT NULL,
    seq bigint NOT NULL,
    record jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (hub, seq)
);
CREATE INDEX events_call ON events ((record ->> 'call_id'));
