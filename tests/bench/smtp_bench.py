#!/usr/bin/python3
"""SMTP dispatch benchmark: outboxd's drain rate against Postfix smtp-source on the same
smtp-sink (ratio, target >= 0.8) and against libcurl's SMTP alone (curl_smtp_loop.c),
commit -> 250 latency under a steady offered load, and the dispatcher's peak RSS and CPU per
1000 messages. Prints figures; not a pass/fail test.

  BENCH_MESSAGES=20000 BENCH_POOLS="4 8" BENCH_ROUNDS=2 BENCH_RATE=500 BENCH_LATENCY_SECONDS=20 \
      /usr/bin/python3 tests/bench/smtp_bench.py
Exits non-zero only when the set-up fails or a run does not complete in its time bound.
"""
import ctypes
import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTBOXD = os.path.join(ROOT, "build", "outboxd")
PG_LOCAL = os.path.join(ROOT, "ops", "scripts", "pg-local.sh")
SMTP_SINK = os.environ.get("SMTP_SINK_BIN", "/usr/sbin/smtp-sink")
SMTP_SOURCE = os.environ.get("SMTP_SOURCE_BIN", "/usr/sbin/smtp-source")
HOST = "127.0.0.1"

N = int(os.environ.get("BENCH_MESSAGES", "20000"))
POOLS = [int(p) for p in os.environ.get("BENCH_POOLS", "4 8").split()]
RATE = float(os.environ.get("BENCH_RATE", "500"))
LAT_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "20"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
PHASES = os.environ.get("BENCH_PHASES", "throughput latency").split()
BODY_BYTES = 2048
DRAIN_BOUND = float(os.environ.get("BENCH_DRAIN_TIMEOUT", "90"))  # seconds per run, at most
CURL_LOOP_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "curl_smtp_loop.c")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = len(os.sched_getaffinity(0))
SENDER = "bench@example.org"


def say(msg):
    print(f"smtp_bench: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout}s")


