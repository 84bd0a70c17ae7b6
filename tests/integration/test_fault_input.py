"""Hostile input at start-up: a FIFO (or any non-regular file) as --config or as a secret
file is refused at once with exit 2 naming the key, never waited on; a second YAML
document and an unknown OUTBOXD_* variable are reported by check-config."""
import os
import subprocess

import pytest

from conftest import OUTBOXD

DB = "database:\n  url: postgresql://outboxd@127.0.0.1:1/app\n"


def run(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXD_")}
    e.update(env or {})
    return subprocess.run([OUTBOXD, *args], capture_output=True, text=True, env=e, timeout=10)


@pytest.fixture
def fifo(tmp_path):
    p = tmp_path / "pipe"
    os.mkfifo(p)
    return str(p)


@pytest.mark.parametrize("cmd", ["check-config", "run"])
def test_fifo_as_config_is_refused_not_waited_on(fifo, cmd):
    r = run(cmd, "--config", fifo)
    assert r.returncode == 2, r.stderr
    assert "--config" in r.stderr and "not a regular file" in r.stderr


@pytest.mark.parametrize("key", ["smtp.password_file", "http.console_token_file"])
@pytest.mark.parametrize("cmd", ["check-config", "run"])
def test_fifo_as_secret_file_is_refused_naming_the_key(tmp_path, fifo, key, cmd):
    section, name = key.split(".")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(DB + f"{section}:\n  {name}: {fifo}\n")
    r = run(cmd, "--config", str(cfg))
    assert r.returncode == 2, r.stderr
    assert key in r.stderr and "not a regular file" in r.stderr


def test_directory_as_secret_file_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(DB + f"smtp:\n  password_file: {tmp_path}\n")
    r = run("check-config", "--config", str(cfg))
    assert r.returncode == 2 and "smtp.password_file" in r.stderr


def test_second_yaml_document_is_reported(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("---\n" + DB + "---\nsmtp:\n  url: smtp://127.0.0.1:25\n")
    r = run("check-config", "--config", str(cfg))
    assert r.returncode == 2, r.stderr
    assert f"{cfg}:4: a second YAML document" in r.stderr
    # one explicit document is fine
    cfg.write_text("---\n" + DB)
    assert run("check-config", "--config", str(cfg)).returncode == 0


def test_unknown_outboxd_variable_is_reported_without_its_value(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(DB)
    r = run("check-config", "--config", str(cfg), env={"OUTBOXD_SMTP_PASWORD": "s3cret-value"})
    assert "OUTBOXD_SMTP_PASWORD" in r.stderr and "not a configuration key" in r.stderr
    assert "s3cret-value" not in r.stderr + r.stdout


def test_migrate_variables_are_not_reported_as_unknown(tmp_path):
    """One environment serves `migrate` and `run`: the variables migrate reads are no typo."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(DB)
    r = run("check-config", "--config", str(cfg),
            env={"OUTBOXD_MIGRATIONS_DIR": str(tmp_path), "OUTBOXD_SQL_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "not a configuration key" not in r.stderr, r.stderr
