-- The partitioned layout, inside this file's transaction (rolled back at the end): moving an
-- existing install onto it, the producer INSERT on it, idempotency keys unique across
-- partitions, and retention that moves the rows that must stay before dropping a partition.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(33);

TRUNCATE outbox.messages, outbox.events CASCADE;
TRUNCATE outbox.message_keys, outbox.retention_cleanup;
UPDATE outbox.retention_state SET cursor_id = 0, walk_partition = NULL, walk_block = 0, pass_removed = 0;

-- An existing plain install with history: every state, old and recent, keyed messages.
INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key, not_before)
SELECT ARRAY['a@example.com'], s || ':' || age || ':' || i, 'b', s || ':' || age || ':' || i,
       CASE WHEN s = 'scheduled' THEN now() + interval '3 days' END
  FROM unnest(ARRAY['pending', 'scheduled', 'sending', 'sent', 'failed', 'dead', 'cancelled']) s,
       unnest(ARRAY['old', 'new']) age, generate_series(1, 30) i
 WHERE age = 'old' OR i <= 5;
UPDATE outbox.messages m
   SET state = CASE split_part(m.subject, ':', 1) WHEN 'scheduled' THEN 'pending' ELSE split_part(m.subject, ':', 1) END,
       lease_owner = CASE WHEN split_part(m.subject, ':', 1) = 'sending' THEN 'w' END,
       lease_expires_at = CASE WHEN split_part(m.subject, ':', 1) = 'sending' THEN now() + interval '1 hour' END,
       attempts = CASE WHEN split_part(m.subject, ':', 1) = 'sending' THEN 1 ELSE 0 END,
       created_at = CASE WHEN split_part(m.subject, ':', 2) = 'old' THEN now() - interval '101 days' ELSE now() - interval '1 hour' END,
       updated_at = CASE WHEN split_part(m.subject, ':', 2) = 'old' THEN now() - interval '100 days' ELSE now() - interval '1 hour' END;
INSERT INTO outbox.message_recipients (message, address, kind, state)
SELECT id, 'a@example.com', 'to', 'sent' FROM outbox.messages;
UPDATE outbox.events e SET created_at = now() - interval '101 days',
       state = CASE WHEN e.id % 3 = 0 THEN 'pending' ELSE 'published' END,
       published_at = CASE WHEN e.id % 3 <> 0 THEN now() - interval '100 days' END;
CREATE TEMP TABLE before_m AS SELECT * FROM outbox.messages;
CREATE TEMP TABLE before_e AS SELECT id, state, event_id FROM outbox.events;

-- The optional preparation of docs/operations.md, for messages only (events take the path
-- without it): the switch must reuse what was built, not build it again.
SET CONSTRAINTS ALL IMMEDIATE;
ALTER TABLE outbox.messages ADD COLUMN part_at timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE outbox.messages ADD CONSTRAINT messages_legacy_range CHECK (part_at < '1970-01-01 00:00:00+00') NOT VALID;
ALTER TABLE outbox.messages VALIDATE CONSTRAINT messages_legacy_range;
CREATE UNIQUE INDEX messages_legacy_pkey ON outbox.messages (id, part_at);
CREATE TEMP TABLE prepared AS SELECT 'outbox.messages_legacy_pkey'::regclass::oid AS ix;

-- The move: the existing tables become the first partition, nothing is copied.
SELECT is(outbox.use_partitioned_layout(), true, 'use_partitioned_layout() moves an existing install');
SELECT is((SELECT c.conindid FROM pg_constraint c WHERE c.conrelid = 'outbox.messages_legacy'::regclass AND c.contype = 'p'),
          (SELECT ix FROM prepared), 'the prepared (id, part_at) index became the legacy partition''s key');
SELECT is(outbox.layout(), 'partitioned', 'messages and events are now partitioned');
SELECT is(outbox.use_partitioned_layout(), false, 'a second call does nothing');
SELECT is((SELECT count(*)::int FROM outbox.messages), (SELECT count(*)::int FROM before_m), 'every message is still there');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE tableoid = 'outbox.messages_legacy'::regclass),
          (SELECT count(*)::int FROM before_m), '... in the legacy partition');
SELECT is((SELECT count(*)::int FROM outbox.message_keys), (SELECT count(*)::int FROM before_m),
          'every idempotency key is in outbox.message_keys');
-- re-apply the sql/ files (triggers, views, grants) as `outboxd migrate` does after the move
\set QUIET on
\ir ../../sql/00_layout.sql
\ir ../../sql/01_validate.sql
\ir ../../sql/02_wake.sql
\ir ../../sql/03_lifecycle.sql
\ir ../../sql/10_lease.sql
\ir ../../sql/11_complete.sql
\ir ../../sql/12_settings.sql
\ir ../../sql/20_admin.sql
\ir ../../sql/30_views.sql
\ir ../../sql/40_mirror.sql
\ir ../../sql/50_retention.sql
\ir ../../sql/90_grants.sql
SELECT ok(outbox.partitions_ensure(3) >= 0, 'partitions exist for now and ahead');
SELECT is((SELECT array_agg(DISTINCT a.attstattarget ORDER BY a.attstattarget) FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = format('outbox.%I', outbox.partition_name('messages',
                      date_bin((SELECT partition_period FROM outbox.settings), now(), '2000-01-01 00:00:00+00')))::regclass
              AND a.attnum > 0 AND NOT a.attisdropped),
          '{0,10}'::int[], 'a new partition gets the small statistics targets');

