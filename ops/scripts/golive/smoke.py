"""The smoke checks behind ops/scripts/smoke-tests.sh (settings from the environment)."""
import argparse
import json
import sys
import time
import uuid

import common as c


class Smoke:
    def __init__(self):
        self.rows = []       # (check, PASS|FAIL|SKIP, detail)
        self.base = c.setting("HEALTH_URL").rstrip("/")
        self.timeout = float(c.setting("SMOKE_TIMEOUT", "30") or 30)
        self.metrics_text = ""

    def add(self, check, ok, detail):
        result = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        self.rows.append((check, result, c.redact(detail)))

    def http(self, check, path):
        """A pod that just started answers 503 until it has read the schema: retried within
        the smoke timeout."""
        t0 = time.monotonic()
        while True:
            status, body = c.http_get(self.base + path)
            if status == 200 or time.monotonic() - t0 > self.timeout:
                break
            time.sleep(0.5)
        why = "" if status == 200 else f": {body.strip()[:160]}"
        self.add(check, status == 200, f"GET {path} -> {status or 'no answer'} after {time.monotonic() - t0:.1f} s{why}")
        return status, body

    def metrics(self):
        """Labelled families (dead tuples per table) appear with the first figures read from
        the database, a few seconds after start: retried within the smoke timeout."""
        want = c.alert_metric_names()
        t0 = time.monotonic()
        while True:
            status, body = c.http_get(self.base + "/metrics")
            families = c.parse_metrics(body)[1] if status == 200 else set()
            missing = [n for n in want if n not in families]
            if (status == 200 and not missing) or time.monotonic() - t0 > self.timeout:
                break
            time.sleep(0.5)
        if status != 200:
            self.add("metrics", False, f"GET /metrics -> {status or 'no answer'}")
            return
        self.metrics_text = body
        self.add("metrics", not missing,
                 f"{len(want) - len(missing)}/{len(want)} series the alerts use"
                 + (f"; missing: {', '.join(missing)}" if missing else ""))

    def migrations(self):
        rc, out, err = c.run_outboxd("migrate", "--status")
        pending = [ln.strip() for ln in out.splitlines() if ln.startswith("pending:")]
        ok = rc == 0 and pending == ["pending: none"]
        if ok:
            detail = "nothing pending"
        elif rc != 0:
            detail = f"migrate --status exit {rc}: {(err or out).strip().splitlines()[-1:] or ''}"
        else:
            after = out.split("pending:", 1)[1].split()
            detail = "pending: " + " ".join(w for w in after if w[:1].isdigit())
        self.add("migrations", ok, detail)

    def mirror_on(self):
        mode = c.setting("KAFKA_MIRROR", "auto").lower()
        if mode in ("on", "1", "true", "yes"):
            return True
        if mode in ("off", "0", "false", "no"):
            return False
        samples, _ = c.parse_metrics(self.metrics_text)
        return samples.get("outboxd_kafka_mirror_enabled", 0) == 1

    def email(self, conn, key):
        rcpt = c.setting("SMOKE_RECIPIENT")
        if not rcpt:
            self.add("email", False, "SMOKE_RECIPIENT is not set")
            return
        with conn.cursor() as cur:
            cur.execute("INSERT INTO outbox.messages (recipients, subject, body_text, headers, idempotency_key) "
                        "VALUES (ARRAY[%s], %s, %s, jsonb_build_object('X-Outboxd-Smoke', %s::text), %s) "
                        "RETURNING id, message_id",
                        (rcpt, f"outboxd smoke test {key}",
                         f"Smoke test of outboxd ({c.setting('GOLIVE_ENV')}); no action needed.\n", key, key))
            mid, message_id = cur.fetchone()
        t0 = time.monotonic()
        state = None
        while time.monotonic() - t0 < self.timeout:
            with conn.cursor() as cur:
                cur.execute("SELECT state, last_error FROM outbox.message_status WHERE id = %s", (mid,))
                state, err = cur.fetchone()
            if state in ("sent", "failed", "dead", "cancelled"):
                break
            time.sleep(0.1)
        took = time.monotonic() - t0
        if state == "sent":
            self.add("email", True, f"sent in {took:.2f} s, Message-ID {message_id}, key {key}")
            return
        if state in ("failed", "dead"):
            self.add("email", False, f"{state} after {took:.1f} s: {err or ''} (Message-ID {message_id})")
            return
        self.add("email", False, f"not sent within {self.timeout:g} s (state {state}, Message-ID {message_id}); "
                 + self.cancel(conn, mid))

    def cancel(self, conn, mid):
        """Cancels the smoke email; a row being sent is waited for (bounded), never left pending."""
        deadline = time.monotonic() + 30
        while True:
            with conn.cursor() as cur:
                cur.execute("SELECT outbox.cancel(%s)", (mid,))
                if cur.fetchone()[0]:
                    return "cancelled"
                cur.execute("SELECT state FROM outbox.message_status WHERE id = %s", (mid,))
                state = cur.fetchone()[0]
            if state != "sending" and state != "pending":
                return f"ended {state}"
            if time.monotonic() > deadline:
                return f"still {state}: cancel it with SELECT outbox.cancel({mid})"
            time.sleep(0.2)

    def event(self, conn, key):
        if not self.mirror_on():
            self.add("kafka", None, "mirror off")
            return
        with conn.cursor() as cur:
            cur.execute("INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload, headers) "
                        "VALUES (%s, %s, 'outboxd.smoke', jsonb_build_object('smoke', %s::text), "
                        "jsonb_build_object('X-Outboxd-Smoke', %s::text)) RETURNING id, event_id",
                        (c.setting("SMOKE_AGGREGATE_TYPE", "outboxd_smoke"), key, key, key))
            eid, event_id = cur.fetchone()
        t0 = time.monotonic()
        row = None
        while time.monotonic() - t0 < self.timeout:
            with conn.cursor() as cur:
                cur.execute("SELECT state, kafka_partition, kafka_offset, last_error FROM outbox.events "
                            "WHERE id = %s", (eid,))
                row = cur.fetchone()
            if row[0] != "pending":
                break
            time.sleep(0.1)
        if row and row[0] == "published":
            self.add("kafka", True, f"published in {time.monotonic() - t0:.2f} s, partition {row[1]} "
                                    f"offset {row[2]}, event {event_id}")
        else:
            # events cannot be cancelled: a stalled mirror publishes it once it recovers
            self.add("kafka", False, f"event {event_id} {row[0] if row else '?'} after {self.timeout:g} s"
                                     f"{': ' + row[3] if row and row[3] else ''}"
                                     f"{' (left pending: the mirror publishes it when it recovers)' if row and row[0] == 'pending' else ''}")

    def status(self):
        rc, out, err = c.run_outboxd("status")
        last = out.strip().splitlines()[-1:] or [err.strip()]
        self.add("status", rc == 0 and last == ["healthy"], f"outboxd status exit {rc}: {last[0][:200]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="also write the results as JSON to this file")
    a = ap.parse_args()
    s = Smoke()
    env = c.setting("GOLIVE_ENV", "?")
    key = f"smoke-{env}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    s.http("health", "/health")
    s.http("ready", "/health/ready")
    s.metrics()
    s.migrations()
    conn = None
    try:
        conn = c.connect()
    except Exception as e:  # psycopg2.Error and OSError alike: reported, not raised
        s.add("email", False, f"cannot connect to {c.safe_url(c.database_dsn())}: {e}")
    if conn is not None:
        try:
            s.email(conn, key)
            s.event(conn, key)
        except Exception as e:
            s.add("email" if not any(r[0] == "email" for r in s.rows) else "kafka", False, f"{type(e).__name__}: {e}")
        finally:
            conn.close()
    s.status()
    failed = [r[0] for r in s.rows if r[1] == "FAIL"]
    c.print_table(f"outboxd smoke tests: {env} (outboxd {s.base}, database {c.safe_url(c.database_dsn())})",
                  s.rows)
    n = {k: sum(1 for r in s.rows if r[1] == k) for k in ("PASS", "FAIL", "SKIP")}
    verdict = "FAIL: " + ", ".join(failed) if failed else "PASS"
    print(f"smoke: {verdict} ({n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": env, "key": key, "passed": not failed, "failed": failed,
                       "checks": [{"check": r[0], "result": r[1], "detail": r[2]} for r in s.rows]}, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
