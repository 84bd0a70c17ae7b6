"""The newcomer's documentation says what the code does: the SIGHUP list names exactly the
reloadable keys, the README's examples carry no relative dates, `migrate --help` reads
cleanly, and the README's cc/bcc promise (each recipient receives one copy) holds."""
import os
import re

import pytest

from conftest import ROOT, run_outboxd
from smtp_servers import wait_until


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def reloadable_keys():
    r = run_outboxd("check-config", "--docs")
    assert r.returncode == 0, r.stderr
    keys = {m.group(1) for m in re.finditer(r"^\| `([a-z_.]+)` \|.*\| (yes|no) \|[^|]*\|$", r.stdout, re.M)
            if m.group(2) == "yes"}
    assert "log.level" in keys and "smtp.rate_limit" in keys
    return keys


def test_sighup_list_in_operations_names_every_reloadable_key():
    text = read("docs", "operations.md")
    m = re.search(r"^\* \*\*SIGHUP\*\*:(.*?)(?=^\* |^#|\Z)", text, re.M | re.S)
    assert m, "docs/operations.md has no SIGHUP bullet"
    listed = set(re.findall(r"`([a-z_]+\.[a-z_.]+)`", m.group(1)))
    keys = reloadable_keys()
    assert listed == keys, f"missing {sorted(keys - listed)}, not reloadable {sorted(listed - keys)}"


def test_readme_examples_use_absolute_dates():
    text = read("README.md")
    assert not re.search(r"\b(tomorrow|today|yesterday)\b", text.replace("ends today", "")), \
        "a relative date beside a fixed timestamp"


def test_migrate_help_reads_cleanly():
    r = run_outboxd("migrate", "--help")
    text = r.stdout + r.stderr
    assert "every sql/ file" in text
    assert not re.search(r"\b(the|a|every) (the|a|every)\b", text), text


def test_each_recipient_receives_one_copy(migrated_db, smtp_sink, outboxd_factory):
    """The README's cc/bcc example: to, cc and bcc each receive exactly one copy."""
    assert "each recipient (to, cc and bcc alike) receives one copy" in read("README.md").lower()
    outboxd_factory(smtp_sink.url)
    migrated_db.sql("INSERT INTO outbox.messages (sender, recipients, cc, bcc, subject, body_text) "
                    "VALUES ('shop@example.com', ARRAY['alice@example.com'], ARRAY['bob@example.com'], "
                    "ARRAY['audit@example.com'], 'Your receipt', 'Total: 10 EUR')")
    wait_until(lambda: migrated_db.scalar("SELECT state FROM outbox.messages") == "sent", 20,
               what="message sent")
    smtp_sink.wait_quiet()
    delivered = [rcpt for m in smtp_sink.messages() for rcpt in m.recipients]
    assert sorted(delivered) == ["alice@example.com", "audit@example.com", "bob@example.com"]
    for m in smtp_sink.messages():
        assert "audit@example.com" not in (m.headers.get("Cc", "") + m.headers.get("To", ""))


def test_readme_kcat_shows_the_mirror_and_a_fresh_broker_brings_no_warning(
        kafka_broker_factory, migrated_db, smtp_sink, outboxd_factory):
    """`KAFKA=1 make run` starts outboxd right after a new broker: no librdkafka warning for
    the routine 'coordinator load in progress' retry; and the README's kcat lines, pointed at
    the broker, show the mirrored domain event and the email's lifecycle events."""
    import subprocess
    broker = kafka_broker_factory(partitions=1)
    d = outboxd_factory(smtp_sink.url, env={"OUTBOXD_KAFKA_BROKERS": broker.bootstrap})
    migrated_db.sql("INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) "
                    "VALUES ('order', '42', 'OrderPaid', '{\"total\": 10}')")
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['a@example.com'], 'Hi', 'Hello')")
    wait_until(lambda: migrated_db.scalar(
        "SELECT count(*) FROM outbox.events WHERE state = 'published' "
        "AND type IN ('OrderPaid', 'email.sent')") == "2", 60, what="events published")
    warnings = [line for line in d.log_lines() if line.get("level") in ("warn", "error")]
    assert not warnings, warnings

    cmds = re.findall(r"^(kcat .*?)\s+#", read("README.md"), re.M)
    assert len(cmds) == 2, cmds
    out = ""
    for cmd in cmds:
        assert "127.0.0.1:9092" in cmd
        r = subprocess.run(["bash", "-c", cmd.replace("127.0.0.1:9092", broker.bootstrap)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out += r.stdout
    assert re.search(r"^42 .*type=OrderPaid.* \{\"total\": 10\}$", out, re.M), out
    assert "type=email.sent" in out, out


def test_make_run_and_test_install_what_is_missing_first():
    """The README's two commands are the only ones: each runs the deps step before building
    (and make test fetches the Kafka jars); CI runs just what the README says."""
    import subprocess
    for target, after in (("run", "run-local.sh"), ("test", "tests/run.sh")):
        r = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        deps = next(i for i, line in enumerate(lines) if "ops/scripts/deps.sh" in line)
        build = next(i for i, line in enumerate(lines) if line.startswith("make") and "all" in line.split())
        assert deps < build < next(i for i, line in enumerate(lines) if after in line), r.stdout
    assert "kafka.sh fetch" in subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True,
                                              text=True, timeout=60).stdout
    ci = [line for line in read(".ci", "run").splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    readme = read("README.md")
    # make test first; anything after it is a target the README documents
    assert ci and ci[0] == "make test", ci
    for line in ci[1:]:
        assert re.fullmatch(r"make [a-z-]+", line) and f"`{line}`" in readme, (line, "not in README")
    assert "make deps &&" not in readme and "no other command" in readme


def test_deps_step_is_quick_when_everything_is_installed():
    import subprocess
    import time
    t0 = time.monotonic()
    r = subprocess.run(["bash", os.path.join(ROOT, "ops", "scripts", "deps.sh")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    if "deps: installing" in r.stderr:
        pytest.skip("this machine lacked packages; the quick path is measured on the next run")
    assert time.monotonic() - t0 < 5, "deps.sh is slow when there is nothing to install"
    assert r.stdout == ""
