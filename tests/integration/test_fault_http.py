"""The HTTP port at the descriptor limit: accept() failures pause the listener and are
logged as JSON at most every few seconds; the loop does not spin, and /health answers
again once descriptors are free."""
import json
import os
import resource
import socket
import subprocess
import time
import urllib.request

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
