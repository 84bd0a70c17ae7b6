-- release, release_owner, renew, set_idle, cancel and requeue.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(43);

TRUNCATE outbox.messages, outbox.events, outbox.dispatcher_idle CASCADE;
INSERT INTO outbox.messages (recipients, subject, body_text, max_attempts)
SELECT ARRAY['a@example.com'], 'L' || g, 'b', CASE WHEN g = 4 THEN 1 ELSE 10 END FROM generate_series(1, 4) g;
CREATE TEMP TABLE m AS SELECT subject AS s, id FROM outbox.messages;
SELECT is((SELECT count(*)::int FROM outbox.claim('w1', 10, 10)), 4, 'four rows leased to w1');

-- renew
SELECT is(outbox.renew('w1', ARRAY(SELECT id FROM m WHERE s IN ('L1', 'L2')), 120), 2, 'renew extends held leases');
SELECT is((SELECT lease_expires_at FROM outbox.messages WHERE subject = 'L1'), now() + interval '120 seconds',
    'renewed lease ends p_lease_seconds from now');
SELECT is((SELECT lease_expires_at FROM outbox.messages WHERE subject = 'L3'), now() + interval '10 seconds',
    'other leases untouched');
SELECT is(outbox.renew('w2', ARRAY(SELECT id FROM m), 120), 0, 'renew by another owner extends nothing');
SELECT throws_ok($$SELECT outbox.renew('w1', '{}', 0)$$, '22023', NULL, 'renew needs a positive lease');

-- release (drain): back to pending with the attempt undone
SELECT is(outbox.release('w2', ARRAY(SELECT id FROM m)), 0, 'release by another owner releases nothing');
SELECT is(outbox.release('w1', ARRAY(SELECT id FROM m WHERE s IN ('L1', 'L2'))), 2, 'release returns the released count');
SELECT row_eq($$SELECT state, attempts, next_attempt_at, lease_owner, lease_expires_at FROM outbox.messages WHERE subject = 'L1'$$,
    ROW('pending'::text, 0, now(), NULL::text, NULL::timestamptz), 'released row: pending, due now, attempt undone, no lease');
SELECT is(outbox.release('w1', ARRAY(SELECT id FROM m WHERE s = 'L1')), 0, 'releasing a pending row does nothing');

-- attempt-fenced forms: an id goes with the attempt its claim returned (L3 and L4 are on 1)
SELECT is(outbox.renew('w1', ARRAY(SELECT id FROM m WHERE s IN ('L3', 'L4') ORDER BY s), ARRAY[1, 2], 300), 1,
    'fenced renew extends only the lease whose attempt matches');
SELECT is((SELECT array_agg(lease_expires_at - now() ORDER BY subject) FROM outbox.messages WHERE subject IN ('L3', 'L4')),
    ARRAY[interval '300 seconds', interval '10 seconds'], 'fenced renew: L3 extended, L4 (other attempt) untouched');
SELECT throws_ok($$SELECT outbox.renew('w1', ARRAY[1, 2]::bigint[], ARRAY[1], 60)$$, '22023',
    'outbox.renew: p_attempts must have one attempt per id (2 ids, 1 attempts)', 'fenced renew needs one attempt per id');
SELECT is(outbox.release('w1', ARRAY(SELECT id FROM m WHERE s IN ('L3', 'L4') ORDER BY s), ARRAY[2, 2]), 0,
    'fenced release of another attempt releases nothing');
SELECT throws_ok($$SELECT outbox.release('w1', ARRAY[1]::bigint[], ARRAY[1, 1])$$, '22023',
    'outbox.release: p_attempts must have one attempt per id (1 ids, 2 attempts)', 'fenced release needs one attempt per id');
SELECT is(outbox.release('w1', '{}'::bigint[], '{}'::integer[]), 0, 'fenced release of nothing');

-- release_owner (start-up): everything still leased to the owner, attempt kept
SELECT is(outbox.release_owner('w2'), 0, 'release_owner of an owner without leases');
SELECT is(outbox.release_owner('w1'), 2, 'release_owner returns the rows it moved');
SELECT row_eq($$SELECT state, attempts, next_attempt_at, lease_owner, outcome_unknown FROM outbox.messages WHERE subject = 'L3'$$,
    ROW('pending'::text, 1, now(), NULL::text, true), 'release_owner: pending, due now, attempt kept, outcome unknown');
