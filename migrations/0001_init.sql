-- outboxd schema, version 1: the outbox tables, their indexes, per-table autovacuum and the
-- two group roles. Functions, triggers, views and grants live in sql/ and are re-applied by
-- `outboxd migrate` on every run. Applied once, inside a transaction (no BEGIN/COMMIT here).

CREATE SCHEMA IF NOT EXISTS outbox;
COMMENT ON SCHEMA outbox IS 'outboxd: transactional outbox for email (messages) and Kafka (events)';

-- Roles are cluster-wide: another database of the same cluster may have created them already.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['outbox_producer', 'outbox_dispatcher'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object THEN
                NULL;  -- created concurrently by a migration of another database
            END;
        END IF;
    END LOOP;
END
$$;

-- Single-row settings table: the row always exists (seeded below) and there can be no second.
CREATE TABLE outbox.settings (
    id                boolean PRIMARY KEY DEFAULT true CONSTRAINT settings_single_row CHECK (id),
    message_id_domain text    NOT NULL DEFAULT 'outboxd.invalid'
        CONSTRAINT settings_message_id_domain_valid
        CHECK (message_id_domain ~ '^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$'),
    lifecycle_events  boolean NOT NULL DEFAULT true
);
INSERT INTO outbox.settings DEFAULT VALUES;
COMMENT ON TABLE outbox.settings IS
    'Single row of outboxd settings: Message-ID domain when a message has no sender, lifecycle events on/off';

CREATE TABLE outbox.messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       text        NOT NULL CONSTRAINT messages_message_id_key UNIQUE,
    sender           text,
    recipients       text[]      NOT NULL,
    cc               text[]      NOT NULL DEFAULT '{}',
    bcc              text[]      NOT NULL DEFAULT '{}',
    reply_to         text,
    subject          text        NOT NULL DEFAULT '',
    body_text        text,
    body_html        text,
    headers          jsonb       NOT NULL DEFAULT '{}',
    idempotency_key  text        CONSTRAINT messages_idempotency_key_key UNIQUE,
    key              text,
    priority         integer     NOT NULL DEFAULT 0,
    not_before       timestamptz,
    max_attempts     integer     NOT NULL DEFAULT 10
        CONSTRAINT messages_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 1000),
    state            text        NOT NULL DEFAULT 'pending'
        CONSTRAINT messages_state_valid
        CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'dead', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0
        CONSTRAINT messages_attempts_nonnegative CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL,
    lease_owner      text,
    lease_expires_at timestamptz,
    last_smtp_code   integer,
    last_error       text,
    outcome_unknown  boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    updated_at       timestamptz DEFAULT now(),
    -- Backstops for rows written by the owner; producers get the friendlier trigger errors.
    CONSTRAINT messages_recipients_nonempty CHECK (cardinality(recipients) >= 1),
    CONSTRAINT messages_headers_object CHECK (jsonb_typeof(headers) = 'object'),
    CONSTRAINT messages_body_present CHECK (body_text IS NOT NULL OR body_html IS NOT NULL),
    CONSTRAINT messages_sending_has_lease
        CHECK (state <> 'sending' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);
COMMENT ON TABLE outbox.messages IS
    'One row per email to deliver; producers INSERT, outboxd drives state pending -> sending -> sent|pending|failed|dead';

-- Claim: an ordered index scan over pending rows only, in claim order.
CREATE INDEX messages_claim_idx ON outbox.messages (priority DESC, next_attempt_at, id)
    WHERE state = 'pending';
-- Rescue of leases that expired under a dead or paused dispatcher.
CREATE INDEX messages_lease_idx ON outbox.messages (lease_expires_at)
    WHERE state = 'sending';
-- Health view: recent permanent failures without scanning the sent history.
CREATE INDEX messages_finished_bad_idx ON outbox.messages (updated_at)
    WHERE state IN ('failed', 'dead');

CREATE TABLE outbox.message_recipients (
    message    bigint      NOT NULL REFERENCES outbox.messages (id) ON DELETE CASCADE,
    address    text        NOT NULL,
    kind       text        NOT NULL
        CONSTRAINT message_recipients_kind_valid CHECK (kind IN ('to', 'cc', 'bcc')),
    state      text        NOT NULL
        CONSTRAINT message_recipients_state_valid CHECK (state IN ('pending', 'sent', 'failed')),
    smtp_code  integer,
    last_error text,
    attempts   integer     NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message, address)
);
COMMENT ON TABLE outbox.message_recipients IS
    'Per-recipient delivery outcome, written by outbox.complete(); a recipient without a row has no outcome yet';

CREATE TABLE outbox.events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid() CONSTRAINT events_event_id_key UNIQUE,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    type            text        NOT NULL,
    payload         jsonb       NOT NULL,
    topic           text,
    headers         jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT events_headers_object CHECK (jsonb_typeof(headers) = 'object'),
    message_id      bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    txid            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    state           text        NOT NULL DEFAULT 'pending'
        CONSTRAINT events_state_valid CHECK (state IN ('pending', 'published', 'failed')),
    published_at    timestamptz,
    kafka_partition integer,
    kafka_offset    bigint,
    last_error      text
);
COMMENT ON TABLE outbox.events IS
    'Kafka mirror log in the Debezium outbox shape; read in commit order (txid) by the single active publisher';

-- The mirror reads unpublished rows in id order.
CREATE INDEX events_pending_idx ON outbox.events (id) WHERE state = 'pending';
-- Lag view: failed publications without scanning the published history.
CREATE INDEX events_failed_idx ON outbox.events (id) WHERE state = 'failed';

-- Wake-up registry: a row means "this dispatcher found nothing to do and waits on LISTEN".
CREATE TABLE outbox.dispatcher_idle (
    owner       text        NOT NULL,
    channel     text        NOT NULL DEFAULT 'outbox_messages'
        CONSTRAINT dispatcher_idle_channel_valid CHECK (channel IN ('outbox_messages', 'outbox_events')),
    since       timestamptz NOT NULL DEFAULT now(),
    backend_pid integer,
    PRIMARY KEY (owner, channel)
);
COMMENT ON TABLE outbox.dispatcher_idle IS
    'Dispatchers waiting for work; the insert triggers NOTIFY only while a row exists for their channel';

-- Queue tables churn: every message is updated two or three times. Vacuum by a fixed number of
-- dead rows instead of a fraction of an ever-growing table, and without throttling.
ALTER TABLE outbox.messages SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE outbox.message_recipients SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE outbox.events SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0);
