"""Security audit of one environment: findings by severity, exit 1 on a critical one.

What is deployed is read from the manifests (AUDIT_MANIFESTS, default ops/k8s) and the image's
Dockerfile (AUDIT_DOCKERFILE); outboxd settings from the ConfigMap, overridden by OUTBOXD_*
variables of the environment's settings file. What is live is checked when the settings name it
and it answers: the database logins (DISPATCHER_DATABASE_URL, PRODUCER_DATABASE_URL, passwords
from files), the relay's certificate (AUDIT_SMTP_RELAY=host:port). A check that cannot run is
SKIP with the reason, never a pass. The bill of materials lists the libraries the binary loads,
by Debian package and version.
"""
import glob
import os
import re
import subprocess
import sys

import common as c

ORDER = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO", "SKIP")
findings = []


def finding(severity, check, detail):
    findings.append((severity, check, detail))


def manifests():
    """(path, document text) of every YAML document under the manifests directory."""
    root = c.setting("AUDIT_MANIFESTS") or os.path.join(c.ROOT, "ops", "k8s")
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            for doc in re.split(r"^---\s*$", f.read(), flags=re.M):
                if re.search(r"^kind:", doc, re.M):
                    docs.append((os.path.relpath(path, c.ROOT), doc))
    return root, docs


def kind(doc):
    m = re.search(r"^kind:\s*(\S+)", doc, re.M)
    return m.group(1) if m else ""


def deployed_settings(docs):
    """OUTBOXD_* of the ConfigMap, then of the environment's settings (which win)."""
    out = {}
    for _, doc in docs:
        if kind(doc) == "ConfigMap":
            out.update(dict(re.findall(r'^\s+(OUTBOXD_[A-Z0-9_]+):\s*"?([^"\n]*)"?\s*$', doc, re.M)))
    out.update({k: v for k, v in os.environ.items() if k.startswith("OUTBOXD_") and k != "OUTBOXD_BIN"})
    return out


def check_smtp_tls(s):
    url, tls = s.get("OUTBOXD_SMTP_URL", ""), s.get("OUTBOXD_SMTP_TLS", "required")
    host = re.sub(r"^smtps?://([^:/]*).*$", r"\1", url)
    if url.startswith("smtps://") or tls == "required":
        finding("INFO", "SMTP TLS", f"required and verified against {'smtp.ca_file' if s.get('OUTBOXD_SMTP_CA_FILE') else 'the system store'} ({c.safe_url(url) or 'default URL'})")
    elif host in ("127.0.0.1", "localhost", "::1"):
        finding("LOW", "SMTP TLS", f"smtp.tls={tls} to a loopback relay (a local stack only)")
    elif tls == "opportunistic":
        finding("HIGH", "SMTP TLS", "smtp.tls=opportunistic: STARTTLS can be stripped; set required")
    else:
        finding("CRITICAL", "SMTP TLS", f"smtp.tls={tls} to {host}: mail and AUTH credentials in clear")


def check_kafka(s):
    if not s.get("OUTBOXD_KAFKA_BROKERS"):
        finding("INFO", "Kafka TLS", "mirror off (kafka.brokers empty)")
        return
    proto = s.get("OUTBOXD_KAFKA_SECURITY_PROTOCOL", "plaintext").lower()
    if proto not in ("ssl", "sasl_ssl"):
        finding("CRITICAL", "Kafka TLS", f"kafka.security_protocol={proto}: events in clear; use sasl_ssl")
    elif not s.get("OUTBOXD_KAFKA_SSL_CA_FILE"):
        finding("MEDIUM", "Kafka TLS", f"{proto} against the system store: pin the cluster's CA (kafka.ssl_ca_file)")
    else:
        finding("INFO", "Kafka TLS", f"{proto} with kafka.ssl_ca_file")
    if proto == "ssl":
        finding("MEDIUM", "Kafka auth", "ssl without SASL: the broker cannot tell outboxd from any TLS client")


SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$", re.I)


