"""`outboxd migrate` against a real PostgreSQL: ordering, bookkeeping, checksums, rollback
of a failing file, the advisory lock under concurrent runs, --status/--dry-run, directory
discovery (flags, environment, next to an installed binary) and exit codes."""
import glob
import os
import subprocess
import time

import pytest

from conftest import OUTBOXD, ROOT

REAL_MIGRATIONS = sorted(glob.glob(os.path.join(ROOT, "migrations", "[0-9]*_*.sql")))


def clean_env(extra=None):
    """The test's environment without OUTBOXD_* or PG* variables, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOXD_", "PG"))}
    env.update(extra or {})
    return env


def migrate(*args, env=None, cwd=None, binary=OUTBOXD, timeout=60):
    """Runs `outboxd migrate ARGS` with a clean environment; returns the CompletedProcess."""
    return subprocess.run([binary, "migrate", *args], capture_output=True, text=True,
                          env=clean_env(env), cwd=cwd, timeout=timeout)


def write_dir(path, files):
    """Creates directory path holding files ({name: text}); returns it as a string."""
    os.makedirs(path, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    return str(path)


def applied(db):
    """[(version, name)] recorded in outbox.schema_migrations, or [] without the table."""
    if db.scalar("SELECT to_regclass('outbox.schema_migrations') IS NULL") == "t":
        return []
    out = db.sql("SELECT version || ':' || name FROM outbox.schema_migrations ORDER BY version")
    return [(int(v), n) for v, n in (line.split(":", 1) for line in out.splitlines())]


THREE = {
    "0001_first.sql": "CREATE TABLE t1 (id int PRIMARY KEY);\nCREATE TABLE ran (what text);\n",
    "0002_second.sql": "ALTER TABLE t1 ADD COLUMN note text;\nINSERT INTO ran VALUES ('0002');\n",
    "0010_third.sql": "CREATE TABLE t3 (x int); INSERT INTO ran VALUES ('0010');\n",
    "README.md": "not a migration\n",
    "notes.txt": "ignored\n",
}


@pytest.fixture
def mdir(tmp_path):
    """A temporary migrations directory with three tiny migrations and an empty sibling sql/."""
    write_dir(tmp_path / "sql", {})
    return write_dir(tmp_path / "migrations", THREE)


def test_applies_all_in_order_then_nothing(db, mdir):
    r = migrate("--database-url", db.url, "--migrations", mdir)
    assert r.returncode == 0, r.stderr
    assert [l.split(" (")[0] for l in r.stdout.splitlines() if l.startswith("applied ")] == [
        "applied 0001_first", "applied 0002_second", "applied 0010_third"]
    assert applied(db) == [(1, "first"), (2, "second"), (10, "third")]
    # checksum is the sha256 of the file bytes, duration recorded
    import hashlib
    with open(os.path.join(mdir, "0002_second.sql"), "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    assert db.scalar("SELECT checksum FROM outbox.schema_migrations WHERE version = 2") == want
    assert db.scalar("SELECT count(*) FROM outbox.schema_migrations "
                     "WHERE duration_ms >= 0 AND applied_at <= now()") == "3"

    r = migrate("--database-url", db.url, "--migrations", mdir)
    assert r.returncode == 0, r.stderr
    assert "nothing to apply" in r.stdout
    assert "applied " not in r.stdout
    assert db.scalar("SELECT count(*) FROM ran") == "2"


def test_new_file_applied_on_later_run(db, mdir):
    assert migrate("--database-url", db.url, "--migrations", mdir).returncode == 0
    write_dir(mdir, {"0011_more.sql": "CREATE TABLE t11 (x int);"})
    r = migrate("--database-url", db.url, "--migrations", mdir)
    assert r.returncode == 0, r.stderr
    assert [l for l in r.stdout.splitlines() if l.startswith("applied ")][0].startswith("applied 0011_more (")
    assert applied(db)[-1] == (11, "more")


@pytest.mark.skipif(not REAL_MIGRATIONS, reason="no migrations/ yet")
def test_real_migrations_from_empty(db):
    """The project's own migrations/ and sql/, found next to build/outboxd without flags."""
    r = migrate("--database-url", db.url)
    assert r.returncode == 0, r.stderr
    versions = [int(os.path.basename(p).split("_")[0]) for p in REAL_MIGRATIONS]
    assert [v for v, _ in applied(db)] == versions
    assert "sql: re-applied" in r.stdout
    assert db.scalar("SELECT to_regclass('outbox.messages') IS NOT NULL") == "t"

    r = migrate("--database-url", db.url)
    assert r.returncode == 0, r.stderr
    assert "nothing to apply" in r.stdout
    assert "sql: re-applied" in r.stdout  # sql/ files are idempotent and run every time
    st = migrate("--database-url", db.url, "--status")
    assert st.returncode == 0, st.stderr
    assert os.path.realpath(os.path.join(ROOT, "migrations")) in st.stdout
    assert "pending: none" in st.stdout


