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
    INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, message_id)
    SELECT 'email', n.message_id, 'email.queued',
           outbox.lifecycle_payload(n.id, n.message_id, n.state, n.attempts, NULL, NULL),
           n.id
      FROM new_rows n
     WHERE (SELECT s.lifecycle_events FROM outbox.settings s);
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
