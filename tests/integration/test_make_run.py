"""The README's run command: `make run` brings up PostgreSQL, smtp-sink and outboxd; an INSERT
is delivered within a second; the banner's export line makes `outboxd status` work; the data
persists between runs and RESET=1 empties it; and whatever ends it (Ctrl-C, SIGTERM, a closed
terminal, output piped to a `tee` that dies first, the script killed outright) stops every
process it started.

Each stack runs in a session of its own and signals go to that process group, so the tests
pass when `make test` itself runs in the background or without a terminal. The child resets
SIGINT and SIGHUP to their defaults: a background job inherits them ignored, and a shell
cannot trap a signal that was ignored when it started."""
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import ROOT, psql
from smtp_servers import free_port

START_TIMEOUT = 90
STOP_TIMEOUT = 60


@pytest.fixture(scope="module")
def top():
    # not pytest's tmp_path: its parents are private to root, and the cluster runs as postgres
    path = tempfile.mkdtemp(prefix="outboxd-run-")
    os.chmod(path, 0o755)
    yield path
    for pid in stack_processes(os.path.join(path, "local")):  # a failed test's leftovers
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run([os.path.join(ROOT, "ops", "scripts", "pg-local.sh"), "destroy",
                    os.path.join(path, "local", "pg")], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def default_signals():
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def stack_processes(local):
    """Pids of every process carrying this stack's OUTBOXD_LOCAL_DIR: all it started."""
    marker = f"OUTBOXD_LOCAL_DIR={local}\0".encode()
    pids = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(os.path.join(d, "environ"), "rb") as f:
                if marker in f.read() + b"\0":
                    pids.append(int(os.path.basename(d)))
        except OSError:
            pass
    return [p for p in pids if p != os.getpid()]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    def __init__(self, top, shell=None, env=None):
        self.local = os.path.join(top, "local")
        self.log = os.path.join(top, f"run-{time.monotonic_ns()}.log")
        self.pg_port, self.smtp_port, self.http_port = free_port(), free_port(), free_port()
        self.dsn = f"host=127.0.0.1 port={self.pg_port} user=postgres dbname=postgres connect_timeout=3"
        e = dict(os.environ, OUTBOXD_LOCAL_DIR=self.local, PGPORT_LOCAL=str(self.pg_port),
                 SMTP_PORT=str(self.smtp_port), OUTBOXD_HTTP_LISTEN=f"127.0.0.1:{self.http_port}")
        e.pop("OUTBOXD_DATABASE_URL", None)
        e.update(env or {})
        if os.path.exists(os.path.join(self.local, "pg", "port")):
            os.unlink(os.path.join(self.local, "pg", "port"))  # a fresh free port each run
        if shell is None:
            self.out = open(self.log, "w")
            cmd = ["make", "-s", "run"]
        else:
            self.out = subprocess.DEVNULL
            cmd = ["bash", "-c", shell.format(log=self.log)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=e, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=default_signals)

    def output(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_up(self):
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            r = psql(self.dsn, "SELECT count(*) FROM outbox.dispatcher_idle", check=False)
            if r.returncode == 0 and r.stdout.strip() == "1" and "Ctrl-C stops" in self.output():
                return
            assert self.proc.poll() is None, f"make run exited early:\n{self.output()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"local stack did not come up:\n{self.output()[-3000:]}")

    def signal_group(self, sig):
        os.killpg(self.proc.pid, sig)

    def assert_stopped(self):
        """Everything the stack started is gone, within a bound."""
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"make run did not exit:\n{self.output()[-3000:]}")
        finally:
            if self.out is not subprocess.DEVNULL:
                self.out.close()
        deadline = time.time() + STOP_TIMEOUT
        while time.time() < deadline and stack_processes(self.local):
            time.sleep(0.2)
        left = stack_processes(self.local)
        ps = subprocess.run(["ps", "-o", "pid,args", "-p", ",".join(map(str, left))],
                            capture_output=True, text=True).stdout if left else ""
        assert not left, f"left running:\n{ps}\n{self.output()[-3000:]}"
        for port in (self.pg_port, self.smtp_port, self.http_port):
            assert not port_open(port), f"127.0.0.1:{port} still open"


def test_make_run_delivers_an_insert_and_ctrl_c_stops_everything(top):
    s = Stack(top)
    try:
        s.wait_up()
        t0 = time.time()
        psql(s.dsn, "INSERT INTO outbox.messages (recipients, subject, body_text) "
                    "VALUES (ARRAY['a@example.com'], 'Hi', 'Hello')")
        while time.time() - t0 < 5:
            if psql(s.dsn, "SELECT state FROM outbox.message_status ORDER BY id DESC LIMIT 1") == "sent":
                break
            time.sleep(0.02)
        assert psql(s.dsn, "SELECT state FROM outbox.message_status ORDER BY id DESC LIMIT 1") == "sent"
        assert time.time() - t0 < 1.0
        assert glob.glob(os.path.join(s.local, "mail", "*"))

        # The banner's lines, pasted into another shell, work as printed.
        out = s.output()
        export = re.search(r"^\s*(export OUTBOXD_DATABASE_URL=\S+)$", out, re.M)
        call = re.search(r"^\s*(/\S+/outboxd status)$", out, re.M)
        assert export and call, out
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
        r = subprocess.run(["bash", "-c", f"{export.group(1)} && {call.group(1)}"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "healthy" in r.stdout
        # The console the banner names answers.
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/", timeout=10) as resp:
            assert resp.status == 200 and b"Recent failed and dead" in resp.read()
    finally:
        s.signal_group(signal.SIGINT)  # what Ctrl-C does to the foreground group
    s.assert_stopped()
    out = s.output()
    assert "outboxd stopped" in out and "\"exit\":0" in out, out[-2000:]
    assert "run-local: stopped" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_make_run_stops_everything_on(top, sig):
    s = Stack(top)
    try:
        s.wait_up()
    finally:
        s.signal_group(sig)  # SIGHUP: what a closed terminal sends
    s.assert_stopped()


def test_make_run_piped_to_tee_survives_tee_dying_first(top):
    """`make run 2>&1 | tee run.log`, Ctrl-C: tee dies at once and the clean-up writes into a
    pipe without a reader; it must still stop everything."""
    s = Stack(top, shell="make -s run 2>&1 | tee {log}")
    try:
        s.wait_up()
        # tee goes first, as it often does in a terminal, so every later write hits EPIPE
        tee = subprocess.run(["pgrep", "-s", str(s.proc.pid), "-x", "tee"], capture_output=True,
                             text=True).stdout.split()
        assert len(tee) == 1, tee
        os.kill(int(tee[0]), signal.SIGINT)
        deadline = time.time() + 10
        while time.time() < deadline and os.path.exists(f"/proc/{tee[0]}/stat"):
            with open(f"/proc/{tee[0]}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break  # a zombie: its end of the pipe is closed
            time.sleep(0.05)
    finally:
        s.signal_group(signal.SIGINT)
    s.assert_stopped()


def test_make_run_killed_outright_leaves_nothing_behind(top):
    """SIGKILL to make and the script skips every trap: the watchdog stops the stack."""
    s = Stack(top)
    try:
        s.wait_up()
    finally:
        s.signal_group(signal.SIGKILL)
    s.assert_stopped()


def run_and_stop(top, check, env=None):
    """One `make run`: check(stack) once it is up, then SIGTERM and everything stopped."""
    s = Stack(top, env=env)
    try:
        s.wait_up()
        check(s)
    finally:
        s.signal_group(signal.SIGTERM)
    s.assert_stopped()


def test_make_run_keeps_data_until_reset(top):
    run_and_stop(top, lambda s: psql(s.dsn, "INSERT INTO outbox.messages (recipients, subject, body_text) "
                                            "VALUES (ARRAY['keep@example.com'], 'kept', 'x')"))

    def kept(s):
        assert psql(s.dsn, "SELECT count(*) FROM outbox.messages WHERE subject = 'kept'") == "1"
    run_and_stop(top, kept)

    def emptied(s):
        assert psql(s.dsn, "SELECT count(*) FROM outbox.messages") == "0"
        assert "RESET=1" in s.output()
    run_and_stop(top, emptied, env={"RESET": "1"})
