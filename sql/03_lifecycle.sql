-- Email lifecycle events: the 'email.queued' event written in the producer's own transaction,
-- and the naming of the events that claim/complete/cancel/requeue write.

-- Every lifecycle event has: aggregate_type 'email', aggregate_id = messages.message_id (the
-- RFC 5322 Message-ID, stable across retries and restores, so one message's events share a
-- Kafka key and keep their order), message_id = messages.id, and payload
-- {id, message_id, state, attempts, code, error} describing the row after the change.
CREATE OR REPLACE FUNCTION outbox.lifecycle_type(p_state text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT 'email.' || CASE p_state WHEN 'pending' THEN 'retry' ELSE p_state END
$fn$;
COMMENT ON FUNCTION outbox.lifecycle_type(text) IS
    'Lifecycle event type for a message that just entered p_state (pending after an attempt = email.retry)';

-- The payload of every lifecycle event: the message row after the change.
CREATE OR REPLACE FUNCTION outbox.lifecycle_payload(p_id bigint, p_message_id text, p_state text,
                                                    p_attempts integer, p_code integer, p_error text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT jsonb_build_object('id', p_id, 'message_id', p_message_id, 'state', p_state,
                              'attempts', p_attempts, 'code', p_code, 'error', p_error)
$fn$;
COMMENT ON FUNCTION outbox.lifecycle_payload(bigint, text, text, integer, integer, text) IS
    'Payload of an email lifecycle event: {id, message_id, state, attempts, code, error}';

-- One lifecycle change: a message row's fields after the change, as lifecycle_events takes
-- them. A type of its own rather than the table's row type, which a partitioning switch
-- replaces.
DO $do$
BEGIN
    IF to_regtype('outbox.lifecycle_change') IS NULL THEN
        CREATE TYPE outbox.lifecycle_change AS (id bigint, message_id text, state text, attempts integer,
                                                code integer, error text);
    END IF;
END
$do$;

-- The one writer of lifecycle events: an event per change, typed p_type, or by the state
-- the message entered when p_type is NULL; nothing when lifecycle events are off.
-- PL/pgSQL, not SQL: a SQL function's INSERT was parsed and planned again on every call, a
-- quarter of each outcome write (outbox.complete), lifecycle events on or off.
CREATE OR REPLACE FUNCTION outbox.lifecycle_events(p_changes outbox.lifecycle_change[], p_type text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF cardinality(p_changes) > 0 AND (SELECT s.lifecycle_events FROM outbox.settings s) THEN
        INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, message_id)
        SELECT 'email', c.message_id, coalesce(p_type, outbox.lifecycle_type(c.state)),
               outbox.lifecycle_payload(c.id, c.message_id, c.state, c.attempts, c.code, c.error),
               c.id
          FROM unnest(p_changes) c;
    END IF;
END
$fn$;
COMMENT ON FUNCTION outbox.lifecycle_events(outbox.lifecycle_change[], text) IS
    'Internal: writes one email lifecycle event per change when outbox.settings.lifecycle_events is on';

-- Statement-level AFTER INSERT trigger on messages: one INSERT ... SELECT per statement
-- from the transition table, so a bulk insert pays one extra statement, not one per row.
-- SECURITY DEFINER because producers may not write outbox.events.message_id themselves.
CREATE OR REPLACE FUNCTION outbox.messages_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
BEGIN
    -- checked here too, so that a bulk insert with events off builds no array
    IF (SELECT s.lifecycle_events FROM outbox.settings s) THEN
        PERFORM outbox.lifecycle_events(
                    array_agg((n.id, n.message_id, n.state, n.attempts, NULL, NULL)::outbox.lifecycle_change
                              ORDER BY n.id),
                    'email.queued')
           FROM new_rows n;
    END IF;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION outbox.messages_after_insert() IS
    'Trigger: writes one email.queued lifecycle event per inserted message when lifecycle_events is on';

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'outbox.messages'::regclass AND tgname = 'messages_after_insert') THEN
        CREATE TRIGGER messages_after_insert
            AFTER INSERT ON outbox.messages
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION outbox.messages_after_insert();
    END IF;
END
$$;
