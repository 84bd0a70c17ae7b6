"""Rollback drill: the previous release's binary against the current schema, under traffic.

Builds the release named in ops/PREVIOUS_RELEASE (cached under build/prev-<commit>), migrates a
throwaway PostgreSQL to the current schema, runs the current binary while a producer inserts
messages, swaps to the previous binary mid-traffic the way `kubectl rollout undo` does (SIGTERM,
then the old one starts), then rolls forward. Passes when no committed message is lost or left
`sending`, the previous binary is ready (HTTP 200 on /health/ready) on the newer schema, and
every delivery carries its row's Message-ID. Exit 0 pass, 1 fail, 2 cannot run.

  rollback_drill.py [--messages N] [--rate R] [--previous COMMIT] [--keep]
"""
import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import common as c
import drill


def log(msg):
    print(f"rollback-drill: {msg}", flush=True)


def previous_commit(arg):
    if arg:
        return arg
    with open(os.path.join(c.ROOT, "ops", "PREVIOUS_RELEASE"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                return line
    raise SystemExit("rollback-drill: ops/PREVIOUS_RELEASE names no commit")


def build_previous(commit):
    """The previous release built from its own sources; kept per commit so reruns are quick."""
    r = subprocess.run(["git", "-C", c.ROOT, "rev-parse", "--verify", "--quiet", commit + "^{commit}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        log(f"the previous release {commit} is not in this clone's history (a shallow clone? "
            "fetch it or set ops/PREVIOUS_RELEASE)")
        sys.exit(2)
    full = r.stdout.strip()
    dest = os.path.join(c.ROOT, "build", f"prev-{full[:12]}")
    binary = os.path.join(dest, "build", "outboxd")
    if os.access(binary, os.X_OK):
        return binary, full, 0.0
    t0 = time.monotonic()
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    archive = subprocess.Popen(["git", "-C", c.ROOT, "archive", full], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", tmp], stdin=archive.stdout, check=True)
    archive.wait()
    b = subprocess.run(["make", "-C", tmp, "-j2", "all"], capture_output=True, text=True, timeout=900)
    if b.returncode != 0:
        log(f"the previous release {full[:12]} does not build:\n{b.stdout[-2000:]}{b.stderr[-2000:]}")
        sys.exit(2)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return binary, full, time.monotonic() - t0


class Rollback(drill.Drill):
    def start_stack(self):
        out = subprocess.run([drill.PG_LOCAL, "start", self.pgdir], check=True, capture_output=True,
                             text=True).stdout
        env = dict(w.split("=", 1) for w in out.split() if "=" in w)
        self.dsn = f"postgresql://postgres@127.0.0.1:{env['PGPORT']}/postgres"
        m = subprocess.run([c.outboxd_bin(), "migrate", "--database-url", self.dsn], capture_output=True,
                           text=True, timeout=120)
        if m.returncode != 0:
            raise SystemExit(f"rollback-drill: migrate failed: {m.stderr}")
        self.start_relay()

    def stop_outboxd(self, p, name):
        """SIGTERM as Kubernetes sends it; the drain must end by itself."""
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(45)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            self.failures.append(f"{name}: did not exit within 45 s of SIGTERM")
            return None
        if rc != 0:
            self.failures.append(f"{name}: exited {rc} after SIGTERM")
        return time.monotonic() - t0

    def produce(self, conn, n, rate, ids):
        cur = conn.cursor()
        t0 = time.monotonic()
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            cur.execute("INSERT INTO outbox.messages (sender, recipients, subject, body_text) "
                        "VALUES ('shop@example.com', ARRAY[%s], %s, 'rollback drill') RETURNING id",
                        (f"user{i}@example.com", f"drill {i}"))
            ids.append(cur.fetchone()[0])
            conn.commit()



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=600)
    ap.add_argument("--rate", type=float, default=40.0, help="messages per second from the producer")
    ap.add_argument("--previous", help="commit of the previous release (default: ops/PREVIOUS_RELEASE)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    import psycopg2

    current = c.outboxd_bin()
    if not os.access(current, os.X_OK):
        log(f"no current binary at {current}: run make all")
        return 2
    prev_bin, prev, build_s = build_previous(previous_commit(args.previous))
    log(f"previous release {prev[:12]} ({'built in %.0f s' % build_s if build_s else 'cached'}), "
        f"current {current}")

    tmp = tempfile.mkdtemp(prefix="outboxd-rollback-")
    os.chmod(tmp, 0o755)  # the cluster runs as postgres when the drill runs as root
    d = Rollback(tmp, "rollback-drill")
    with d:
        d.start_stack()
        conn = psycopg2.connect(d.dsn)
        schema = subprocess.run(["psql", "-X", "-A", "-t", "-d", d.dsn, "-c",
                                 "SELECT max(version) FROM outbox.schema_migrations"],
                                capture_output=True, text=True).stdout.strip() or "?"
        ids = []
        producer = threading.Thread(target=d.produce, args=(conn, args.messages, args.rate, ids), daemon=True)
        span = args.messages / args.rate

        cur_p, t_ready = d.start_outboxd(current, "current")
        producer.start()
        time.sleep(span / 3)  # traffic on the current release before the rollback
        down = d.stop_outboxd(cur_p, "current")
        t0 = time.monotonic()
        prev_p, prev_ready = d.start_outboxd(prev_bin, "previous")
        undo_s = time.monotonic() - t0
        log(f"rolled back after {len(ids)} messages: current drained in {down or 0:.1f} s, "
            f"previous ready in {undo_s:.1f} s on schema {schema} "
            f"(/health/ready {'200' if prev_ready is not None else 'NOT 200'})")
        time.sleep(span / 3)  # traffic on the previous release
        down = d.stop_outboxd(prev_p, "previous")
        t0 = time.monotonic()
        fwd_p, fwd_ready = d.start_outboxd(current, "forward")
        log(f"rolled forward after {len(ids)} messages: previous drained in {down or 0:.1f} s, "
            f"current ready in {time.monotonic() - t0:.1f} s")
        producer.join(span + 60)

        cur = conn.cursor()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cur.execute("SELECT count(*) FILTER (WHERE state <> 'sent') FROM outbox.messages")
            conn.commit()
            if cur.fetchone()[0] == 0:
                break
            time.sleep(0.2)
        d.stop_outboxd(fwd_p, "forward")
        d.relay.send_signal(signal.SIGTERM)  # the relay flushes its log on SIGTERM
        d.relay.wait(10)

        cur.execute("SELECT state, count(*) FROM outbox.messages GROUP BY 1")
        states = dict(cur.fetchall())
        cur.execute("SELECT id, message_id FROM outbox.messages")
        mid_of = {r[0]: r[1].strip("<>") for r in cur.fetchall()}
        conn.close()
        deliveries = collections.Counter(mid for _, mid in drill.relay_deliveries(d.relay_log))
        committed = len(ids)
        known = set(mid_of.values())
        lost = [i for i in ids if i not in mid_of or deliveries[mid_of[i]] == 0]
        stuck = states.get("sending", 0)
        unsent = committed - states.get("sent", 0)
        foreign = [m for m in deliveries if m not in known]
        dups = sum(n - 1 for n in deliveries.values() if n > 1)

        log(f"committed {committed}, sent {states.get('sent', 0)}, states {dict(sorted(states.items()))}")
        log(f"delivered {sum(deliveries.values())} times for {len(deliveries)} Message-IDs; "
            f"duplicates {dups} (same Message-ID); lost {len(lost)}; stuck sending {stuck}")
        d.expect(not lost, f"{len(lost)} committed messages never delivered (ids {lost[:5]}...)")
        d.expect(not stuck, f"{stuck} messages left sending")
        d.expect(not unsent, f"{unsent} committed messages not sent")
        d.expect(not foreign, f"{len(foreign)} deliveries with a Message-ID no row has")
        d.expect(committed == args.messages, f"the producer committed {committed} of {args.messages}")
    return d.verdict(args.keep)


if __name__ == "__main__":
    sys.exit(main())
