-- Leasing: claim (with rescue of expired leases), renew, release and release_owner. Every
-- function is fenced on the lease owner; only the outbox_dispatcher role may call them.

-- Validates the arguments shared by the lease functions.
CREATE OR REPLACE FUNCTION outbox.check_lease_args(p_fn text, p_owner text, p_lease_seconds integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    IF p_owner IS NULL OR p_owner = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('outbox.%s: p_owner is required', p_fn);
    END IF;
    IF p_lease_seconds IS NOT NULL AND p_lease_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('outbox.%s: p_lease_seconds must be between 1 and 86400', p_fn);
    END IF;
END
$fn$;
COMMENT ON FUNCTION outbox.check_lease_args(text, text, integer) IS
    'Raises 22023 for an empty owner or an out-of-range lease length';

-- Moves leased rows whose lease is lost back into the queue: to 'dead' when attempts are
-- exhausted, else to 'pending' due now, with outcome_unknown set (the lost attempt may have
-- delivered). Writes the email.dead / email.retry lifecycle events. Returns the rows moved.
-- p_owner NULL: rows whose lease expired (at most p_limit, skipping locked ones);
-- p_owner given: every row leased to p_owner (a restarting dispatcher's own leftovers).
CREATE OR REPLACE FUNCTION outbox.recover_leases(p_owner text, p_limit integer)
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
    ids     bigint[];
    changes outbox.lifecycle_change[];
BEGIN
    -- Two separate scans so each uses the lease index with a plain condition.
    IF p_owner IS NULL THEN
        SELECT array_agg(x.id) INTO ids
          FROM (SELECT m.id FROM outbox.messages m
                 WHERE m.state = 'sending' AND m.lease_expires_at < now()
                 ORDER BY m.lease_expires_at
                 LIMIT p_limit
                   FOR UPDATE SKIP LOCKED) x;
    ELSE
        SELECT array_agg(x.id) INTO ids
          FROM (SELECT m.id FROM outbox.messages m
                 WHERE m.state = 'sending' AND m.lease_owner = p_owner
                   FOR UPDATE SKIP LOCKED) x;
    END IF;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;

    WITH moved AS (
        UPDATE outbox.messages m
           SET state = CASE WHEN m.attempts >= m.max_attempts THEN 'dead' ELSE 'pending' END,
               next_attempt_at = CASE WHEN m.attempts >= m.max_attempts THEN m.next_attempt_at ELSE now() END,
               last_error = CASE WHEN m.attempts >= m.max_attempts
                                 THEN 'lease expired, attempts exhausted'
                                 ELSE 'lease expired, outcome unknown' END,
               outcome_unknown = true,
               lease_owner = NULL,
               lease_expires_at = NULL,
               updated_at = now()
         WHERE m.id = ANY (ids) AND m.state = 'sending'
        RETURNING m.id, m.message_id, m.state, m.attempts, m.last_smtp_code, m.last_error
    )
    SELECT array_agg(ROW(moved.id, moved.message_id, moved.state, moved.attempts, moved.last_smtp_code,
                         moved.last_error)::outbox.lifecycle_change ORDER BY moved.id) INTO changes FROM moved;
    PERFORM outbox.lifecycle_events(changes);
    RETURN coalesce(cardinality(changes), 0);
END
$fn$;
COMMENT ON FUNCTION outbox.recover_leases(text, integer) IS
    'Internal: returns lost leases (expired, or all of one owner) to pending or dead; returns the count';

-- Records that p_owner works from this session (a row per owner; written only when the
-- session changed, so a busy dispatcher does not rewrite it). Called by claim, renew and
-- set_idle: a dispatcher that reconnected says so on its first statement.
CREATE OR REPLACE FUNCTION outbox.note_session(p_owner text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    me    record;
    start timestamptz := (SELECT a.backend_start FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a);
BEGIN
    SELECT d.pid, d.backend_start, d.gone_since INTO me
      FROM outbox.dispatcher_sessions d WHERE d.owner = p_owner;
    IF FOUND AND me.pid = pg_catalog.pg_backend_pid() AND me.gone_since IS NULL
       AND me.backend_start IS NOT DISTINCT FROM start THEN
        RETURN;
    END IF;
    INSERT INTO outbox.dispatcher_sessions AS d (owner, pid, backend_start)
    VALUES (p_owner, pg_catalog.pg_backend_pid(), start)
    ON CONFLICT (owner) DO UPDATE
       SET pid = excluded.pid, backend_start = excluded.backend_start, seen_at = now(), gone_since = NULL;
END
$fn$;
COMMENT ON FUNCTION outbox.note_session(text) IS
    'Internal: record the database session p_owner works from (crash rescue by session)';

-- Crash rescue by session: records the session p_owner claims from (written only when it
-- changed, so a busy claimer does not rewrite the row), marks other owners whose session has
-- ended, and puts back the rows of owners gone for longer than settings.session_grace_seconds.
-- A kill -9, an OOM kill or a lost host ends the session within seconds (the kernel closes
-- the socket; keepalives for a vanished host), so their rows wait seconds, not the lease.
-- A paused or partitioned dispatcher keeps its session and is caught by lease expiry.
-- pg_stat_activity shows every backend's pid to any role; backend_start only to the same
-- role or pg_read_all_stats, so it is compared when visible (guards against pid reuse).
-- No advisory lock is involved: a producer cannot fake a dispatcher's liveness. Returns the
-- number of rows rescued.
CREATE OR REPLACE FUNCTION outbox.rescue_gone_sessions(p_owner text)
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
    grace  integer := (SELECT s.session_grace_seconds FROM outbox.settings s);
    gone   text;
    n      integer := 0;
BEGIN
    IF grace IS NULL OR grace = 0 THEN
        RETURN 0;
    END IF;
    PERFORM outbox.note_session(p_owner);

    -- backend activity is a snapshot per transaction: look at it as of now
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    UPDATE outbox.dispatcher_sessions d SET gone_since = now()
     WHERE d.gone_since IS NULL AND d.owner <> p_owner
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                        WHERE a.pid = d.pid
                          AND (a.backend_start IS NULL OR d.backend_start IS NULL
                               OR a.backend_start = d.backend_start));

    FOR gone IN
        SELECT d.owner FROM outbox.dispatcher_sessions d
         WHERE d.gone_since < now() - make_interval(secs => grace) AND d.owner <> p_owner
         ORDER BY d.gone_since
         LIMIT 100
           FOR UPDATE SKIP LOCKED
    LOOP
        n := n + outbox.recover_leases(gone, NULL);
        -- forget the owner once nothing of it is left (a row locked elsewhere keeps it)
        DELETE FROM outbox.dispatcher_sessions d
         WHERE d.owner = gone
           AND NOT EXISTS (SELECT 1 FROM outbox.messages m
                            WHERE m.state = 'sending' AND m.lease_owner = gone);
    END LOOP;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION outbox.rescue_gone_sessions(text) IS
    'Internal (claim): record p_owner''s session; return rows of owners whose session ended over session_grace_seconds ago';

-- Claims up to p_limit due messages for p_owner with a lease of p_lease_seconds, after first
-- (when p_rescue) rescuing the rows of dispatchers whose session is gone and up to 1000
-- expired leases. Rows are taken in priority DESC, next_attempt_at, id order with SKIP
-- LOCKED, so concurrent dispatchers get disjoint sets. Each returned row has attempt = its
-- new attempts count (pass it back to complete/release) and done_recipients = the addresses
-- already delivered by an earlier attempt (skip them).
-- The rescue is a third of a claim's cost (0.16 of 0.47 ms, a read of pg_stat_activity),
-- and under a steady load a dispatcher claims for nearly every message: outboxd asks for it
-- at most once a second (and on the first claim of each session), which is as prompt for
-- leases of minutes and a session grace of seconds.
CREATE OR REPLACE FUNCTION outbox.claim(p_owner text, p_limit integer, p_lease_seconds integer, p_rescue boolean)
RETURNS TABLE (id bigint, attempt integer, message_id text, sender text, recipients text[], cc text[],
               bcc text[], reply_to text, subject text, body_text text, body_html text, headers jsonb,
               created_at timestamptz, done_recipients text[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
#variable_conflict use_column
BEGIN
    PERFORM outbox.check_lease_args('claim', p_owner, p_lease_seconds);
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'outbox.claim: p_limit must be between 1 and 10000';
    END IF;

    IF p_rescue IS DISTINCT FROM false THEN
        PERFORM outbox.rescue_gone_sessions(p_owner);
        PERFORM outbox.recover_leases(NULL, 1000);
    END IF;

    -- The locking SELECT sits in a MATERIALIZED CTE so it runs exactly once: the
    -- `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` form can update more than n rows.
    -- The UPDATE reaches the claimed rows through "id = ANY" on the primary key, not a join
    -- (sql/60_plans.sql).
    RETURN QUERY
    WITH c AS MATERIALIZED (
        SELECT m.id
          FROM outbox.messages m
         WHERE m.state = 'pending' AND m.next_attempt_at <= now()
         ORDER BY m.priority DESC, m.next_attempt_at, m.id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), u AS (
        UPDATE outbox.messages m
           SET state = 'sending',
               lease_owner = p_owner,
               lease_expires_at = now() + make_interval(secs => p_lease_seconds),
               attempts = m.attempts + 1,
               updated_at = now()
         WHERE m.id = ANY (ARRAY(SELECT c.id FROM c))
        RETURNING m.*
    )
    SELECT u.id, u.attempts, u.message_id, u.sender, u.recipients, u.cc, u.bcc, u.reply_to,
           u.subject, u.body_text, u.body_html, u.headers, u.created_at,
           ARRAY(SELECT r.address FROM outbox.message_recipients r
                  WHERE r.message = u.id AND r.state = 'sent' ORDER BY r.address)
      FROM u
     ORDER BY u.priority DESC, u.next_attempt_at, u.id;
END
$fn$;
COMMENT ON FUNCTION outbox.claim(text, integer, integer, boolean) IS
    'Dispatcher: when p_rescue, rescue rows of gone sessions and expired leases; then lease up to p_limit due messages to p_owner; returns them in claim order';

-- The form without p_rescue always rescues first.
CREATE OR REPLACE FUNCTION outbox.claim(p_owner text, p_limit integer, p_lease_seconds integer)
RETURNS TABLE (id bigint, attempt integer, message_id text, sender text, recipients text[], cc text[],
               bcc text[], reply_to text, subject text, body_text text, body_html text, headers jsonb,
               created_at timestamptz, done_recipients text[])
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
    SELECT * FROM outbox.claim(p_owner, p_limit, p_lease_seconds, true);
$fn$;
COMMENT ON FUNCTION outbox.claim(text, integer, integer) IS
    'Dispatcher: rescue expired leases, then lease up to p_limit due messages to p_owner; returns them in claim order';

-- Checks the optional attempts array of renew and release: NULL, or one per id.
CREATE OR REPLACE FUNCTION outbox.check_attempts_arg(p_fn text, p_ids bigint[], p_attempts integer[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $fn$
BEGIN
    IF p_attempts IS NOT NULL AND cardinality(p_attempts) <> cardinality(p_ids) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('outbox.%s: p_attempts must have one attempt per id (%s ids, %s attempts)',
                             p_fn, cardinality(p_ids), cardinality(p_attempts));
    END IF;
END
$fn$;
COMMENT ON FUNCTION outbox.check_attempts_arg(text, bigint[], integer[]) IS
    'Raises 22023 unless p_attempts is NULL or as long as p_ids';

-- The attempts of renew and release by id (id text -> attempt), NULL without p_attempts.
-- They look the attempt up rather than join the ids, so that their UPDATE reaches rows only
-- through "id = ANY (p_ids)" on the primary key (sql/60_plans.sql).
CREATE OR REPLACE FUNCTION outbox.attempts_by_id(p_ids bigint[], p_attempts integer[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT CASE WHEN p_attempts IS NOT NULL
                THEN coalesce((SELECT jsonb_object_agg(x.id::text, x.attempt)
                                 FROM unnest(p_ids, p_attempts) AS x(id, attempt)
                                WHERE x.id IS NOT NULL), '{}')
           END;
$fn$;
COMMENT ON FUNCTION outbox.attempts_by_id(bigint[], integer[]) IS
    'Internal (renew, release): p_attempts keyed by the id at the same position, NULL without p_attempts';

-- Extends to now() + p_lease_seconds the leases that p_owner still holds among p_ids, each
-- for the attempt at the same position of p_attempts (the attempt its claim returned), so
-- a row the same owner has claimed again since is not touched by the older claim. With
-- p_attempts NULL any attempt matches. Returns how many were extended; a missing id means
-- that lease was lost (stop sending it).
CREATE OR REPLACE FUNCTION outbox.renew(p_owner text, p_ids bigint[], p_attempts integer[],
                                        p_lease_seconds integer)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    n        integer;
    att      jsonb := outbox.attempts_by_id(p_ids, p_attempts);
BEGIN
    PERFORM outbox.check_lease_args('renew', p_owner, coalesce(p_lease_seconds, 0));
    PERFORM outbox.check_attempts_arg('renew', p_ids, p_attempts);
    PERFORM outbox.note_session(p_owner);
    UPDATE outbox.messages m
       SET lease_expires_at = now() + make_interval(secs => p_lease_seconds)
     WHERE m.id = ANY (p_ids)
       AND (p_attempts IS NULL OR m.attempts = (att ->> m.id::text)::integer)
       AND (m.state = 'sending') IS TRUE AND m.lease_owner = p_owner;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION outbox.renew(text, bigint[], integer[], integer) IS
    'Dispatcher: extend the leases p_owner still holds among p_ids (fenced on p_attempts); returns the number extended';

-- The form without attempts, fenced on the owner only (dispatchers before schema 4).
CREATE OR REPLACE FUNCTION outbox.renew(p_owner text, p_ids bigint[], p_lease_seconds integer)
RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
    SELECT outbox.renew(p_owner, p_ids, NULL::integer[], p_lease_seconds);
$fn$;
COMMENT ON FUNCTION outbox.renew(text, bigint[], integer) IS
    'Dispatcher: extend the leases p_owner still holds among p_ids, any attempt; returns the number extended';

-- Gives back rows that p_owner leased but never attempted (shutdown drain): pending, due now,
-- the claim's attempt undone. Fenced on p_attempts like renew (NULL: any attempt). Returns
-- the number released.
CREATE OR REPLACE FUNCTION outbox.release(p_owner text, p_ids bigint[], p_attempts integer[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
DECLARE
    n        integer;
    att      jsonb := outbox.attempts_by_id(p_ids, p_attempts);
BEGIN
    PERFORM outbox.check_lease_args('release', p_owner, NULL);
    PERFORM outbox.check_attempts_arg('release', p_ids, p_attempts);
    UPDATE outbox.messages m
       SET state = 'pending',
           attempts = greatest(m.attempts - 1, 0),
           next_attempt_at = now(),
           lease_owner = NULL,
           lease_expires_at = NULL,
           updated_at = now()
     WHERE m.id = ANY (p_ids)
       AND (p_attempts IS NULL OR m.attempts = (att ->> m.id::text)::integer)
       AND (m.state = 'sending') IS TRUE AND m.lease_owner = p_owner;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 AND EXISTS (SELECT 1 FROM outbox.dispatcher_idle d WHERE d.channel = 'outbox_messages') THEN
        PERFORM pg_notify('outbox_messages', '');
    END IF;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION outbox.release(text, bigint[], integer[]) IS
    'Dispatcher: return unattempted leased rows to pending (attempt undone; fenced on p_attempts); returns the number released';

-- The form without attempts, fenced on the owner only (dispatchers before schema 4).
CREATE OR REPLACE FUNCTION outbox.release(p_owner text, p_ids bigint[])
RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
    SELECT outbox.release(p_owner, p_ids, NULL::integer[]);
$fn$;
COMMENT ON FUNCTION outbox.release(text, bigint[]) IS
    'Dispatcher: return unattempted leased rows to pending (attempt undone, any attempt); returns the number released';

-- Start-up repair: every row still leased to p_owner (left by this dispatcher's previous
-- process) goes back to pending due now, or to dead if its attempts are exhausted; the
-- attempt is kept, since it may have reached the server. Returns the number of rows moved.
CREATE OR REPLACE FUNCTION outbox.release_owner(p_owner text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, outbox
AS $fn$
BEGIN
    PERFORM outbox.check_lease_args('release_owner', p_owner, NULL);
    RETURN outbox.recover_leases(p_owner, NULL);
END
$fn$;
COMMENT ON FUNCTION outbox.release_owner(text) IS
    'Dispatcher start-up: return every row leased to p_owner to pending (or dead if exhausted); returns the count';
