"""The go-live load scenarios behind ops/scripts/load-test.sh (settings from the environment).

Open loop: row i of a scenario is due at start + i / rate, whatever the system does; several
producer sessions (threads, one connection each) take rows round-robin, each INSERT committed
on its own. A row started more than BEHIND_S after its due time "fell behind" (the producers,
not outboxd, were the limit) and is counted.

Latency commit -> 250: the producer's wall clock when COMMIT returned, to the wall clock at
which the relay sent the 250 for the message's final dot (tests/bench/delay_relay.py logs it
with the Message-ID; same machine, same clock). Against an external stack (staging), whose
relay is not ours, only commit -> sent_at (the dispatcher's record, database clock) is measured.
"""
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import common as c

SCENARIOS = {  # the plan's scenarios: rate (messages/s), duration (s)
    "normal": (100, 600),
    "peak": (500, 300),
    "stress": (1000, 120),
    "soak": (200, 1800),
}
ORDER = ["normal", "peak", "stress", "soak"]
TARGET_P95, ALERT_P95, MAX_ERROR_RATE = 0.2, 0.5, 0.001
BEHIND_S = 0.1
RELAY = os.path.join(c.ROOT, "tests", "bench", "delay_relay.py")
PG_LOCAL = os.path.join(c.ROOT, "ops", "scripts", "pg-local.sh")
KAFKA_SH = os.path.join(c.ROOT, "ops", "scripts", "kafka.sh")
PY = "/usr/bin/python3"
BODY = "Load test message of the outboxd go-live kit.\n" * 4


def wait_http(url, proc=None, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.http_get(url, timeout=1)[0] == 200:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def host_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v) - idle, sum(v)
    except (OSError, ValueError, IndexError):
        return None


def proc_cpu_rss(pid):
    """(cpu seconds, rss bytes) of a local process from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        return cpu, rss
    except (OSError, IndexError, ValueError):
        return None, None


class OwnStack:
    """PostgreSQL, the relay (instant or delayed), N dispatchers and optionally Kafka, all in a
    temporary directory, all stopped by stop()."""

    def __init__(self, tmp):
        self.tmp, self.procs, self.kafka_dir = tmp, [], None
        self.pgdir = os.path.join(tmp, "pg")

    def start(self, replicas, delay_ms, pool, mirror):
        """Separate from __init__ so that stop() also runs when starting fails half-way."""
        out = subprocess.run([PG_LOCAL, "start", self.pgdir], check=True, capture_output=True, text=True).stdout
        env = dict(w.split("=", 1) for w in out.split() if "=" in w)
        self.dsn = f"postgresql://postgres@127.0.0.1:{env['PGPORT']}/postgres"
        os.environ["PRODUCER_DATABASE_URL"] = self.dsn
        subprocess.run([c.outboxd_bin(), "migrate", "--database-url", self.dsn], check=True,
                       capture_output=True, timeout=120)
        self.relay_log = os.path.join(self.tmp, "relay.log")
        rport = c.free_port()
        self.relay = self.spawn([PY, RELAY, "--port", str(rport), "--delay-ms", str(delay_ms),
                                 "--log", self.relay_log], "relay")
        brokers = ""
        if mirror:
            self.kafka_dir = os.path.join(self.tmp, "kafka")
            out = subprocess.run(["bash", KAFKA_SH, "up", "--dir", self.kafka_dir, "--port", str(c.free_port())],
                                 check=True, capture_output=True, text=True, timeout=180).stdout
            brokers = out.split("KAFKA_BOOTSTRAP=", 1)[1].split()[0].strip("'\"")
        self.http, self.dispatchers = [], []
        for i in range(replicas):
            port = c.free_port()
            e = dict(os.environ, OUTBOXD_DATABASE_URL=self.dsn, OUTBOXD_SMTP_URL=f"smtp://127.0.0.1:{rport}",
                     OUTBOXD_SMTP_TLS="none", OUTBOXD_SMTP_FROM="load@example.org",
                     OUTBOXD_HTTP_LISTEN=f"127.0.0.1:{port}", OUTBOXD_SMTP_POOL_SIZE=str(pool),
                     OUTBOXD_LOG_LEVEL="warn", OUTBOXD_DISPATCHER_OWNER=f"load-{i}",
                     OUTBOXD_KAFKA_BROKERS=brokers)
            self.dispatchers.append(self.spawn([c.outboxd_bin(), "run"], f"outboxd-{i}", env=e))
            self.http.append(f"http://127.0.0.1:{port}")
        for url, p in zip(self.http, self.dispatchers):
            wait_http(url + "/health/ready", p)

    def spawn(self, argv, name, env=None):
        log = open(os.path.join(self.tmp, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        if name == "relay":
            time.sleep(0.3)
        return p

    def others_cpu(self):
        """CPU seconds of the relay and of this load generator: what shares the machine."""
        return proc_cpu_rss(self.relay.pid)[0], proc_cpu_rss(os.getpid())[0]

    def cpu_rss(self):
        vals = [proc_cpu_rss(p.pid) for p in self.dispatchers]
        if any(v[0] is None for v in vals):
            return None, None, None
        return sum(v[0] for v in vals), sum(v[1] for v in vals), max(v[1] for v in vals)

    def stop(self):
        c.stop_procs(self.procs)
        if self.kafka_dir:
            subprocess.run(["bash", KAFKA_SH, "destroy", "--dir", self.kafka_dir], capture_output=True, timeout=120)
        subprocess.run([PG_LOCAL, "destroy", self.pgdir], capture_output=True, timeout=120)


class ExternalStack:
    """An environment's own outboxd (staging): figures from its /metrics."""

    def __init__(self):
        self.dsn = c.database_dsn()
        self.http = [c.setting("HEALTH_URL").rstrip("/")]
        self.relay_log = None

    def others_cpu(self):
        return None, proc_cpu_rss(os.getpid())[0]

    def cpu_rss(self):
        status, body = c.http_get(self.http[0] + "/metrics")
        if status != 200:
            return None, None, None
        s, _ = c.parse_metrics(body)
        cpu, rss = s.get("process_cpu_seconds_total"), s.get("process_resident_memory_bytes")
        return cpu, rss, rss

    def stop(self):
        pass


