"""Operating outboxd: /health, /health/ready and /metrics as the database and the relay come
and go, the circuit breaker during a relay outage, the rate limit, JSON logs without secrets,
and SIGHUP reloads. Black-box: the process, real PostgreSQL, real SMTP servers."""
import json
import math
import os
import re
import signal
import time
import urllib.error
import urllib.request

import pytest

from outboxd_proc import Outboxd, insert_messages, states, wait_for, wait_states
from smtp_servers import free_port

# Every family the dispatcher promises on /metrics.
FAMILIES = {
    "outboxd_up": "gauge",
    "outboxd_build_info": "gauge",
    "outboxd_messages_total": "counter",
    "outboxd_smtp_replies_total": "counter",
    "outboxd_smtp_send_duration_seconds": "histogram",
    "outboxd_delivery_latency_seconds": "histogram",
    "outboxd_claim_batch_size": "histogram",
    "outboxd_in_flight": "gauge",
    "outboxd_queue_depth": "gauge",
    "outboxd_oldest_pending_age_seconds": "gauge",
    "outboxd_kafka_mirror_lag_rows": "gauge",
    "outboxd_kafka_mirror_lag_seconds": "gauge",
    "outboxd_kafka_publish_total": "counter",
    "outboxd_breaker_state": "gauge",
    "outboxd_breaker_transitions_total": "counter",
    "outboxd_database_up": "gauge",
    "outboxd_listener_up": "gauge",
    "outboxd_table_dead_tuples": "gauge",
    "outboxd_table_last_autovacuum_timestamp_seconds": "gauge",
    "outboxd_oldest_xact_age_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
}
STATS_WAIT = 8  # queue figures are read from the database every 5 s


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
class OpsOutboxd(Outboxd):
    """An Outboxd with an HTTP port, optional `run` arguments (--config) and environment
    keys removed (so a configuration file decides them)."""

    def __init__(self, db, smtp_url, env=None, args=(), unset=(), name="outboxd"):
        self.http_port = free_port()
        e = {"OUTBOXD_HTTP_LISTEN": f"127.0.0.1:{self.http_port}"}
        e.update(env or {})
        super().__init__(db, smtp_url, env=e, name=name)
        for k in unset:
            self.env.pop(k, None)
        self.args = list(args)

    def start(self):
        import subprocess
        from conftest import OUTBOXD

        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([OUTBOXD, "run", *self.args], env=self.env, stdout=self.log,
                                     stderr=self.log)
        wait_for(lambda: self.get("/health")[0] == 200 or self.proc.poll() is not None,
                 timeout=10, what="HTTP server")
        assert self.proc.poll() is None, self.log_text()
        return self

    def get(self, path):
        """(status, body text) of GET path; (0, error) when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def ready(self):
        """(status, reason or "") of /health/ready."""
        code, body = self.get("/health/ready")
        if code == 0:
            return 0, body
        return code, json.loads(body).get("reason", "")

    def metrics(self):
        code, body = self.get("/metrics")
        assert code == 200, body
        return parse_metrics(body)


@pytest.fixture
def ops(migrated_db):
    """Callable (smtp_url, env=None, args=(), unset=(), db=None) -> started OpsOutboxd."""
    made = []

    def make(smtp_url, env=None, args=(), unset=(), db=None, name="outboxd"):
        d = OpsOutboxd(db or migrated_db, smtp_url, env=env, args=args, unset=unset, name=name)
        made.append(d)
        return d.start()

    yield make
    for d in made:
        d.cleanup()


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$')
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"\s*(,|$)')


def parse_labels(text):
    out, pos = {}, 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"bad label set {text!r}"
        assert m.group(1) not in out, f"duplicate label in {text!r}"
        out[m.group(1)] = m.group(2)
        pos = m.end()
    return out


def parse_value(v):
    if v in ("+Inf", "Inf"):
        return math.inf
    if v == "-Inf":
        return -math.inf
    if v == "NaN":
        return math.nan
    return float(v)


class Metrics:
    def __init__(self, families, samples):
        self.families = families  # name -> {"type", "help"}
        self.samples = samples    # list of (name, labels dict, value)

    def get(self, name, **labels):
        """The value of the one sample with exactly these labels (None if absent)."""
        for n, lab, v in self.samples:
            if n == name and lab == labels:
                return v
        return None


def parse_metrics(text):
    """Parses the Prometheus text format strictly: every line must parse, HELP and TYPE
    precede a family's samples and appear once, a family's samples are contiguous,
    counters end in _total, histograms have cumulative buckets ending in +Inf == _count."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families, samples, seen = {}, [], set()
    current = None
    for line in text.split("\n")[:-1]:
        assert line.strip() == line and line, f"blank or padded line {line!r}"
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, name, rest = line[2:6], line.split(" ")[2], line.split(" ", 3)[3]
            f = families.setdefault(name, {})
            assert kind.lower() not in f, f"second {kind} for {name}"
            assert name not in seen, f"{kind} for {name} after its samples"
            f[kind.lower()] = rest
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert "help" in f, f"TYPE before HELP for {name}"
            current = name
            continue
        assert not line.startswith("#"), f"unexpected comment {line!r}"
        m = SAMPLE_RE.match(line)
        assert m, f"unparsable sample {line!r}"
        name, labels, value = m.group(1), parse_labels(m.group(3) or ""), parse_value(m.group(4))
        base = name
        ftype = families.get(current, {}).get("type")
        if ftype == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                if name == current + suffix:
                    base = current
        assert base == current, f"sample {name} outside its family block ({current})"
        assert "type" in families[current], f"sample {name} before TYPE"
        seen.add(current)
        samples.append((name, labels, value))
    for name, f in families.items():
        assert "type" in f and "help" in f, name
        if f["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
        assert name in seen or f["type"] in ("counter", "gauge"), f"family {name} has no samples"
    for name, f in families.items():
        if f["type"] != "histogram":
            continue
        series = {}
        for n, lab, v in samples:
            if n == name + "_bucket":
                key = tuple(sorted((k, x) for k, x in lab.items() if k != "le"))
                series.setdefault(key, []).append((parse_value(lab["le"]), v))
        assert series, f"histogram {name} without buckets"
        for key, buckets in series.items():
            les = [le for le, _ in buckets]
            assert les == sorted(les) and les[-1] == math.inf, f"{name} buckets out of order"
            counts = [c for _, c in buckets]
            assert all(a <= b for a, b in zip(counts, counts[1:])), f"{name} buckets not cumulative"
            lab = dict(key)
            count = next(v for n, l2, v in samples if n == name + "_count" and l2 == lab)
            assert counts[-1] == count, f"{name} +Inf bucket {counts[-1]} != _count {count}"
            assert any(n == name + "_sum" and l2 == lab for n, l2, _ in samples), f"{name} lacks _sum"
    return Metrics(families, samples)


def wait_ready(d, code, contains="", timeout=20):
    def ok():
        c, reason = d.ready()
        return c == code and contains in reason
    wait_for(ok, timeout=timeout, interval=0.1, what=f"/health/ready {code} {contains!r} (last {d.ready()})")


def connections(server):
    """Number of TCP connections a FaultSmtpd has accepted."""
    return sum(1 for r in server.session_log() if r["dir"] == "E" and r["line"].startswith("connect"))


# ---------------------------------------------------------------------------------------
# /health, /health/ready, /metrics
# ---------------------------------------------------------------------------------------
def test_metrics_format_and_families(migrated_db, smtp_sink, ops):
    d = ops(smtp_sink.url)
    insert_messages(migrated_db, 3)
    wait_states(migrated_db, {"sent": 3}, timeout=20)
    wait_ready(d, 200)  # the queue figures have been read at least once
    code, body = d.get("/metrics")
    assert code == 200
    m = parse_metrics(body)
    for name, ftype in FAMILIES.items():
        assert name in m.families, f"missing family {name}"
        assert m.families[name]["type"] == ftype, name
    assert m.get("outboxd_up") == 1
    assert m.get("process_resident_memory_bytes") > 1e6
    assert m.get("process_open_fds") > 3
    code, body = d.get("/health")
    assert code == 200 and json.loads(body)["status"] == "ok"
    wait_ready(d, 200)
    assert json.loads(d.get("/health/ready")[1]) == {"status": "ready"}


def test_metrics_move_by_exactly_n(migrated_db, smtp_sink, ops):
    d = ops(smtp_sink.url)
    wait_ready(d, 200)
    before = d.metrics()
    sent0 = before.get("outboxd_messages_total", outcome="sent")
    ok0 = before.get("outboxd_smtp_replies_total", **{"class": "2xx"})
    lat0 = before.get("outboxd_delivery_latency_seconds_count")
    n = 25
    insert_messages(migrated_db, n, per_txn=5)
    wait_states(migrated_db, {"sent": n}, timeout=30)
    after = d.metrics()
    assert after.get("outboxd_messages_total", outcome="sent") - sent0 == n
    assert after.get("outboxd_smtp_replies_total", **{"class": "2xx"}) - ok0 == n
    assert after.get("outboxd_delivery_latency_seconds_count") - lat0 == n
    assert after.get("outboxd_smtp_send_duration_seconds_count") >= n
    assert after.get("outboxd_claim_batch_size_sum") >= n
    assert after.get("outboxd_database_up") == 1
    assert after.get("outboxd_listener_up") == 1
    assert after.get("outboxd_breaker_state", sink="smtp") == 0
    # the queue gauges follow the database after the next statistics read
    wait_for(lambda: d.metrics().get("outboxd_queue_depth", state="sent") == n, timeout=STATS_WAIT,
             what="queue_depth{sent} == n")
    assert d.metrics().get("outboxd_queue_depth", state="pending") == 0
    # scheduled rows are pending but not due; a due row left behind shows its age
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text, not_before) "
                    "SELECT ARRAY['later@example.com'], 'later', 'x', now() + interval '1 hour' "
                    "FROM generate_series(1, 4)")
    wait_for(lambda: d.metrics().get("outboxd_queue_depth", state="pending") == 4, timeout=STATS_WAIT,
             what="queue_depth{pending} == 4")
    m = d.metrics()
    assert m.get("outboxd_oldest_pending_age_seconds") == 0
    assert m.get("outboxd_table_dead_tuples", table="messages") is not None
    assert m.get("outboxd_oldest_xact_age_seconds") is not None


