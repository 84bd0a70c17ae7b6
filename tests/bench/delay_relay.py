#!/usr/bin/python3
"""A benchmark SMTP relay behind a link of fixed latency: every reply (greeting included)
leaves a fixed delay after the command that caused it, as from a provider tens of
milliseconds away, and for each message it records the wall time at which it sent the 250
for the final dot, with the message's Message-ID. With delay 0 it is an instant sink.
Without --pipelining a client pays one delay per command (MAIL, each RCPT, DATA, the dot);
with it, commands sent together are answered together, one delay later. No CHUNKING.

  delay_relay.py --port PORT [--delay-ms 20] [--pipelining] [--log FILE]

Each log line is "<unix time of the 250> <Message-ID without brackets>"; the log is flushed
every 0.2 s and on SIGTERM, which stops the relay.
"""
import argparse
import asyncio
import signal
import time


class Relay:
    def __init__(self, delay_s, log, pipelining):
        self.delay = delay_s
        self.log = log
        self.pending = []
        self.ehlo = (b"250-relay\r\n250-8BITMIME\r\n" + (b"250-PIPELINING\r\n" if pipelining else b"")
                     + b"250 SIZE 52428800\r\n")

    def reply(self, writer, text, mid=None):
        """Sends text `delay` after now, in order: the link's latency. Replies to commands
        that came together (pipelined) leave together, one delay later."""
        def send():
            if writer.is_closing():
                return
            writer.write(text)
            if mid is not None:
                self.pending.append(f"{time.time():.6f} {mid}\n")
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, send)
        else:
            send()

    async def session(self, reader, writer):
        try:
            self.reply(writer, b"220 relay ESMTP bench\r\n")
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    self.reply(writer, self.ehlo)
                elif verb == b"DATA":
                    self.reply(writer, b"354 go ahead\r\n")
                    mid, in_headers = None, True
                    while True:
                        d = await reader.readline()
                        if not d or d in (b".\r\n", b".\n"):
                            break
                        if in_headers:
                            if d in (b"\r\n", b"\n"):
                                in_headers = False
                            elif mid is None and d[:11].lower() == b"message-id:":
                                mid = d[11:].strip().strip(b"<>").decode(errors="replace")
                    if not d:
                        return
                    self.reply(writer, b"250 2.0.0 queued\r\n", mid or "")
                elif verb == b"QUIT":
                    self.reply(writer, b"221 bye\r\n")
                    await asyncio.sleep(self.delay + 0.01)
                    return
                else:  # HELO, MAIL, RCPT, RSET, NOOP
                    self.reply(writer, b"250 ok\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def flush(self):
        if self.pending and self.log:
            self.log.write("".join(self.pending))
            self.log.flush()
        self.pending.clear()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--log")
    ap.add_argument("--pipelining", action="store_true", help="offer PIPELINING (RFC 2920)")
    a = ap.parse_args()
    log = open(a.log, "a") if a.log else None
    relay = Relay(a.delay_ms / 1000.0, log, a.pipelining)
    server = await asyncio.start_server(relay.session, "127.0.0.1", a.port, backlog=512)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
            relay.flush()
    relay.flush()


if __name__ == "__main__":
    asyncio.run(main())
