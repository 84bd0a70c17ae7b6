"""A real three-node Kafka cluster (KRaft, each node broker and controller, a static quorum of 3)
from the jars ops/scripts/kafka.sh caches, for failover tests: replication factor 3 and
min.insync.replicas 2 for auto-created topics, free loopback ports, small heaps, the three
JVMs formatted and started in parallel. Each node is its own process group, killed by id."""
import base64
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from kafka_broker import KAFKA_SH, _free_port, kcat_consume

VERSION = os.environ.get("KAFKA_VERSION", "4.1.1")
CACHE = os.environ.get("OUTBOXD_KAFKA_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "outboxd", "kafka")
LIBS = os.path.join(CACHE, f"libs-{VERSION}")
JVM = ["-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
       "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true", "-Xlog:cds*=off", "-Xlog:class+path=off"]
LOG4J = "-Dlog4j2.configurationFile=file:" + os.path.join(os.path.dirname(KAFKA_SH), "..", "kafka", "log4j2.yaml")

PROPS = """process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
auto.create.topics.enable=true
num.partitions={partitions}
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
controller.quorum.election.timeout.ms=1000
controller.quorum.fetch.timeout.ms=2000
replica.lag.time.max.ms=5000
log.segment.bytes=16777216
"""


def _java():
    home = os.environ.get("JAVA_HOME")
    return os.environ.get("JAVA") or (os.path.join(home, "bin", "java") if home else shutil.which("java"))


def _cds():
    archives = glob.glob(os.path.join(CACHE, "cds", f"kafka-{VERSION}-java-*.jsa"))
    return [f"-XX:SharedArchiveFile={archives[0]}"] if archives else []


def kafka_cluster_id(rand=uuid.uuid4):
    """A KRaft cluster id: 16 random bytes, URL-safe base64. One id in 64 would begin with
    '-', which kafka-storage's argument parser takes for an option (Kafka's own random-uuid
    redraws those), so redraw them here too."""
    while True:
        cid = base64.urlsafe_b64encode(rand().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaCluster:
    def __init__(self, partitions=3):
        self.partitions = partitions
        self.dir = tempfile.mkdtemp(prefix="outboxd-kcluster-")
        self.nodes = {}  # id -> {"port", "cport", "dir", "proc"}

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{n['port']}" for n in self.nodes.values())

    def _cmd(self, main, *args, heap=None):
        return [_java(), *(heap or JVM), *_cds(), LOG4J, "-Doutboxd.kafka.loglevel=WARN",
                "-cp", os.path.join(LIBS, "*"), main, *args]

    def start(self, timeout=120):
        r = subprocess.run(["bash", KAFKA_SH, "fetch"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.skip("Kafka jars unavailable: " + r.stderr.strip()[-200:])
        ports = set()
        while len(ports) < 6:
            ports.add(_free_port())
        ports = sorted(ports)
        for i in (1, 2, 3):
            self.nodes[i] = {"port": ports[2 * i - 2], "cport": ports[2 * i - 1],
                             "dir": os.path.join(self.dir, f"node{i}"), "proc": None}
        voters = ",".join(f"{i}@127.0.0.1:{n['cport']}" for i, n in self.nodes.items())
        cluster_id = kafka_cluster_id()
        formats = []
        for i, n in self.nodes.items():
            os.makedirs(n["dir"])
            with open(os.path.join(n["dir"], "server.properties"), "w") as f:
                f.write(PROPS.format(id=i, voters=voters, port=n["port"], cport=n["cport"],
                                     data=os.path.join(n["dir"], "data"), partitions=self.partitions))
            formats.append(subprocess.Popen(
                self._cmd("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c",
                          os.path.join(n["dir"], "server.properties"),
                          heap=["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for p in formats:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0, out
        for i in self.nodes:
            self.start_node(i)
        self.wait_brokers(3, timeout)
        return self

    def start_node(self, i):
        n = self.nodes[i]
        log = open(os.path.join(n["dir"], "kafka.log"), "ab")
        n["proc"] = subprocess.Popen(self._cmd("kafka.Kafka", os.path.join(n["dir"], "server.properties")),
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def kill_node(self, i):
        p = self.nodes[i]["proc"]
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)

    def metadata(self, topic=None):
        """kcat -L -J over every live node; None when no node answers."""
        cmd = ["kcat", "-L", "-J", "-b", self.bootstrap, "-m", "3"] + (["-t", topic] if topic else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def wait_brokers(self, count, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.metadata()
            if m and len(m.get("brokers", [])) >= count:
                return m
            for i, n in self.nodes.items():
                if n["proc"] and n["proc"].poll() is not None and i in self._expected_up():
                    raise AssertionError(f"kafka node {i} exited:\n" + self.log_tail(i))
            time.sleep(0.5)
        raise AssertionError(f"{count} Kafka brokers not up within {timeout}s:\n" + self.log_tail(1))

    def _expected_up(self):
        return [i for i, n in self.nodes.items() if n["proc"] is not None and n.get("up", True)]

    def partitions_of(self, topic):
        """{partition: (leader, [replicas], [isrs])}"""
        m = self.metadata(topic)
        out = {}
        for t in (m or {}).get("topics", []):
            if t.get("topic") == topic:
                for p in t.get("partitions", []):
                    out[p["partition"]] = (p["leader"], [r["id"] for r in p.get("replicas", [])],
                                           [r["id"] for r in p.get("isrs", [])])
        return out

    def log_tail(self, i, lines=30):
        try:
            with open(os.path.join(self.nodes[i]["dir"], "kafka.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def consume(self, topic, timeout=60):
        return kcat_consume(self.bootstrap, topic, timeout)

    def destroy(self):
        for i in self.nodes:
            try:
                self.kill_node(i)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def kafka_cluster():
    """Three KRaft nodes (broker + controller each), replication factor 3, min.insync.replicas 2."""
    c = KafkaCluster()
    try:
        yield c.start()
    finally:
        c.destroy()
