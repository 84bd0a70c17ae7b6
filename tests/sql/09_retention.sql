-- outbox.purge on the plain layout: what goes (finished rows past their state's retention),
-- what never goes (pending, sending, unpublished events, whatever their age), 0 keeps
-- forever, and only the holder of the retention lock may purge (one dispatcher at a time).
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT plan(23);

TRUNCATE outbox.messages, outbox.events CASCADE;
UPDATE outbox.retention_state SET cursor_id = 0;

-- 20 ancient rows per state (finished 100 days ago) and 5 recent ones per state.
INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
SELECT ARRAY['a@example.com'], s || ':' || age || ':' || i, 'b', s || ':' || age || ':' || i
  FROM unnest(ARRAY['pending', 'sending', 'sent', 'failed', 'dead', 'cancelled']) s,
       unnest(ARRAY['old', 'new']) age, generate_series(1, 20) i
 WHERE age = 'old' OR i <= 5;
UPDATE outbox.messages m
   SET state = split_part(m.subject, ':', 1),
       lease_owner = CASE WHEN split_part(m.subject, ':', 1) = 'sending' THEN 'w' END,
       lease_expires_at = CASE WHEN split_part(m.subject, ':', 1) = 'sending' THEN now() + interval '1 hour' END,
       created_at = CASE WHEN split_part(m.subject, ':', 2) = 'old' THEN now() - interval '101 days' ELSE now() - interval '1 hour' END,
       updated_at = CASE WHEN split_part(m.subject, ':', 2) = 'old' THEN now() - interval '100 days' ELSE now() - interval '1 hour' END;
INSERT INTO outbox.message_recipients (message, address, kind, state)
SELECT id, 'a@example.com', 'to', 'sent' FROM outbox.messages;
-- events: the queued event of each message; published ones 100 days ago, some never published
UPDATE outbox.events e SET created_at = now() - interval '101 days',
       state = CASE WHEN e.id % 3 = 0 THEN 'pending' WHEN e.id % 3 = 1 THEN 'published' ELSE 'failed' END,
       published_at = CASE WHEN e.id % 3 = 1 THEN now() - interval '100 days' END;
CREATE TEMP TABLE before_m AS SELECT id, state, subject FROM outbox.messages;
CREATE TEMP TABLE before_e AS SELECT id, state FROM outbox.events;

-- Not the lock holder: refused.
SELECT throws_ok($$SELECT outbox.purge('7 days', '7 days', '30 days', '30 days', '7 days', 100)$$, '55P03',
    'outbox.purge: this session does not hold the retention lock', 'purge without the retention lock is refused');
-- Another session holds the lock: this one cannot take it, and still cannot purge.
SELECT is(dblink_connect('ret', format('dbname=%s user=%s port=%s host=%s', current_database(), current_user, current_setting('port'),
          coalesce(nullif(btrim(split_part(current_setting('unix_socket_directories'), ',', 1)), ''), '127.0.0.1'))),
          'OK', 'second session');
SELECT is((SELECT x FROM dblink('ret', 'SELECT pg_try_advisory_lock(outbox.retention_lock_key())') AS t(x boolean)), true,
    'the other session takes the retention lock');
SELECT is(pg_try_advisory_lock(outbox.retention_lock_key()), false, 'while it holds it, this session cannot');
SELECT throws_ok($$SELECT outbox.purge('7 days', '7 days', '30 days', '30 days', '7 days', 100)$$, '55P03', NULL,
    'and cannot purge');
SELECT is((SELECT x FROM dblink('ret', 'SELECT pg_advisory_unlock_all()::text') AS t(x text)), '', 'the other session lets go');
SELECT is(dblink_disconnect('ret'), 'OK', 'and leaves');
SELECT is(pg_try_advisory_lock(outbox.retention_lock_key()), true, 'once released, this session becomes the purger');

SELECT throws_ok($$SELECT outbox.purge('7 days', '7 days', '30 days', '30 days', '7 days', 0)$$, '22023', NULL, 'p_limit checked');
SELECT throws_ok($$SELECT outbox.purge('-1 day', '7 days', '30 days', '30 days', '7 days', 10)$$, '22023', NULL, 'negative retention refused');

-- Keep dead forever (0); everything else 7 / 30 days; small batches until the pass ends.
CREATE TEMP TABLE runs AS
WITH RECURSIVE r(i, res) AS (
    SELECT 1, outbox.purge('7 days', '7 days', '30 days', '0', '7 days', 17)
    UNION ALL
    SELECT i + 1, outbox.purge('7 days', '7 days', '30 days', '0', '7 days', 17)
      FROM r WHERE (res ->> 'more')::boolean AND i < 100)
SELECT * FROM r;
SELECT cmp_ok((SELECT count(*)::int FROM runs), '>', 3, 'the work is done in several small batches');
SELECT is((SELECT (res ->> 'more')::boolean FROM runs ORDER BY i DESC LIMIT 1), false, 'the pass ends');

SELECT is(ARRAY(SELECT b.subject FROM before_m b WHERE b.state IN ('pending', 'sending')
                  AND NOT EXISTS (SELECT 1 FROM outbox.messages m WHERE m.id = b.id)), '{}'::text[],
    'no pending or sending message is removed, however old');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE state IN ('pending', 'sending')), 50,
    'all 50 unfinished messages are still there');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE state IN ('sent', 'cancelled', 'failed') AND subject LIKE '%:old:%'), 0,
    'sent, cancelled and failed messages past retention are removed');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE state = 'dead'), 25, 'retention 0 keeps dead messages forever');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE subject LIKE '%:new:%'), 30, 'recent finished messages stay');
SELECT is((SELECT count(*)::int FROM outbox.message_recipients r WHERE NOT EXISTS
             (SELECT 1 FROM outbox.messages m WHERE m.id = r.message)), 0, 'their recipient outcomes go with them');
SELECT is(ARRAY(SELECT b.id FROM before_e b WHERE b.state = 'pending'
                  AND NOT EXISTS (SELECT 1 FROM outbox.events e WHERE e.id = b.id)), '{}'::bigint[],
    'no unpublished event is removed, even when its message is gone');
SELECT is((SELECT count(*)::int FROM outbox.events WHERE state <> 'pending'), 0, 'published and failed events past retention go');
SELECT is((SELECT removed_total FROM outbox.retention_state WHERE tbl = 'messages'),
          (SELECT count(*) FROM before_m) - (SELECT count(*) FROM outbox.messages), 'removed_total counts the messages removed');
SELECT isnt((SELECT last_pass_at FROM outbox.retention_state WHERE tbl = 'messages'), NULL, 'the time of the last pass is recorded');

SELECT is((SELECT (outbox.purge('7 days', '7 days', '30 days', '30 days', '7 days', 1000) -> 'removed' -> 'messages' ->> 'dead'))::int, 20,
    'with dead kept 30 days, the old dead rows go on the next pass');

SELECT * FROM finish();
SELECT pg_advisory_unlock_all();
ROLLBACK;
