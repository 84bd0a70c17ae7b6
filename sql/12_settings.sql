-- Settings the dispatcher keeps in step with its configuration.

-- Turns the email lifecycle events (email.queued/sent/retry/failed/dead in outbox.events) on
-- or off. They exist to be mirrored to Kafka: a dispatcher without a Kafka mirror turns them
-- off, so outbox.events does not grow with rows nobody publishes; the mirror's leader turns
-- them on from kafka.lifecycle_events. Returns the value now in force.
CREATE OR REPLACE FUNCTION outbox.set_lifecycle_events(p_on boolean)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
BEGIN
    IF p_on IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'outbox.set_lifecycle_events: p_on is required';
    END IF;
    UPDATE outbox.settings s SET lifecycle_events = p_on WHERE s.lifecycle_events IS DISTINCT FROM p_on;
    RETURN p_on;
END
$fn$;
COMMENT ON FUNCTION outbox.set_lifecycle_events(boolean) IS
    'Dispatcher: switch the email lifecycle events on or off (off when no Kafka mirror runs)';
