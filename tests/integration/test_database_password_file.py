"""database.password_file: the password of a login that the server checks comes from a file
(a mounted Secret), never from the environment, and never reaches the logs."""
import os

import pytest

from conftest import run_outboxd

USER = "outboxd_pwfile"
SECRET = "s3cret-db-pw"


@pytest.fixture
def password_login(cluster, migrated_db):
    """A login with a password that pg_hba makes the server check (scram-sha-256); superuser
    because `outboxd status` reads the tables, and what is tested here is the login."""
    hba = os.path.join(cluster.path, "data", "pg_hba.conf")
    with open(hba, encoding="utf-8") as f:
        saved = f.read()
    migrated_db.sql(f"SET password_encryption = 'scram-sha-256'; "
                    f"CREATE ROLE {USER} SUPERUSER LOGIN PASSWORD '{SECRET}'")
    with open(hba, "w", encoding="utf-8") as f:
        f.write(f"host all {USER} 127.0.0.1/32 scram-sha-256\n" + saved)
    migrated_db.sql("SELECT pg_reload_conf()")
    yield f"postgresql://{USER}@127.0.0.1:{cluster.port}/{migrated_db.name}"
    with open(hba, "w", encoding="utf-8") as f:
        f.write(saved)
    migrated_db.sql("SELECT pg_reload_conf()")
    migrated_db.sql(f"DROP ROLE IF EXISTS {USER}")


def test_the_password_comes_from_the_file(tmp_path, password_login):
    pw = tmp_path / "database-password"
    pw.write_text(SECRET + "\n")
    r = run_outboxd("status", "--json", env={"OUTBOXD_DATABASE_URL": password_login,
                                             "OUTBOXD_DATABASE_PASSWORD_FILE": str(pw)})
    assert "cannot connect" not in r.stderr, r.stderr
    assert '"queue"' in r.stdout or r.stdout.strip().startswith("{"), r.stdout + r.stderr
    assert SECRET not in r.stdout + r.stderr


def test_a_wrong_password_is_refused_and_not_printed(tmp_path, password_login):
    pw = tmp_path / "database-password"
    pw.write_text("not-the-password\n")
    r = run_outboxd("status", env={"OUTBOXD_DATABASE_URL": password_login,
                                   "OUTBOXD_DATABASE_PASSWORD_FILE": str(pw)})
    assert r.returncode != 0 and "password authentication failed" in r.stderr, r.stderr
    assert "not-the-password" not in r.stdout + r.stderr


def test_without_the_file_the_server_asks_for_a_password(password_login):
    r = run_outboxd("status", env={"OUTBOXD_DATABASE_URL": password_login, "PGPASSWORD": ""})
    assert r.returncode != 0 and "password" in r.stderr, r.stderr


def test_check_config_names_a_missing_password_file(tmp_path):
    r = run_outboxd("check-config", env={"OUTBOXD_DATABASE_URL": "postgresql://x@127.0.0.1/db",
                                         "OUTBOXD_DATABASE_PASSWORD_FILE": str(tmp_path / "absent")})
    assert r.returncode == 2 and "database.password_file" in r.stderr, r.stderr


def test_migrate_takes_the_password_file_too(tmp_path, password_login):
    pw = tmp_path / "database-password"
    pw.write_text(SECRET + "\n")
    r = run_outboxd("migrate", "--status", env={"OUTBOXD_DATABASE_URL": password_login,
                                                 "OUTBOXD_DATABASE_PASSWORD_FILE": str(pw)})
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    pw.write_text("wrong\n")
    r = run_outboxd("migrate", "--status", env={"OUTBOXD_DATABASE_URL": password_login,
                                                 "OUTBOXD_DATABASE_PASSWORD_FILE": str(pw)})
    assert r.returncode != 0 and "password authentication failed" in r.stderr, r.stderr
