-- Retention: removal of finished rows after a per-state retention, in small batches, by one
-- dispatcher at a time (the session holding the retention advisory lock). Unfinished rows
-- (pending, sending) and unpublished events are never removed, whatever their age.
--
-- Plain layout: each call walks the next p_limit rows of each table in id order from a
-- cursor and deletes those past retention; the cursor returns to 0 once it reaches rows
-- younger than the shortest retention (a "pass").
-- Partitioned layout: each call works on the oldest partition whose period is past
-- retention: it moves the rows that must stay (unfinished, unpublished, or finished too
-- recently) to the current partition, a few heap blocks per call, then detaches and drops
-- the partition in a short transaction that gives up after 100 ms of waiting for its lock.

-- The retention's advisory lock key (bigint 0x6f7574626f787274, "outboxrt").
CREATE OR REPLACE FUNCTION outbox.retention_lock_key()
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT 8031453476610929268::bigint $fn$;
COMMENT ON FUNCTION outbox.retention_lock_key() IS
    'Retention: the session advisory lock key held by the one dispatcher that purges';

CREATE OR REPLACE FUNCTION outbox.retention_is_leader()
RETURNS boolean
LANGUAGE sql STABLE
AS $fn$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                    WHERE l.locktype = 'advisory' AND l.pid = pg_catalog.pg_backend_pid()
                      AND l.granted AND l.objsubid = 1
                      AND l.classid = (outbox.retention_lock_key() >> 32)::oid
                      AND l.objid = (outbox.retention_lock_key() & 4294967295)::oid
                      AND l.database = (SELECT oid FROM pg_catalog.pg_database
                                         WHERE datname = pg_catalog.current_database()))
$fn$;
COMMENT ON FUNCTION outbox.retention_is_leader() IS
    'Retention: true when this session holds the retention advisory lock';

-- Whether message row m may be removed under the given retentions (0 = keep forever).
CREATE OR REPLACE FUNCTION outbox.message_expired(p_state text, p_finished timestamptz, p_sent interval,
                                                  p_cancelled interval, p_failed interval, p_dead interval)
RETURNS boolean
LANGUAGE sql STABLE
AS $fn$
    SELECT CASE p_state
        WHEN 'sent' THEN p_sent > interval '0' AND p_finished < now() - p_sent
        WHEN 'cancelled' THEN p_cancelled > interval '0' AND p_finished < now() - p_cancelled
        WHEN 'failed' THEN p_failed > interval '0' AND p_finished < now() - p_failed
        WHEN 'dead' THEN p_dead > interval '0' AND p_finished < now() - p_dead
        ELSE false  -- pending, sending: never
    END
$fn$;

-- Whether event row e may be removed: published ones after p_published (from publication),
-- failed ones after p_failed (from creation); pending ones never.
CREATE OR REPLACE FUNCTION outbox.event_expired(p_state text, p_published_at timestamptz, p_created timestamptz,
                                                p_published interval, p_failed interval)
RETURNS boolean
LANGUAGE sql STABLE
AS $fn$
    SELECT CASE p_state
        WHEN 'published' THEN p_published > interval '0' AND p_published_at < now() - p_published
        WHEN 'failed' THEN p_failed > interval '0' AND p_created < now() - p_failed
        ELSE false
    END
$fn$;

-- Adds one batch's removals to the table's progress row; closes the pass when p_done.
CREATE OR REPLACE FUNCTION outbox.retention_note(p_tbl text, p_removed bigint, p_done boolean, p_dropped integer)
RETURNS void
LANGUAGE sql
AS $fn$
    UPDATE outbox.retention_state r
       SET pass_removed = CASE WHEN p_done THEN 0 ELSE r.pass_removed + p_removed END,
           last_pass_removed = CASE WHEN p_done THEN r.pass_removed + p_removed ELSE r.last_pass_removed END,
           last_pass_at = CASE WHEN p_done THEN now() ELSE r.last_pass_at END,
           removed_total = r.removed_total + p_removed,
           partitions_dropped = r.partitions_dropped + p_dropped,
           last_batch_at = now(),
           last_owner = current_setting('application_name', true)
     WHERE r.tbl = p_tbl
$fn$;

