-- Table layout: 'plain' (one table each for messages and events) or 'partitioned' (both in
-- time partitions on a hidden part_at column, dropped whole by retention). This file runs
-- first on every migrate, so the files after it (triggers, views, grants) are re-applied to
-- whichever tables now carry the names outbox.messages and outbox.events.
--
-- The move onto the partitioned layout does not copy rows: the existing table becomes the
-- first partition ("legacy", part_at = -infinity) of a new partitioned table of the same
-- name, and retention drops it once all its rows are finished. See docs/operations.md.

CREATE OR REPLACE FUNCTION outbox.is_partitioned(p_table regclass)
RETURNS boolean
LANGUAGE sql STABLE
AS $fn$ SELECT c.relkind = 'p' FROM pg_catalog.pg_class c WHERE c.oid = p_table $fn$;
COMMENT ON FUNCTION outbox.is_partitioned(regclass) IS 'true for a partitioned table';

CREATE OR REPLACE FUNCTION outbox.layout()
RETURNS text
LANGUAGE sql STABLE
AS $fn$
    SELECT CASE WHEN outbox.is_partitioned('outbox.messages') THEN 'partitioned' ELSE 'plain' END
$fn$;
COMMENT ON FUNCTION outbox.layout() IS 'The layout in use: plain or partitioned';

