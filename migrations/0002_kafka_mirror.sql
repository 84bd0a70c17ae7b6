-- Kafka mirror: find pending events by transaction id. The mirror reads forward from a cursor
-- by id and separately re-checks the few rows whose transaction was still open at its previous
-- read (txid in [previous xmin, current xmin)); without this index that re-check would scan
-- every pending row below the cursor, including all records in flight.
CREATE INDEX IF NOT EXISTS events_pending_txid_idx ON outbox.events (txid) WHERE state = 'pending';
