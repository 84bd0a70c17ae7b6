"""The web console over HTTP, against a real dispatcher and database: its pages show the queue,
failures with their relay replies, a message's history and a recipient search, all escaped
(hostile subjects and relay texts); requeue and cancel need the configured token from a
same-origin page; without a token it is read-only; a /metrics scrape runs none of its queries."""
import json
import os
import re
import urllib.error
import urllib.request

import pytest

from smtp_servers import free_port, wait_until

TOKEN = "console-test-token-4f1c9a"
HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


class Console:
    def __init__(self, db, port):
        self.db = db
        self.base = f"http://127.0.0.1:{port}"

    def request(self, path, data=None, headers=None, method=None):
        req = urllib.request.Request(self.base + path, data=data.encode() if data is not None else None,
                                     headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def get(self, path):
        return self.request(path)

    def post(self, action, mid, token=TOKEN, origin=None):
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        if token is not None:
            h["X-Console-Token"] = token
        if origin is not None:
            h["Origin"] = origin
        code, _, body = self.request(f"/ui/api/{action}", data=f"id={mid}", headers=h)
        return code, json.loads(body)


def failed_message(db, subject=HOSTILE, reply=f"550 5.1.1 {HOSTILE} no such user"):
    """A message failed by the relay, with its per-recipient replies; returns its id. One
    transaction (one psql -c), so no dispatcher ever sees it pending."""
    mid = "currval(pg_get_serial_sequence('outbox.messages', 'id'))"
    return int(db.scalar(
        "INSERT INTO outbox.messages (recipients, cc, subject, body_text, max_attempts) "
        f"VALUES (ARRAY['Victim@Example.com'], ARRAY['cc@example.com'], $q${subject}$q$, "
        "'secret body text 7c1e', 1000); "
        "UPDATE outbox.messages SET state = 'failed', attempts = 1, last_smtp_code = 550, "
        f"last_error = $q${reply}$q$, updated_at = now() WHERE id = {mid}; "
        "INSERT INTO outbox.message_recipients (message, address, kind, state, smtp_code, last_error, attempts) "
        f"VALUES ({mid}, 'Victim@Example.com', 'to', 'failed', 550, $q${reply}$q$, 1), "
        f"({mid}, 'cc@example.com', 'cc', 'sent', 250, NULL, 1); "
        f"SELECT {mid}"))


def start_console(outboxd_factory, db, smtp_sink, tmp_path, token=TOKEN, env=None):
    port = free_port()
    e = {"OUTBOXD_HTTP_LISTEN": f"127.0.0.1:{port}"}
    if token:
        path = tmp_path / "console-token"
        path.write_text(token + "\n")
        path.chmod(0o600)
        e["OUTBOXD_HTTP_CONSOLE_TOKEN_FILE"] = str(path)
    e.update(env or {})
    outboxd_factory(smtp_sink.url, env=e)
    c = Console(db, port)

    def up():
        try:
            return c.get("/health")[0] == 200 and db.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outboxd-console' "
                "AND state = 'idle'") == "1"
        except OSError:
            return False
    wait_until(up, 20, what="console up")
    return c


@pytest.fixture
def console(migrated_db, smtp_sink, outboxd_factory, tmp_path):
    return start_console(outboxd_factory, migrated_db, smtp_sink, tmp_path)


def assert_escaped(html):
    assert "<script>alert" not in html and "<img" not in html, html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&gt;&lt;img src=x onerror=alert(2)&gt;" in html


def test_overview_shows_the_failure_with_its_reply_escaped(console):
    mid = failed_message(console.db)
    code, headers, html = console.get("/")
    assert code == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert_escaped(html)
    row = re.search(rf'<tr data-id="{mid}">.*?</tr>', html, re.S).group(0)
    assert "<b>550</b>" in row and "no such user" in row and "Victim@Example.com" in row
    assert f'data-action="requeue" data-id="{mid}"' in row
    assert 'id="depth-failed"' in html and 'id="chart-rate"' in html and "<svg" in html
    assert "secret body text" not in html
    assert console.get("/ui")[0] == 200
    code, headers, js = console.get("/ui/console.js")
    assert code == 200 and headers["Content-Type"].startswith("text/javascript") and "X-Console-Token" in js
    assert console.get("/ui/console.css")[0] == 200
    assert console.get("/ui/nothing")[0] == 404
    assert console.get("/elsewhere")[0] == 404  # the HTTP server's own 404, not the console's


