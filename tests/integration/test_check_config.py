"""`outboxd check-config` as a black box: every bad fixture exits 2 with an error line starting
with the key path, good files exit 0, --print masks secrets, and usage errors exit 2.
Needs no services."""
import glob
import os
import re
import subprocess

import pytest

from conftest import OUTBOXD, ROOT

FIXTURES = os.path.join(ROOT, "tests", "unit", "fixtures", "config")
BAD = sorted(glob.glob(os.path.join(FIXTURES, "bad_*.yaml")))
SECRETS = ["Smtp-Secret-4d8e", "not-the-real-password-7f3a", "Db-Secret-91c2"]

pytestmark = pytest.mark.skipif(not os.access(OUTBOXD, os.X_OK), reason="build/outboxd not built")


def clean_env(**extra):
    """The caller's environment without OUTBOXD_* variables (they would change the outcome),
    plus the one key every configuration needs (a test passes None to leave it out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    env["OUTBOXD_DATABASE_URL"] = "postgresql://127.0.0.1/app"
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def check_config(*args, **env):
    # The fixtures name secret files relative to the repository root.
    return subprocess.run([OUTBOXD, "check-config", *args], capture_output=True, text=True,
                          env=clean_env(**env), cwd=ROOT, timeout=30)


def expected_key(path):
    with open(path) as f:
        first = f.readline()
    m = re.match(r"# expect: (\S+)", first)
    assert m, f"{path} must start with '# expect: key.path'"
    return m.group(1)


def names_key(stderr, key):
    return any(line.startswith(key + ":") or line.startswith(key + " (") for line in stderr.splitlines())


def test_enough_bad_fixtures():
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=[os.path.basename(p) for p in BAD])
def test_bad_file_exits_2_naming_the_key(path):
    key = expected_key(path)
    r = check_config("--config", path)
    assert r.returncode == 2, r.stderr
    assert names_key(r.stderr, key), f"no line starts with {key}:\n{r.stderr}"
    assert r.stdout == ""


@pytest.mark.parametrize("name", ["good_empty.yaml", "good_full.yaml", "good_secret.yaml"])
def test_good_file_exits_0(name):
    r = check_config("--config", os.path.join(FIXTURES, name))
    assert r.returncode == 0, r.stderr


def test_example_file_is_valid():
    r = check_config("--config", os.path.join(ROOT, "ops", "outboxd.example.yaml"))
    assert r.returncode == 0, r.stderr


def test_environment_alone_is_valid():
    r = check_config(OUTBOXD_DATABASE_URL="postgresql://127.0.0.1/app", OUTBOXD_SMTP_URL="smtp://127.0.0.1:2525",
                     OUTBOXD_SMTP_TLS="none", OUTBOXD_HTTP_LISTEN="")
    assert r.returncode == 0, r.stderr


def test_print_masks_secrets():
    r = check_config("--config", os.path.join(FIXTURES, "good_secret.yaml"), "--print",
                     OUTBOXD_DATABASE_URL=None)  # the file's URL, with its password
    assert r.returncode == 0, r.stderr
    for secret in SECRETS:
        assert secret not in r.stdout and secret not in r.stderr
    assert '  password: "********"' in r.stdout
    assert '  sasl_password: "********"' in r.stdout
    assert "postgresql://outboxd:********@127.0.0.1:5432/app" in r.stdout


def test_print_shows_env_overrides_and_masks_env_secret():
    r = check_config("--print", OUTBOXD_SMTP_POOL_SIZE="12", OUTBOXD_SMTP_USERNAME="u",
                     OUTBOXD_SMTP_PASSWORD="Env-Secret-0b1c")
    assert r.returncode == 0, r.stderr
    assert "  pool_size: 12\n" in r.stdout
    assert "Env-Secret-0b1c" not in r.stdout + r.stderr


def test_env_error_names_key_and_variable():
    r = check_config(OUTBOXD_SMTP_POOL_SIZE="2.5", OUTBOXD_DISPATCHER_LEASE="30")
    assert r.returncode == 2
    assert "smtp.pool_size (OUTBOXD_SMTP_POOL_SIZE): " in r.stderr
    assert "dispatcher.lease (OUTBOXD_DISPATCHER_LEASE): " in r.stderr


def test_every_error_is_reported(tmp_path):
    f = tmp_path / "many.yaml"
    f.write_text("dispatcher: {batch_size: 2.5, lease: 10}\nsmtp: {tls: strict, pool_size: 0}\n"
                 "kafka: {lifecycle_events: maybe}\n")
    r = check_config("--config", str(f))
    assert r.returncode == 2
    for key in ["dispatcher.batch_size", "dispatcher.lease", "smtp.tls", "smtp.pool_size", "kafka.lifecycle_events"]:
        assert names_key(r.stderr, key), r.stderr


@pytest.mark.parametrize("url", [None, ""])
def test_missing_database_url_exits_2_naming_the_key(url):
    r = check_config("--config", os.path.join(FIXTURES, "good_empty.yaml"), OUTBOXD_DATABASE_URL=url)
    assert r.returncode == 2, r.stderr
    assert names_key(r.stderr, "database.url"), r.stderr
    assert "OUTBOXD_DATABASE_URL" in r.stderr


@pytest.mark.parametrize("command", ["status", "run"])
def test_command_without_database_url_exits_2_naming_the_key(command):
    """Not a retry loop twice a second for ever: `run` says what is missing and stops."""
    r = subprocess.run([OUTBOXD, command], capture_output=True, text=True,
                       env=clean_env(OUTBOXD_DATABASE_URL="", OUTBOXD_HTTP_LISTEN=""), cwd=ROOT, timeout=30)
    assert r.returncode == 2, r.stderr
    assert names_key(r.stderr, "database.url"), r.stderr


def test_missing_config_file_names_it():
    r = check_config("--config", "/nonexistent/outboxd.yaml")
    assert r.returncode == 2
    assert "/nonexistent/outboxd.yaml" in r.stderr


# Files read after start-up (CA bundles, the OAuth token): a FIFO would hold the daemon in
# open() for ever and a device never ends, so check-config refuses them naming the key.
LATER_FILES = {"smtp.ca_file": "OUTBOXD_SMTP_CA_FILE", "smtp.oauth_token_file": "OUTBOXD_SMTP_OAUTH_TOKEN_FILE",
               "kafka.ssl_ca_file": "OUTBOXD_KAFKA_SSL_CA_FILE"}


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
@pytest.mark.parametrize("key", sorted(LATER_FILES))
def test_a_file_read_later_must_be_a_regular_file(tmp_path, key, kind):
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif kind == "device":
        path = tmp_path / "zero"
        path.symlink_to("/dev/zero")
    else:
        path = tmp_path
    r = check_config(OUTBOXD_SMTP_USERNAME="mailer", **{LATER_FILES[key]: str(path)})
    if kind == "directory" and key == "kafka.ssl_ca_file":  # librdkafka takes a directory of CAs
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 2, r.stderr
    assert names_key(r.stderr, key) and "not a regular file" in r.stderr, r.stderr


@pytest.mark.parametrize("listen,ok", [("example.com:9187", False), ("999.1.1.1:9187", False),
                                       ("[fe80::1::2]:9187", False), ("localhost:9187", True),
                                       ("0.0.0.0:9187", True), ("[::1]:9187", True)])
def test_http_listen_is_a_numeric_address(listen, ok):
    """The HTTP port binds without a name lookup: check-config refuses what run could not bind."""
    r = check_config(OUTBOXD_HTTP_LISTEN=listen)
    if ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 2 and names_key(r.stderr, "http.listen"), r.stderr


def test_smtp_url_helo_without_spaces():
    """The path of smtp.url is the EHLO name, held to smtp.helo_name's rule (no spaces)."""
    r = check_config(OUTBOXD_SMTP_URL="smtp://relay.example/mail host")
    assert r.returncode == 2 and names_key(r.stderr, "smtp.url"), r.stderr
    assert check_config(OUTBOXD_SMTP_URL="smtp://relay.example/mail.example").returncode == 0


@pytest.mark.parametrize("args", [["--bogus"], ["--config"], ["--docs", "--print"]])
def test_bad_usage_exits_2(args):
    r = check_config(*args)
    assert r.returncode == 2


def test_docs_and_example_match_the_repository():
    r = check_config("--example")
    assert r.returncode == 0
    with open(os.path.join(ROOT, "ops", "outboxd.example.yaml")) as f:
        assert f.read() == r.stdout
    r = check_config("--docs")
    assert r.returncode == 0
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        assert r.stdout in f.read()

