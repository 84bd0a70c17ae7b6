"""Built-in retention, end to end: with three dispatchers running, exactly one holds the
retention lock at any moment and removes finished rows past retention, another takes over
when it dies, and no unfinished row (pending, scheduled, leased) or unpublished event is ever
removed; metrics and `outboxd status` show the work; retention.* keys change on SIGHUP."""
import json
import signal
import time

from conftest import run_outboxd
from outboxd_proc import wait_for
from test_operate import OpsOutboxd

LOCK_KEY = 8031453476610929268  # outbox.retention_lock_key()

RETAIN = {
    "OUTBOXD_RETENTION_SENT": "1d",
    "OUTBOXD_RETENTION_CANCELLED": "1d",
    "OUTBOXD_RETENTION_FAILED": "5d",
    "OUTBOXD_RETENTION_DEAD": "0",        # keep forever
    "OUTBOXD_RETENTION_PUBLISHED": "1d",
    "OUTBOXD_RETENTION_INTERVAL": "1s",
    "OUTBOXD_RETENTION_BATCH_SIZE": "50",
    "OUTBOXD_RETENTION_PAUSE": "0",
}


def seed_history(db, per_state, tag):
    """per_state messages in each of sent, failed, dead, cancelled, scheduled (pending, due
    in 30 days) and leased (sending, lease held elsewhere for a day), all 10 days old; their
    queued events half published 10 days ago, half never published."""
    db.sql(f"""
        INSERT INTO outbox.messages (recipients, subject, body_text, not_before)
        SELECT ARRAY['h' || i || '@example.com'], '{tag}:' || s, 'x',
               CASE WHEN s = 'scheduled' THEN now() + interval '30 days' END
          FROM unnest(ARRAY['sent', 'failed', 'dead', 'cancelled', 'scheduled', 'leased']) s,
               generate_series(1, {per_state}) i;
        UPDATE outbox.messages
           SET state = CASE split_part(subject, ':', 2) WHEN 'scheduled' THEN 'pending'
                                                        WHEN 'leased' THEN 'sending'
                                                        ELSE split_part(subject, ':', 2) END,
               lease_owner = CASE WHEN subject LIKE '%:leased' THEN 'elsewhere' END,
               lease_expires_at = CASE WHEN subject LIKE '%:leased' THEN now() + interval '1 day' END,
               attempts = CASE WHEN subject LIKE '%:leased' THEN 1 ELSE 0 END,
               created_at = now() - interval '10 days', updated_at = now() - interval '10 days'
         WHERE subject LIKE '{tag}:%';
        UPDATE outbox.events e
           SET created_at = now() - interval '10 days',
               state = CASE WHEN e.id % 2 = 0 THEN 'published' ELSE 'pending' END,
               published_at = CASE WHEN e.id % 2 = 0 THEN now() - interval '10 days' END
         WHERE e.message_id IN (SELECT id FROM outbox.messages WHERE subject LIKE '{tag}:%');
    """)


def count(db, where, table="outbox.messages"):
    return int(db.scalar(f"SELECT count(*) FROM {table} WHERE {where}"))


def lock_holders(db):
    return int(db.scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        f"AND classid = ({LOCK_KEY} >> 32)::oid AND objid = ({LOCK_KEY} & 4294967295)::oid"))


