-- Role design: outbox_producer may insert and read status only; outbox_dispatcher may call
-- the lease functions and publish events, and nothing else.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(35);

TRUNCATE outbox.messages, outbox.events CASCADE;

SET LOCAL ROLE outbox_producer;
SELECT lives_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'Hi', 'Hello')$$,
    'producer: minimal insert');
SELECT lives_ok($$INSERT INTO outbox.messages (sender, recipients, cc, bcc, reply_to, subject, body_text, body_html, headers,
                                               idempotency_key, key, priority, not_before, max_attempts)
                  VALUES ('s@example.com', ARRAY['a@example.com'], ARRAY['c@example.com'], ARRAY['d@example.com'],
                          'r@example.com', 'All', 't', '<p>h</p>', '{"X-A": "1"}', 'roles-1', 'k', 1, now(), 3)$$,
    'producer: insert of every producer column');
SELECT is_empty($$INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
                  VALUES (ARRAY['a@example.com'], 'Hi', 'Hello', 'roles-1')
                  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, message_id$$,
    'producer: documented ON CONFLICT (idempotency_key) DO NOTHING statement works');
SELECT isnt_empty($$INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
                    VALUES (ARRAY['a@example.com'], 'Hi', 'Hello', 'roles-2')
                    ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, message_id$$,
    'producer: ... and returns id, message_id for a new key');
SELECT lives_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, topic, headers)
                  VALUES ('order', '42', 'OrderPaid', '{"total": 10}', 'orders', '{"a": "b"}')$$,
    'producer: domain event insert');
SELECT is((SELECT count(*)::int FROM outbox.message_status), 3, 'producer: reads message_status');
SELECT lives_ok($$SELECT * FROM outbox.recipient_status; SELECT * FROM outbox.queue_depth;
                  SELECT * FROM outbox.queue_health; SELECT * FROM outbox.mirror_lag$$, 'producer: reads every status view');
SELECT is(outbox.cancel((SELECT min(id) FROM outbox.message_status)), true, 'producer: may cancel');
SELECT is(outbox.requeue((SELECT min(id) FROM outbox.message_status)), false, 'producer: may call requeue');

-- The commit-time wake-up trigger runs as the producer too (fired here without committing).
RESET ROLE;
INSERT INTO outbox.dispatcher_idle (owner, channel) VALUES ('roles-idle', 'outbox_messages'), ('roles-idle', 'outbox_events');
SET LOCAL ROLE outbox_producer;
SELECT lives_ok($$SET CONSTRAINTS ALL IMMEDIATE$$, 'producer: the deferred wake-up triggers run with producer rights');
SET CONSTRAINTS ALL DEFERRED;

SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, state) VALUES (ARRAY['a@example.com'], 'b', 'sent')$$,
    '42501', NULL, 'producer: cannot insert state');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, attempts) VALUES (ARRAY['a@example.com'], 'b', 5)$$,
    '42501', NULL, 'producer: cannot insert attempts');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, message_id) VALUES (ARRAY['a@example.com'], 'b', '<x@y.z>')$$,
    '42501', NULL, 'producer: cannot insert message_id');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text, next_attempt_at) VALUES (ARRAY['a@example.com'], 'b', now())$$,
    '42501', NULL, 'producer: cannot insert next_attempt_at');
SELECT throws_ok($$UPDATE outbox.messages SET state = 'sent'$$, '42501', NULL, 'producer: cannot UPDATE state');
SELECT throws_ok($$UPDATE outbox.messages SET subject = 'x'$$, '42501', NULL, 'producer: cannot UPDATE content');
SELECT throws_ok($$DELETE FROM outbox.messages$$, '42501', NULL, 'producer: cannot DELETE');
SELECT throws_ok($$SELECT body_text FROM outbox.messages$$, '42501', NULL, 'producer: cannot read message bodies');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, message_id) VALUES ('email', '1', 'x', '{}', 1)$$,
    '42501', NULL, 'producer: cannot insert lifecycle columns of events');
SELECT throws_ok($$UPDATE outbox.events SET state = 'published'$$, '42501', NULL, 'producer: cannot mark events published');
SELECT throws_ok($$SELECT * FROM outbox.claim('p', 1, 60)$$, '42501', NULL, 'producer: cannot claim');
SELECT throws_ok($$SELECT * FROM outbox.complete('p', '[]')$$, '42501', NULL, 'producer: cannot complete');
SELECT throws_ok($$SELECT outbox.set_idle('p', true)$$, '42501', NULL, 'producer: cannot set_idle');
SELECT throws_ok($$UPDATE outbox.settings SET lifecycle_events = false$$, '42501', NULL, 'producer: cannot change settings');
RESET ROLE;

SET LOCAL ROLE outbox_dispatcher;
SELECT is((SELECT count(*)::int FROM outbox.claim('d', 10, 60)), 2, 'dispatcher: claim');
SELECT is((SELECT count(*)::int FROM outbox.complete('d', (SELECT jsonb_agg(jsonb_build_object('id', id, 'attempt', 1, 'outcome', 'sent'))
                                                          FROM outbox.message_status WHERE state = 'sending'))), 2,
    'dispatcher: complete');
SELECT lives_ok($$SELECT outbox.renew('d', '{}', 60), outbox.release('d', '{}'), outbox.release_owner('d'),
                         outbox.renew('d', '{}', '{}', 60), outbox.release('d', '{}', '{}'),
                         outbox.set_idle('d', true), outbox.set_idle('d', false)$$, 'dispatcher: renew, release, release_owner, set_idle');
SELECT lives_ok($$SELECT id, txid, event_id, aggregate_type, aggregate_id, type, payload, topic, headers
                    FROM outbox.events WHERE state = 'pending' AND txid < pg_snapshot_xmin(pg_current_snapshot())
                   ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED$$, 'dispatcher: reads events in commit order');
SELECT lives_ok($$UPDATE outbox.events SET state = 'published', published_at = now(), kafka_partition = 0, kafka_offset = 1,
                         last_error = NULL WHERE type = 'OrderPaid'$$, 'dispatcher: marks events published');
SELECT is((SELECT count(*)::int FROM outbox.queue_depth), 6, 'dispatcher: reads the views');
SELECT throws_ok($$UPDATE outbox.events SET payload = '{}'$$, '42501', NULL, 'dispatcher: cannot rewrite event payloads');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, body_text) VALUES (ARRAY['a@example.com'], 'b')$$,
    '42501', NULL, 'dispatcher: cannot INSERT messages');
SELECT throws_ok($$DELETE FROM outbox.messages$$, '42501', NULL, 'dispatcher: cannot DELETE messages');
SELECT throws_ok($$UPDATE outbox.messages SET state = 'sent'$$, '42501', NULL, 'dispatcher: cannot UPDATE messages directly');
SELECT throws_ok($$DROP TABLE outbox.messages$$, '42501', NULL, 'dispatcher: cannot DROP');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
