-- The hot path's plans do not depend on the statistics: with the planner settings that
-- outbox.claim and outbox.complete run with (sql/60_plans.sql), their statements probe the
-- primary key and the partial indexes both right after TRUNCATE + ANALYZE (statistics of an
-- empty table, then rows arrive) and with a large finished history analysed.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(34);

CREATE FUNCTION pg_temp.plan(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
    t text := '';
BEGIN
    FOR r IN EXECUTE 'EXPLAIN ' || q LOOP
        t := t || r || E'\n';
    END LOOP;
    RETURN t;
END
$$;
-- Runs with the SET options of function f applied (as the function itself runs).
CREATE FUNCTION pg_temp.plan_as(f regprocedure, q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config(split_part(c, '=', 1), split_part(c, '=', 2), true)
       FROM pg_catalog.pg_proc p, unnest(p.proconfig) c WHERE p.oid = f AND c LIKE 'enable\_%';
    RETURN pg_temp.plan(q);
END
$$;
-- the statements of outbox.claim (sql/10_lease.sql) and outbox.complete (sql/11_complete.sql)
CREATE TEMP TABLE q (name text, f regprocedure, sql text);
INSERT INTO q VALUES
 ('claim', 'outbox.claim(text,integer,integer,boolean)', $$
    WITH c AS MATERIALIZED (
        SELECT m.id FROM outbox.messages m WHERE m.state = 'pending' AND m.next_attempt_at <= now()
         ORDER BY m.priority DESC, m.next_attempt_at, m.id LIMIT 100 FOR UPDATE SKIP LOCKED
    ) UPDATE outbox.messages m SET state = 'sending', lease_owner = 'x', lease_expires_at = now(),
             attempts = m.attempts + 1 FROM c WHERE m.id = c.id RETURNING m.*$$),
 ('complete', 'outbox.complete(text,jsonb)', $$
    UPDATE outbox.messages m SET state = 'sent', lease_owner = NULL
      FROM jsonb_to_recordset('[{"id": 1, "attempt": 1}]') AS r(id bigint, attempt integer)
     WHERE m.id = r.id AND (m.state = 'sending') IS TRUE AND m.lease_owner = 'x' AND m.attempts = r.attempt$$);

-- 1. statistics of an empty table, then a round's worth of rows (not analysed yet)
TRUNCATE outbox.messages, outbox.events CASCADE;
ANALYZE outbox.messages;
INSERT INTO outbox.messages (recipients, subject, body_text)
SELECT ARRAY['a@example.com'], 's' || i, repeat('b', 2000) FROM generate_series(1, 3000) i;
UPDATE outbox.messages SET state = 'sent' WHERE id % 10 <> 0;

SELECT unalike(pg_temp.plan_as(f, sql), '%Seq Scan on messages%', name || ': no scan of the whole table after TRUNCATE + ANALYZE')
  FROM q ORDER BY name;
SELECT unalike(pg_temp.plan_as(f, sql), '%Hash Join%', name || ': no hash join after TRUNCATE + ANALYZE') FROM q ORDER BY name;
SELECT alike(pg_temp.plan_as(f, sql), '%Index Scan using messages_claim_idx%', 'claim: reads the partial claim index')
  FROM q WHERE name = 'claim';
SELECT alike(pg_temp.plan_as(f, sql), '%Index Scan using messages_pkey%', name || ': probes the primary key')
  FROM q ORDER BY name;

-- the same paths in the generic plans these functions keep (plan_cache_mode, sql/60_plans.sql)
PREPARE claim_q(text, integer) AS
    WITH c AS MATERIALIZED (
        SELECT m.id FROM outbox.messages m WHERE m.state = 'pending' AND m.next_attempt_at <= now()
         ORDER BY m.priority DESC, m.next_attempt_at, m.id LIMIT $2 FOR UPDATE SKIP LOCKED
    ) UPDATE outbox.messages m SET state = 'sending', lease_owner = $1, lease_expires_at = now(),
             attempts = m.attempts + 1 FROM c WHERE m.id = c.id RETURNING m.*;
PREPARE complete_q(text, jsonb) AS
    UPDATE outbox.messages m SET state = 'sent', lease_owner = NULL
      FROM jsonb_to_recordset($2) AS r(id bigint, attempt integer)
     WHERE m.id = r.id AND (m.state = 'sending') IS TRUE AND m.lease_owner = $1 AND m.attempts = r.attempt;
SET LOCAL plan_cache_mode = force_generic_plan;
SELECT alike(pg_temp.plan_as('outbox.claim(text,integer,integer,boolean)', $$EXECUTE claim_q('x', 100)$$),
             '%Index Scan using messages_claim_idx%', 'claim, generic plan: reads the partial claim index');
SELECT alike(pg_temp.plan_as('outbox.complete(text,jsonb)', $$EXECUTE complete_q('x', '[{"id": 1, "attempt": 1}]')$$),
             '%Index Scan using messages_pkey%', 'complete, generic plan: probes the primary key');
RESET plan_cache_mode;

-- 2. a large finished history, analysed
INSERT INTO outbox.messages (recipients, subject, body_text)
SELECT ARRAY['a@example.com'], 'h' || i, 'b' FROM generate_series(1, 10000) i;
UPDATE outbox.messages SET state = 'sent' WHERE subject LIKE 'h%';
ANALYZE outbox.messages;
SELECT unalike(pg_temp.plan_as(f, sql), '%Seq Scan on messages%', name || ': no scan of the whole table with history')
  FROM q ORDER BY name;
SELECT alike(pg_temp.plan_as(f, sql), '%Index Scan using messages_claim_idx%', 'claim: partial claim index with history')
  FROM q WHERE name = 'claim';

-- a disabled plan node still costs 1e10: without jit = off that cost made every claim JIT-compile (0.5 s)
SELECT ok('jit=off' = ANY (p.proconfig), p.oid::regprocedure || ' runs without JIT')
  FROM pg_catalog.pg_proc p WHERE p.oid IN (SELECT f FROM q) ORDER BY 1;
-- after every ANALYZE PostgreSQL planned each call again with its values (0.6 ms for complete,
-- more than running it) and on a small table kept doing so: one generic plan instead
SELECT ok('plan_cache_mode=force_generic_plan' = ANY (p.proconfig), p.oid::regprocedure || ' keeps one generic plan')
  FROM pg_catalog.pg_proc p WHERE p.oid IN (SELECT f FROM q) ORDER BY 1;
-- a SQL function's statements are planned again on every call: the lifecycle events of
-- every outcome write must keep their plan (PL/pgSQL caches it for the session)
SELECT is((SELECT l.lanname::text FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
            WHERE p.oid = 'outbox.lifecycle_events(outbox.lifecycle_change[],text)'::regprocedure),
          'plpgsql', 'lifecycle_events keeps its plan across calls');
-- ANALYZE (autovacuum runs it every naptime on a busy table) samples 3,000 rows, not 30,000,
-- and skips the payload: 205-245 ms on 100,000 messages before, 15-23 ms after
SELECT is((SELECT array_agg(DISTINCT a.attstattarget ORDER BY a.attstattarget) FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = ('outbox.' || t)::regclass AND a.attnum > 0 AND NOT a.attisdropped),
          '{0,10}'::int[], t || ': statistics target 10, 0 on the payload')
  FROM unnest(ARRAY['messages', 'events']) t ORDER BY t;
SELECT is((SELECT a.attstattarget FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = 'outbox.message_recipients'::regclass AND a.attname = 'address'),
          10, 'message_recipients.address (joined on) keeps statistics');
SELECT is_empty($$SELECT 1 FROM pg_catalog.pg_stats WHERE schemaname = 'outbox' AND tablename = 'messages'
                   AND attname IN ('body_text', 'subject', 'recipients')$$,
                'ANALYZE gathers nothing on the message payload');
-- 3. what the functions themselves do with the plans they keep: planned while the table was
-- empty (after a TRUNCATE, on a new install) and then run on a table that filled up without
-- an ANALYZE, as between two autovacuum naptimes. A join planned on the empty table walked
-- the whole primary key on every call (measured at 1000 msg/s: p99 3 -> 90 ms for a minute
-- after a TRUNCATE); each call must read about as many rows as it is given or leases.
SET CONSTRAINTS ALL IMMEDIATE;
TRUNCATE outbox.messages, outbox.events CASCADE;
ANALYZE outbox.messages;
ANALYZE outbox.events;
SELECT pg_advisory_xact_lock(outbox.mirror_lock_key());
-- (PostgreSQL settles on a generic plan after five calls)
SELECT count(outbox.mirror_mark_published('{1}', '{0}', '{0}')) FROM generate_series(1, 7);
SELECT count(outbox.mirror_mark_failed('{1}', '{x}')) FROM generate_series(1, 7);
SELECT count(*) FROM outbox.claim('warm', 3, 60, false);
SELECT count(*) FROM outbox.complete('warm', '[{"id": 1, "attempt": 1, "outcome": "sent"}]');
SELECT outbox.renew('warm', '{1}', '{1}', 60);
SELECT outbox.release('warm', '{1}', '{1}');
INSERT INTO outbox.messages (recipients, subject, body_text)
SELECT ARRAY['a@example.com'], 'f' || i, 'b' FROM generate_series(1, 3000) i;
INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload)
SELECT 'order', 'o' || i, 'created', '{}' FROM generate_series(1, 3000) i;
CREATE FUNCTION pg_temp.rows_read(t regclass DEFAULT 'outbox.messages') RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(s.idx_tup_fetch, 0) + s.seq_tup_read FROM pg_catalog.pg_stat_xact_user_tables s
     WHERE s.relid = t$$;
CREATE TEMP TABLE mark AS SELECT pg_temp.rows_read() AS n;
CREATE TEMP TABLE leased AS SELECT id, attempt FROM outbox.claim('filled', 3, 60, false);
SELECT is((SELECT count(*) FROM leased), 3::bigint, 'claim on the filled table');
SELECT cmp_ok(pg_temp.rows_read() - (SELECT n FROM mark), '<=', 10::bigint,
              'claim, planned on the empty table: reads the rows it leases, not the table');
UPDATE mark SET n = pg_temp.rows_read();
SELECT is(outbox.renew('filled', (SELECT array_agg(id ORDER BY id) FROM leased),
                       (SELECT array_agg(attempt ORDER BY id) FROM leased), 60), 3, 'renew on the filled table');
SELECT cmp_ok(pg_temp.rows_read() - (SELECT n FROM mark), '<=', 10::bigint,
              'renew, planned on the empty table: reads the rows it is given, not the table');
UPDATE mark SET n = pg_temp.rows_read();
SELECT is((SELECT count(*) FROM outbox.complete('filled',
              (SELECT jsonb_agg(jsonb_build_object('id', id, 'attempt', attempt, 'outcome', 'sent')) FROM leased
                WHERE id < (SELECT max(id) FROM leased)))), 2::bigint, 'complete on the filled table');
SELECT cmp_ok(pg_temp.rows_read() - (SELECT n FROM mark), '<=', 10::bigint,
              'complete, planned on the empty table: reads the rows it is given, not the table');
UPDATE mark SET n = pg_temp.rows_read();
SELECT is(outbox.release('filled', (SELECT array_agg(id) FROM leased), (SELECT array_agg(attempt) FROM leased)), 1,
          'release on the filled table');
SELECT cmp_ok(pg_temp.rows_read() - (SELECT n FROM mark), '<=', 10::bigint,
              'release, planned on the empty table: reads the rows it is given, not the table');

UPDATE mark SET n = pg_temp.rows_read('outbox.events');
SELECT is(outbox.mirror_mark_published((SELECT array_agg(id) FROM (SELECT id FROM outbox.events ORDER BY id LIMIT 3) e),
                                       '{0,1,2}', '{10,11,12}'), 3, 'mirror_mark_published on the filled table');
SELECT cmp_ok(pg_temp.rows_read('outbox.events') - (SELECT n FROM mark), '<=', 10::bigint,
              'mirror_mark_published, planned on the empty table: reads the rows it is given, not the table');
UPDATE mark SET n = pg_temp.rows_read('outbox.events');
SELECT is(outbox.mirror_mark_failed((SELECT array_agg(id) FROM (SELECT id FROM outbox.events ORDER BY id OFFSET 3 LIMIT 3) e),
                                    '{a,b,c}'), 3, 'mirror_mark_failed on the filled table');
SELECT cmp_ok(pg_temp.rows_read('outbox.events') - (SELECT n FROM mark), '<=', 10::bigint,
              'mirror_mark_failed, planned on the empty table: reads the rows it is given, not the table');
SELECT results_eq($$SELECT state, kafka_partition, kafka_offset, last_error FROM outbox.events ORDER BY id LIMIT 6$$,
                  $$VALUES ('published', 0, 10::bigint, NULL::text), ('published', 1, 11, NULL), ('published', 2, 12, NULL),
                           ('failed', NULL, NULL, 'a'), ('failed', NULL, NULL, 'b'), ('failed', NULL, NULL, 'c')$$,
                  'each event gets its own report');

SELECT * FROM finish();
ROLLBACK;