def test_ready_follows_postgres(cluster, migrated_db, smtp_sink, ops):
    d = ops(smtp_sink.url, env={"OUTBOXD_DISPATCHER_RECONNECT_MAX": "200ms"})
    wait_ready(d, 200)
    try:
        cluster.stop("fast")
        wait_ready(d, 503, "database not connected", timeout=15)
        assert d.get("/health")[0] == 200  # the process is alive and its loop answers
        wait_for(lambda: d.metrics().get("outboxd_database_up") == 0, timeout=5, what="database_up 0")
    finally:
        cluster.start()
    wait_ready(d, 200, timeout=20)
    assert d.metrics().get("outboxd_database_up") == 1
    insert_messages(migrated_db, 2)
    wait_states(migrated_db, {"sent": 2}, timeout=20)


def test_ready_says_migrations_behind(migrated_db, smtp_sink, ops):
    d = ops(smtp_sink.url)
    wait_ready(d, 200)
    saved = migrated_db.sql("SELECT row_to_json(m) FROM outbox.schema_migrations m "
                            "ORDER BY version DESC LIMIT 1")
    migrated_db.sql("DELETE FROM outbox.schema_migrations "
                    "WHERE version = (SELECT max(version) FROM outbox.schema_migrations)")
    try:
        wait_ready(d, 503, "migrations not current", timeout=STATS_WAIT)
    finally:
        migrated_db.sql("INSERT INTO outbox.schema_migrations SELECT * FROM "
                        f"json_populate_record(NULL::outbox.schema_migrations, '{saved}'::json)")
    wait_ready(d, 200, timeout=STATS_WAIT)


