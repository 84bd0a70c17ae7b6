"""The dispatcher and INSERT judge addresses alike, on real rows: every case of
tests/data/addresses.tsv is put into a row as the recipient and as the bcc (the forms
without angle brackets) and as the sender, past the validation trigger, as a row written before a rule
was tightened would be. The dispatcher sends exactly the rows INSERT would accept and fails
the others with INSERT's reason as last_error (a list position counted from 1, as INSERT
counts it); such rows do not stop a migrate."""
import json
import os

from conftest import ROOT
from outboxd_proc import wait_for

CASES = os.path.join(ROOT, "tests", "data", "addresses.tsv")


def test_dispatcher_sends_what_insert_accepts_and_fails_the_rest_with_its_reason(
        migrated_db, smtp_sink, outboxd_factory):
    db = migrated_db
    db.sql("CREATE TABLE public.address_cases (n serial, input text, address text, mailbox text, note text)")
    db.sql(f"\\copy public.address_cases (input, address, mailbox, note) FROM '{CASES}' WITH (FORMAT text, HEADER true)")
    # Valid placeholders first (the trigger fixes message_id and next_attempt_at), then the
    # case itself with the triggers off for this session. An empty sender means "none" to
    # the dispatcher (smtp.from is used), so that case goes in as a recipient only.
    db.sql("""
        INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
        SELECT ARRAY['p' || n || '@example.com'], 'grammar', 'b', 'to:' || n
          FROM public.address_cases WHERE input !~ '[<>]';
        INSERT INTO outbox.messages (recipients, bcc, subject, body_text, idempotency_key)
        SELECT ARRAY['t' || n || '@example.com'], ARRAY['p' || n || '@example.com'], 'grammar', 'b', 'bcc:' || n
          FROM public.address_cases WHERE input !~ '[<>]';
        INSERT INTO outbox.messages (sender, recipients, subject, body_text, idempotency_key)
        SELECT 'p@example.com', ARRAY['r' || n || '@example.com'], 'grammar', 'b', 'from:' || n
          FROM public.address_cases WHERE input <> '';
        SET session_replication_role = replica;
        UPDATE outbox.messages m SET recipients = ARRAY[c.input]
          FROM public.address_cases c WHERE m.idempotency_key = 'to:' || c.n;
        UPDATE outbox.messages m SET bcc = ARRAY[c.input]
          FROM public.address_cases c WHERE m.idempotency_key = 'bcc:' || c.n;
        UPDATE outbox.messages m SET sender = c.input
          FROM public.address_cases c WHERE m.idempotency_key = 'from:' || c.n;
    """)
    # positions in a list are counted from 1 on both sides
    two = "ARRAY['a@example.com', 'user@[192.0.2.1]']"
    r = db.sql(f"INSERT INTO outbox.messages (recipients, body_text) VALUES ({two}, 'b')", check=False)
    assert r.returncode != 0 and "outbox.messages.recipients[2]: address literal" in r.stderr, r.stderr
    db.sql(f"""
        INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key)
        VALUES (ARRAY['a@example.com', 'b@example.com'], 'grammar', 'b', 'list');
        SET session_replication_role = replica;
        UPDATE outbox.messages SET recipients = {two} WHERE idempotency_key = 'list';
    """)
    n_cases = int(db.scalar("SELECT count(*) FROM public.address_cases"))
    n_rows = int(db.scalar("SELECT count(*) FROM outbox.messages"))
    assert n_cases >= 40 and n_rows > 2 * n_cases
    # rows the rules refuse do not stop a migrate (sql/ is re-applied; nothing re-checks rows)
    literal = "SELECT count(*) FROM outbox.messages WHERE 'user@[192.0.2.1]' = ANY (recipients || bcc)"
    assert db.scalar(literal) == "3"
    db.migrate()
    assert db.scalar(literal) == "3"

    outboxd_factory(smtp_sink.url)
    wait_for(lambda: db.scalar("SELECT count(*) FROM outbox.messages WHERE state IN ('pending', 'sending')") == "0",
             timeout=90, what="every row sent or failed")

    rows = json.loads(db.scalar("""
        SELECT json_agg(json_build_object(
                   'column', split_part(m.idempotency_key, ':', 1), 'input', c.input, 'note', c.note,
                   'state', m.state, 'error', m.last_error,
                   'insert', CASE WHEN m.idempotency_key LIKE 'from:%' THEN outbox.mailbox_problem(c.input)
                                  ELSE outbox.addr_spec_problem(c.input) END,
                   'verdict', CASE WHEN m.idempotency_key LIKE 'from:%' THEN c.mailbox ELSE c.address END))
          FROM outbox.messages m
          JOIN public.address_cases c ON m.idempotency_key IN ('to:' || c.n, 'bcc:' || c.n, 'from:' || c.n)
    """))
    assert len(rows) == n_rows - 1
    assert db.sql("SELECT state, last_error FROM outbox.messages WHERE idempotency_key = 'list'") == \
        "failed|to[2]: address literal (user@[...]) not accepted: use a domain name"
    wrong = []
    for r in rows:
        if (r["insert"] is None) != (r["verdict"] == "valid"):
            wrong.append(f"INSERT: {r['column']} {json.dumps(r['input'])} ({r['note']}) is not {r['verdict']}")
        if r["insert"] is None:
            want = ("sent", None)
        else:
            want = ("failed", f"{r['column']}: {r['insert']}")
        if (r["state"], r["error"]) != want:
            wrong.append(f"{r['column']} {json.dumps(r['input'])} ({r['note']}): {r['state']} {r['error']!r}, "
                         f"want {want[0]} {want[1]!r}")
    assert not wrong, "\n".join(wrong)
    # what was sent reached the relay, with the envelope INSERT would have given it
    sent = [r for r in rows if r["state"] == "sent"]
    smtp_sink.wait_for(len(sent), timeout=30)
    envelopes = {rcpt for m in smtp_sink.messages() for rcpt in m.recipients}
    for r in sent:
        if r["column"] in ("to", "bcc"):
            assert r["input"] in envelopes, r
