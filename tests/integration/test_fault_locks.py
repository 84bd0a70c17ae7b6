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
from outboxd_proc import wait_for
from smtp_servers import free_port
from test_operate import OpsOutboxd

MIRROR_KEY = 8031453476610927457  # outbox.mirror_lock_key(), "outboxka"
MIGRATE_KEY = 8031453476610927975  # outbox.migrate_lock_key(), "outboxmg"
RETENTION_KEY = 8031453476610929268  # outbox.retention_lock_key(), "outboxrt"


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


@pytest.fixture
def dispatcher(migrated_db, logins):
    """Callable (name, env=None) -> a started OpsOutboxd running as the dispatcher's login
    (no SMTP relay needed: nothing is queued); each is killed after the test, and a
    sanitizer report in its log fails the test."""
    made = []

    def make(name, env=None):
        e = {"OUTBOXD_DATABASE_URL": login_url(migrated_db, logins["dispatcher"])}
        e.update(env or {})
        d = OpsOutboxd(migrated_db, "smtp://127.0.0.1:1", name=name, env=e)
        made.append(d)
        return d.start()

    yield make
    reports = [r for r in (d.sanitizer_report() for d in made) if r]
    for d in made:
        d.cleanup(keep_log=bool(reports))
    assert not reports, reports


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


def test_migrate_is_not_fooled_by_a_producer_calling_itself_outboxd_migrate(migrated_db, logins):
    """The application name is the client's choice: a producer login naming its session
    outboxd-migrate is still a session that is not outboxd migrate (as outbox.lock_holders
    judges it), not "another outboxd migrate run" to wait for."""
    held = HeldLock(migrated_db, logins["producer"], MIGRATE_KEY, application="outboxd-migrate")
    try:
        r = run_outboxd("migrate", "--database-url", migrated_db.url, "--wait-timeout", "1", timeout=30)
        assert r.returncode == 1, r.stdout + r.stderr
        err = r.stderr.strip().splitlines()[-1]
        assert f"pid {held.pid}" in err and "not outboxd migrate" in err, err
    finally:
        held.release()


def warnings_about(d, lock):
    return [x for x in d.log_lines()
            if x.get("msg") == "advisory lock held by a session that is not outboxd" and x.get("lock") == lock]


def test_mirror_names_a_foreign_holder_then_takes_over(migrated_db, logins, dispatcher):
    """The dispatcher runs as its own restricted login; no broker is needed to see the
    election (the leader's log line comes before any produce)."""
    db = migrated_db
    producer = logins["producer"]
    db.sql(f"ALTER DATABASE {db.name} SET track_functions = 'pl'")  # counts the lookups
    held = HeldLock(db, producer, MIRROR_KEY)
    try:
        d = dispatcher("locks", env={"OUTBOXD_KAFKA_BROKERS": f"127.0.0.1:{free_port()}"})
        w = wait_for(lambda: warnings_about(d, "mirror"), timeout=15, what="the foreign holder logged")[0]
        assert (w["holder_pid"], w["holder_user"], w["holder_application"]) == (held.pid, producer, "billing-worker")
        assert w["level"] == "warn" and "no replica publishes" in w["effect"]

        def ready_note():
            code, body = d.get("/health/ready")
            return code == 200 and json.loads(body).get("reason", "")
        # ready (SMTP delivery goes on) with the holder named; the dispatcher's login reads
        # the schema version, which readiness needs
        note = wait_for(ready_note, timeout=15, what="/health/ready 200 naming the holder")
        assert f"pid {held.pid}" in note and f"user {producer}" in note and "kafka mirror" in note, note
        assert d.metrics().get("outboxd_lock_foreign_holder", lock="mirror") == 1
        assert d.metrics().get("outboxd_lock_foreign_holder", lock="retention") == 0
        # the election goes on every 1-2 s, a lookup every 5 s; the warning is not repeated
        # within 30 s
        wait_for(lambda: int(db.scalar("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
                                       "WHERE schemaname = 'outbox' AND funcname = 'lock_holders'")) >= 2,
                 timeout=15, what="a second lookup of the holder")
        assert len(warnings_about(d, "mirror")) == 1
    finally:
        held.release()
    wait_for(lambda: any(x.get("msg") == "kafka mirror: leader; publishing events" for x in d.log_lines()),
             timeout=15, what="the mirror taking over")
    assert len(warnings_about(d, "mirror")) == 1
    assert any(x.get("msg", "").startswith("advisory lock: the session that is not outboxd let go")
               for x in d.log_lines())
    assert d.metrics().get("outboxd_lock_foreign_holder", lock="mirror") == 0
    assert json.loads(d.get("/health/ready")[1]) == {"status": "ready"}
    assert d.stop() == 0


def test_retention_names_a_foreign_holder(migrated_db, logins, dispatcher):
    db = migrated_db
    held = HeldLock(db, logins["producer"], RETENTION_KEY, application="nightly-report")
    try:
        d = dispatcher("locks-ret")
        w = wait_for(lambda: warnings_about(d, "retention"), timeout=15, what="the foreign holder logged")[0]
        assert (w["holder_pid"], w["holder_user"], w["holder_application"]) == (
            held.pid, logins["producer"], "nightly-report")
        assert "no replica removes finished rows" in w["effect"]
        wait_for(lambda: d.metrics().get("outboxd_lock_foreign_holder", lock="retention") == 1, timeout=10,
                 what="outboxd_lock_foreign_holder{lock=retention} 1")
        note = wait_for(lambda: d.get("/health/ready")[0] == 200 and json.loads(d.get("/health/ready")[1]),
                        timeout=15, what="/health/ready 200")
        assert f"retention lock held by pid {held.pid}" in note.get("reason", ""), note
    finally:
        held.release()
    assert d.stop() == 0