def test_changed_applied_file_is_refused(db, mdir):
    # apply only the first two
    os.rename(os.path.join(mdir, "0010_third.sql"), os.path.join(mdir, "third.later"))
    assert migrate("--database-url", db.url, "--migrations", mdir).returncode == 0
    os.rename(os.path.join(mdir, "third.later"), os.path.join(mdir, "0010_third.sql"))
    with open(os.path.join(mdir, "0002_second.sql"), "a") as f:
        f.write("-- edited after the fact\n")

    r = migrate("--database-url", db.url, "--migrations", mdir)
    assert r.returncode == 1
    assert "0002_second.sql" in r.stderr and "changed" in r.stderr
    assert "recorded" in r.stderr
    assert applied(db) == [(1, "first"), (2, "second")]
    assert db.scalar("SELECT to_regclass('t3') IS NULL") == "t"

    st = migrate("--database-url", db.url, "--migrations", mdir, "--status")
    assert st.returncode == 0
    assert "CHANGED" in st.stdout and "0010_third.sql" in st.stdout
    dry = migrate("--database-url", db.url, "--migrations", mdir, "--dry-run")
    assert dry.returncode == 1 and "0002_second.sql" in dry.stderr


def test_failing_migration_rolls_back_only_itself(db, tmp_path):
    mdir = write_dir(tmp_path / "m", {
        "0001_ok.sql": "CREATE TABLE good (x int);\n",
        "0002_bad.sql": "CREATE TABLE half (x int);\n\nSELECT *\n  FROM no_such_table;\n",
        "0003_never.sql": "CREATE TABLE never (x int);\n",
    })
    r = migrate("--database-url", db.url, "--migrations", mdir)
    assert r.returncode == 1
    assert "applied 0001_ok" in r.stdout
    err = r.stderr
    assert "0002_bad.sql:4:8" in err, err  # line:column of the server's error position
    assert "42P01" in err and 'relation "no_such_table" does not exist' in err
    assert applied(db) == [(1, "ok")]
    assert db.scalar("SELECT to_regclass('good') IS NOT NULL") == "t"
    assert db.scalar("SELECT to_regclass('half') IS NULL") == "t"
    assert db.scalar("SELECT to_regclass('never') IS NULL") == "t"
    assert all(len(line) > 0 for line in err.splitlines())

    # fixed file: the run resumes where it stopped
    write_dir(mdir, {"0002_bad.sql": "CREATE TABLE half (x int);\n"})
    r = migrate("--database-url", db.url, "--migrations", mdir)
    assert r.returncode == 0, r.stderr
    assert [v for v, _ in applied(db)] == [1, 2, 3]


def test_file_that_commits_itself_is_refused(db, tmp_path):
    mdir = write_dir(tmp_path / "m", {"0001_commit.sql": "CREATE TABLE c (x int); COMMIT;"})
    r = migrate("--database-url", db.url, "--migrations", mdir)
    assert r.returncode == 1
    assert "0001_commit.sql" in r.stderr and "ended the transaction" in r.stderr
    assert applied(db) == []


