"""SMTP servers the integration tests deliver to, with their pytest fixtures: SmtpSink wraps
Postfix's smtp-sink (fast capture, whole-server faults) and FaultSmtpd runs fault_smtpd.py
(per-recipient faults, STARTTLS, AUTH). Both read back what they captured as CapturedMail.

Fixtures: smtp_sink, smtp_sink_factory(**faults), fault_smtpd,
fault_smtpd_factory(tls=..., auth=..., ...), and test_certs (re-exported from certs.py).
Load them with `from smtp_servers import *` or `pytest_plugins = ["smtp_servers"]`.
"""
import collections
import email
import email.parser
import email.policy
import json
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import pytest

from certs import test_certs  # noqa: F401  (re-exported fixture)

__all__ = [
    "CapturedMail", "SmtpSink", "FaultSmtpd", "free_port", "wait_until",
    "smtp_sink", "smtp_sink_factory", "fault_smtpd", "fault_smtpd_factory", "test_certs",
]

HERE = os.path.dirname(os.path.abspath(__file__))
SMTP_SINK = os.environ.get("SMTP_SINK_BIN", "/usr/sbin/smtp-sink")
FAULT_SMTPD = os.path.join(HERE, "fault_smtpd.py")
# Debian's interpreter has aiosmtpd; a pyenv shim on PATH would also hide the real PID.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
HOST = "127.0.0.1"
START_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------
def free_port(host=HOST):
    """Returns a TCP port that was free a moment ago (the caller must cope with a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a truthy value, which is returned; raises
    AssertionError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _port_accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop_process(proc, sig=signal.SIGTERM, timeout=5.0):
    """Stops proc (SIGCONT first, so a paused one can act on sig), SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


@dataclass
class CapturedMail:
    """One captured mail transaction.

    envelope_from: MAIL FROM address (no angle brackets); recipients: RCPT TO addresses
    in order; raw: the message bytes as the server stored them (smtp-sink strips CR, the
    fault server keeps CRLF); meta: server-specific extras (pseudo-headers or the spool
    sidecar); path: the capture file."""

    path: str
    envelope_from: str
    recipients: list
    raw: bytes
    meta: dict = field(default_factory=dict)
    _headers: object = field(default=None, repr=False)
    _message: object = field(default=None, repr=False)

    @property
    def headers(self):
        """The top-level headers only (cheap), as an email.message.Message."""
        if self._headers is None:
            self._headers = email.parser.BytesHeaderParser(
                policy=email.policy.compat32).parsebytes(self.raw)
        return self._headers

    @property
    def message(self):
        """The whole message parsed with email.policy.default (EmailMessage)."""
        if self._message is None:
            self._message = email.message_from_bytes(self.raw, policy=email.policy.default)
        return self._message

    @property
    def message_id(self):
        """The Message-ID header value, stripped of surrounding blanks (angle brackets kept)."""
        v = self.headers.get("Message-ID")
        return v.strip() if v else None

    @property
    def subject(self):
        return self.message["Subject"]

    @property
    def to(self):
        return self.headers.get("To")

    @property
    def envelope_to(self):
        """The single envelope recipient (outboxd sends one per transaction)."""
        return self.recipients[0] if len(self.recipients) == 1 else None


def _strip_angle(arg):
    """'<a@b> NOTIFY=NEVER' -> 'a@b'."""
    addr = arg.strip().split(" ", 1)[0] if arg.strip() else ""
    return addr[1:-1] if addr.startswith("<") and addr.endswith(">") else addr


