"""The go-live plan's Go/No-Go table behind ops/scripts/go-no-go.sh: runs (or reads the reports
of) every criterion that exists, prints the table with each criterion's measured result and
the decision by the plan's matrix, and writes the same as markdown for the decision record.

Matrix: any critical criterion failed or not available -> NO-GO (naming them); otherwise any
minor one open -> CONDITIONAL GO (naming them); otherwise GO."""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import common as c

SCRIPTS = os.path.join(c.ROOT, "ops", "scripts")
PROM = os.path.join(c.ROOT, "ops", "prometheus")
CRITICAL, MINOR = "critical", "minor"


class Row:
    def __init__(self, name, severity, source):
        self.name, self.severity, self.source = name, severity, source
        self.result, self.measured, self.minor_note = "NOT AVAILABLE", "", None

    def set(self, result, measured):
        self.result, self.measured = result, c.redact(measured)
        return self


def run(argv, timeout, env=None):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        return r.returncode, c.redact(r.stdout), c.redact(r.stderr)
    except subprocess.TimeoutExpired:
        return -1, "", f"timed out after {timeout} s"
    except OSError as e:
        return -1, "", str(e)


def last_line(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def staging_tests(a):
    row = Row("Staging tests 100 % pass", CRITICAL, a.tests_report or "make test")
    text = ""
    if a.tests_report:
        try:
            with open(a.tests_report, errors="replace") as f:
                text = f.read()
        except OSError as e:
            return row.set("NOT AVAILABLE", f"cannot read {a.tests_report}: {e}")
    else:
        rc, out, err = run(["make", "-s", "-C", c.ROOT, "test"], timeout=a.timeout)
        text = out + err
    m = re.findall(r"make test: (\d+) passed, (\d+) failed", text)
    if not m:
        return row.set("NOT AVAILABLE", "no 'make test: N passed, M failed' line in the report")
    passed, failed = map(int, m[-1])
    ok = failed == 0 and passed > 0
    return row.set("PASS" if ok else "FAIL", f"{passed} passed, {failed} failed"
                   + ("" if ok else f" ({passed * 100 / max(1, passed + failed):.1f} %)"))


def smoke(a):
    row = Row("Smoke tests", CRITICAL, a.smoke_report or f"smoke-tests.sh {a.env}")
    path = a.smoke_report
    if not path:
        path = os.path.join(a.workdir, "smoke.json")
        rc, out, err = run(["bash", os.path.join(SCRIPTS, "smoke-tests.sh"), a.env, "--json", path], timeout=600)
        a.details.append(("Smoke tests", out + err))
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        return row.set("NOT AVAILABLE", f"no smoke results: {e}")
    n = {k: sum(1 for x in doc["checks"] if x["result"] == k) for k in ("PASS", "FAIL", "SKIP")}
    measured = f"{n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped"
    if doc["failed"]:
        measured += ": " + ", ".join(doc["failed"]) + " failed"
    return row.set("PASS" if not doc["failed"] and n["PASS"] else "FAIL", measured)


def performance(a):
    row = Row("Performance within SLA (load scenarios)", CRITICAL,
              a.load_report or f"load-test.sh all {a.env} --scale {a.scale:g}")
    path = a.load_report
    if not path:
        out_dir = os.path.join(a.workdir, "load")
        rc, out, err = run(["bash", os.path.join(SCRIPTS, "load-test.sh"), "all", a.env, "--scale", f"{a.scale:g}",
                            "--out", out_dir], timeout=a.timeout)
        a.details.append(("Load scenarios", out + err))
        if rc == 2:
            return row.set("NOT AVAILABLE", last_line(err or out) or "load-test.sh refused the environment")
        path = os.path.join(out_dir, "load-report.json")
        a.load_html = os.path.join(out_dir, "load-report.html")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        return row.set("NOT AVAILABLE", f"no load report: {e}")
    parts, critical, minor = [], [], []
    by_name = {r["scenario"]: r for r in doc["scenarios"]}
    for r in doc["scenarios"]:
        lat = r["latency_commit_to_250_s"] or r["latency_commit_to_sent_at_s"]
        p95 = "-" if lat["p95"] is None else f"{lat['p95'] * 1000:.0f} ms"
        parts.append(f"{r['scenario']} p95 {p95}, errors {r['error_rate'] * 100:.2f} % {r['verdict']}")
        if r["sla_applies"]:
            if r["verdict"] == "FAIL":
                critical.append(r["scenario"])
            elif r["verdict"] == "WARN":
                minor.append(f"{r['scenario']} p95 above the 200 ms target")
        elif r["error_rate"] >= doc["sla"]["max_error_rate"]:
            minor.append(f"{r['scenario']} has errors")
    missing = [s for s in ("normal", "peak", "stress", "soak") if s not in by_name]
    if missing:
        minor.append("not run: " + ", ".join(missing))
    measured = f"scale {doc['scale']:g}: " + "; ".join(parts)
    if critical:
        return row.set("FAIL", measured + " (outside the SLA: " + ", ".join(critical) + ")")
    if minor:
        row.minor_note = "; ".join(minor)
        return row.set("WARN", measured + " (" + row.minor_note + ")")
    return row.set("PASS", measured)


def monitoring(a):
    row = Row("Monitoring verified (alert rules tested)", CRITICAL, "promtool test rules ops/prometheus/alerts.test.yaml")
    rc1, out1, err1 = run(["promtool", "check", "rules", os.path.join(PROM, "alerts.yaml")], timeout=120)
    rc2, out2, err2 = run(["promtool", "test", "rules", os.path.join(PROM, "alerts.test.yaml")], timeout=300)
    if rc1 == -1 and "No such file" in err1:
        return row.set("NOT AVAILABLE", "promtool is not installed (make deps)")
    rules = re.search(r"SUCCESS: (\d+) rules found", out1)
    try:
        import yaml
        with open(os.path.join(PROM, "alerts.test.yaml")) as f:
            cases = len(yaml.safe_load(f)["tests"])
    except Exception:  # counting is cosmetic; promtool's exit status decides
        cases = "?"
    ok = rc1 == 0 and rc2 == 0
    measured = f"{rules.group(1) if rules else '?'} rules checked, {cases} promtool cases " + ("pass" if ok else "FAIL")
    if not ok:
        a.details.append(("promtool", out1 + err1 + out2 + err2))
    return row.set("PASS" if ok else "FAIL", measured)


def drill(a, name, severity, script):
    path = os.path.join(a.drills_dir, script)
    row = Row(name, severity, script)
    if not os.path.isfile(path):
        return row.set("NOT AVAILABLE", f"{os.path.relpath(path, c.ROOT) if path.startswith(c.ROOT) else path} not present")
    rc, out, err = run(["bash", path, a.env], timeout=a.timeout)
    a.details.append((name, out + err))
    return row.set("PASS" if rc == 0 else "FAIL", f"exit {rc}: {last_line(out) or last_line(err)}")


def decide(rows):
    open_critical = [r.name for r in rows if r.severity == CRITICAL and r.result in ("FAIL", "NOT AVAILABLE")]
    open_minor = [r.name + (f" ({r.minor_note})" if r.minor_note else "") for r in rows
                  if (r.severity == MINOR and r.result != "PASS") or (r.severity == CRITICAL and r.result == "WARN")]
    if open_critical:
        return "NO-GO", "critical: " + "; ".join(open_critical)
    if open_minor:
        return "CONDITIONAL GO", "minor items to close: " + "; ".join(open_minor)
    return "GO", "every criterion met"


def table_text(rows):
    heads = ("criterion", "severity", "result", "measured")
    w = [max(len(h), *(len(x) for x in col)) for h, col in
         zip(heads[:3], ([r.name for r in rows], [r.severity for r in rows], [r.result for r in rows]))]
    out = ["  ".join(h.upper().ljust(n) for h, n in zip(heads, w + [0])).rstrip()]
    for r in rows:
        out.append("  ".join(v.ljust(n) for v, n in zip((r.name, r.severity, r.result, r.measured), w + [0])).rstrip())
    return "\n".join(out)


def markdown(a, rows, decision, why):
    commit = run(["git", "-C", c.ROOT, "rev-parse", "--short", "HEAD"], timeout=10)[1].strip() or "?"
    md = [f"# outboxd go/no-go: {a.env}", "",
          f"* date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
          f"* build: {commit}", f"* decision: **{decision}** ({why})", "",
          "| criterion | severity | result | measured | source |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r.name} | {r.severity} | {r.result} | {r.measured.replace('|', '/')} | `{r.source}` |")
    md += ["", "Matrix: a critical criterion failed or not available is a NO-GO; open minor items make a",
           "conditional GO (each needs an owner and a date); otherwise GO.", ""]
    if getattr(a, "load_html", None):
        md += [f"Load report with plots: `{a.load_html}`", ""]
    for title, text in a.details:
        md += [f"## {title}", "", "```", text.strip()[-4000:], "```", ""]
    md += ["## Sign-off", "", "| role | name | decision |", "|---|---|---|",
           "| release owner | | |", "| operations | | |", "| security | | |", ""]
    return "\n".join(md)


def main():
    ap = argparse.ArgumentParser(prog="go-no-go.sh")
    ap.add_argument("--tests-report", help="a `make test` log (its 'make test: N passed, M failed' line) instead of running make test")
    ap.add_argument("--smoke-report", help="a smoke-tests.sh --json file instead of running the smoke tests")
    ap.add_argument("--load-report", help="a load-report.json instead of running the load scenarios")
    ap.add_argument("--scale", type=float, default=1.0, help="load scenarios' duration scale when they are run")
    ap.add_argument("--md", help="markdown output (default build/go-no-go-ENV-TIME.md)")
    ap.add_argument("--timeout", type=int, default=4 * 3600, help="per long criterion (make test, load, drills)")
    a = ap.parse_args()
    a.env = c.setting("GOLIVE_ENV", "local")
    a.drills_dir = c.setting("GOLIVE_DRILLS_DIR") or SCRIPTS
    a.details, a.load_html = [], None
    a.workdir = tempfile.mkdtemp(prefix="outboxd-go-no-go-")
    rows = [staging_tests(a), smoke(a), performance(a), monitoring(a),
            drill(a, "Security audit without critical findings", CRITICAL, "security-audit.sh"),
            drill(a, "Rollback tested (rollback drill)", CRITICAL, "rollback-drill.sh"),
            drill(a, "DR drill (restore)", MINOR, "dr-drill.sh")]
    decision, why = decide(rows)
    print(f"outboxd go/no-go: {a.env}")
    print(table_text(rows))
    print(f"DECISION: {decision} ({why})")
    md_path = a.md or os.path.join(c.ROOT, "build", f"go-no-go-{a.env}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.md")
    os.makedirs(os.path.dirname(os.path.abspath(md_path)), exist_ok=True)
    with open(md_path, "w") as f:
        f.write(markdown(a, rows, decision, why))
    print(f"decision record: {md_path}")
    subprocess.run(["rm", "-rf", a.workdir], check=False)
    return {"GO": 0, "NO-GO": 1, "CONDITIONAL GO": 3}[decision]


if __name__ == "__main__":
    sys.exit(main())
