"""Smoke tests of the real Kafka broker used by the integration tests: keyed messages go in
with kcat and come back complete and in order per partition, also across a broker restart."""
import collections
import time

pytest_plugins = ["kafka_broker"]

N = 100
KEYS = 10


def _records(start, count):
    return [(f"key-{i % KEYS}", f"{i}") for i in range(start, start + count)]


def _check_order(msgs, expected_count):
    assert len(msgs) == expected_count, f"got {len(msgs)} of {expected_count} messages"
    assert sorted(int(m["payload"]) for m in msgs) == list(range(expected_count))
    by_partition = collections.defaultdict(list)
    partition_of_key = {}
    for m in msgs:
        by_partition[m["partition"]].append(m)
        # All messages of a key land in one partition.
        assert partition_of_key.setdefault(m["key"], m["partition"]) == m["partition"]
    for part, ms in by_partition.items():
        offsets = [m["offset"] for m in ms]
        assert offsets == sorted(offsets), f"partition {part} read out of offset order"
        seqs = [int(m["payload"]) for m in ms]
        assert seqs == sorted(seqs), f"partition {part} out of produce order: {seqs}"
    return by_partition


def test_produce_consume_in_order_per_partition(kafka_broker):
    t0 = time.monotonic()
    topic = "smoke-order"
    kafka_broker.produce(topic, _records(0, N))
    msgs = kafka_broker.consume(topic)
    parts = _check_order(msgs, N)
    # Auto-created topics get several partitions, so the keys spread over more than one.
    assert len(parts) > 1, f"all keys in one partition: {sorted(parts)}"
    assert time.monotonic() - t0 < 60


def test_restart_keeps_data(kafka_broker_factory):
    t0 = time.monotonic()
    broker = kafka_broker_factory(partitions=3)
    port = broker.port
    topic = "smoke-restart"
    broker.produce(topic, _records(0, N // 2))
    broker.stop()
    assert not broker.running()
    broker.start()
    assert broker.port == port and broker.running()
    broker.produce(topic, _records(N // 2, N // 2))
    _check_order(broker.consume(topic), N)
    broker.restart(kill=True)
    _check_order(broker.consume(topic), N)
    assert time.monotonic() - t0 < 120
