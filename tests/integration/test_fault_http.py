"""The HTTP port under abuse. At the descriptor limit accept() failures pause the listener
and are logged as JSON at most every few seconds; beyond http.max_connections a connection
is closed at once, unless an idle keep-alive connection can make room; a client that has not
sent a whole request within http.request_timeout (idle, or trickling bytes) is cut. The loop
never spins and /health answers again."""
import http.client
import json
import os
import resource
import select
import socket
import time
import urllib.request

import pytest

from conftest import run_outboxd
from outboxd_proc import wait_for
from smtp_servers import free_port


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def health(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status
    except OSError:
        return None


def test_accept_at_the_descriptor_limit_does_not_spin(smtp_sink, outboxd_factory):
    port = free_port()
    limit = 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))  # inherited by the dispatcher
    try:
        d = outboxd_factory(smtp_sink.url, env={"OUTBOXD_HTTP_LISTEN": f"127.0.0.1:{port}"})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: health(port) == 200, timeout=20, what="/health up")
    clients = []
    try:
        for _ in range(100):  # far more than the few descriptors left
            try:  # once the listener rests, the backlog fills and further ones are refused
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                pass
        time.sleep(0.5)
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), cpu_ticks(d.pid)
        time.sleep(3)
        cpu = (cpu_ticks(d.pid) - c0) / hz / (time.monotonic() - t0)
        rss = rss_kb(d.pid)
        raw = d.log_text().splitlines()
        accept_lines = [l for l in raw if "accept" in l]
        print(f"\nat the fd limit ({limit}) with 100 clients: CPU {cpu * 100:.1f}% of a core, RSS {rss} kB, "
              f"{len(accept_lines)} accept log lines, {len(raw)} log lines in all")
        assert cpu < 0.2, f"the loop spins: {cpu * 100:.0f}% CPU"
        assert 1 <= len(accept_lines) <= 3, accept_lines[:5]
        for l in raw:
            json.loads(l)  # every log line is JSON
    finally:
        for s in clients:
            s.close()
    wait_for(lambda: health(port) == 200, timeout=20, what="/health answers again")
    assert d.stop() == 0


# ---- connection limit and request timeout (http.max_connections, http.request_timeout) ----

def http_daemon(smtp_sink, outboxd_factory, **settings):
    """A dispatcher serving HTTP on a free port with the given OUTBOXD_HTTP_* settings."""
    port = free_port()
    env = {"OUTBOXD_HTTP_LISTEN": f"127.0.0.1:{port}"}
    env.update({"OUTBOXD_HTTP_" + k.upper(): v for k, v in settings.items()})
    d = outboxd_factory(smtp_sink.url, env=env)
    wait_for(lambda: health(port) == 200 or d.proc.poll() is not None, timeout=20, what="/health up")
    assert d.proc.poll() is None, d.log_text()[-2000:]
    return d, port


def closed_by_peer(sock, timeout):
    """True when the server closes (or resets) sock within timeout seconds."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return False
    try:
        return sock.recv(4096) == b""
    except OSError:  # a reset counts as closed
        return True


def accepted(port):
    """Connections to 127.0.0.1:port the server has accept()ed: established ones still in
    the kernel's accept queue have no socket inode yet."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "01" and fields[9] != "0":
                n += 1
    return n


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def test_idle_flood_is_capped_and_health_answers_after_the_timeout(smtp_sink, outboxd_factory):
    limit, extra, timeout_s = 64, 16, 2.0  # the default limit; a short request timeout
    d, port = http_daemon(smtp_sink, outboxd_factory, request_timeout="2s")
    rss0 = rss_kb(d.pid)
    hz = os.sysconf("SC_CLK_TCK")
    held = []
    try:
        t_open = time.monotonic()
        # In steps the listen backlog (64) holds even when the daemon is slow to run, each
        # accepted before the next, so that the extra ones below are the ones refused.
        while len(held) < limit:
            for _ in range(16):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            wait_for(lambda: accepted(port) >= len(held), timeout=1, interval=0.01, what="held ones accepted")
        t0, c0 = time.monotonic(), cpu_ticks(d.pid)
        # Beyond the limit a connection is closed at once, unanswered.
        for _ in range(extra):
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            try:
                assert closed_by_peer(s, 1.0), "a connection beyond the limit stayed open"
            finally:
                s.close()
        assert health(port) is None, "/health answered beyond the limit"
        assert not any(closed_by_peer(s, 0) for s in held), "a held connection was closed early"
        rss_full = rss_kb(d.pid)
        # The held ones send nothing: each is closed once the request timeout passes.
        for s in held:
            assert closed_by_peer(s, max(0.1, t_open + timeout_s + 2.0 - time.monotonic())), \
                "an idle connection outlived the request timeout"
        cut = time.monotonic() - t_open
        cpu = (cpu_ticks(d.pid) - c0) / hz / (time.monotonic() - t0)
    finally:
        for s in held:
            s.close()
    wait_for(lambda: health(port) == 200, timeout=5, what="/health after the idle ones were cut")
    rejected = metric(port, "outboxd_http_connections_rejected_total")
    open_now = metric(port, "outboxd_http_connections")
    lines = d.log_lines()  # every line is JSON
    limit_lines = [l for l in lines if "connection limit" in l.get("msg", "")]
    timeout_lines = [l for l in lines if "in time" in l.get("msg", "")]
    print(f"\n{limit} idle + {extra} more: CPU {cpu * 100:.1f}% of a core, RSS {rss0} kB before, "
          f"{rss_full} kB at the limit; idle ones cut {cut:.2f}s after opening; rejected {rejected}, "
          f"{len(limit_lines)} limit and {len(timeout_lines)} timeout log lines")
    assert timeout_s - 0.5 <= cut <= timeout_s + 2.0
    assert cpu < 0.2, f"the loop spins: {cpu * 100:.0f}% CPU"
    assert rss_full - rss0 < 4096, f"RSS grew by {rss_full - rss0} kB"
    assert rejected >= extra  # the /health probe made beyond the limit counts too
    assert open_now == 1  # the scrape itself
    assert 1 <= len(limit_lines) <= 2 and 1 <= len(timeout_lines) <= 2, (limit_lines, timeout_lines)
    assert d.stop() == 0


