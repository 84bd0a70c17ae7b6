"""The dispatcher against real servers: PostgreSQL, Postfix's smtp-sink and the scripted
fault server. Every wait is bounded; every service is started and stopped by the test."""
import collections
import json
import os
import signal
import time

import pytest

from outboxd_proc import (connect, insert_messages, produce_concurrently, row, states,
                          wait_for, wait_states)
from smtp_servers import ScriptedRelay

# every test here runs on both SMTP engines (smtp.engine native and libcurl) and asserts the
# same outcomes on both: the engines must agree (conftest.py)
SMTP_BOTH_ENGINES = True


def sink_ids(sink):
    return collections.Counter(m.message_id for m in sink.messages())


def db_message_ids(db):
    return set(db.sql("SELECT message_id FROM outbox.messages").split())


def test_minimal_insert_is_delivered_with_its_message_id(migrated_db, smtp_sink, outboxd_factory):
    d = outboxd_factory(smtp_sink.url)
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['a@example.com'], 'Hi', 'Hello')")
    wait_states(migrated_db, {"sent": 1}, timeout=10)
    r = row(migrated_db, migrated_db.scalar("SELECT id FROM outbox.messages"))
    assert r["attempts"] == 1 and r["code"] == 250
    smtp_sink.wait_for(1, timeout=10)
    (mail,) = smtp_sink.messages()
    assert mail.message_id == r["message_id"]
    assert mail.subject == "Hi"
    assert mail.envelope_to == "a@example.com"
    assert d.stop() == 0
    # a stopped dispatcher no longer counts as idle (producers stop notifying it)
    assert migrated_db.scalar("SELECT count(*) FROM outbox.dispatcher_idle") == "0"
    # every log line is one JSON object
    lines = d.log_lines()
    assert any(line["msg"] == "outboxd starting" for line in lines)


def test_wakes_on_notify_well_before_the_poll(migrated_db, smtp_sink, outboxd_factory):
    outboxd_factory(smtp_sink.url, env={"OUTBOXD_DISPATCHER_POLL_INTERVAL": "1h"})
    # let it go idle (an empty claim registers it in outbox.dispatcher_idle)
    wait_for(lambda: migrated_db.scalar("SELECT count(*) FROM outbox.dispatcher_idle") == "1",
             timeout=10, what="dispatcher idle")
    t0 = time.time()
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['b@example.com'], 'Fast', 'x')")
    wait_states(migrated_db, {"sent": 1}, timeout=10, interval=0.01)
    assert time.time() - t0 < 2.0


def function_calls(db, names):
    got = dict(r.split("|") for r in db.sql(
        "SELECT funcname, sum(calls) FROM pg_stat_user_functions WHERE schemaname = 'outbox' "
        "GROUP BY funcname").splitlines() if "|" in r)
    return {n: int(got.get(n, 0)) for n in names}


def test_a_steady_trickle_costs_one_claim_and_one_write_per_message(migrated_db, smtp_sink, outboxd_factory):
    # Every extra statement on a message's path is latency: no busy/idle flip and no empty
    # claims while the idle mark stands (every commit wakes the dispatcher), no
    # outbox.release() call when nothing is given back, and the rescue of gone sessions and
    # expired leases (a third of a claim) at most once a second, not with every claim.
    migrated_db.sql("ALTER DATABASE " + migrated_db.name + " SET track_functions = 'all'")
    names = ("claim", "complete", "release", "set_idle", "rescue_gone_sessions")
    before = function_calls(migrated_db, names)
    t0 = time.monotonic()
    d = outboxd_factory(smtp_sink.url, env={"OUTBOXD_DISPATCHER_POLL_INTERVAL": "1h"})
    wait_for(lambda: migrated_db.scalar("SELECT count(*) FROM outbox.dispatcher_idle") == "1",
             timeout=10, what="dispatcher idle")
    n = 20
    for i in range(n):
        migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                        f"VALUES (ARRAY['t{i}@example.com'], 'trickle', 'x')")
        wait_states(migrated_db, {"sent": i + 1}, timeout=10, interval=0.01)
    assert d.stop() == 0  # the session's function statistics are written as it ends
    lived = time.monotonic() - t0
    after = function_calls(migrated_db, names)
    calls = {k: after[k] - before[k] for k in names}
    assert calls["complete"] == n, calls
    assert calls["release"] == 0, calls
    # start-up: idle mark and its catch-up claim; then one claim per message
    assert calls["claim"] <= n + 3, calls
    assert calls["set_idle"] <= 3, calls
    assert 1 <= calls["rescue_gone_sessions"] <= int(lived) + 2, (calls, lived)


