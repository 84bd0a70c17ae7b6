"""Disaster-recovery drill: point-in-time restore of the outbox under traffic.

A throwaway PostgreSQL with WAL archiving, a base backup, outboxd delivering while a producer
inserts messages, a named restore point recorded mid-traffic, then the primary's data directory
destroyed. The base backup is restored to the restore point from the archive and outboxd is
started on it. Passes when every message committed before the target is back and ends `sent`,
nothing stays `sending`, and whatever goes out again carries its row's Message-ID. Prints RPO
(rows committed before the target that the restore lost) and RTO (restore start to first send).
Exit 0 pass, 1 fail, 2 cannot run.

  dr_drill.py [--rate R] [--before S] [--after S] [--without-archive] [--keep]
"""
import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import common as c
import drill

KAFKA_SH = os.path.join(c.ROOT, "ops", "scripts", "kafka.sh")
BIN = os.environ.get("PG_BINDIR") or sorted(
    (os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql")),
    key=lambda p: int(os.path.basename(os.path.dirname(p))))[-1]


def as_postgres(argv, **kw):
    """PostgreSQL's tools refuse root: run them as the cluster's owner."""
    if os.getuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


class Restore(drill.Drill):
    def __init__(self, tmp, name, kafka):
        super().__init__(tmp, name)
        self.kafka, self.kafka_dir = kafka, None
        self.events = {}  # message row id -> the event_id committed with it
        self.data = os.path.join(self.pgdir, "data")
        self.archive = os.path.join(tmp, "archive")
        self.backup = os.path.join(tmp, "base")
        self.lock = threading.Lock()
        self.ids, self.stop_producing = [], threading.Event()

    def pg(self, cmd, *extra):
        r = subprocess.run([drill.PG_LOCAL, cmd, self.pgdir, *extra], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            lines = r.stderr.strip().splitlines()
            tail = "\n".join([ln for ln in lines if "FATAL" in ln] or lines[-4:])
            raise RuntimeError(f"pg-local.sh {cmd}:\n{tail}")
        return r.stdout

    def setup(self):
        out = self.pg("start")
        env = dict(w.split("=", 1) for w in out.split() if "=" in w)
        self.port = env["PGPORT"]
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        for d in (self.archive, self.backup):
            os.makedirs(d)
            if os.getuid() == 0:
                shutil.chown(d, "postgres", "postgres")
        with open(os.path.join(self.data, "postgresql.conf"), "a", encoding="utf-8") as f:
            f.write(f"archive_mode = on\narchive_command = 'cp %p {self.archive}/%f'\n"
                    "wal_level = replica\nfsync = on\n")
        self.pg("restart")
        m = subprocess.run([c.outboxd_bin(), "migrate", "--database-url", self.dsn], capture_output=True,
                           text=True, timeout=120)
        if m.returncode != 0:
            raise RuntimeError(f"migrate: {m.stderr}")
        r = as_postgres([os.path.join(BIN, "pg_basebackup"), "-h", "127.0.0.1", "-p", self.port, "-U", "postgres",
                         "-D", self.backup, "-X", "fetch", "-c", "fast"])
        if r.returncode != 0:
            raise RuntimeError(f"pg_basebackup: {r.stderr}")
        # a relay across a network: some messages are in flight at the restore point, so the
        # restore has sends to repeat
        self.start_relay("--delay-ms", "50", "--pipelining")
        if self.kafka:
            kdir = os.path.join(self.tmp, "kafka")
            r = subprocess.run(["bash", KAFKA_SH, "up", "--dir", kdir, "--port", str(c.free_port()),
                                "--partitions", "1"], capture_output=True, text=True, timeout=180)
            if r.returncode != 0:
                raise RuntimeError(f"kafka.sh up: {r.stderr.strip().splitlines()[-1:]}")
            self.kafka_dir = kdir
            self.bootstrap = r.stdout.split("KAFKA_BOOTSTRAP=", 1)[1].split()[0].strip("'\"")
            self.extra_env = {"OUTBOXD_KAFKA_BROKERS": self.bootstrap, "OUTBOXD_KAFKA_TOPIC_PREFIX": "dr."}

    def start_outboxd(self, name):
        p, took = super().start_outboxd(c.outboxd_bin(), name)
        if took is None:
            raise RuntimeError(f"{name}: not ready")
        return p

    def produce(self, rate):
        import psycopg2
        conn = psycopg2.connect(self.dsn)
        cur = conn.cursor()
        t0, i = time.monotonic(), 0
        try:
            while not self.stop_producing.is_set():
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                with self.lock:
                    cur.execute("INSERT INTO outbox.messages (sender, recipients, subject, body_text) "
                                "VALUES ('shop@example.com', ARRAY[%s], %s, 'dr drill') RETURNING id",
                                (f"user{i}@example.com", f"dr {i}"))
                    row_id = cur.fetchone()[0]
                    if self.kafka:  # an event in the same transaction, as an application would
                        cur.execute("INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) "
                                    "VALUES ('order', %s, 'OrderPaid', jsonb_build_object('seq', %s)) "
                                    "RETURNING event_id", (f"k{i}", i))
                        self.events[row_id] = str(cur.fetchone()[0])
                    conn.commit()
                    self.ids.append(row_id)
                i += 1
        except psycopg2.Error:
            pass  # the primary went away: what was committed is in self.ids
        finally:
            try:
                conn.close()
            except psycopg2.Error:
                pass

    def mark_target(self):
        """A named restore point between two producer commits: rows before it must come back."""
        import psycopg2
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with self.lock:
            conn.cursor().execute("SELECT pg_create_restore_point('dr_drill')")
            before = list(self.ids)
        conn.cursor().execute("SELECT pg_switch_wal()")
        conn.close()
        return before

    def destroy_primary(self):
        self.pg("stop", "immediate")
        shutil.rmtree(self.data)

    def restore(self):
        shutil.copytree(self.backup, self.data, symlinks=True)
        if os.getuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", self.data], check=True)
        os.chmod(self.data, 0o700)
        with open(os.path.join(self.data, "postgresql.conf"), "a", encoding="utf-8") as f:
            f.write(f"restore_command = 'cp {self.archive}/%f %p'\nrecovery_target_name = 'dr_drill'\n"
                    "recovery_target_action = 'promote'\narchive_mode = off\n")
        open(os.path.join(self.data, "recovery.signal"), "w").close()
        if os.getuid() == 0:
            shutil.chown(os.path.join(self.data, "recovery.signal"), "postgres", "postgres")
        self.pg("start", self.port)  # the same address the dispatcher was given
        import psycopg2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not os.path.exists(os.path.join(self.data, "postmaster.pid")):
                raise RuntimeError("the restored cluster stopped during recovery (server.log)")
            try:
                conn = psycopg2.connect(self.dsn)
                cur = conn.cursor()
                cur.execute("SELECT pg_is_in_recovery()")
                recovering = cur.fetchone()[0]
                conn.close()
                if not recovering:
                    return
            except psycopg2.Error:
                pass
            time.sleep(0.2)
        raise RuntimeError("the restored cluster did not leave recovery within 60 s")

    def topic_event_ids(self):
        """event ids on the topic, with repeats (the id header of each record)."""
        r = subprocess.run(["kcat", "-C", "-b", self.bootstrap, "-t", "dr.order", "-o", "beginning", "-e", "-J",
                            "-q"], capture_output=True, text=True, timeout=60)
        ids = []
        for line in r.stdout.splitlines():
            if line.strip():
                h = json.loads(line).get("headers") or []
                ids += [v for k, v in zip(h[0::2], h[1::2]) if k == "id"]
        return ids

    def stop(self):
        if self.kafka_dir:
            subprocess.run(["bash", KAFKA_SH, "destroy", "--dir", self.kafka_dir], capture_output=True, timeout=120)
            self.kafka_dir = None
        super().stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=40.0, help="messages per second from the producer")
    ap.add_argument("--before", type=float, default=4.0, help="seconds of traffic before the restore point")
    ap.add_argument("--after", type=float, default=3.0, help="seconds of traffic after it, before the loss")
    ap.add_argument("--without-archive", action="store_true",
                    help="lose the WAL archive with the primary: what the drill reports when backups alone are kept")
    ap.add_argument("--no-kafka", action="store_true", help="without the Kafka mirror (no broker here)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    import psycopg2

    tmp = tempfile.mkdtemp(prefix="outboxd-dr-")
    os.chmod(tmp, 0o755)  # the cluster runs as postgres when the drill runs as root
    d = Restore(tmp, "dr-drill", kafka=not args.no_kafka)
    with d:
        try:
            d.setup()
            od = d.start_outboxd("primary")
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            d.log(f"cannot run: {e}")
            d.stop()
            return 2
        producer = threading.Thread(target=d.produce, args=(args.rate,), daemon=True)
        producer.start()
        time.sleep(args.before)  # traffic paces the drill: rows before the target
        before = d.mark_target()
        time.sleep(args.after)  # rows after the target, some sent, that the restore will not have
        d.destroy_primary()
        if args.without_archive:
            shutil.rmtree(d.archive)
            os.makedirs(d.archive)
        lost_at = time.time()
        d.stop_producing.set()
        producer.join(30)
        committed = list(d.ids)
        c.stop_procs([od], 30)  # its pod is gone with the database; a new one starts on the restore
        delivered_before = {mid for t, mid in drill.relay_deliveries(d.relay_log) if t <= lost_at}
        d.log(f"restore point after {len(before)} committed messages; {len(committed)} committed when the "
            f"primary's data directory was destroyed; {len(delivered_before)} delivered by then")

        t_restore = time.time()
        try:
            d.restore()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            d.failures.append(f"restore: {e}")
            return d.verdict(args.keep)
        restored_s = time.time() - t_restore
        d.start_outboxd("restored")

        conn = psycopg2.connect(d.dsn)
        conn.autocommit = True
        cur = conn.cursor()
        # a new message after the restore: service is back when it goes out, even when nothing
        # from before the target was left to resend
        cur.execute("INSERT INTO outbox.messages (sender, recipients, subject, body_text) "
                    "VALUES ('shop@example.com', ARRAY['probe@example.com'], 'dr probe', 'dr drill') "
                    "RETURNING message_id")
        probe = cur.fetchone()[0].strip("<>")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cur.execute("SELECT count(*) FROM outbox.messages WHERE state IN ('pending', 'sending')")
            if cur.fetchone()[0] == 0:
                break
            time.sleep(0.2)
        cur.execute("SELECT id, message_id, state FROM outbox.messages")
        rows = {r[0]: (r[1].strip("<>"), r[2]) for r in cur.fetchall()}
        conn.close()
        time.sleep(0.5)  # the relay writes its log every 0.2 s
        after = [(t, mid) for t, mid in drill.relay_deliveries(d.relay_log) if t > t_restore]
        rto = after[0][0] - t_restore if after else None

        missing = [i for i in before if i not in rows]
        unsent = [i for i in before if i in rows and rows[i][1] != "sent"]
        stuck = [i for i, (_, s) in rows.items() if s == "sending"]
        known = {mid for mid, _ in rows.values()}
        foreign = [mid for _, mid in after if mid not in known]
        resent = {mid for _, mid in after} & delivered_before
        beyond = [i for i in committed if i not in rows]
        d.log(f"restored to the target in {restored_s:.1f} s; first send {rto:.1f} s after the restore began"
            if rto is not None else "no send after the restore")
        d.log(f"RPO: {len(missing)} rows committed before the target lost (archived WAL: 0 expected); "
            f"{len(beyond)} rows committed after the target are not in the restore (the target's choice)")
        d.log(f"RTO: {rto:.1f} s from restore start to first send" if rto is not None else "RTO: no send")
        d.log(f"re-sent after the restore with the same Message-ID: {len(resent)}; rows left sending: {len(stuck)}")
        if d.kafka:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                conn = psycopg2.connect(d.dsn)
                cur = conn.cursor()
                cur.execute("SELECT count(*) FROM outbox.events WHERE state <> 'published'")
                left = cur.fetchone()[0]
                cur.execute("SELECT event_id::text FROM outbox.events WHERE aggregate_type = 'order'")
                restored_events = {r[0] for r in cur.fetchall()}
                conn.close()
                if left == 0:
                    break
                time.sleep(0.3)
            on_topic = collections.Counter(d.topic_event_ids())
            events_before = {d.events[i] for i in before if i in d.events}
            events_lost = events_before - set(on_topic)
            republished = sum(1 for e in restored_events if on_topic[e] > 1)
            d.log(f"events: {len(events_before)} committed before the target, {len(events_lost)} missing from "
                  f"the topic, {republished} published again with the same event id, {left} left unpublished")
            d.expect(not events_lost, f"{len(events_lost)} events committed before the target never published")
            d.expect(left == 0, f"{left} events not published after the restore")
            d.expect(set(on_topic) <= restored_events | set(d.events.values()),
                     "a record on the topic carries an event id no row has")
        d.expect(not missing, f"{len(missing)} rows committed before the target are missing")
        d.expect(not unsent, f"{len(unsent)} rows committed before the target did not end sent")
        d.expect(not stuck, f"{len(stuck)} rows left sending")
        d.expect(not foreign, f"{len(foreign)} deliveries after the restore carry a Message-ID no row has")
        d.expect(probe in {mid for _, mid in after}, "a message inserted after the restore was not sent")
        d.expect(before, "no message was committed before the target: the drill proved nothing")
    return d.verdict(args.keep)


if __name__ == "__main__":
    sys.exit(main())
