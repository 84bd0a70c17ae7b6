"""The newcomer's documentation says what the code does: the SIGHUP list names exactly the
reloadable keys, the README's examples carry no relative dates, `migrate --help` reads
cleanly, and the README's cc/bcc promise (each recipient receives one copy) holds."""
import os
import re

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
