#!/usr/bin/python3
"""The two SMTP engines side by side, in one run:

1. loopback: outboxd (smtp.engine native, then libcurl) draining N queued 2 KB messages into
   smtp-sink, against Postfix smtp-source at the same session count (ratio, target >= 0.8),
   with the CPU per message of every process and outboxd's peak RSS; and each engine alone
   without the database (native_smtp_loop.c, curl_smtp_loop.c) against smtp-source;
2. a relay D ms away (tests/integration/delay_proxy.py delays every server reply by D, for
   each D in BENCH_DELAYS): native, libcurl and a pipelining reference client
   (pipeline_ref.py), each with its rate and round trips per message.

  BENCH_MESSAGES=20000 BENCH_SESSIONS=4 BENCH_ROUNDS=2 BENCH_DELAYS="5 20" BENCH_DELAY_MESSAGES=2000 \
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
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
PY = "/usr/bin/python3"


def say(msg):
    print(f"smtp_engines_bench: {msg}", flush=True)


def run_engine(b, engine, port, pool, n):
    os.environ["OUTBOXD_SMTP_ENGINE"] = engine
    sb.N = n
    return b.run_outboxd(b.sink, port, pool)


def build_native_loop(b):
    """Compiles native_smtp_loop.c against the objects of `make` (all but main.o)."""
    obj = os.path.join(sb.ROOT, "build", "obj")
    objs = [os.path.join(obj, f) for f in sorted(os.listdir(obj)) if f.endswith(".o") and f != "main.o"]
    pkgs = ["libpq", "libevent", "libevent_openssl", "openssl", "libcurl", "rdkafka", "libcyaml", "jansson"]
    flags = subprocess.run(["pkg-config", "--cflags", "--libs"] + pkgs, check=True, capture_output=True,
                           text=True, timeout=30).stdout.split()
    exe = os.path.join(b.tmp, "native_smtp_loop")
    r = subprocess.run(["cc", "-std=c11", "-O2", "-D_GNU_SOURCE", "-I", os.path.join(sb.ROOT, "dispatcher"), "-o", exe,
                        os.path.join(HERE, "native_smtp_loop.c")] + objs + flags + ["-lm", "-pthread"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"cannot compile native_smtp_loop.c:\n{r.stderr[-2000:]}")
    return exe


def engine_alone(b, exe, label):
    cpu0 = sb.cpu_seconds(b.sink.pid)
    out = subprocess.run([exe, f"smtp://{sb.HOST}:{b.sink_port}", str(N), str(SESSIONS)], check=True,
                         capture_output=True, text=True, timeout=sb.DRAIN_BOUND).stdout.split()
    rate, cpu_us = float(out[out.index("msg/s,") - 1]), float(out[out.index("us/msg") - 1])
    sink_us = (sb.cpu_seconds(b.sink.pid) - cpu0) / N * 1e6
    return rate, cpu_us, sink_us


def loopback(b):
    """ROUNDS rounds, each running every client once in turn, so drift in the load of a
    shared machine hits all of them; every figure is printed, then the medians."""
    b.build_curl_loop()
    alone = {"native": build_native_loop(b), "libcurl": b.curl_loop}
    ratios = {}
    for rnd in range(1, ROUNDS + 1):
        src = b.run_smtp_source(b.sink, b.sink_port, SESSIONS)
        say(f"loopback round {rnd}, {SESSIONS} sessions: smtp-source {src['rate']:.0f} msg/s, CPU "
            f"{src['cpu'] / N * 1e6:.0f} us/msg (smtp-sink {src['sink_cpu'] / N * 1e6:.0f} us/msg)")
        for label, exe in alone.items():
            rate, cpu_us, sink_us = engine_alone(b, exe, label)
            ratios.setdefault(f"{label} engine alone", []).append(rate / src["rate"])
            say(f"loopback round {rnd}, {SESSIONS} sessions: {label} engine alone (no database) {rate:.0f} msg/s, "
                f"CPU {cpu_us:.0f} us/msg (smtp-sink {sink_us:.0f} us/msg), ratio to smtp-source "
                f"{rate / src['rate']:.2f}")
        for engine in ENGINES:
            o = run_engine(b, engine, b.sink_port, SESSIONS, N)
            ratios.setdefault(f"outboxd {engine}", []).append(o["rate"] / src["rate"])
            say(f"loopback round {rnd}, {SESSIONS} sessions: outboxd {engine} {o['rate']:.0f} msg/s "
                f"({o['steady']:.0f} first to last sent_at), ratio to smtp-source {o['rate'] / src['rate']:.2f}; "
                f"CPU outboxd {o['cpu'] / N * 1e6:.0f} us/msg, its postgres backends {o['pg_cpu'] / N * 1e6:.0f} "
                f"us/msg, smtp-sink {o['sink_cpu'] / N * 1e6:.0f} us/msg; peak RSS {o['rss_kb'] / 1024:.1f} MiB")
    for label, r in ratios.items():
        say(f"loopback {SESSIONS} sessions: {label} / smtp-source median {sb.median(r):.2f} "
            f"(target >= 0.8; {len(r)} rounds, range {min(r):.2f}..{max(r):.2f})")


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