def kafka_lag(stack):
    status, body = c.http_get(stack.http[0] + "/metrics", timeout=2)
    if status != 200:
        return None
    s, _ = c.parse_metrics(body)
    return s.get("outboxd_kafka_mirror_lag_rows") if s.get("outboxd_kafka_mirror_enabled") == 1 else None


def read_relay_log(path, since_offset):
    out = {}
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        f.seek(since_offset)
        for line in f:
            t, _, mid = line.strip().partition(" ")
            if mid and mid not in out:
                out[mid] = float(t)
    return out


def run_scenario(name, rate, duration, stack, conn, sessions, sample_s, mirror):
    import psycopg2
    n = int(round(rate * duration))
    tag = f"load-{name}-{int(time.time())}"
    relay_offset = os.path.getsize(stack.relay_log) if stack.relay_log and os.path.exists(stack.relay_log) else 0
    rows = [None] * n  # (due, started, committed, id, message_id) or ("error", text)
    start = time.time() + 0.5
    stop_sampling = threading.Event()
    samples = []
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM outbox.messages")
        first_id = cur.fetchone()[0] + 1

    def producer(k):
        pc = psycopg2.connect(stack.dsn, connect_timeout=10, application_name="outboxd-load")
        try:
            for i in range(k, n, sessions):
                due = start + i / rate
                now = time.time()
                if due > now:
                    time.sleep(due - now)
                started = time.time()
                try:
                    with pc.cursor() as cur:
                        cur.execute("INSERT INTO outbox.messages (recipients, subject, body_text, idempotency_key, headers) "
                                    "VALUES (ARRAY[%s], %s, %s, %s, '{\"X-Outboxd-Load\": \"1\"}') RETURNING id, message_id",
                                    (f"load{i}@example.com", f"{tag} {i}", BODY, f"{tag}-{i}"))
                        mid, message_id = cur.fetchone()
                    pc.commit()
                    rows[i] = (due, started, time.time(), mid, message_id.strip("<>"))
                except psycopg2.Error as e:
                    pc.rollback()
                    rows[i] = ("error", str(e).strip()[:200])
        finally:
            pc.close()

    def sampler():
        mc = psycopg2.connect(stack.dsn, connect_timeout=10, application_name="outboxd-load-sampler")
        mc.autocommit = True
        try:
            while True:
                t = time.time()
                with mc.cursor() as cur:
                    cur.execute("SELECT count(*) FILTER (WHERE state IN ('pending', 'sending')), "
                                "count(*) FILTER (WHERE state = 'sent') FROM outbox.messages WHERE id >= %s",
                                (first_id,))
                    backlog, sent = cur.fetchone()
                cpu, rss, rss_max = stack.cpu_rss()
                relay_cpu, driver_cpu = stack.others_cpu()
                samples.append({"t": t - start, "backlog": backlog, "sent": sent, "cpu_s": cpu, "rss": rss,
                                "relay_cpu_s": relay_cpu, "driver_cpu_s": driver_cpu, "host": host_cpu(),
                                "rss_max": rss_max, "kafka_lag": kafka_lag(stack) if mirror else None})
                if stop_sampling.wait(sample_s):
                    return
        finally:
            mc.close()

    st = threading.Thread(target=sampler, daemon=True)
    st.start()
    threads = [threading.Thread(target=producer, args=(k,), daemon=True) for k in range(sessions)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(duration + 600)
    produced_end = time.time()
    ok = [r for r in rows if r and r[0] != "error"]
    ids = [r[3] for r in ok]
    # drain: every committed row finished, bounded
    drain_limit = max(15.0, 0.5 * duration)
    finished = {}
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT state, count(*) FROM outbox.messages WHERE id = ANY(%s) GROUP BY 1", (ids,))
            finished = dict(cur.fetchall())
        if sum(v for k, v in finished.items() if k in ("pending", "sending")) == 0:
            break
        if time.time() - produced_end > drain_limit:
            break
        time.sleep(0.25)
    drained_s = time.time() - produced_end
    time.sleep(max(sample_s, 0.3))  # the relay log is flushed every 0.2 s
    stop_sampling.set()
    st.join(10)
    with conn.cursor() as cur:
        cur.execute("SELECT id, state, extract(epoch FROM sent_at)::float8 FROM outbox.messages WHERE id = ANY(%s)",
                    (ids,))
        db = {r[0]: r for r in cur.fetchall()}
    got250 = read_relay_log(stack.relay_log, relay_offset)
    return summarize(name, rate, duration, rows, ok, db, got250, samples, start, drained_s, sessions, finished)


def mean(vals):
    v = [x for x in vals if x is not None]
    return sum(v) / len(v) if v else None


def summarize(name, rate, duration, rows, ok, db, got250, samples, start, drained_s, sessions, finished):
    n = len(rows)
    errors = [r for r in rows if r and r[0] == "error"]
    lat250, latsent, series250 = [], [], []
    for due, started, committed, mid, message_id in ok:
        d = db.get(mid)
        if d and d[1] == "sent" and d[2] is not None:
            latsent.append(d[2] - committed)
        t = got250.get(message_id)
        if t is not None:
            lat250.append(t - committed)
            series250.append((committed - start, t - committed, t - start))
    states = {k: v for k, v in finished.items()}
    failed = states.get("failed", 0) + states.get("dead", 0)
    unfinished = states.get("pending", 0) + states.get("sending", 0)
    behind = [r[1] - r[0] for r in ok if r[1] - r[0] > BEHIND_S]
    commits = sorted(r[2] - start for r in ok)
    primary = sorted(lat250) if got250 else sorted(latsent)
    basis = "commit->250" if got250 else "commit->sent_at"

    def stats(vals):
        v = sorted(vals)
        return {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99), "max": v[-1] if v else None}

    # latency percentiles per window of commit time, and rates per sample interval
    win = max(1.0, duration / 30.0)
    nwin = int(math.ceil(duration / win)) + 1
    buckets = [[] for _ in range(nwin + 1)]
    src = series250 if got250 else [(r[2] - start, db[r[3]][2] - r[2], db[r[3]][2] - start) for r in ok
                                     if r[3] in db and db[r[3]][2] is not None]
    for tc, lat, _ in src:
        buckets[min(nwin, max(0, int(tc // win)))].append(lat)
    windows = [{"t": (i + 0.5) * win, **{k: v for k, v in stats(b).items() if k != "max"}}
               for i, b in enumerate(buckets) if b]
    delivered_times = sorted(x[2] for x in src)
    tl = []
    for i, s in enumerate(samples):
        t0 = samples[i - 1]["t"] if i else 0.0
        dt = s["t"] - t0 if i else None
        entry = {"t": round(s["t"], 3), "backlog": s["backlog"], "rss_mb": s["rss"] / 2**20 if s["rss"] else None,
                 "rss_max_mb": s["rss_max"] / 2**20 if s["rss_max"] else None, "kafka_lag": s["kafka_lag"]}
        if i and dt and dt > 0:
            entry["offered_per_s"] = sum(1 for x in commits if t0 <= x < s["t"]) / dt
            entry["delivered_per_s"] = sum(1 for x in delivered_times if t0 <= x < s["t"]) / dt
            prev = samples[i - 1]
            for key, out in (("cpu_s", "cpu_pct"), ("relay_cpu_s", "relay_cpu_pct"), ("driver_cpu_s", "driver_cpu_pct")):
                if s[key] is not None and prev[key] is not None:
                    entry[out] = 100 * (s[key] - prev[key]) / dt
            if s["host"] and prev["host"] and s["host"][1] > prev["host"][1]:
                entry["host_busy_pct"] = 100 * (s["host"][0] - prev["host"][0]) / (s["host"][1] - prev["host"][1])
        tl.append(entry)
    err_n = len(errors) + failed + unfinished
    error_rate = err_n / n if n else 0.0
    lat = stats(primary)
    p95 = lat["p95"]
    if p95 is None or error_rate >= MAX_ERROR_RATE or p95 > ALERT_P95:
        verdict = "FAIL"
    elif p95 >= TARGET_P95:
        verdict = "WARN"
    else:
        verdict = "PASS"
    span = (commits[-1] - commits[0]) if len(commits) > 1 else duration
    dspan = (delivered_times[-1] - delivered_times[0]) if len(delivered_times) > 1 else None
    cpu = [e["cpu_pct"] for e in tl if e.get("cpu_pct") is not None]
    rss = [e["rss_max_mb"] for e in tl if e.get("rss_max_mb") is not None]
    lag = [e["kafka_lag"] for e in tl if e.get("kafka_lag") is not None]
    return {
        "scenario": name, "rate": rate, "duration_s": duration, "sessions": sessions,
        "offered": n, "inserted": len(ok), "insert_errors": len(errors),
        "insert_error_examples": sorted({e[1] for e in errors})[:3],
        "offered_rate": rate, "achieved_insert_rate": len(ok) / span if span > 0 else None,
        "delivered_rate": (len(delivered_times) - 1) / dspan if dspan else None,
        "fell_behind": len(behind), "max_behind_s": max(behind) if behind else 0.0,
        "latency_basis": basis,
        "latency_commit_to_250_s": stats(lat250) if got250 else None,
        "latency_commit_to_sent_at_s": stats(latsent),
        "states": states, "failed_or_dead": failed, "unfinished": unfinished,
        "error_rate": error_rate, "drain_s": drained_s,
        "backlog_max": max((e["backlog"] for e in tl), default=0),
        "cpu_pct_max": max(cpu) if cpu else None, "cpu_pct_mean": sum(cpu) / len(cpu) if cpu else None,
        "host_busy_pct_mean": mean([e.get("host_busy_pct") for e in tl]),
        "relay_cpu_pct_mean": mean([e.get("relay_cpu_pct") for e in tl]),
        "driver_cpu_pct_mean": mean([e.get("driver_cpu_pct") for e in tl]),
        "rss_mb_max": max(rss) if rss else None, "kafka_lag_max": max(lag) if lag else None,
        "verdict": verdict, "sla_applies": name != "stress",
        "windows": windows, "timeline": tl,
    }


def interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    import argparse
    import tempfile

    import psycopg2
    ap = argparse.ArgumentParser(prog="load-test.sh")
    ap.add_argument("scenario", choices=ORDER + ["all"])
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every duration (CI: 0.05)")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--relay-delay-ms", type=float, default=0.0, help="per-reply delay of the relay (own stack)")
    ap.add_argument("--pool", type=int, default=int(c.setting("OUTBOXD_SMTP_POOL_SIZE", "4") or 4))
    ap.add_argument("--mirror", action="store_true", help="start Kafka and mirror events (own stack)")
    ap.add_argument("--sessions", type=int, default=0, help="producer sessions (default: rate / 50, 4..16)")
    ap.add_argument("--out", default=os.path.join(c.ROOT, "build", "load"))
    a = ap.parse_args()
    mode = c.setting("LOAD_STACK", "own")
    if mode == "refuse":
        print(f"load-test: environment {c.setting('GOLIVE_ENV')} refuses load tests (LOAD_STACK=refuse)", file=sys.stderr)
        return 2
    names = ORDER if a.scenario == "all" else [a.scenario]
    # SIGTERM unwinds like Ctrl-C, so the stack of its own is stopped either way
    signal.signal(signal.SIGTERM, interrupted)
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="outboxd-load-")
    os.chmod(tmp, 0o755)
    t_setup = time.time()
    stack = None
    results = []
    try:
        if mode == "own":
            stack = OwnStack(tmp)
            stack.start(a.replicas, a.relay_delay_ms, a.pool, a.mirror)
        else:
            stack = ExternalStack()
        conn = psycopg2.connect(stack.dsn, connect_timeout=10, application_name="outboxd-load")
        conn.autocommit = True
        setup_s = time.time() - t_setup
        for name in names:
            rate, dur = SCENARIOS[name]
            duration = max(1.0, dur * a.scale)
            sessions = a.sessions or max(4, min(16, rate // 50))
            sample_s = 0.5 if duration < 60 else 1.0 if duration < 600 else 5.0
            print(f"load-test: {name}: {rate}/s for {duration:g} s, {sessions} sessions, "
                  f"{a.replicas} replica(s), relay delay {a.relay_delay_ms:g} ms", flush=True)
            r = run_scenario(name, rate, duration, stack, conn, sessions, sample_s, a.mirror or mode != "own")
            results.append(r)
            print_line(r)
        conn.close()
    finally:
        if stack is not None:
            stack.stop()
        subprocess.run(["rm", "-rf", tmp], check=False)
    doc = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "env": c.setting("GOLIVE_ENV"),
           "stack": mode, "scale": a.scale, "replicas": a.replicas, "relay_delay_ms": a.relay_delay_ms,
           "smtp_pool_size": a.pool, "mirror": a.mirror, "setup_s": setup_s,
           "sla": {"p95_target_s": TARGET_P95, "p95_alert_s": ALERT_P95, "max_error_rate": MAX_ERROR_RATE},
           "scenarios": results,
           "passed": all(r["verdict"] != "FAIL" for r in results if r["sla_applies"])
           and all(r["error_rate"] < MAX_ERROR_RATE for r in results)}
    jpath = os.path.join(a.out, "load-report.json")
    with open(jpath, "w") as f:
        json.dump(doc, f, indent=1)
    import report
    hpath = os.path.join(a.out, "load-report.html")
    with open(hpath, "w") as f:
        f.write(report.html_report(doc))
    print(f"load-test: {'PASS' if doc['passed'] else 'FAIL'}; wrote {jpath} and {hpath}")
    return 0 if doc["passed"] else 1


def ms(v):
    return "-" if v is None else f"{v * 1000:.0f}"


def print_line(r):
    lat = r["latency_commit_to_250_s"] or r["latency_commit_to_sent_at_s"]
    print(f"  {r['scenario']}: offered {r['offered_rate']}/s, inserted {r['achieved_insert_rate'] or 0:.1f}/s, "
          f"delivered {r['delivered_rate'] or 0:.1f}/s; {r['latency_basis']} ms p50 {ms(lat['p50'])} p95 {ms(lat['p95'])} "
          f"p99 {ms(lat['p99'])} max {ms(lat['max'])}; errors {r['error_rate'] * 100:.3f}% "
          f"(insert {r['insert_errors']}, failed/dead {r['failed_or_dead']}, unfinished {r['unfinished']}); "
          f"fell behind {r['fell_behind']}; backlog max {r['backlog_max']}; CPU max {r['cpu_pct_max'] or 0:.0f}%; "
          f"RSS max {r['rss_mb_max'] or 0:.1f} MiB; machine busy {r['host_busy_pct_mean'] or 0:.0f}% "
          f"(relay {r['relay_cpu_pct_mean'] or 0:.0f}%, load generator {r['driver_cpu_pct_mean'] or 0:.0f}% of a core); "
          f"verdict {r['verdict']}"
          f"{'' if r['sla_applies'] else ' (informational)'}", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f"load-test: interrupted ({e or 'Ctrl-C'}); its stack was stopped", file=sys.stderr)
        sys.exit(130)
