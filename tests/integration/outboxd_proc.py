"""Runs `outboxd run` as a child process for black-box tests: environment configuration,
JSON log capture, signals, and helpers that produce rows and wait for outcomes."""
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

import psycopg2

from conftest import OUTBOXD, daemon_env


SANITIZER_MARKS = re.compile(r"ERROR: (Address|Leak)Sanitizer|:\d+:\d+: runtime error: ")


class Outboxd:
    """One dispatcher process. `env` adds OUTBOXD_* settings to sane test defaults."""

    def __init__(self, db, smtp_url, env=None, name="outboxd"):
        self.db = db
        self.env = daemon_env()
        self.env.update({
            "OUTBOXD_DATABASE_URL": db.url,
            "OUTBOXD_SMTP_URL": smtp_url,
            "OUTBOXD_SMTP_TLS": "none",
            "OUTBOXD_SMTP_FROM": "outboxd@example.org",
            "OUTBOXD_HTTP_LISTEN": "",
            "OUTBOXD_DISPATCHER_POLL_INTERVAL": "250ms",
            "OUTBOXD_DISPATCHER_RETRY_BASE": "100ms",
            "OUTBOXD_DISPATCHER_RETRY_CAP": "400ms",
            "OUTBOXD_LOG_LEVEL": "info",
        })
        self.env.update(env or {})
        fd, self.log_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
        os.close(fd)
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([OUTBOXD, "run"], env=self.env, stdout=self.log, stderr=self.log)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.wait(5)
                raise
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self):
        """Every line of stderr parsed as JSON (raises on a line that is not)."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def sanitizer_report(self):
        """The first line of an AddressSanitizer, LeakSanitizer or UBSan report in the log
        (a binary from `make asan`, through OUTBOXD_BIN), or None."""
        for line in self.log_text().splitlines():
            if SANITIZER_MARKS.search(line):
                return line
        return None

    def cleanup(self, keep_log=False):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if keep_log or os.environ.get("OUTBOXD_KEEP_LOGS"):
            return  # for a post-mortem of a failed run
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def connect(db):
    c = psycopg2.connect(db.dsn)
    c.autocommit = True
    return c


def insert_messages(db, n, recipient=lambda i: f"user{i}@example.com", per_txn=50, extra_sql="", start=0):
    """Inserts n minimal messages in transactions of per_txn rows; returns their ids."""
    ids = []
    conn = psycopg2.connect(db.dsn)
    try:
        cur = conn.cursor()
        i = start
        while i < start + n:
            batch = range(i, min(i + per_txn, start + n))
            for k in batch:
                cur.execute(
                    "INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY[%s], %s, %s) RETURNING id",
                    (recipient(k), f"message {k}", f"Hello number {k}.\n"))
                ids.append(cur.fetchone()[0])
            conn.commit()
            i += per_txn
    finally:
        conn.close()
    return ids


def produce_concurrently(db, producers, per_producer, **kw):
    """Runs `producers` threads, each with its own connection, inserting per_producer rows."""
    errors = []
    ids = []
    lock = threading.Lock()

    def run(p):
        try:
            got = insert_messages(db, per_producer, start=p * per_producer,
                                  recipient=lambda i: f"user{i}@example.com", **kw)
            with lock:
                ids.extend(got)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    return ids


def states(db):
    out = db.sql("SELECT state, count(*) FROM outbox.messages GROUP BY state ORDER BY state")
    return {line.split("|")[0]: int(line.split("|")[1]) for line in out.splitlines() if line}


def wait_states(db, want, timeout=60, interval=0.1):
    """Waits until the per-state counts equal `want` (a dict); returns the last counts."""
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = states(db)
        if got == want:
            return got
        time.sleep(interval)
    raise AssertionError(f"states {got} never became {want} within {timeout}s")


def wait_for(predicate, timeout=30, interval=0.1, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def row(db, msg_id):
    out = db.sql(
        "SELECT state, attempts, coalesce(last_smtp_code, 0), coalesce(last_error, ''), message_id "
        f"FROM outbox.messages WHERE id = {int(msg_id)}")
    state, attempts, code, err, mid = out.split("|", 4)
    return {"state": state, "attempts": int(attempts), "code": int(code), "error": err, "message_id": mid}
