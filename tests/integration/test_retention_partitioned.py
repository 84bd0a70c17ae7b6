"""The partitioned layout end to end: `outboxd migrate --layout partitioned` moves a running
plain install (history, keyed messages, a dispatcher delivering and a producer inserting
throughout) without losing or duplicating a row, the producers' INSERT ... ON CONFLICT DO
NOTHING keeps working, and the dispatcher's retention then drops whole partitions (moving
unfinished rows forward first) while mail keeps flowing."""
import threading
import time

import psycopg2

from conftest import run_outboxd
from outboxd_proc import wait_for
from test_operate import OpsOutboxd

FAST = {
    "OUTBOXD_RETENTION_SENT": "3s",
    "OUTBOXD_RETENTION_CANCELLED": "3s",
    "OUTBOXD_RETENTION_FAILED": "1d",
    "OUTBOXD_RETENTION_DEAD": "1d",
    "OUTBOXD_RETENTION_PUBLISHED": "3s",
    "OUTBOXD_RETENTION_INTERVAL": "1s",
    "OUTBOXD_RETENTION_BATCH_SIZE": "200",
    "OUTBOXD_RETENTION_PAUSE": "0",
}


def test_move_a_running_install_then_drop_partitions(migrated_db, smtp_sink):
    db = migrated_db
    # history on the plain layout: keyed messages, some finished long ago, some waiting
    db.sql("""
        INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key, not_before)
        SELECT ARRAY['old' || i || '@example.com'], CASE WHEN i <= 50 THEN 'scheduled' ELSE 'old' END, 'x',
               'old:' || i, CASE WHEN i <= 50 THEN now() + interval '1 day' END
          FROM generate_series(1, 300) i;
        UPDATE outbox.messages SET state = 'sent', sent_at = now() - interval '1 hour',
               updated_at = now() - interval '1 hour', created_at = now() - interval '2 hours'
         WHERE subject = 'old';
        UPDATE outbox.events SET state = 'published', published_at = now() - interval '1 hour';
    """)
    d = OpsOutboxd(db, smtp_sink.url, env=FAST, name="part").start()
    stop = threading.Event()
    made, errors = [], []

    def produce():
        c = psycopg2.connect(db.dsn)
        c.autocommit = True
        i = 0
        try:
            while not stop.is_set() and i < 3000:
                with c.cursor() as cur:
                    cur.execute("INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key) "
                                "VALUES (ARRAY[%s], 'live', 'x', %s) ON CONFLICT DO NOTHING RETURNING message_id",
                                (f"live{i}@example.com", f"live:{i}"))
                    made.extend(r[0].strip("<>") for r in cur.fetchall())
                i += 1
                time.sleep(0.005)
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            c.close()

    t = threading.Thread(target=produce)
    t.start()
    try:
        wait_for(lambda: len(made) >= 100 or errors, timeout=20, what="producer running")
        assert not errors, errors
        db.sql("UPDATE outbox.settings SET partition_period = '2 seconds'")
        r = run_outboxd("migrate", "--database-url", db.url, "--layout", "partitioned")
        assert r.returncode == 0, r.stderr
        assert db.scalar("SELECT outbox.layout()") == "partitioned"
        n_at_switch = len(made)
        wait_for(lambda: len(made) >= n_at_switch + 200 or errors, timeout=20,
                 what="producer still inserting after the move")
        stop.set()
        t.join(30)
        assert not errors, errors

        # the same ON CONFLICT DO NOTHING: a key from before the move inserts nothing
        assert db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key) "
                      "VALUES (ARRAY['x@example.com'], 'dup', 'x', 'live:1') ON CONFLICT DO NOTHING RETURNING id") == ""
        # every message the producer committed, before, during and after the move, reaches the relay
        def delivered():
            got = smtp_sink.message_ids()
            return all(got.get(m) or got.get(f"<{m}>") for m in made)
        wait_for(delivered, timeout=60, interval=0.5, what="every live message delivered")
        assert len(set(made)) == len(made)

        # retention drops the legacy partition and later ones, scheduled rows moved forward
        wait_for(lambda: db.scalar("SELECT to_regclass('outbox.messages_legacy') IS NULL") == "t", timeout=60,
                 what=f"legacy partition dropped ({db.sql('SELECT * FROM outbox.retention_state')})")
        wait_for(lambda: int(db.scalar("SELECT partitions_dropped FROM outbox.retention_state WHERE tbl = 'messages'"))
                 >= 3, timeout=60, what="time partitions dropped")
        assert int(db.scalar("SELECT count(*) FROM outbox.messages WHERE subject = 'scheduled' AND state = 'pending'")) == 50
        assert int(db.scalar("SELECT count(*) FROM outbox.messages WHERE subject = 'old'")) == 0
        assert int(db.scalar("SELECT count(*) FROM outbox.message_keys k WHERE NOT EXISTS "
                             "(SELECT 1 FROM outbox.messages m WHERE m.id = k.message)")) <= 200  # cleanup is batched
        m = d.metrics()
        assert m.get("outboxd_retention_partitions_dropped_total") >= 3
        assert m.get("outboxd_retention_removed_total", table="messages", state="partition") >= 250
        st = run_outboxd("status", "--database-url", db.url)
        assert "partitioned layout" in st.stdout, st.stdout
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- dispatcher log ---\n{d.log_text()[-4000:]}") from None
    finally:
        stop.set()
        t.join(30)
        d.cleanup()
