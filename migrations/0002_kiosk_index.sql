-- A hub that a kiosk moves to looks up the kiosk's place in the queue of the hub it left (its
-- events by kiosk id): see Database::find_place.
CREATE INDEX events_kiosk ON events ((record ->> 'kiosk'));
