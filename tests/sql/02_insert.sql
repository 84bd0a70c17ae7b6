-- Producer inserts: the documented minimal statements, what outboxd fixes at insert
-- (message_id, next_attempt_at), idempotency keys, the email.queued event, and events rows.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(42);

TRUNCATE outbox.messages, outbox.events CASCADE;

-- The minimal email of the public contract.
SELECT lives_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'Hi', 'Hello')$$,
    'minimal INSERT of the contract works');
SELECT matches((SELECT message_id FROM outbox.messages WHERE subject = 'Hi'),
    '^<[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}@outboxd\.invalid>$',
    'message_id is <uuid@outboxd.invalid> without a sender');
SELECT is((SELECT next_attempt_at FROM outbox.messages WHERE subject = 'Hi'), now(), 'next_attempt_at = now() at insert');
SELECT row_eq($$SELECT state, attempts, cc, bcc, headers, priority, max_attempts, outcome_unknown, lease_owner
                 FROM outbox.messages WHERE subject = 'Hi'$$,
    ROW('pending'::text, 0, '{}'::text[], '{}'::text[], '{}'::jsonb, 0, 10, false, NULL::text),
    'defaults: pending, 0 attempts, no cc/bcc/headers, priority 0, 10 attempts, no lease');

-- message_id domain: the sender's, else the configured one; unique per row.
INSERT INTO outbox.messages (sender, recipients, subject, body_text)
VALUES ('Acme Billing <Billing@Mail.ACME.example>', ARRAY['a@example.com'], 'sender-domain', 'b');
SELECT matches((SELECT message_id FROM outbox.messages WHERE subject = 'sender-domain'), '@mail\.acme\.example>$',
    'message_id takes the (lower-cased) domain of the sender');
UPDATE outbox.settings SET message_id_domain = 'mail.example.net';
INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'setting-domain', 'b');
SELECT matches((SELECT message_id FROM outbox.messages WHERE subject = 'setting-domain'), '@mail\.example\.net>$',
    'message_id takes outbox.settings.message_id_domain without a sender');
INSERT INTO outbox.messages (recipients, subject, body_text)
SELECT ARRAY['a@example.com'], 'many', 'b' FROM generate_series(1, 50);
SELECT is((SELECT count(DISTINCT message_id)::int FROM outbox.messages WHERE subject = 'many'), 50,
    'every message gets its own message_id');

-- not_before schedules the first attempt.
INSERT INTO outbox.messages (recipients, subject, body_text, not_before)
VALUES (ARRAY['a@example.com'], 'later', 'b', now() + interval '1 hour');
SELECT is((SELECT next_attempt_at FROM outbox.messages WHERE subject = 'later'), now() + interval '1 hour',
    'next_attempt_at = not_before');

-- Accepted variants.
SELECT lives_ok($$INSERT INTO outbox.messages (recipients, subject, body_html) VALUES (ARRAY['a@example.com'], 'html', '<p>x</p>')$$,
    'an HTML-only body is accepted');
SELECT lives_ok($$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'empty', '')$$,
    'an empty text body is accepted');
SELECT lives_ok($$INSERT INTO outbox.messages (sender, reply_to, recipients, body_text, headers)
                  VALUES ('"Doe, John" <j@example.org>', 'Support <help@example.org>', ARRAY['a@example.com'], 'b',
                          '{"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.org>"}')$$,
    'display-name sender and reply_to, custom headers are accepted');
SELECT lives_ok($$INSERT INTO outbox.messages (recipients, cc, bcc, headers, subject, body_text)
                  VALUES (ARRAY['a@example.com'], NULL, NULL, NULL, NULL, 'nulls')$$,
    'NULL cc, bcc, headers and subject mean none');
SELECT row_eq($$SELECT cc, bcc, headers, subject FROM outbox.messages WHERE body_text = 'nulls'$$,
    ROW('{}'::text[], '{}'::text[], '{}'::jsonb, ''::text), 'NULLs are stored as empty values');

-- Duplicate addresses are dropped, the first occurrence wins.
INSERT INTO outbox.messages (recipients, cc, bcc, subject, body_text)
VALUES (ARRAY['a@example.com', 'b@example.com', 'a@example.com'], ARRAY['b@example.com', 'c@example.com'],
        ARRAY['a@example.com', 'c@example.com', 'd@example.com'], 'dups', 'b');
SELECT row_eq($$SELECT recipients, cc, bcc FROM outbox.messages WHERE subject = 'dups'$$,
    ROW(ARRAY['a@example.com', 'b@example.com'], ARRAY['c@example.com'], ARRAY['d@example.com']),
    'duplicates across recipients, cc and bcc are removed');

-- Idempotency keys.
INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
VALUES (ARRAY['a@example.com'], 'idem', 'b', 'order-42-receipt');
SELECT throws_ok($$INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
                   VALUES (ARRAY['a@example.com'], 'idem', 'b', 'order-42-receipt')$$,
    '23505', NULL, 'a repeated idempotency_key raises unique_violation');
SELECT is_empty($$INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
                  VALUES (ARRAY['a@example.com'], 'idem', 'b', 'order-42-receipt')
                  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id$$,
    'ON CONFLICT (idempotency_key) DO NOTHING inserts nothing');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE idempotency_key = 'order-42-receipt'), 1,
    'one row per idempotency key');
SELECT isnt_empty($$INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
                    VALUES (ARRAY['a@example.com'], 'idem', 'b', 'order-43-receipt')
                    ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, message_id$$,
    'ON CONFLICT DO NOTHING inserts a new key and returns id, message_id');

