-- outbox.complete: sent / retry / failed / dead outcomes, per-recipient rows, lifecycle events,
-- fencing on owner and attempt, and refusal of malformed batches.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(29);

TRUNCATE outbox.messages, outbox.events CASCADE;

INSERT INTO outbox.messages (recipients, cc, subject, body_text, max_attempts) VALUES
    (ARRAY['a@example.com'], ARRAY['b@example.com'], 'S', 'b', 10),
    (ARRAY['a@example.com'], '{}', 'R', 'b', 10),
    (ARRAY['a@example.com'], '{}', 'F', 'b', 10),
    (ARRAY['a@example.com'], '{}', 'X', 'b', 1),
    (ARRAY['a@example.com'], '{}', 'K', 'b', 10),
    (ARRAY['a@example.com'], '{}', 'W', 'b', 10),
    (ARRAY['a@example.com', 'c@example.com'], '{}', 'P', 'b', 10);
CREATE TEMP TABLE m AS SELECT subject AS s, id FROM outbox.messages;
SELECT is((SELECT count(*)::int FROM outbox.claim('w1', 100, 60)), 7, 'all seven claimed by w1');

SELECT throws_ok($$SELECT outbox.complete('w1', '{}')$$, '22023', 'outbox.complete: p_results must be a JSON array',
    'p_results must be an array');
SELECT throws_ok($$SELECT outbox.complete('w1', '[{"id": 1, "attempt": 1, "outcome": "bogus"}]')$$, '22023', NULL,
    'an unknown outcome refuses the batch');
SELECT throws_ok($$SELECT outbox.complete('w1', '[{"id": 1, "outcome": "sent"}]')$$, '22023', NULL,
    'a result without attempt refuses the batch');
SELECT throws_ok($$SELECT outbox.complete('w1', '[{"id": 1, "attempt": 1, "outcome": "sent", "recipients": [{"address": "a@example.com", "kind": "x"}]}]')$$,
    '22023', NULL, 'a recipient with an unknown kind refuses the batch');
SELECT throws_ok($$SELECT outbox.complete('', '[]')$$, '22023', 'outbox.complete: p_owner is required', 'complete needs an owner');

CREATE TEMP TABLE applied AS
SELECT * FROM outbox.complete('w1', (SELECT jsonb_agg(r) FROM (VALUES
    (jsonb_build_object('id', (SELECT id FROM m WHERE s = 'S'), 'attempt', 1, 'outcome', 'sent', 'code', 250,
        'recipients', jsonb_build_array(
            jsonb_build_object('address', 'a@example.com', 'kind', 'to', 'state', 'sent', 'code', 250),
            jsonb_build_object('address', 'b@example.com', 'kind', 'cc', 'state', 'failed', 'code', 550,
                               'error', '550 no such user')))),
    (jsonb_build_object('id', (SELECT id FROM m WHERE s = 'R'), 'attempt', 1, 'outcome', 'retry', 'code', 451,
        'error', '451 try later', 'retry_in_ms', 60000, 'unknown', true,
        'recipients', jsonb_build_array(jsonb_build_object('address', 'a@example.com', 'kind', 'to', 'state', 'pending', 'code', 451)))),
    (jsonb_build_object('id', (SELECT id FROM m WHERE s = 'F'), 'attempt', 1, 'outcome', 'failed', 'code', 554,
        'error', '554 rejected')),
    (jsonb_build_object('id', (SELECT id FROM m WHERE s = 'X'), 'attempt', 1, 'outcome', 'retry', 'code', 421,
        'error', '421 busy', 'retry_in_ms', 1000)),
    (jsonb_build_object('id', (SELECT id FROM m WHERE s = 'W'), 'attempt', 2, 'outcome', 'sent', 'code', 250,
        'recipients', jsonb_build_array(jsonb_build_object('address', 'a@example.com', 'state', 'sent')))),
    (jsonb_build_object('id', (SELECT id FROM m WHERE s = 'P'), 'attempt', 1, 'outcome', 'retry', 'code', 451,
        'retry_in_ms', 0,
        'recipients', jsonb_build_array(jsonb_build_object('address', 'a@example.com', 'state', 'sent', 'code', 250),
                                        jsonb_build_object('address', 'c@example.com', 'state', 'pending', 'code', 451))))
    ) AS x(r))) AS id;
