-- Schema 7: the dispatcher claims with outbox.claim(owner, limit, lease, rescue) and asks for
-- the rescue of gone sessions and expired leases at most once a second instead of on every
-- claim (a third of a claim's cost). The function lives in sql/10_lease.sql like every other
-- one; this version number is what tells a dispatcher of this schema that the database has
-- it: until `outboxd migrate` has run, /health/ready says the migrations are not current
-- instead of every claim failing. Dispatchers of schema 6 keep calling the three-argument
-- form, which still rescues on every call.
SELECT 1;
