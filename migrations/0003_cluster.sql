-- Several hubs share one deployment. What each holds is projected from its events as they
-- are shipped (in the same transaction), so that the others can take over when it dies.

-- Each hub's lease: renewed every second while the hub reaches the database. A hub whose lease
-- has expired is presumed dead; the first other hub to lock its row takes its callers over
-- and deletes the row (the hub inserts it again when it comes back).
CREATE TABLE hubs (
    hub text PRIMARY KEY,
    lease_until timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL DEFAULT now(),
    -- The process holding the lease (random at each start): a second process with the same
    -- hub id cannot take a lease that has not expired.
    instance text NOT NULL
);

-- The callers waiting, one row per kiosk (a kiosk has one call at a time): the hub whose queue
-- holds it, the call's number there, and when the caller first joined a queue (Unix ms).
-- `updated_ms` orders the writers: a hub that ships late cannot take back a caller that has
-- since moved on.
CREATE TABLE waiting (
    kiosk text PRIMARY KEY,
    hub text NOT NULL,
    call_id bigint NOT NULL,
    joined_ms bigint NOT NULL,
    updated_ms bigint NOT NULL
);
CREATE INDEX waiting_hub ON waiting (hub, joined_ms);

-- Calls in progress and the hub relaying each.
CREATE TABLE calls (
    kiosk text PRIMARY KEY,
    hub text NOT NULL,
    call_id bigint NOT NULL,
    agent text NOT NULL,
    since_ms bigint NOT NULL
);
CREATE INDEX calls_hub ON calls (hub);

-- Agent rooms and their states (IDLE, OFFERED, BUSY, WRAP-UP, CLOSE), on the hub the agent
-- is connected to.
CREATE TABLE rooms (
    agent text PRIMARY KEY,
    hub text NOT NULL,
    state text NOT NULL,
    updated_ms bigint NOT NULL
);
