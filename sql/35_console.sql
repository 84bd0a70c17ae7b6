-- Read side of the web console (dispatcher/console.c): one JSON document per page, each query
-- bounded by a LIMIT over an index, so a console left open on a busy queue costs little.
-- SECURITY DEFINER because the dispatcher's role reads messages only through functions.
-- Bodies and extra headers leave the database only when the caller asks (http.console_show_body).

-- Recent failed and dead messages with their per-recipient replies, and delivery rate and
-- latency over the last hour in 5-minute buckets (0 = the newest).
--   failures: the newest p_limit failed/dead by updated_at (messages_finished_bad_idx)
--   buckets:  sent messages among the newest p_window messages by id (primary key): a bound
--             on the work, not a sample; on a queue with more than p_window messages an
--             hour the rate is a lower bound, which the page says
CREATE OR REPLACE FUNCTION outbox.console_overview(p_limit integer DEFAULT 20,
                                                   p_window integer DEFAULT 20000)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
    SELECT jsonb_build_object(
        'now', now(),
        'window', p_window,
        'failures', (
            SELECT coalesce(jsonb_agg(f ORDER BY f.updated_at DESC, f.id DESC), '[]'::jsonb)
              FROM (SELECT m.id, m.message_id, m.state, m.subject, m.attempts, m.max_attempts,
                           m.last_smtp_code, m.last_error, m.updated_at,
                           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                       'address', r.address, 'kind', r.kind, 'state', r.state,
                                       'smtp_code', r.smtp_code, 'last_error', r.last_error)
                                       ORDER BY r.kind, r.address), '[]'::jsonb)
                              FROM outbox.message_recipients r WHERE r.message = m.id) AS replies
                      FROM outbox.messages m
                     WHERE m.state IN ('failed', 'dead')
                     ORDER BY m.updated_at DESC
                     LIMIT least(greatest(p_limit, 1), 200)) f),
        'buckets', (
            SELECT coalesce(jsonb_agg(b ORDER BY b.bucket), '[]'::jsonb)
              FROM (SELECT floor(extract(epoch FROM now() - r.sent_at) / 300)::int AS bucket,
                           count(*) AS sent,
                           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY r.latency)::numeric, 3) AS p50,
                           round(max(r.latency)::numeric, 3) AS max
                      FROM (SELECT x.sent_at,
                                   extract(epoch FROM x.sent_at - greatest(x.created_at, x.not_before))
                                       AS latency
                              FROM (SELECT id, state, sent_at, created_at, not_before
                                      FROM outbox.messages
                                     ORDER BY id DESC
                                     LIMIT least(greatest(p_window, 1), 1000000)) x
                             WHERE x.state = 'sent' AND x.sent_at > now() - interval '1 hour') r
                     GROUP BY 1) b),
        'mirror_failed', (SELECT count(*) FROM outbox.events e WHERE e.state = 'failed'));
$fn$;
COMMENT ON FUNCTION outbox.console_overview(integer, integer) IS
    'Web console: recent failed/dead messages with per-recipient replies; sent count and latency per 5 minutes over the last hour';

-- One message by id or Message-ID (either may be NULL) with its recipients' outcomes and its
-- lifecycle events, which are looked up among the newest p_window events (events carry no
-- index on message_id). NULL when there is no such message.
CREATE OR REPLACE FUNCTION outbox.console_message(p_id bigint, p_message_id text,
                                                  p_show_body boolean DEFAULT false,
                                                  p_window integer DEFAULT 20000)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
    SELECT jsonb_build_object(
        'window', p_window,
        'message', to_jsonb(m) - 'body_text' - 'body_html' - 'headers'
                   || CASE WHEN p_show_body THEN jsonb_build_object(
                          'body_text', m.body_text, 'body_html', m.body_html, 'headers', m.headers)
                      ELSE '{}'::jsonb END,
        'recipients', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'address', r.address, 'kind', r.kind, 'state', r.state,
                       'smtp_code', r.smtp_code, 'last_error', r.last_error,
                       'attempts', r.attempts, 'updated_at', r.updated_at)
                       ORDER BY CASE r.kind WHEN 'to' THEN 1 WHEN 'cc' THEN 2 ELSE 3 END, r.address),
                       '[]'::jsonb)
              FROM outbox.recipient_status r WHERE r.message = m.id),
        'events', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', e.id, 'type', e.type, 'payload', e.payload, 'created_at', e.created_at,
                       'state', e.state, 'published_at', e.published_at,
                       'kafka_partition', e.kafka_partition, 'kafka_offset', e.kafka_offset)
                       ORDER BY e.id), '[]'::jsonb)
              FROM (SELECT * FROM outbox.events
                     ORDER BY id DESC LIMIT least(greatest(p_window, 1), 1000000)) e
             WHERE e.message_id = m.id))
      FROM (SELECT * FROM outbox.messages WHERE id = p_id
            UNION ALL
            SELECT * FROM outbox.messages WHERE message_id = p_message_id
            LIMIT 1) m;
$fn$;
COMMENT ON FUNCTION outbox.console_message(bigint, text, boolean, integer) IS
    'Web console: one message by id or Message-ID with recipients and lifecycle events (body only on request)';

-- Messages whose to/cc/bcc contain p_text (case-insensitive), newest first, among the newest
-- p_window messages; at most p_limit.
CREATE OR REPLACE FUNCTION outbox.console_search(p_text text, p_limit integer DEFAULT 50,
                                                 p_window integer DEFAULT 20000)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
    SELECT jsonb_build_object(
        'window', p_window,
        'messages', coalesce(jsonb_agg(s ORDER BY s.id DESC), '[]'::jsonb))
      FROM (SELECT m.id, m.message_id, m.state, m.subject, m.attempts, m.last_smtp_code,
                   m.last_error, m.created_at, m.sent_at, m.recipients, m.cc,
                   cardinality(m.bcc) AS bcc_count
              FROM (SELECT * FROM outbox.messages
                     ORDER BY id DESC LIMIT least(greatest(p_window, 1), 1000000)) m
             WHERE length(p_text) > 0
               AND EXISTS (SELECT 1 FROM unnest(m.recipients || m.cc || m.bcc) a
                            WHERE strpos(lower(a), lower(p_text)) > 0)
             ORDER BY m.id DESC
             LIMIT least(greatest(p_limit, 1), 500)) s;
$fn$;
COMMENT ON FUNCTION outbox.console_search(text, integer, integer) IS
    'Web console: newest messages with a to/cc/bcc address containing the text';
