-- Schema 4: outbox.release and outbox.renew gained forms fenced on the attempt as well as the
-- owner (defined in sql/10_lease.sql, which `outboxd migrate` applies after the migrations).
-- No table changes: this version exists so that a dispatcher built for it reports not ready
-- (/health/ready: migrations behind this build) against a database whose functions are older.
SELECT 1;
