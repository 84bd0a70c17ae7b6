"""`make smoke` against `make run`'s stack: every check passes and the smoke email (header
X-Outboxd-Smoke) is captured; with the relay down it fails naming the email check and leaves
nothing pending; with the schema behind it fails naming the migrations check. No password (in
the URL or the password file) is ever printed."""
import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import ROOT, psql
from smtp_servers import free_port
from test_make_run import Stack, stack_processes


@pytest.fixture
def stack(request):
    path = tempfile.mkdtemp(prefix="outboxd-smoke-")
    os.chmod(path, 0o755)
    s = Stack(path, env=getattr(request, "param", None))
    try:
        wait_ready(s)
        yield s
    finally:
        s.signal_group(signal.SIGTERM)
        try:
            s.assert_stopped()
        finally:
            for pid in stack_processes(s.local):
                os.kill(pid, signal.SIGKILL)
            subprocess.run([os.path.join(ROOT, "ops", "scripts", "pg-local.sh"), "destroy",
                            os.path.join(s.local, "pg")], check=False, capture_output=True)
            shutil.rmtree(path, ignore_errors=True)


def wait_ready(s, timeout=120):
    """Up: the banner is out and /health/ready answers 200 (with KAFKA=1 the mirror registers
    as idle too, so Stack.wait_up's count of idle dispatchers does not apply)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert s.proc.poll() is None, f"make run exited early:\n{s.output()[-3000:]}"
        if "Ctrl-C stops" in s.output():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"local stack did not come up:\n{s.output()[-3000:]}")


def smoke(s, **env):
    e = dict(os.environ, OUTBOXD_LOCAL_DIR=s.local, OUTBOXD_HTTP_LISTEN=f"127.0.0.1:{s.http_port}")
    e.update(env)
    r = subprocess.run(["make", "-s", "--no-print-directory", "smoke"], cwd=ROOT, env=e,
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def result(out, check):
    m = re.search(rf"^{check}\s+(PASS|FAIL|SKIP)\s", out, re.M)
    assert m, f"no {check} line:\n{out}"
    return m.group(1)


def test_make_smoke_passes_then_fails_naming_the_relay_and_the_schema(stack, tmp_path):
    s = stack
    rc, out = smoke(s)
    assert rc == 0, out
    for check in ("health", "ready", "metrics", "migrations", "email", "status"):
        assert result(out, check) == "PASS", out
    assert result(out, "kafka") == "SKIP"  # make run without KAFKA=1: the mirror is off
    assert re.search(r"^smoke: PASS \(6 passed, 0 failed, 1 skipped\)$", out, re.M), out
    mid = re.search(r"Message-ID (<[^>]+>)", out).group(1)
    mails = [open(f, errors="replace").read() for f in glob.glob(os.path.join(s.local, "mail", "*"))]
    smoke_mail = [m for m in mails if "X-Outboxd-Smoke: smoke-local-" in m]
    assert len(smoke_mail) == 1 and mid in smoke_mail[0]

    # The relay is down: the email check fails within the timeout and the row is cancelled.
    sink = int(re.search(r"^smtp-sink=(\d+)$", open(os.path.join(s.local, "run.pids")).read(), re.M).group(1))
    os.kill(sink, signal.SIGKILL)
    pwfile = tmp_path / "pw"
    pwfile.write_text("file-secret-9c1e\n")
    rc, out = smoke(s, SMOKE_TIMEOUT="4", PRODUCER_DATABASE_PASSWORD_FILE=str(pwfile),
                    PRODUCER_DATABASE_URL=f"postgresql://postgres:url-secret-77ab@127.0.0.1:{s.pg_port}/postgres")
    assert rc != 0, out  # make reports the script's exit 1 as 2
    assert result(out, "email") == "FAIL" and "not sent within 4 s" in out, out
    assert re.search(r"^smoke: FAIL: .*\bemail\b", out, re.M), out
    assert "file-secret-9c1e" not in out and "url-secret-77ab" not in out, out
    assert psql(s.dsn, "SELECT count(*) FROM outbox.messages WHERE state IN ('pending', 'sending')") == "0"
    assert psql(s.dsn, "SELECT count(*) FROM outbox.messages WHERE state = 'cancelled'") == "1"

    # The schema is behind this build: the migrations check names what is pending.
    last = psql(s.dsn, "SELECT max(version) FROM outbox.schema_migrations")
    psql(s.dsn, f"DELETE FROM outbox.schema_migrations WHERE version = {last}")
    rc, out = smoke(s, SMOKE_TIMEOUT="2")
    assert rc != 0, out  # make reports the script's exit 1 as 2
    assert result(out, "migrations") == "FAIL", out
    assert re.search(rf"^migrations\s+FAIL\s+pending: 0*{last}_", out, re.M), out
    assert re.search(r"^smoke: FAIL: .*\bmigrations\b", out, re.M), out


@pytest.mark.skipif(os.environ.get("LONG") != "1", reason="LONG=1: KAFKA=1 make run starts a broker")
@pytest.mark.parametrize("stack", [{"KAFKA": "1", "KAFKA_PORT": str(free_port())}], indirect=True, ids=["kafka"])
def test_make_smoke_publishes_an_event_with_the_mirror_on(stack):
    rc, out = smoke(stack)
    assert rc == 0, out
    assert result(out, "kafka") == "PASS" and re.search(r"published in [\d.]+ s, partition \d+ offset \d+", out), out
    assert re.search(r"^smoke: PASS \(7 passed, 0 failed, 0 skipped\)$", out, re.M), out
