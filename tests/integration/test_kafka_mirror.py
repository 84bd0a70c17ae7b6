"""The Kafka mirror against a real broker: every committed event arrives once with its
headers, per-key order equals commit order under concurrent producers, a 20 s broker outage
loses nothing and keeps order (both ordering modes), a killed leader is replaced within
seconds, kafka.lifecycle_events is applied to outbox.settings, and SASL PLAIN works with the
right secret and publishes nothing with a wrong one."""
import collections
import json
import random
import threading
import time
import uuid

import psycopg2
import pytest

from kafka_broker import kafka_broker  # noqa: F401  (fixture)
from outboxd_proc import wait_for

KEYS = 50


def _prefix():
    return f"t{uuid.uuid4().hex[:8]}."


def _env(broker, prefix, **extra):
    env = {
        "OUTBOXD_KAFKA_BROKERS": broker.bootstrap,
        "OUTBOXD_KAFKA_TOPIC_PREFIX": prefix,
        "OUTBOXD_KAFKA_BATCH_SIZE": "500",
        "OUTBOXD_DISPATCHER_DRAIN_TIMEOUT": "10s",
    }
    env.update(extra)
    return env


def _setup_counters(db):
    # Producers serialise per key on this row: its counter is the key's commit order.
    db.sql("CREATE TABLE public.kseq (key text PRIMARY KEY, n integer NOT NULL DEFAULT 0);"
           f"INSERT INTO public.kseq SELECT 'k' || i, 0 FROM generate_series(0, {KEYS - 1}) i")


def _produce(db, producers, total, seed=1, stop_at=None):
    """`producers` threads insert `total` 'order' events in transactions of 1-5 events of one
    key each; the key's counter row (locked by the UPDATE) numbers them in commit order."""
    per = total // producers
    errors = []

    def run(p):
        rnd = random.Random(seed * 100 + p)
        conn = psycopg2.connect(db.dsn)
        try:
            cur = conn.cursor()
            left = per
            while left > 0:
                k = min(left, rnd.randint(1, 5))
                key = f"k{rnd.randrange(KEYS)}"
                cur.execute("UPDATE public.kseq SET n = n + %s WHERE key = %s RETURNING n", (k, key))
                last = cur.fetchone()[0]
                for s in range(last - k + 1, last + 1):
                    cur.execute(
                        "INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) "
                        "VALUES ('order', %s, 'OrderPaid', jsonb_build_object('seq', %s::int, 'p', %s::int))",
                        (key, s, p))
                conn.commit()
                left -= k
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    return threads, errors


def _join(threads, errors):
    for t in threads:
        t.join(120)
    assert not errors, errors


def _unpublished(db):
    return int(db.scalar("SELECT unpublished FROM outbox.mirror_lag"))


def _wait_published(db, n, timeout):
    wait_for(lambda: int(db.scalar("SELECT count(*) FROM outbox.events WHERE state = 'published'")) >= n
             and _unpublished(db) == 0, timeout=timeout, interval=0.25, what=f"{n} published events")


def _check_topic(db, broker, topic, expect_total, allow_duplicates=False):
    """Reads the topic back and compares it with the rows: the same ids, headers, and per key
    the sequence 1..n in order (first occurrence of each id when duplicates are allowed)."""
    rows = {}
    for line in db.sql("SELECT event_id, aggregate_id, type, payload->>'seq', kafka_partition, kafka_offset "
                       "FROM outbox.events WHERE state = 'published'").splitlines():
        eid, key, typ, seq, part, off = line.split("|")
        rows[eid] = (key, typ, int(seq), int(part), int(off))
    assert len(rows) == expect_total
    msgs = broker.consume(topic, timeout=60)
    seen = set()
    per_key = collections.defaultdict(list)
    dups = 0
    for m in msgs:
        h = dict(m["headers"])
        eid = h.get("id")
        assert eid in rows, f"record with unknown id header {eid!r}"
        key, typ, seq, part, off = rows[eid]
        assert m["key"] == key and h.get("type") == typ
        if eid in seen:
            dups += 1
            continue
        seen.add(eid)
        # The row records where its first delivery report put it.
        assert (m["partition"], m["offset"]) == (part, off) or allow_duplicates
        per_key[key].append(seq)
    assert seen == set(rows), f"{len(set(rows) - seen)} events missing from the topic"
    if not allow_duplicates:
        assert dups == 0, f"{dups} duplicates"
    for key, seqs in per_key.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"key {key} out of commit order: {seqs[:20]}..."
    return dups