def test_10000_emails_from_4_producers_each_delivered_once(migrated_db, smtp_sink, outboxd_factory):
    outboxd_factory(smtp_sink.url, env={"OUTBOXD_SMTP_POOL_SIZE": "8"})
    ids = produce_concurrently(migrated_db, producers=4, per_producer=2500, per_txn=25)
    assert len(ids) == 10000
    wait_states(migrated_db, {"sent": 10000}, timeout=120, interval=0.5)
    smtp_sink.wait_for(10000, timeout=30)
    got = sink_ids(smtp_sink)
    assert len(got) == 10000
    assert max(got.values()) == 1, [k for k, v in got.items() if v > 1][:5]
    assert set(got) == db_message_ids(migrated_db)


def test_three_dispatchers_never_send_twice(migrated_db, smtp_sink, outboxd_factory):
    ds = [outboxd_factory(smtp_sink.url, name=f"d{i}") for i in range(3)]
    produce_concurrently(migrated_db, producers=2, per_producer=2500, per_txn=50)
    wait_states(migrated_db, {"sent": 5000}, timeout=120, interval=0.5)
    smtp_sink.wait_for(5000, timeout=30)
    got = sink_ids(smtp_sink)
    assert len(got) == 5000 and max(got.values()) == 1
    # the work was shared
    assert all(d.stop() == 0 for d in ds)


def test_paused_dispatcher_cannot_overwrite_the_takeover(migrated_db, fault_smtpd, outboxd_factory):
    env = {"OUTBOXD_DISPATCHER_LEASE": "1s"}
    # the relay holds the final "." for 3 s: A is mid-send when it is frozen
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['delay3000+x@example.com'], 'slow', 'x')")
    a = outboxd_factory(fault_smtpd.url, env=env, name="paused")
    wait_for(lambda: row(migrated_db, 1)["state"] == "sending", timeout=10, what="A sending")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        b = outboxd_factory(fault_smtpd.url, env=env, name="takeover")
        wait_for(lambda: row(migrated_db, 1)["attempts"] == 2, timeout=15, what="B claims")
        wait_states(migrated_db, {"sent": 1}, timeout=15)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # A finishes its own send, but its outcome is fenced off
    wait_for(lambda: "fenced off" in a.log_text(), timeout=15, what="A fenced")
    r = row(migrated_db, 1)
    assert r["state"] == "sent" and r["attempts"] == 2
    assert b.stop() == 0


def test_retry_then_sent_records_attempts(migrated_db, fault_smtpd, outboxd_factory):
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['temp2+r@example.com'], 'retry', 'x')")
    outboxd_factory(fault_smtpd.url)
    wait_states(migrated_db, {"sent": 1}, timeout=20)
    r = row(migrated_db, 1)
    assert r["attempts"] == 3
    per = migrated_db.sql("SELECT state, attempts, smtp_code FROM outbox.recipient_status WHERE message = 1")
    assert per == "sent|3|250"
    # without a Kafka mirror the dispatcher switches the lifecycle events off: nothing after
    # the email.queued written at INSERT, before it started
    assert migrated_db.scalar("SELECT string_agg(type, ',') FROM outbox.events") == "email.queued"


