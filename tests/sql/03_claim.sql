-- outbox.claim: batch limit, priority/due order, not_before, lease and attempt bookkeeping,
-- rescue of expired leases (back to pending, or dead when exhausted), done_recipients, plan.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(33);

TRUNCATE outbox.messages, outbox.events CASCADE;

INSERT INTO outbox.messages (recipients, subject, body_text, priority, not_before) VALUES
    (ARRAY['a@example.com'], 'A', 'b', 0, now() - interval '10 minutes'),
    (ARRAY['a@example.com'], 'B', 'b', 0, NULL),
    (ARRAY['a@example.com'], 'C', 'b', 5, NULL),
    (ARRAY['a@example.com'], 'D', 'b', 9, now() + interval '1 hour'),
    (ARRAY['a@example.com'], 'E', 'b', -1, now() - interval '1 day');
CREATE TEMP TABLE ids AS SELECT subject AS s, id FROM outbox.messages;

SELECT throws_ok($$SELECT * FROM outbox.claim('', 1, 60)$$, '22023', 'outbox.claim: p_owner is required', 'claim needs an owner');
SELECT throws_ok($$SELECT * FROM outbox.claim('w1', 0, 60)$$, '22023', 'outbox.claim: p_limit must be between 1 and 10000', 'claim needs a positive limit');
SELECT throws_ok($$SELECT * FROM outbox.claim('w1', 1, 0)$$, '22023', 'outbox.claim: p_lease_seconds must be between 1 and 86400', 'claim needs a lease');

CREATE TEMP TABLE c1 AS SELECT * FROM outbox.claim('w1', 2, 60);
SELECT is(ARRAY(SELECT subject FROM c1), ARRAY['C', 'A'], 'claim(limit 2): highest priority first, then earliest due');
SELECT is(ARRAY(SELECT attempt FROM c1), ARRAY[1, 1], 'attempt is the new attempts count');
SELECT row_eq($$SELECT count(*)::int, min(lease_owner), min(lease_expires_at), max(lease_expires_at), min(attempts)
                 FROM outbox.messages WHERE state = 'sending'$$,
    ROW(2, 'w1'::text, now() + interval '60 seconds', now() + interval '60 seconds', 1),
    'claimed rows are sending, leased to the owner for the lease length, attempts 1');
SELECT results_eq($$SELECT id, message_id, recipients, body_text, created_at FROM c1 ORDER BY id$$,
    $$SELECT id, message_id, recipients, body_text, created_at FROM outbox.messages WHERE subject IN ('A', 'C') ORDER BY id$$,
    'claim returns the message content');
SELECT is(ARRAY(SELECT subject FROM outbox.claim('w1', 10, 60)), ARRAY['B', 'E'],
    'next claim takes the remaining due rows, lower priority last');
SELECT is_empty($$SELECT * FROM outbox.claim('w1', 10, 60)$$, 'nothing due: empty claim');
SELECT is((SELECT state FROM outbox.messages WHERE subject = 'D'), 'pending', 'not_before in the future is not claimed');

-- An expired lease is rescued and re-claimed with the next attempt number.
UPDATE outbox.messages SET lease_expires_at = now() - interval '1 second' WHERE subject = 'A';
-- ... but not by a claim that asks for no rescue (outboxd rescues at most once a second)
SELECT is_empty($$SELECT * FROM outbox.claim('w2', 10, 30, false)$$, 'claim(..., p_rescue false) leaves expired leases');
SELECT is((SELECT lease_owner FROM outbox.messages WHERE subject = 'A'), 'w1', '... the row stays with its owner');
CREATE TEMP TABLE c2 AS SELECT * FROM outbox.claim('w2', 10, 30);
SELECT is(ARRAY(SELECT subject FROM c2), ARRAY['A'], 'expired lease is claimed again');
SELECT throws_ok($$SELECT * FROM outbox.claim('w2', 0, 30, false)$$, '22023', 'outbox.claim: p_limit must be between 1 and 10000',
    'the four-argument form checks its arguments too');
SELECT is((SELECT attempt FROM c2), 2, 'rescued row comes back as attempt 2');
SELECT row_eq($$SELECT state, lease_owner, lease_expires_at, outcome_unknown, last_error FROM outbox.messages WHERE subject = 'A'$$,
    ROW('sending'::text, 'w2'::text, now() + interval '30 seconds', true, 'lease expired, outcome unknown'::text),
    'rescued row is leased to the new owner and marked outcome_unknown');
SELECT is((SELECT count(*)::int FROM outbox.events e JOIN ids ON ids.id = e.message_id
            WHERE ids.s = 'A' AND e.type = 'email.retry'), 1, 'rescue writes an email.retry event');

