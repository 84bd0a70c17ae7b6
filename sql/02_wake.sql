-- Wake-ups: NOTIFY outbox_messages / outbox_events after an insert commits, but only while a
-- dispatcher has registered itself idle in outbox.dispatcher_idle. A transaction that NOTIFYs
-- takes a database-wide lock at commit, so busy dispatchers (no idle row) cost producers nothing.

-- Deferred row trigger on messages and events: it runs at COMMIT, so a dispatcher that went
-- idle while the producer's transaction was open is still woken. The check runs once per
-- transaction and channel (a transaction-local setting remembers it); later rows return at once.
CREATE OR REPLACE FUNCTION outbox.wake_dispatcher()
RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    flag text := 'outbox.woke_' || TG_ARGV[0];
BEGIN
    IF current_setting(flag, true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config(flag, 'on', true);
    IF EXISTS (SELECT 1 FROM outbox.dispatcher_idle d WHERE d.channel = TG_ARGV[0]) THEN
        PERFORM pg_notify(TG_ARGV[0], '');
    END IF;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION outbox.wake_dispatcher() IS
    'Trigger (deferred, at commit): NOTIFY channel TG_ARGV[0] once per transaction if a dispatcher is idle on it';

-- Created only when missing: re-creating a trigger locks the table against producers, and
-- these statements run on every migrate. Changing a trigger's definition needs a migration.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'outbox.messages'::regclass AND tgname = 'messages_wake') THEN
        CREATE CONSTRAINT TRIGGER messages_wake
            AFTER INSERT ON outbox.messages
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION outbox.wake_dispatcher('outbox_messages');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'outbox.events'::regclass AND tgname = 'events_wake') THEN
        CREATE CONSTRAINT TRIGGER events_wake
            AFTER INSERT ON outbox.events
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION outbox.wake_dispatcher('outbox_events');
    END IF;
END
$$;

-- Marks p_owner idle (waiting on LISTEN p_channel) or busy. Idle rows of backends that no
-- longer exist (a crashed dispatcher) are removed on the way, so they stop costing NOTIFYs.
CREATE OR REPLACE FUNCTION outbox.set_idle(p_owner text, p_idle boolean,
                                           p_channel text DEFAULT 'outbox_messages')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
BEGIN
    IF p_owner IS NULL OR p_owner = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'outbox.set_idle: p_owner is required';
    END IF;
    IF p_channel = 'outbox_messages' THEN
        -- the claiming session: a dispatcher back from a reconnect says so at once
        PERFORM outbox.note_session(p_owner);
    END IF;
    IF p_idle THEN
        DELETE FROM outbox.dispatcher_idle d
         WHERE d.backend_pid IS NOT NULL
           AND d.owner <> p_owner
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = d.backend_pid);
        INSERT INTO outbox.dispatcher_idle AS d (owner, channel, since, backend_pid)
        VALUES (p_owner, p_channel, now(), pg_backend_pid())
        ON CONFLICT (owner, channel) DO UPDATE SET backend_pid = excluded.backend_pid
            WHERE d.backend_pid IS DISTINCT FROM excluded.backend_pid;
    ELSE
        DELETE FROM outbox.dispatcher_idle d WHERE d.owner = p_owner AND d.channel = p_channel;
    END IF;
END
$fn$;
COMMENT ON FUNCTION outbox.set_idle(text, boolean, text) IS
    'Dispatcher: register (true) or clear (false) owner as idle on a wake-up channel; see outbox.wake_dispatcher()';