# ---------------------------------------------------------------------------------------
# circuit breaker and rate limit
# ---------------------------------------------------------------------------------------
def test_breaker_bounds_a_30s_relay_outage(migrated_db, fault_smtpd, ops):
    failures, open_for, pool, outage = 3, 2.0, 4, 30.0
    fault_smtpd.set_control(greeting=421)
    insert_messages(migrated_db, 20)
    d = ops(fault_smtpd.url, env={"OUTBOXD_SMTP_BREAKER_FAILURES": str(failures),
                                  "OUTBOXD_SMTP_BREAKER_OPEN_FOR": f"{int(open_for * 1000)}ms",
                                  "OUTBOXD_SMTP_POOL_SIZE": str(pool)})
    t0 = time.time()
    wait_ready(d, 503, "smtp circuit breaker open", timeout=10)
    samples = []
    while time.time() - t0 < outage:
        samples.append(d.ready())
        time.sleep(0.25)
    conns = connections(fault_smtpd)
    # threshold failures (some in parallel), then one probe per open period at most
    bound = failures + pool + int(outage / open_for) + 2
    times = [round(r["t"] - t0, 2) for r in fault_smtpd.session_log()
             if r["dir"] == "E" and r["line"].startswith("connect")]
    assert conns <= bound, f"{conns} connections during a {outage}s outage (bound {bound}), at {times}"
    assert conns >= failures
    open_share = sum(1 for c, r in samples if c == 503 and "breaker" in r) / len(samples)
    assert open_share > 0.8, samples
    m = d.metrics()
    assert m.get("outboxd_breaker_state", sink="smtp") == 2
    assert m.get("outboxd_breaker_transitions_total", sink="smtp", to="open") >= 1
    # nothing was delivered, nothing was given up, attempts were not burnt on the rows
    st = states(migrated_db)
    assert st.get("pending", 0) + st.get("sending", 0) == 20, st
    burnt = int(migrated_db.scalar("SELECT coalesce(sum(attempts), 0) FROM outbox.messages"))
    assert burnt <= conns, f"{burnt} attempts charged for {conns} connections"
    assert int(migrated_db.scalar("SELECT max(attempts) FROM outbox.messages")) <= 3
    # the relay returns: a probe succeeds, the breaker closes and everything goes out
    fault_smtpd.clear_control()
    wait_states(migrated_db, {"sent": 20}, timeout=45, interval=0.25)
    wait_ready(d, 200, timeout=5)
    m = d.metrics()
    assert m.get("outboxd_breaker_state", sink="smtp") == 0
    assert m.get("outboxd_breaker_transitions_total", sink="smtp", to="closed") >= 1
    assert fault_smtpd.count() == 20
    assert d.stop() == 0


