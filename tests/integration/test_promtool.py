"""Prometheus' own checker on what outboxd exposes and on the shipped alert rules:
`promtool check metrics` on a live /metrics after messages flowed, `promtool check rules`
and the syntax and expressions of ops/prometheus/alerts.yaml."""
import os
import shutil
import subprocess
import urllib.request

import pytest

from conftest import ROOT
from outboxd_proc import wait_for, wait_states
from smtp_servers import free_port

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"),
                                reason="promtool not installed (make deps installs it)")


def test_promtool_checks_the_live_metrics(migrated_db, smtp_sink, outboxd_factory):
    port = free_port()
    outboxd_factory(smtp_sink.url, env={"OUTBOXD_HTTP_LISTEN": f"127.0.0.1:{port}"})
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "SELECT ARRAY['u' || g || '@example.com'], 's', 'b' FROM generate_series(1, 20) g")
    wait_states(migrated_db, {"sent": 20}, timeout=20)
    def scrape():
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()

    # the queue figures read from SQL appear after their first round
    wait_for(lambda: b"outboxd_table_dead_tuples" in scrape(), timeout=20, interval=0.5, what="SQL figures")
    body = scrape()
    assert b"outboxd_messages_total" in body and b"outboxd_table_dead_tuples" in body
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30)
    # promtool exits non-zero on format errors and prints lint problems; both must be empty
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert (r.stdout + r.stderr).strip() == b"", (r.stdout + r.stderr).decode()


def test_promtool_checks_the_alert_rules():
    rules = os.path.join(ROOT, "ops", "prometheus", "alerts.yaml")
    r = subprocess.run([PROMTOOL, "check", "rules", rules], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
