"""Helpers shared by the go-live scripts (smoke, load, go/no-go): settings from the environment
that golive/env.sh loaded, secret-free descriptions of URLs, the /metrics parser, the metric
names the alert rules use, and the result table."""
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.environ.get("GOLIVE_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ALERTS = os.path.join(ROOT, "ops", "prometheus", "alerts.yaml")


def setting(name, default=""):
    return os.environ.get(name, default).strip()


def outboxd_bin():
    b = setting("OUTBOXD_BIN")
    if b:
        return b
    local = os.path.join(ROOT, "build", "outboxd")
    return local if os.access(local, os.X_OK) else "outboxd"


def safe_url(url):
    """user@host:port/db of a database URL, or scheme://host/path: never a password or query."""
    try:
        u = urllib.parse.urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    host = u.hostname or ""
    if u.port:
        host += f":{u.port}"
    user = f"{u.username}@" if u.username else ""
    if u.scheme.startswith("postgres"):
        return f"{user}{host}{u.path}"
    return f"{u.scheme}://{host}{u.path}"


def redact(text):
    """Removes the password (from the URL or PGPASSWORD) from text a child printed."""
    secrets = [os.environ.get("PGPASSWORD", "")]
    url = setting("PRODUCER_DATABASE_URL")
    try:
        secrets.append(urllib.parse.urlsplit(url).password or "")
    except ValueError:
        pass
    for s in secrets:
        if s:
            text = text.replace(s, "****")
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@", r"\1****@", text)


def http_get(url, timeout=5.0):
    """(status, body) of a GET; status 0 and the reason when there is no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, ValueError) as e:
        return 0, str(getattr(e, "reason", e))


def parse_metrics(text):
    """{sample name with labels: value} and the set of family names of a text exposition."""
    samples, families = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                samples[key] = float(value)
            except ValueError:
                pass
    return samples, families


def alert_metric_names():
    """Every outboxd_* and process_* metric the alert rules select (families, not _bucket)."""
    import yaml  # Debian's python3-yaml
    with open(ALERTS) as f:
        doc = yaml.safe_load(f)
    names = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            names |= set(re.findall(r"\b((?:outboxd|process)_[a-z0-9_]+)", rule.get("expr", "")))
    return sorted({re.sub(r"_(bucket|sum|count)$", "", n) for n in names})


def database_dsn():
    return setting("PRODUCER_DATABASE_URL")


def connect():
    import psycopg2  # Debian's python3-psycopg2; imported here so --help works without it
    conn = psycopg2.connect(database_dsn(), connect_timeout=10, application_name="outboxd-golive")
    conn.autocommit = True
    return conn


def run_outboxd(*args, timeout=60):
    env = dict(os.environ, OUTBOXD_DATABASE_URL=database_dsn())
    try:
        r = subprocess.run([outboxd_bin(), *args], capture_output=True, text=True, timeout=timeout, env=env)
        return r.returncode, redact(r.stdout), redact(r.stderr)
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, "", redact(str(e))


def print_table(title, rows, headers=("check", "result", "detail")):
    """rows: tuples of strings; the last column is free text."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers[:-1])]
    print(title)
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths + [0])).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths + [0])).rstrip())


def free_port():
    """A loopback port free at the time of asking."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stop_procs(procs, timeout=60):
    """SIGTERM to each still running (newest first), then wait; SIGKILL what outlives timeout."""
    import signal
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
