-- Kafka mirror: reading unpublished events in commit order, recording delivery results, and
-- the lifecycle-events switch. Only the session holding the mirror's advisory lock (the
-- leader) may record results, so a publisher that lost its lock cannot write.

-- The mirror's advisory lock key (bigint 0x6f7574626f786b61, "outboxka"): one leader at a time.
CREATE OR REPLACE FUNCTION outbox.mirror_lock_key()
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT 8031453476610927457::bigint $fn$;
COMMENT ON FUNCTION outbox.mirror_lock_key() IS
    'Kafka mirror: the session advisory lock key held by the single active publisher';

-- Whether the calling session holds the mirror lock.
CREATE OR REPLACE FUNCTION outbox.mirror_is_leader()
RETURNS boolean
LANGUAGE sql STABLE
AS $fn$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                    WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid()
                      AND l.granted AND l.objsubid = 1
                      AND l.classid = (outbox.mirror_lock_key() >> 32)::oid
                      AND l.objid = (outbox.mirror_lock_key() & 4294967295)::oid
                      AND l.database = (SELECT oid FROM pg_catalog.pg_database
                                         WHERE datname = pg_catalog.current_database()))
$fn$;
COMMENT ON FUNCTION outbox.mirror_is_leader() IS
    'Kafka mirror: true when this session holds the mirror advisory lock';

CREATE OR REPLACE FUNCTION outbox.mirror_check_leader(p_what text)
RETURNS void
LANGUAGE plpgsql STABLE
AS $fn$
BEGIN
    IF NOT outbox.mirror_is_leader() THEN
        RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
            MESSAGE = 'outbox.' || p_what || ': this session does not hold the mirror lock';
    END IF;
END
$fn$;
COMMENT ON FUNCTION outbox.mirror_check_leader(text) IS
    'Kafka mirror: raises lock_not_available unless this session is the leader (fencing)';

-- Reads at most p_limit pending events in id order among those committed before every
-- transaction still open (txid < snapshot xmin): an id is taken at INSERT but the row appears
-- at COMMIT, so a smaller id may still be invisible and must not be overtaken.
-- The reader keeps a cursor: rows with id <= p_after were read before, except those whose
-- transaction was still open then (txid >= p_guard, the xmin of that earlier read). Every
-- result row carries the current snapshot xmin, the next p_guard; an empty result is one row
-- with NULL id and the xmin.
CREATE OR REPLACE FUNCTION outbox.mirror_read(p_after bigint, p_guard xid8, p_limit integer)
RETURNS TABLE (id bigint, event_id uuid, topic text, aggregate_type text, aggregate_id text,
               type text, payload text, headers text, message_id bigint, snapshot_xmin xid8)
LANGUAGE sql STABLE
AS $fn$
    WITH s AS MATERIALIZED (SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) AS x)
    SELECT e.id, e.event_id, e.topic, e.aggregate_type, e.aggregate_id, e.type,
           e.payload::text, e.headers::text, e.message_id, s.x
      FROM s
      LEFT JOIN LATERAL (
          SELECT u.* FROM (
              -- forward from the cursor along the id index ("IS TRUE", and the txid index's
              -- predicate, migration 0003, keep the planner off the txid index, which would
              -- sort every pending row when statistics say few are pending)
              (SELECT ev.* FROM outbox.events ev
                WHERE ev.state = 'pending' AND ev.id > p_after AND (ev.txid < s.x) IS TRUE
                ORDER BY ev.id LIMIT p_limit)
              UNION ALL
              -- rows behind the cursor that were invisible last time, by the txid index:
              -- "IS TRUE" and "+ 0" keep the planner from walking the id index through every
              -- record in flight, which it did when statistics said few rows were pending
              (SELECT ev.* FROM outbox.events ev
                WHERE ev.state = 'pending' AND (ev.id <= p_after) IS TRUE
                  AND ev.txid >= p_guard AND ev.txid < s.x
                ORDER BY ev.id + 0 LIMIT p_limit)) u
           ORDER BY u.id
           LIMIT p_limit) e ON true
     ORDER BY e.id
