"""Fixtures for black-box integration tests: a throwaway PostgreSQL cluster per test session
(fresh database per test), helpers to run SQL and the outboxd binary. Every service a test
needs is started here and stopped whatever happens."""
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

# The real Kafka broker's fixtures (kafka_broker, kafka_broker_factory).
pytest_plugins = ["kafka_broker"]

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUTBOXD = os.environ.get("OUTBOXD_BIN", os.path.join(ROOT, "build", "outboxd"))
PG_LOCAL = os.path.join(ROOT, "ops", "scripts", "pg-local.sh")


class Cluster:
    """A PostgreSQL cluster owned by the test run (ops/scripts/pg-local.sh)."""

    def __init__(self, path):
        self.path = path
        out = subprocess.run([PG_LOCAL, "start", path], check=True, capture_output=True, text=True).stdout
        self.env = {}
        for word in out.split():
            if "=" in word:
                k, v = word.split("=", 1)
                self.env[k] = v
        self.port = int(self.env["PGPORT"])

    def dsn(self, dbname="postgres", **extra):
        parts = [f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def url(self, dbname="postgres"):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop(self, mode="fast"):
        subprocess.run([PG_LOCAL, "stop", self.path, mode], check=True)

    def start(self):
        subprocess.run([PG_LOCAL, "start", self.path, str(self.port)], check=True, capture_output=True)

    def restart(self, mode="fast"):
        subprocess.run([PG_LOCAL, "restart", self.path, mode], check=True)

    def destroy(self):
        subprocess.run([PG_LOCAL, "destroy", self.path], check=False)


def psql(dsn, sql, *args, check=True):
    """Runs SQL through psql (ON_ERROR_STOP) and returns stdout, unaligned, tuples only."""
    cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql, *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql failed ({r.returncode}): {r.stderr.strip()}\nSQL: {sql}")
    return r.stdout.strip() if check else r


class Database:
    """A fresh database inside the session cluster."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.dsn = cluster.dsn(name)
        self.url = cluster.url(name)

    def sql(self, query, check=True):
        return psql(self.dsn, query, check=check)

    def scalar(self, query):
        out = self.sql(query)
        return out.splitlines()[0] if out else None

    def migrate(self, *args):
        r = run_outboxd("migrate", "--database-url", self.url, *args)
        assert r.returncode == 0, r.stderr
        return r


# Variables that steer the test harness, not the daemon: kept out of its environment, where
# outboxd would rightly warn about an OUTBOXD_* variable that names no key.
HARNESS_VARS = ("OUTBOXD_BIN", "OUTBOXD_SANITIZED", "OUTBOXD_KEEP_LOGS", "OUTBOXD_TEST_SMTP_ENGINES")


def daemon_env():
    """This process's environment without the harness's own OUTBOXD_* variables."""
    return {k: v for k, v in os.environ.items() if k not in HARNESS_VARS}


def run_outboxd(*args, env=None, timeout=60, **kw):
    """Runs build/outboxd with args and returns the CompletedProcess (text)."""
    e = daemon_env()
    if env:
        e.update(env)
    return subprocess.run([OUTBOXD, *args], capture_output=True, text=True, env=e, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def cluster():
    path = tempfile.mkdtemp(prefix="outboxd-pg-")
    os.rmdir(path)
    c = Cluster(path)
    try:
        yield c
    finally:
        c.destroy()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def db(cluster):
    """An empty database, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:12]
    psql(cluster.dsn(), f"CREATE DATABASE {name}")
    d = Database(cluster, name)
    try:
        yield d
    finally:
        psql(cluster.dsn(), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


@pytest.fixture
def migrated_db(db):
    """A database with every migration and sql/ file applied by `outboxd migrate`."""
    db.migrate()
    return db


# Fixtures of the SMTP servers, certificates and outboxd processes, shared by every test.
from certs import test_certs  # noqa: E402,F401
from smtp_servers import fault_smtpd, fault_smtpd_factory, smtp_sink, smtp_sink_factory  # noqa: E402,F401


# SMTP engines the SMTP suites run against: a module with SMTP_BOTH_ENGINES = True runs each
# of its tests using outboxd_factory once per engine (ids [native] and [libcurl]);
# OUTBOXD_TEST_SMTP_ENGINES=native narrows that. Elsewhere the default engine runs.
SMTP_ENGINES = [e for e in os.environ.get("OUTBOXD_TEST_SMTP_ENGINES", "native,libcurl").split(",") if e]


def pytest_generate_tests(metafunc):
    if "smtp_engine" in metafunc.fixturenames and getattr(metafunc.module, "SMTP_BOTH_ENGINES", False):
        metafunc.parametrize("smtp_engine", SMTP_ENGINES)


@pytest.fixture
def smtp_engine():
    """The engine outboxd_factory's dispatchers use (smtp.engine); "" = the default."""
    return ""


@pytest.fixture
def outboxd_factory(migrated_db, smtp_engine):
    """Callable (smtp_url, env=None, db=None) -> started Outboxd; all are killed after the test.
    The dispatchers use smtp_engine unless env names OUTBOXD_SMTP_ENGINE."""
    from outboxd_proc import Outboxd

    made = []

    def make(smtp_url, env=None, db=None, name="outboxd"):
        env = dict(env or {})
        if smtp_engine:
            env.setdefault("OUTBOXD_SMTP_ENGINE", smtp_engine)
        d = Outboxd(db or migrated_db, smtp_url, env=env, name=name)
        made.append(d)
        return d.start()

    yield make
    reports = []
    for d in made:
        if os.environ.get("OUTBOXD_SANITIZED") == "1":
            # a clean exit runs LeakSanitizer; stop() kills one that does not come in time
            try:
                d.stop(timeout=25)
            except subprocess.TimeoutExpired:
                pass
        report = os.path.exists(d.log_path) and d.sanitizer_report()
        if report:
            reports.append(f"{d.log_path}: {report}")
        d.cleanup(keep_log=bool(report))  # a log with a report stays for reading
    assert not reports, "sanitizer report in a dispatcher's log:\n" + "\n".join(reports)