def test_5xx_fails_at_once_with_code_and_text(migrated_db, fault_smtpd, outboxd_factory):
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['perm+p@example.com'], 'perm', 'x')")
    outboxd_factory(fault_smtpd.url)
    wait_states(migrated_db, {"failed": 1}, timeout=20)
    r = row(migrated_db, 1)
    assert r["attempts"] == 1 and r["code"] == 550
    assert "550" in r["error"] and "5.1.1" in r["error"]


def test_attempts_exhausted_is_dead(migrated_db, fault_smtpd, outboxd_factory):
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, max_attempts) "
                    "VALUES (ARRAY['temp+d@example.com'], 'dead', 'x', 3)")
    outboxd_factory(fault_smtpd.url)
    wait_states(migrated_db, {"dead": 1}, timeout=30)
    r = row(migrated_db, 1)
    assert r["attempts"] == 3 and r["code"] == 451


def test_not_before_is_honoured(migrated_db, smtp_sink, outboxd_factory):
    outboxd_factory(smtp_sink.url)
    # one transaction: the row due now proves the dispatcher looked while the other waited
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
                    "VALUES (ARRAY['later@example.com'], 'later', 'x', now() + interval '2 seconds'), "
                    "       (ARRAY['now@example.com'], 'now', 'x', DEFAULT)")
    wait_states(migrated_db, {"pending": 1, "sent": 1}, timeout=10)
    assert migrated_db.scalar("SELECT state FROM outbox.messages WHERE id = 1") == "pending"
    wait_states(migrated_db, {"sent": 2}, timeout=10)
    sent_after = migrated_db.scalar(
        "SELECT sent_at >= not_before FROM outbox.messages WHERE id = 1")
    assert sent_after == "t"


def test_cancel_and_requeue(migrated_db, fault_smtpd, outboxd_factory):
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
                    "VALUES (ARRAY['x@example.com'], 'cancel me', 'x', now() + interval '1 hour')")
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['perm+q@example.com'], 'requeue me', 'x')")
    assert migrated_db.scalar("SELECT outbox.cancel(1)") == "t"
    outboxd_factory(fault_smtpd.url)
    wait_states(migrated_db, {"cancelled": 1, "failed": 1}, timeout=20)
    # the address is refused for good; fix the cause, then requeue
    migrated_db.sql("UPDATE outbox.messages SET recipients = ARRAY['ok+q@example.com'] WHERE id = 2")
    assert migrated_db.scalar("SELECT outbox.requeue(2)") == "t"
    wait_states(migrated_db, {"cancelled": 1, "sent": 1}, timeout=20)


def test_mixed_recipients_get_per_recipient_status(migrated_db, fault_smtpd, outboxd_factory):
    migrated_db.sql("INSERT INTO outbox.messages (recipients, cc, subject, body_text) "
                    "VALUES (ARRAY['ok+a@example.com'], ARRAY['perm+b@example.com'], 'mixed', 'x')")
    outboxd_factory(fault_smtpd.url)
    wait_states(migrated_db, {"failed": 1}, timeout=20)
    per = migrated_db.sql("SELECT address, state, coalesce(smtp_code, 0) FROM outbox.recipient_status "
                          "WHERE message = 1 ORDER BY address")
    assert per.splitlines() == ["ok+a@example.com|sent|250", "perm+b@example.com|failed|550"]
    accepted = [m for m in fault_smtpd.messages()]
    # both engines: one accepted copy (native: one transaction, the refused RCPT left out;
    # libcurl: one transaction per recipient); the Cc header still shows both
    assert len(accepted) == 1
    assert accepted[0].recipients == ["ok+a@example.com"]
    assert "perm+b@example.com" in accepted[0].headers.get("Cc", "")


