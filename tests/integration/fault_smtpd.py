#!/usr/bin/python3
"""A scriptable SMTP server for fault-injection tests, on aiosmtpd: faults chosen per recipient
by the address's local part, server-wide faults from a control file, optional STARTTLS,
implicit TLS and AUTH, a spool of every accepted message and a JSON-lines session log.

Run it as its own process (the Python wrapper is FaultSmtpd in smtp_servers.py):

    /usr/bin/python3 fault_smtpd.py --port P --spool DIR [--host 127.0.0.1]
        [--tls-cert C --tls-key K [--require-starttls] | --implicit-tls]
        [--auth user:password] [--greeting-421 | --greeting CODE]
        [--control FILE] [--log FILE] [--pipelining] [--chunking]
        [--auth-mechs PLAIN,LOGIN,XOAUTH2] [--xoauth2-token FILE]

--port 0 binds a free port. Once listening it prints one line "LISTENING <host> <port>" on
stdout and writes nothing else there.

Recipient vocabulary: the local part up to the first "+" picks the behaviour, and whatever
follows "+" is free (a tag that makes each address unique). Case does not matter.

    ok+t@x          accepted (so is any local part not listed here)
    temp+t@x        RCPT gets "451 4.3.0", every time
    perm+t@x        RCPT gets "550 5.1.1", every time
    tempN+t@x       RCPT gets "451 4.3.0" the first N times this exact address is offered,
                    then it is accepted (counted inside the process: a restart forgets)
    rcptNNN+t@x     RCPT gets reply code NNN (rcpt452 too many recipients, rcpt552, ...;
                    rcpt421 replies and then closes the connection)
    data451+t@x     the whole message is read, the final "." gets "451 4.3.0"; not spooled
    data554+t@x     likewise with "554 5.6.0"; any dataNNN works the same way
    dtempN+t@x      the final "." gets "451 4.3.0" the first N times, then the mail is accepted
    drop+t@x        after the final "." the message IS spooled (outcome "dropped") and the
                    connection is closed without any reply: an MTA that queued it and died
    dropN+t@x       like drop for the first N deliveries to this address, then accepted
    bye421+t@x      the final "." gets "421 4.3.2" and the connection is closed; not spooled
    delayMS+t@x     waits MS milliseconds before answering the final "." with 250

When several accepted recipients carry a DATA-stage fault (data, dtemp, drop, bye, delay),
the first one in RCPT order decides for the whole transaction.

Sender vocabulary: a MAIL FROM local part "mailNNN+..." gets reply code NNN on MAIL.

Control file (--control): a JSON object re-read whenever the file changes (write it to a
temporary name and rename). Its keys override the vocabulary for everything that follows:
    {"greeting": 421}  new connections get that code and are closed (--greeting-421 is the
                       start-up equivalent)
    {"mail": 451} / {"rcpt": 451} / {"data": 554}   that code for every MAIL / RCPT / final "."
    {"drop": true}     every message is spooled and the connection closed without reply
    {"delay_ms": 500}  delay before every reply to a final "."

TLS and AUTH: --tls-cert/--tls-key offer STARTTLS; --require-starttls refuses (530) every
command but EHLO/HELO/NOOP/QUIT/STARTTLS before TLS. --implicit-tls speaks TLS from the first
byte (smtps). --auth user:password offers AUTH PLAIN and LOGIN and requires it before MAIL;
with STARTTLS offered, AUTH is only advertised and allowed after TLS (538 before), and
without TLS, or with implicit TLS, it is allowed as is (aiosmtpd cannot tell an implicit-TLS
connection is encrypted).

Extensions: --pipelining announces PIPELINING (aiosmtpd reads pipelined commands in order
anyway); --chunking announces CHUNKING and takes BDAT (RFC 3030). --auth-mechs limits the
AUTH mechanisms offered; XOAUTH2 is offered with --xoauth2-token FILE and accepts the
--auth user with the token the file holds at that moment (re-read every time).

Spool: each accepted (or dropped) message is DIR/<seq>.eml, the exact bytes received after
dot-unstuffing, plus DIR/<seq>.json with the envelope: mail_from, rcpt_tos, mail_options,
rcpt_options, peer, conn, tls, auth_user, outcome ("accepted" or "dropped"), time. The .json is
renamed into place last, so a .json means a complete message.

Session log (--log, default DIR/../<spool name>.jsonl): one JSON object per line with t, conn,
tls, auth, dir ("C" client line, "S" server reply, "E" event) and line. Message data is not
logged line by line (one "C" entry ". (N bytes)" marks its end); AUTH secrets are masked.
"""
import argparse
import asyncio
import itertools
import json
import logging
import os
import re
import signal
import ssl
import sys
import time
import warnings

