-- Status views for producers, operators and the dispatcher's metrics. Columns are only ever
-- appended (CREATE OR REPLACE VIEW cannot drop or reorder them).

CREATE OR REPLACE VIEW outbox.message_status AS
SELECT m.id, m.message_id, m.state, m.attempts, m.last_smtp_code, m.last_error, m.created_at,
       m.sent_at, m.next_attempt_at, m.outcome_unknown, m.max_attempts, m.idempotency_key, m.key,
       m.updated_at
  FROM outbox.messages m;
COMMENT ON VIEW outbox.message_status IS 'One row per message: delivery state and last outcome';

-- Every recipient of every message. A recipient without an outcome row yet takes its state
-- from the message: sent -> sent, failed/dead -> failed, cancelled -> cancelled, else pending.
CREATE OR REPLACE VIEW outbox.recipient_status AS
SELECT m.id AS message, m.message_id, a.address, a.kind,
       coalesce(r.state, CASE m.state WHEN 'sent' THEN 'sent'
                                      WHEN 'failed' THEN 'failed'
                                      WHEN 'dead' THEN 'failed'
                                      WHEN 'cancelled' THEN 'cancelled'
                                      ELSE 'pending' END) AS state,
       coalesce(r.smtp_code, CASE WHEN m.state = 'sent' THEN m.last_smtp_code END) AS smtp_code,
       r.last_error, coalesce(r.attempts, CASE WHEN m.state = 'sent' THEN m.attempts ELSE 0 END) AS attempts,
       coalesce(r.updated_at, CASE WHEN m.state = 'sent' THEN m.sent_at END) AS updated_at
  FROM outbox.messages m
 CROSS JOIN LATERAL (
        SELECT t.address, 'to'::text AS kind FROM unnest(m.recipients) AS t(address)
        UNION ALL
        SELECT t.address, 'cc' FROM unnest(m.cc) AS t(address)
        UNION ALL
        SELECT t.address, 'bcc' FROM unnest(m.bcc) AS t(address)
       ) a
  LEFT JOIN outbox.message_recipients r ON r.message = m.id AND r.address = a.address;
COMMENT ON VIEW outbox.recipient_status IS
    'One row per recipient (to, cc, bcc) of every message with its delivery state';

-- Counts by state; every state is listed, with 0 when no message is in it.
-- Counting the finished states scans the table: scrape it sparingly on large histories.
CREATE OR REPLACE VIEW outbox.queue_depth AS
SELECT s.state, coalesce(c.n, 0)::bigint AS count
  FROM (VALUES (1, 'pending'), (2, 'sending'), (3, 'sent'), (4, 'failed'), (5, 'dead'), (6, 'cancelled'))
       AS s(ord, state)
  LEFT JOIN (SELECT m.state, count(*) AS n FROM outbox.messages m GROUP BY m.state) c ON c.state = s.state
 ORDER BY s.ord;
COMMENT ON VIEW outbox.queue_depth IS 'Number of messages in each state (all six states, zero included)';

-- One row of cheap health figures: everything here is read through the partial indexes.
CREATE OR REPLACE VIEW outbox.queue_health AS
SELECT
    (SELECT coalesce(extract(epoch FROM now() - min(m.next_attempt_at)), 0)::double precision
       FROM outbox.messages m WHERE m.state = 'pending' AND m.next_attempt_at <= now())
        AS oldest_due_pending_age_seconds,
    (SELECT count(*) FROM outbox.messages m WHERE m.state = 'pending' AND m.next_attempt_at <= now())
        AS pending_due,
    (SELECT count(*) FROM outbox.messages m WHERE m.state = 'pending' AND m.next_attempt_at > now())
        AS pending_scheduled,
    (SELECT count(*) FROM outbox.messages m WHERE m.state = 'sending')
        AS sending,
    (SELECT count(*) FROM outbox.messages m WHERE m.state = 'sending' AND m.lease_expires_at < now())
        AS sending_lease_expired,
    (SELECT count(*) FROM outbox.messages m
      WHERE m.state = 'failed' AND m.updated_at > now() - interval '1 hour')
        AS failed_last_hour,
    (SELECT count(*) FROM outbox.messages m
      WHERE m.state = 'dead' AND m.updated_at > now() - interval '1 hour')
        AS dead_last_hour,
    (SELECT count(*) FROM outbox.dispatcher_idle d WHERE d.channel = 'outbox_messages')
        AS idle_dispatchers;
COMMENT ON VIEW outbox.queue_health IS
    'Queue health: age of the oldest due pending message (seconds late), due/scheduled/in-flight counts, recent failures';

