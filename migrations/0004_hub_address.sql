-- Where kiosks reach each hub (host:port, from its `[database] advertise` or its listening
-- address): a hub whose callers wait with no advisor free sends them to a hub that has one.
-- NULL: the hub cannot be reached by other hubs' kiosks, and is sent none.
ALTER TABLE hubs ADD COLUMN address text;
