"""Throwaway TLS material for SMTP tests, made at run time with the openssl command into a
temporary directory: a CA and a server certificate it signs for localhost/127.0.0.1, a
self-signed certificate nobody trusts, and a CA-signed certificate for the wrong host name.
Nothing here is ever written into the repository."""
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import pytest

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
DAYS = "2"
# P-256 keys: generated in milliseconds, accepted by OpenSSL clients and by libcurl.
KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
SERVER_EXT = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth\n"
    "subjectAltName={san}\n"
)


@dataclass
class CertSet:
    """Paths of the generated PEM files (all inside `directory`).

    ca_cert: the CA clients are told to trust (CURLOPT_CAINFO / curl --cacert).
    server_cert/server_key: signed by that CA for DNS:localhost and IP:127.0.0.1.
    untrusted_cert/untrusted_key: self-signed for the same names; verification must fail.
    wrong_host_cert/wrong_host_key: signed by the CA but only for mail.invalid, so peer
    verification passes and host-name verification fails.
    """

    directory: str
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    untrusted_cert: str
    untrusted_key: str
    wrong_host_cert: str
    wrong_host_key: str

    def pair(self, kind="trusted"):
        """Returns (cert, key) for kind "trusted", "untrusted" or "wrong-host"."""
        return {
            "trusted": (self.server_cert, self.server_key),
            "untrusted": (self.untrusted_cert, self.untrusted_key),
            "wrong-host": (self.wrong_host_cert, self.wrong_host_key),
        }[kind]


def _openssl(*args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr.strip()}")


def _signed(d, name, cn, san):
    """Makes name.key/name.pem for cn, signed by d/ca.pem with the given subjectAltName."""
    _openssl("req", *KEY_ARGS, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={cn}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(SERVER_EXT.format(san=san))
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", f"{name}.ext",
             "-out", f"{name}.pem", cwd=d)
    return os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")


def make_certs(directory=None):
    """Generates a full CertSet into directory (a new temporary one if None).

    Returns the CertSet; the caller removes the directory (see remove_certs)."""
    d = directory or tempfile.mkdtemp(prefix="outboxd-certs-")
    os.makedirs(d, exist_ok=True)
    _openssl("req", "-x509", *KEY_ARGS, "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS,
             "-sha256", "-subj", "/CN=outboxd test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    server_cert, server_key = _signed(d, "server", "localhost", "DNS:localhost,IP:127.0.0.1")
    wrong_cert, wrong_key = _signed(d, "wronghost", "mail.invalid", "DNS:mail.invalid")
    _openssl("req", "-x509", *KEY_ARGS, "-keyout", "untrusted.key", "-out", "untrusted.pem",
             "-days", DAYS, "-sha256", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    # The servers may run as another user; the directory is throwaway, so let them read it.
    for name in os.listdir(d):
        os.chmod(os.path.join(d, name), 0o644)
    os.chmod(d, 0o755)
    return CertSet(
        directory=d,
        ca_cert=os.path.join(d, "ca.pem"), ca_key=os.path.join(d, "ca.key"),
        server_cert=server_cert, server_key=server_key,
        untrusted_cert=os.path.join(d, "untrusted.pem"),
        untrusted_key=os.path.join(d, "untrusted.key"),
        wrong_host_cert=wrong_cert, wrong_host_key=wrong_key,
    )


def remove_certs(certs):
    """Deletes the directory of a CertSet made by make_certs."""
    shutil.rmtree(certs.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def test_certs():
    """Session-wide CertSet; the keys are deleted when the session ends."""
    certs = make_certs()
    try:
        yield certs
    finally:
        remove_certs(certs)