def test_message_history_by_id_and_message_id(console):
    mid = failed_message(console.db)
    message_id = console.db.scalar(f"SELECT message_id FROM outbox.messages WHERE id = {mid}")
    code, _, html = console.get(f"/ui/message?id={mid}")
    assert code == 200
    assert_escaped(html)
    assert f"Message #{mid}" in html and "cc@example.com" in html
    assert re.search(r'id="recipients".*Victim@Example.com.*failed.*550', html, re.S)
    assert "secret body text" not in html
    for q in (message_id, message_id.strip("<>")):
        code, _, html = console.get("/ui/message?q=" + urllib.request.quote(q))
        assert code == 200 and f"Message #{mid}" in html
    code, _, html = console.get("/ui/message?q=" + urllib.request.quote(HOSTILE))
    assert code == 404 and "No such message" in html
    assert_escaped(html)


def test_search_by_recipient_part_any_case(console):
    mid = failed_message(console.db)
    console.db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
                   "VALUES (ARRAY['other@example.org'], 'unrelated', 'x', '2030-01-01 09:00+00')")
    code, _, html = console.get("/ui/search?recipient=victim%40EXAMPLE")
    assert code == 200
    assert f'href="/ui/message?id={mid}"' in html and "unrelated" not in html
    assert_escaped(html)
    code, _, html = console.get("/ui/search?recipient=" + urllib.request.quote(HOSTILE))
    assert code == 200 and "No message found" in html
    assert_escaped(html)


def test_requeue_and_cancel_need_the_token_from_the_same_origin(console, smtp_sink):
    mid = failed_message(console.db, subject="requeue me")
    state = lambda: console.db.scalar(f"SELECT state FROM outbox.messages WHERE id = {mid}")
    assert console.post("requeue", mid, token=None)[0] == 403
    assert console.post("requeue", mid, token="console-test-token-4f1c9b")[0] == 403
    assert console.post("requeue", mid, token=TOKEN[:-1])[0] == 403
    assert console.post("requeue", mid, origin="http://evil.example")[0] == 403
    assert state() == "failed"
    assert console.get("/ui/api/requeue")[0] == 405

    code, body = console.post("requeue", mid, origin=console.base)
    assert code == 200 and body == {"changed": True, "action": "requeue", "id": mid}
    # back in the queue: the dispatcher sends it to the sink
    wait_until(lambda: state() == "sent", 20, what="requeued message sent")
    assert console.post("requeue", mid)[1]["changed"] is False  # sent: nothing to requeue

    later = int(console.db.scalar("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
                                  "VALUES (ARRAY['later@example.com'], 'later', 'x', '2030-01-01 09:00+00') "
                                  "RETURNING id"))
    assert console.post("cancel", later, token="nope")[0] == 403
    code, body = console.post("cancel", later)
    assert code == 200 and body["changed"] is True
    assert console.db.scalar(f"SELECT state FROM outbox.messages WHERE id = {later}") == "cancelled"
    assert console.post("requeue", "1; DROP TABLE outbox.messages")[0] == 400


def test_read_only_without_a_token(migrated_db, smtp_sink, outboxd_factory, tmp_path):
    c = start_console(outboxd_factory, migrated_db, smtp_sink, tmp_path, token=None)
    mid = failed_message(migrated_db)
    code, _, html = c.get("/")
    assert code == 200 and "read-only" in html and "data-action" not in html
    code, body = c.post("requeue", mid)
    assert code == 403 and "read-only" in body["error"]
    assert migrated_db.scalar(f"SELECT state FROM outbox.messages WHERE id = {mid}") == "failed"


def test_bodies_only_when_configured(migrated_db, smtp_sink, outboxd_factory, tmp_path):
    c = start_console(outboxd_factory, migrated_db, smtp_sink, tmp_path,
                      env={"OUTBOXD_HTTP_CONSOLE_SHOW_BODY": "true"})
    mid = failed_message(migrated_db)
    code, _, html = c.get(f"/ui/message?id={mid}")
    assert code == 200 and "secret body text 7c1e" in html
    assert_escaped(html)


def test_metrics_scrape_runs_no_console_query(console):
    def console_query():
        return console.db.scalar("SELECT query FROM pg_stat_activity WHERE application_name = 'outboxd-console'")
    assert console_query() in (None, "")
    for _ in range(20):
        assert console.get("/metrics")[0] == 200
    assert console_query() in (None, "")
    console.get("/")
    assert "console_overview" in console_query()


def test_short_token_is_refused(tmp_path):
    from conftest import run_outboxd
    path = tmp_path / "t"
    path.write_text("short\n")
    r = run_outboxd("check-config", env={"OUTBOXD_DATABASE_URL": "postgresql://127.0.0.1/app",
                                         "OUTBOXD_HTTP_CONSOLE_TOKEN_FILE": str(path)})
    assert r.returncode == 2 and "http.console_token" in r.stderr
