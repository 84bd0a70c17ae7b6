"""`outboxd status` against a known queue: the table, --json, and the exit code (0 healthy,
1 unhealthy by the configured thresholds or database unreachable, 2 usage/config error)."""
import json
import re

import pytest

from conftest import run_outboxd
from smtp_servers import free_port


def status(db, *args, env=None, url=None):
    e = {"OUTBOXD_DATABASE_URL": url or db.url}
    e.update(env or {})
    return run_outboxd("status", *args, env=e, timeout=30)


@pytest.fixture
def known_queue(migrated_db):
    """2 due for an hour, 3 scheduled, 1 sent, 1 failed (550), 1 dead, 1 cancelled."""
    db = migrated_db
    db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
           "SELECT ARRAY['due@example.com'], 'due', 'x', now() - interval '1 hour' "
           "FROM generate_series(1, 2)")
    db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
           "SELECT ARRAY['later@example.com'], 'later', 'x', now() + interval '1 hour' "
           "FROM generate_series(1, 3)")
    db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
           "SELECT ARRAY['done@example.com'], 'done', 'x', now() + interval '1 hour' "
           "FROM generate_series(1, 4)")
    db.sql("UPDATE outbox.messages SET state = 'sent', attempts = 1, last_smtp_code = 250, "
           "sent_at = now() WHERE id = 6")
    db.sql("UPDATE outbox.messages SET state = 'failed', attempts = 1, last_smtp_code = 550, "
           "last_error = '550 5.1.1 User unknown' WHERE id = 7")
    db.sql("UPDATE outbox.messages SET state = 'dead', attempts = 10, last_smtp_code = 451, "
           "last_error = '451 4.3.0 try later' WHERE id = 8")
    assert db.scalar("SELECT outbox.cancel(9)") == "t"
    return db


HEALTHY = {"OUTBOXD_STATUS_MAX_OLDEST_PENDING": "2h", "OUTBOXD_STATUS_MAX_FAILED_LAST_HOUR": "10"}


def test_json_reports_the_known_queue(known_queue):
    r = status(known_queue, "--json", env=HEALTHY)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["depth"] == {"pending": 5, "sending": 0, "sent": 1, "failed": 1, "dead": 1, "cancelled": 1}
    h = s["health"]
    assert h["pending_due"] == 2 and h["pending_scheduled"] == 3
    assert 3590 < h["oldest_due_pending_age_seconds"] < 3700
    assert h["failed_last_hour"] == 1 and h["dead_last_hour"] == 1
    assert s["sent_last_minute"] == 1
    assert s["created_last_minute"] == 9
    assert {f["id"] for f in s["recent_failures"]} == {7, 8}
    assert {f["last_smtp_code"] for f in s["recent_failures"]} == {550, 451}
    assert s["healthy"] is True and s["problems"] == []
    assert s["thresholds"]["max_oldest_pending_seconds"] == 7200
    assert s["thresholds"]["mirror_checked"] is False  # no kafka.brokers: mirror off
    assert s["schema_version"] >= 1


def test_table_reports_the_known_queue(known_queue):
    r = status(known_queue, env=HEALTHY)
    assert r.returncode == 0, r.stderr
    rows = {}
    for line in r.stdout.splitlines():
        parts = line.strip().rsplit(None, 1)
        if len(parts) == 2:
            rows[parts[0].strip()] = parts[1]
    for state, n in {"pending": 5, "sending": 0, "sent": 1, "failed": 1, "dead": 1, "cancelled": 1}.items():
        assert rows.get(state) == str(n), (state, r.stdout)
    assert rows["pending, due now"] == "2"
    assert rows["pending, scheduled later"] == "3"
    age = re.search(r"^oldest due pending age\s+([0-9.]+) s$", r.stdout, re.M)
    assert age and 3590 < float(age.group(1)) < 3700, r.stdout
    assert "recent failures:" in r.stdout
    assert "550 5.1.1 User unknown" in r.stdout
    assert r.stdout.rstrip().endswith("healthy")
    assert "UNHEALTHY" not in r.stdout