$fn$;
COMMENT ON FUNCTION outbox.mirror_read(bigint, xid8, integer) IS
    'Kafka mirror: next pending events in commit-safe id order after a cursor (see sql/40_mirror.sql)';

-- Marks delivered events published with their partition and offset. Leader only. Returns
-- the number of rows changed (rows no longer pending are left alone).
CREATE OR REPLACE FUNCTION outbox.mirror_mark_published(p_ids bigint[], p_partitions integer[],
                                                        p_offsets bigint[])
RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    n       integer;
    reports jsonb := (SELECT jsonb_object_agg(u.id::text, jsonb_build_array(u.p, u.o))
                        FROM unnest(p_ids, p_partitions, p_offsets) AS u(id, p, o)
                       WHERE u.id IS NOT NULL);
BEGIN
    PERFORM outbox.mirror_check_leader('mirror_mark_published');
    -- The given ids through the primary key, whatever the statistics say: a hash join read
    -- the whole table for a few hundred rows, an index condition on state walked every
    -- pending row ("IS TRUE" keeps it a filter), and a join with the ids could walk the whole
    -- primary key (sql/60_plans.sql). Each row's report is looked up by id, not joined.
    UPDATE outbox.events e
       SET state = 'published', published_at = now(),
           kafka_partition = (reports -> e.id::text ->> 0)::integer,
           kafka_offset = (reports -> e.id::text ->> 1)::bigint, last_error = NULL
     WHERE e.id = ANY (p_ids) AND (e.state = 'pending') IS TRUE;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION outbox.mirror_mark_published(bigint[], integer[], bigint[]) IS
    'Kafka mirror: record delivery reports (partition, offset) of pending events; leader only';

-- Marks events that Kafka refused for good (too large, not authorised, invalid) failed with
-- the reason. Leader only. Returns the number of rows changed.
CREATE OR REPLACE FUNCTION outbox.mirror_mark_failed(p_ids bigint[], p_errors text[])
RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    n      integer;
    errors jsonb := (SELECT jsonb_object_agg(u.id::text, u.err)
                       FROM unnest(p_ids, p_errors) AS u(id, err)
                      WHERE u.id IS NOT NULL);
BEGIN
    PERFORM outbox.mirror_check_leader('mirror_mark_failed');
    -- as outbox.mirror_mark_published
    UPDATE outbox.events e
       SET state = 'failed', last_error = left(errors ->> e.id::text, 2000)
     WHERE e.id = ANY (p_ids) AND (e.state = 'pending') IS TRUE;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION outbox.mirror_mark_failed(bigint[], text[]) IS
    'Kafka mirror: record permanent publication failures with their reason; leader only';

-- Applies kafka.lifecycle_events to outbox.settings (the switch the SQL side reads when it
-- writes email.* events). Leader only, written only when it changes.
CREATE OR REPLACE FUNCTION outbox.mirror_set_lifecycle_events(p_on boolean)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
BEGIN
    PERFORM outbox.mirror_check_leader('mirror_set_lifecycle_events');
    RETURN outbox.set_lifecycle_events(p_on);
END
$fn$;
COMMENT ON FUNCTION outbox.mirror_set_lifecycle_events(boolean) IS
    'Kafka mirror: set outbox.settings.lifecycle_events from kafka.lifecycle_events; leader only';

REVOKE ALL ON FUNCTION outbox.mirror_read(bigint, xid8, integer),
    outbox.mirror_mark_published(bigint[], integer[], bigint[]),
    outbox.mirror_mark_failed(bigint[], text[]), outbox.mirror_set_lifecycle_events(boolean),
    outbox.mirror_is_leader(), outbox.mirror_check_leader(text), outbox.mirror_lock_key()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.mirror_read(bigint, xid8, integer),
    outbox.mirror_mark_published(bigint[], integer[], bigint[]),
    outbox.mirror_mark_failed(bigint[], text[]), outbox.mirror_set_lifecycle_events(boolean),
    outbox.mirror_is_leader(), outbox.mirror_check_leader(text), outbox.mirror_lock_key()
    TO outbox_dispatcher;
