"""Kafka cluster failover under traffic: three KRaft brokers, replication factor 3,
min.insync.replicas 2; the leader of a busy partition killed with kill -9 mid-stream, then
restarted. Every committed event arrives (duplicates only with the same id header), per-key
order is kept, and the time for that partition to resume is printed."""
import threading
import time
import uuid

from kafka_cluster import KafkaCluster, kafka_cluster, kafka_cluster_id  # noqa: F401  (fixture)
from outboxd_proc import wait_for
from test_kafka_mirror import _check_topic, _env, _join, _prefix, _produce, _setup_counters, _wait_published


def _published_in(db, partition):
    return int(db.scalar("SELECT count(*) FROM outbox.events "
                         f"WHERE state = 'published' AND kafka_partition = {int(partition)}"))


def test_a_cluster_id_never_begins_with_a_dash():
    """kafka-storage format reads '-t -x...' as a missing value; an id drawn as 0xf8.. would."""
    draws = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x10" * 16)])
    cid = kafka_cluster_id(lambda: next(draws))
    assert cid == "EBAQEBAQEBAQEBAQEBAQEA"
    assert not kafka_cluster_id(lambda: uuid.UUID(bytes=b"\x00" * 16)).startswith("-")


class Stream(threading.Thread):
    """Commits events in chunks of 100 until stopped (at most 60 s), so that the stream spans
    the outage whatever the machine's speed."""

    def __init__(self, db):
        super().__init__(daemon=True)
        self.db, self.total, self.errors, self.halt = db, 0, [], threading.Event()

    def run(self):
        deadline, seed = time.time() + 60, 100
        while not self.halt.is_set() and time.time() < deadline:
            threads, errors = _produce(self.db, 1, 100, seed=seed)
            for t in threads:
                t.join(60)
            self.errors += errors
            self.total += 100
            seed += 1


def test_leader_of_a_busy_partition_killed_then_restarted(kafka_cluster, migrated_db,  # noqa: F811
                                                           outboxd_factory, smtp_sink):
    c: KafkaCluster = kafka_cluster
    db = migrated_db
    _setup_counters(db)
    prefix = _prefix()
    d = outboxd_factory(smtp_sink.url, env=_env(c, prefix))
    threads, errors = _produce(db, 2, 600, seed=11)
    _join(threads, errors)
    _wait_published(db, 600, timeout=60)
    topic = prefix + "order"
    parts = c.partitions_of(topic)
    assert parts and all(len(r) == 3 for _, r, _ in parts.values()), parts
    busy = max(parts, key=lambda p: _published_in(db, p))
    leader = parts[busy][0]

    # mid-stream: producers running while the leader dies
    stream = Stream(db)
    stream.start()
    wait_for(lambda: int(db.scalar("SELECT count(*) FROM outbox.events WHERE state = 'published'")) >= 900,
             timeout=60, interval=0.05, what="stream under way")
    c.nodes[leader]["up"] = False
    killed = time.time()
    c.kill_node(leader)
    # delivery reports the dead leader sent just before dying may still arrive: the partition
    # counts as resumed on the first record published once a new leader is elected
    new_leader = wait_for(lambda: (lambda l: l if l not in (None, -1, leader) else None)(
        c.partitions_of(topic).get(busy, (None,))[0]), timeout=60, interval=0.1, what="a new leader")
    elected = time.time() - killed
    before = _published_in(db, busy)
    wait_for(lambda: _published_in(db, busy) > before, timeout=60, interval=0.05,
             what=f"partition {busy} publishing again")
    resumed = time.time() - killed
    stream.halt.set()
    stream.join(70)
    assert not stream.errors, stream.errors
    total = 600 + stream.total
    _wait_published(db, total, timeout=90)

    # the dead broker comes back and catches up
    c.nodes[leader]["up"] = True
    c.start_node(leader)
    c.wait_brokers(3, 90)
    wait_for(lambda: len(c.partitions_of(topic).get(busy, (0, [], []))[2]) == 3, timeout=60, interval=0.5,
             what="the restarted broker back in the ISR")
    threads, errors = _produce(db, 2, 400, seed=13)
    _join(threads, errors)
    _wait_published(db, total + 400, timeout=60)
    assert d.stop(timeout=30) == 0
    msgs = c.consume(topic)
    ids = [dict(m["headers"]).get("id") for m in msgs]
    dups = len(ids) - len(set(ids))
    print(f"\nkafka cluster failover: leader {leader} of partition {busy} killed, new leader {new_leader}, "
          f"elected after {elected:.1f}s, partition resumed after {resumed:.1f}s; {total + 400} events, {len(set(ids))} distinct on the topic, "
          f"{dups} duplicates")
    # every event exactly as committed, per-key order kept (first copies), duplicates same id
    _check_topic(db, c, topic, total + 400, allow_duplicates=True)
    assert resumed < 30
