-- Status views return the right figures: message_status, recipient_status, queue_depth,
-- queue_health and mirror_lag.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(11);

TRUNCATE outbox.messages, outbox.events, outbox.dispatcher_idle CASCADE;

SELECT results_eq($$SELECT state, count FROM outbox.queue_depth$$,
    $$VALUES ('pending'::text, 0::bigint), ('sending', 0), ('sent', 0), ('failed', 0), ('dead', 0), ('cancelled', 0)$$,
    'queue_depth lists every state, zero included');
SELECT row_eq($$SELECT oldest_due_pending_age_seconds, pending_due, pending_scheduled, sending, sending_lease_expired,
                       failed_last_hour, dead_last_hour, idle_dispatchers FROM outbox.queue_health$$,
    ROW(0::double precision, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint),
    'queue_health of an empty queue');

INSERT INTO outbox.messages (recipients, cc, bcc, subject, body_text, not_before) VALUES
    (ARRAY['a@example.com'], ARRAY['c@example.com'], ARRAY['d@example.com'], 'due-old', 'b', now() - interval '90 seconds'),
    (ARRAY['a@example.com'], '{}', '{}', 'due-new', 'b', NULL),
    (ARRAY['a@example.com'], '{}', '{}', 'scheduled', 'b', now() + interval '1 day'),
    (ARRAY['a@example.com'], '{}', '{}', 's1', 'b', NULL),
    (ARRAY['a@example.com'], '{}', '{}', 's2', 'b', NULL),
    (ARRAY['a@example.com'], '{}', '{}', 's3', 'b', NULL);
-- Put s1 in flight with an expired lease, s2 failed, s3 dead; cancel nothing.
UPDATE outbox.messages SET state = 'sending', lease_owner = 'w', lease_expires_at = now() - interval '1 second', attempts = 1
 WHERE subject = 's1';
UPDATE outbox.messages SET state = 'failed', updated_at = now() WHERE subject = 's2';
UPDATE outbox.messages SET state = 'dead', updated_at = now() - interval '2 hours' WHERE subject = 's3';
SELECT outbox.set_idle('d', true);

SELECT results_eq($$SELECT state, count FROM outbox.queue_depth$$,
    $$VALUES ('pending'::text, 3::bigint), ('sending', 1), ('sent', 0), ('failed', 1), ('dead', 1), ('cancelled', 0)$$,
    'queue_depth counts by state');
SELECT row_eq($$SELECT oldest_due_pending_age_seconds, pending_due, pending_scheduled, sending, sending_lease_expired,
                       failed_last_hour, dead_last_hour, idle_dispatchers FROM outbox.queue_health$$,
    ROW(90::double precision, 2::bigint, 1::bigint, 1::bigint, 1::bigint, 1::bigint, 0::bigint, 1::bigint),
    'queue_health: oldest due 90 s late, 2 due, 1 scheduled, 1 in flight (expired), 1 failed in the last hour');

SELECT results_eq($$SELECT m.subject, s.state, s.attempts, s.next_attempt_at = m.next_attempt_at, s.outcome_unknown
                      FROM outbox.message_status s JOIN outbox.messages m USING (id) ORDER BY s.id$$,
    $$VALUES ('due-old'::text, 'pending'::text, 0, true, false), ('due-new', 'pending', 0, true, false),
             ('scheduled', 'pending', 0, true, false), ('s1', 'sending', 1, true, false),
             ('s2', 'failed', 0, true, false), ('s3', 'dead', 0, true, false)$$,
    'message_status: one row per message');
SELECT has_column('outbox', 'message_status', 'message_id', 'message_status shows message_id');

-- recipient_status: rows for every to/cc/bcc; missing outcomes derive from the message state.
SELECT results_eq($$SELECT address, kind, state FROM outbox.recipient_status
                     WHERE message = (SELECT id FROM outbox.messages WHERE subject = 'due-old') ORDER BY kind DESC$$,
    $$VALUES ('a@example.com'::text, 'to'::text, 'pending'::text), ('c@example.com', 'cc', 'pending'),
             ('d@example.com', 'bcc', 'pending')$$,
    'recipient_status lists to, cc and bcc, pending before any outcome');
SELECT results_eq($$SELECT state FROM outbox.recipient_status
                     WHERE message IN (SELECT id FROM outbox.messages WHERE subject IN ('s2', 's3')) ORDER BY message$$,
    $$VALUES ('failed'::text), ('failed')$$, 'recipients of failed and dead messages show failed');
INSERT INTO outbox.message_recipients (message, address, kind, state, smtp_code, attempts)
SELECT id, 'c@example.com', 'cc', 'sent', 250, 1 FROM outbox.messages WHERE subject = 'due-old';
SELECT results_eq($$SELECT address, state, smtp_code, attempts FROM outbox.recipient_status
                     WHERE message = (SELECT id FROM outbox.messages WHERE subject = 'due-old') AND kind = 'cc'$$,
    $$VALUES ('c@example.com'::text, 'sent'::text, 250, 1)$$, 'recorded outcomes take precedence');

-- mirror_lag
SELECT row_eq($$SELECT unpublished, failed FROM outbox.mirror_lag$$, ROW(6::bigint, 0::bigint),
    'mirror_lag counts unpublished events (six email.queued)');
UPDATE outbox.events SET state = 'published', published_at = now() WHERE id IN (SELECT id FROM outbox.events ORDER BY id LIMIT 4);
UPDATE outbox.events SET state = 'failed', last_error = 'too large' WHERE id = (SELECT max(id) FROM outbox.events);
UPDATE outbox.events SET created_at = now() - interval '30 seconds' WHERE state = 'pending';
SELECT row_eq($$SELECT unpublished, oldest_unpublished_age_seconds, failed FROM outbox.mirror_lag$$,
    ROW(1::bigint, 30::double precision, 1::bigint), 'mirror_lag after publishing: 1 left, 30 s old, 1 failed');

SELECT * FROM finish();
ROLLBACK;