-- The producer INSERT is the same; a new row lands in the current partition.
CREATE FUNCTION pg_temp.ins(k text) RETURNS TABLE (id bigint, message_id text) LANGUAGE sql AS $$
    INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
    VALUES (ARRAY['a@example.com'], 'new', 'b', k) ON CONFLICT DO NOTHING RETURNING id, message_id $$;
CREATE TEMP TABLE n1 AS SELECT * FROM pg_temp.ins('fresh:1');
SELECT is((SELECT count(*)::int FROM n1), 1, 'INSERT ... ON CONFLICT DO NOTHING RETURNING id, message_id works');
SELECT cmp_ok((SELECT id FROM n1), '>', (SELECT max(id) FROM before_m), 'ids continue after the old table''s');
SELECT is((SELECT tableoid::regclass::text FROM outbox.messages WHERE id = (SELECT id FROM n1)),
          'outbox.' || outbox.partition_name('messages', date_bin((SELECT partition_period FROM outbox.settings), now(), '2000-01-01 00:00:00+00')),
          'a new message goes to the current partition');
SELECT is_empty($$SELECT * FROM pg_temp.ins('fresh:1')$$, 'the same key again inserts nothing');
SELECT is_empty($$SELECT * FROM pg_temp.ins('sent:old:1')$$, 'a key held by a message in another (the legacy) partition inserts nothing');
SELECT lives_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'nokey', 'b')$$,
    'a message without a key needs nothing more');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
                   VALUES (ARRAY['a@example.com'], 'x', 'b', 'fresh:2') ON CONFLICT (idempotency_key) DO NOTHING$$,
    '42P10', NULL, 'ON CONFLICT (idempotency_key) cannot name a conflict target on a partitioned table (see docs/sql.md)');
SELECT is((SELECT count(*)::int FROM outbox.events WHERE type = 'email.queued' AND message_id = (SELECT id FROM n1)), 1,
    'the queued event is written as before');

-- Claiming and completing across partitions.
SELECT is((SELECT count(*)::int FROM outbox.claim('p1', 1000, 60) c WHERE c.subject = 'new'), 1, 'claim finds the new message');

-- Retention: keep 7 days for sent/cancelled/published, 30 for failed/dead, in small batches.
CREATE TEMP TABLE pre AS SELECT * FROM outbox.messages;
SELECT ok(pg_try_advisory_lock(outbox.retention_lock_key()), 'this session purges');
CREATE TEMP TABLE runs AS
WITH RECURSIVE r(i, res) AS (
    SELECT 1, outbox.purge('7 days', '7 days', '30 days', '30 days', '7 days', 100)
    UNION ALL
    SELECT i + 1, outbox.purge('7 days', '7 days', '30 days', '30 days', '7 days', 100)
      FROM r WHERE (res ->> 'more')::boolean AND i < 200)
SELECT * FROM r;
SELECT is((SELECT (res ->> 'more')::boolean FROM runs ORDER BY i DESC LIMIT 1), false, 'retention finishes');
SELECT is((SELECT sum((res ->> 'dropped')::int)::int FROM runs), 2, 'both legacy partitions were dropped');
SELECT is(to_regclass('outbox.messages_legacy'), NULL, 'messages_legacy is gone');
SELECT is(to_regclass('outbox.events_legacy'), NULL, 'events_legacy is gone');

-- Nothing unfinished was lost: each such row moved forward with its id, state and content.
SELECT is(ARRAY(SELECT b.subject FROM pre b
                 WHERE b.state IN ('pending', 'sending')
                   AND NOT EXISTS (SELECT 1 FROM outbox.messages m
                                    WHERE m.id = b.id AND m.state = b.state AND m.message_id = b.message_id
                                      AND m.next_attempt_at = b.next_attempt_at AND m.attempts = b.attempts)),
          '{}'::text[], 'every pending, scheduled and sending message survives unchanged');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE subject LIKE '%:new:%'), 35, 'recent finished messages survive');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE subject LIKE 'failed:old%' OR subject LIKE 'dead:old%' OR subject LIKE 'sent:old%'),
          0, 'old finished messages are gone');
SELECT is(ARRAY(SELECT b.id FROM before_e b WHERE b.state = 'pending'
                 AND NOT EXISTS (SELECT 1 FROM outbox.events e WHERE e.id = b.id AND e.event_id = b.event_id AND e.state = 'pending')),
          '{}'::bigint[], 'every unpublished event survives');
SELECT is((SELECT count(*)::int FROM outbox.events e JOIN before_e b ON b.id = e.id WHERE b.state = 'published'), 0,
          'old published events are gone');
SELECT is((SELECT count(*)::int FROM outbox.message_recipients r WHERE NOT EXISTS
             (SELECT 1 FROM outbox.messages m WHERE m.id = r.message)), 0, 'recipient outcomes of dropped messages are removed');
SELECT is((SELECT count(*)::int FROM outbox.message_recipients r JOIN outbox.messages m ON m.id = r.message), (SELECT count(*)::int FROM outbox.messages m
           WHERE m.id IN (SELECT id FROM before_m)), 'those of surviving messages are kept');
SELECT is((SELECT count(*)::int FROM outbox.message_keys k WHERE NOT EXISTS (SELECT 1 FROM outbox.messages m WHERE m.id = k.message)), 0,
          'keys of dropped messages are released');
SELECT is_empty($$SELECT * FROM pg_temp.ins('pending:old:1')$$, 'a surviving message still holds its key after its move');
SELECT is((SELECT count(*)::int FROM pg_temp.ins('sent:old:1') x), 1, 'a dropped message''s key may be used again');

SELECT * FROM finish();
SELECT pg_advisory_unlock_all();
ROLLBACK;