def test_untrusted_certificate_is_refused_and_retried_never_clear_text(
        migrated_db, fault_smtpd_factory, outboxd_factory):
    server = fault_smtpd_factory(tls="require", cert="untrusted")
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['ok+tls@example.com'], 'tls', 'secret body')")
    d = outboxd_factory(server.url, env={"OUTBOXD_SMTP_TLS": "required",
                                         "OUTBOXD_SMTP_CA_FILE": server.ca_cert})
    # certificate refused: a configuration fault, so the row goes back without an attempt
    # charged and is tried again (until the breaker opens)
    wait_for(lambda: sum(1 for line in server.client_lines() if line.upper().startswith("STARTTLS")) >= 2,
             timeout=20, what="a second STARTTLS try")
    r = row(migrated_db, 1)
    assert r["state"] in ("pending", "sending")
    assert server.count() == 0
    assert "certificate" in d.log_text().lower() or "SSL" in d.log_text()
    # the client never sent MAIL FROM (nor the body) on the unencrypted connection
    assert not any(line.upper().startswith("MAIL") for line in server.client_lines())
    d.stop()


def test_starttls_and_auth_work_and_the_secret_is_never_logged(
        migrated_db, fault_smtpd_factory, outboxd_factory, tmp_path):
    secret = "s3cr3t-Pa55word"
    server = fault_smtpd_factory(tls="require", auth=f"mailer:{secret}")
    pw_file = tmp_path / "smtp-password"
    pw_file.write_text(secret + "\n")
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['ok+auth@example.com'], 'auth', 'x')")
    d = outboxd_factory(server.url.replace("127.0.0.1", "localhost"),
                        env={"OUTBOXD_SMTP_TLS": "required", "OUTBOXD_SMTP_CA_FILE": server.ca_cert,
                             "OUTBOXD_SMTP_USERNAME": "mailer",
                             "OUTBOXD_SMTP_PASSWORD_FILE": str(pw_file),
                             "OUTBOXD_LOG_LEVEL": "debug"})
    wait_states(migrated_db, {"sent": 1}, timeout=20)
    assert server.count() == 1
    assert d.stop() == 0
    text = d.log_text()
    assert secret not in text
    for line in text.splitlines():
        json.loads(line)


def test_sigterm_drains_in_flight_and_exits_zero(migrated_db, fault_smtpd, outboxd_factory):
    # slow relay: each message takes 1 s, so several are in flight at SIGTERM
    insert_messages(migrated_db, 20, recipient=lambda i: f"delay1000+{i}@example.com", per_txn=20)
    d = outboxd_factory(fault_smtpd.url, env={"OUTBOXD_SMTP_POOL_SIZE": "4",
                                              "OUTBOXD_DISPATCHER_DRAIN_TIMEOUT": "10s"})
    wait_for(lambda: states(migrated_db).get("sent", 0) >= 1, timeout=20, what="first sent")
    t0 = time.time()
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0
    assert time.time() - t0 < 10
    st = states(migrated_db)
    # nothing is left leased: in-flight ones finished, the rest went back to pending
    assert "sending" not in st, st
    assert st.get("sent", 0) + st.get("pending", 0) == 20
    # released rows were not charged an attempt
    assert migrated_db.scalar("SELECT count(*) FROM outbox.messages WHERE state = 'pending' AND attempts > 0") == "0"


def test_connection_dropped_after_data_is_an_unknown_outcome_retried_with_the_same_id(
        migrated_db, fault_smtpd, outboxd_factory):
    # the relay queues the message, then dies before answering the final "."
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['drop1+u@example.com'], 'unknown', 'x')")
    d = outboxd_factory(fault_smtpd.url)
    wait_states(migrated_db, {"sent": 1}, timeout=20)
    r = row(migrated_db, 1)
    assert r["attempts"] == 2
    retry = [line for line in d.log_lines() if line["msg"] == "message retry"]
    assert len(retry) == 1 and "outcome unknown" in retry[0]["error"], retry
    got = [m.message_id for m in fault_smtpd.messages()]
    # both copies reached the relay and carry the row's Message-ID, so it is recognisable
    assert got == [r["message_id"], r["message_id"]]