def check_secrets(docs, s):
    bad = []
    for path, doc in docs:
        if re.search(r"secretKeyRef:", doc):
            bad.append(f"{path}: an environment variable from a Secret (secretKeyRef)")
        for name in re.findall(r"-\s*name:\s*(\S+)\s*\n\s*value:", doc):
            if SECRETISH.search(name) and not name.endswith("_FILE"):
                bad.append(f"{path}: {name} as a plain environment value")
        if kind(doc) == "Secret" and not path.endswith(".example.yaml"):
            bad.append(f"{path}: a Secret with its values in the repository")
    for k, v in s.items():
        if SECRETISH.search(k) and not k.endswith("_FILE") and v:
            bad.append(f"{k} set in the environment")
        if re.match(r"^[a-z]+://[^/@:]+:[^/@]+@", v):
            bad.append(f"{k} carries a password in its URL")
    for b in bad:
        finding("CRITICAL", "secrets from files", b)
    if not bad:
        finding("INFO", "secrets from files", "no secret in an environment variable or a manifest")


def check_image(docs):
    path = c.setting("AUDIT_DOCKERFILE") or os.path.join(c.ROOT, "ops", "Dockerfile")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        finding("SKIP", "image non-root", f"{path}: {e.strerror}")
        text = None
    if text is not None:
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        if not users or users[-1].split(":")[0] in ("0", "root"):
            finding("CRITICAL", "image non-root", f"{os.path.basename(path)}: the final stage runs as root")
        else:
            finding("INFO", "image non-root", f"USER {users[-1]}")
    pods = [(p, d) for p, d in docs if kind(d) in ("Deployment", "Job", "StatefulSet", "DaemonSet")]
    for p, d in pods:
        for want, sev in (("readOnlyRootFilesystem: true", "HIGH"), ("runAsNonRoot: true", "HIGH"),
                          ("allowPrivilegeEscalation: false", "MEDIUM")):
            if want not in d:
                finding(sev, "pod security", f"{p}: no {want}")
    if pods and not [f for f in findings if f[1] == "pod security"]:
        finding("INFO", "pod security", "non-root, read-only root file system, no privilege escalation in every pod")


def check_network(docs):
    if any(kind(d) == "NetworkPolicy" for _, d in docs):
        finding("INFO", "NetworkPolicy", "present")
    else:
        finding("HIGH", "NetworkPolicy", "none: any pod can reach the metrics port and outboxd can reach anything")
    exposed = False
    for p, d in docs:
        if kind(d) == "Ingress":
            finding("HIGH", "metrics exposure", f"{p}: an Ingress (the dispatcher serves no clients)")
            exposed = True
        if kind(d) == "Service":
            m = re.search(r"^\s+type:\s*(\S+)", d, re.M)
            if m and m.group(1) in ("LoadBalancer", "NodePort"):
                finding("CRITICAL", "metrics exposure", f"{p}: Service type {m.group(1)} exposes /metrics and the console")
                exposed = True
    if not exposed:
        finding("INFO", "metrics exposure", "ClusterIP only, no Ingress")


def check_role(label, url_setting, pw_setting, want):
    url = c.setting(url_setting)
    if not url:
        finding("SKIP", f"{label} role", f"{url_setting} not set")
        return
    env = dict(os.environ)
    pwfile = c.setting(pw_setting)
    if pwfile:
        try:
            with open(pwfile, encoding="utf-8") as f:
                env["PGPASSWORD"] = f.read().rstrip("\r\n")
        except OSError as e:
            finding("SKIP", f"{label} role", f"{pw_setting}: {e.strerror}")
            return
    q = ("SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, r.rolreplication, "
         "coalesce((SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members m "
         "JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), '') "
         "FROM pg_roles r WHERE r.rolname = current_user")
    r = subprocess.run(["psql", "-X", "-A", "-t", "-F", "|", "-d", url, "-c", q], capture_output=True, text=True,
                       env=env, timeout=30)
    if r.returncode != 0:
        finding("SKIP", f"{label} role", f"cannot connect to {c.safe_url(url)}: {c.redact(r.stderr.strip()).splitlines()[0][:200] if r.stderr.strip() else r.returncode}")
        return
    name, sup, crole, cdb, bypass, repl, groups = r.stdout.strip().split("|")
    powers = [p for p, v in (("superuser", sup), ("createrole", crole), ("createdb", cdb),
                             ("bypassrls", bypass), ("replication", repl)) if v == "t"]
    if powers:
        finding("CRITICAL", f"{label} role", f"{name} is {', '.join(powers)}: it must hold only {want}")
        return
    member = [g for g in groups.split(",") if g]
    if member != [want]:
        finding("HIGH", f"{label} role", f"{name} is a member of {member or 'nothing'}; want only {want}")
    else:
        finding("INFO", f"{label} role", f"{name} holds only {want}")


