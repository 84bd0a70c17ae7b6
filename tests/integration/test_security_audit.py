"""security-audit.sh: findings by severity from the manifests and the live parts, exit 1 on a
critical finding, SKIP (never a pass) for what it cannot reach."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "ops", "scripts", "security-audit.sh")


def audit(env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOXD_", "PG"))}
    e.update({"DISPATCHER_DATABASE_URL": "", "PRODUCER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x",
              "AUDIT_SMTP_RELAY": ""})
    e.update(env or {})
    r = subprocess.run(["bash", SCRIPT, "local"], capture_output=True, text=True, env=e, timeout=120)
    return r, r.stdout + r.stderr


def row(out, check):
    return [m.group(1) for m in re.finditer(rf"^{re.escape(check)}\s+([A-Z]+)\s", out, re.M)]


def test_the_repository_manifests_have_no_critical_finding():
    r, out = audit()
    assert r.returncode == 0, out
    assert row(out, "secrets from files") == ["INFO"], out
    assert row(out, "image non-root") == ["INFO"], out
    assert row(out, "producer role") == ["SKIP"], out  # unreachable: skipped, not passed
    assert "libpq5 " in out and "security-audit: 0 critical" in out, out


def test_a_secret_in_the_environment_of_a_manifest_is_critical(tmp_path):
    k8s = tmp_path / "k8s"
    shutil.copytree(os.path.join(ROOT, "ops", "k8s"), k8s)
    dep = k8s / "deployment.yaml"
    dep.write_text(dep.read_text().replace(
        "          envFrom:\n",
        "          env:\n            - name: OUTBOXD_SMTP_PASSWORD\n              valueFrom:\n"
        "                secretKeyRef: {name: outboxd, key: smtp-password}\n          envFrom:\n", 1))
    r, out = audit({"AUDIT_MANIFESTS": str(k8s)})
    assert r.returncode == 1, out
    assert "CRITICAL" in row(out, "secrets from files") and "secretKeyRef" in out, out


def test_tls_off_to_a_remote_relay_is_critical():
    r, out = audit({"OUTBOXD_SMTP_URL": "smtp://relay.example.net:587", "OUTBOXD_SMTP_TLS": "none"})
    assert r.returncode == 1 and row(out, "SMTP TLS") == ["CRITICAL"], out


def test_a_superuser_login_is_critical_and_a_granted_one_is_not(cluster, migrated_db):
    su = migrated_db.url
    r, out = audit({"DISPATCHER_DATABASE_URL": su})
    assert r.returncode == 1 and row(out, "dispatcher role") == ["CRITICAL"], out
    assert "superuser" in out
    migrated_db.sql("CREATE ROLE audit_disp LOGIN IN ROLE outbox_dispatcher")
    try:
        url = f"postgresql://audit_disp@127.0.0.1:{cluster.port}/{migrated_db.name}"
        r, out = audit({"DISPATCHER_DATABASE_URL": url})
        assert r.returncode == 0 and row(out, "dispatcher role") == ["INFO"], out
        assert "holds only outbox_dispatcher" in out
        migrated_db.sql("GRANT outbox_producer TO audit_disp")
        r, out = audit({"DISPATCHER_DATABASE_URL": url})
        assert row(out, "dispatcher role") == ["HIGH"], out
    finally:
        migrated_db.sql("DROP ROLE audit_disp")


def test_the_relays_certificate_days_to_expiry(fault_smtpd_factory):
    server = fault_smtpd_factory(tls="starttls")
    r, out = audit({"AUDIT_SMTP_RELAY": f"127.0.0.1:{server.port}"})
    sev = row(out, "relay certificate")
    assert sev and sev[0] in ("INFO", "MEDIUM", "HIGH"), out
    assert re.search(r"(valid for|expires in) \d+ (more )?days", out), out