SELECT set_eq($$SELECT id FROM applied$$, $$SELECT id FROM m WHERE s IN ('S', 'R', 'F', 'X', 'P')$$,
    'complete returns the ids whose results applied (not the wrong-attempt one)');

SELECT row_eq($$SELECT state, sent_at, last_smtp_code, last_error, lease_owner, lease_expires_at, outcome_unknown
                 FROM outbox.messages WHERE subject = 'S'$$,
    ROW('sent'::text, now(), 250, NULL::text, NULL::text, NULL::timestamptz, false), 'sent: state, sent_at, code, lease cleared');
SELECT row_eq($$SELECT state, attempts, next_attempt_at, last_smtp_code, last_error, outcome_unknown, lease_owner
                 FROM outbox.messages WHERE subject = 'R'$$,
    ROW('pending'::text, 1, now() + interval '60 seconds', 451, '451 try later'::text, true, NULL::text),
    'retry: pending again after retry_in_ms, error and outcome_unknown kept');
SELECT row_eq($$SELECT state, last_smtp_code, last_error, sent_at FROM outbox.messages WHERE subject = 'F'$$,
    ROW('failed'::text, 554, '554 rejected'::text, NULL::timestamptz), 'failed: permanent failure recorded');
SELECT row_eq($$SELECT state, attempts, last_smtp_code FROM outbox.messages WHERE subject = 'X'$$,
    ROW('dead'::text, 1, 421), 'retry with attempts exhausted: dead');
SELECT row_eq($$SELECT state, lease_owner, last_smtp_code FROM outbox.messages WHERE subject = 'W'$$,
    ROW('sending'::text, 'w1'::text, NULL::integer), 'fenced: a result for another attempt changes nothing');

SELECT results_eq($$SELECT address, kind, state, smtp_code, last_error, attempts FROM outbox.message_recipients
                     WHERE message = (SELECT id FROM m WHERE s = 'S') ORDER BY address$$,
    $$VALUES ('a@example.com'::text, 'to'::text, 'sent'::text, 250, NULL::text, 1),
             ('b@example.com', 'cc', 'failed', 550, '550 no such user', 1)$$,
    'per-recipient outcomes recorded');
SELECT is((SELECT count(*)::int FROM outbox.message_recipients WHERE message = (SELECT id FROM m WHERE s = 'W')), 0,
    'fenced: no recipient row for a result that did not apply');
SELECT is((SELECT count(*)::int FROM outbox.message_recipients WHERE message = (SELECT id FROM m WHERE s = 'F')), 0,
    'no recipients reported: no rows (the status view derives them)');

SELECT results_eq($$SELECT m.s, e.type, e.aggregate_type, e.aggregate_id = msg.message_id, e.payload ->> 'state',
                           (e.payload ->> 'attempts')::int, (e.payload ->> 'code')::int, e.payload ->> 'error'
                      FROM outbox.events e JOIN m ON m.id = e.message_id JOIN outbox.messages msg ON msg.id = m.id
                     WHERE e.type <> 'email.queued' ORDER BY m.s$$,
    $$VALUES ('F'::text, 'email.failed'::text, 'email'::text, true, 'failed'::text, 1, 554, '554 rejected'::text),
             ('P', 'email.retry', 'email', true, 'pending', 1, 451, NULL),
             ('R', 'email.retry', 'email', true, 'pending', 1, 451, '451 try later'),
             ('S', 'email.sent', 'email', true, 'sent', 1, 250, NULL),
             ('X', 'email.dead', 'email', true, 'dead', 1, 421, '421 busy')$$,
    'one lifecycle event per applied state change, keyed by message_id');

-- Applying the same results again changes nothing: the rows are no longer leased.
SELECT is_empty($$SELECT * FROM outbox.complete('w1', jsonb_build_array(
                    jsonb_build_object('id', (SELECT id FROM m WHERE s = 'S'), 'attempt', 1, 'outcome', 'failed')))$$,
    'a second completion of the same attempt is fenced out');
SELECT is((SELECT state FROM outbox.messages WHERE subject = 'S'), 'sent', 'the first outcome stands');

