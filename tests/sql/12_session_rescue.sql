-- Crash rescue by session: rows leased by an owner whose database session ended go back to
-- the queue at the next claim after settings.session_grace_seconds, not at lease expiry; a
-- live (paused) owner keeps them; a reconnected owner is alive again; 0 turns it off.
-- The victim session is a dblink connection that commits, so this file cleans up after itself.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT plan(14);

CREATE FUNCTION pg_temp.conninfo() RETURNS text LANGUAGE sql AS $$
    SELECT format('dbname=%s user=%s port=%s host=%s', current_database(), current_user, current_setting('port'),
                  coalesce(nullif(btrim(split_part(current_setting('unix_socket_directories'), ',', 1)), ''), '127.0.0.1'))
$$;
CREATE FUNCTION pg_temp.cleanup() RETURNS void LANGUAGE sql AS $$
    SELECT dblink_exec('p', $q$
        DELETE FROM outbox.events WHERE message_id IN (SELECT id FROM outbox.messages WHERE subject LIKE 'dsr%');
        DELETE FROM outbox.messages WHERE subject LIKE 'dsr%';
        DELETE FROM outbox.dispatcher_sessions WHERE owner LIKE 'dsr%'$q$);
$$;
-- claims for owner at this session and returns how many of this file's rows it got
CREATE FUNCTION pg_temp.claim_dsr(owner text) RETURNS integer LANGUAGE sql AS $$
    SELECT count(*)::int FROM outbox.claim(owner, 100, 300) c WHERE c.subject LIKE 'dsr%'
$$;

SELECT dblink_connect(c, pg_temp.conninfo()) FROM unnest(ARRAY['p', 'k']) AS c;
SELECT pg_temp.cleanup();
SELECT is((SELECT count(*)::int FROM outbox.messages WHERE state IN ('pending', 'sending')), 0,
    'no other work is queued in this database');
SELECT ok(NOT has_table_privilege('outbox_producer', 'outbox.dispatcher_sessions', 'INSERT, UPDATE, DELETE'),
    'a producer cannot write the session map');

SELECT dblink_exec('p', $$INSERT INTO outbox.messages (recipients, subject, body_text)
                          SELECT ARRAY['a@example.com'], 'dsr' || g, 'b' FROM generate_series(1, 3) g$$);
CREATE TEMP TABLE k AS SELECT * FROM dblink('k', 'SELECT pg_backend_pid()') AS t(pid int);
SELECT is((SELECT count(*)::int FROM dblink('k', $$SELECT id FROM outbox.claim('dsrK', 10, 300)$$) AS t(id bigint)), 3,
    'the victim leased the three rows');
SELECT is((SELECT pid FROM outbox.dispatcher_sessions WHERE owner = 'dsrK'), (SELECT pid FROM k),
    'its claim recorded its session');

SELECT is(pg_temp.claim_dsr('dsrL'), 0, 'while its session lives (paused), its rows stay leased');
SELECT is((SELECT gone_since FROM outbox.dispatcher_sessions WHERE owner = 'dsrK'), NULL, 'and it is not marked gone');

-- kill the victim's session, as a kill -9 of the dispatcher would end it
SELECT dblink_disconnect('k');
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = (SELECT pid FROM k));
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
SELECT is(pg_temp.claim_dsr('dsrL'), 0, 'within the grace period nothing is rescued');
SELECT isnt((SELECT gone_since FROM outbox.dispatcher_sessions WHERE owner = 'dsrK'), NULL,
    'the claim marked the owner gone');

UPDATE outbox.dispatcher_sessions SET gone_since = now() - interval '1 hour' WHERE owner = 'dsrK';
UPDATE outbox.settings SET session_grace_seconds = 0;
SELECT is(pg_temp.claim_dsr('dsrL'), 0, 'session_grace_seconds = 0: lease expiry only');
UPDATE outbox.settings SET session_grace_seconds = 5;

-- the owner back on a new session (a reconnect) is alive again
SELECT outbox.set_idle('dsrK', false);
SELECT ok((SELECT gone_since IS NULL AND pid = pg_backend_pid() FROM outbox.dispatcher_sessions WHERE owner = 'dsrK'),
    'a reconnected owner re-registers through set_idle and is no longer gone');
SELECT is(pg_temp.claim_dsr('dsrL'), 0, 'its rows stay leased');

-- gone for longer than the grace: the next claim takes them, as attempt 2, outcome unknown
UPDATE outbox.dispatcher_sessions SET pid = (SELECT pid FROM k), backend_start = NULL,
       gone_since = now() - interval '1 hour' WHERE owner = 'dsrK';
SELECT is(pg_temp.claim_dsr('dsrL'), 3, 'past the grace the next claim rescues and leases the rows');
SELECT is((SELECT count(*)::int FROM outbox.messages
            WHERE subject LIKE 'dsr%' AND lease_owner = 'dsrL' AND attempts = 2 AND outcome_unknown), 3,
    'each as attempt 2 with outcome_unknown (the lost attempt may have delivered)');
SELECT is((SELECT count(*)::int FROM outbox.dispatcher_sessions WHERE owner = 'dsrK'), 0,
    'the gone owner is forgotten once nothing of it is left');

SELECT dblink_disconnect('p');
SELECT * FROM finish();
ROLLBACK;
-- the victim's committed rows (this transaction's own changes are rolled back above;
-- cleaning up from another session before that would wait on this one's row locks)
DELETE FROM outbox.events WHERE message_id IN (SELECT id FROM outbox.messages WHERE subject LIKE 'dsr%');
DELETE FROM outbox.messages WHERE subject LIKE 'dsr%';
DELETE FROM outbox.dispatcher_sessions WHERE owner LIKE 'dsr%';