def test_concurrent_runs_apply_each_migration_once(db, tmp_path):
    mdir = write_dir(tmp_path / "m", {
        "0001_slow.sql": "SELECT pg_sleep(1);\nCREATE TABLE ran (what text);\n"
                         "INSERT INTO ran VALUES ('0001');\n",
        "0002_next.sql": "CREATE TABLE t2 (x int);\nINSERT INTO ran VALUES ('0002');\n",
    })
    cmd = [OUTBOXD, "migrate", "--database-url", db.url, "--migrations", mdir]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=clean_env()) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert db.scalar("SELECT count(*) FROM outbox.schema_migrations") == "2"
    assert db.sql("SELECT what FROM ran ORDER BY what").splitlines() == ["0001", "0002"]
    assert sum("applied 0001_slow" in out for out, _ in outs) == 1
    assert sum("nothing to apply" in out for out, _ in outs) == 1
    assert sum("waiting for another outboxd migrate" in out for out, _ in outs) == 1  # it queued


def test_status_and_dry_run_change_nothing(db, mdir, tmp_path):
    for flag in ("--status", "--dry-run"):
        r = migrate("--database-url", db.url, "--migrations", mdir, flag)
        assert r.returncode == 0, r.stderr
        assert db.scalar("SELECT to_regnamespace('outbox') IS NULL") == "t"
    assert "0001_first.sql" in r.stdout and "would apply 0002_second.sql" in r.stdout

    sqldir = write_dir(tmp_path / "sql", {"a.sql": "CREATE TABLE from_sql (x int);"})
    os.rename(os.path.join(mdir, "0010_third.sql"), os.path.join(mdir, "third.later"))
    assert migrate("--database-url", db.url, "--migrations", mdir, "--sql", sqldir).returncode == 0
    os.rename(os.path.join(mdir, "third.later"), os.path.join(mdir, "0010_third.sql"))
    db.sql("DROP TABLE from_sql")
    before = db.sql("SELECT * FROM outbox.schema_migrations ORDER BY version")

    st = migrate("--database-url", db.url, "--migrations", mdir, "--sql", sqldir, "--status")
    assert st.returncode == 0, st.stderr
    assert "pending:" in st.stdout and "0010_third.sql" in st.stdout
    assert os.path.realpath(mdir) in st.stdout and os.path.realpath(sqldir) in st.stdout
    assert "ok" in st.stdout
    dry = migrate("--database-url", db.url, "--migrations", mdir, "--sql", sqldir, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would apply 0010_third.sql" in dry.stdout
    assert "would re-apply sql/a.sql" in dry.stdout
    assert db.sql("SELECT * FROM outbox.schema_migrations ORDER BY version") == before
    assert db.scalar("SELECT to_regclass('t3') IS NULL") == "t"
    assert db.scalar("SELECT to_regclass('from_sql') IS NULL") == "t"


def test_sql_dir_is_all_or_nothing_and_rerun_every_time(db, mdir, tmp_path):
    sqldir = write_dir(tmp_path / "sqlfiles", {
        "10_fn.sql": "CREATE OR REPLACE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        "20_bad.sql": "CREATE OR REPLACE VIEW public.v AS SELECT * FROM missing_table;",
    })
    r = migrate("--database-url", db.url, "--migrations", mdir, "--sql", sqldir)
    assert r.returncode == 1
    assert "sql/20_bad.sql" in r.stderr and "42P01" in r.stderr
    assert len(applied(db)) == 3  # migrations committed before the sql/ step
    assert db.scalar("SELECT to_regproc('public.f') IS NULL") == "t"  # rolled back with 20_bad

    write_dir(sqldir, {"20_bad.sql": "CREATE OR REPLACE VIEW public.v AS SELECT f() AS one;"})
    for _ in range(2):
        r = migrate("--database-url", db.url, "--migrations", mdir, "--sql", sqldir)
        assert r.returncode == 0, r.stderr
        assert "sql: re-applied 2 files" in r.stdout
    assert db.scalar("SELECT one FROM public.v") == "1"


def test_environment_variables_are_honoured(db, mdir, tmp_path):
    sqldir = write_dir(tmp_path / "s2", {"x.sql": "CREATE OR REPLACE VIEW public.vx AS SELECT 2 AS two;"})
    r = migrate(env={"OUTBOXD_DATABASE_URL": db.url, "OUTBOXD_MIGRATIONS_DIR": mdir,
                     "OUTBOXD_SQL_DIR": sqldir}, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert len(applied(db)) == 3
    assert db.scalar("SELECT two FROM public.vx") == "2"
    # flags win over the environment
    r = migrate("--migrations", mdir, env={"OUTBOXD_DATABASE_URL": db.url,
                                           "OUTBOXD_MIGRATIONS_DIR": "/nonexistent"})
    assert r.returncode == 0, r.stderr
    assert "nothing to apply" in r.stdout
    # libpq's own PG* environment when nothing else is given
    host, port = "127.0.0.1", str(db.cluster.port)
    r = migrate("--migrations", mdir, "--status",
                env={"PGHOST": host, "PGPORT": port, "PGUSER": "postgres", "PGDATABASE": db.name})
    assert r.returncode == 0, r.stderr
    assert f"/{db.name}" in r.stdout and "pending: none" in r.stdout


def test_missing_applied_file_only_warns(db, mdir):
    assert migrate("--database-url", db.url, "--migrations", mdir).returncode == 0
    os.remove(os.path.join(mdir, "0010_third.sql"))
    r = migrate("--database-url", db.url, "--migrations", mdir)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "0010_third" in r.stderr
    st = migrate("--database-url", db.url, "--migrations", mdir, "--status")
    assert "missing" in st.stdout


def test_lock_timeout_bounds_a_blocked_migration(db, tmp_path):
    mdir = write_dir(tmp_path / "m", {"0001_t.sql": "CREATE TABLE busy (x int);"})
    assert migrate("--database-url", db.url, "--migrations", mdir).returncode == 0
    write_dir(mdir, {"0002_alter.sql": "ALTER TABLE busy ADD COLUMN y int;"})
    holder = subprocess.Popen(["psql", "-X", "-q", "-d", db.dsn, "-c",
                               "BEGIN; LOCK TABLE busy IN ACCESS SHARE MODE; SELECT pg_sleep(20);"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while db.scalar("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        "WHERE c.relname = 'busy' AND l.granted") == "0":
            assert time.time() < deadline
            time.sleep(0.05)
        t0 = time.time()
        r = migrate("--database-url", db.url, "--migrations", mdir, "--lock-timeout", "0.5")
        took = time.time() - t0
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 1
    assert "0002_alter.sql" in r.stderr and "55P03" in r.stderr
    assert took < 5
    assert [v for v, _ in applied(db)] == [1]


def test_usage_errors_exit_2(db, mdir):
    r = migrate("--bogus")
    assert r.returncode == 2 and "--bogus" in r.stderr
    r = migrate("--database-url", db.url, "--migrations", "/nonexistent/dir")
    assert r.returncode == 2 and "/nonexistent/dir" in r.stderr
    assert migrate("--lock-timeout", "soon").returncode == 2
    # seconds are plain decimal, as in the configuration
    for bad in ("0x10", "1e3", " 5", "5 ", "+5", "-1", ".5", "5.", "inf", "nan", ""):
        r = migrate("--lock-timeout", bad)
        assert r.returncode == 2 and "--lock-timeout" in r.stderr, (bad, r.returncode, r.stderr)
    assert migrate("--database-url").returncode == 2
    assert migrate("stray").returncode == 2
    r = migrate("--help")
    assert r.returncode == 0 and "usage:" in r.stdout


def test_runtime_errors_exit_1(db, mdir, tmp_path):
    r = migrate("--database-url", "postgresql://postgres:hunter2@127.0.0.1:1/x", "--migrations", mdir)
    assert r.returncode == 1
    assert "cannot connect" in r.stderr and "hunter2" not in r.stderr + r.stdout
    dup = write_dir(tmp_path / "dup", {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"})
    r = migrate("--database-url", db.url, "--migrations", dup)
    assert r.returncode == 1
    assert "duplicate" in r.stderr and "0001_a.sql" in r.stderr and "0001_b.sql" in r.stderr
    assert applied(db) == []


def test_password_never_printed(db, mdir):
    url = db.url.replace("postgres@", "postgres:s3cretpw@")
    for flag in ("--status", "--dry-run"):
        r = migrate("--database-url", url, "--migrations", mdir, flag)
        assert r.returncode == 0, r.stderr
        assert "s3cretpw" not in r.stdout + r.stderr


@pytest.mark.skipif(not REAL_MIGRATIONS, reason="no migrations/ yet")
def test_installed_binary_finds_its_migrations(db, tmp_path):
    prefix = tmp_path / "prefix"
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", f"PREFIX={prefix}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    binary = str(prefix / "bin" / "outboxd")
    elsewhere = write_dir(tmp_path / "elsewhere", {})
    r = migrate(env={"OUTBOXD_DATABASE_URL": db.url}, cwd=elsewhere, binary=binary)
    assert r.returncode == 0, r.stderr
    assert len(applied(db)) == len(REAL_MIGRATIONS)
    st = migrate("--status", env={"OUTBOXD_DATABASE_URL": db.url}, cwd=elsewhere, binary=binary)
    assert st.returncode == 0, st.stderr
    assert str(prefix / "share" / "outboxd" / "migrations") in st.stdout


def test_session_settings_do_not_leak_between_files(db, tmp_path):
    mdir = write_dir(tmp_path / "m", {
        "0001_set.sql": "SET search_path = nowhere; SET lock_timeout = 0;",
        "0002_plain.sql": "CREATE TABLE plain (x int);",
    })
    sqldir = write_dir(tmp_path / "sql", {"a.sql": "CREATE TABLE public.seen AS SELECT "
                                          "current_setting('search_path') AS sp, "
                                          "current_setting('lock_timeout') AS lt;"})
    r = migrate("--database-url", db.url, "--migrations", mdir, "--sql", sqldir)
    assert r.returncode == 0, r.stderr
    assert db.scalar("SELECT to_regclass('public.plain') IS NOT NULL") == "t"
    assert db.scalar("SELECT sp FROM public.seen") != "nowhere"
    assert db.scalar("SELECT lt FROM public.seen") == "10s"  # --lock-timeout default, restored
    assert db.scalar("SELECT count(*) FROM pg_stat_activity "
                     "WHERE application_name = 'outboxd-migrate'") == "0"


def test_out_of_order_file_is_applied_with_a_warning(db, tmp_path):
    mdir = write_dir(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 3;"})
    assert migrate("--database-url", db.url, "--migrations", mdir).returncode == 0
    write_dir(mdir, {"0002_b.sql": "CREATE TABLE b (x int);"})
    r = migrate("--database-url", db.url, "--migrations", mdir)
    assert r.returncode == 0, r.stderr
    assert "out of order" in r.stderr and "0002_b.sql" in r.stderr
    assert [v for v, _ in applied(db)] == [1, 2, 3]


@pytest.mark.parametrize("where", ["migrations", "sql"])
@pytest.mark.parametrize("kind", ["fifo", "dangling symlink", "device"])
def test_a_sql_file_that_is_not_a_regular_file_stops_the_run(db, mdir, tmp_path, where, kind):
    """A FIFO, a device or a dangling symlink named like a migration or a sql/ file is an
    error naming it, not silently left out (its schema change would be missing); a
    directory so named is still skipped."""
    path = os.path.join(tmp_path, where, "0020_odd.sql" if where == "migrations" else "20_odd.sql")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        os.symlink("/dev/zero", path)
    else:
        os.symlink(os.path.join(tmp_path, "gone.sql"), path)
    r = migrate("--database-url", db.url, "--migrations", mdir, "--sql", str(tmp_path / "sql"), timeout=30)
    assert r.returncode != 0, r.stdout + r.stderr
    assert os.path.basename(path) in r.stderr, r.stderr
    if where == "migrations":
        assert applied(db) == []  # nothing applied before the list is known to be whole