-- Plain layout, one batch of messages: returns {"removed": {state: n}, "more": bool}.
CREATE OR REPLACE FUNCTION outbox.purge_messages_rows(p_sent interval, p_cancelled interval, p_failed interval,
                                                      p_dead interval, p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
    shortest interval;
    cur      bigint;
    last_id  bigint;
    first_at timestamptz;
    scanned  integer;
    removed  jsonb;
    n        bigint;
    more     boolean;
BEGIN
    SELECT min(x) INTO shortest FROM unnest(ARRAY[p_sent, p_cancelled, p_failed, p_dead]) x WHERE x > interval '0';
    IF shortest IS NULL THEN
        RETURN jsonb_build_object('removed', '{}'::jsonb, 'more', false);
    END IF;
    SELECT r.cursor_id INTO cur FROM outbox.retention_state r WHERE r.tbl = 'messages';
    -- The scan reads ids only through the primary key; rows are locked (skipping any a
    -- dispatcher holds) and re-checked at their latest version before they are deleted.
    WITH scan AS MATERIALIZED (
        SELECT m.id, m.created_at FROM outbox.messages m
         WHERE m.id > cur ORDER BY m.id LIMIT p_limit
    ), victims AS MATERIALIZED (
        SELECT m.id FROM outbox.messages m
         WHERE m.id IN (SELECT s.id FROM scan s)
           AND outbox.message_expired(m.state, coalesce(m.updated_at, m.created_at),
                                      p_sent, p_cancelled, p_failed, p_dead)
           FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM outbox.messages m USING victims v WHERE m.id = v.id RETURNING m.state
    )
    SELECT (SELECT count(*) FROM scan), (SELECT max(s.id) FROM scan s), (SELECT min(s.created_at) FROM scan s),
           coalesce((SELECT jsonb_object_agg(g.state, g.n) FROM (SELECT gone.state, count(*) AS n FROM gone GROUP BY gone.state) g),
                    '{}'::jsonb)
      INTO scanned, last_id, first_at, removed;
    -- a pass ends at the end of the table or at a batch too young for any retention
    more := scanned = p_limit AND first_at < now() - shortest;
    UPDATE outbox.retention_state SET cursor_id = CASE WHEN more THEN last_id ELSE 0 END WHERE tbl = 'messages';
    SELECT coalesce(sum(v::bigint), 0) INTO n FROM jsonb_each_text(removed) AS e(k, v);
    PERFORM outbox.retention_note('messages', n, NOT more, 0);
    RETURN jsonb_build_object('removed', removed, 'more', more);
END
$fn$;

-- Plain layout, one batch of events.
CREATE OR REPLACE FUNCTION outbox.purge_events_rows(p_published interval, p_failed interval, p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
    shortest interval;
    cur      bigint;
    last_id  bigint;
    first_at timestamptz;
    scanned  integer;
    removed  jsonb;
    n        bigint;
    more     boolean;
BEGIN
    SELECT min(x) INTO shortest FROM unnest(ARRAY[p_published, p_failed]) x WHERE x > interval '0';
    IF shortest IS NULL THEN
        RETURN jsonb_build_object('removed', '{}'::jsonb, 'more', false);
    END IF;
    SELECT r.cursor_id INTO cur FROM outbox.retention_state r WHERE r.tbl = 'events';
    WITH scan AS MATERIALIZED (
        SELECT e.id, e.created_at FROM outbox.events e
         WHERE e.id > cur ORDER BY e.id LIMIT p_limit
    ), victims AS MATERIALIZED (
        SELECT e.id FROM outbox.events e
         WHERE e.id IN (SELECT s.id FROM scan s)
           AND outbox.event_expired(e.state, e.published_at, e.created_at, p_published, p_failed)
           FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM outbox.events e USING victims v WHERE e.id = v.id RETURNING e.state
    )
    SELECT (SELECT count(*) FROM scan), (SELECT max(s.id) FROM scan s), (SELECT min(s.created_at) FROM scan s),
           coalesce((SELECT jsonb_object_agg(g.state, g.n) FROM (SELECT gone.state, count(*) AS n FROM gone GROUP BY gone.state) g),
                    '{}'::jsonb)
      INTO scanned, last_id, first_at, removed;
    more := scanned = p_limit AND first_at < now() - shortest;
    UPDATE outbox.retention_state SET cursor_id = CASE WHEN more THEN last_id ELSE 0 END WHERE tbl = 'events';
    SELECT coalesce(sum(v::bigint), 0) INTO n FROM jsonb_each_text(removed) AS e(k, v);
    PERFORM outbox.retention_note('events', n, NOT more, 0);
    RETURN jsonb_build_object('removed', removed, 'more', more);
END
$fn$;

-- Partitioned layout: the oldest partition of p_table (default excluded) whose period ended
-- more than p_keep ago, or NULL.
CREATE OR REPLACE FUNCTION outbox.partition_expired(p_table text, p_keep interval)
RETURNS regclass
LANGUAGE sql STABLE
AS $fn$
    SELECT c.oid::regclass
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     CROSS JOIN LATERAL (SELECT (regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                                              'TO \(''([^'']+)''\)'))[1]::timestamptz AS hi) b
     WHERE i.inhparent = format('outbox.%I', p_table)::regclass
       AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
       AND b.hi <= now() - p_keep
     ORDER BY b.hi
     LIMIT 1
$fn$;

-- Partitioned layout, one batch for p_table ('messages' or 'events'): walk p_blocks heap
-- blocks of the oldest expired partition moving the rows that must stay to the current
-- partition; once walked, detach and drop it. Returns {"moved", "dropped", "more"}.
CREATE OR REPLACE FUNCTION outbox.purge_partition(p_table text, p_keep interval, p_keep_test text,
                                                  p_blocks integer)
RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
    part    regclass;
    st      outbox.retention_state;
    nblocks bigint;
    moved   bigint;
    locked  bigint;
    lo      bigint;
    hi      bigint;
    dropped integer := 0;
    busy    boolean;
    expired bigint;
BEGIN
    IF p_keep IS NULL OR p_keep <= interval '0' THEN
        RETURN jsonb_build_object('moved', 0, 'dropped', 0, 'removed', 0, 'more', false);
    END IF;
    part := outbox.partition_expired(p_table, p_keep);
    IF part IS NULL THEN
        RETURN jsonb_build_object('moved', 0, 'dropped', 0, 'removed', 0, 'more', false);
    END IF;
    SELECT * INTO st FROM outbox.retention_state r WHERE r.tbl = p_table;
    IF st.walk_partition IS DISTINCT FROM part::text THEN
        st.walk_block := 0;
    END IF;
    nblocks := pg_catalog.pg_relation_size(part) / current_setting('block_size')::bigint;

    IF st.walk_block < nblocks THEN
        -- Rows to keep in the next blocks (a TID range scan), locked so that none changes
        -- under the move; a row a dispatcher holds is not skipped but waited for next call.
        PERFORM set_config('outbox.moving', 'on', true);
        EXECUTE format($q$
            WITH keep AS MATERIALIZED (
                SELECT t.id, t.part_at FROM %s t
                 WHERE t.ctid >= format('(%%s,0)', $1)::tid AND t.ctid < format('(%%s,0)', $2)::tid
                   AND NOT (%s)
                   FOR UPDATE SKIP LOCKED
            ), mv AS (
                UPDATE outbox.%I x SET part_at = now() FROM keep k
                 WHERE x.id = k.id AND x.part_at = k.part_at
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM mv),
                   (SELECT count(*) FILTER (WHERE NOT (%s)) FROM %s t
                     WHERE t.ctid >= format('(%%s,0)', $1)::tid AND t.ctid < format('(%%s,0)', $2)::tid),
                   (SELECT count(*) FILTER (WHERE %s) FROM %s t
                     WHERE t.ctid >= format('(%%s,0)', $1)::tid AND t.ctid < format('(%%s,0)', $2)::tid) $q$,
            part, p_keep_test, p_table, p_keep_test, part, p_keep_test, part)
          USING st.walk_block, st.walk_block + p_blocks
          INTO moved, locked, expired;
        PERFORM set_config('outbox.moving', 'off', true);
        -- rows still there were locked by someone else: look at these blocks again
        -- (the rows past retention are counted as they are walked, removed when it drops)
        IF locked = 0 THEN
            st.walk_block := st.walk_block + p_blocks;
            UPDATE outbox.retention_state
               SET walk_partition = part::text, walk_block = st.walk_block,
                   pass_removed = CASE WHEN st.walk_partition IS DISTINCT FROM part::text THEN 0 ELSE pass_removed END + expired,
                   last_batch_at = now()
             WHERE tbl = p_table;
        END IF;
        RETURN jsonb_build_object('moved', moved, 'dropped', 0, 'removed', 0, 'more', true);
    END IF;

    -- Walked: detach and drop, unless something unfinished arrived meanwhile. The DETACH
    -- takes ACCESS EXCLUSIVE on the parent; waiting for it longer than a moment would queue
    -- producers behind it, so it gives up after 100 ms and the next call tries again.
    BEGIN
        PERFORM set_config('lock_timeout', '100ms', true);
        EXECUTE format('ALTER TABLE outbox.%I DETACH PARTITION %s', p_table, part);
        PERFORM set_config('lock_timeout', '0', true);
        IF p_table = 'messages' THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s t WHERE t.state IN (''pending'', ''sending''))', part) INTO busy;
            IF busy THEN
                RAISE EXCEPTION USING ERRCODE = 'object_in_use', MESSAGE = 'unfinished rows arrived';
            END IF;
            EXECUTE format('SELECT min(t.id), max(t.id) FROM %s t', part) INTO lo, hi;
            IF lo IS NOT NULL THEN
                INSERT INTO outbox.retention_cleanup (lo, hi) VALUES (lo, hi) ON CONFLICT DO NOTHING;
            END IF;
        ELSE
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s t WHERE t.state = ''pending'')', part) INTO busy;
            IF busy THEN
                RAISE EXCEPTION USING ERRCODE = 'object_in_use', MESSAGE = 'unpublished events arrived';
            END IF;
        END IF;
        EXECUTE format('DROP TABLE %s', part);
        dropped := 1;
    EXCEPTION WHEN lock_not_available OR object_in_use THEN
        -- rolled back to before the DETACH: try again on a later call (walk again if needed)
        UPDATE outbox.retention_state SET walk_block = 0, pass_removed = 0
         WHERE tbl = p_table AND SQLSTATE = '55006';
        dropped := 0;
    END;
    PERFORM set_config('lock_timeout', '0', true);
    IF dropped = 0 THEN
        RETURN jsonb_build_object('moved', 0, 'dropped', 0, 'removed', 0, 'more', true);
    END IF;
    SELECT r.pass_removed INTO expired FROM outbox.retention_state r WHERE r.tbl = p_table;
    UPDATE outbox.retention_state SET walk_partition = NULL, walk_block = 0, pass_removed = 0 WHERE tbl = p_table;
    PERFORM outbox.retention_note(p_table, expired, true, 1);
    RETURN jsonb_build_object('moved', 0, 'dropped', 1, 'removed', expired, 'more', true);