def test_breaker_with_relay_stopped_then_back(migrated_db, smtp_sink, ops):
    d = ops(smtp_sink.url, env={"OUTBOXD_SMTP_BREAKER_FAILURES": "2",
                                "OUTBOXD_SMTP_BREAKER_OPEN_FOR": "1s"})
    wait_ready(d, 200)
    smtp_sink.stop()
    insert_messages(migrated_db, 5)
    wait_ready(d, 503, "smtp circuit breaker open", timeout=15)
    assert d.get("/health")[0] == 200
    smtp_sink.start()
    wait_states(migrated_db, {"sent": 5}, timeout=30, interval=0.25)
    wait_ready(d, 200, timeout=5)
    assert int(migrated_db.scalar("SELECT max(attempts) FROM outbox.messages")) <= 3


def test_rate_limit_spaces_messages(migrated_db, smtp_sink, ops):
    ops(smtp_sink.url, env={"OUTBOXD_SMTP_RATE_LIMIT": "20"})
    insert_messages(migrated_db, 60, per_txn=60)
    t0 = time.time()
    wait_states(migrated_db, {"sent": 60}, timeout=30, interval=0.05)
    took = time.time() - t0
    assert took >= 2.5, f"60 messages at 20/s took {took:.2f}s"
    assert took < 10, took


# ---------------------------------------------------------------------------------------
# logs and secrets
# ---------------------------------------------------------------------------------------
def check_log_lines(text):
    """Every line one JSON object with a string ts, level and msg; returns them parsed."""
    lines = []
    for raw in text.splitlines():
        try:
            o = json.loads(raw)
        except ValueError:
            raise AssertionError(f"log line is not JSON: {raw!r}")
        assert isinstance(o, dict), raw
        for k in ("ts", "level", "msg"):
            assert isinstance(o.get(k), str), f"{k} missing or not a string: {raw}"
        assert o["level"] in ("debug", "info", "warn", "error"), raw
        lines.append(o)
    return lines


