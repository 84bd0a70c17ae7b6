-- Schema 6: built-in retention and the choice of table layout.
-- Tables only; outbox.purge() and the layout functions live in sql/00_layout.sql and
-- sql/50_retention.sql, which `outboxd migrate` applies after the migrations.

-- The layout the operator asked for ('plain' or 'partitioned') and the partition width.
-- sql/00_layout.sql moves the tables onto the partitioned layout when this says so (or when
-- the session setting outboxd.layout = 'partitioned' is given to `outboxd migrate`).
ALTER TABLE outbox.settings
    ADD COLUMN layout text NOT NULL DEFAULT 'plain'
        CONSTRAINT settings_layout_valid CHECK (layout IN ('plain', 'partitioned')),
    ADD COLUMN partition_period interval NOT NULL DEFAULT '1 day'
        CONSTRAINT settings_partition_period_valid
        CHECK (partition_period >= interval '1 second' AND partition_period <= interval '31 days');

-- Progress and totals of the purge, one row per table, written by outbox.purge() (on the
-- session that holds the retention lock) and read by `outboxd status`.
CREATE TABLE outbox.retention_state (
    tbl               text        PRIMARY KEY
        CONSTRAINT retention_state_tbl_valid CHECK (tbl IN ('messages', 'events')),
    cursor_id         bigint      NOT NULL DEFAULT 0,  -- plain layout: next id to look at
    walk_partition    text,                            -- partitioned: partition being emptied
    walk_block        bigint      NOT NULL DEFAULT 0,  -- ... and the next heap block to look at
    pass_removed      bigint      NOT NULL DEFAULT 0,  -- removed so far in the current pass
    last_batch_at     timestamptz,
    last_pass_at      timestamptz,                     -- when the last full pass finished
    last_pass_removed bigint      NOT NULL DEFAULT 0,
    removed_total     bigint      NOT NULL DEFAULT 0,
    partitions_dropped bigint     NOT NULL DEFAULT 0,
    last_owner        text
);
INSERT INTO outbox.retention_state (tbl) VALUES ('messages'), ('events');
COMMENT ON TABLE outbox.retention_state IS
    'Retention progress per table (cursor, last pass, totals), written by outbox.purge()';

-- Partitioned layout: a partitioned table cannot have a unique index without the partition
-- key, so idempotency keys are kept unique here, one row per keyed message (empty on the
-- plain layout, whose messages table has its own unique index).
CREATE TABLE outbox.message_keys (
    idempotency_key text        PRIMARY KEY,
    message         bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_keys_message_idx ON outbox.message_keys (message);
COMMENT ON TABLE outbox.message_keys IS
    'Partitioned layout: the idempotency keys of all messages, unique across partitions';

-- Partitioned layout: id ranges of dropped message partitions whose recipient outcomes and
-- idempotency keys are still to be removed (in small batches, by outbox.purge()).
CREATE TABLE outbox.retention_cleanup (
    lo bigint NOT NULL,
    hi bigint NOT NULL,
    PRIMARY KEY (lo, hi)
);
COMMENT ON TABLE outbox.retention_cleanup IS
    'Partitioned layout: message id ranges of dropped partitions whose recipients and keys remain';

ALTER TABLE outbox.message_keys SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_analyze_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0);