def check_relay_cert():
    relay = c.setting("AUDIT_SMTP_RELAY")
    if not relay:
        finding("SKIP", "relay certificate", "AUDIT_SMTP_RELAY (host:port) not set")
        return
    host = relay.rsplit(":", 1)[0]
    port = relay.rsplit(":", 1)[1] if ":" in relay else "587"
    args = ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", host, "-showcerts"]
    if port != "465":
        args[2:2] = ["-starttls", "smtp"]
    try:
        r = subprocess.run(args, input="", capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        finding("SKIP", "relay certificate", f"{relay}: no answer in 20 s")
        return
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
    if not m:
        finding("SKIP", "relay certificate", f"{relay}: no certificate ({r.stderr.strip().splitlines()[-1:] or 'no TLS'})")
        return
    x = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-subject"], input=m.group(0),
                       capture_output=True, text=True)
    end = re.search(r"notAfter=(.*)", x.stdout).group(1).strip()
    days = (int(subprocess.run(["date", "-d", end, "+%s"], capture_output=True, text=True).stdout)
            - int(subprocess.run(["date", "+%s"], capture_output=True, text=True).stdout)) // 86400
    if days < 0:
        finding("CRITICAL", "relay certificate", f"{relay}: expired {-days} days ago ({end})")
    elif days < 14:
        finding("HIGH", "relay certificate", f"{relay}: expires in {days} days ({end})")
    elif days < 30:
        finding("MEDIUM", "relay certificate", f"{relay}: expires in {days} days ({end})")
    else:
        finding("INFO", "relay certificate", f"{relay}: valid for {days} more days ({end})")


def sbom():
    """Debian package and version of each shared library the binary loads."""
    binary = c.outboxd_bin()
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if r.returncode != 0:
        finding("SKIP", "bill of materials", f"ldd {binary}: {r.stderr.strip()[:200]}")
        return []
    pkgs = {}
    for path in re.findall(r"=>\s*(/\S+)", r.stdout):
        real = os.path.realpath(path)
        for candidate in (path, real, real.replace("/usr/lib/", "/lib/", 1)):
            q = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if q.returncode == 0:
                pkg = q.stdout.split(":", 1)[0].split(",")[0].strip()
                v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
                pkgs[pkg] = v.stdout.strip()
                break
    finding("INFO", "bill of materials", f"{len(pkgs)} Debian packages behind {os.path.basename(binary)}'s libraries")
    return sorted(pkgs.items())


def main():
    env_name = c.setting("GOLIVE_ENV", "local")
    root, docs = manifests()
    settings = deployed_settings(docs)
    check_smtp_tls(settings)
    check_kafka(settings)
    check_secrets(docs, settings)
    check_image(docs)
    check_network(docs)
    check_role("dispatcher", "DISPATCHER_DATABASE_URL", "DISPATCHER_DATABASE_PASSWORD_FILE", "outbox_dispatcher")
    check_role("producer", "PRODUCER_DATABASE_URL", "PRODUCER_DATABASE_PASSWORD_FILE", "outbox_producer")
    check_relay_cert()
    packages = sbom()

    findings.sort(key=lambda f: ORDER.index(f[0]))
    c.print_table(f"Security audit: {env_name} (manifests {os.path.relpath(root, c.ROOT)})",
                  [(chk, sev, d) for sev, chk, d in findings], headers=("check", "severity", "detail"))
    if packages:
        print("\nBill of materials (Debian packages of the loaded libraries):")
        for pkg, ver in packages:
            print(f"  {pkg} {ver}")
    counts = {s: sum(1 for f in findings if f[0] == s) for s in ORDER}
    verdict = "FAIL" if counts["CRITICAL"] else "PASS"
    print("\nsecurity-audit: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + f": {verdict}")
    return 1 if counts["CRITICAL"] else 0


if __name__ == "__main__":
    sys.exit(main())
