"""PostgreSQL failover under traffic: pg_auto_failover with a monitor, a primary and a synchronous
standby; outboxd on a multi-host URL with target_session_attrs=read-write; the primary's host
killed with kill -9 mid-drain, the Kafka mirror on (a real broker). Nothing committed is lost
(messages sent, events on the topic), duplicates carry the row's Message-ID / event id,
nothing stays `sending`, and the time from the kill to the first send on the new primary is printed."""
import collections
import os
import threading
import time
import uuid

import psycopg2
import pytest

from conftest import psql, run_outboxd
from outboxd_proc import Outboxd, wait_for
from pg_ha import PG_AUTOCTL, Formation

pytestmark = pytest.mark.skipif(not os.access(PG_AUTOCTL, os.X_OK),
                                reason="pg_autoctl missing (ops/scripts/deps.sh installs it)")


class HaDb:
    """The formation seen as one database, the way outboxd and the producers see it."""

    def __init__(self, formation):
        self.url = formation.url()
        self.dsn = formation.dsn()

    def sql(self, query, check=True):
        return psql(self.dsn, query, check=check)


class Producer(threading.Thread):
    """Inserts messages in small transactions; an id counts as committed only once COMMIT
    returned. Connection errors (the failover) reconnect through the multi-host DSN."""

    def __init__(self, dsn, stop_after):
        super().__init__(daemon=True)
        self.dsn, self.stop_after = dsn, stop_after
        self.committed, self.events, self.errors, self.halt = set(), set(), 0, threading.Event()

    def run(self):
        conn, k = None, 0
        deadline = time.time() + 120
        while not self.halt.is_set() and len(self.committed) < self.stop_after and time.time() < deadline:
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn)
                cur = conn.cursor()
                batch = []
                for _ in range(20):
                    cur.execute("INSERT INTO outbox.messages (recipients, subject, body_text) "
                                "VALUES (ARRAY[%s], %s, 'x') RETURNING id, message_id",
                                (f"user{k}@example.com", f"m{k}"))
                    batch.append(cur.fetchone())
                    k += 1
                events = []
                for _ in range(5):
                    cur.execute("INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) "
                                "VALUES ('order', %s, 'OrderPaid', '{}') RETURNING event_id", (f"k{k % 17}",))
                    events.append(str(cur.fetchone()[0]))
                conn.commit()
                self.committed.update(batch)
                self.events.update(events)
            except psycopg2.Error:
                self.errors += 1
                try:
                    conn and conn.close()
                except psycopg2.Error:
                    pass
                conn = None
                time.sleep(0.2)
        if conn is not None:
            conn.close()


def test_primary_killed_mid_drain_the_standby_takes_over_nothing_committed_lost(smtp_sink, kafka_broker):
    f = Formation()
    d = None
    try:
        f.start()
        db = HaDb(f)
        r = run_outboxd("migrate", "--database-url", db.url)
        assert r.returncode == 0, r.stderr
        # synchronous: a COMMIT the producer saw is on the standby too
        assert "pgautofailover_standby" in psql(f"host=127.0.0.1 port={f.ports['a']} user=postgres dbname=postgres",
                                                "SHOW synchronous_standby_names")
        kafka_broker.ensure_running()
        prefix = f"ha{uuid.uuid4().hex[:8]}."
        d = Outboxd(db, smtp_sink.url, env={"OUTBOXD_DISPATCHER_LEASE": "3s", "OUTBOXD_SMTP_POOL_SIZE": "4",
                                            "OUTBOXD_KAFKA_BROKERS": kafka_broker.bootstrap,
                                            "OUTBOXD_KAFKA_TOPIC_PREFIX": prefix}, name="ha").start()
        p = Producer(db.dsn, stop_after=1500)
        p.start()
        wait_for(lambda: smtp_sink.count() >= 200, timeout=60, what="200 sent before the kill")
        assert f.primary() == "a"
        killed_at = time.time()
        f.kill_node("a")
        wait_for(lambda: f.nodes().get("b", ("",))[0] in ("wait_primary", "primary"), timeout=60,
                 what="the standby promoted")
        promoted_at = time.time()
        p.join(150)
        assert not p.is_alive()
        committed = {mid for _, mid in p.committed}
        assert len(committed) >= 1500
        wait_for(lambda: db.sql("SELECT count(*) FROM outbox.messages WHERE state <> 'sent'") == "0",
                 timeout=90, interval=0.5, what="every row sent on the new primary")
        wait_for(lambda: db.sql("SELECT count(*) FROM outbox.events WHERE state <> 'published'") == "0",
                 timeout=60, interval=0.5, what="every event published from the new primary")
        smtp_sink.wait_quiet(period=1.0, timeout=30)
        first_new = float(db.sql("SELECT extract(epoch FROM min(sent_at)) FROM outbox.messages "
                                 f"WHERE sent_at > to_timestamp({killed_at})"))
        got = collections.Counter(m.message_id for m in smtp_sink.messages())
        in_db = set(db.sql("SELECT message_id FROM outbox.messages").split())
        lost = committed - in_db
        unsent = committed - set(got)
        dups = {k: v for k, v in got.items() if v > 1}
        on_topic = collections.Counter(dict(m["headers"]).get("id") for m in kafka_broker.consume(prefix + "order"))
        events_in_db = set(db.sql("SELECT event_id FROM outbox.events").split())
        events_lost = p.events - set(on_topic)
        event_dups = sum(v - 1 for v in on_topic.values())
        print(f"\npg failover: kill -> promoted {promoted_at - killed_at:.1f}s, "
              f"kill -> first send on the new primary {first_new - killed_at:.1f}s; "
              f"committed {len(committed)}, lost {len(lost)}, never sent {len(unsent)}, "
              f"duplicates {len(dups)}, producer errors {p.errors}; events committed {len(p.events)}, "
              f"lost {len(events_lost)}, duplicates {event_dups}")
        assert not lost, sorted(lost)[:5]
        assert not unsent, sorted(unsent)[:5]
        assert set(got) <= in_db  # every copy, duplicates included, carries a row's Message-ID
        # a second copy only of what was on the wire or awaiting its outcome at the kill: at most
        # dispatcher.max_in_flight (default 200) rows, each sent at most twice
        assert sum(v - 1 for v in dups.values()) <= 200 and all(v == 2 for v in dups.values()), dups
        assert not events_lost, sorted(events_lost)[:5]
        assert set(on_topic) <= events_in_db  # duplicates carry their row's event id
        assert db.sql("SELECT count(*) FROM outbox.messages WHERE state = 'sending'") == "0"
        assert first_new - killed_at < 60
        assert d.stop() == 0
    finally:
        if d is not None and d.proc and d.proc.poll() is None:
            d.kill()
        f.destroy()
