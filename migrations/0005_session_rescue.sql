-- Schema 5: crash rescue by session. outbox.claim() records which database session each
-- dispatcher (lease owner) claims from; a row leased to an owner whose session has ended
-- goes back to the queue after session_grace_seconds instead of at lease expiry
-- (functions in sql/10_lease.sql, which `outboxd migrate` applies after the migrations).

-- One row per lease owner: the backend it last claimed from. gone_since is set by the first
-- claim that finds that backend gone, and cleared when the owner claims again.
CREATE TABLE outbox.dispatcher_sessions (
    owner         text        PRIMARY KEY,
    pid           integer     NOT NULL,
    backend_start timestamptz,
    seen_at       timestamptz NOT NULL DEFAULT now(),
    gone_since    timestamptz
);
COMMENT ON TABLE outbox.dispatcher_sessions IS
    'Lease owner -> database session it claims from; rows of owners whose session ended are rescued';

-- How long an owner's session must have been gone before its rows are rescued: a dispatcher
-- that reconnects within it (a network blip, a PostgreSQL restart) keeps its rows. 0 turns
-- rescue by session off (lease expiry only), for poolers that do not keep one backend per
-- client connection.
ALTER TABLE outbox.settings
    ADD COLUMN session_grace_seconds integer NOT NULL DEFAULT 5
        CONSTRAINT settings_session_grace_valid CHECK (session_grace_seconds BETWEEN 0 AND 3600);