def test_old_due_row_is_unhealthy(known_queue):
    env = dict(HEALTHY, OUTBOXD_STATUS_MAX_OLDEST_PENDING="1s")
    r = status(known_queue, env=env)
    assert r.returncode == 1
    assert "UNHEALTHY" in r.stdout
    assert "status.max_oldest_pending" in r.stderr
    r = status(known_queue, "--json", env=env)
    assert r.returncode == 1
    s = json.loads(r.stdout)
    assert s["healthy"] is False
    assert len(s["problems"]) == 1 and "oldest due pending" in s["problems"][0]


def test_failures_over_threshold_are_unhealthy(known_queue):
    r = status(known_queue, "--json", env=dict(HEALTHY, OUTBOXD_STATUS_MAX_FAILED_LAST_HOUR="1"))
    assert r.returncode == 1
    s = json.loads(r.stdout)
    assert any("failed or dead" in p for p in s["problems"]), s["problems"]


def test_mirror_lag_counts_only_with_the_mirror_on(known_queue):
    # lifecycle events wait unpublished; their age matters only when kafka.brokers is set
    known_queue.sql("UPDATE outbox.events SET created_at = now() - interval '1 hour'")
    r = status(known_queue, "--json", env=HEALTHY)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mirror"]["unpublished"] > 0
    r = status(known_queue, "--json", env=dict(HEALTHY, OUTBOXD_KAFKA_BROKERS="127.0.0.1:1",
                                                 OUTBOXD_STATUS_MAX_MIRROR_LAG="1m"))
    assert r.returncode == 1
    assert any("mirror" in p for p in json.loads(r.stdout)["problems"])


def test_empty_queue_is_healthy(migrated_db):
    r = status(migrated_db)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("healthy")


def test_bad_configuration_exits_2(migrated_db, tmp_path):
    r = status(migrated_db, env={"OUTBOXD_STATUS_MAX_OLDEST_PENDING": "soon"})
    assert r.returncode == 2
    assert "status.max_oldest_pending" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("status:\n  max_failed_last_hour: -1\n")
    r = status(migrated_db, "--config", str(bad))
    assert r.returncode == 2
    assert "status.max_failed_last_hour" in r.stderr
    assert status(migrated_db, "--no-such-flag").returncode == 2
    assert status(migrated_db, "extra").returncode == 2


def test_unreachable_database_exits_1_without_the_password(migrated_db):
    secret = "St4tus-Pw-zork"
    url = f"postgresql://postgres:{secret}@127.0.0.1:{free_port()}/nowhere?connect_timeout=2"
    r = status(migrated_db, url=url)
    assert r.returncode == 1
    assert "cannot connect" in r.stderr
    assert secret not in r.stderr + r.stdout
    r = status(migrated_db, "--database-url", url, "--json")
    assert r.returncode == 1
    assert secret not in r.stderr + r.stdout


def test_unmigrated_database_exits_1(db):
    r = status(db)
    assert r.returncode == 1
    assert r.stderr.strip()


def test_json_numbers_print_without_float_artefacts(migrated_db):
    """Ages come from PostgreSQL with microseconds; --json prints them as computed
    (33.292561), never as the nearest double's 17 digits (33.292560999999999)."""
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
                    "SELECT ARRAY['due@example.com'], 'due', 'x', now() - interval '33.292561 s' "
                    "FROM generate_series(1, 3)")
    for _ in range(5):  # each run sees another age: five chances for an artefact to show
        r = status(migrated_db, "--json", env=HEALTHY)
        assert r.returncode == 0, r.stderr
        for number in re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", r.stdout):
            digits = re.sub(r"[^0-9]", "", number.split("e")[0]).lstrip("0")
            assert len(digits) <= 15, f"float artefact {number} in:\n{r.stdout}"
        assert json.loads(r.stdout)["health"]["oldest_due_pending_age_seconds"] >= 33
