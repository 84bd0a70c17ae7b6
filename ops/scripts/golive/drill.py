"""What the rollback and DR drills share: a work directory of their own processes, a relay that
records each delivered Message-ID, outboxd started and waited on until ready, and the verdict."""
import os
import shutil
import subprocess
import time
import urllib.request

import common as c

PG_LOCAL = os.path.join(c.ROOT, "ops", "scripts", "pg-local.sh")
RELAY = os.path.join(c.ROOT, "tests", "bench", "delay_relay.py")
PY = "/usr/bin/python3"


def ready(url, timeout):
    """Seconds until url answers 200, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.1)
    return None


def relay_deliveries(path):
    """(time, Message-ID) of each 250 the relay gave for a message, in order."""
    out = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    out.append((float(parts[0]), parts[1]))
    return out


class Drill:
    """Processes in self.tmp; failures collected in self.failures; stop() ends all of them."""

    def __init__(self, tmp, name):
        self.tmp, self.name = tmp, name
        self.pgdir = os.path.join(tmp, "pg")
        self.procs, self.failures = [], []
        self.http_port = c.free_port()
        self.extra_env = {}  # more OUTBOXD_* settings for every outboxd the drill starts

    def log(self, msg):
        print(f"{self.name}: {msg}", flush=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """An exception stops what was started before it goes on."""
        if exc_type is not None:
            self.stop()
        return False

    def expect(self, ok, failure):
        """Records failure unless ok."""
        if not ok:
            self.failures.append(failure)

    def spawn(self, argv, name, env=None):
        out = open(os.path.join(self.tmp, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def start_relay(self, *extra):
        self.relay_log = os.path.join(self.tmp, "relay.log")
        self.relay_port = c.free_port()
        self.relay = self.spawn([PY, RELAY, "--port", str(self.relay_port), "--log", self.relay_log, *extra],
                                "relay")

    def start_outboxd(self, binary, name):
        """(process, seconds until /health/ready was 200 or None, which is recorded as a failure)."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
        e.update(OUTBOXD_DATABASE_URL=self.dsn, OUTBOXD_SMTP_URL=f"smtp://127.0.0.1:{self.relay_port}",
                 OUTBOXD_SMTP_TLS="none", OUTBOXD_SMTP_FROM="drill@example.org",
                 OUTBOXD_HTTP_LISTEN=f"127.0.0.1:{self.http_port}", OUTBOXD_LOG_LEVEL="info",
                 OUTBOXD_DISPATCHER_OWNER=name, **self.extra_env)
        p = self.spawn([binary, "run"], name, env=e)
        took = ready(f"http://127.0.0.1:{self.http_port}/health/ready", 30)
        if took is None or p.poll() is not None:
            self.failures.append(f"{name}: /health/ready not 200 within 30 s (see {name}.log)")
            took = None
        return p, took

    def stop(self):
        c.stop_procs(self.procs, 30)
        if os.path.exists(os.path.join(self.pgdir, "data", "server.log")):
            shutil.copy(os.path.join(self.pgdir, "data", "server.log"), self.tmp)
        subprocess.run([PG_LOCAL, "destroy", self.pgdir], capture_output=True, timeout=120)

    def verdict(self, keep):
        """Stops everything, prints each failure and PASS or FAIL; the exit status."""
        self.stop()
        if keep or self.failures:
            self.log(f"work directory kept: {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for f in self.failures:
            self.log(f"FAIL: {f}")
        self.log("PASS" if not self.failures else "FAIL")
        return 0 if not self.failures else 1
