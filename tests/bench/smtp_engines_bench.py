#!/usr/bin/python3
"""The two SMTP engines side by side, in one run:

1. loopback: outboxd (smtp.engine native, then libcurl) draining N queued 2 KB messages into
   smtp-sink, against Postfix smtp-source at the same session count (ratio, target >= 0.8),
   with the CPU per message of every process and outboxd's peak RSS;
2. a relay D ms away (tests/integration/delay_proxy.py delays every server reply by D, for
   each D in BENCH_DELAYS): native, libcurl and a pipelining reference client
   (pipeline_ref.py), each with its rate and round trips per message.

  BENCH_MESSAGES=20000 BENCH_SESSIONS=4 BENCH_DELAYS="5 20" BENCH_DELAY_MESSAGES=2000 \
      /usr/bin/python3 tests/bench/smtp_engines_bench.py
Prints figures; not a pass/fail test. Exits non-zero only when a run cannot complete.
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import smtp_bench as sb  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402

N = int(os.environ.get("BENCH_MESSAGES", "20000"))
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "4"))
DELAYS = [float(d) for d in os.environ.get("BENCH_DELAYS", "5 20").split()]
N_DELAY = int(os.environ.get("BENCH_DELAY_MESSAGES", "2000"))
ENGINES = os.environ.get("BENCH_ENGINES", "native libcurl").split()
PY = "/usr/bin/python3"


def say(msg):
    print(f"smtp_engines_bench: {msg}", flush=True)


def run_engine(b, engine, port, pool, n):
    os.environ["OUTBOXD_SMTP_ENGINE"] = engine
    sb.N = n
    return b.run_outboxd(b.sink, port, pool)


def loopback(b):
    src = b.run_smtp_source(b.sink, b.sink_port, SESSIONS)
    say(f"loopback {SESSIONS} sessions: smtp-source {src['rate']:.0f} msg/s, CPU {src['cpu'] / N * 1e6:.0f} us/msg "
        f"(smtp-sink {src['sink_cpu'] / N * 1e6:.0f} us/msg)")
    for engine in ENGINES:
        o = run_engine(b, engine, b.sink_port, SESSIONS, N)
        say(f"loopback {SESSIONS} sessions: outboxd {engine} {o['rate']:.0f} msg/s ({o['steady']:.0f} first to last "
            f"sent_at), ratio to smtp-source {o['rate'] / src['rate']:.2f} (target >= 0.8); CPU outboxd "
            f"{o['cpu'] / N * 1e6:.0f} us/msg, its postgres backends {o['pg_cpu'] / N * 1e6:.0f} us/msg, smtp-sink "
            f"{o['sink_cpu'] / N * 1e6:.0f} us/msg; peak RSS {o['rss_kb'] / 1024:.1f} MiB")


def delayed(b, delay_ms):
    res = {}
    for engine in ENGINES:
        proxy = DelayProxy(b.sink_port, delay_ms, b.tmp)
        try:
            o = run_engine(b, engine, proxy.port, SESSIONS, N_DELAY)
            time.sleep(0.3)  # the proxy writes its counters every 100 ms
            st = proxy.stats()
        finally:
            proxy.close()
        res[engine] = o["rate"]
        say(f"relay {delay_ms:g} ms per reply, {SESSIONS} sessions: outboxd {engine} {o['rate']:.0f} msg/s, "
            f"{st['turns'] / max(st['mails'], 1):.2f} round trips per message, CPU {o['cpu'] / N_DELAY * 1e6:.0f} "
            f"us/msg, peak RSS {o['rss_kb'] / 1024:.1f} MiB")
    proxy = DelayProxy(b.sink_port, delay_ms, b.tmp)
    try:
        out = subprocess.run([PY, os.path.join(HERE, "pipeline_ref.py"), sb.HOST, str(proxy.port), str(N_DELAY),
                              str(SESSIONS), str(sb.BODY_BYTES)], check=True, capture_output=True, text=True,
                             timeout=sb.DRAIN_BOUND).stdout
        time.sleep(0.3)
        st = proxy.stats()
    finally:
        proxy.close()
    ref = float(out.split()[-2])
    say(f"relay {delay_ms:g} ms per reply, {SESSIONS} sessions: pipelining reference {ref:.0f} msg/s, "
        f"{st['turns'] / max(st['mails'], 1):.2f} round trips per message")
    if "native" in res and "libcurl" in res:
        say(f"relay {delay_ms:g} ms: native/libcurl {res['native'] / res['libcurl']:.2f}, native/reference "
            f"{res['native'] / ref:.2f} (target >= 0.8 of the reference)")


def main():
    b = sb.Bench()
    try:
        b.start_pg()
        b.sink, b.sink_port = b.start_sink()
        say(f"{sb.NCPU} CPUs; {N} messages on loopback, {N_DELAY} per delayed run, {SESSIONS} sessions; "
            f"engines {' '.join(ENGINES)}")
        sb.DRAIN_BOUND = max(sb.DRAIN_BOUND, 300.0)
        loopback(b)
        for d in DELAYS:
            delayed(b, d)
        return 0
    except Exception as e:  # report and clean up; the exit code says it failed
        say(f"FAILED: {e}")
        return 1
    finally:
        b.cleanup()


if __name__ == "__main__":
    sys.exit(main())