-- email.queued lifecycle events, in the same transaction, one per inserted row.
SELECT is((SELECT count(*)::int FROM outbox.events WHERE type = 'email.queued'),
          (SELECT count(*)::int FROM outbox.messages), 'one email.queued event per message');
SELECT results_eq($$SELECT e.aggregate_type, e.aggregate_id, e.message_id, e.payload, e.state, e.txid = pg_current_xact_id()
                 FROM outbox.events e JOIN outbox.messages m ON m.id = e.message_id
                WHERE m.subject = 'Hi' AND e.type = 'email.queued'$$,
    $$SELECT 'email'::text, m.message_id, m.id,
             jsonb_build_object('id', m.id, 'message_id', m.message_id, 'state', 'pending', 'attempts', 0,
                                'code', NULL, 'error', NULL), 'pending'::text, true
        FROM outbox.messages m WHERE m.subject = 'Hi'$$,
    'email.queued: aggregate email, key = message_id, payload {id, message_id, state, attempts, code, error}');
UPDATE outbox.settings SET lifecycle_events = false;
INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'quiet', 'b');
SELECT is((SELECT count(*)::int FROM outbox.events e JOIN outbox.messages m ON m.id = e.message_id
            WHERE m.subject = 'quiet'), 0, 'no lifecycle event when lifecycle_events is off');
UPDATE outbox.settings SET lifecycle_events = true;
SELECT is_empty($$INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
                  VALUES (ARRAY['a@example.com'], 'idem', 'b', 'order-42-receipt')
                  ON CONFLICT DO NOTHING RETURNING id$$,
    'conflicting insert without a conflict target returns no row');
SELECT is((SELECT count(*)::int FROM outbox.events e JOIN outbox.messages m ON m.id = e.message_id
            WHERE m.idempotency_key = 'order-42-receipt'), 1, 'a skipped duplicate writes no event');

-- Domain events.
SELECT lives_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES ('order', '42', 'OrderPaid', '{"total": 10}')$$,
    'minimal domain event of the contract works');
SELECT row_eq($$SELECT state, headers, topic, message_id, published_at, txid = pg_current_xact_id(), event_id IS NOT NULL
                 FROM outbox.events WHERE type = 'OrderPaid'$$,
    ROW('pending'::text, '{}'::jsonb, NULL::text, NULL::bigint, NULL::timestamptz, true, true),
    'event defaults: pending, no headers/topic, txid of the inserting transaction, an event_id');
SELECT lives_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, topic, headers)
                  VALUES ('order', '42', 'OrderShipped', 'null', 'orders.v1', '{"trace": "abc"}')$$,
    'event with topic and headers');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES ('', '42', 'T', '{}')$$,
    '23514', 'outbox.events.aggregate_type: required and non-empty', 'events: empty aggregate_type');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES (NULL, '42', 'T', '{}')$$,
    '23514', 'outbox.events.aggregate_type: required and non-empty', 'events: NULL aggregate_type');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES ('order', NULL, 'T', '{}')$$,
    '23514', 'outbox.events.aggregate_id: required', 'events: NULL aggregate_id');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES ('order', '42', '', '{}')$$,
    '23514', 'outbox.events.type: required and non-empty', 'events: empty type');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES ('order', '42', E'T\r\nX', '{}')$$,
    '23514', 'outbox.events.type: type and aggregate_type may not contain CR or LF', 'events: CRLF in type');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES ('order', '42', 'T', NULL)$$,
    '23514', 'outbox.events.payload: required (use ''null''::jsonb for an empty payload)', 'events: NULL payload');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload)
                   VALUES ('order', '42', 'T', jsonb_build_object('x', repeat('y', 1000001)))$$,
    '23514', 'outbox.events.payload: larger than 1000000 bytes (Kafka''s default message limit)', 'events: oversized payload');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, topic) VALUES ('order', '42', 'T', '{}', 'bad topic')$$,
    '23514', 'outbox.events.topic: not a valid Kafka topic name ([A-Za-z0-9._-], 1-249 characters)', 'events: bad topic');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, headers) VALUES ('order', '42', 'T', '{}', '{"n": 1}')$$,
    '23514', 'outbox.events.headers: value of "n" must be a string', 'events: non-string header');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, headers) VALUES ('order', '42', 'T', '{}', '"x"')$$,
    '23514', 'outbox.events.headers: must be a JSON object of strings', 'events: headers not an object');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, headers) VALUES ('order', '42', 'T', '{}', '{"ID": "x"}')$$,
    '23514', 'outbox.events.headers: header "ID" is set by outboxd', 'events: the id header is reserved');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, headers) VALUES ('order', '42', 'T', '{}', '{"a": "x\ny"}')$$,
    '23514', 'outbox.events.headers: value of "a" contains CR or LF', 'events: header value with LF');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, state) VALUES ('order', '42', 'T', '{}', 'sent')$$,
    '23514', 'new row for relation "events" violates check constraint "events_state_valid"', 'events: unknown state');
SELECT throws_ok($$UPDATE outbox.events SET headers = '{"a": 1}' WHERE type = 'OrderPaid'$$,
    '23514', 'outbox.events.headers: value of "a" must be a string', 'events: UPDATE of headers validated');

-- Identity ids are assigned by the database only.
SELECT throws_ok($$INSERT INTO outbox.messages (id, recipients, body_text) VALUES (1, ARRAY['a@example.com'], 'b')$$,
    '428C9', NULL, 'messages.id cannot be supplied');
SELECT throws_ok($$INSERT INTO outbox.events (id, aggregate_type, aggregate_id, type, payload) VALUES (1, 'o', '1', 'T', '{}')$$,
    '428C9', NULL, 'events.id cannot be supplied');

SELECT * FROM finish();
ROLLBACK;
