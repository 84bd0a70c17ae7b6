-- Completion of delivery attempts: one set-based, fenced statement per batch that records the
-- outcome, the per-recipient results and the lifecycle events in the caller's transaction.

-- Applies a batch of attempt results for p_owner. p_results is a JSON array of
--   {"id": bigint, "attempt": int, "outcome": "sent"|"retry"|"failed", "code": int|null,
--    "error": text|null, "retry_in_ms": bigint, "unknown": bool,
--    "recipients": [{"address", "kind": "to"|"cc"|"bcc", "state": "sent"|"failed"|"pending",
--                    "code", "error"}]}
-- A result applies only while the row is still leased to p_owner for that attempt
-- (state 'sending', lease_owner, attempts); otherwise nothing of it is written, recipients
-- included. retry becomes 'dead' once attempts >= max_attempts. A recipient recorded 'sent'
-- stays 'sent'. Returns the ids whose result was applied (a missing id lost its lease).
CREATE OR REPLACE FUNCTION outbox.complete(p_owner text, p_results jsonb)
RETURNS SETOF bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    bad     text;
    changes outbox.lifecycle_change[];
    res     jsonb;
    ids     bigint[];
BEGIN
    PERFORM outbox.check_lease_args('complete', p_owner, NULL);
    IF jsonb_typeof(p_results) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'outbox.complete: p_results must be a JSON array';
    END IF;
    -- Refuse the whole batch on a malformed element rather than guess.
    SELECT e::text INTO bad
      FROM jsonb_array_elements(p_results) e
     WHERE jsonb_typeof(e) <> 'object'
        OR jsonb_typeof(e -> 'id') IS DISTINCT FROM 'number'
        OR jsonb_typeof(e -> 'attempt') IS DISTINCT FROM 'number'
        OR (e ->> 'outcome') IS NULL OR (e ->> 'outcome') NOT IN ('sent', 'retry', 'failed')
        OR (e ? 'recipients' AND jsonb_typeof(e -> 'recipients') NOT IN ('array', 'null'))
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('outbox.complete: malformed result %s (need id, attempt, outcome sent|retry|failed)',
                             left(bad, 200));
    END IF;
    SELECT rc::text INTO bad
      FROM jsonb_array_elements(p_results) e
     CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(e -> 'recipients') = 'array'
                                                  THEN e -> 'recipients' ELSE '[]' END) rc
     WHERE jsonb_typeof(rc) <> 'object'
        OR jsonb_typeof(rc -> 'address') IS DISTINCT FROM 'string'
        OR coalesce(rc ->> 'kind', 'to') NOT IN ('to', 'cc', 'bcc')
        OR coalesce(rc ->> 'state', 'pending') NOT IN ('sent', 'failed', 'pending')
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('outbox.complete: malformed recipient %s (need address, kind to|cc|bcc, state sent|failed|pending)',
                             left(bad, 200));
    END IF;

    -- One result per id, looked up by id (res: id text -> result) rather than joined, so
    -- that the UPDATE reaches rows only through "id = ANY (ids)" on the primary key
    -- (sql/60_plans.sql: why a join here walked the whole table).
    SELECT jsonb_object_agg(r.id::text, to_jsonb(r)), array_agg(r.id)
      INTO res, ids
      FROM (SELECT DISTINCT ON (x.id) x.*
              FROM jsonb_to_recordset(p_results)
                   AS x(id bigint, attempt integer, outcome text, code integer, error text,
                        retry_in_ms bigint, unknown boolean, recipients jsonb)
             ORDER BY x.id) r;

    WITH u AS (
        UPDATE outbox.messages m
           SET state = CASE res -> m.id::text ->> 'outcome'
                           WHEN 'sent' THEN 'sent'
                           WHEN 'failed' THEN 'failed'
                           ELSE CASE WHEN m.attempts >= m.max_attempts THEN 'dead' ELSE 'pending' END
                       END,
               sent_at = CASE WHEN res -> m.id::text ->> 'outcome' = 'sent' THEN now() ELSE m.sent_at END,
               next_attempt_at = CASE WHEN res -> m.id::text ->> 'outcome' = 'retry' AND m.attempts < m.max_attempts
                                      THEN now() + make_interval(secs => greatest(coalesce((res -> m.id::text ->> 'retry_in_ms')::bigint, 0), 0) / 1000.0)
                                      ELSE m.next_attempt_at END,
               last_smtp_code = (res -> m.id::text ->> 'code')::integer,
               last_error = res -> m.id::text ->> 'error',
               outcome_unknown = coalesce((res -> m.id::text ->> 'unknown')::boolean, false),
               lease_owner = NULL,
               lease_expires_at = NULL,
               updated_at = now()
         WHERE m.id = ANY (ids)
           -- "IS TRUE" keeps the lease index (state = 'sending') out: with statistics
           -- that saw few leased rows it walked every leased row of every dispatcher
           AND (m.state = 'sending') IS TRUE
           AND m.lease_owner = p_owner
           AND m.attempts = (res -> m.id::text ->> 'attempt')::integer
        RETURNING m.id, m.message_id, m.state, m.attempts, m.last_smtp_code, m.last_error
    ), rcpt AS (
        INSERT INTO outbox.message_recipients AS mr (message, address, kind, state, smtp_code, last_error, attempts, updated_at)
        SELECT DISTINCT ON (u.id, x.address)
               u.id, x.address, coalesce(x.kind, 'to'),
               coalesce(x.state, CASE u.state WHEN 'sent' THEN 'sent' WHEN 'failed' THEN 'failed' WHEN 'dead' THEN 'failed' ELSE 'pending' END),
               x.code, x.error, 1, now()
          FROM u
         CROSS JOIN LATERAL jsonb_to_recordset(coalesce(nullif(res -> u.id::text -> 'recipients', 'null'), '[]'))
               AS x(address text, kind text, state text, code integer, error text)
         ORDER BY u.id, x.address
        ON CONFLICT (message, address) DO UPDATE
           SET state = CASE WHEN mr.state = 'sent' THEN 'sent' ELSE excluded.state END,
               smtp_code = CASE WHEN mr.state = 'sent' THEN mr.smtp_code ELSE excluded.smtp_code END,
               last_error = CASE WHEN mr.state = 'sent' THEN mr.last_error ELSE excluded.last_error END,
               kind = excluded.kind,
               attempts = mr.attempts + 1,
               updated_at = now()
    )
    SELECT array_agg(ROW(u.id, u.message_id, u.state, u.attempts, u.last_smtp_code,
                     u.last_error)::outbox.lifecycle_change ORDER BY u.id) INTO changes FROM u;
    PERFORM outbox.lifecycle_events(changes);
    RETURN QUERY SELECT c.id FROM unnest(changes) c;
END
$fn$;
COMMENT ON FUNCTION outbox.complete(text, jsonb) IS
    'Dispatcher: apply a batch of fenced attempt results (sent/retry/failed), recipients and lifecycle events; returns applied ids';
