"""The rollback drill (ops/scripts/rollback-drill.sh): the release in ops/PREVIOUS_RELEASE runs
against the current schema under traffic and back again, so every migration is checked against
the release before it."""
import os
import subprocess

import pytest

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "ops", "scripts", "rollback-drill.sh")


def previous():
    with open(os.path.join(ROOT, "ops", "PREVIOUS_RELEASE"), encoding="utf-8") as f:
        return next(line.strip() for line in f if line.strip() and not line.startswith("#"))


def drill(*args, timeout=600):
    return subprocess.run(["bash", SCRIPT, "local", *args], capture_output=True, text=True, timeout=timeout)


def test_previous_release_runs_on_the_current_schema_under_traffic():
    reachable = subprocess.run(["git", "-C", ROOT, "cat-file", "-e", previous() + "^{commit}"],
                               capture_output=True).returncode == 0
    if not reachable:
        pytest.skip(f"ops/PREVIOUS_RELEASE {previous()[:12]} is not in this clone's history (shallow clone)")
    r = drill("--messages", "300", "--rate", "30")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "rollback-drill: PASS" in out
    assert "(/health/ready 200)" in out, out
    assert "committed 300, sent 300" in out and "lost 0; stuck sending 0" in out, out


def test_an_unknown_previous_release_is_refused_clearly():
    r = drill("--previous", "0" * 40, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not in this clone's history" in r.stdout + r.stderr