def stop(proc, timeout=10.0):
    """SIGTERM, then SIGKILL if it lingers; safe on a process that already ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def cpu_seconds(pid):
    """utime + stime of a live process, from /proc/PID/stat (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def pct(values, p):
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def bench_body():
    """BODY_BYTES of plain ASCII in 72-byte lines, so the MIME builder needs no encoding."""
    line = "The quick brown fox jumps over the lazy dog; benchmark body text line.\n"
    return (line * (BODY_BYTES // len(line) + 1))[:BODY_BYTES - 1] + "\n"


def coarse_clock_res():
    """Resolution in seconds of CLOCK_REALTIME_COARSE, which stamps file times (4 ms at HZ=250)."""
    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
    ts = Timespec()
    if ctypes.CDLL(None, use_errno=True).clock_getres(5, ctypes.byref(ts)) != 0:  # 5 = CLOCK_REALTIME_COARSE
        return 0.004
    return ts.tv_sec + ts.tv_nsec / 1e9


def norm_id(s):
    return s.strip().strip("<>")


class Bench:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="smtp-bench.")
        os.chmod(self.tmp, 0o755)  # the cluster inside belongs to postgres when run as root
        # the capture dir lives on tmpfs so the sink's file writes cost no disk I/O
        self.shm = tempfile.mkdtemp(prefix="smtp-bench.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        os.chmod(self.shm, 0o755)
        self.pgdir = os.path.join(self.tmp, "pg")
        self.procs = []
        self.pg_started = False
        self.db = None

    # ---- services ----------------------------------------------------------------------
    def start_pg(self):
        out = subprocess.run(["bash", PG_LOCAL, "start", self.pgdir], check=True, capture_output=True,
                             text=True, timeout=120).stdout
        self.pg_started = True
        env = dict(kv.split("=", 1) for line in out.splitlines() if line.startswith("export ")
                   for kv in line[len("export "):].split())
        self.pg_url = f"postgresql://{env['PGUSER']}@{env['PGHOST']}:{env['PGPORT']}/{env['PGDATABASE']}"
        subprocess.run([OUTBOXD, "migrate", "--database-url", self.pg_url], check=True,
                       capture_output=True, timeout=60)
        self.db = psycopg2.connect(self.pg_url)
        self.db.autocommit = True

    def build_curl_loop(self):
        """Compiles curl_smtp_loop.c (libcurl's SMTP alone) into the scratch folder."""
        exe = os.path.join(self.tmp, "curl_smtp_loop")
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libcurl"], check=True, capture_output=True,
                               text=True, timeout=30).stdout.split()
        r = subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-o", exe, CURL_LOOP_SRC] + flags + ["-lpthread"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"cannot compile {CURL_LOOP_SRC}:\n{r.stderr[-2000:]}")
        self.curl_loop = exe

    def start_sink(self, capture_dir=None):
        port = free_port()
        argv = [SMTP_SINK]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        if capture_dir:
            os.makedirs(capture_dir)
            if os.geteuid() == 0:
                pw = pwd.getpwnam("nobody")
                os.chown(capture_dir, pw.pw_uid, pw.pw_gid)
            argv += ["-d", os.path.join(capture_dir, "%H%M%S.")]
        argv += [f"{HOST}:{port}", "256"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "sink.log"), "ab"))
        self.procs.append(proc)
        wait_port(port, proc)
        return proc, port

    def start_outboxd(self, sink_port, pool, name):
        env = dict(os.environ)
        env.update({
            "OUTBOXD_DATABASE_URL": self.pg_url,
            "OUTBOXD_SMTP_URL": f"smtp://{HOST}:{sink_port}",
            "OUTBOXD_SMTP_TLS": "none",
            "OUTBOXD_SMTP_FROM": SENDER,
            "OUTBOXD_HTTP_LISTEN": "",
            "OUTBOXD_SMTP_POOL_SIZE": str(pool),
            "OUTBOXD_LOG_LEVEL": "warn",
        })
        log = open(os.path.join(self.tmp, f"{name}.log"), "ab")
        proc = subprocess.Popen([OUTBOXD, "run"], env=env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def cleanup(self):
        for p in reversed(self.procs):
            try:
                stop(p)
            except Exception:  # keep going: everything else must still stop
                pass
        if self.db is not None:
            try:
                self.db.close()
            except Exception:
                pass
        if self.pg_started:
            subprocess.run(["bash", PG_LOCAL, "destroy", self.pgdir], capture_output=True, timeout=60)
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.shm, ignore_errors=True)

    # ---- helpers -----------------------------------------------------------------------
    def sql(self, q, args=None):
        with self.db.cursor() as cur:
            cur.execute(q, args)
            return cur.fetchall() if cur.description else None

    def queue(self, n):
        """Empties the outbox and COPYs n messages with ~2 KB ASCII bodies in it."""
        self.sql("TRUNCATE outbox.messages CASCADE")
        body = bench_body().replace("\n", "\\n")  # COPY text format escapes the newlines
        buf = io.StringIO()
        for i in range(n):
            buf.write(f"{{u{i}@example.com}}\tbench {i}\t{body}\n")
        buf.seek(0)
        with self.db.cursor() as cur:
            cur.copy_expert("COPY outbox.messages (recipients, subject, body_text) FROM STDIN", buf)
        self.sql("VACUUM ANALYZE outbox.messages")

    def states(self):
        return dict(self.sql("SELECT state, count(*) FROM outbox.messages GROUP BY state"))

    def unfinished(self):
        """(pending + sending, failed + dead): each count walks a small partial index, so
        polling it costs the database little next to a scan of the whole table."""
        return tuple(self.sql(
            "SELECT (SELECT count(*) FROM outbox.messages WHERE state = 'pending') + "
            "(SELECT count(*) FROM outbox.messages WHERE state = 'sending'), "
            "(SELECT count(*) FROM outbox.messages WHERE state IN ('failed', 'dead'))")[0])

    def pg_backends(self):
        return [r[0] for r in self.sql(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")]

    # ---- 1. throughput -----------------------------------------------------------------
    def run_smtp_source(self, sink, sink_port, pool):
        sink_cpu0 = cpu_seconds(sink.pid)
        argv = [SMTP_SOURCE, "-d", "-s", str(pool), "-l", str(BODY_BYTES), "-m", str(N),
                "-f", SENDER, "-t", "rcpt@example.com", "-M", "bench.example", f"{HOST}:{sink_port}"]
        errlog = os.path.join(self.tmp, f"smtp-source-{pool}.log")
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(errlog, "ab"))
        self.procs.append(proc)
        # os.wait4 rather than Popen.wait: it also returns the child's CPU time
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > DRAIN_BOUND:
                stop(proc)
                raise RuntimeError(f"smtp-source did not finish {N} messages in {DRAIN_BOUND}s")
            time.sleep(0.005)
        elapsed = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            with open(errlog, errors="replace") as f:
                raise RuntimeError(f"smtp-source failed ({proc.returncode}): {f.read()[-500:]}")
        return {"rate": N / elapsed, "seconds": elapsed, "cpu": ru.ru_utime + ru.ru_stime,
                "sink_cpu": cpu_seconds(sink.pid) - sink_cpu0}

    def run_curl_loop(self, sink, sink_port, pool):
        sink_cpu0 = cpu_seconds(sink.pid)
        out = subprocess.run([self.curl_loop, f"smtp://{HOST}:{sink_port}", str(N), str(pool)], check=True,
                             capture_output=True, text=True, timeout=DRAIN_BOUND).stdout
        # "curl_smtp_loop: N msgs S sessions: R msg/s, cpu C us/msg"
        words = out.split()
        return {"rate": float(words[words.index("msg/s,") - 1]), "cpu_us": float(words[words.index("us/msg") - 1]),
                "sink_cpu": cpu_seconds(sink.pid) - sink_cpu0}

    def run_outboxd(self, sink, sink_port, pool):
        self.queue(N)
        sink_cpu0 = cpu_seconds(sink.pid)
        launched = time.time()
        proc = self.start_outboxd(sink_port, pool, f"outboxd-pool{pool}")
        deadline = time.monotonic() + DRAIN_BOUND
        backends, backend_cpu0 = [], {}
        while True:
            time.sleep(0.25)
            if proc.poll() is not None:
                raise RuntimeError(f"outboxd exited with {proc.returncode}; see its log")
            if not backends:
                # outboxd's connections, sampled early so their CPU can be charged to the run
                backends = self.pg_backends()
                backend_cpu0 = {b: cpu_seconds(b) for b in backends}
            left, bad = self.unfinished()
            if bad:
                raise RuntimeError(f"messages failed: {self.states()}")
            if left == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"outboxd did not send {N} messages in {DRAIN_BOUND}s: {self.states()}")
        rss = peak_rss_kb(proc.pid)
        cpu = cpu_seconds(proc.pid)
        pg_cpu = sum(cpu_seconds(b) - backend_cpu0.get(b, 0.0) for b in backends)
        sink_cpu = cpu_seconds(sink.pid) - sink_cpu0
        stop(proc, timeout=30)
        if self.states().get("sent", 0) != N:
            raise RuntimeError(f"outboxd finished with {self.states()}, want {N} sent")
        first, last = self.sql("SELECT extract(epoch FROM min(sent_at))::float8, "
                               "extract(epoch FROM max(sent_at))::float8 FROM outbox.messages")[0]
        return {"rate": N / (last - launched), "steady": (N - 1) / (last - first) if last > first else float("nan"),
                "seconds": last - launched, "rss_kb": rss, "cpu": cpu, "pg_cpu": pg_cpu, "sink_cpu": sink_cpu,
                "backends": len(backends), "exit": proc.returncode}

    def throughput(self):
        sink, port = self.start_sink()  # no capture on either side: the sink only speaks SMTP
        results = []
        k = N / 1000.0
        for pool in POOLS:
            ratios, lib_ratios, over_lib = [], [], []
            # rounds alternate the two clients, so drift in the machine's load hits both
            for rnd in range(1, ROUNDS + 1):
                src = self.run_smtp_source(sink, port, pool)
                lib = self.run_curl_loop(sink, port, pool)
                obx = self.run_outboxd(sink, port, pool)
                ratio = obx["rate"] / src["rate"]
                ratios.append(ratio)
                lib_ratios.append(lib["rate"] / src["rate"])
                over_lib.append(obx["rate"] / lib["rate"])
                say(f"pool {pool} round {rnd}: outboxd {obx['rate']:.0f} msg/s ({obx['seconds']:.2f} s from launch "
                    f"to the last sent_at; {obx['steady']:.0f} msg/s first to last), smtp-source {src['rate']:.0f} "
                    f"msg/s ({src['seconds']:.2f} s, CPU {src['cpu'] / k:.3f} s/1000), ratio {ratio:.2f}")
                say(f"pool {pool} round {rnd}: outboxd peak RSS {obx['rss_kb'] / 1024:.1f} MiB, CPU "
                    f"{obx['cpu'] / k:.3f} s/1000 msgs (its {obx['backends']} postgres backends "
                    f"{obx['pg_cpu'] / k:.3f}, smtp-sink {obx['sink_cpu'] / k:.3f}; smtp-sink under smtp-source "
                    f"{src['sink_cpu'] / k:.3f}), exit {obx['exit']}")
                # libcurl's SMTP alone, same sessions and connection reuse, nothing else: the
                # most any libcurl-based sender reaches on this machine
                say(f"pool {pool} round {rnd}: libcurl alone (curl_smtp_loop, no database) {lib['rate']:.0f} msg/s, "
                    f"CPU {lib['cpu_us'] / 1000:.3f} s/1000 (smtp-sink {lib['sink_cpu'] / k:.3f}): "
                    f"libcurl/smtp-source {lib['rate'] / src['rate']:.2f}, outboxd/libcurl {obx['rate'] / lib['rate']:.2f}")
                # what the database and the sink leave of these CPUs: even a dispatcher that
                # cost nothing could not pass this rate
                others = (obx["pg_cpu"] + obx["sink_cpu"]) / N
                if others > 0:
                    ceiling = NCPU / others
                    say(f"pool {pool} round {rnd}: ceiling on {NCPU} CPUs if outboxd itself used no CPU: "
                        f"{ceiling:.0f} msg/s (postgres + smtp-sink {others * 1e6:.0f} us/msg), ratio at most "
                        f"{ceiling / src['rate']:.2f}")
            ratios.sort()
            med = median(ratios)
            say(f"pool {pool}: ratio outboxd/smtp-source {med:.2f} (target >= 0.8; median of {len(ratios)} rounds, "
                f"range {ratios[0]:.2f}..{ratios[-1]:.2f}); libcurl alone/smtp-source {median(lib_ratios):.2f}, "
                f"outboxd/libcurl alone {median(over_lib):.2f}")
            results.append((pool, med))
        stop(sink)
        return results

    # ---- 2. latency --------------------------------------------------------------------
    def latency(self):
        cap = os.path.join(self.shm, "mail")
        sink, port = self.start_sink(capture_dir=cap)
        self.sql("TRUNCATE outbox.messages CASCADE")
        pool = POOLS[0]
        proc = self.start_outboxd(port, pool, "outboxd-latency")
        # let it connect and go idle (it registers in dispatcher_idle when the queue is empty)
        deadline = time.monotonic() + 10
        while not self.sql("SELECT count(*) FROM outbox.dispatcher_idle")[0][0]:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("outboxd did not become idle within 10 s")
            time.sleep(0.05)

        prod = psycopg2.connect(self.pg_url)
        prod.autocommit = True  # one row per transaction: execute() returns after COMMIT
        body = bench_body()
        total = int(RATE * LAT_SECONDS)
        committed = {}  # message_id -> wall time when the producer saw the commit
        late = 0
        t0 = time.monotonic()
        with prod.cursor() as cur:
            for i in range(total):
                due = t0 + i / RATE
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                elif now - due > 0.005:
                    late += 1
                cur.execute("INSERT INTO outbox.messages (recipients, subject, body_text) "
                            "VALUES (ARRAY[%s], 'latency', %s) RETURNING message_id",
                            (f"l{i}@example.com", body))
                # wall clock, like the capture files' mtime and sent_at: wall0 + monotonic
                # drifts from them while the kernel slews the wall clock
                committed[norm_id(cur.fetchone()[0])] = time.time()
        offered = total / (time.monotonic() - t0)
        prod.close()

        deadline = time.monotonic() + 30
        while self.unfinished()[0] or self.states().get("sent", 0) < total:
            if time.monotonic() > deadline or proc.poll() is not None:
                if os.environ.get("BENCH_HOLD_ON_FAILURE"):
                    say(f"holding for inspection: outboxd pid {proc.pid}, sink pid {sink.pid}, db {self.pg_url}, "
                        f"logs in {self.tmp}")
                    time.sleep(float(os.environ["BENCH_HOLD_ON_FAILURE"]))
                raise RuntimeError(f"latency run: not all sent after 30 s: {self.states()}")
            time.sleep(0.1)
        stop(proc, timeout=30)
        stop(sink)

        sent_at = {norm_id(m): s for m, s in self.sql(
            "SELECT message_id, extract(epoch FROM sent_at)::float8 FROM outbox.messages")}
        accepted = {}
        for name in os.listdir(cap):
            path = os.path.join(cap, name)
            mtime = os.stat(path).st_mtime_ns / 1e9
            with open(path, "rb") as f:
                head = f.read(4096)
            for line in head.split(b"\n"):
                if line[:11].lower() == b"message-id:":
                    accepted[norm_id(line[11:].decode())] = mtime
                    break
                if not line:
                    break
        # The 250 for a message comes after smtp-sink wrote its capture file and before the
        # dispatcher records the outcome, so per message it lies in [mtime, min(mtime + tick,
        # sent_at)]: file times come from the kernel's coarse clock and may be one tick early.
        tick = coarse_clock_res()
        low, high, recorded = [], [], []
        for m, t in committed.items():
            if m in sent_at:
                recorded.append((sent_at[m] - t) * 1000)
            if m in accepted:
                low.append(max(0.0, accepted[m] - t) * 1000)
                high.append((min(accepted[m] + tick, sent_at.get(m, accepted[m] + tick)) - t) * 1000)
        if os.environ.get("BENCH_LATENCY_CSV"):
            # per message: commit time (s, since the first commit), ms to mtime, ms to sent_at
            with open(os.environ["BENCH_LATENCY_CSV"], "w") as f:
                base = min(committed.values())
                for m, t in sorted(committed.items(), key=lambda kv: kv[1]):
                    a = (accepted[m] - t) * 1000 if m in accepted else float("nan")
                    r = (sent_at[m] - t) * 1000 if m in sent_at else float("nan")
                    f.write(f"{t - base:.4f},{a:.2f},{r:.2f}\n")
        low.sort(), high.sort(), recorded.sort()
        missing = total - len(low)

        def rng(p):
            return f"p{p} {pct(low, p):.1f}..{pct(high, p):.1f} ms"
        say(f"latency: {total} msgs offered at {offered:.0f} msg/s (target {RATE:.0f}; {late} inserts ran >5 ms "
            f"behind schedule), pool {pool}")
        if low:
            say(f"latency: commit -> 250 {rng(50)}, {rng(95)}, {rng(99)}, max {low[-1]:.1f}..{high[-1]:.1f} ms "
                f"(bounds: sink file mtime, {tick * 1000:.0f} ms clock tick, and sent_at)"
                + (f" [{missing} messages without a capture file]" if missing else ""))
        if recorded:
            say(f"latency: commit -> outcome recorded (sent_at) p50 {pct(recorded, 50):.1f} ms, p95 "
                f"{pct(recorded, 95):.1f} ms, p99 {pct(recorded, 99):.1f} ms, max {recorded[-1]:.1f} ms")


def main():
    for path in (OUTBOXD, SMTP_SINK, SMTP_SOURCE):
        if not os.access(path, os.X_OK):
            say(f"missing {path} (run `make` first; smtp-sink/smtp-source come with postfix)")
            return 2
    b = Bench()

    def on_signal(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        b.start_pg()
        say(f"{N} messages of {BODY_BYTES} body bytes per run, pools {POOLS}, smtp-sink without capture, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
        if "throughput" in PHASES:
            b.build_curl_loop()
            b.throughput()
        if "latency" in PHASES:
            b.latency()
    except (RuntimeError, subprocess.CalledProcessError, psycopg2.Error) as e:
        detail = getattr(e, "stderr", None)
        say(f"FAILED: {e}" + (f"\n{detail.decode(errors='replace') if isinstance(detail, bytes) else detail}"
                              if detail else ""))
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        b.cleanup()
    say(f"done in {time.monotonic() - started:.0f} s, load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
