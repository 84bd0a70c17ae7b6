-- Plans of the hot path that do not depend on the tables' statistics. Runs after the files
-- that define these functions (CREATE OR REPLACE drops a function's SET options, so they
-- are set again here on every migrate).
--
-- Measured: after a TRUNCATE and ANALYZE (statistics of an empty table), the claim's
-- "UPDATE ... FROM c WHERE m.id = c.id" joined the claimed ids by hashing them and reading
-- the whole of outbox.messages, whose size then grew with every message of the round; after
-- the next autovacuum ANALYZE it flipped to primary-key probes. Latency moved with the
-- table's history and the time since the last ANALYZE. Every statement of these functions
-- touches a bounded set of rows, each reachable through the primary key or a partial index,
-- so the planner is held to those paths whatever it believes about the table (like
-- outbox.mirror_mark_published, sql/40_mirror.sql). A disabled path still counts as a
-- huge cost when nothing else can do the job (the claim's final sort), and that cost made
-- PostgreSQL JIT-compile the claim: 0.5 s per call. JIT never pays on these statements.

-- The claim also sorted every due row (a bitmap scan of the claim index, then a sort) when
-- the statistics said few were pending: under a backlog that is a sort of the backlog per
-- claim. The claim index is in claim order, so the ordered index scan under the LIMIT is
-- always the plan wanted.
--
-- Measured: every ANALYZE of outbox.messages (every autovacuum naptime while the table is
-- small, as after a TRUNCATE) invalidates the functions' cached plans, and PostgreSQL then
-- plans their statements again for each call with the call's values ("custom" plans) before
-- it may settle on one generic plan; on a small table it kept choosing custom plans. Planning
-- outbox.complete's statement costs about 0.6 ms, more than running it: its main statement
-- took 0.30-0.35 ms a call in the rounds after a TRUNCATE against 0.13-0.15 ms with a large
-- history. With the paths held as above, the generic plan is the plan wanted for any values.
--
-- A generic plan is made once, at the table's size of that moment, and kept until the next
-- ANALYZE or VACUUM: made while outbox.messages was nearly empty (after a TRUNCATE, or a
-- purge and a vacuum at a quiet hour), a join of the given ids to the table walked the whole
-- primary key on every call as the table filled, until the next ANALYZE (at 1000 msg/s with
-- the default one-minute naptime: p50 0.9 -> 8 ms, p99 3 -> 90 ms after a TRUNCATE). So the
-- claim's UPDATE, the outcome write, renew, release and the mirror's reports reach their
-- rows only through "id = ANY (ids)" and look each row's result up by id (sql/10_lease.sql,
-- sql/11_complete.sql, sql/40_mirror.sql); tests/sql/11_plans.sql runs them that way.
ALTER FUNCTION outbox.claim(text, integer, integer, boolean)
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
    SET enable_bitmapscan = off SET enable_sort = off SET jit = off
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION outbox.complete(text, jsonb)
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION outbox.renew(text, bigint[], integer[], integer)
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION outbox.release(text, bigint[], integer[])
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION outbox.release_owner(text)
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off;

-- Small statistics targets on the queue tables and their partitions (see
-- outbox.set_statistics_targets): cheap autovacuum ANALYZE, now that no hot-path plan
-- follows the statistics. Takes SHARE UPDATE EXCLUSIVE, which producers do not wait for.
-- (pg_partition_tree gives no row for a plain table)
SELECT outbox.set_statistics_targets(r)
  FROM unnest(ARRAY['messages', 'message_recipients', 'events']) AS t,
       LATERAL (SELECT format('outbox.%I', t)::regclass
                UNION ALL
                SELECT p.relid FROM pg_partition_tree(format('outbox.%I', t)::regclass) AS p
                 WHERE p.level > 0) AS x(r);