def test_concurrent_producers_all_arrive_in_commit_order(kafka_broker, migrated_db, outboxd_factory,  # noqa: F811
                                                          smtp_sink):
    db = migrated_db
    _setup_counters(db)
    prefix = _prefix()
    d = outboxd_factory(smtp_sink.url, env=_env(kafka_broker, prefix))
    threads, errors = _produce(db, 4, 10000)
    _join(threads, errors)
    _wait_published(db, 10000, timeout=90)
    assert d.stop(timeout=30) == 0
    _check_topic(db, kafka_broker, prefix + "order", 10000)
    log = d.log_text()
    assert "kafka mirror: leader" in log and "kafka mirror stopped" in log


@pytest.mark.parametrize("timeout", ["0s", "3s"], ids=["never-time-out", "timeout-hold-key"])
def test_broker_outage_loses_nothing_and_keeps_order(kafka_broker, migrated_db, outboxd_factory,  # noqa: F811
                                                      smtp_sink, timeout):
    db = migrated_db
    _setup_counters(db)
    prefix = _prefix()
    kafka_broker.ensure_running()
    d = outboxd_factory(smtp_sink.url, env=_env(kafka_broker, prefix, OUTBOXD_KAFKA_MESSAGE_TIMEOUT=timeout))
    threads, errors = _produce(db, 4, 1000, seed=2)
    _join(threads, errors)
    _wait_published(db, 1000, timeout=60)
    try:
        kafka_broker.stop()
        down_at = time.time()
        threads, errors = _produce(db, 4, 2000, seed=3)
        _join(threads, errors)
        # Nothing can be published while the broker is down: the backlog waits in PostgreSQL.
        wait_for(lambda: _unpublished(db) >= 2000, timeout=20, what="backlog in PostgreSQL")
        time.sleep(max(0.0, 20 - (time.time() - down_at)))
        assert _unpublished(db) == 2000
    finally:
        kafka_broker.start()
    _wait_published(db, 3000, timeout=90)
    assert d.stop(timeout=30) == 0
    # A timed-out record may have reached the log (possibly persisted) and be sent again.
    _check_topic(db, kafka_broker, prefix + "order", 3000, allow_duplicates=(timeout != "0s"))


def test_leader_killed_standby_takes_over(kafka_broker, migrated_db, outboxd_factory, smtp_sink):  # noqa: F811
    db = migrated_db
    _setup_counters(db)
    prefix = _prefix()
    kafka_broker.ensure_running()
    a = outboxd_factory(smtp_sink.url, env=_env(kafka_broker, prefix, OUTBOXD_DISPATCHER_OWNER="a"), name="a")
    wait_for(lambda: "kafka mirror: leader" in a.log_text(), timeout=20, what="a leads")
    b = outboxd_factory(smtp_sink.url, env=_env(kafka_broker, prefix, OUTBOXD_DISPATCHER_OWNER="b"), name="b")
    threads, errors = _produce(db, 2, 500, seed=4)
    _join(threads, errors)
    _wait_published(db, 500, timeout=30)
    assert "kafka mirror: leader" not in b.log_text()
    a.kill()
    killed = time.time()
    threads, errors = _produce(db, 2, 500, seed=5)
    _join(threads, errors)
    _wait_published(db, 1000, timeout=30)
    took = time.time() - killed
    assert "kafka mirror: leader" in b.log_text()
    assert took < 10, f"takeover took {took:.1f}s"
    assert b.stop(timeout=30) == 0
    _check_topic(db, kafka_broker, prefix + "order", 1000, allow_duplicates=True)


def test_lifecycle_events_setting_applied(kafka_broker, migrated_db, outboxd_factory, smtp_sink):  # noqa: F811
    db = migrated_db
    prefix = _prefix()
    kafka_broker.ensure_running()
    d = outboxd_factory(smtp_sink.url, env=_env(kafka_broker, prefix, OUTBOXD_KAFKA_LIFECYCLE_EVENTS="false"))
    wait_for(lambda: db.scalar("SELECT lifecycle_events FROM outbox.settings") == "f", timeout=20,
             what="lifecycle_events off")
    db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'x', 'y')")
    # delivered while the switch is off: neither email.queued nor email.sent is written (stopping
    # before delivery would leave it for the next dispatcher, with the switch on again)
    wait_for(lambda: db.scalar("SELECT state FROM outbox.messages") == "sent", timeout=20, what="first sent")
    assert d.stop(timeout=30) == 0
    assert db.scalar("SELECT count(*) FROM outbox.events") == "0"
    # On again: the email lifecycle events carry the message id header.
    d = outboxd_factory(smtp_sink.url, env=_env(kafka_broker, prefix))
    wait_for(lambda: db.scalar("SELECT lifecycle_events FROM outbox.settings") == "t", timeout=20,
             what="lifecycle_events on")
    mid = db.scalar("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['b@example.com'], 'x', 'y') RETURNING id")
    try:
        wait_for(lambda: db.scalar("SELECT count(*) FROM outbox.events "
                                   "WHERE type = 'email.sent' AND state = 'published'") == "1",
                 timeout=30, what="email.sent published")
    except AssertionError as e:  # say what the mirror saw
        rows = db.sql("SELECT id, type, state, coalesce(last_error, '') FROM outbox.events ORDER BY id")
        msg = db.sql("SELECT state, attempts, coalesce(last_error, '') FROM outbox.messages")
        raise AssertionError(f"{e}\nevents:\n{rows}\nmessages: {msg}\nlog tail:\n{d.log_text()[-3000:]}") from None
    assert d.stop(timeout=30) == 0
    msgs = kafka_broker.consume(prefix + "email", timeout=30)
    types = [dict(m["headers"])["type"] for m in msgs]
    assert types == ["email.queued", "email.sent"]
    assert all(dict(m["headers"]).get("message_id") == mid for m in msgs)


