-- Producer input outboxd must refuse: events posing as outboxd's own lifecycle events, and
-- events aimed at Kafka's internal topics. 23514 naming the column, as every refusal.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(13);

SET LOCAL ROLE outbox_producer;
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload)
                   VALUES ('email', '1', 'email.sent', '{}')$$,
    '23514', 'outbox.events.type: email.* is reserved for outboxd''s own lifecycle events',
    'a producer cannot write an email.sent lifecycle event');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload)
                   VALUES ('order', '1', 'email.queued', '{}')$$,
    '23514', NULL, 'nor email.queued under another aggregate type');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, topic)
                   VALUES ('order', '1', 'order.paid', '{}', '__consumer_offsets')$$,
    '23514', 'outbox.events.topic: names starting with "__" are Kafka''s internal topics (__consumer_offsets, __transaction_state)',
    '__consumer_offsets refused');
SELECT throws_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, topic)
                   VALUES ('order', '1', 'order.paid', '{}', '__transaction_state')$$,
    '23514', NULL, '__transaction_state refused');
SELECT lives_ok($$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, topic)
                  VALUES ('order', '1', 'emailing.done', '{}', '_single.underscore')$$,
    'a type that only starts like email and a topic with one underscore are fine');
RESET ROLE;
-- outboxd's own lifecycle events still go in (written by a message insert)
UPDATE outbox.settings SET lifecycle_events = true;
INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'fi', 'b');
SELECT is((SELECT count(*)::int FROM outbox.events e JOIN outbox.messages m ON m.id = e.message_id
            WHERE m.subject = 'fi' AND e.type = 'email.queued'), 1, 'outboxd''s email.queued is still written');

-- messages: refused at INSERT, naming the column, what the dispatcher would fail later
SELECT throws_ok(format($$INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
                          VALUES (ARRAY['a@example.com'], 's', 'b', %L)$$, repeat('k', 3000)),
    '23514', 'outbox.messages.idempotency_key: longer than 255 bytes', 'a 3 kB idempotency key: 23514, not 54000');
SELECT lives_ok(format($$INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
                         VALUES (ARRAY['a@example.com'], 's', 'b', %L)$$, repeat('k', 255)),
    'a 255-byte key is fine');
SELECT throws_ok(format($$INSERT INTO outbox.messages (recipients, subject, body_text, headers)
                          VALUES (ARRAY['a@example.com'], 's', 'b', jsonb_build_object('X-Big', %L::text))$$,
                        repeat('word ', 200000)),
    '23514', 'outbox.messages.headers: value of "X-Big" is longer than 16384 bytes', 'a 1 MB header value refused');
SELECT throws_ok(format($$INSERT INTO outbox.messages (recipients, subject, body_text, headers)
                          VALUES (ARRAY['a@example.com'], 's', 'b', jsonb_build_object('X-Long', %L::text))$$,
                        repeat('w', 995)),
    '23514', 'outbox.messages.headers: value of "X-Long" has a word too long to fold into a 998-octet line',
    'an ASCII word the dispatcher cannot fold refused');
SELECT lives_ok(format($$INSERT INTO outbox.messages (recipients, subject, body_text, headers)
                         VALUES (ARRAY['a@example.com'], 's', 'b', jsonb_build_object('X-Long', %L::text))$$,
                       repeat('w', 990)),
    'a word that fits (name + ": " + 990 octets) is fine');
-- folding moves a run of blanks with the word after it (mime.c): it counts in that word
SELECT throws_ok(format($$INSERT INTO outbox.messages (recipients, subject, body_text, headers)
                          VALUES (ARRAY['a@example.com'], 's', 'b', jsonb_build_object('X-Long', %L::text))$$,
                        'a' || repeat(' ', 30) || repeat('w', 970)),
    '23514', 'outbox.messages.headers: value of "X-Long" has a word too long to fold into a 998-octet line',
    'a word that fits only without the blanks before it refused');
SELECT throws_ok(format($$INSERT INTO outbox.messages (recipients, subject, body_text, headers)
                          VALUES (ARRAY['a@example.com'], 's', 'b', jsonb_build_object('X-Long', %L::text))$$,
                        'a' || repeat(' ', 1000)),
    '23514', 'outbox.messages.headers: value of "X-Long" has a word too long to fold into a 998-octet line',
    'a run of 1000 trailing blanks refused');

SELECT * FROM finish();
ROLLBACK;
