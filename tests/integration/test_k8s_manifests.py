"""The Kubernetes manifests: every document well formed, the pod spec free of unknown fields,
the plan's autoscaler numbers, a NetworkPolicy that admits only monitoring and lets out only DNS,
PostgreSQL, SMTP and Kafka, no secret in an environment variable, and the kustomize output of
the base and the KEDA overlay."""
import glob
import os
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

K8S = os.path.join(ROOT, "ops", "k8s")
KEDA = os.path.join(ROOT, "ops", "k8s-keda")

# The fields of core/v1 Container and PodSpec that these manifests may use (a subset of the
# schema: anything else is a typo or a field the manifests should not need).
CONTAINER = {"name", "image", "imagePullPolicy", "args", "command", "env", "envFrom", "ports", "resources",
             "securityContext", "volumeMounts", "startupProbe", "readinessProbe", "livenessProbe", "lifecycle",
             "workingDir", "terminationMessagePolicy"}
POD = {"containers", "initContainers", "volumes", "securityContext", "serviceAccountName", "restartPolicy",
       "terminationGracePeriodSeconds", "automountServiceAccountToken", "topologySpreadConstraints",
       "affinity", "nodeSelector", "tolerations", "priorityClassName", "enableServiceLinks"}


def documents(*dirs):
    out = []
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, "*.yaml"))):
            with open(path, encoding="utf-8") as f:
                out += [(os.path.basename(path), doc) for doc in yaml.safe_load_all(f) if doc]
    return out


def pod_problems(doc):
    spec = doc["spec"]["template"]["spec"] if doc["kind"] in ("Deployment", "Job") else None
    if spec is None:
        return []
    problems = [f"pod spec: unknown field {k}" for k in spec if k not in POD]
    for c in spec["containers"]:
        problems += [f"container {c.get('name')}: unknown field {k}" for k in c if k not in CONTAINER]
        for e in c.get("env", []):
            if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                problems.append(f"container {c['name']}: {e['name']} from a Secret in the environment")
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {c['name']}: root file system writable or privilege escalation allowed")
    return problems


def test_every_document_is_well_formed_and_pods_have_no_unknown_field():
    docs = documents(K8S, KEDA)
    kinds = {d["kind"] for _, d in docs}
    assert {"Namespace", "NetworkPolicy", "Deployment", "HorizontalPodAutoscaler", "Job", "Service",
            "ScaledObject"} <= kinds, kinds
    assert "Ingress" not in kinds
    for name, d in docs:
        if d["kind"] == "Kustomization":
            continue
        assert d.get("apiVersion") and d.get("metadata", {}).get("name"), name
        assert pod_problems(d) == [], (name, pod_problems(d))


def test_a_typo_or_a_secret_in_the_environment_is_caught():
    dep = next(d for _, d in documents(K8S) if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["imagePullPolicyy"] = "Always"
    c.setdefault("env", []).append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
    problems = pod_problems(dep)
    assert any("imagePullPolicyy" in p for p in problems) and any("from a Secret" in p for p in problems)


def test_the_autoscaler_is_the_plans():
    hpa = next(d for _, d in documents(K8S) if d["kind"] == "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    so = next(d for _, d in documents(KEDA) if d["kind"] == "ScaledObject")
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (3, 20)
    assert "outboxd_oldest_pending_age_seconds" in so["spec"]["triggers"][0]["metadata"]["query"]


def test_network_policy_admits_monitoring_only_and_lets_out_only_the_four_services():
    np = next(d for _, d in documents(K8S) if d["kind"] == "NetworkPolicy")
    assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = np["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert [p["port"] for p in rule["ports"]] == [9187]
    ports = {p["port"] for r in np["spec"]["egress"] for p in r["ports"]}
    assert ports == {53, 5432, 587, 465, 25, 9092, 9093}


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed: kustomize output not rendered")
def test_kustomize_renders_the_base_and_the_keda_overlay():
    for d, want, unwanted in ((K8S, "HorizontalPodAutoscaler", "ScaledObject"),
                              (KEDA, "ScaledObject", "HorizontalPodAutoscaler")):
        r = subprocess.run(["kubectl", "kustomize", d], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        docs = [x for x in yaml.safe_load_all(r.stdout) if x]
        kinds = [x["kind"] for x in docs]
        assert want in kinds and unwanted not in kinds, kinds
        assert all(x["metadata"].get("namespace") == "outboxd" for x in docs if x["kind"] != "Namespace")
        assert all(pod_problems(x) == [] for x in docs)


VALIDATE = os.path.join(ROOT, "ops", "scripts", "k8s-validate.sh")


def validate(path):
    return subprocess.run(["bash", VALIDATE, path], capture_output=True, text=True, timeout=300)


def test_every_manifest_and_the_kustomize_output_validate_strictly(tmp_path):
    """Against the Kubernetes 1.29 schemas, unknown fields rejected (kubernetes-validate)."""
    files = sorted(glob.glob(os.path.join(K8S, "*.yaml")) + glob.glob(os.path.join(KEDA, "*.yaml")))
    files = [f for f in files if not f.endswith("kustomization.yaml")]
    if shutil.which("kubectl"):
        for d in (K8S, KEDA):
            out = tmp_path / (os.path.basename(d) + ".rendered.yaml")
            out.write_text(subprocess.run(["kubectl", "kustomize", d], capture_output=True, text=True,
                                          check=True, timeout=60).stdout)
            files.append(str(out))
    for f in files:
        r = validate(f)
        assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, (f, r.stdout + r.stderr)


def test_strict_validation_rejects_a_misplaced_key(tmp_path):
    """A setting put under metadata instead of data (as once happened) does not validate."""
    bad = tmp_path / "configmap.yaml"
    with open(os.path.join(K8S, "configmap.yaml"), encoding="utf-8") as f:
        bad.write_text(f.read().replace("metadata:\n", "metadata:\n  OUTBOXD_LOG_LEVEL: \"info\"\n", 1))
    r = validate(str(bad))
    assert r.returncode != 0 and "OUTBOXD_LOG_LEVEL" in r.stdout + r.stderr, r.stdout + r.stderr
