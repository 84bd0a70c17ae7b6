"""go-no-go.sh on its fast path (given reports, the real promtool tests, drill scripts from a
directory the test controls): the plan's table with each criterion's measured result, the
decision by the matrix (GO, CONDITIONAL GO naming the minor items, NO-GO naming the critical
ones), the exit status that goes with it, and the markdown decision record."""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None and not os.environ.get("CI"),
                                reason="promtool not installed (make deps installs it)")
SCRIPT = os.path.join(ROOT, "ops", "scripts", "go-no-go.sh")


def scenario(name, p95, errors=0.0, verdict="PASS"):
    lat = {"n": 100, "p50": p95 / 2, "p95": p95, "p99": p95, "max": p95}
    return {"scenario": name, "latency_commit_to_250_s": lat, "latency_commit_to_sent_at_s": lat,
            "error_rate": errors, "verdict": verdict, "sla_applies": name != "stress"}


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path
    (d / "tests.log").write_text("...\nmake test: 412 passed, 0 failed\n")
    (d / "smoke.json").write_text(json.dumps({"failed": [], "checks": [
        {"check": k, "result": "PASS", "detail": ""} for k in ("health", "ready", "metrics", "migrations", "email", "status")]
        + [{"check": "kafka", "result": "SKIP", "detail": "mirror off"}]}))
    load = {"scale": 0.05, "sla": {"p95_target_s": 0.2, "p95_alert_s": 0.5, "max_error_rate": 0.001},
            "scenarios": [scenario("normal", 0.006), scenario("peak", 0.05), scenario("stress", 0.3, verdict="WARN"),
                          scenario("soak", 0.01)]}
    (d / "load.json").write_text(json.dumps(load))
    drills = d / "drills"
    drills.mkdir()
    for s in ("security-audit.sh", "rollback-drill.sh", "dr-drill.sh"):
        (drills / s).write_text(f'echo "{s} on $1: ok"\n')
    return d


def go_no_go(d, **env):
    e = dict(os.environ, GOLIVE_DRILLS_DIR=str(d / "drills"))
    e.update(env)
    md = d / "record.md"
    r = subprocess.run(["bash", SCRIPT, "local", "--tests-report", str(d / "tests.log"), "--smoke-report",
                        str(d / "smoke.json"), "--load-report", str(d / "load.json"), "--md", str(md)],
                       env=e, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr, md.read_text() if md.exists() else ""


def row(out, name):
    m = re.search(rf"^{re.escape(name)}\s+(critical|minor)\s+(PASS|FAIL|WARN|NOT AVAILABLE)\s+(.*)$", out, re.M)
    assert m, f"no row {name}:\n{out}"
    return m.group(2), m.group(3)


def test_go_when_every_criterion_is_met(inputs):
    rc, out, md = go_no_go(inputs)
    assert rc == 0, out
    assert row(out, "Staging tests 100 % pass") == ("PASS", "412 passed, 0 failed")
    assert row(out, "Smoke tests")[0] == "PASS" and "6 passed, 0 failed, 1 skipped" in out
    assert row(out, "Performance within SLA (load scenarios)")[0] == "PASS"
    assert "normal p95 6 ms" in out and "stress p95 300 ms" in out
    status, measured = row(out, "Monitoring verified (alert rules tested)")
    assert status == "PASS" and re.search(r"\d+ rules checked, \d+ promtool cases pass", measured), out
    assert row(out, "Rollback tested (rollback drill)") == ("PASS", "exit 0: rollback-drill.sh on local: ok")
    assert re.search(r"^DECISION: GO \(every criterion met\)$", out, re.M), out
    assert "**GO**" in md and "| Staging tests 100 % pass | critical | PASS | 412 passed, 0 failed |" in md


def test_conditional_go_names_the_minor_items(inputs):
    (inputs / "drills" / "dr-drill.sh").write_text('echo "restore took 2h, RTO 1h"; exit 1\n')
    load = json.loads((inputs / "load.json").read_text())
    load["scenarios"][1] = scenario("peak", 0.31, verdict="WARN")  # above target, below the alert line
    (inputs / "load.json").write_text(json.dumps(load))
    rc, out, md = go_no_go(inputs)
    assert rc == 3, out
    assert row(out, "DR drill (restore)") == ("FAIL", "exit 1: restore took 2h, RTO 1h")
    assert row(out, "Performance within SLA (load scenarios)")[0] == "WARN"
    m = re.search(r"^DECISION: CONDITIONAL GO \(minor items to close: (.*)\)$", out, re.M)
    assert m, out
    assert "DR drill" in m.group(1) and "peak p95 above the 200 ms target" in m.group(1)
    assert "**CONDITIONAL GO**" in md


def test_no_go_names_the_critical_items(inputs):
    (inputs / "tests.log").write_text("make test: 409 passed, 3 failed\n")
    (inputs / "drills" / "rollback-drill.sh").unlink()
    load = json.loads((inputs / "load.json").read_text())
    load["scenarios"][0] = scenario("normal", 0.7, verdict="FAIL")
    (inputs / "load.json").write_text(json.dumps(load))
    rc, out, md = go_no_go(inputs)
    assert rc == 1, out
    assert row(out, "Staging tests 100 % pass")[0] == "FAIL"
    assert row(out, "Rollback tested (rollback drill)")[0] == "NOT AVAILABLE"
    assert row(out, "Performance within SLA (load scenarios)")[0] == "FAIL"
    m = re.search(r"^DECISION: NO-GO \(critical: (.*)\)$", out, re.M)
    assert m, out
    for name in ("Staging tests", "Performance within SLA", "Rollback tested"):
        assert name in m.group(1), out
    assert "Smoke tests" not in m.group(1) and "DR drill" not in m.group(1)
    assert "**NO-GO**" in md
