"""The disaster-recovery drill (ops/scripts/dr-drill.sh): a point-in-time restore under traffic
loses nothing committed before the target (messages sent, events on the Kafka topic), resends
with the same Message-ID, leaves nothing sending; and the drill notices when the WAL archive is
gone."""
import os
import re
import subprocess

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "ops", "scripts", "dr-drill.sh")


def drill(*args):
    r = subprocess.run(["bash", SCRIPT, "local", "--before", "3", "--after", "2", *args],
                       capture_output=True, text=True, timeout=300)
    return r, r.stdout + r.stderr


def test_point_in_time_restore_loses_nothing_before_the_target():
    r, out = drill()
    assert r.returncode == 0, out
    assert "dr-drill: PASS" in out
    assert re.search(r"RPO: 0 rows committed before the target lost", out), out
    rto = float(re.search(r"RTO: ([0-9.]+) s", out).group(1))
    assert rto < 60, out
    assert "rows left sending: 0" in out, out
    before = int(re.search(r"restore point after (\d+) committed", out).group(1))
    assert before > 0, out
    m = re.search(r"events: (\d+) committed before the target, (\d+) missing from the topic", out)
    assert m and int(m.group(1)) == before and m.group(2) == "0", out


def test_a_restore_without_the_wal_archive_fails_the_drill():
    r, out = drill("--without-archive", "--no-kafka")
    assert r.returncode == 1, out
    assert "dr-drill: FAIL" in out and "recovery target was reached" in out, out