-- Another owner cannot complete w1's lease.
SELECT is_empty($$SELECT * FROM outbox.complete('w2', jsonb_build_array(
                    jsonb_build_object('id', (SELECT id FROM m WHERE s = 'K'), 'attempt', 1, 'outcome', 'sent',
                        'recipients', jsonb_build_array(jsonb_build_object('address', 'a@example.com', 'state', 'sent')))))$$,
    'fenced: another owner''s completion is ignored');
SELECT row_eq($$SELECT state, lease_owner FROM outbox.messages WHERE subject = 'K'$$, ROW('sending'::text, 'w1'::text),
    'fenced: the row is still leased to its owner');
SELECT is((SELECT count(*)::int FROM outbox.message_recipients WHERE message = (SELECT id FROM m WHERE s = 'K')), 0,
    'fenced: not even recipients are written');

-- Partial delivery: the retry skips delivered recipients, and a delivered recipient stays delivered.
SELECT results_eq($$SELECT subject, attempt, done_recipients FROM outbox.claim('w1', 10, 60)$$,
    $$VALUES ('P'::text, 2, ARRAY['a@example.com'])$$, 'retry of P is due at once and skips the delivered recipient');
SELECT is(ARRAY(SELECT * FROM outbox.complete('w1', jsonb_build_array(
            jsonb_build_object('id', (SELECT id FROM m WHERE s = 'P'), 'attempt', 2, 'outcome', 'sent', 'code', 250,
                'recipients', jsonb_build_array(jsonb_build_object('address', 'c@example.com', 'state', 'sent', 'code', 250),
                                                jsonb_build_object('address', 'a@example.com', 'state', 'failed', 'code', 550)))))),
          ARRAY[(SELECT id FROM m WHERE s = 'P')], 'second attempt of P applies');
SELECT results_eq($$SELECT address, state, smtp_code, attempts FROM outbox.message_recipients
                     WHERE message = (SELECT id FROM m WHERE s = 'P') ORDER BY address$$,
    $$VALUES ('a@example.com'::text, 'sent'::text, 250, 2), ('c@example.com', 'sent', 250, 2)$$,
    'recipient rows upserted; a sent recipient is never downgraded');

-- Results for ids that do not exist are ignored; duplicates in one batch apply once.
SELECT is_empty($$SELECT * FROM outbox.complete('w1', '[{"id": -1, "attempt": 1, "outcome": "sent"}]')$$,
    'unknown id: nothing applied');
SELECT is(ARRAY(SELECT * FROM outbox.complete('w1', jsonb_build_array(
            jsonb_build_object('id', (SELECT id FROM m WHERE s = 'K'), 'attempt', 1, 'outcome', 'sent'),
            jsonb_build_object('id', (SELECT id FROM m WHERE s = 'K'), 'attempt', 1, 'outcome', 'sent')))),
          ARRAY[(SELECT id FROM m WHERE s = 'K')], 'a duplicated result applies once');
SELECT is((SELECT count(*)::int FROM outbox.events e JOIN m ON m.id = e.message_id WHERE m.s = 'K' AND e.type = 'email.sent'), 1,
    'and writes one event');

-- Lifecycle events can be switched off; a row that is not leased ignores results.
UPDATE outbox.settings SET lifecycle_events = false;
SELECT is(ARRAY(SELECT * FROM outbox.complete('w1', jsonb_build_array(
            jsonb_build_object('id', (SELECT id FROM m WHERE s = 'W'), 'attempt', 1, 'outcome', 'sent', 'code', 250),
            jsonb_build_object('id', (SELECT id FROM m WHERE s = 'R'), 'attempt', 1, 'outcome', 'retry')))),
          ARRAY[(SELECT id FROM m WHERE s = 'W')], 'W applies with its real attempt; R (not leased) is ignored');
SELECT is((SELECT count(*)::int FROM outbox.events WHERE type <> 'email.queued'
             AND message_id = (SELECT id FROM m WHERE s = 'W')), 0, 'no lifecycle events while switched off');
UPDATE outbox.settings SET lifecycle_events = true;

SELECT * FROM finish();
ROLLBACK;