def test_a_large_transaction_committing_behind_the_cursor_is_published_whole(
        kafka_broker, migrated_db, outboxd_factory, smtp_sink):  # noqa: F811
    """T0 (older xid) writes rows on both sides of a long transaction T1's 1,200 rows and
    commits first, so the reader's cursor passes T1's ids while they are invisible. When T1
    commits, more of its rows lie behind the cursor than one read returns: every one of them
    must still be published (the re-read behind the cursor must not give up on them)."""
    db = migrated_db
    prefix = _prefix()
    d = outboxd_factory(smtp_sink.url, env=_env(kafka_broker, prefix, OUTBOXD_KAFKA_BATCH_SIZE="100"))
    wait_for(lambda: "kafka mirror: leader" in d.log_text(), timeout=30, what="mirror leader")
    insert = ("INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) "
              "VALUES ('big', %s, 'E', jsonb_build_object('seq', %s::int))")
    t0 = psycopg2.connect(db.dsn)
    t1 = psycopg2.connect(db.dsn)
    try:
        c0, c1 = t0.cursor(), t1.cursor()
        c0.execute(insert, ("t0", 1))          # T0 takes the older xid
        for i in range(1, 1201):               # T1: 1,200 rows, ids after T0's first
            c1.execute(insert, (f"t1-{i % 7}", i))
        c0.execute(insert, ("t0", 2))          # T0 again: an id after all of T1's
        t0.commit()
        # the mirror publishes T0's two rows while T1 is still open
        wait_for(lambda: db.scalar("SELECT count(*) FROM outbox.events WHERE state = 'published'") == "2",
                 timeout=30, what="T0 published")
        t1.commit()
    finally:
        t0.close()
        t1.close()
    _wait_published(db, 1202, timeout=60)
    assert d.stop(timeout=30) == 0


def test_sasl_plain_right_secret_publishes_wrong_one_publishes_nothing(
        kafka_broker_factory, migrated_db, outboxd_factory, smtp_sink, tmp_path):  # noqa: F811
    # A broker whose second listener wants SASL PLAIN: a dispatcher with a wrong password
    # publishes nothing and says why; one with the right password (read from a file)
    # publishes every event. Neither password appears in a log line.
    secret = "pw-" + uuid.uuid4().hex
    wrong = "not-" + secret
    broker = kafka_broker_factory(partitions=1, sasl=f"outboxd:{secret}")
    prefix = _prefix()
    sasl = {"OUTBOXD_KAFKA_BROKERS": broker.sasl_bootstrap,
            "OUTBOXD_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
            "OUTBOXD_KAFKA_SASL_MECHANISM": "PLAIN",
            "OUTBOXD_KAFKA_SASL_USERNAME": "outboxd"}
    migrated_db.sql("INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) "
                    "SELECT 'order', 'k' || i, 'OrderPaid', jsonb_build_object('seq', i) FROM generate_series(1, 20) i")

    bad = outboxd_factory(smtp_sink.url, env={**_env(broker, prefix), **sasl,
                                               "OUTBOXD_KAFKA_SASL_PASSWORD": wrong}, name="bad")
    wait_for(lambda: any(line.get("error") == "_AUTHENTICATION" for line in bad.log_lines()),
             timeout=30, what="the authentication failure in the log")
    assert _unpublished(migrated_db) == 20
    bad.kill()
    assert wrong not in bad.log_text()

    pwfile = tmp_path / "kafka-password"
    pwfile.write_text(secret + "\n")
    good = outboxd_factory(smtp_sink.url, env={**_env(broker, prefix), **sasl,
                                                "OUTBOXD_KAFKA_SASL_PASSWORD_FILE": str(pwfile)}, name="good")
    _wait_published(migrated_db, 20, timeout=60)
    assert good.stop(timeout=30) == 0
    seqs = sorted(json.loads(m["payload"])["seq"] for m in broker.consume(prefix + "order", timeout=60))
    assert seqs == list(range(1, 21))
    assert secret not in good.log_text() and secret not in bad.log_text()
