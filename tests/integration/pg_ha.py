"""A throwaway pg_auto_failover formation on loopback: a monitor, a primary and a synchronous
standby (Debian's postgresql-15-auto-failover, pg_autoctl), each on a free port, each run as
the postgres user when the tests run as root (initdb and pg_ctl refuse root). Everything it
starts is in its own process group and is killed by that group's id."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

from smtp_servers import free_port

PG_BIN = sorted(d for d in (f"/usr/lib/postgresql/{v}/bin" for v in os.listdir("/usr/lib/postgresql"))
                if os.path.exists(os.path.join(d, "pg_ctl")))[-1] if os.path.isdir("/usr/lib/postgresql") else ""
PG_AUTOCTL = shutil.which("pg_autoctl") or os.path.join(PG_BIN, "pg_autoctl")

# The monitor declares a node dead after ~3 s rather than ~20 s: the failover measured is
# outboxd's, not pg_auto_failover's default patience.
FAST_MONITOR = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "3000",
    # how long the monitor waits for an unreachable primary to have demoted itself (its keeper
    # does so on losing the monitor) before promoting: 30 s by default; the host here is dead
    "pgautofailover.primary_demote_timeout": "5000",
}


def _psql(port, sql, user="postgres", db="postgres", check=True):
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", user,
                        "-d", db, "-c", sql], capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql :{port} failed: {r.stderr.strip()}")
    return r.stdout.strip() if r.returncode == 0 else None


def _wait(predicate, timeout, what, interval=0.5, on_tick=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = predicate()
        if v:
            return v
        if on_tick:
            on_tick()
        time.sleep(interval)
    raise AssertionError(f"pg_auto_failover: timed out after {timeout}s waiting for {what}")


class Formation:
    def __init__(self, dbname="outbox"):
        self.dir = tempfile.mkdtemp(prefix="outboxd-pgaf-")
        self.dbname = dbname
        self.procs = {}
        self.ports = {}
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _spawn(self, name, args):
        env = dict(os.environ, PATH=f"{PG_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
                   XDG_CONFIG_HOME=os.path.join(self.dir, "cfg-" + name),
                   XDG_DATA_HOME=os.path.join(self.dir, "data-" + name), HOME=self.dir)
        cmd = [PG_AUTOCTL, *args]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", "env", *(f"{k}={env[k]}" for k in
                   ("PATH", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "HOME")), *cmd]
        log = open(os.path.join(self.dir, name + ".log"), "ab")
        self.procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=self.dir,
                                            start_new_session=True)
        log.close()

    def monitor_uri(self):
        return f"postgres://autoctl_node@127.0.0.1:{self.ports['monitor']}/pg_auto_failover?sslmode=disable"

    def nodes(self):
        """{name: (reported state, goal state)} as the monitor sees them."""
        out = _psql(self.ports["monitor"], "SELECT nodename, reportedstate, goalstate FROM pgautofailover.node",
                    db="pg_auto_failover", check=False) or ""
        return {l.split("|")[0]: tuple(l.split("|")[1:]) for l in out.splitlines() if l}

    def start(self, timeout=150):
        self.ports["monitor"] = free_port()
        self._spawn("monitor", ["create", "monitor", "--pgdata", os.path.join(self.dir, "monitor"),
                                "--pgport", str(self.ports["monitor"]), "--hostname", "127.0.0.1",
                                "--auth", "trust", "--no-ssl", "--run"])
        _wait(lambda: _psql(self.ports["monitor"], "SELECT 1", db="pg_auto_failover", check=False) == "1",
              60, "the monitor")
        for k, v in FAST_MONITOR.items():
            _psql(self.ports["monitor"], f"ALTER SYSTEM SET {k} = {v}", db="pg_auto_failover")
        _psql(self.ports["monitor"], "SELECT pg_reload_conf()", db="pg_auto_failover")
        for name in ("a", "b"):
            self.ports[name] = free_port()
            self._spawn(name, ["create", "postgres", "--pgdata", os.path.join(self.dir, name),
                               "--pgport", str(self.ports[name]), "--hostname", "127.0.0.1", "--name", name,
                               "--dbname", self.dbname, "--monitor", self.monitor_uri(), "--auth", "trust",
                               "--no-ssl", "--run"])
            if name == "a":
                _wait(lambda: self.nodes().get("a", ("",))[0] in ("single", "wait_primary", "primary"),
                      60, "the first node to be primary")
        # pg_basebackup waits for a spread checkpoint (~90 s idle); asking for one hurries it
        _wait(lambda: self.nodes() == {"a": ("primary", "primary"), "b": ("secondary", "secondary")},
              timeout, "primary + secondary",
              on_tick=lambda: _psql(self.ports["a"], "CHECKPOINT", check=False))
        return self

    def url(self):
        hosts = ",".join(f"127.0.0.1:{self.ports[n]}" for n in ("a", "b"))
        return f"postgresql://postgres@{hosts}/{self.dbname}?target_session_attrs=read-write&connect_timeout=2"

    def dsn(self):
        return (f"host=127.0.0.1,127.0.0.1 port={self.ports['a']},{self.ports['b']} user=postgres "
                f"dbname={self.dbname} target_session_attrs=read-write connect_timeout=2")

    def primary(self):
        return next((n for n, (rep, _) in self.nodes().items() if rep in ("primary", "wait_primary", "single")),
                    None)

    def kill_node(self, name):
        """kill -9 of the node's whole host: its pg_autoctl keeper and its postmaster."""
        pidfile = os.path.join(self.dir, name, "postmaster.pid")
        postmaster = None
        try:
            with open(pidfile) as f:
                postmaster = int(f.readline())
        except (OSError, ValueError):
            pass
        p = self.procs[name]
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if postmaster:
            try:
                os.kill(postmaster, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(10)

    def destroy(self):
        for name, p in self.procs.items():
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the keeper first: it would start postgres again
            except ProcessLookupError:
                pass
            p.wait(10)
            try:
                with open(os.path.join(self.dir, name, "postmaster.pid")) as f:
                    postmaster = int(f.readline())
            except (OSError, ValueError):
                continue
            # An immediate shutdown (SIGQUIT) takes the postmaster's children with it; after a
            # SIGKILL the monitor's health-check worker and its logger outlived it.
            try:
                os.kill(postmaster, signal.SIGQUIT)
                _wait(lambda: not os.path.exists(f"/proc/{postmaster}"), 10, f"{name}'s postgres to stop",
                      interval=0.1)
            except (ProcessLookupError, AssertionError):
                pass
            try:
                os.kill(postmaster, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