-- Exhausted attempts: the rescue sends the row to dead.
UPDATE outbox.messages SET max_attempts = 2, lease_expires_at = now() - interval '1 second' WHERE subject = 'A';
SELECT is_empty($$SELECT * FROM outbox.claim('w3', 10, 30, true)$$, 'an exhausted expired lease is not claimed');
SELECT row_eq($$SELECT state, attempts, lease_owner, last_error FROM outbox.messages WHERE subject = 'A'$$,
    ROW('dead'::text, 2, NULL::text, 'lease expired, attempts exhausted'::text), 'exhausted expired lease goes to dead');
SELECT results_eq($$SELECT e.payload ->> 'state', e.payload ->> 'error' FROM outbox.events e JOIN ids ON ids.id = e.message_id
                     WHERE ids.s = 'A' AND e.type = 'email.dead'$$,
    $$VALUES ('dead', 'lease expired, attempts exhausted')$$, 'rescue to dead writes an email.dead event');
SELECT is((SELECT state FROM outbox.messages WHERE subject = 'C'), 'sending', 'leases not yet expired stay');

-- done_recipients lists addresses delivered by an earlier attempt.
INSERT INTO outbox.messages (recipients, cc, subject, body_text) VALUES
    (ARRAY['x@example.com', 'y@example.com'], ARRAY['z@example.com'], 'F', 'b');
INSERT INTO outbox.message_recipients (message, address, kind, state, attempts)
SELECT id, 'y@example.com', 'to', 'sent', 1 FROM outbox.messages WHERE subject = 'F'
UNION ALL
SELECT id, 'z@example.com', 'cc', 'failed', 1 FROM outbox.messages WHERE subject = 'F';
SELECT results_eq($$SELECT subject, done_recipients FROM outbox.claim('w1', 5, 60)$$,
    $$VALUES ('F'::text, ARRAY['y@example.com'])$$, 'done_recipients holds only the already-sent addresses');

-- Many rows: never more than the limit, each row once.
INSERT INTO outbox.messages (recipients, subject, body_text) SELECT ARRAY['a@example.com'], 'bulk', 'b' FROM generate_series(1, 25);
SELECT is((SELECT count(*)::int FROM outbox.claim('w1', 10, 60)), 10, 'claim returns at most p_limit rows (1/3)');
SELECT is((SELECT count(*)::int FROM outbox.claim('w1', 10, 60)), 10, 'claim returns at most p_limit rows (2/3)');
SELECT is((SELECT count(*)::int FROM outbox.claim('w1', 10, 60)), 5, 'claim returns the rest (3/3)');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE subject = 'bulk' AND state = 'sending' AND attempts = 1), 25,
    'every row claimed exactly once');

-- Plan: the claim scan is an ordered scan of the partial claim index (no sort, no seq scan).
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
CREATE TEMP TABLE plan_lines (line text);
DO $$
DECLARE l text;
BEGIN
    FOR l IN EXPLAIN WITH c AS MATERIALIZED (
        SELECT m.id FROM outbox.messages m
         WHERE m.state = 'pending' AND m.next_attempt_at <= now()
         ORDER BY m.priority DESC, m.next_attempt_at, m.id LIMIT 10 FOR UPDATE SKIP LOCKED)
    SELECT * FROM c
    LOOP
        INSERT INTO plan_lines VALUES (l);
    END LOOP;
END
$$;
SELECT ok(EXISTS (SELECT 1 FROM plan_lines WHERE line ~ 'Index Scan using messages_claim_idx'), 'claim uses messages_claim_idx');
SELECT ok(NOT EXISTS (SELECT 1 FROM plan_lines WHERE line ~ 'Sort'), 'claim needs no sort');
SELECT ok(EXISTS (SELECT 1 FROM plan_lines WHERE line ~ 'LockRows'), 'claim locks rows under the limit');
DELETE FROM plan_lines;
DO $$
DECLARE l text;
BEGIN
    FOR l IN EXPLAIN SELECT m.id FROM outbox.messages m
         WHERE m.state = 'sending' AND m.lease_expires_at < now()
         ORDER BY m.lease_expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED
    LOOP
        INSERT INTO plan_lines VALUES (l);
    END LOOP;
END
$$;
SELECT ok(EXISTS (SELECT 1 FROM plan_lines WHERE line ~ 'Index Scan using messages_lease_idx'), 'rescue uses messages_lease_idx');
RESET enable_seqscan;
RESET enable_bitmapscan;

-- claim touches no row of another state.
SELECT is((SELECT state FROM outbox.messages WHERE subject = 'D'), 'pending', 'scheduled row still pending');
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE state = 'dead'), 1, 'only the exhausted row is dead');
SELECT is((SELECT count(*)::int FROM outbox.events WHERE type = 'email.queued'), 31, 'claiming writes no lifecycle event');

SELECT * FROM finish();
ROLLBACK;