def test_one_dispatcher_purges_and_nothing_unfinished_goes(migrated_db, smtp_sink):
    db = migrated_db
    seed_history(db, 120, "a")
    unpublished = set(db.sql("SELECT id FROM outbox.events WHERE state = 'pending'").split())
    ds = [OpsOutboxd(db, smtp_sink.url, env=RETAIN, name=f"ret{i}").start() for i in range(3)]
    try:
        holders_seen = set()

        def purged(tag):
            holders_seen.add(lock_holders(db))
            return (count(db, f"subject LIKE '{tag}:%' AND state IN ('sent', 'cancelled', 'failed')") == 0
                    and count(db, "state = 'published' AND published_at < now() - interval '1 day'",
                              "outbox.events") == 0)

        wait_for(lambda: purged("a"), timeout=60, interval=0.05, what="old finished rows removed")
        assert holders_seen <= {0, 1}, f"retention lock holders seen: {holders_seen}"
        leaders = [d for d in ds if "retention: this dispatcher purges" in d.log_text()]
        assert len(leaders) == 1, [d.log_text()[-2000:] for d in ds]

        # nothing unfinished, nothing kept forever, no unpublished event was touched
        assert count(db, "subject = 'a:scheduled' AND state = 'pending'") == 120
        assert count(db, "subject = 'a:leased' AND state = 'sending'") == 120
        assert count(db, "subject = 'a:dead'") == 120
        still = set(db.sql("SELECT id FROM outbox.events WHERE state = 'pending'").split())
        assert unpublished <= still, f"unpublished events removed: {sorted(unpublished - still)[:10]}"

        # the purger's metrics and `outboxd status`
        m = leaders[0].metrics()
        for state in ("sent", "failed", "cancelled"):
            assert m.get("outboxd_retention_removed_total", table="messages", state=state) == 120, m.samples
        assert m.get("outboxd_retention_leader") == 1
        last_pass = wait_for(lambda: leaders[0].metrics().get("outboxd_retention_last_pass_timestamp_seconds"),
                             timeout=10, what="a finished pass")
        assert time.time() - 60 < last_pass <= time.time() + 1
        assert [d.metrics().get("outboxd_retention_leader") for d in ds if d is not leaders[0]] == [0, 0]
        r = run_outboxd("status", "--json", env={"OUTBOXD_DATABASE_URL": db.url})
        st = json.loads(r.stdout)
        assert st["retention"]["messages"]["removed_total"] == 360, st["retention"]
        assert st["layout"] == "plain"

        # the purger dies: another dispatcher takes the lock and carries on
        leaders[0].signal(signal.SIGKILL)
        leaders[0].wait(10)
        seed_history(db, 30, "b")
        holders_seen.clear()
        wait_for(lambda: purged("b"), timeout=60, interval=0.05, what="purge resumed by another dispatcher")
        assert holders_seen <= {0, 1}, f"retention lock holders seen: {holders_seen}"
        assert count(db, "subject = 'b:scheduled' AND state = 'pending'") == 30
        assert count(db, "subject = 'b:leased' AND state = 'sending'") == 30
        assert sum("retention: this dispatcher purges" in d.log_text() for d in ds if d is not leaders[0]) == 1
    finally:
        for d in ds:
            d.cleanup()


def test_retention_keys_change_on_sighup(migrated_db, smtp_sink, tmp_path):
    db = migrated_db
    cfg = tmp_path / "outboxd.yaml"
    cfg.write_text("retention:\n  enabled: false\n  sent: 1d\n  interval: 1s\n")
    seed_history(db, 20, "c")
    d = OpsOutboxd(db, smtp_sink.url, args=["--config", str(cfg)], name="reload").start()
    try:
        # switched off: the retention session connects but never takes the lock
        wait_for(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outboxd-retention'")
                 == "1", timeout=10, what="retention connection")
        deadline = time.monotonic() + 2.5  # two ticks after connecting would have taken it
        while time.monotonic() < deadline:
            assert lock_holders(db) == 0
            time.sleep(0.1)
        assert count(db, "subject = 'c:sent'") == 20

        cfg.write_text("retention:\n  enabled: true\n  sent: 1d\n  cancelled: 0\n  failed: 0\n  interval: 1s\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: count(db, "subject = 'c:sent'") == 0, timeout=20, what="sent rows removed after SIGHUP")
        assert count(db, "subject IN ('c:cancelled', 'c:failed', 'c:dead')") == 60, "retention 0 keeps forever"
        assert count(db, "subject IN ('c:scheduled', 'c:leased')") == 40

        cfg.write_text("retention:\n  enabled: false\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: lock_holders(db) == 0, timeout=10, what="lock released when switched off")
    finally:
        d.cleanup()