def test_421_and_disconnect_after_data_is_retried(migrated_db, fault_smtpd, outboxd_factory):
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['bye421+a@example.com'], 'bye', 'x'), "
                    "(ARRAY['ok+after@example.com'], 'next', 'y')")
    outboxd_factory(fault_smtpd.url, env={"OUTBOXD_SMTP_POOL_SIZE": "1"})
    # the second message goes through although the first one's connection was closed
    wait_for(lambda: row(migrated_db, 2)["state"] == "sent", timeout=20, what="second sent")
    wait_for(lambda: row(migrated_db, 1)["attempts"] >= 2, timeout=20, what="421 retried")
    r = row(migrated_db, 1)
    assert r["state"] in ("pending", "sending") and r["code"] in (0, 421)


def test_a_row_that_cannot_become_a_message_fails_with_the_reason(migrated_db, smtp_sink, outboxd_factory):
    # no sender on the row and no smtp.from configured
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['a@example.com'], 'no sender', 'x')")
    d = outboxd_factory(smtp_sink.url, env={"OUTBOXD_SMTP_FROM": ""})
    wait_states(migrated_db, {"failed": 1}, timeout=10)
    assert "no sender" in row(migrated_db, 1)["error"]
    assert smtp_sink.count() == 0
    assert d.stop() == 0


def test_leases_of_slow_sends_are_renewed_so_no_one_takes_them_over(migrated_db, fault_smtpd, outboxd_factory):
    env = {"OUTBOXD_DISPATCHER_LEASE": "1s"}
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['delay3000+slow@example.com'], 'slow', 'x')")
    outboxd_factory(fault_smtpd.url, env=env, name="first")
    wait_for(lambda: row(migrated_db, 1)["state"] == "sending", timeout=10, what="sending")
    outboxd_factory(fault_smtpd.url, env=env, name="second")
    wait_states(migrated_db, {"sent": 1}, timeout=15)
    assert row(migrated_db, 1)["attempts"] == 1
    assert fault_smtpd.count() == 1


def outcome_wait(db, server, msg_id):
    """Seconds from the relay accepting a message (the fault server's own clock, taken just
    before its 250) to the transaction that recorded it as sent (sent_at = its now())."""
    rcpt = db.scalar(f"SELECT recipients[1] FROM outbox.messages WHERE id = {int(msg_id)}")
    accepted = [m.meta["time"] for m in server.messages("accepted") if m.recipients == [rcpt]]
    assert len(accepted) == 1, accepted
    sent_at = float(db.scalar(f"SELECT extract(epoch FROM sent_at) FROM outbox.messages WHERE id = {int(msg_id)}"))
    return sent_at - accepted[0]


@pytest.mark.parametrize("delay", ["1s", "0"])
def test_outcomes_are_written_in_groups_within_outcome_delay(migrated_db, fault_smtpd, outboxd_factory, delay):
    # batch size 6: outcomes are grouped by three while at least three sends are in flight.
    # Three slow sends stay in flight while two fast ones are accepted: the fast outcomes
    # wait up to dispatcher.outcome_delay for company, then go out together in one statement.
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "SELECT ARRAY['delay8000+slow' || i || '@example.com'], 'slow', 'x' FROM generate_series(1, 3) i")
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['ok+f1@example.com'], 'fast1', 'x'), (ARRAY['ok+f2@example.com'], 'fast2', 'x')")
    outboxd_factory(fault_smtpd.url, env={"OUTBOXD_SMTP_POOL_SIZE": "4", "OUTBOXD_DISPATCHER_BATCH_SIZE": "6",
                                          "OUTBOXD_DISPATCHER_OUTCOME_DELAY": delay})
    fast = (4, 5)
    wait_for(lambda: [row(migrated_db, i)["state"] for i in fast] == ["sent", "sent"],
             timeout=15, what="fast outcomes written")
    # the slow sends were still in flight: the write did not wait for them
    assert [row(migrated_db, i)["state"] for i in (1, 2, 3)] == ["sending"] * 3
    waited = [outcome_wait(migrated_db, fault_smtpd, i) for i in fast]
    if delay == "0":
        assert max(waited) < 0.5, waited
    else:
        # the first outcome armed the 1 s timer after its 250 and waited all of it; the
        # second, accepted just after, nearly as long
        assert max(waited) >= 0.9 and min(waited) >= 0.5, waited
        # one statement, one transaction: the same now()
        assert migrated_db.scalar("SELECT count(DISTINCT sent_at) FROM outbox.messages WHERE id IN (4, 5)") == "1"
    wait_states(migrated_db, {"sent": 5}, timeout=30)


