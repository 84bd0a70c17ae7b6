-- The web console's functions: console_overview, console_message, console_search return what
-- the pages show, hide bodies unless asked, stay within their bounds, and the dispatcher's
-- role may call them (and requeue/cancel) while the producer's may not read through them.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(16);

TRUNCATE outbox.messages, outbox.events, outbox.dispatcher_idle CASCADE;

INSERT INTO outbox.messages (recipients, cc, bcc, subject, body_text, body_html, headers) VALUES
    (ARRAY['Alice@Example.com'], ARRAY['cc@example.com'], ARRAY['hidden@example.com'], 'failed one', 'secret body', '<p>x</p>', '{"X-A": "1"}'),
    (ARRAY['bob@example.org'], '{}', '{}', 'sent one', 'b', NULL, '{}'),
    (ARRAY['carol@example.org'], '{}', '{}', 'dead one', 'b', NULL, '{}');
UPDATE outbox.messages SET state = 'failed', attempts = 1, last_smtp_code = 550, last_error = '550 no such user',
       updated_at = now() - interval '1 minute' WHERE subject = 'failed one';
UPDATE outbox.messages SET state = 'dead', attempts = 10, last_smtp_code = 451, last_error = '451 later',
       updated_at = now() WHERE subject = 'dead one';
UPDATE outbox.messages SET state = 'sent', attempts = 1, last_smtp_code = 250,
       sent_at = created_at + interval '1.5 seconds' WHERE subject = 'sent one';
INSERT INTO outbox.message_recipients (message, address, kind, state, smtp_code, last_error, attempts)
SELECT id, 'Alice@Example.com', 'to', 'failed', 550, '550 no such user', 1 FROM outbox.messages WHERE subject = 'failed one';

-- overview
SELECT is(jsonb_array_length(outbox.console_overview() -> 'failures'), 2, 'overview: both failed and dead');
SELECT is(outbox.console_overview() -> 'failures' -> 0 ->> 'subject', 'dead one', 'overview: newest failure first');
SELECT is(outbox.console_overview() -> 'failures' -> 1 -> 'replies' -> 0 ->> 'last_error', '550 no such user',
    'overview: per-recipient reply');
SELECT is(jsonb_array_length(outbox.console_overview(1) -> 'failures'), 1, 'overview: p_limit bounds the list');
SELECT is(outbox.console_overview() -> 'buckets' -> 0 ->> 'sent', '1', 'overview: one sent in the newest bucket');
SELECT is((outbox.console_overview() -> 'buckets' -> 0 ->> 'p50')::numeric, 1.5, 'overview: latency in seconds');

-- message
SELECT is(outbox.console_message((SELECT id FROM outbox.messages WHERE subject = 'failed one'), NULL)
    -> 'message' ->> 'last_error', '550 no such user', 'message by id');
SELECT is(outbox.console_message(NULL, (SELECT message_id FROM outbox.messages WHERE subject = 'failed one'))
    -> 'message' ->> 'subject', 'failed one', 'message by Message-ID');
SELECT ok(NOT (outbox.console_message((SELECT id FROM outbox.messages WHERE subject = 'failed one'), NULL)
    -> 'message' ?| ARRAY['body_text', 'body_html', 'headers']), 'no body or headers unless asked');
SELECT is(outbox.console_message((SELECT id FROM outbox.messages WHERE subject = 'failed one'), NULL, true)
    -> 'message' ->> 'body_text', 'secret body', 'the body when asked');
SELECT is(jsonb_array_length(outbox.console_message((SELECT id FROM outbox.messages WHERE subject = 'failed one'), NULL)
    -> 'recipients'), 3, 'every to/cc/bcc recipient');
SELECT is(outbox.console_message(-1, '<none@x>'), NULL, 'no such message: NULL');

-- search
SELECT is(outbox.console_search('alice@EXAMPLE') -> 'messages' -> 0 ->> 'subject', 'failed one',
    'search: part of an address, any case');
SELECT is(jsonb_array_length(outbox.console_search('example.org') -> 'messages'), 2, 'search: several matches');
SELECT is(jsonb_array_length(outbox.console_search('') -> 'messages'), 0, 'search: empty text finds nothing');

-- privileges
SELECT ok(has_function_privilege('outbox_dispatcher', 'outbox.console_overview(integer, integer)', 'EXECUTE')
      AND has_function_privilege('outbox_dispatcher', 'outbox.requeue(bigint)', 'EXECUTE')
      AND has_function_privilege('outbox_dispatcher', 'outbox.cancel(bigint)', 'EXECUTE')
      AND NOT has_function_privilege('outbox_producer', 'outbox.console_message(bigint, text, boolean, integer)', 'EXECUTE'),
    'the dispatcher role runs the console; the producer role cannot read through it');

SELECT * FROM finish();
ROLLBACK;
