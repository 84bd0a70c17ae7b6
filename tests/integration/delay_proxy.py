#!/usr/bin/python3
"""A TCP proxy that delays everything the server sends by a fixed time (a relay a network
hop away) and counts the client's round trips: a "turn" is a burst of client bytes that
follows server bytes, i.e. one more wait for the relay. Used to count round trips per
message and for the SMTP benchmarks.

    /usr/bin/python3 delay_proxy.py --upstream HOST:PORT --delay-ms D --stats FILE [--port 0]

Prints "LISTENING <host> <port>" once listening. FILE holds {"turns", "mails", "conns"}
(mails = "MAIL FROM:" commands seen), rewritten at most every 100 ms and at exit.
"""
import argparse
import asyncio
import json
import os
import signal
import sys
import time


class Stats:
    def __init__(self, path):
        self.path = path
        self.turns = self.mails = self.conns = 0
        self.written = 0.0

    def save(self, force=False):
        now = time.monotonic()
        if not force and now - self.written < 0.1:
            return
        self.written = now
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"turns": self.turns, "mails": self.mails, "conns": self.conns}, f)
        os.rename(tmp, self.path)


async def pipe_client_to_server(reader, writer, state, stats):
    tail = b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        if state["server_spoke"]:
            stats.turns += 1
            state["server_spoke"] = False
        # "MAIL FROM:" may straddle two reads; keep the last few bytes
        chunk = tail + data
        stats.mails += chunk.upper().count(b"MAIL FROM:") - tail.upper().count(b"MAIL FROM:")
        tail = chunk[-12:]
        writer.write(data)
        await writer.drain()
    try:
        writer.write_eof()
    except (OSError, RuntimeError):
        pass


async def pipe_server_to_client(reader, writer, state, delay):
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                writer.close()
                return
            state["server_spoke"] = True
            writer.write(data)
            await writer.drain()

    task = asyncio.ensure_future(deliver())
    while True:
        data = await reader.read(65536)
        await queue.put((time.monotonic() + delay, data or None))
        if not data:
            break
    await task


async def serve(args):
    host, port = args.upstream.rsplit(":", 1)
    stats = Stats(args.stats)
    stats.save(force=True)
    delay = args.delay_ms / 1000.0

    async def handle(creader, cwriter):
        try:
            sreader, swriter = await asyncio.open_connection(host, int(port))
        except OSError:
            cwriter.close()
            return
        stats.conns += 1
        state = {"server_spoke": False}
        up = asyncio.ensure_future(pipe_client_to_server(creader, swriter, state, stats))
        down = asyncio.ensure_future(pipe_server_to_client(sreader, cwriter, state, delay))
        try:
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait([down], timeout=delay + 1)
        finally:
            for t in (up, down):
                t.cancel()
            for w in (swriter, cwriter):
                w.close()
            stats.save(force=True)

    async def flush():
        while True:
            await asyncio.sleep(0.1)
            stats.save(force=True)

    flusher = asyncio.ensure_future(flush())
    server = await asyncio.start_server(handle, args.host, args.port, backlog=256)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"LISTENING {args.host} {server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()
    flusher.cancel()
    stats.save(force=True)


class DelayProxy:
    """delay_proxy.py as a child process (stopped by its PID): .url, .stats(), .close()."""

    def __init__(self, upstream_port, delay_ms, workdir, scheme="smtp"):
        import subprocess
        self.stats_path = os.path.join(workdir, f"proxy-{upstream_port}-{int(delay_ms)}.json")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.abspath(__file__), "--upstream", f"127.0.0.1:{upstream_port}",
             "--delay-ms", str(delay_ms), "--stats", self.stats_path],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 3 or line[0] != "LISTENING":
            self.close()
            raise RuntimeError("delay_proxy did not start")
        self.port = int(line[2])
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def stats(self):
        with open(self.stats_path) as f:
            return json.load(f)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--upstream", required=True)
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--stats", required=True)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