from aiosmtpd.smtp import SMTP, AuthResult

REPLY_TEXT = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.0 Mailbox temporarily unavailable",
    451: "4.3.0 Local error in processing, try again later",
    452: "4.5.3 Too many recipients",
    454: "4.7.0 Temporary authentication failure",
    530: "5.7.0 Authentication required",
    535: "5.7.8 Authentication credentials invalid",
    550: "5.1.1 User unknown",
    551: "5.1.6 User not local",
    552: "5.3.4 Message too big",
    553: "5.1.3 Mailbox name not allowed",
    554: "5.6.0 Transaction failed",
}
WORD_RE = re.compile(r"^(?P<word>[a-z]+?)(?P<num>\d*)$")
DATA_STAGE = ("data", "dtemp", "drop", "bye", "delay")


def reply(code, text=None):
    """Formats an SMTP reply line for code, with a canned enhanced-status text."""
    if text is None:
        cls = str(code)[0]
        text = REPLY_TEXT.get(code, f"{cls}.0.0 Scripted reply {code}")
    return f"{code} {text}"


def parse_fault(address):
    """Returns (word, number or None) from the local part of address, e.g. ("temp", 3)."""
    local = address.rsplit("@", 1)[0].split("+", 1)[0].lower()
    m = WORD_RE.match(local)
    if not m:
        return "ok", None
    return m.group("word"), int(m.group("num")) if m.group("num") else None


