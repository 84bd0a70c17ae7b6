#!/usr/bin/python3
"""A reference SMTP client that pipelines as RFC 2920 allows (MAIL, RCPT and DATA in one
write, then the body), nothing else: the rate a pipelining sender reaches against a relay,
to compare the dispatcher's engines with. S sessions share N messages; each session reuses
its connection.

    /usr/bin/python3 pipeline_ref.py HOST PORT N SESSIONS BODY_BYTES

Prints "pipeline_ref: N msgs S sessions: R msg/s".
"""
import asyncio
import sys
import time


async def read_reply(reader):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("relay closed the connection")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3])


async def session(host, port, counter, body):
    reader, writer = await asyncio.open_connection(host, port)
    await read_reply(reader)
    writer.write(b"EHLO ref.example\r\n")
    await read_reply(reader)
    while counter[0] > 0:
        counter[0] -= 1
        writer.write(b"MAIL FROM:<ref@example.org>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n")
        for want in (250, 250, 354):
            code = await read_reply(reader)
            if code != want:
                raise RuntimeError(f"reply {code}, want {want}")
        writer.write(body)
        if await read_reply(reader) != 250:
            raise RuntimeError("message refused")
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def main(host, port, n, sessions, size):
    line = b"The quick brown fox jumps over the lazy dog; reference body text line.\r\n"
    text = (b"Subject: ref\r\n\r\n" + line * (size // len(line) + 1))[:size]
    body = text.rsplit(b"\r\n", 1)[0] + b"\r\n.\r\n"
    counter = [n]
    t0 = time.monotonic()
    await asyncio.gather(*(session(host, port, counter, body) for _ in range(sessions)))
    rate = n / (time.monotonic() - t0)
    print(f"pipeline_ref: {n} msgs {sessions} sessions: {rate:.1f} msg/s", flush=True)


if __name__ == "__main__":
    h, p, n, s, b = sys.argv[1:6]
    asyncio.run(main(h, int(p), int(n), int(s), int(b)))