SELECT row_eq($$SELECT state, attempts, last_error FROM outbox.messages WHERE subject = 'L4'$$,
    ROW('dead'::text, 1, 'lease expired, attempts exhausted'::text), 'release_owner: an exhausted row goes to dead');
SELECT is(outbox.release_owner('w1'), 0, 'release_owner is idempotent');
SELECT throws_ok($$SELECT outbox.release_owner(NULL)$$, '22023', 'outbox.release_owner: p_owner is required', 'release_owner needs an owner');

-- set_idle
SELECT lives_ok($$SELECT outbox.set_idle('d1', true)$$, 'set_idle(owner, true)');
SELECT row_eq($$SELECT owner, channel, since, backend_pid FROM outbox.dispatcher_idle$$,
    ROW('d1'::text, 'outbox_messages'::text, now(), pg_backend_pid()), 'idle row records channel, time and backend');
SELECT lives_ok($$SELECT outbox.set_idle('d1', true)$$, 'set_idle twice');
SELECT is((SELECT count(*)::int FROM outbox.dispatcher_idle), 1, 'still one row');
SELECT outbox.set_idle('d1', true, 'outbox_events');
SELECT is((SELECT count(*)::int FROM outbox.dispatcher_idle), 2, 'one row per channel');
SELECT outbox.set_idle('d1', false);
SELECT is(ARRAY(SELECT channel FROM outbox.dispatcher_idle), ARRAY['outbox_events'], 'set_idle(false) clears that channel only');
INSERT INTO outbox.dispatcher_idle (owner, channel, backend_pid) VALUES ('crashed', 'outbox_messages', 2147483647);
SELECT outbox.set_idle('d2', true);
SELECT is((SELECT count(*)::int FROM outbox.dispatcher_idle WHERE owner = 'crashed'), 0, 'idle rows of dead backends are removed');
SELECT throws_ok($$SELECT outbox.set_idle('d1', true, 'elsewhere')$$, '23514', NULL, 'unknown channel refused');

-- cancel
INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'C', 'b');
SELECT is(outbox.cancel((SELECT id FROM outbox.messages WHERE subject = 'C')), true, 'cancel a pending message');
SELECT is((SELECT state FROM outbox.messages WHERE subject = 'C'), 'cancelled', 'state cancelled');
SELECT is(outbox.cancel((SELECT id FROM outbox.messages WHERE subject = 'C')), false, 'cancel twice: false');
SELECT is(outbox.cancel(-1), false, 'cancel of an unknown id: false');
SELECT is((SELECT count(*)::int FROM outbox.claim('w1', 1, 60)), 1, 'lease one row');
SELECT is(outbox.cancel((SELECT id FROM outbox.messages WHERE state = 'sending')), false, 'a message being sent cannot be cancelled');
SELECT is(outbox.release('w1', ARRAY(SELECT id FROM outbox.messages WHERE state = 'sending'),
                         ARRAY(SELECT attempts FROM outbox.messages WHERE state = 'sending')), 1,
    'fenced release of the attempt the claim returned releases it');
SELECT is((SELECT count(*)::int FROM outbox.events e JOIN outbox.messages x ON x.id = e.message_id
            WHERE x.subject = 'C' AND e.type = 'email.cancelled'), 1, 'cancel writes email.cancelled');

-- requeue
UPDATE outbox.messages SET state = 'failed', last_smtp_code = 554, last_error = '554 rejected', attempts = 3 WHERE subject = 'L1';
SELECT is(outbox.requeue((SELECT id FROM m WHERE s = 'L1')), true, 'requeue a failed message');
SELECT row_eq($$SELECT state, attempts, next_attempt_at, last_smtp_code, last_error FROM outbox.messages WHERE subject = 'L1'$$,
    ROW('pending'::text, 0, now(), 554, '554 rejected'::text), 'requeued: pending, attempts 0, due now, last error kept');
SELECT is(outbox.requeue((SELECT id FROM m WHERE s = 'L4')), true, 'requeue a dead message');
SELECT ok(NOT outbox.requeue((SELECT id FROM m WHERE s = 'L1')) AND NOT outbox.requeue((SELECT id FROM outbox.messages WHERE subject = 'C'))
          AND NOT outbox.requeue(-1), 'requeue refuses pending, cancelled and unknown messages');
SELECT is((SELECT count(*)::int FROM outbox.events WHERE type = 'email.requeued'), 2, 'requeue writes email.requeued');

SELECT * FROM finish();
ROLLBACK;
