"""Faults around leases: a dispatcher killed with kill -9 mid-drain, with default settings
(5-minute lease), has its rows back in the queue within seconds because its database
session is gone (outbox.rescue_gone_sessions), not at lease expiry; a paused dispatcher does
not send on lost leases; an outcome write stuck behind a lock neither delays claims nor makes
the next renewal look like a takeover."""
import collections
import os
import signal
import time

import psycopg2

from outboxd_proc import connect, insert_messages, row, states, wait_for, wait_states


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


def _lock_row(db, msg_id):
    """Holds a row lock on one message in an open transaction; rollback() lets go."""
    conn = psycopg2.connect(db.dsn)
    cur = conn.cursor()
    cur.execute("SELECT 1 FROM outbox.messages WHERE id = %s FOR UPDATE", (msg_id,))
    return conn


def _outcome_write_blocked(db):
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'outboxd-%' "
                     "AND wait_event_type = 'Lock' AND query LIKE '%outbox.complete%'") == "1"


def _sent_to_relay(relay, recipient):
    return any(m.envelope_to == recipient for m in relay.messages())


def test_a_claim_does_not_wait_for_an_outcome_write(migrated_db, fault_smtpd, outboxd_factory):
    """Outcome writes have their own connection: while one is stuck behind a row lock, the
    next message is still claimed and delivered. On a shared connection its claim queued
    behind the write until the write's lock_timeout (5 s)."""
    outboxd_factory(fault_smtpd.url)
    [a] = insert_messages(migrated_db, 1, recipient=lambda i: "delay1000+a@example.com")
    wait_for(lambda: row(migrated_db, a)["state"] == "sending", timeout=10, what="A claimed")
    lock = _lock_row(migrated_db, a)
    try:
        wait_for(lambda: _outcome_write_blocked(migrated_db), timeout=10, what="A's outcome write blocked")
        t0 = time.monotonic()
        insert_messages(migrated_db, 1, recipient=lambda i: "b@example.com")
        wait_for(lambda: _sent_to_relay(fault_smtpd, "b@example.com"), timeout=4, interval=0.02,
                 what="B delivered while A's write waits")
        took = time.monotonic() - t0
        assert _outcome_write_blocked(migrated_db), "the write was no longer blocked: the test shows nothing"
    finally:
        lock.rollback()
        lock.close()
    print(f"\nB committed -> delivered in {took * 1000:.0f} ms while A's outcome write waited on a lock")
    wait_states(migrated_db, {"sent": 2}, timeout=15)


def test_a_renewal_behind_an_outcome_write_is_not_a_takeover(migrated_db, fault_smtpd, outboxd_factory):
    """A renewal queued behind an outcome write runs after it: rows of that write are
    finished by then, and asking for them came back short, read as a takeover, and the
    messages still queued were taken back unsent."""
    env = {"OUTBOXD_DISPATCHER_LEASE": "3s", "OUTBOXD_SMTP_POOL_SIZE": "1", "OUTBOXD_LOG_LEVEL": "debug"}
    d = outboxd_factory(fault_smtpd.url, env=env)
    [a] = insert_messages(migrated_db, 1, recipient=lambda i: "delay500+a@example.com")
    wait_for(lambda: row(migrated_db, a)["state"] == "sending", timeout=10, what="A claimed")
    lock = _lock_row(migrated_db, a)
    try:
        wait_for(lambda: _outcome_write_blocked(migrated_db), timeout=10, what="A's outcome write blocked")
        # B on the wire, C queued behind it on the one SMTP connection
        insert_messages(migrated_db, 1, recipient=lambda i: "delay3000+b@example.com")
        insert_messages(migrated_db, 1, recipient=lambda i: "c@example.com")
        renewals = d.log_text().count("lease renewal sent")
        wait_for(lambda: d.log_text().count("lease renewal sent") > renewals, timeout=5,
                 what="a renewal sent while A's write waits")
        assert _outcome_write_blocked(migrated_db), "the write was no longer blocked: the test shows nothing"
    finally:
        lock.rollback()
        lock.close()
    wait_states(migrated_db, {"sent": 3}, timeout=20)
    log = d.log_text()
    assert "taken over" not in log and "lease lost" not in log, log
    assert migrated_db.scalar("SELECT max(attempts) FROM outbox.messages") == "1"
    got = collections.Counter(m.envelope_to for m in fault_smtpd.messages())
    assert got == {"delay500+a@example.com": 1, "delay3000+b@example.com": 1, "c@example.com": 1}


def test_no_claim_while_outcomes_cannot_be_written(migrated_db, smtp_sink, outboxd_factory):
    """The outcomes connection is cut and cannot come back for twice the lease while
    messages commit. A claim then would send messages whose outcomes cannot be written nor
    their leases renewed; each lease runs out, the next claim takes the row back and sends
    it again. Claims wait for the outcomes connection and for the outcomes it owes."""
    lease_s, outage_s, total = 2, 4.5, 30
    d = outboxd_factory(smtp_sink.url, env={"OUTBOXD_DISPATCHER_LEASE": f"{lease_s}s"})
    wait_for(lambda: migrated_db.scalar("SELECT count(*) FROM pg_stat_activity "
                                        "WHERE application_name = 'outboxd-outcomes'") == "1" and
             migrated_db.scalar("SELECT count(*) FROM outbox.dispatcher_idle") == "1", timeout=15,
             what="the dispatcher idle")
    dbname = migrated_db.scalar("SELECT current_database()")
    producer = connect(migrated_db)
    admin = psycopg2.connect(migrated_db.cluster.dsn())
    admin.autocommit = True
    try:
        # the sessions already open stay; no new one gets in
        admin.cursor().execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        cur = producer.cursor()
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'outboxd-outcomes'")
        assert cur.fetchone()[0] == 1
        wait_for(lambda: any("database connection lost" in ln and "outboxd-outcomes" in ln
                             for ln in d.log_text().splitlines()), timeout=5, what="the dispatcher sees it")
        t0 = time.monotonic()
        for i in range(total):
            cur.execute("INSERT INTO outbox.messages (recipients, subject, body_text) "
                        "VALUES (ARRAY[%s], %s, %s)", (f"user{i}@example.com", f"message {i}", "Hello.\n"))
            time.sleep(outage_s / 2 / total)  # half the outage: the first leases run out within it
        while time.monotonic() - t0 < outage_s:
            time.sleep(0.1)
        during = smtp_sink.count()
    finally:
        admin.cursor().execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        admin.close()
        producer.close()
    wait_states(migrated_db, {"sent": total}, timeout=30)
    smtp_sink.wait_quiet(period=0.5, timeout=10)
    got = collections.Counter(m.message_id for m in smtp_sink.messages())
    print(f"\noutcomes connection down {outage_s} s (lease {lease_s} s): {during} sent meanwhile; "
          f"{len(got)} messages, {sum(v - 1 for v in got.values())} second copies")
    assert during == 0
    assert len(got) == total and all(v == 1 for v in got.values()), got
