"""Fault cases of the dispatcher itself: kill -9 mid-drain and a PostgreSQL restart (fast and
immediate) under traffic. Part of the fault suite (`make test-faults`, tests/integration/test_fault_*.py)."""
import os
import signal

import pytest

from outboxd_proc import insert_messages, states, wait_for, wait_states
from test_dispatcher import db_message_ids, sink_ids

# both SMTP engines, like test_dispatcher.py (conftest.py)
SMTP_BOTH_ENGINES = True


def test_kill9_then_restart_loses_nothing(migrated_db, smtp_sink, outboxd_factory):
    env = {"OUTBOXD_DISPATCHER_LEASE": "2s", "OUTBOXD_DISPATCHER_MAX_IN_FLIGHT": "50"}
    insert_messages(migrated_db, 3000, per_txn=500)
    d = outboxd_factory(smtp_sink.url, env=env, name="victim")
    wait_for(lambda: states(migrated_db).get("sent", 0) >= 500, timeout=60, what="500 sent")
    os.kill(d.pid, signal.SIGKILL)
    d.wait(5)
    in_flight = int(migrated_db.scalar("SELECT count(*) FROM outbox.messages WHERE state = 'sending'"))
    outboxd_factory(smtp_sink.url, env=env, name="successor")
    wait_states(migrated_db, {"sent": 3000}, timeout=120, interval=0.5)
    smtp_sink.wait_for(3000, timeout=30)
    got = sink_ids(smtp_sink)
    assert set(got) == db_message_ids(migrated_db)  # nothing lost, nothing foreign
    dups = {k: v for k, v in got.items() if v > 1}
    # duplicates only among rows that were in flight when the dispatcher died
    assert len(dups) <= max(in_flight, 50)
    assert all(v == 2 for v in dups.values())


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_mid_run(cluster, migrated_db, smtp_sink, outboxd_factory, mode):
    insert_messages(migrated_db, 2000, per_txn=500)
    d = outboxd_factory(smtp_sink.url, env={"OUTBOXD_DISPATCHER_LEASE": "3s"})
    wait_for(lambda: states(migrated_db).get("sent", 0) >= 200, timeout=60, what="200 sent")
    cluster.restart(mode)
    # the dispatcher reconnects by itself; rows keep flowing
    insert_messages(migrated_db, 500, start=2000, per_txn=100)
    wait_states(migrated_db, {"sent": 2500}, timeout=120, interval=0.5)
    smtp_sink.wait_for(2500, timeout=30)
    assert set(sink_ids(smtp_sink)) == db_message_ids(migrated_db)
    assert "database connected" in d.log_text()
    assert d.stop() == 0
