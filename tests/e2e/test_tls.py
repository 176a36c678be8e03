"""HTTPS end to end: ``hushscribe tls self-signed`` writes a certificate through the real CLI, a
real server serves with it, and clients see what they should: the API over TLS when they trust
that certificate, a failure when they check against the system's CAs or speak plain HTTP."""

from __future__ import annotations

import ipaddress
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.service import ADMIN_PASSWORD, Service, service_data_dir


def hushscribe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hushscribe", *args], capture_output=True, text=True, timeout=60
    )


def self_signed(out_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return hushscribe(
        "tls", "self-signed", "--host", "localhost", "--ip", "127.0.0.1", "--out-dir", str(out_dir),
        *extra,
    )  # fmt: skip


def fingerprint_of(cert: Path) -> str:
    digest = x509.load_pem_x509_certificate(cert.read_bytes()).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


@dataclass
class Tls:
    svc: Service
    cert: Path
    key: Path
    output: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    out_dir = tmp_path_factory.mktemp("tls") / "certs"
    done = self_signed(out_dir)
    assert done.returncode == 0, done.stderr
    cert, key = out_dir / "cert.pem", out_dir / "key.pem"
    root = service_data_dir(tmp_path_factory.mktemp("tls-data"), None)
    svc = Service(
        root,
        scheme="https",
        verify=str(cert),
        env={"HUSHSCRIBE_SERVER__TLS_CERT": str(cert), "HUSHSCRIBE_SERVER__TLS_KEY": str(key)},
    )
    try:
        svc.start(wait_ready=False)  # the probe itself only passes over verified TLS
        yield Tls(svc, cert, key, done.stdout)
    finally:
        svc.stop()


def test_the_cli_writes_a_server_certificate_and_says_how_to_use_it(tls: Tls) -> None:
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert not usage.key_encipherment  # an EC key (RFC 5480)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(tls.key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()  # the pair belongs together

    out = " ".join(tls.output.split())  # the console wraps to its width
    assert fingerprint_of(tls.cert) in out
    assert f'tls_cert = "{tls.cert.absolute()}"' in out
    assert f'tls_key = "{tls.key.absolute()}"' in out
    assert "[server]" in out and "microphone" in out


def test_the_server_speaks_https_with_it(tls: Tls) -> None:
    with tls.svc.client() as client:
        health = client.get("/healthz")
        models = client.get("/v1/models")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.url.scheme == "https"
    assert models.status_code == 200 and models.json()["object"] == "list"
    # The DNS name in the certificate works as well as the address.
    r = httpx.get(f"https://localhost:{tls.svc.port}/healthz", verify=tls.svc.tls_verify())
    assert r.status_code == 200
    assert re.search(r"hushscribe on https://127\.0\.0\.1:\d+", tls.svc.log()), tls.svc.log()


def test_under_tls_hsts_is_sent_and_the_session_cookie_is_secure(tls: Tls) -> None:
    with tls.svc.client() as client:
        health = client.get("/healthz")
        r = client.post("/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert health.headers["strict-transport-security"].startswith("max-age=31536000")
    assert r.status_code == 200, r.text
    flags = {f.strip().lower() for f in r.headers["set-cookie"].split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict"} <= flags


def test_a_client_checking_against_the_system_cas_refuses_it(tls: Tls) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls.svc.url + "/healthz", timeout=10)  # verify=True: the system's CAs


def test_plain_http_to_the_tls_port_gets_no_answer(tls: Tls) -> None:
    try:
        r = httpx.get(f"http://127.0.0.1:{tls.svc.port}/healthz", timeout=10)
    except httpx.HTTPError:
        pass  # the TLS handshake fails and the connection is closed
    else:
        assert r.status_code != 200, r.text
    with tls.svc.client() as client:  # and the server is none the worse for it
        assert client.get("/healthz").status_code == 200


def test_the_cli_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = hushscribe("--data-dir", str(data_dir), "tls", "self-signed", "--ip", "127.0.0.1")
    assert first.returncode == 0, first.stderr
    cert, key = data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem"  # the default place
    before = cert.read_bytes(), key.read_bytes()

    again = self_signed(data_dir / "tls")
    assert again.returncode == 2, again
    assert "already exist" in again.stderr and "--force" in again.stderr, again.stderr
    assert (cert.read_bytes(), key.read_bytes()) == before

    forced = self_signed(data_dir / "tls", "--force")
    assert forced.returncode == 0, forced.stderr
    assert cert.read_bytes() != before[0] and key.read_bytes() != before[1]
    assert fingerprint_of(cert) in " ".join(forced.stdout.split())
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in cert.parent.iterdir()) == ["cert.pem", "key.pem"]  # no temp


def test_the_cli_needs_a_name_or_address(tmp_path: Path) -> None:
    done = hushscribe("tls", "self-signed", "--out-dir", str(tmp_path))
    assert done.returncode == 2 and "--host" in done.stderr, done
    bad = hushscribe("tls", "self-signed", "--ip", "not-an-ip", "--out-dir", str(tmp_path))
    assert bad.returncode == 2 and "not an IP address" in bad.stderr, bad
    assert list(tmp_path.iterdir()) == []


def test_the_fingerprint_is_printed_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich turned fingerprints such as ``…:AB:CL:…`` into emoji; every fingerprint is printed
    as computed (a fixed one here, as a random certificate shows the bug only now and then)."""
    from typer.testing import CliRunner

    from hushscribe.cli import app
    from hushscribe.cli import tls as tls_cli

    shown = "AB:CL:VS:0K:" + ":".join(["00"] * 28)
    monkeypatch.setattr(tls_cli, "write_self_signed", lambda *a, **kw: shown)
    result = CliRunner().invoke(app, ["tls", "self-signed", "--ip", "::1", "--out-dir", "d"])
    assert result.exit_code == 0, result.output
    assert f"SHA-256      {shown}" in result.output