class ServerState:
    """Everything the process remembers across connections: counters, spool, log, control."""

    def __init__(self, args):
        self.args = args
        self.spool = args.spool
        os.makedirs(self.spool, exist_ok=True)
        self.conn_ids = itertools.count(1)
        self.seq = itertools.count(self._next_seq())
        self.attempts = {}
        self.log_file = open(args.log, "a", buffering=1, encoding="utf-8")
        self._control = {}
        self._control_stamp = None

    def _next_seq(self):
        seqs = [int(n.split(".")[0]) for n in os.listdir(self.spool)
                if n.endswith(".json") and n.split(".")[0].isdigit()]
        return max(seqs, default=0) + 1

    def control(self):
        """The current control-file settings (re-read when the file changes)."""
        path = self.args.control
        if not path:
            return self._control
        try:
            st = os.stat(path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            self._control, self._control_stamp = {}, None
            return self._control
        if stamp != self._control_stamp:
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                self._control = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._control = {}
            self._control_stamp = stamp
        return self._control

    def bump(self, key):
        """Counts one more use of key (e.g. ("rcpt", address)) and returns the new count."""
        n = self.attempts.get(key, 0) + 1
        self.attempts[key] = n
        return n

    def log(self, conn, direction, line):
        """Appends one session-log record."""
        rec = {"t": round(time.time(), 6), "conn": conn.conn_id, "tls": conn.tls_active(),
               "auth": conn.login_name(), "dir": direction, "line": line}
        self.log_file.write(json.dumps(rec) + "\n")

    def spool_message(self, conn, envelope, outcome):
        """Writes <seq>.eml then <seq>.json (renamed into place last); returns the name."""
        name = f"{next(self.seq):07d}"
        eml = os.path.join(self.spool, name + ".eml")
        with open(eml + ".tmp", "wb") as f:
            f.write(envelope.original_content or b"")
        os.rename(eml + ".tmp", eml)
        meta = {
            "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "peer": list(conn.session.peer or ()), "conn": conn.conn_id,
            "tls": conn.tls_active(), "auth_user": conn.login_name(), "outcome": outcome,
            "time": time.time(),
        }
        js = os.path.join(self.spool, name + ".json")
        with open(js + ".tmp", "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.rename(js + ".tmp", js)
        return name


class FaultHandler:
    """aiosmtpd hooks applying the vocabulary and the control file."""

    def __init__(self, state):
        self.state = state

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # aiosmtpd advertises AUTH even when no credentials exist; a client would then
        # authenticate against nothing, so hide it unless --auth was given.
        session.host_name = hostname
        if not self.state.args.auth:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        for flag, keyword in ((self.state.args.pipelining, "PIPELINING"),
                              (self.state.args.chunking, "CHUNKING")):
            if flag:
                responses.insert(len(responses) - 1, "250-" + keyword)
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        forced = self.state.control().get("mail")
        word, num = parse_fault(address)
        code = forced or (num if word == "mail" and num else None)
        if code:
            return await server.scripted_reply(int(code))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        forced = self.state.control().get("rcpt")
        if forced:
            return await server.scripted_reply(int(forced))
        word, num = parse_fault(address)
        key = ("rcpt", address.lower())
        if word == "temp" and num is None:
            return reply(451)
        if word == "perm":
            return reply(550)
        if word == "temp" and self.state.bump(key) <= num:
            return reply(451)
        if word == "rcpt" and num:
            return await server.scripted_reply(num)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    def _data_fault(self, envelope):
        """The first DATA-stage fault among the accepted recipients, as (word, num, address)."""
        for address in envelope.rcpt_tos:
            word, num = parse_fault(address)
            if word in DATA_STAGE:
                return word, num, address
        return None, None, None

    async def handle_DATA(self, server, session, envelope):
        ctl = self.state.control()
        word, num, address = self._data_fault(envelope)
        delay_ms = ctl.get("delay_ms") or (num if word == "delay" and num else 0)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        if ctl.get("data"):
            code = int(ctl["data"])
            if code < 300:
                self.state.spool_message(server, envelope, "accepted")
            return await server.scripted_reply(code)
        if ctl.get("drop"):
            return await server.drop(envelope)
        key = ("data", (address or "").lower())
        if word == "data" and num:
            return await server.scripted_reply(num)
        if word == "dtemp" and self.state.bump(key) <= (num or 0):
            return reply(451)
        if word == "drop" and (num is None or self.state.bump(key) <= num):
            return await server.drop(envelope)
        if word == "bye":
            return await server.scripted_reply(num or 421, hangup=True)
        name = self.state.spool_message(server, envelope, "accepted")
        return f"250 2.0.0 OK queued as {name}"


class FaultSMTP(SMTP):
    """aiosmtpd's SMTP with a session log, scripted hang-ups and implicit-TLS awareness."""

    def __init__(self, handler, state, implicit_tls=False, **kwargs):
        super().__init__(handler, **kwargs)
        self.state = state
        self.conn_id = next(state.conn_ids)
        self.implicit_tls = implicit_tls
        self._in_data = False
        self._in_auth = False
        self._data_bytes = 0

    # --- state helpers -------------------------------------------------------------------
    def tls_active(self):
        return bool(self.implicit_tls or self._tls_protocol is not None)

    def login_name(self):
        if self.session is None or not self.session.authenticated:
            return None
        login = getattr(self.session.auth_data, "login", None)
        return login.decode("utf-8", "replace") if isinstance(login, bytes) else login

    # --- logging -------------------------------------------------------------------------
    def connection_made(self, transport):
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self.state.log(self, "E", f"connect {self.session.peer}")
        else:
            self.state.log(self, "E", "tls established")

    def connection_lost(self, error):
        self.state.log(self, "E", f"closed{' ' + repr(error) if error else ''}")
        super().connection_lost(error)

    def _client_connected_cb(self, reader, writer):
        super()._client_connected_cb(reader, writer)
        original = reader.readuntil

        async def readuntil(separator=b"\n"):
            line = await original(separator)
            self._log_client(line)
            return line

        reader.readuntil = readuntil

    def _log_client(self, raw):
        if self._in_data:
            if raw == b".\r\n":
                self._in_data = False
                self.state.log(self, "C", f". ({self._data_bytes} bytes)")
            else:
                self._data_bytes += len(raw)
            return
        line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        if self._in_auth:
            self._in_auth = False
            line = "***"
        elif line[:5].upper() == "AUTH ":
            parts = line.split()
            line = " ".join(parts[:2] + (["***"] if len(parts) > 2 else []))
        self.state.log(self, "C", line)

    async def push(self, status):
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if text.startswith("354"):
            self._in_data, self._data_bytes = True, 0
        self._in_auth = text.startswith("334")
        self.state.log(self, "S", text)
        await super().push(status)

    # --- scripted behaviour --------------------------------------------------------------
    async def _handle_client(self):
        code = self.state.control().get("greeting") or self.state.args.greeting
        if code:
            await self.push(reply(int(code)))
            self.transport.close()
            return
        await super()._handle_client()

    async def _wait_for_close(self):
        # connection_lost() cancels the session task, which ends this wait; the bound
        # only keeps a wedged peer from holding the task for ever.
        await asyncio.sleep(60)
        return reply(421)

    async def smtp_BDAT(self, arg):
        """RFC 3030: BDAT <size> [LAST]; the chunk follows the command line, taken as is."""
        parts = (arg or "").split()
        if not self.state.args.chunking or not parts or not parts[0].isdigit() or len(parts) > 2 \
                or (len(parts) == 2 and parts[1].upper() != "LAST"):
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        chunk = await self._reader.readexactly(int(parts[0]))
        if not self.envelope.rcpt_tos:
            self._bdat = []
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        self._bdat = getattr(self, "_bdat", []) + [chunk]
        if len(parts) == 1:
            await self.push(f"250 2.0.0 {len(chunk)} octets received")
            return
        content = b"".join(self._bdat)
        self._bdat = []
        self.envelope.original_content = content
        self.envelope.content = content
        self.state.log(self, "C", f"BDAT LAST ({len(content)} bytes)")
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def auth_XOAUTH2(self, _, args):
        """SASL XOAUTH2: base64("user=U\\1auth=Bearer T\\1\\1") as the initial response."""
        import base64
        try:
            raw = base64.b64decode(args[1], validate=True) if len(args) > 1 else b""
            fields = dict(f.split(b"=", 1) for f in raw.split(b"\x01") if b"=" in f)
            with open(self.state.args.xoauth2_token, "rb") as f:
                token = f.read().strip()
        except Exception:
            return AuthResult(success=False, handled=False)
        user = (self.state.args.auth or "").partition(":")[0].encode()
        from aiosmtpd.smtp import LoginPassword
        ok = fields.get(b"user") == user and fields.get(b"auth") == b"Bearer " + token
        return AuthResult(success=ok, handled=False, auth_data=LoginPassword(user, b""))

    async def scripted_reply(self, code, hangup=False):
        """Sends code (closing afterwards for 421 or hangup) and returns the reply for aiosmtpd."""
        if code == 421 or hangup:
            await self.push(reply(code))
            self.state.log(self, "E", f"hangup after {code}")
            self.transport.close()
            return await self._wait_for_close()
        return reply(code)

    async def drop(self, envelope):
        """Spools the message, then closes the connection without replying."""
        name = self.state.spool_message(self, envelope, "dropped")
        self.state.log(self, "E", f"drop after data, spooled {name}")
        self.transport.abort()
        return await self._wait_for_close()


def build_tls_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def make_authenticator(credentials):
    user, _, password = credentials.partition(":")

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login == user.encode() and auth_data.password == password.encode())
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return authenticate


def parse_args(argv):
    p = argparse.ArgumentParser(description="Scriptable fault-injecting SMTP server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--log")
    p.add_argument("--control")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--auth", metavar="USER:PASSWORD")
    p.add_argument("--greeting", type=int, metavar="CODE")
    p.add_argument("--greeting-421", dest="greeting", action="store_const", const=421)
    p.add_argument("--hostname", default="fault-smtpd.test")
    p.add_argument("--pipelining", action="store_true")
    p.add_argument("--chunking", action="store_true")
    p.add_argument("--auth-mechs", default="PLAIN,LOGIN")
    p.add_argument("--xoauth2-token", metavar="FILE")
    args = p.parse_args(argv)
    if (args.require_starttls or args.implicit_tls) and not (args.tls_cert and args.tls_key):
        p.error("--require-starttls and --implicit-tls need --tls-cert and --tls-key")
    if args.require_starttls and args.implicit_tls:
        p.error("--require-starttls and --implicit-tls are exclusive")
    if not args.log:
        spool = os.path.abspath(args.spool).rstrip("/")
        args.log = spool + ".jsonl"
    return args


async def serve(args):
    state = ServerState(args)
    loop = asyncio.get_running_loop()
    tls = build_tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    smtp_kwargs = dict(
        hostname=args.hostname, enable_SMTPUTF8=True, timeout=120,
        tls_context=None if args.implicit_tls else tls,
        require_starttls=args.require_starttls,
        # AUTH must wait for STARTTLS only where STARTTLS exists; aiosmtpd cannot see
        # implicit TLS and would refuse AUTH there.
        auth_require_tls=bool(tls and not args.implicit_tls),
    )
    if args.auth:
        mechs = set(m.strip().upper() for m in args.auth_mechs.split(",") if m.strip())
        if args.xoauth2_token:
            mechs.add("XOAUTH2")
        smtp_kwargs.update(authenticator=make_authenticator(args.auth), auth_required=True,
                           auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN", "XOAUTH2") if m not in mechs])
    else:
        smtp_kwargs.update(auth_exclude_mechanism=["XOAUTH2"])
    handler = FaultHandler(state)

    def factory():
        return FaultSMTP(handler, state, implicit_tls=args.implicit_tls, loop=loop, **smtp_kwargs)

    server = await loop.create_server(factory, args.host, args.port, backlog=256,
                                      ssl=tls if args.implicit_tls else None)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"LISTENING {args.host} {port}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()
    state.log_file.close()


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # aiosmtpd warns on every AUTH (its own use of a deprecated field) and on every
    # implicit-TLS connection (AUTH without STARTTLS, which is intended there).
    noise = ("login_data is deprecated", "auth_require_tls == False")
    logging.getLogger("mail.log").addFilter(
        lambda rec: not any(n in rec.getMessage() for n in noise))
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
