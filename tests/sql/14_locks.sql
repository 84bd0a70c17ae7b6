-- Holders of outboxd's advisory locks (outbox.lock_holders): a producer login can take any
-- of them (PostgreSQL checks nothing), so each holder is named and told apart from outboxd;
-- outbox.status_report() runs for the dispatcher's own role. Other sessions come from dblink;
-- the producer login they use is created (and dropped) in committed statements.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT plan(19);

CREATE FUNCTION pg_temp.conninfo(p_user text) RETURNS text LANGUAGE sql AS $$
    SELECT format('dbname=%s user=%s port=%s host=%s', current_database(), p_user, current_setting('port'),
                  coalesce(nullif(btrim(split_part(current_setting('unix_socket_directories'), ',', 1)), ''), '127.0.0.1'))
$$;

SELECT is(outbox.migrate_lock_key(), 8031453476610927975::bigint, 'migrate''s key is "outboxmg" (MIGRATE_LOCK_KEY)');
SELECT is_empty($$SELECT * FROM outbox.lock_holders('mirror')$$, 'nobody holds the mirror lock: no row');
SELECT throws_ok($$SELECT * FROM outbox.lock_holders('nope')$$, '22023', NULL, 'an unknown lock name is refused');

-- A producer login (committed in another session, so it can log in).
SELECT dblink_connect('admin', pg_temp.conninfo(current_user));
SELECT dblink_exec('admin', $x$DO $do$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_test_locks_producer') THEN
        CREATE ROLE outbox_test_locks_producer LOGIN;
    END IF;
    GRANT outbox_producer TO outbox_test_locks_producer;
END $do$$x$);

-- The producer takes the mirror lock; it even calls itself outboxd-mirror.
SELECT is(dblink_connect('prod', pg_temp.conninfo('outbox_test_locks_producer')), 'OK', 'a producer login connects');
SELECT is((SELECT x FROM dblink('prod', $$SET application_name = 'outboxd-mirror';
                                        SELECT pg_try_advisory_lock(8031453476610927457)$$) AS t(x boolean)),
          true, 'PostgreSQL lets the producer take the mirror lock');
SELECT is((SELECT pid FROM outbox.lock_holders('mirror')),
          (SELECT x FROM dblink('prod', 'SELECT pg_backend_pid()') AS t(x integer)), 'the holder''s pid is named');
SELECT is((SELECT usename::text FROM outbox.lock_holders('mirror')), 'outbox_test_locks_producer', 'and its login');
SELECT is((SELECT application_name FROM outbox.lock_holders('mirror')), 'outboxd-mirror', 'and its application_name');
SELECT is((SELECT outboxd FROM outbox.lock_holders('mirror')), false,
          'a producer login is not outboxd, whatever application_name it sets');
SELECT is(ARRAY(SELECT lock FROM outbox.lock_holders()), ARRAY['mirror'], 'NULL lists every lock held');

-- An outboxd session (this role is the schema owner's) holding the retention lock.
SELECT is((SELECT x FROM dblink('admin', $$SET application_name = 'outboxd-retention';
                                         SELECT pg_try_advisory_lock(outbox.retention_lock_key())$$) AS t(x boolean)),
          true, 'an outboxd session takes the retention lock');
SELECT is((SELECT outboxd FROM outbox.lock_holders('retention')), true, 'it is recognised as outboxd');
SELECT is((SELECT x FROM dblink('admin', $$SET application_name = 'psql';
                                         SELECT pg_try_advisory_lock(outbox.migrate_lock_key())$$) AS t(x boolean)),
          true, 'the same login under another application_name takes migrate''s lock');
SELECT is((SELECT outboxd FROM outbox.lock_holders('migrate')), false, 'that one is not outboxd');

-- The dispatcher's role may ask, and may read the status report (it cannot read messages).
SET LOCAL ROLE outbox_dispatcher;
SELECT is((SELECT pid FROM outbox.lock_holders('mirror')) IS NOT NULL, true, 'outbox_dispatcher may call lock_holders');
SELECT is((SELECT (outbox.status_report() -> 'locks' -> 'mirror' ->> 'outboxd')::boolean), false,
          'outbox_dispatcher reads the status report, lock holders included');
RESET ROLE;
SET LOCAL ROLE outbox_producer;
SELECT throws_ok($$SELECT * FROM outbox.lock_holders()$$, '42501', NULL, 'a producer may not list the holders');
RESET ROLE;

SELECT is((SELECT x FROM dblink('prod', 'SELECT pg_advisory_unlock_all()::text') AS t(x text)), '', 'the producer lets go');
SELECT is_empty($$SELECT * FROM outbox.lock_holders('mirror')$$, 'then nobody holds the mirror lock');

SELECT dblink_disconnect('prod');
SELECT * FROM dblink('admin', 'SELECT pg_advisory_unlock_all()::text') AS t(x text);
SELECT dblink_exec('admin', 'DROP ROLE outbox_test_locks_producer');
SELECT dblink_disconnect('admin');
SELECT * FROM finish();
ROLLBACK;
