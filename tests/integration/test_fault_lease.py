"""Faults around leases: a dispatcher killed with kill -9 mid-drain, with default settings
(5-minute lease), has its rows back in the queue within seconds because its database
session is gone (outbox.rescue_gone_sessions), not at lease expiry."""
import collections
import os
import signal
import time

from outboxd_proc import insert_messages, states, wait_for


def test_kill9_rows_rescued_in_seconds_not_at_lease_expiry(migrated_db, smtp_sink, outboxd_factory):
    total = 3000
    insert_messages(migrated_db, total, per_txn=500)
    victim = outboxd_factory(smtp_sink.url, name="victim")
    wait_for(lambda: states(migrated_db).get("sent", 0) >= 300, timeout=60, what="300 sent")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(5)
    owner = migrated_db.scalar("SELECT lease_owner FROM outbox.messages WHERE state = 'sending' LIMIT 1")
    left = int(migrated_db.scalar("SELECT count(*) FROM outbox.messages WHERE state = 'sending'"))
    assert left > 0 and owner, "the kill left nothing in flight: the test shows nothing"

    t0 = time.monotonic()
    outboxd_factory(smtp_sink.url, name="successor")
    wait_for(lambda: migrated_db.scalar(
        f"SELECT count(*) FROM outbox.messages WHERE state = 'sending' AND lease_owner = '{owner}'") == "0",
        timeout=60, interval=0.2, what="the victim's rows rescued")
    rescued_s = time.monotonic() - t0
    wait_for(lambda: states(migrated_db).get("sent", 0) == total, timeout=60, interval=0.2, what="all sent")
    all_sent_s = time.monotonic() - t0
    print(f"\nkill -9 with {left} rows in flight: rescued {rescued_s:.1f} s, "
          f"all {total} sent {all_sent_s:.1f} s after the restart")
    # the default lease is 5 minutes: only the session check can make this
    assert all_sent_s < 30, f"all sent only {all_sent_s:.1f} s after the restart"
    smtp_sink.wait_for(total, timeout=30)
    got = collections.Counter(m.message_id for m in smtp_sink.messages())
    assert len(got) == total
    # duplicates only among the rows in flight at the kill, each with the row's Message-ID
    assert sum(1 for v in got.values() if v > 1) <= left
    rows = migrated_db.sql(f"SELECT count(*) FROM outbox.messages WHERE attempts = 2 AND outcome_unknown")
    assert int(rows) <= left


def test_paused_past_the_lease_does_not_send_its_queue(migrated_db, smtp_sink, outboxd_factory):
    """SIGSTOP past the lease while another dispatcher drains, then SIGCONT: only the
    messages already on the wire (at most the pool size) go out twice."""
    pool = 2
    env = {"OUTBOXD_DISPATCHER_LEASE": "2s", "OUTBOXD_SMTP_POOL_SIZE": str(pool),
           "OUTBOXD_DISPATCHER_MAX_IN_FLIGHT": "100"}
    total = 3000
    insert_messages(migrated_db, total, per_txn=500)
    a = outboxd_factory(smtp_sink.url, env=env, name="paused")
    wait_for(lambda: states(migrated_db).get("sent", 0) >= 300, timeout=60, what="300 sent")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        held = int(migrated_db.scalar("SELECT count(*) FROM outbox.messages WHERE state = 'sending'"))
        assert held > pool, "the paused dispatcher holds no queue: the test shows nothing"
        b = outboxd_factory(smtp_sink.url, env=env, name="takeover")
        wait_for(lambda: states(migrated_db).get("sent", 0) == total, timeout=90, interval=0.2, what="B drains")
        smtp_sink.wait_for(total, timeout=30)
        before = len(smtp_sink.messages())
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # A runs again: it has to notice its leases ended before its queue reaches the relay
    wait_for(lambda: "lease lost or ending" in a.log_text() or "taken over" in a.log_text(),
             timeout=15, what="A notices")
    time.sleep(1)  # what A would still send goes out within this (the relay is local)
    mails = smtp_sink.messages()
    got = collections.Counter(m.message_id for m in mails)
    dups = {k: v for k, v in got.items() if v > 1}
    after = [m.message_id for m in mails[before:]]  # what A sent once it ran again
    print(f"\npaused past the lease holding {held} rows, pool {pool}: {len(after)} sent after SIGCONT, "
          f"{len(dups)} duplicates in all (the rest: sent before the pause, outcome not yet written)")
    assert len(got) == total
    assert len(after) <= pool, f"{len(after)} sent on a lost lease with a pool of {pool}"
    assert all(got[m] == 2 for m in after)  # each a second copy with the row's Message-ID
    assert all(v == 2 for v in dups.values())
    assert b.stop() == 0