def test_slowloris_is_cut_at_the_request_timeout(smtp_sink, outboxd_factory):
    """One header byte a second keeps evhttp's read timeout from firing; the request as a
    whole must still arrive within http.request_timeout."""
    d, port = http_daemon(smtp_sink, outboxd_factory, request_timeout="2s")
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        t0 = time.monotonic()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        cut = None
        while time.monotonic() - t0 < 6:
            if closed_by_peer(s, 1.0):
                cut = time.monotonic() - t0
                break
            try:
                s.sendall(b"X")
            except OSError:
                cut = time.monotonic() - t0
                break
            assert health(port) == 200, "/health blocked by a slow client"
    finally:
        s.close()
    print(f"\nslowloris (1 byte/s) cut after {cut}s (http.request_timeout 2s)")
    assert cut is not None, "a client trickling one byte a second was never cut"
    assert 1.5 <= cut <= 3.5, cut
    assert d.stop() == 0


def test_connections_are_released_and_keepalive_works(smtp_sink, outboxd_factory):
    d, port = http_daemon(smtp_sink, outboxd_factory, max_connections="2", request_timeout="1s")
    for _ in range(100):  # would run out at the third if closed connections were still counted
        assert health(port) == 200
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        for _ in range(3):  # the timeout restarts after each answer
            c.request("GET", "/health")
            r = c.getresponse()
            assert r.status == 200 and r.read() == b'{"status":"ok"}'
            time.sleep(0.6)
        assert closed_by_peer(c.sock, 2.0), "an idle keep-alive connection was not closed"
    finally:
        c.close()
    assert metric(port, "outboxd_http_connections_rejected_total") == 0
    assert d.stop() == 0


def test_idle_keepalive_connections_make_room_for_a_probe(smtp_sink, outboxd_factory):
    """Clients that keep connections alive (browsers, scrapers) can fill the limit too: the
    one idle longest after an answer is closed to let a new connection in."""
    d, port = http_daemon(smtp_sink, outboxd_factory, max_connections="2", request_timeout="10s")
    kept = [http.client.HTTPConnection("127.0.0.1", port, timeout=2) for _ in range(2)]
    try:
        for c in kept:
            c.request("GET", "/health")
            assert c.getresponse().read() == b'{"status":"ok"}'
        t0 = time.monotonic()
        assert health(port) == 200, "a probe was refused while idle keep-alive connections held the limit"
        assert time.monotonic() - t0 < 1
        assert closed_by_peer(kept[0].sock, 1.0), "the oldest idle one is closed"
        assert not closed_by_peer(kept[1].sock, 0), "the other one stays"
    finally:
        for c in kept:
            c.close()
    assert metric(port, "outboxd_http_idle_closed_total") >= 1
    assert metric(port, "outboxd_http_connections_rejected_total") == 0
    assert d.stop() == 0


def test_pipelining_client_that_never_reads_is_not_buffered_without_bound(smtp_sink, outboxd_factory):
    """evhttp keeps reading while an answer waits to be written (to see the client go): a
    client that pipelines requests and reads nothing back must not grow the daemon's memory
    by what it sends."""
    d, port = http_daemon(smtp_sink, outboxd_factory)
    rss0 = rss_kb(d.pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    burst, sent, rss_max = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n" * 512, 0, rss0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 3 and sent < 256 << 20:
            try:
                sent += s.send(burst)
            except BlockingIOError:
                rss_max = max(rss_max, rss_kb(d.pid))
                time.sleep(0.01)
        rss_max = max(rss_max, rss_kb(d.pid))
    except OSError:
        pass  # cut by the server
    finally:
        s.close()
    print(f"\npipelining without reading: {sent >> 20} MiB sent in {time.monotonic() - t0:.1f}s, "
          f"RSS {rss0} kB before, {rss_max} kB at most")
    assert rss_max - rss0 < 32 << 10, f"RSS grew by {(rss_max - rss0) >> 10} MiB"
    assert health(port) == 200
    assert d.stop() == 0


@pytest.mark.parametrize("key,value", [
    ("HTTP_MAX_CONNECTIONS", "0"), ("HTTP_MAX_CONNECTIONS", "10001"), ("HTTP_MAX_CONNECTIONS", "many"),
    ("HTTP_REQUEST_TIMEOUT", "10ms"), ("HTTP_REQUEST_TIMEOUT", "2h"), ("HTTP_REQUEST_TIMEOUT", "soon"),
])
def test_bad_http_limits_exit_2_naming_the_key(key, value):
    r = run_outboxd("check-config", env={"OUTBOXD_DATABASE_URL": "postgresql://127.0.0.1/app",
                                         "OUTBOXD_" + key: value}, timeout=30)
    name = key.lower().replace("_", ".", 1)
    assert r.returncode == 2, r.stderr
    assert any(l.startswith(name + ":") or l.startswith(name + " (") for l in r.stderr.splitlines()), r.stderr