-- Kafka mirror backlog: events not yet published, the age of the oldest, and failures.
CREATE OR REPLACE VIEW outbox.mirror_lag AS
SELECT count(*) AS unpublished,
       coalesce(extract(epoch FROM now() - min(e.created_at)), 0)::double precision AS oldest_unpublished_age_seconds,
       (SELECT count(*) FROM outbox.events f WHERE f.state = 'failed') AS failed
  FROM outbox.events e
 WHERE e.state = 'pending';
COMMENT ON VIEW outbox.mirror_lag IS 'Kafka mirror backlog: unpublished events, oldest age in seconds, failed events';

-- Like queue_depth without reading the finished history: the unfinished and failure states
-- are counted exactly through their partial indexes; sent and cancelled (nearly the whole
-- table) are counted too while the table is under 64 MiB, and above that estimated from the
-- planner's statistics (the state's frequency times the row count, as of the last ANALYZE). The dispatcher reads this every few seconds: counting
-- millions of sent rows there put a full scan of the table on the claim's connection.
CREATE OR REPLACE FUNCTION outbox.queue_depth_estimate_rows()
RETURNS TABLE (state text, count bigint, exact boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    rel     regclass[];
    bytes   bigint;
    tuples  double precision;
    small   boolean;
    f_sent  double precision;
    f_canc  double precision;
BEGIN
    rel := ARRAY(SELECT 'outbox.messages'::regclass
                 UNION ALL
                 SELECT i.inhrelid::regclass FROM pg_inherits i WHERE i.inhparent = 'outbox.messages'::regclass);
    SELECT sum(pg_relation_size(c.oid)), sum(greatest(c.reltuples, 0)) INTO bytes, tuples
      FROM pg_class c WHERE c.oid = ANY (rel) AND c.relkind = 'r';
    small := coalesce(bytes, 0) < 67108864;
    -- each count below is its own statement, planned on its own partial index
    state := 'pending'; count := (SELECT count(*) FROM outbox.messages m WHERE m.state = 'pending'); exact := true;
    RETURN NEXT;
    state := 'sending'; count := (SELECT count(*) FROM outbox.messages m WHERE m.state = 'sending');
    RETURN NEXT;
    IF small THEN
        state := 'sent'; count := (SELECT count(*) FROM outbox.messages m WHERE m.state = 'sent');
        RETURN NEXT;
    ELSE
        SELECT v.f INTO f_sent
          FROM (SELECT st.most_common_vals::text::text[] AS vals, st.most_common_freqs AS freqs
                  FROM pg_stats st
                 WHERE st.schemaname = 'outbox' AND st.tablename = 'messages' AND st.attname = 'state'
                 ORDER BY st.inherited DESC LIMIT 1) s
         CROSS JOIN LATERAL unnest(s.vals, s.freqs) AS v(state, f) WHERE v.state = 'sent';
        SELECT v.f INTO f_canc
          FROM (SELECT st.most_common_vals::text::text[] AS vals, st.most_common_freqs AS freqs
                  FROM pg_stats st
                 WHERE st.schemaname = 'outbox' AND st.tablename = 'messages' AND st.attname = 'state'
                 ORDER BY st.inherited DESC LIMIT 1) s
         CROSS JOIN LATERAL unnest(s.vals, s.freqs) AS v(state, f) WHERE v.state = 'cancelled';
        state := 'sent'; count := round(coalesce(f_sent, 0) * tuples)::bigint; exact := false;
        RETURN NEXT;
    END IF;
    state := 'failed'; count := (SELECT count(*) FROM outbox.messages m WHERE m.state = 'failed'); exact := true;
    RETURN NEXT;
    state := 'dead'; count := (SELECT count(*) FROM outbox.messages m WHERE m.state = 'dead');
    RETURN NEXT;
    IF small THEN
        state := 'cancelled'; count := (SELECT count(*) FROM outbox.messages m WHERE m.state = 'cancelled');
    ELSE
        state := 'cancelled'; count := round(coalesce(f_canc, 0) * tuples)::bigint; exact := false;
    END IF;
    RETURN NEXT;
END
$fn$;

REVOKE ALL ON FUNCTION outbox.queue_depth_estimate_rows() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.queue_depth_estimate_rows() TO outbox_producer, outbox_dispatcher;

CREATE OR REPLACE VIEW outbox.queue_depth_estimate AS
SELECT q.state, q.count, q.exact FROM outbox.queue_depth_estimate_rows() q;
COMMENT ON VIEW outbox.queue_depth_estimate IS
    'Messages per state without a scan of the history: exact for pending, sending, failed, dead; sent and cancelled estimated from statistics';
