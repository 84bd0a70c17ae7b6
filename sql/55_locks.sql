-- Who holds outboxd's session advisory locks. PostgreSQL checks no privilege on advisory
-- locks: any login that can connect may take the mirror's, the retention's or migrate's key
-- and so stop the Kafka mirror, retention or every migration. That cannot be refused, so it
-- is made visible: the dispatcher asks here when it does not get a lock, logs a foreign
-- holder, and `outboxd status` shows every holder.

-- The key of `outboxd migrate`'s lock (bigint 0x6f7574626f786d67, "outboxmg"; MIGRATE_LOCK_KEY
-- in dispatcher/migrate.h).
CREATE OR REPLACE FUNCTION outbox.migrate_lock_key()
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT 8031453476610927975::bigint $fn$;
COMMENT ON FUNCTION outbox.migrate_lock_key() IS
    'outboxd migrate: the session advisory lock key that serialises migration runs';

-- The sessions holding the lock named p_lock ('mirror', 'retention' or 'migrate'; NULL: all
-- three), one row per lock held: the holder's pid, login, application_name, when its session
-- started, and whether it is outboxd. "outboxd" means an application_name that outboxd sets
-- (outboxd-mirror, outboxd-retention, outboxd-migrate) from a login that is a member of
-- outbox_dispatcher or of the schema's owner: a producer login can copy the name, not the
-- role. SECURITY DEFINER so the dispatcher's restricted login sees what the owner sees of
-- pg_stat_activity (backend_start and client_addr are hidden from other roles otherwise).
-- Locks not held give no row; an unknown name raises invalid_parameter_value.
CREATE OR REPLACE FUNCTION outbox.lock_holders(p_lock text DEFAULT NULL)
RETURNS TABLE (lock text, pid integer, usename name, application_name text, backend_start timestamptz,
               client_addr inet, outboxd boolean)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
#variable_conflict use_column
BEGIN
    IF p_lock IS NOT NULL AND p_lock NOT IN ('mirror', 'retention', 'migrate') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'outbox.lock_holders: unknown lock ' || quote_literal(p_lock)
                      || ' (mirror, retention or migrate)';
    END IF;
    -- backend activity is a snapshot per transaction: look at it as of now
    PERFORM pg_stat_clear_snapshot();
    RETURN QUERY
    SELECT k.name, l.pid, a.usename, a.application_name::text, a.backend_start, a.client_addr,
           coalesce(a.application_name IN ('outboxd-mirror', 'outboxd-retention', 'outboxd-migrate')
                    AND (pg_has_role(a.usesysid, 'outbox_dispatcher', 'MEMBER')
                         OR pg_has_role(a.usesysid, (SELECT n.nspowner FROM pg_namespace n
                                                      WHERE n.nspname = 'outbox'), 'MEMBER')), false)
      FROM (VALUES ('mirror', outbox.mirror_lock_key()), ('retention', outbox.retention_lock_key()),
                   ('migrate', outbox.migrate_lock_key())) AS k(name, key)
      JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                     AND l.classid = (k.key >> 32)::oid AND l.objid = (k.key & 4294967295)::oid
                     AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      LEFT JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE p_lock IS NULL OR k.name = p_lock
     ORDER BY k.name;
END
$fn$;
COMMENT ON FUNCTION outbox.lock_holders(text) IS
    'The sessions holding outboxd''s advisory locks (mirror, retention, migrate), and whether each is outboxd';

REVOKE ALL ON FUNCTION outbox.migrate_lock_key(), outbox.lock_holders(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.migrate_lock_key(), outbox.lock_holders(text) TO outbox_dispatcher;