def test_a_lone_outcome_is_written_at_once_whatever_the_delay(migrated_db, fault_smtpd, outboxd_factory):
    # one slow send in flight is no backlog: the fast outcome beside it does not wait
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['delay6000+slow@example.com'], 'slow', 'x')")
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['ok+f1@example.com'], 'fast1', 'x')")
    outboxd_factory(fault_smtpd.url, env={"OUTBOXD_SMTP_POOL_SIZE": "2", "OUTBOXD_DISPATCHER_OUTCOME_DELAY": "1s"})
    wait_for(lambda: row(migrated_db, 2)["state"] == "sent", timeout=15, what="fast outcome written")
    assert row(migrated_db, 1)["state"] == "sending"
    assert outcome_wait(migrated_db, fault_smtpd, 2) < 0.5


def test_rows_locked_elsewhere_do_not_make_a_tight_claim_loop(migrated_db, smtp_sink, outboxd_factory):
    insert_messages(migrated_db, 10, per_txn=10)
    migrated_db.sql("ALTER DATABASE " + migrated_db.name + " SET track_functions = 'all'")
    holder = connect(migrated_db)
    holder.autocommit = False
    cur = holder.cursor()
    cur.execute("SELECT id FROM outbox.messages FOR UPDATE")  # another session holds every row
    try:
        outboxd_factory(smtp_sink.url, env={"OUTBOXD_DISPATCHER_POLL_INTERVAL": "500ms"})
        time.sleep(3.0)
        calls = int(migrated_db.scalar(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
            "WHERE schemaname = 'outbox' AND funcname = 'claim'") or 0)
        # the poll (every 0.5 s) plus the idle catch-up claims, not hundreds per second
        assert 0 < calls <= 20, calls
        assert states(migrated_db) == {"pending": 10}
    finally:
        holder.rollback()
        holder.close()
    wait_states(migrated_db, {"sent": 10}, timeout=10)


def test_started_before_migrations_it_begins_once_they_are_applied(cluster, smtp_sink, outboxd_factory):
    from conftest import Database, psql
    name = "t_premigrate_" + str(os.getpid())
    psql(cluster.dsn(), f"DROP DATABASE IF EXISTS {name}")
    psql(cluster.dsn(), f"CREATE DATABASE {name}")
    db = Database(cluster, name)
    d = outboxd_factory(smtp_sink.url, db=db)
    wait_for(lambda: "start-up query failed" in d.log_text(), timeout=10, what="start-up refused")
    db.migrate()
    db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
           "VALUES (ARRAY['late@example.com'], 'after migrate', 'x')")
    wait_states(db, {"sent": 1}, timeout=15)
    assert d.stop() == 0


def test_sigterm_exits_promptly_when_the_relay_never_answers_quit(migrated_db, outboxd_factory):
    relay = ScriptedRelay("quit", b"")  # accepts every message, never answers QUIT
    try:
        insert_messages(migrated_db, 4, per_txn=4)
        d = outboxd_factory(f"smtp://127.0.0.1:{relay.port}", env={"OUTBOXD_SMTP_POOL_SIZE": "2"})
        wait_states(migrated_db, {"sent": 4}, timeout=20)
        t0 = time.time()
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0
        assert time.time() - t0 < 5
    finally:
        relay.close()