-- Name of the partition of p_table starting at p_lo.
CREATE OR REPLACE FUNCTION outbox.partition_name(p_table text, p_lo timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $fn$ SELECT p_table || '_p' || to_char(p_lo AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MISS') $fn$;

-- The autovacuum settings every queue table carries (0001): fixed thresholds, no throttling.
CREATE OR REPLACE FUNCTION outbox.queue_reloptions()
RETURNS text
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT 'autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, '
           'autovacuum_vacuum_insert_scale_factor = 0, autovacuum_analyze_scale_factor = 0.01, '
           'autovacuum_vacuum_cost_delay = 0'
$fn$;

-- Statistics gathered on a queue table (p_rel: messages, message_recipients, events, or one
-- of their partitions; ALTER TABLE recurses into partitions). The hot path's plans do not
-- follow statistics (sql/60_plans.sql), so ANALYZE, which autovacuum runs on a busy table
-- every naptime, serves only the views and the purge: a 3,000-row sample (target 10) instead
-- of 30,000, and nothing on the payload columns, which no query filters on. Measured on
-- 100,000 messages: ANALYZE took 205-245 ms of CPU, 15-23 ms with these targets; at
-- 1,000 msg/s on two cores each ANALYZE held latency up (p99 30-35 ms against 7-11).
CREATE OR REPLACE FUNCTION outbox.set_statistics_targets(p_rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    payload text[] := ARRAY['body_text', 'body_html', 'subject', 'headers', 'recipients', 'cc', 'bcc',
                            'reply_to', 'sender', 'last_error', 'payload'];
    cols    text;
BEGIN
    SELECT string_agg(format('ALTER COLUMN %I SET STATISTICS %s', a.attname,
                             CASE WHEN a.attname = ANY (payload) THEN 0 ELSE 10 END), ', ')
      INTO cols
      FROM pg_attribute a
     WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attstattarget IS DISTINCT FROM (CASE WHEN a.attname = ANY (payload) THEN 0 ELSE 10 END);
    IF cols IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s %s', p_rel, cols);
    END IF;
END
$fn$;
COMMENT ON FUNCTION outbox.set_statistics_targets(regclass) IS
    'Internal: small statistics targets on a queue table, none on its payload columns (cheap ANALYZE)';

-- Partitioned layout: makes sure the partitions of messages and events exist for the
-- current period and p_ahead periods after it. Each new partition is built apart and then
-- attached, which takes only SHARE UPDATE EXCLUSIVE on the parent (producers and the
-- dispatcher keep going), and briefly locks the default partition, which is normally empty.
-- Returns the number of partitions created; does nothing on the plain layout.
CREATE OR REPLACE FUNCTION outbox.partitions_ensure(p_ahead integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    period interval := (SELECT s.partition_period FROM outbox.settings s);
    base   timestamptz := date_bin(period, now(), timestamptz '2000-01-01 00:00:00+00');
    tbl    text;
    i      integer;
    lo     timestamptz;
    name   text;
    made   integer := 0;
BEGIN
    IF outbox.layout() <> 'partitioned' THEN
        RETURN 0;
    END IF;
    FOREACH tbl IN ARRAY ARRAY['messages', 'events'] LOOP
        FOR i IN 0 .. greatest(p_ahead, 0) LOOP
            lo := base + period * i;
            name := outbox.partition_name(tbl, lo);
            CONTINUE WHEN to_regclass(format('outbox.%I', name)) IS NOT NULL;
            BEGIN
                EXECUTE format('CREATE TABLE outbox.%I (LIKE outbox.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH (%s)',
                               name, tbl, outbox.queue_reloptions());
                PERFORM outbox.set_statistics_targets(format('outbox.%I', name)::regclass);
                -- a proven constraint lets ATTACH skip its validation scan
                EXECUTE format('ALTER TABLE outbox.%I ADD CONSTRAINT %I CHECK (part_at >= %L AND part_at < %L)',
                               name, name || '_range', lo, lo + period);
                EXECUTE format('ALTER TABLE outbox.%I ATTACH PARTITION outbox.%I FOR VALUES FROM (%L) TO (%L)',
                               tbl, name, lo, lo + period);
                made := made + 1;
            EXCEPTION WHEN check_violation OR lock_not_available THEN
                -- rows of that period already sit in the default partition (no dispatcher
                -- created it in time), or a lock was not free: the period stays in the
                -- default partition, which is never dropped; the other periods go on
                RAISE WARNING 'outbox.partitions_ensure: % not created: %', name, SQLERRM;
            END;
        END LOOP;
    END LOOP;
    RETURN made;
END
$fn$;
COMMENT ON FUNCTION outbox.partitions_ensure(integer) IS
    'Partitioned layout: create the partitions of the current and the next p_ahead periods; returns how many were made';

-- Turns the plain table outbox.<p_table> into the "legacy" partition (part_at = -infinity)
-- of a new partitioned table of the same name. Everything that needs a scan (the part_at
-- column, the range check, the (id, part_at) unique index) is reused when an operator built
-- it beforehand without blocking (ops/scripts/partition-prepare.sql); otherwise it is built
-- here, under the lock the rename needs anyway.
CREATE OR REPLACE FUNCTION outbox.partition_legacy(p_table text, p_indexes text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    legacy text := p_table || '_legacy';
    seq    text;
    nextid bigint;
    ix     text;
BEGIN
    EXECUTE format('LOCK TABLE outbox.%I IN ACCESS EXCLUSIVE MODE', p_table);
    EXECUTE format($q$ALTER TABLE outbox.%I ADD COLUMN IF NOT EXISTS part_at timestamptz NOT NULL DEFAULT '-infinity'$q$,
                   p_table);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = format('outbox.%I', p_table)::regclass AND conname = legacy || '_range') THEN
        EXECUTE format($q$ALTER TABLE outbox.%I ADD CONSTRAINT %I CHECK (part_at < '1970-01-01 00:00:00+00')$q$,
                       p_table, legacy || '_range');
    END IF;
    IF to_regclass(format('outbox.%I', legacy || '_pkey')) IS NULL THEN
        EXECUTE format('CREATE UNIQUE INDEX %I ON outbox.%I (id, part_at)', legacy || '_pkey', p_table);
    END IF;
    -- a foreign key to a partitioned table would need part_at too: recipients lose theirs,
    -- and retention removes them with their partition (sql/50_retention.sql)
    IF p_table = 'messages' THEN
        ALTER TABLE outbox.message_recipients DROP CONSTRAINT IF EXISTS message_recipients_message_fkey;
        -- takes the table's row type: re-created for the new table by sql/20_admin.sql
        DROP FUNCTION IF EXISTS outbox.lifecycle_event(outbox.messages, text);
    END IF;
    EXECUTE format('ALTER TABLE outbox.%I DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I',
                   p_table, p_table || '_pkey', legacy || '_pkey', legacy || '_pkey');
    -- the parent's triggers are cloned onto every partition; the old ones would fire twice
    FOR ix IN SELECT t.tgname FROM pg_catalog.pg_trigger t
               WHERE t.tgrelid = format('outbox.%I', p_table)::regclass AND NOT t.tgisinternal LOOP
        EXECUTE format('DROP TRIGGER %I ON outbox.%I', ix, p_table);
    END LOOP;
    -- index names are unique per schema: the old ones make room for the parent's
    FOREACH ix IN ARRAY p_indexes LOOP
        IF to_regclass('outbox.' || ix) IS NOT NULL THEN
            EXECUTE format('ALTER INDEX outbox.%I RENAME TO %I', ix, legacy || '_' || ix);
        END IF;
    END LOOP;
    seq := pg_get_serial_sequence(format('outbox.%I', p_table), 'id');
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM %s', seq) INTO nextid;
    EXECUTE format('ALTER TABLE outbox.%I RENAME TO %I', p_table, legacy);

    EXECUTE format('CREATE TABLE outbox.%I (LIKE outbox.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                   'INCLUDING IDENTITY INCLUDING COMMENTS, PRIMARY KEY (id, part_at)) PARTITION BY RANGE (part_at)',
                   p_table, legacy);
    EXECUTE format('ALTER TABLE outbox.%I DROP CONSTRAINT %I', p_table, legacy || '_range');
    EXECUTE format('ALTER TABLE outbox.%I ALTER COLUMN part_at SET DEFAULT now()', p_table);
    EXECUTE format('ALTER TABLE outbox.%I ALTER COLUMN id RESTART WITH %s', p_table, nextid);
    -- the legacy table's identity must not hand out ids any more
    EXECUTE format('ALTER TABLE outbox.%I ALTER COLUMN id DROP IDENTITY', legacy);
    EXECUTE format('ALTER TABLE outbox.%I ATTACH PARTITION outbox.%I FOR VALUES FROM (MINVALUE) TO (%L)',
                   p_table, legacy, timestamptz '1970-01-01 00:00:00+00');
    EXECUTE format('CREATE TABLE outbox.%I PARTITION OF outbox.%I DEFAULT WITH (%s)',
                   p_table || '_default', p_table, outbox.queue_reloptions());
END
$fn$;
COMMENT ON FUNCTION outbox.partition_legacy(text, text[]) IS
    'Internal: make outbox.<table> the legacy partition of a new partitioned table of that name';

-- Moves both tables onto the partitioned layout (once; later calls do nothing). Returns
-- true when it moved them. Runs in the caller's transaction: `outboxd migrate` when
-- outbox.settings.layout or the outboxd.layout setting asks for it.
CREATE OR REPLACE FUNCTION outbox.use_partitioned_layout()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, outbox
AS $fn$
BEGIN
    IF outbox.layout() = 'partitioned' THEN
        RETURN false;
    END IF;
    -- deferred wake-up triggers of this transaction's inserts must run before the ALTERs
    SET CONSTRAINTS ALL IMMEDIATE;
    -- views read the tables by identity: dropped here, re-created by sql/30_views.sql
    DROP VIEW IF EXISTS outbox.message_status, outbox.recipient_status, outbox.queue_depth, outbox.queue_depth_estimate,
                        outbox.queue_health, outbox.mirror_lag;
    PERFORM outbox.partition_legacy('messages',
        ARRAY['messages_claim_idx', 'messages_lease_idx', 'messages_finished_bad_idx']);
    PERFORM outbox.partition_legacy('events',
        ARRAY['events_pending_idx', 'events_failed_idx', 'events_pending_txid_idx']);

    CREATE INDEX messages_claim_idx ON outbox.messages (priority DESC, next_attempt_at, id)
        WHERE state = 'pending';
    CREATE INDEX messages_lease_idx ON outbox.messages (lease_expires_at) WHERE state = 'sending';
    CREATE INDEX messages_finished_bad_idx ON outbox.messages (updated_at)
        WHERE state IN ('failed', 'dead');
    CREATE INDEX events_pending_idx ON outbox.events (id) WHERE state = 'pending';
    CREATE INDEX events_failed_idx ON outbox.events (id) WHERE state = 'failed';
    CREATE INDEX events_pending_txid_idx ON outbox.events (txid) WHERE state = 'pending' AND txid IS NOT NULL;

    -- idempotency keys move to their own table (a partitioned unique index would need part_at)
    INSERT INTO outbox.message_keys (idempotency_key, message, created_at)
    SELECT l.idempotency_key, l.id, l.created_at FROM outbox.messages_legacy l
     WHERE l.idempotency_key IS NOT NULL
    ON CONFLICT (idempotency_key) DO NOTHING;

    UPDATE outbox.settings SET layout = 'partitioned';
    PERFORM outbox.partitions_ensure(3);
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION outbox.use_partitioned_layout() IS
    'Move messages and events onto time partitions (the existing tables become their first partition); once';

-- Partitioned layout: a duplicate idempotency key inserts nothing, as ON CONFLICT DO NOTHING
-- would (see docs/sql.md: the key lives in outbox.message_keys, unique across partitions).
-- A concurrent insert of the same key waits for the first transaction, like a unique index.
CREATE OR REPLACE FUNCTION outbox.messages_claim_key()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
BEGIN
    IF NEW.idempotency_key IS NULL THEN
        RETURN NEW;
    END IF;
    -- retention moving the row to a newer partition: the key is already this message's
    IF current_setting('outbox.moving', true) = 'on'
       AND EXISTS (SELECT 1 FROM outbox.message_keys k
                    WHERE k.idempotency_key = NEW.idempotency_key AND k.message = NEW.id) THEN
        RETURN NEW;
    END IF;
    INSERT INTO outbox.message_keys (idempotency_key, message, created_at)
    VALUES (NEW.idempotency_key, NEW.id, NEW.created_at)
    ON CONFLICT (idempotency_key) DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION outbox.messages_claim_key() IS
    'Trigger (partitioned layout): record the idempotency key; skip the row when the key exists';

DO $$
BEGIN
    IF (SELECT s.layout FROM outbox.settings s) = 'partitioned'
       OR current_setting('outboxd.layout', true) = 'partitioned' THEN
        PERFORM outbox.use_partitioned_layout();
    END IF;
    -- "zz" sorts it after messages_before_insert, which fixes the row first
    IF outbox.layout() = 'partitioned'
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                        WHERE tgrelid = 'outbox.messages'::regclass AND tgname = 'messages_zz_key') THEN
        CREATE TRIGGER messages_zz_key BEFORE INSERT ON outbox.messages
            FOR EACH ROW EXECUTE FUNCTION outbox.messages_claim_key();
    END IF;
END
$$;
