-- Behaviour across sessions, through dblink connections to this same database: concurrent
-- claimers get disjoint rows, fencing after a lease takeover, and NOTIFY only while a
-- dispatcher is idle (checked at commit). The other sessions commit, so this file cleans up
-- after itself (and before, in case an earlier run stopped half-way).
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT plan(21);

-- Connection string for a fresh session of this server and database (Unix socket if any).
CREATE FUNCTION pg_temp.conninfo() RETURNS text LANGUAGE sql AS $$
    SELECT format('dbname=%s user=%s port=%s host=%s', current_database(), current_user, current_setting('port'),
                  coalesce(nullif(btrim(split_part(current_setting('unix_socket_directories'), ',', 1)), ''), '127.0.0.1'))
$$;
-- Waits up to timeout_ms for a notification on chan at dblink connection conn; returns how many arrived.
CREATE FUNCTION pg_temp.wait_notify(conn text, chan text, timeout_ms integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer := 0;
    waited integer := 0;
BEGIN
    LOOP
        n := n + (SELECT count(*) FROM dblink_get_notify(conn) WHERE notify_name = chan);
        IF n > 0 OR waited >= timeout_ms THEN
            RETURN n;
        END IF;
        PERFORM pg_sleep(0.02);
        waited := waited + 20;
    END LOOP;
END
$$;
-- Runs a function call expression at dblink connection conn and returns its result as text.
CREATE FUNCTION pg_temp.call(conn text, expr text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(t.r, ',') FROM dblink(conn, 'SELECT (' || expr || ')::text') AS t(r text)
$$;
CREATE FUNCTION pg_temp.cleanup() RETURNS void LANGUAGE sql AS $$
    SELECT dblink_exec('p', $q$
        DELETE FROM outbox.events WHERE aggregate_type = 'dbltest'
            OR message_id IN (SELECT id FROM outbox.messages WHERE subject LIKE 'dbl%');
        DELETE FROM outbox.messages WHERE subject LIKE 'dbl%';
        DELETE FROM outbox.dispatcher_idle WHERE owner LIKE 'dbl%'$q$);
$$;

SELECT dblink_connect(c, pg_temp.conninfo()) FROM unnest(ARRAY['p', 'a', 'b', 'l']) AS c;
SELECT pg_temp.cleanup();
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE state IN ('pending', 'sending')), 0,
    'no other work is queued in this database');

-- Concurrent claimers: A holds its claim transaction (and row locks) open while B claims.
SELECT dblink_exec('p', $$INSERT INTO outbox.messages (recipients, subject, body_text)
                          SELECT ARRAY['a@example.com'], 'dbl' || g, 'b' FROM generate_series(1, 10) g$$);
SELECT dblink_exec('a', 'BEGIN');
CREATE TEMP TABLE a_ids AS SELECT * FROM dblink('a', $$SELECT id FROM outbox.claim('dblA', 4, 60)$$) AS t(id bigint);
CREATE TEMP TABLE b_ids AS SELECT * FROM dblink('b', $$SELECT id FROM outbox.claim('dblB', 10, 60)$$) AS t(id bigint);
SELECT is((SELECT count(*)::int FROM a_ids), 4, 'A claimed its limit of 4');
SELECT is((SELECT count(*)::int FROM b_ids), 6, 'B, claiming while A''s transaction is open, got the other 6');
SELECT is_empty($$SELECT id FROM a_ids INTERSECT SELECT id FROM b_ids$$, 'the two claims are disjoint');
SELECT dblink_exec('a', 'COMMIT');
SELECT results_eq($$SELECT lease_owner, count(*)::int FROM outbox.messages WHERE subject LIKE 'dbl%' GROUP BY 1 ORDER BY 1$$,
    $$VALUES ('dblA'::text, 4), ('dblB', 6)$$, 'every row leased exactly once');
SELECT is_empty($$SELECT * FROM dblink('a', 'SELECT id FROM outbox.claim(''dblA'', 10, 60)') AS t(id bigint)$$,
    'nothing left to claim');

-- Lease takeover and fencing: A's lease on X expires, B takes X over as attempt 2.
CREATE TEMP TABLE x AS SELECT min(id) AS id FROM a_ids;
SELECT dblink_exec('p', format('UPDATE outbox.messages SET lease_expires_at = now() - interval ''1 second'' WHERE id = %s',
                               (SELECT id FROM x)));
SELECT results_eq(format($$SELECT * FROM dblink('b', 'SELECT id, attempt FROM outbox.claim(''dblB'', 10, 60)') AS t(id bigint, attempt int)$$),
    format('VALUES (%s::bigint, 2)', (SELECT id FROM x)), 'B re-claims the expired row as attempt 2');
