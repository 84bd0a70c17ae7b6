-- Operator and producer actions on single messages: cancel a pending one, requeue a failed or
-- dead one. Both write a lifecycle event (email.cancelled / email.requeued).

-- Lifecycle events are written by outbox.lifecycle_events (sql/03_lifecycle.sql).
DROP FUNCTION IF EXISTS outbox.lifecycle_event(outbox.messages, text);

-- Cancels message p_id if it is still pending (not being sent, not finished).
-- Returns true if it was cancelled, false if it does not exist or is in another state.
CREATE OR REPLACE FUNCTION outbox.cancel(p_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    m outbox.messages;
BEGIN
    UPDATE outbox.messages x
       SET state = 'cancelled', updated_at = now()
     WHERE x.id = p_id AND x.state = 'pending'
    RETURNING x.* INTO m;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM outbox.lifecycle_events(
                ARRAY[ROW(m.id, m.message_id, m.state, m.attempts, m.last_smtp_code,
                          m.last_error)::outbox.lifecycle_change],
                'email.cancelled');
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION outbox.cancel(bigint) IS
    'Cancel a pending message; true if cancelled, false if absent or not pending';

-- Puts a failed or dead message back in the queue: pending, due now, attempts reset to 0.
-- last_smtp_code and last_error are kept until the next attempt overwrites them, and
-- recipients already delivered stay delivered (the retry skips them). Wakes dispatchers.
-- Returns true if requeued, false if it does not exist or is in another state.
CREATE OR REPLACE FUNCTION outbox.requeue(p_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    m outbox.messages;
BEGIN
    UPDATE outbox.messages x
       SET state = 'pending', attempts = 0, next_attempt_at = now(), outcome_unknown = false,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
     WHERE x.id = p_id AND x.state IN ('failed', 'dead')
    RETURNING x.* INTO m;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM outbox.lifecycle_events(
                ARRAY[ROW(m.id, m.message_id, m.state, m.attempts, m.last_smtp_code,
                          m.last_error)::outbox.lifecycle_change],
                'email.requeued');
    -- A rare operator action: wake any listener without consulting dispatcher_idle.
    PERFORM pg_notify('outbox_messages', '');
    RETURN true;
END
$fn$;
COMMENT ON FUNCTION outbox.requeue(bigint) IS
    'Requeue a failed or dead message (pending, attempts 0, due now); true if requeued';
