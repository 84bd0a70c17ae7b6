"""Advisory locks taken by a login that is not outboxd. PostgreSQL checks no privilege on
advisory locks, so a producer login can take the Kafka mirror's or migrate's key; outboxd
cannot prevent it and instead names the holder (pid, user, application): in its JSON log,
in /health/ready's reason, in /metrics and in `outboxd status`; `outboxd migrate` gives up
after --wait-timeout naming the holder. The dispatcher's own login can run `outboxd status`."""
import json
import uuid

import psycopg2
import pytest

from conftest import psql, run_outboxd

MIRROR_KEY = 8031453476610927457  # outbox.mirror_lock_key(), "outboxka"
MIGRATE_KEY = 8031453476610927975  # outbox.migrate_lock_key(), "outboxmg"


@pytest.fixture
def logins(migrated_db):
    """{"producer": name, "dispatcher": name}: login roles granted outbox_producer and
    outbox_dispatcher (roles are cluster-wide: unique names, dropped after the test)."""
    tag = uuid.uuid4().hex[:8]
    names = {"producer": f"app_{tag}", "dispatcher": f"outboxd_{tag}"}
    admin = migrated_db.cluster.dsn()
    for kind, name in names.items():
        psql(admin, f"CREATE ROLE {name} LOGIN; GRANT outbox_{kind} TO {name}")
    yield names
    for name in names.values():
        psql(admin, f"DROP ROLE IF EXISTS {name}", check=False)


def login_url(db, user):
    return f"postgresql://{user}@127.0.0.1:{db.cluster.port}/{db.name}"


class HeldLock:
    """A session of `user` holding the advisory lock `key` until release()."""

    def __init__(self, db, user, key, application="billing-worker"):
        self.conn = psycopg2.connect(host="127.0.0.1", port=db.cluster.port, dbname=db.name, user=user,
                                     application_name=application, connect_timeout=10)
        self.conn.autocommit = True
        with self.conn.cursor() as c:
            c.execute("SELECT pg_backend_pid(), pg_try_advisory_lock(%s)", (key,))
            self.pid, got = c.fetchone()
        assert got, "the lock was already taken"

    def release(self):
        self.conn.close()


def test_status_runs_as_the_dispatcher_login_and_names_a_foreign_holder(migrated_db, logins):
    db = migrated_db
    env = {"OUTBOXD_DATABASE_URL": login_url(db, logins["dispatcher"]),
           "OUTBOXD_STATUS_MAX_OLDEST_PENDING": "2h"}
    r = run_outboxd("status", "--json", env=env, timeout=30)
    assert r.returncode == 0, r.stderr  # was: permission denied for table messages
    s = json.loads(r.stdout)
    assert s["locks"] == {} and s["schema_version"] >= 1

    held = HeldLock(db, logins["producer"], MIRROR_KEY)
    try:
        r = run_outboxd("status", "--json", env=env, timeout=30)
        assert r.returncode == 1, r.stdout + r.stderr
        s = json.loads(r.stdout)
        m = s["locks"]["mirror"]
        assert (m["pid"], m["user"], m["application_name"], m["outboxd"]) == (
            held.pid, logins["producer"], "billing-worker", False)
        assert any(f"pid {held.pid}" in p and logins["producer"] in p for p in s["problems"]), s["problems"]
        table = run_outboxd("status", env=env, timeout=30)
        assert table.returncode == 1
        line = next(x for x in table.stdout.splitlines() if x.strip().startswith("mirror "))
        assert "FOREIGN" in line and f"pid {held.pid}" in line and logins["producer"] in line, table.stdout
    finally:
        held.release()


def test_migrate_gives_up_naming_the_holder(migrated_db, logins):
    db = migrated_db
    held = HeldLock(db, logins["producer"], MIGRATE_KEY)
    try:
        r = run_outboxd("migrate", "--database-url", db.url, "--wait-timeout", "2", timeout=30)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"pid {held.pid}" in r.stdout and logins["producer"] in r.stdout  # said while waiting
        err = r.stderr.strip().splitlines()[-1]
        assert "still held after 2 s" in err and f"pid {held.pid}" in err, err
        assert f"user {logins['producer']}" in err and "billing-worker" in err and "not outboxd migrate" in err
    finally:
        held.release()
    r = run_outboxd("migrate", "--database-url", db.url, "--wait-timeout", "2", timeout=30)
    assert r.returncode == 0, r.stderr
