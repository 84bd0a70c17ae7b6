-- `outboxd status` in one call: the queue's health as one JSON document. SECURITY DEFINER so
-- the dispatcher's own login (outbox_dispatcher, which may not read outbox.messages) can run
-- it: it returns counts, ages and the last errors of failed rows, never message content.
CREATE OR REPLACE FUNCTION outbox.status_report()
RETURNS json
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    version integer;
BEGIN
    -- migrate creates the bookkeeping table; a schema applied by hand has none
    IF to_regclass('outbox.schema_migrations') IS NOT NULL THEN
        EXECUTE 'SELECT max(version) FROM outbox.schema_migrations' INTO version;
    END IF;
    RETURN json_build_object(
        'depth', (SELECT json_object_agg(q.state, q.n) FROM outbox.queue_depth AS q(state, n)),
        'health', (SELECT row_to_json(h) FROM outbox.queue_health h),
        'sent_last_minute', (SELECT count(*) FROM outbox.messages m
                              WHERE m.state = 'sent' AND m.sent_at > now() - interval '1 minute'),
        'created_last_minute', (SELECT count(*) FROM outbox.messages m
                                 WHERE m.created_at > now() - interval '1 minute'),
        'mirror', (SELECT row_to_json(l) FROM outbox.mirror_lag l),
        'recent_failures', (SELECT coalesce(json_agg(f), '[]') FROM (
            SELECT m.id, m.state, m.last_smtp_code, m.last_error, m.updated_at FROM outbox.messages m
             WHERE m.state IN ('failed', 'dead') AND m.updated_at > now() - interval '1 hour'
             ORDER BY m.updated_at DESC LIMIT 5) f),
        'retention', (SELECT json_object_agg(r.tbl, json_build_object('removed_total', r.removed_total,
                          'last_pass_removed', r.last_pass_removed, 'partitions_dropped', r.partitions_dropped,
                          'last_pass_age_seconds', extract(epoch FROM now() - r.last_pass_at),
                          'last_batch_age_seconds', extract(epoch FROM now() - r.last_batch_at),
                          'by', r.last_owner))
                        FROM outbox.retention_state r),
        'locks', (SELECT coalesce(json_object_agg(h.lock, json_build_object('pid', h.pid, 'user', h.usename,
                          'application_name', h.application_name, 'outboxd', h.outboxd,
                          'backend_start', h.backend_start)), '{}')
                    FROM outbox.lock_holders() h),
        'layout', outbox.layout(),
        'schema_version', version);
END
$fn$;
COMMENT ON FUNCTION outbox.status_report() IS
    'outboxd status: depth, ages, rates, mirror lag, recent failures, retention, lock holders (one JSON document)';

REVOKE ALL ON FUNCTION outbox.status_report() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.status_report() TO outbox_dispatcher;