SELECT is_empty(format($$SELECT * FROM dblink('a', 'SELECT * FROM outbox.complete(''dblA'', ''[{"id": %s, "attempt": 1, "outcome": "sent", "code": 250}]'')') AS t(id bigint)$$,
                       (SELECT id FROM x)),
    'A, back from a pause, completes its old attempt: nothing applies');
SELECT is_empty(format($$SELECT * FROM dblink('a', 'SELECT * FROM outbox.complete(''dblA'', ''[{"id": %s, "attempt": 2, "outcome": "failed"}]'')') AS t(id bigint)$$,
                       (SELECT id FROM x)),
    'A cannot complete B''s attempt either');
SELECT row_eq(format('SELECT state, lease_owner, attempts, last_smtp_code FROM outbox.messages WHERE id = %s', (SELECT id FROM x)),
    ROW('sending'::text, 'dblB'::text, 2, NULL::integer), 'the row is still B''s, untouched');
SELECT results_eq(format($$SELECT * FROM dblink('b', 'SELECT * FROM outbox.complete(''dblB'', ''[{"id": %s, "attempt": 2, "outcome": "sent", "code": 250}]'')') AS t(id bigint)$$,
                         (SELECT id FROM x)),
    format('VALUES (%s::bigint)', (SELECT id FROM x)), 'B completes its own attempt');
SELECT is((SELECT state FROM outbox.messages WHERE id = (SELECT id FROM x)), 'sent', 'B''s outcome stands');

-- Wake-ups: NOTIFY only while a dispatcher is registered idle on the channel.
SELECT dblink_exec('l', 'LISTEN outbox_messages');
SELECT dblink_exec('l', 'LISTEN outbox_events');
SELECT dblink_exec('p', $$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'dbl-busy', 'b')$$);
SELECT is(pg_temp.wait_notify('l', 'outbox_messages', 300), 0, 'no dispatcher idle: an insert sends no NOTIFY');
SELECT pg_temp.call('b', $$outbox.set_idle('dblD', true)$$);
SELECT dblink_exec('p', $$INSERT INTO outbox.messages (recipients, subject, body_text)
                          SELECT ARRAY['a@example.com'], 'dbl-idle', 'b' FROM generate_series(1, 3)$$);
SELECT is(pg_temp.wait_notify('l', 'outbox_messages', 3000), 1, 'a dispatcher idle: the committed insert sends one NOTIFY');
SELECT is(pg_temp.wait_notify('l', 'outbox_events', 300), 0, 'no one idle on outbox_events: the email.queued events send none');

-- The check runs at commit: a dispatcher that goes idle while the producer's transaction is
-- open is still woken, and a rolled-back insert wakes nobody.
SELECT pg_temp.call('b', $$outbox.set_idle('dblD', false)$$);
SELECT dblink_exec('p', 'BEGIN');
SELECT dblink_exec('p', $$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'dbl-late', 'b')$$);
SELECT pg_temp.call('b', $$outbox.set_idle('dblD', true)$$);
SELECT dblink_exec('p', 'COMMIT');
SELECT is(pg_temp.wait_notify('l', 'outbox_messages', 3000), 1, 'idle registered during the producer transaction: woken at commit');
SELECT dblink_exec('p', 'BEGIN');
SELECT dblink_exec('p', $$INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'dbl-rollback', 'b')$$);
SELECT dblink_exec('p', 'ROLLBACK');
SELECT is(pg_temp.wait_notify('l', 'outbox_messages', 300), 0, 'a rolled-back insert sends no NOTIFY');

-- outbox_events follows its own idle registration.
SELECT pg_temp.call('b', $$outbox.set_idle('dblD', true, 'outbox_events')$$);
SELECT dblink_exec('p', $$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES ('dbltest', '1', 'T', '{}')$$);
SELECT is(pg_temp.wait_notify('l', 'outbox_events', 3000), 1, 'mirror idle: an event insert sends NOTIFY outbox_events');
SELECT pg_temp.call('b', $$outbox.set_idle('dblD', false, 'outbox_events')$$);
SELECT dblink_exec('p', $$INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES ('dbltest', '2', 'T', '{}')$$);
SELECT is(pg_temp.wait_notify('l', 'outbox_events', 300), 0, 'mirror busy: no NOTIFY outbox_events');

-- requeue always wakes listeners.
SELECT dblink_exec('p', $$UPDATE outbox.messages SET state = 'failed' WHERE subject = 'dbl-busy'$$);
SELECT pg_temp.call('p', $$outbox.requeue((SELECT id FROM outbox.messages WHERE subject = 'dbl-busy'))$$);
SELECT is(pg_temp.wait_notify('l', 'outbox_messages', 3000), 1, 'requeue sends NOTIFY');

SELECT pg_temp.cleanup();
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE subject LIKE 'dbl%'), 0, 'cleaned up');
SELECT dblink_disconnect(c) FROM unnest(ARRAY['p', 'a', 'b', 'l']) AS c;

SELECT * FROM finish();
ROLLBACK;
