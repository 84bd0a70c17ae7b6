-- Privileges of the two group roles. Grant them to login roles:
--   GRANT outbox_producer TO app;  GRANT outbox_dispatcher TO outboxd;
-- Re-applied on every migrate, so a manual change to these grants is reverted.

REVOKE ALL ON SCHEMA outbox FROM PUBLIC;
GRANT USAGE ON SCHEMA outbox TO outbox_producer, outbox_dispatcher;

-- Tables: nobody but the owner has anything unless granted below. The insert triggers read
-- settings and dispatcher_idle as the inserting role, so those two are readable by anyone
-- who can reach the schema (they hold no secrets).
REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM PUBLIC;
REVOKE ALL ON outbox.messages, outbox.message_recipients, outbox.events, outbox.settings,
              outbox.dispatcher_idle FROM outbox_producer, outbox_dispatcher;
GRANT SELECT ON outbox.settings, outbox.dispatcher_idle TO PUBLIC;

-- Producer: INSERT of the producer columns only; SELECT of the columns an
-- `INSERT ... ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, message_id` needs.
GRANT INSERT (sender, recipients, cc, bcc, reply_to, subject, body_text, body_html, headers,
              idempotency_key, key, priority, not_before, max_attempts)
    ON outbox.messages TO outbox_producer;
GRANT SELECT (id, message_id, idempotency_key) ON outbox.messages TO outbox_producer;
GRANT INSERT (aggregate_type, aggregate_id, type, payload, topic, headers)
    ON outbox.events TO outbox_producer;
GRANT SELECT (id, event_id) ON outbox.events TO outbox_producer;

-- Dispatcher: everything on messages goes through the functions; the Kafka mirror reads
-- events directly and records publication results.
GRANT SELECT ON outbox.events TO outbox_dispatcher;
GRANT UPDATE (state, published_at, kafka_partition, kafka_offset, last_error)
    ON outbox.events TO outbox_dispatcher;

-- Views (they run with the owner's rights, so no table privilege is needed to read them).
GRANT SELECT ON outbox.message_status, outbox.recipient_status, outbox.queue_depth, outbox.queue_depth_estimate,
                outbox.queue_health, outbox.mirror_lag
    TO outbox_producer, outbox_dispatcher;

-- Functions: nothing is executable by PUBLIC except the pure validators the insert
-- triggers call as the inserting role.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    outbox.addr_spec_problem(text), outbox.mailbox_problem(text), outbox.mailbox_address(text),
    outbox.check_address_list(text, text[], text[]), outbox.check_headers(text, jsonb, text[]),
    outbox.lifecycle_type(text), outbox.lifecycle_payload(bigint, text, text, integer, integer, text),
    outbox.messages_before_write(), outbox.events_before_write(),
    outbox.wake_dispatcher()
    TO PUBLIC;
GRANT EXECUTE ON FUNCTION
    outbox.claim(text, integer, integer), outbox.claim(text, integer, integer, boolean), outbox.complete(text, jsonb),
    outbox.release(text, bigint[]), outbox.release(text, bigint[], integer[]), outbox.release_owner(text),
    outbox.renew(text, bigint[], integer), outbox.renew(text, bigint[], integer[], integer),
    outbox.set_idle(text, boolean, text),
    outbox.set_lifecycle_events(boolean)
    TO outbox_dispatcher;
GRANT EXECUTE ON FUNCTION outbox.cancel(bigint), outbox.requeue(bigint) TO outbox_producer;

-- The web console on the dispatcher's HTTP port reads through its own functions and, when a
-- console token is configured, requeues and cancels like an operator.
GRANT EXECUTE ON FUNCTION
    outbox.console_overview(integer, integer), outbox.console_message(bigint, text, boolean, integer),
    outbox.console_search(text, integer, integer), outbox.cancel(bigint), outbox.requeue(bigint)
    TO outbox_dispatcher;

-- Readiness and `outboxd status` read the applied schema version and the layout (the table
-- exists once `outboxd migrate` has run).
GRANT EXECUTE ON FUNCTION outbox.layout() TO outbox_dispatcher;
DO $grant$
BEGIN
    IF to_regclass('outbox.schema_migrations') IS NOT NULL THEN
        GRANT SELECT ON outbox.schema_migrations TO outbox_dispatcher;
    END IF;
END
$grant$;