END
$fn$;

-- Partitioned layout: recipient outcomes and idempotency keys of messages whose partition
-- was dropped, p_limit at a time. Returns the number of rows removed.
CREATE OR REPLACE FUNCTION outbox.purge_cleanup(p_limit integer)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    c  outbox.retention_cleanup;
    nr bigint;
    nk bigint;
BEGIN
    SELECT * INTO c FROM outbox.retention_cleanup ORDER BY lo LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    DELETE FROM outbox.message_recipients r
     WHERE (r.message, r.address) IN (
            SELECT x.message, x.address FROM outbox.message_recipients x
             WHERE x.message BETWEEN c.lo AND c.hi
               AND NOT EXISTS (SELECT 1 FROM outbox.messages m WHERE m.id = x.message)
             LIMIT p_limit);
    GET DIAGNOSTICS nr = ROW_COUNT;
    DELETE FROM outbox.message_keys k
     WHERE k.idempotency_key IN (
            SELECT y.idempotency_key FROM outbox.message_keys y
             WHERE y.message BETWEEN c.lo AND c.hi
               AND NOT EXISTS (SELECT 1 FROM outbox.messages m WHERE m.id = y.message)
             LIMIT p_limit);
    GET DIAGNOSTICS nk = ROW_COUNT;
    IF nr < p_limit AND nk < p_limit THEN
        DELETE FROM outbox.retention_cleanup x WHERE x.lo = c.lo AND x.hi = c.hi;
    END IF;
    RETURN nr + nk;
