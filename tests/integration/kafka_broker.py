"""A real single-node Apache Kafka broker for integration tests (wraps ops/scripts/kafka.sh):
the KafkaBroker class, kcat helpers to produce and read back, and the pytest fixtures
`kafka_broker` (one broker for the session) and `kafka_broker_factory` (private brokers)."""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import weakref

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KAFKA_SH = os.path.join(ROOT, "ops", "scripts", "kafka.sh")

# kafka.sh exits with this when the jars are not cached and Maven Central cannot be reached.
EXIT_UNAVAILABLE = 69
# The first start may resolve the jars with Maven; later ones take a few seconds.
START_TIMEOUT = 600
STOP_TIMEOUT = 60

_live = weakref.WeakSet()
# Set once a fetch failed for want of Maven Central, so that later brokers in the same run
# do not wait for the network again.
_unavailable_reason = None


class KafkaUnavailable(Exception):
    """The broker cannot run here: no cached jars and no way to fetch them."""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_script(*args, timeout, env=None):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run(["bash", KAFKA_SH, *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


class KafkaBroker:
    """One broker process with its own directory and ports on 127.0.0.1.

    start(tmpdir) formats a fresh directory under tmpdir and picks free ports; stop() ends the
    process and keeps the data; start() again (or restart()) brings it back on the same
    directory and ports. destroy() stops it and removes the directory."""

    def __init__(self, partitions=3, env=None, sasl=None, tls=None):
        self.partitions = partitions
        self.sasl = sasl  # "user:password": also a SASL_PLAINTEXT (PLAIN) listener
        self.sasl_port = None
        self.tls = tls  # a PEM file (key + certificate chain): also an SSL listener
        self.tls_port = None
        self.env = dict(env or {})
        self.dir = None
        self.port = None
        self._owned_tmp = None
        _live.add(self)

    @property
    def bootstrap(self):
        """The bootstrap.servers string, "127.0.0.1:PORT"."""
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self):
        """The SASL_PLAINTEXT listener's bootstrap.servers (a broker made with sasl=...)."""
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def log_path(self):
        """The broker's log file (stdout and stderr of the JVM)."""
        return os.path.join(self.dir, "kafka.log")

    def start(self, tmpdir=None):
        """Starts the broker and returns when it answers metadata requests. The first call
        creates a directory inside tmpdir (a new temporary directory when None) and picks a free
        port; later calls reuse both. Raises KafkaUnavailable when the jars can be neither found
        in the cache nor fetched, RuntimeError on any other failure. Returns self."""
        global _unavailable_reason
        if _unavailable_reason is not None:
            raise KafkaUnavailable(_unavailable_reason)
        first = self.dir is None
        if first:
            if tmpdir is None:
                tmpdir = self._owned_tmp = tempfile.mkdtemp(prefix="outboxd-kafka-")
            self.dir = tempfile.mkdtemp(prefix="kafka-", dir=str(tmpdir))
        attempts = 3 if first else 1
        for attempt in range(attempts):
            if first:
                self.port = _free_port()
            r = _run_script("up", "--dir", self.dir, "--port", str(self.port),
                            "--partitions", str(self.partitions),
                            *(["--sasl", self.sasl] if self.sasl and first else []),
                            *(["--tls", self.tls] if self.tls and first else []),
                            timeout=START_TIMEOUT, env=self.env)
            if r.returncode == 0:
                if self.sasl:
                    with open(os.path.join(self.dir, "sasl-port")) as f:
                        self.sasl_port = int(f.read())
                if self.tls:
                    with open(os.path.join(self.dir, "tls-port")) as f:
                        self.tls_port = int(f.read())
                return self
            if r.returncode == EXIT_UNAVAILABLE:
                _unavailable_reason = r.stderr.strip().splitlines()[-1]
                raise KafkaUnavailable(r.stderr.strip())
            # Another process may have taken the port between the choice and the bind.
            if "already in use" not in r.stderr or attempt == attempts - 1:
                raise RuntimeError(f"kafka.sh up failed ({r.returncode}):\n{r.stderr}")
        raise AssertionError("unreachable")

    def stop(self, kill=False):
        """Stops the broker (SIGTERM, then SIGKILL after 30 s; kill=True: SIGKILL at once). The
        data stays. Does nothing when it is not running."""
        if self.dir is None:
            return
        self.thaw()
        args = ["down", "--dir", self.dir] + (["--kill"] if kill else [])
        r = _run_script(*args, timeout=STOP_TIMEOUT)
        if r.returncode != 0:
            raise RuntimeError(f"kafka.sh down failed ({r.returncode}):\n{r.stderr}")

    def restart(self, kill=False):
        """stop() then start() on the same directory and port."""
        self.stop(kill=kill)
        return self.start()

    def pid(self):
        """The broker's pid when its process exists (running, starting or frozen), else None."""
        if self.dir is None:
            return None
        try:
            with open(os.path.join(self.dir, "kafka.pid")) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            return None
        # The same check as kafka.sh: a reused pid is not the broker.
        want = "kafka.Kafka " + os.path.join(os.path.realpath(self.dir), "server.properties")
        return pid if want in cmdline else None

    def running(self):
        """Whether the broker process runs (it may still be starting or frozen)."""
        return self.pid() is not None

    def freeze(self):
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung broker)."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self):
        """SIGCONT after freeze(); harmless otherwise."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGCONT)

    def ensure_running(self):
        """Starts the broker again when a test left it stopped. Returns self."""
        if not self.running():
            self.start()
        return self

    def destroy(self, kill=False):
        """Stops the broker (kill=True: SIGKILL at once) and removes its directory (and the
        temporary directory start() made, if any)."""
        if self.dir is not None:
            try:
                self.stop(kill=kill)
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)
                if self._owned_tmp:
                    shutil.rmtree(self._owned_tmp, ignore_errors=True)
                self.dir = None
        _live.discard(self)

    def log_tail(self, lines=40):
        """The last lines of the broker's log, for assertion messages."""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # kcat helpers -------------------------------------------------------------------------

    def produce(self, topic, records, timeout=30, extra=()):
        """Produces records, a list of (key, value) strings (neither may contain a newline; the
        key no ':'), with kcat in one run and in list order. Keys are partitioned with
        murmur2, as Java clients and outboxd do. Raises on failure."""
        data = "".join(f"{k}:{v}\n" for k, v in records)
        cmd = ["kcat", "-P", "-b", self.bootstrap, "-t", topic, "-K:",
               "-X", "partitioner=murmur2_random", *extra]
        r = subprocess.run(cmd, input=data, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"kcat -P failed ({r.returncode}): {r.stderr}")

    def consume(self, topic, timeout=30):
        """Reads every message of topic from the beginning up to the current end (kcat -C -e
        -J) and returns a list of dicts with partition, offset, key, payload and headers
        (a list of (name, value)), in the order kcat printed them (offset order within each
        partition)."""
        return kcat_consume(self.bootstrap, topic, timeout)


