"""The README's run command: `make run` brings up PostgreSQL, smtp-sink and outboxd; an
INSERT is delivered within a second; Ctrl-C (SIGINT) stops everything it started."""
import glob
import os
import signal
import shutil
import subprocess
import tempfile
import time

from conftest import ROOT, psql
from smtp_servers import free_port


def test_make_run_delivers_an_insert_and_stops_cleanly():
    # not pytest's tmp_path: its parents are private to root, and the cluster runs as postgres
    top = tempfile.mkdtemp(prefix="outboxd-run-")
    os.chmod(top, 0o755)
    local = os.path.join(top, "local")
    pg_port, smtp_port, http_port = free_port(), free_port(), free_port()
    env = dict(os.environ, OUTBOXD_LOCAL_DIR=local, PGPORT_LOCAL=str(pg_port),
               SMTP_PORT=str(smtp_port), OUTBOXD_HTTP_LISTEN=f"127.0.0.1:{http_port}")
    proc = subprocess.Popen(["make", "-s", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    dsn = f"host=127.0.0.1 port={pg_port} user=postgres dbname=postgres"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            r = psql(dsn, "SELECT count(*) FROM outbox.dispatcher_idle", check=False)
            if r.returncode == 0 and r.stdout.strip() == "1":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("local stack did not come up")
        t0 = time.time()
        psql(dsn, "INSERT INTO outbox.messages (recipients, subject, body_text) "
                  "VALUES (ARRAY['a@example.com'], 'Hi', 'Hello')")
        while time.time() - t0 < 5:
            if psql(dsn, "SELECT state FROM outbox.message_status") == "sent":
                break
            time.sleep(0.02)
        assert psql(dsn, "SELECT state FROM outbox.message_status") == "sent"
        assert time.time() - t0 < 1.0
        assert len(glob.glob(os.path.join(local, "mail", "*"))) == 1
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does to the foreground group
        out, _ = proc.communicate(timeout=60)
    # everything it started is gone: the cluster no longer answers
    r = psql(dsn, "SELECT 1", check=False)
    assert r.returncode != 0, out
    assert "outboxd stopped" in out and "\"exit\":0" in out, out[-2000:]
    shutil.rmtree(top, ignore_errors=True)