END
$fn$;

-- One batch of retention work for the caller, which must hold the retention lock (one
-- dispatcher at a time). Retentions are per state, 0 keeps forever; p_limit bounds the rows
-- one call looks at per table. Returns
--   {"layout", "removed": {"messages": {state: n}, "events": {state: n}}, "dropped": n,
--    "moved": n, "more": bool, "backlog": n}
-- where more says another call has work now, and backlog counts due pending messages
-- (up to 10000) so the caller can step aside while the dispatchers are behind.
CREATE OR REPLACE FUNCTION outbox.purge(p_sent interval, p_cancelled interval, p_failed interval,
                                        p_dead interval, p_published interval, p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    rm  jsonb;
    re  jsonb;
    pm  jsonb;
    pe  jsonb;
    nb  bigint;
    lay text := outbox.layout();
    more boolean;
BEGIN
    IF NOT outbox.retention_is_leader() THEN
        RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
            MESSAGE = 'outbox.purge: this session does not hold the retention lock';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'outbox.purge: p_limit must be between 1 and 100000';
    END IF;
    IF p_sent IS NULL OR p_cancelled IS NULL OR p_failed IS NULL OR p_dead IS NULL OR p_published IS NULL
       OR least(p_sent, p_cancelled, p_failed, p_dead, p_published) < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'outbox.purge: retentions must be 0 (keep) or positive';
    END IF;
    SELECT count(*) INTO nb FROM (SELECT 1 FROM outbox.messages m
                                   WHERE m.state = 'pending' AND m.next_attempt_at <= now() LIMIT 10000) x;
    IF lay = 'plain' THEN
        rm := outbox.purge_messages_rows(p_sent, p_cancelled, p_failed, p_dead, p_limit);
        re := outbox.purge_events_rows(p_published, p_failed, p_limit);
        RETURN jsonb_build_object('layout', lay,
            'removed', jsonb_build_object('messages', rm -> 'removed', 'events', re -> 'removed'),
            'dropped', 0, 'moved', 0,
            'more', (rm ->> 'more')::boolean OR (re ->> 'more')::boolean, 'backlog', nb);
    END IF;

    PERFORM outbox.partitions_ensure(3);
    -- a messages partition goes once its sent and cancelled rows are past retention; the
    -- others in it (failed/dead kept longer, unfinished) move forward first
    pm := outbox.purge_partition('messages',
        CASE WHEN p_sent > interval '0' AND p_cancelled > interval '0' THEN greatest(p_sent, p_cancelled) END,
        format('outbox.message_expired(t.state, coalesce(t.updated_at, t.created_at), %L, %L, %L, %L)',
               p_sent, p_cancelled, p_failed, p_dead),
        greatest(p_limit / 20, 1));
    pe := outbox.purge_partition('events', CASE WHEN p_published > interval '0' THEN p_published END,
        format('outbox.event_expired(t.state, t.published_at, t.created_at, %L, %L)', p_published, p_failed),
        greatest(p_limit / 20, 1));
    nb := outbox.purge_cleanup(p_limit);
    more := (pm ->> 'more')::boolean OR (pe ->> 'more')::boolean OR nb > 0;
    -- whole partitions: their rows are counted, not told apart by state
    RETURN jsonb_build_object('layout', lay,
        'removed', jsonb_build_object('messages', jsonb_build_object('partition', (pm ->> 'removed')::bigint),
                                      'events', jsonb_build_object('partition', (pe ->> 'removed')::bigint)),
        'dropped', (pm ->> 'dropped')::int + (pe ->> 'dropped')::int,
        'moved', (pm ->> 'moved')::bigint + (pe ->> 'moved')::bigint, 'cleaned', nb,
        'more', more, 'backlog', (SELECT count(*) FROM (SELECT 1 FROM outbox.messages m
                                   WHERE m.state = 'pending' AND m.next_attempt_at <= now() LIMIT 10000) x));
END
$fn$;
COMMENT ON FUNCTION outbox.purge(interval, interval, interval, interval, interval, integer) IS
    'Retention: one batch of removal of finished rows past retention (holder of the retention lock only); see sql/50_retention.sql';

REVOKE ALL ON FUNCTION outbox.purge(interval, interval, interval, interval, interval, integer),
    outbox.retention_is_leader(), outbox.retention_lock_key() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.purge(interval, interval, interval, interval, interval, integer),
    outbox.retention_is_leader(), outbox.retention_lock_key() TO outbox_dispatcher;
GRANT SELECT ON outbox.retention_state TO outbox_dispatcher, outbox_producer;