def kcat_consume(bootstrap, topic, timeout=30):
    """KafkaBroker.consume against any bootstrap.servers list (a cluster's too)."""
    cmd = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"kcat -C failed ({r.returncode}): {r.stderr}")
    out = []
    for line in r.stdout.splitlines():
        if not line.strip():
            continue
        m = json.loads(line)
        h = m.get("headers") or []
        m["headers"] = list(zip(h[0::2], h[1::2]))
        out.append(m)
    return out


@atexit.register
def _stop_leftovers():
    # A broker outlives the Python process that started it; do not leave any behind.
    for b in list(_live):
        try:
            b.destroy(kill=True)
        except Exception:
            pass


def _unavailable(reason):
    msg = "Kafka broker unavailable (jars not cached and Maven Central unreachable): " + reason
    required = os.environ.get("OUTBOXD_REQUIRE_KAFKA") == "1" or \
        os.environ.get("CI", "").lower() in ("1", "true", "yes")
    print("\n*** " + msg + "\n", flush=True)
    if required:
        pytest.fail(msg + " (CI or OUTBOXD_REQUIRE_KAFKA=1: failing instead of skipping)",
                    pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """One broker for the whole session, 3 partitions per auto-created topic. Tests that stop
    or freeze a broker should use kafka_broker_factory instead, or call ensure_running()."""
    b = KafkaBroker(partitions=int(os.environ.get("KAFKA_NUM_PARTITIONS", "3")))
    try:
        b.start(tmp_path_factory.mktemp("kafka"))
    except KafkaUnavailable as e:
        b.destroy()
        _unavailable(str(e))
    try:
        yield b
    finally:
        b.destroy()


@pytest.fixture
def kafka_broker_factory(tmp_path):
    """make(partitions=3, sasl=None) starts a private broker in tmp_path (sasl="user:password"
    adds a SASL_PLAINTEXT listener); all are destroyed after the test."""
    made = []

    def make(partitions=3, sasl=None, tls=None):
        b = KafkaBroker(partitions=partitions, sasl=sasl, tls=tls)
        made.append(b)
        try:
            return b.start(tmp_path)
        except KafkaUnavailable as e:
            _unavailable(str(e))

    try:
        yield make
    finally:
        for b in made:
            b.destroy()
