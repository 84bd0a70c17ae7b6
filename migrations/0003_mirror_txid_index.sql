-- Kafka mirror: the txid index gets a predicate ("txid IS NOT NULL", always true) that the
-- mirror's re-check behind its cursor implies and its forward read does not. With the plain
-- "state = 'pending'" predicate the planner, working from statistics taken while nothing was
-- pending, read a burst forward by walking this whole index and sorting it (every pending row
-- for each batch) instead of following the id index.
DROP INDEX IF EXISTS outbox.events_pending_txid_idx;
CREATE INDEX events_pending_txid_idx ON outbox.events (txid)
    WHERE state = 'pending' AND txid IS NOT NULL;