class _Capture:
    """Read-back methods shared by both servers; subclasses implement messages()."""

    def messages(self):
        raise NotImplementedError

    def count(self):
        """How many complete messages have been captured."""
        return len(self.messages())

    def message_ids(self):
        """collections.Counter of Message-ID values over all captured messages."""
        return collections.Counter(m.message_id for m in self.messages())

    def wait_for(self, count, timeout=30.0):
        """Waits until at least count messages are captured; returns the count seen.
        Raises AssertionError after timeout seconds."""
        seen = [0]

        def enough():
            seen[0] = self.count()
            return seen[0] >= count

        try:
            wait_until(enough, timeout, what=f"{count} messages")
        except AssertionError:
            raise AssertionError(f"{type(self).__name__}: {seen[0]} of {count} messages "
                                 f"after {timeout}s") from None
        return seen[0]

    def wait_quiet(self, period=0.5, timeout=30.0):
        """Waits until the count has not changed for period seconds; returns it. Use after
        wait_for to let late duplicates arrive before asserting on exact numbers."""
        deadline = time.monotonic() + timeout
        last, since = self.count(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(min(0.05, period))
            n = self.count()
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= period:
                return n
        raise AssertionError(f"message count still changing after {timeout}s (now {last})")


# --------------------------------------------------------------------------------------
# Postfix smtp-sink
# --------------------------------------------------------------------------------------
SINK_FAULTS = {
    # keyword: (option, kind) -- kind "cmds" takes a command list, "int"/"str" a value,
    # "flag" a boolean.
    "soft_reject": ("-r", "cmds"),       # 4xx (text set by soft_reply) for these commands
    "hard_reject": ("-f", "cmds"),       # 5xx (text set by hard_reply)
    "reply_421": ("-Q", "cmds"),         # 421 then disconnect
    "disconnect": ("-q", "cmds"),        # disconnect without reply
    "soft_reply": ("-b", "str"),         # e.g. "451 4.3.0 try later" (default 450 4.3.0)
    "hard_reply": ("-B", "str"),         # e.g. "554 5.7.1 no" (default 500 5.3.0)
    "data_delay": ("-w", "int"),         # seconds before the 354 reply to DATA
    "abort_after_data": ("-A", "int"),   # seconds after 354, then 550 and disconnect
    "command_timeout": ("-t", "int"),    # seconds per command/reply (default 100)
    "max_connections": ("-m", "int"),    # simultaneous sessions served (default 256)
    "hostname": ("-h", "str"),
    "no_auth": ("-a", "flag"),
    "no_pipelining": ("-p", "flag"),
    "no_esmtp": ("-e", "flag"),
    "no_8bitmime": ("-8", "flag"),
    "no_enhanced_status": ("-E", "flag"),
}
SINK_PSEUDO = (b"X-Client-Addr:", b"X-Client-Proto:", b"X-Helo-Args:", b"X-Mail-Args:",
               b"X-Rcpt-Args:")


def parse_sink_file(path):
    """Parses one smtp-sink -d capture file into a CapturedMail, or None if it vanished.

    The file holds smtp-sink's pseudo-headers (X-Client-Addr, X-Client-Proto, X-Helo-Args,
    X-Mail-Args, one X-Rcpt-Args per recipient), its own Received header, then the message
    with CR removed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    meta = {"rcpt_args": []}
    mail_from, rcpts, pos = None, [], 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        line = data[pos:end]
        if not line.startswith(SINK_PSEUDO):
            break
        name, _, value = line.decode("utf-8", "replace").partition(":")
        value = value.strip()
        if name == "X-Mail-Args":
            mail_from = _strip_angle(value)
        elif name == "X-Rcpt-Args":
            rcpts.append(_strip_angle(value))
            meta["rcpt_args"].append(value)
        else:
            meta[name] = value
        pos = end + 1
    if data.startswith(b"Received: from ", pos):
        # smtp-sink's Received header: one line plus tab-indented continuations.
        nl = data.find(b"\n", pos)
        pos = len(data) if nl < 0 else nl + 1
        while data.startswith(b"\t", pos):
            nl = data.find(b"\n", pos)
            pos = len(data) if nl < 0 else nl + 1
    return CapturedMail(path=path, envelope_from=mail_from or "", recipients=rcpts,
                        raw=data[pos:], meta=meta)


def _commands(value):
    if isinstance(value, str):
        return value
    return ",".join(value)


class SmtpSink(_Capture):
    """Postfix smtp-sink on 127.0.0.1:<port>, capturing each mail transaction to its own file
    (-d with a strftime template; smtp-sink appends a random hex suffix and opens with
    O_EXCL, retrying on collision, so concurrent mails never overwrite each other).

    Faults are keyword arguments (see SINK_FAULTS), applied to every matching command;
    commands are CONNECT, HELO, EHLO, MAIL, RCPT, DATA, "." (the final dot), RSET, NOOP,
    QUIT. Note that smtp-sink writes the capture file before it answers the final dot, so a
    message answered with a fault on "." (soft_reject=".", reply_421=".",
    disconnect=".") is still captured -- the "queued but reply lost" case.

    A capture file still open in smtp-sink (mail in progress) is never reported; files of
    mails in progress when the sink is stopped are moved to partial_dir."""

    def __init__(self, port=None, workdir=None, backlog=256, extra_args=(), **faults):
        for k in faults:
            if k not in SINK_FAULTS:
                raise TypeError(f"unknown smtp-sink fault {k!r}; known: {sorted(SINK_FAULTS)}")
        self.port = port
        self.backlog = backlog
        self.extra_args = list(extra_args)
        self.faults = dict(faults)
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="outboxd-sink-")
        os.chmod(self.workdir, 0o755)
        self.capture_dir = os.path.join(self.workdir, "mail")
        self.partial_dir = os.path.join(self.workdir, "partial")
        os.makedirs(self.capture_dir, exist_ok=True)
        os.makedirs(self.partial_dir, exist_ok=True)
        self.run_as = None
        if os.geteuid() == 0:
            # smtp-sink refuses to run as root without -u; the user must write the dir.
            self.run_as = "nobody"
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.capture_dir, pw.pw_uid, pw.pw_gid)
        self.log_path = os.path.join(self.workdir, "smtp-sink.log")
        self.proc = None

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def url(self):
        return f"smtp://{HOST}:{self.port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _argv(self):
        argv = [SMTP_SINK]
        if self.run_as:
            argv += ["-u", self.run_as]
        argv += ["-d", os.path.join(self.capture_dir, "%Y%m%d%H%M%S.")]
        for k, v in self.faults.items():
            opt, kind = SINK_FAULTS[k]
            if kind == "flag":
                if v:
                    argv.append(opt)
            elif kind == "cmds":
                if v:
                    argv += [opt, _commands(v)]
            elif v is not None:
                argv += [opt, str(v)]
        argv += self.extra_args
        argv += [f"{HOST}:{self.port}", str(self.backlog)]
        return argv

    def start(self):
        """Starts smtp-sink and waits until it accepts connections. Returns self."""
        if self.proc and self.proc.poll() is None:
            return self
        fixed = self.port is not None
        for _ in range(5):
            if not fixed:
                self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=log)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _port_accepts(HOST, self.port):
                    return self
                time.sleep(0.02)
            _stop_process(self.proc, signal.SIGKILL)
            if fixed and time.monotonic() < deadline:
                time.sleep(0.2)  # the old listener's port may still be held briefly
        raise RuntimeError(f"smtp-sink did not start on port {self.port}: {self._log_tail()}")

    def _log_tail(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        """Kills smtp-sink. Capture files of mails still in progress go to partial_dir."""
        if not self.proc or self.proc.poll() is not None:
            self.proc = None
            return
        try:
            self.proc.send_signal(signal.SIGSTOP)
        except ProcessLookupError:
            pass
        in_progress = self._open_capture_files()
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None
        for path in in_progress:
            try:
                os.rename(path, os.path.join(self.partial_dir, os.path.basename(path)))
            except FileNotFoundError:
                pass

    def restart(self, **faults):
        """Stops and starts again on the same port and capture directory. Keyword faults,
        if given, replace the current set (restart() with none keeps them)."""
        for k in faults:
            if k not in SINK_FAULTS:
                raise TypeError(f"unknown smtp-sink fault {k!r}")
        self.stop()
        if faults:
            self.faults = dict(faults)
        return self.start()

    def pause(self):
        """SIGSTOP: connections still complete in the kernel backlog, nothing is answered."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT after pause()."""
        self.proc.send_signal(signal.SIGCONT)

    def close(self):
        """Stops the sink and deletes its files (when it created the work directory)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- read-back -----------------------------------------------------------------------
    def _open_capture_files(self):
        """Paths of capture files smtp-sink holds open (mails in progress)."""
        if not self.proc or self.proc.poll() is not None:
            return set()
        fd_dir = f"/proc/{self.proc.pid}/fd"
        open_paths = set()
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            return open_paths
        prefix = self.capture_dir + os.sep
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith(prefix):
                open_paths.add(target)
        return open_paths

    def _complete_paths(self):
        # Listing first and checking open files second: a file finishing in between counts
        # as complete (it is), a file created in between is simply not listed yet.
        entries = [e for e in os.scandir(self.capture_dir) if e.is_file()]
        busy = self._open_capture_files()
        done = []
        for e in entries:
            if e.path in busy:
                continue
            try:
                done.append((e.stat().st_mtime_ns, e.name, e.path))
            except FileNotFoundError:
                continue
        done.sort()
        return [p for _, _, p in done]

    def count(self):
        return len(self._complete_paths())

    def messages(self):
        """Every complete captured mail as CapturedMail, oldest first."""
        out = []
        for p in self._complete_paths():
            m = parse_sink_file(p)
            if m is not None:
                out.append(m)
        return out

    def partial_messages(self):
        """Mails that were in progress when the sink was stopped (never acknowledged). Their
        content may be empty or cut short: smtp-sink buffers and was killed mid-write."""
        paths = sorted(os.path.join(self.partial_dir, n) for n in os.listdir(self.partial_dir))
        return [m for m in (parse_sink_file(p) for p in paths) if m is not None]

    def clear(self):
        """Deletes every complete capture file (for tests that reuse one sink)."""
        for p in self._complete_paths():
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


# --------------------------------------------------------------------------------------
# fault_smtpd.py
# --------------------------------------------------------------------------------------
TLS_MODES = (None, "starttls", "require", "implicit")


class FaultSmtpd(_Capture):
    """fault_smtpd.py as a child process. See that module's docstring for the recipient
    vocabulary (ok/temp/perm/tempN/rcptNNN/dataNNN/dtempN/drop/dropN/bye421/delayMS) and
    the control file.

    tls: None (plain), "starttls" (offered), "require" (STARTTLS required before MAIL),
    "implicit" (smtps). certs: a certs.CertSet, needed for any tls; cert: which pair the
    server presents ("trusted", "untrusted", "wrong-host"). auth: "user:password" makes
    AUTH PLAIN/LOGIN mandatory. greeting: a reply code (e.g. 421) for every connection.
    extra_args: more fault_smtpd.py options (--pipelining, --chunking, --auth-mechs,
    --xoauth2-token)."""

    def __init__(self, port=None, workdir=None, tls=None, certs=None, cert="trusted",
                 auth=None, greeting=None, control=None, extra_args=()):
        if tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {TLS_MODES}")
        if tls and certs is None:
            raise ValueError("tls needs certs (the test_certs fixture)")
        self.port = port
        self.tls = tls
        self.certs = certs
        self.cert = cert
        self.auth = auth
        self.greeting = greeting
        self.extra_args = list(extra_args)
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="outboxd-faultsmtpd-")
        self.spool = os.path.join(self.workdir, "spool")
        self.log_path = os.path.join(self.workdir, "session.jsonl")
        self.control_path = os.path.join(self.workdir, "control.json")
        self.stderr_path = os.path.join(self.workdir, "stderr.log")
        os.makedirs(self.spool, exist_ok=True)
        self.proc = None
        if control:
            self.set_control(**control)

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def url(self):
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        return f"{scheme}://{HOST}:{self.port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def ca_cert(self):
        """The CA file a client should trust (None without TLS)."""
        return self.certs.ca_cert if self.certs else None

    def _argv(self, port):
        argv = [PYTHON, FAULT_SMTPD, "--host", HOST, "--port", str(port), "--spool", self.spool,
                "--log", self.log_path, "--control", self.control_path]
        if self.tls:
            cert, key = self.certs.pair(self.cert)
            argv += ["--tls-cert", cert, "--tls-key", key]
            if self.tls == "require":
                argv.append("--require-starttls")
            elif self.tls == "implicit":
                argv.append("--implicit-tls")
        if self.auth:
            argv += ["--auth", self.auth]
        if self.greeting:
            argv += ["--greeting", str(self.greeting)]
        return argv + self.extra_args

    def start(self):
        """Starts the server (on a free port the first time, the same port afterwards) and
        waits for its LISTENING line. Returns self."""
        if self.proc and self.proc.poll() is None:
            return self
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self._argv(self.port or 0), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err)
        line = b""
        deadline = time.monotonic() + START_TIMEOUT
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 256)
                if not chunk:
                    break
                line += chunk
        self.proc.stdout.close()
        words = line.decode(errors="replace").split()
        if len(words) != 3 or words[0] != "LISTENING":
            _stop_process(self.proc, signal.SIGKILL)
            self.proc = None
            raise RuntimeError(f"fault_smtpd did not start: {line!r} {self._stderr_tail()}")
        self.port = int(words[2])
        return self

    def _stderr_tail(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        """Stops the server (SIGTERM, SIGKILL after 5 s). Spooled mail is kept."""
        _stop_process(self.proc)
        self.proc = None

    def kill(self):
        """SIGKILL, as a crash."""
        _stop_process(self.proc, signal.SIGKILL)
        self.proc = None

    def restart(self):
        """Stops and starts on the same port; per-address counters (tempN...) start over."""
        self.stop()
        return self.start()

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def close(self):
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- runtime faults ------------------------------------------------------------------
    def set_control(self, **settings):
        """Replaces the server-wide faults (greeting, mail, rcpt, data, drop, delay_ms);
        takes effect from the next command. set_control() with nothing clears them."""
        tmp = self.control_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(settings, f)
        os.rename(tmp, self.control_path)

    def clear_control(self):
        self.set_control()

    # --- read-back -----------------------------------------------------------------------
    def messages(self, outcome=None):
        """Spooled messages, oldest first; outcome "accepted" or "dropped" filters."""
        out = []
        for name in sorted(n for n in os.listdir(self.spool) if n.endswith(".json")):
            base = os.path.join(self.spool, name[:-5])
            try:
                with open(base + ".json") as f:
                    meta = json.load(f)
                with open(base + ".eml", "rb") as f:
                    raw = f.read()
            except (FileNotFoundError, ValueError):
                continue
            if outcome and meta.get("outcome") != outcome:
                continue
            out.append(CapturedMail(path=base + ".eml", envelope_from=meta["mail_from"],
                                    recipients=meta["rcpt_tos"], raw=raw, meta=meta))
        return out

    def count(self):
        return sum(1 for n in os.listdir(self.spool) if n.endswith(".json"))

    def session_log(self):
        """Every session-log record (dicts with t, conn, tls, auth, dir, line)."""
        out = []
        try:
            with open(self.log_path, encoding="utf-8") as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass  # a line being written right now
        except FileNotFoundError:
            pass
        return out

    def client_lines(self, conn=None):
        """Client command lines in order, optionally for one connection number."""
        return [r["line"] for r in self.session_log()
                if r["dir"] == "C" and (conn is None or r["conn"] == conn)]

    def server_replies(self, conn=None):
        return [r["line"] for r in self.session_log()
                if r["dir"] == "S" and (conn is None or r["conn"] == conn)]


class ScriptedRelay:
    """A raw-socket relay that speaks plain SMTP until `at` ("greeting", "ehlo", "mail",
    "dot" or "quit") and then sends `evil` bytes (once, or for ever with endless=True); at
    "dot" and "quit" it then holds the connection open without a word (a hung MTA)."""

    def __init__(self, at, evil, endless=False):
        self.at, self.evil, self.endless = at, evil, endless
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closing = threading.Event()
        self.sessions = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.sessions += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _evil(self, conn):
        conn.sendall(self.evil)
        while self.endless and not self.closing.is_set():
            conn.sendall(self.evil)

    def _session(self, conn):
        try:
            with conn, conn.makefile("rb") as f:
                if self.at == "greeting":
                    return self._evil(conn)
                conn.sendall(b"220 relay ESMTP\r\n")
                in_data = False
                for line in f:
                    if in_data:
                        if line == b".\r\n":
                            in_data = False
                            if self.at == "dot":
                                self._evil(conn)
                                self.closing.wait(3)
                                return
                            conn.sendall(b"250 queued\r\n")
                        continue
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO") and self.at == "ehlo":
                        return self._evil(conn)
                    if verb == b"MAIL" and self.at == "mail":
                        return self._evil(conn)
                    if verb == b"DATA":
                        in_data = True
                        conn.sendall(b"354 go\r\n")
                    elif verb == b"QUIT":
                        if self.at == "quit":
                            self._evil(conn)
                            self.closing.wait(120)
                            return
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(b"250 ok\r\n")
        except OSError:
            return

    def close(self):
        self.closing.set()
        self.sock.close()


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture
def smtp_sink_factory():
    """Callable (**faults) -> started SmtpSink; every sink made is closed after the test."""
    made = []

    def make(**faults):
        sink = SmtpSink(**faults)
        made.append(sink)
        return sink.start()

    yield make
    for sink in made:
        sink.close()


@pytest.fixture
def smtp_sink(smtp_sink_factory):
    """A started fault-free SmtpSink."""
    return smtp_sink_factory()


@pytest.fixture
def fault_smtpd_factory(request):
    """Callable (tls=None, auth=None, cert="trusted", greeting=None, control=None) ->
    started FaultSmtpd; certificates come from test_certs when tls is set."""
    made = []

    def make(tls=None, auth=None, **kw):
        certs = request.getfixturevalue("test_certs") if tls else None
        server = FaultSmtpd(tls=tls, auth=auth, certs=certs, **kw)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.close()


@pytest.fixture
def fault_smtpd(fault_smtpd_factory):
    """A started plain-text FaultSmtpd without AUTH."""
    return fault_smtpd_factory()