def test_logs_are_json_with_ids_and_no_secrets(cluster, migrated_db, fault_smtpd_factory, ops, tmp_path):
    smtp_secret, db_secret = "Smtp-S3cret-xyzzy", "Db-S3cret-plugh"
    server = fault_smtpd_factory(auth=f"mailer:{smtp_secret}")
    pw = tmp_path / "smtp-password"
    pw.write_text(smtp_secret + "\n")
    # trust authentication ignores the password, so it can be anything and still be checked
    url = migrated_db.url.replace("postgres@", f"postgres:{db_secret}@")
    migrated_db.sql("INSERT INTO outbox.messages (recipients, subject, body_text) VALUES "
                    "(ARRAY['ok+a@example.com'], 'fine', 'body-marker-1'), "
                    "(ARRAY['perm+b@example.com'], 'refused', 'body-marker-2'), "
                    "(ARRAY['temp1+c@example.com'], 'later', 'body-marker-3')")
    d = ops(server.url, env={"OUTBOXD_DATABASE_URL": url, "OUTBOXD_SMTP_USERNAME": "mailer",
                             "OUTBOXD_SMTP_PASSWORD_FILE": str(pw), "OUTBOXD_LOG_LEVEL": "debug"})
    wait_states(migrated_db, {"sent": 2, "failed": 1}, timeout=20)
    wait_ready(d, 200)
    metrics_text = d.get("/metrics")[1]
    # a database outage makes the dispatcher log its connection errors
    cluster.restart("fast")
    wait_ready(d, 200, timeout=20)
    assert d.stop() == 0
    text = d.log_text()
    for secret in (smtp_secret, db_secret):
        assert secret not in text
        assert secret not in metrics_text
    assert "body-marker" not in text
    lines = check_log_lines(text)
    assert any(o["level"] == "debug" for o in lines)
    failed = [o for o in lines if o["msg"] == "message failed"]
    retry = [o for o in lines if o["msg"] == "message retry"]
    assert failed and retry, [o["msg"] for o in lines]
    for o in failed + retry:
        assert isinstance(o.get("id"), int), o  # outbox.messages.id
        assert isinstance(o.get("attempt"), int), o
        assert o.get("smtp") in (451, 550), o
    assert failed[0]["smtp"] == 550


def test_log_level_warn_hides_info(migrated_db, smtp_sink, ops):
    d = ops(smtp_sink.url, env={"OUTBOXD_LOG_LEVEL": "warn"})
    insert_messages(migrated_db, 2)
    wait_states(migrated_db, {"sent": 2}, timeout=20)
    assert d.stop() == 0
    assert all(o["level"] in ("warn", "error") for o in check_log_lines(d.log_text()))


# ---------------------------------------------------------------------------------------
# SIGHUP
# ---------------------------------------------------------------------------------------
def test_sighup_bad_file_keeps_the_running_configuration(migrated_db, smtp_sink, ops, tmp_path):
    cfg = tmp_path / "outboxd.yaml"
    cfg.write_text("log:\n  level: info\ndispatcher:\n  batch_size: 50\n")
    d = ops(smtp_sink.url, args=["--config", str(cfg)], unset=["OUTBOXD_LOG_LEVEL"])
    insert_messages(migrated_db, 2)
    wait_states(migrated_db, {"sent": 2}, timeout=20)
    cfg.write_text("log:\n  level: chatty\ndispatcher:\n  batch_size: 0\n  no_such_key: 1\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reload refused" in d.log_text(), timeout=5, what="reload refused")
    wait_ready(d, 200)
    assert d.proc.poll() is None
    insert_messages(migrated_db, 3, start=2)
    wait_states(migrated_db, {"sent": 5}, timeout=20)
    # still at info: no debug lines
    assert d.stop() == 0
    lines = check_log_lines(d.log_text())
    assert not any(o["level"] == "debug" for o in lines)
    refused = [o for o in lines if "reload refused" in o["msg"]]
    assert refused and refused[0]["level"] == "error"


def test_sighup_good_file_changes_log_level(migrated_db, smtp_sink, ops, tmp_path):
    cfg = tmp_path / "outboxd.yaml"
    cfg.write_text("log:\n  level: info\n")
    d = ops(smtp_sink.url, args=["--config", str(cfg)], unset=["OUTBOXD_LOG_LEVEL"])
    insert_messages(migrated_db, 2)
    wait_states(migrated_db, {"sent": 2}, timeout=20)
    assert '"level":"debug"' not in d.log_text()
    cfg.write_text("log:\n  level: debug\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log_text(), timeout=5, what="reloaded")
    insert_messages(migrated_db, 2, start=2)
    wait_states(migrated_db, {"sent": 4}, timeout=20)
    wait_for(lambda: '"level":"debug"' in d.log_text(), timeout=5, what="debug lines")
    assert d.stop() == 0
    check_log_lines(d.log_text())
