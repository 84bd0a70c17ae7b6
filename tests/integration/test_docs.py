"""The documentation and deployment artefacts agree with the code: every alert has a runbook
and uses only metrics (and label values) that a running outboxd exports; the README's
commands are make targets, its OUTBOXD_* names are real keys and its SQL runs; the
Kubernetes, Compose, Prometheus and Grafana files parse."""
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import OUTBOXD, ROOT, run_outboxd

yaml = pytest.importorskip("yaml", reason="python3-yaml is needed to parse the YAML artefacts")

ALERTS = os.path.join(ROOT, "ops", "prometheus", "alerts.yaml")
RUNBOOKS = os.path.join(ROOT, "ops", "runbooks")
DASHBOARD = os.path.join(ROOT, "ops", "grafana", "outboxd.json")
K8S = os.path.join(ROOT, "ops", "k8s")
README = os.path.join(ROOT, "README.md")
DOCS = [README, os.path.join(ROOT, "docs", "operations.md"), os.path.join(ROOT, "docs", "architecture.md")]

# Series Prometheus itself adds to every target; not outboxd's to export.
PROMETHEUS_SYNTHETIC = {"up"}
# Labels added by the scrape, not by outboxd.
TARGET_LABELS = {"job", "instance"}
METRIC_RE = re.compile(r"\b((?:outboxd|process)_[a-z0-9_]+|up)\b(\s*\{[^}]*\})?")
MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"([^"]*)"')


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def alert_rules():
    doc = yaml.safe_load(read(ALERTS))
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exported(cluster):
    """{family or series name: [label dicts]} scraped from a running outboxd's /metrics."""
    from conftest import Database, psql

    name = "t_docs_metrics"
    psql(cluster.dsn(), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(cluster.dsn(), f"CREATE DATABASE {name}")
    db = Database(cluster, name)
    db.migrate()
    port = free_port()
    env = dict(os.environ, OUTBOXD_DATABASE_URL=db.url, OUTBOXD_HTTP_LISTEN=f"127.0.0.1:{port}",
               OUTBOXD_SMTP_URL="smtp://127.0.0.1:9", OUTBOXD_SMTP_TLS="none",
               OUTBOXD_KAFKA_BROKERS="", OUTBOXD_LOG_LEVEL="warn")
    proc = subprocess.Popen([OUTBOXD, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = None
    try:
        # The per-table families get their children from the first database measurement
        # (a few seconds after start); scrape until it has happened.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
                if "outboxd_table_dead_tuples{" in text:
                    break
            except OSError:
                if proc.poll() is not None:
                    break
            time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        psql(cluster.dsn(), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)
    assert text, f"no /metrics from outboxd run: {err[-2000:]}"
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            m = re.match(r"# TYPE (\S+) (\S+)", line)
            if m:
                series.setdefault(m.group(1), [])
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s", line)
        assert m, line
        labels = dict((k, v) for k, _op, v in MATCHER_RE.findall(m.group(2) or ""))
        series.setdefault(m.group(1), []).append(labels)
    return series


def used_selectors(expr):
    """(metric, [(label, op, value)]) for each outboxd/process/up selector in a PromQL expr."""
    out = []
    for m in METRIC_RE.finditer(expr):
        out.append((m.group(1), MATCHER_RE.findall(m.group(2) or "")))
    return out


def check_selectors(exported, where, expr):
    problems = []
    for metric, matchers in used_selectors(expr):
        if metric in PROMETHEUS_SYNTHETIC:
            continue
        if metric not in exported:
            problems.append(f"{where}: metric {metric} is not exported by outboxd")
            continue
        for label, op, value in matchers:
            if label in TARGET_LABELS or op not in ("=", "=~"):
                continue
            have = {s.get(label) for s in exported[metric]}
            wanted = value.split("|") if op == "=~" else [value]
            for w in wanted:
                if not re.fullmatch(r"[A-Za-z0-9_]+", w):
                    continue  # a real regular expression: not checked value by value
                if w not in have:
                    problems.append(f"{where}: {metric}{{{label}=\"{w}\"}} never exported (have {sorted(h for h in have if h)})")
    return problems


def test_every_alert_has_a_runbook():
    rules = alert_rules()
    assert len(rules) >= 10
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    missing = []
    for r in rules:
        url = r.get("annotations", {}).get("runbook_url", "")
        path = os.path.join(RUNBOOKS, r["alert"] + ".md")
        if url != f"ops/runbooks/{r['alert']}.md":
            missing.append(f"{r['alert']}: runbook_url {url!r}")
        if not os.path.isfile(path):
            missing.append(f"{r['alert']}: no {os.path.relpath(path, ROOT)}")
        for key in ("summary", "description"):
            if not r.get("annotations", {}).get(key):
                missing.append(f"{r['alert']}: no {key}")
        if r.get("labels", {}).get("severity") not in ("critical", "warning"):
            missing.append(f"{r['alert']}: severity must be critical or warning")
    assert not missing, "\n".join(missing)


def test_runbooks_are_not_orphans():
    alerts = {r["alert"] for r in alert_rules()}
    drills = {"README", "dr-restore-drill", "rollback-drill", "key-rotation"}
    files = {f[:-3] for f in os.listdir(RUNBOOKS) if f.endswith(".md")}
    assert drills <= files
    assert files - drills <= alerts, f"runbooks without an alert: {sorted(files - drills - alerts)}"


def test_alert_metrics_exist(exported):
    problems = []
    for r in alert_rules():
        assert used_selectors(r["expr"]), f"{r['alert']}: no metric found in expr"
        problems += check_selectors(exported, r["alert"], r["expr"])
    assert not problems, "\n".join(problems)


def test_dashboard_metrics_exist(exported):
    dash = json.loads(read(DASHBOARD))
    problems = []
    assert dash["panels"]
    for p in dash["panels"]:
        for t in p["targets"]:
            expr = t["expr"].replace("$job", "outboxd")
            assert used_selectors(expr), f"{p['title']}: no metric"
            problems += check_selectors(exported, p["title"], expr)
    assert not problems, "\n".join(problems)


def test_readme_commands_are_make_targets():
    text = read(README)
    makefile = read(os.path.join(ROOT, "Makefile"))
    for target in ("run", "test", "deps"):
        assert f"make {target}" in text, f"README does not show make {target}"
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target} target"
    assert "KAFKA=1 make run" in text
    # The local stack the README promises: make run drives run-local.sh.
    assert "run-local.sh" in makefile


def documented_env_names():
    r = run_outboxd("check-config", "--docs")
    assert r.returncode == 0, r.stderr
    names = set(re.findall(r"OUTBOXD_[A-Z0-9_]+", r.stdout))
    # migrate's own directory overrides, listed in its --help.
    m = run_outboxd("migrate", "--help")
    names |= set(re.findall(r"OUTBOXD_[A-Z0-9_]+", m.stdout + m.stderr))
    assert "OUTBOXD_DATABASE_URL" in names
    return names


def test_env_names_in_docs_and_manifests_exist():
    known = documented_env_names()
    files = [p for p in DOCS if os.path.exists(p)]
    files += [os.path.join(ROOT, "docker-compose.yml"), os.path.join(ROOT, "ops", "Dockerfile")]
    files += [os.path.join(K8S, f) for f in sorted(os.listdir(K8S)) if f.endswith(".yaml")]
    files += [os.path.join(RUNBOOKS, f) for f in sorted(os.listdir(RUNBOOKS))]
    unknown = []
    for path in files:
        for name in sorted(set(re.findall(r"OUTBOXD_[A-Z0-9_]+", read(path)))):
            if name not in known:
                unknown.append(f"{os.path.relpath(path, ROOT)}: {name}")
    assert not unknown, "names not in `outboxd check-config --docs`:\n" + "\n".join(unknown)


def test_config_keys_in_docs_exist():
    """Backquoted dotted keys such as `dispatcher.drain_timeout` are real configuration keys."""
    r = run_outboxd("check-config", "--docs")
    keys = set(re.findall(r"^\| `([a-z_.]+)` \|", r.stdout, re.M))
    assert "smtp.rate_limit" in keys
    sections = {k.split(".")[0] for k in keys}
    bad = []
    for path in [p for p in DOCS if os.path.exists(p)] + [os.path.join(RUNBOOKS, f) for f in os.listdir(RUNBOOKS)]:
        for k in set(re.findall(r"`([a-z_]+\.[a-z_.]+)`", read(path))):
            if re.search(r"\.(c|h|md|sql|yaml|yml|json|py|sh)$", k):
                continue  # a file name such as smtp.c
            if k.split(".")[0] in sections and k not in keys:
                bad.append(f"{os.path.relpath(path, ROOT)}: {k}")
    assert not bad, "unknown configuration keys:\n" + "\n".join(sorted(bad))


def test_relative_links_resolve():
    bad = []
    for path in [p for p in DOCS if os.path.exists(p)] + [os.path.join(RUNBOOKS, f) for f in os.listdir(RUNBOOKS)]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", read(path)):
            if re.match(r"[a-z]+:", target):
                continue
            if not os.path.exists(os.path.join(os.path.dirname(path), target)):
                bad.append(f"{os.path.relpath(path, ROOT)} -> {target}")
    # docs/kafka.md belongs to the Kafka mirror's documentation; until it exists the links
    # to it are reported as an expected failure rather than hidden.
    if bad and not os.path.exists(os.path.join(ROOT, "docs", "kafka.md")) \
            and all(b.endswith("kafka.md") for b in bad):
        pytest.xfail("docs/kafka.md is linked but not written yet")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_readme_sql_runs(migrated_db):
    """Every ```sql block of the README runs, in order, on a migrated database."""
    blocks = re.findall(r"```sql\n(.*?)```", read(README), re.S)
    assert len(blocks) >= 4
    # as written: the README creates the tables its examples use
    roles = []
    try:
        for b in blocks:
            for role in re.findall(r"CREATE ROLE (\w+)", b):
                roles.append(role)
                migrated_db.sql(f"DROP ROLE IF EXISTS {role}")
            migrated_db.sql(b)
        # The idempotent insert ran once with RETURNING; a second run inserts nothing.
        assert migrated_db.scalar("SELECT count(*) FROM outbox.messages WHERE idempotency_key = 'welcome:user:1001'") == "1"
        assert int(migrated_db.scalar("SELECT count(*) FROM outbox.events WHERE type = 'OrderPaid'")) == 1
        assert migrated_db.scalar("SELECT status FROM orders WHERE id = 42") == "paid"
    finally:
        for role in roles:
            migrated_db.sql(f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}", check=False)


def k8s_documents():
    docs = {}
    for f in sorted(os.listdir(K8S)):
        if f.endswith(".yaml"):
            docs[f] = [d for d in yaml.safe_load_all(read(os.path.join(K8S, f))) if d]
    return docs


def test_k8s_manifests_parse_and_fit_together():
    docs = k8s_documents()
    kinds = {d["kind"]: d for ds in docs.values() for d in ds}
    for kind in ("Kustomization", "Deployment", "Service", "ConfigMap", "Secret",
                 "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job", "ServiceMonitor"):
        assert kind in kinds, f"no {kind} in ops/k8s"
    for ds in docs.values():
        for d in ds:
            assert "namespace" not in d.get("metadata", {}), "manifests must be namespace-less"
    kust = kinds["Kustomization"]
    for res in kust["resources"]:
        assert os.path.exists(os.path.join(K8S, res)), res
    assert "secret.example.yaml" not in kust["resources"]

    dep = kinds["Deployment"]["spec"]["template"]["spec"]
    c = dep["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert dep["securityContext"]["runAsNonRoot"] is True
    cm = kinds["ConfigMap"]["data"]
    assert cm["OUTBOXD_HTTP_LISTEN"] == "0.0.0.0:9187"
    drain = int(re.fullmatch(r"(\d+)s", cm["OUTBOXD_DISPATCHER_DRAIN_TIMEOUT"]).group(1))
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    pre_sleep = int(pre[-1]) if pre[0] == "sleep" else 0
    assert dep["terminationGracePeriodSeconds"] > drain + pre_sleep
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert kinds["Job"]["spec"]["template"]["spec"]["containers"][0]["args"][0] == "migrate"
    # The Secret example holds placeholders only.
    for v in kinds["Secret"]["stringData"].values():
        assert "CHANGE_ME" in v


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_k8s_kustomize_renders():
    r = subprocess.run(["kubectl", "kustomize", K8S], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(r.stdout) if d]
    assert sorted(kinds) == sorted(["Namespace", "ConfigMap", "NetworkPolicy", "Deployment", "Service",
                                    "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job"])


def test_compose_and_dashboard_parse():
    compose = yaml.safe_load(read(os.path.join(ROOT, "docker-compose.yml")))
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["migrate"]["command"] == ["migrate"]
    assert services["outboxd"]["command"] == ["run"]
    assert "kafka" in services["kafka"]["profiles"]
    assert services["kafka"]["image"].startswith("apache/kafka:4")
    dash = json.loads(read(DASHBOARD))
    assert dash["uid"] == "outboxd"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_dockerfile_matches_install_layout():
    text = read(os.path.join(ROOT, "ops", "Dockerfile"))
    assert re.search(r"^ARG BASE=debian:12-slim$", text, re.M), "the base stays a build argument"
    assert re.search(r"^FROM \$\{BASE\} AS build", text, re.M)
    assert "make install PREFIX=/usr" in text
    assert "/usr/share/outboxd/" in text
    assert re.search(r"^USER \d+", text, re.M), "image must run as a numeric non-root user"


def test_dockerfile_runtime_stage_installs_every_library_the_binary_needs():
    """Each shared library outboxd links directly comes from a package the final stage installs
    (the image once lacked libevent_openssl and could not start)."""
    import subprocess
    text = read(os.path.join(ROOT, "ops", "Dockerfile"))
    final = text[text.rindex("\nFROM "):]
    installed = set(re.findall(r"\b(lib[a-z0-9.+-]+|ca-certificates)\b", final.split("&& rm -rf")[0]))
    binary = os.environ.get("OUTBOXD_BIN", os.path.join(ROOT, "build", "outboxd"))
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]", subprocess.run(["readelf", "-d", binary], capture_output=True,
                                                                 text=True, check=True).stdout)
    missing = []
    for lib in needed:
        path = subprocess.run(["sh", "-c", f"ldconfig -p | awk '$1 == \"{lib}\" {{print $NF; exit}}'"],
                              capture_output=True, text=True).stdout.strip()
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        pkg = owner.stdout.split(":", 1)[0]
        if pkg and pkg != "libc6" and pkg not in installed:
            missing.append(f"{lib} ({pkg})")
    assert needed and not missing, f"the final stage does not install: {missing}"
