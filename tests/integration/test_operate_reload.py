"""SIGHUP reload through the key table: every reloadable key (as `check-config --docs` lists
them) is applied by a running dispatcher and says so; a changed key that is not reloadable
is logged as needing a restart and keeps its running value; the keys a component keeps its
own copy of (the poll interval, the rate limit) take effect at once."""
import json
import signal
import time
import uuid

import pytest

from conftest import Database, psql, run_outboxd
from outboxd_proc import insert_messages, wait_for, wait_states
from smtp_servers import SmtpSink
from test_operate import OpsOutboxd

# A new value for every reloadable key, different from the one BASE (or the default) sets.
NEW_VALUES = {
    "dispatcher.batch_size": "7",
    "dispatcher.poll_interval": "300ms",
    "dispatcher.outcome_delay": "20ms",
    "smtp.rate_limit": "500",
    "smtp.breaker.failures": "9",
    "smtp.breaker.open_for": "45s",
    "log.level": "debug",
    "status.max_oldest_pending": "7m",
    "status.max_failed_last_hour": "42",
    "status.max_mirror_lag": "9m",
    "retention.enabled": "false",
    "retention.sent": "3d",
    "retention.cancelled": "2d",
    "retention.failed": "10d",
    "retention.dead": "20d",
    "retention.published": "1d",
    "retention.interval": "2m",
    "retention.batch_size": "500",
    "retention.pause": "100ms",
}
BASE = {"log.level": "info", "dispatcher.poll_interval": "250ms"}


def reloadable_keys():
    r = run_outboxd("check-config", "--docs")
    assert r.returncode == 0, r.stderr
    keys = []
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 7 and cells[0].startswith("`") and cells[5] == "yes":
            keys.append(cells[0].strip("`"))
    assert keys, "no reloadable key in check-config --docs"
    return keys


def to_yaml(values):
    """Nested YAML from dotted keys (every value a plain scalar)."""
    tree = {}
    for path, value in values.items():
        node = tree
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    def emit(node, indent):
        out = []
        for k, v in node.items():
            if isinstance(v, dict):
                out.append(f"{' ' * indent}{k}:")
                out.extend(emit(v, indent + 2))
            else:
                out.append(f"{' ' * indent}{k}: {json.dumps(v)}")
        return out
    return "\n".join(emit(tree, 0)) + "\n"


def env_name(key):
    return "OUTBOXD_" + key.replace(".", "_").upper()


class Reloader:
    """One dispatcher whose configuration file the tests rewrite and reload."""

    def __init__(self, db, sink_url, path, values):
        self.path, self.values = path, dict(values)
        self.path.write_text(to_yaml(self.values))
        # the file decides every key the tests change: no environment override
        unset = [env_name(k) for k in list(NEW_VALUES) + list(BASE)]
        self.d = OpsOutboxd(db, sink_url, args=["--config", str(path)], unset=unset).start()

    def reload(self, **changes):
        """Writes the changes, sends SIGHUP, waits for the reload's summary line; returns
        the log lines the reload wrote."""
        before = len(self.d.log_lines())
        self.values.update(changes)
        self.path.write_text(to_yaml(self.values))
        self.d.signal(signal.SIGHUP)
        wait_for(lambda: any(o["msg"] == "configuration reloaded" for o in self.d.log_lines()[before:]),
                 timeout=10, what="configuration reloaded")
        return self.d.log_lines()[before:]


@pytest.fixture(scope="module")
def reloader(cluster, tmp_path_factory):
    name = "t_" + uuid.uuid4().hex[:12]
    psql(cluster.dsn(), f"CREATE DATABASE {name}")
    sink = SmtpSink().start()
    r = None
    try:
        db = Database(cluster, name)
        db.migrate()
        r = Reloader(db, sink.url, tmp_path_factory.mktemp("reload") / "outboxd.yaml", BASE)
        yield r
        assert r.d.stop() == 0
    finally:
        if r:
            r.d.cleanup()
        sink.close()
        psql(cluster.dsn(), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


def test_every_reloadable_key_has_a_test_value():
    assert sorted(reloadable_keys()) == sorted(NEW_VALUES)


@pytest.mark.parametrize("key", sorted(NEW_VALUES))
def test_reloadable_key_is_applied(reloader, key):
    lines = reloader.reload(**{key: NEW_VALUES[key]})
    applied = [o.get("key") for o in lines if o["msg"] == "configuration key applied"]
    assert applied == [key], lines
    assert not any("restart needed" in o["msg"] for o in lines), lines
    summary = [o for o in lines if o["msg"] == "configuration reloaded"][-1]
    assert summary["applied"] == 1 and summary["restart_needed"] == 0
    assert reloader.d.proc.poll() is None


def test_unchanged_file_applies_nothing(reloader):
    lines = reloader.reload()
    assert not any(o["msg"].startswith("configuration key") for o in lines), lines


def test_key_not_reloadable_needs_a_restart(reloader):
    lines = reloader.reload(**{"smtp.pool_size": "3"})
    warned = [o for o in lines if o["msg"] == "configuration key changed; restart needed"]
    assert [o["key"] for o in warned] == ["smtp.pool_size"] and warned[0]["level"] == "warn"
    assert not any(o["msg"] == "configuration key applied" for o in lines)


def test_reloaded_poll_interval_takes_effect(migrated_db, smtp_sink, tmp_path):
    # An hour between polls: a row that becomes due later than its NOTIFY waits for a poll.
    r = Reloader(migrated_db, smtp_sink.url, tmp_path / "outboxd.yaml",
                 {"dispatcher.poll_interval": "1h", "log.level": "info"})
    try:
        wait_for(lambda: "dispatcher state" in r.d.log_text(), timeout=10, what="running")
        migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
                        "VALUES (ARRAY['later@example.com'], 'later', 'due in a second', "
                        "now() + interval '1 second')")
        wait_for(lambda: migrated_db.scalar("SELECT next_attempt_at <= now() FROM outbox.messages") == "t",
                 timeout=10, what="the row falls due")
        # due now, and nothing looks again for an hour
        assert migrated_db.scalar("SELECT state FROM outbox.messages") == "pending"
        r.reload(**{"dispatcher.poll_interval": "100ms"})
        wait_states(migrated_db, {"sent": 1}, timeout=10)
        assert r.d.stop() == 0
    finally:
        r.d.cleanup()


def test_reloaded_rate_limit_takes_effect(migrated_db, smtp_sink, tmp_path):
    r = Reloader(migrated_db, smtp_sink.url, tmp_path / "outboxd.yaml", dict(BASE))
    try:
        r.reload(**{"smtp.rate_limit": "4"})
        t0 = time.monotonic()
        insert_messages(migrated_db, 12)
        wait_states(migrated_db, {"sent": 12}, timeout=30)
        # 12 messages at 4/s take at least 2 s after the first burst (a lower bound only:
        # a loaded machine makes it slower, never faster)
        assert time.monotonic() - t0 >= 1.5
        assert r.d.stop() == 0
    finally:
        r.d.cleanup()
