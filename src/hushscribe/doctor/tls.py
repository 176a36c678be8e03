"""The TLS check: the configured certificate and key are readable, belong together and are in
date; without TLS, plain HTTP only on loopback."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

import hushscribe
from hushscribe.doctor.base import Check, Finding, fold, mode, q
from hushscribe.doctor.files import PRIVATE
from hushscribe.doctor.network import bind_kind
from hushscribe.security.tls import fingerprint
from hushscribe.settings import Settings

EXPIRY_WARNING = datetime.timedelta(days=30)
"""A certificate this close to its end is renewed now, not on the day clients start refusing."""

NGINX_SAMPLE = Path(hushscribe.__file__).parent / "deploy" / "nginx" / "hushscribe.conf"


def _nginx_sample() -> str:
    return f"the nginx sample ({NGINX_SAMPLE})" if NGINX_SAMPLE.is_file() else "a reverse proxy"


def tls(settings: Settings) -> Check:
    server = settings.server
    if server.tls_cert is None or server.tls_key is None:
        if bind_kind(server.host) == "loopback":
            return Check("TLS", "OK", f"off: plain HTTP on {server.host} (loopback) only")
        return Check(
            "TLS",
            "WARN",
            f"serving plain HTTP on a non-loopback address ({server.host}): put it behind TLS",
            f"`hushscribe tls self-signed --host NAME --ip ADDRESS` and set server.tls_cert / "
            f"tls_key, or {_nginx_sample()}",
        )
    return _certificate("TLS", server.tls_cert, server.tls_key)


def _renew(cert: x509.Certificate, cert_path: Path, key_path: Path) -> str:
    """The command that writes a new certificate for the same names, where the settings point."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [f"--host {q(h)}" for h in san.get_values_for_type(x509.DNSName)]
        ips = [f"--ip {a}" for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        hosts, ips = ["--host NAME"], []
    same_dir = cert_path.name == "cert.pem" and key_path == cert_path.with_name("key.pem")
    out = f" --out-dir {q(cert_path.parent)}" if same_dir else ""
    return f"`hushscribe tls self-signed {' '.join(hosts + ips)}{out} --force`"


def _certificate(name: str, cert_path: Path, key_path: Path) -> Check:
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        return Check(
            name,
            "FAIL",
            f"cannot read {exc.filename}: {exc.strerror}",
            f"check server.tls_cert / tls_key and the files' owner (`ls -l {q(cert_path)} "
            f"{q(key_path)}`)",
        )
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        return Check(
            name,
            "FAIL",
            f"{cert_path} is not a PEM certificate: {exc}",
            "server.tls_cert must name a PEM certificate (chain), leaf first",
        )
    leaf = chain[0]
    renew = _renew(leaf, cert_path, key_path)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return Check(
            name,
            "FAIL",
            f"{key_path} is not an unencrypted PEM private key: {exc}",
            f"server.tls_key must name the certificate's key, without a passphrase (the server "
            f"starts unattended): `openssl pkey -in {q(key_path)} -out KEY.pem`",
        )
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    findings: list[Finding] = []
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        findings.append(
            Finding(
                "FAIL",
                f"{key_path} is not the key of {cert_path}",
                f"point server.tls_key at the certificate's own key, or write a new pair: {renew}",
            )
        )
    now = datetime.datetime.now(datetime.UTC)
    ends = leaf.not_valid_after_utc
    if ends <= now:
        findings.append(
            Finding(
                "FAIL",
                f"the certificate expired on {ends:%Y-%m-%d} ({(now - ends).days} days ago): "
                "clients refuse it",
                f"renew it: {renew}, or a new certificate from your CA",
            )
        )
    elif ends - now <= EXPIRY_WARNING:
        findings.append(
            Finding(
                "WARN",
                f"the certificate expires on {ends:%Y-%m-%d}, in {(ends - now).days} days",
                f"renew it now: {renew}, or a new certificate from your CA",
            )
        )
    if leaf.not_valid_before_utc > now:
        findings.append(
            Finding(
                "FAIL",
                f"the certificate is valid only from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} "
                "UTC: this host's clock or the certificate is wrong",
                "set the clock (`timedatectl`), or write a new certificate",
            )
        )
    if leaf.issuer == leaf.subject:
        findings.append(
            Finding(
                "WARN",
                f"self-signed (SHA-256 {fingerprint(leaf)}): browsers warn until it is trusted",
                f"import {q(cert_path)} into the clients' trust store (or compare the SHA-256 "
                "with what the browser shows), or use a certificate from your CA",
            )
        )
    key_mode = key_path.stat().st_mode
    if key_mode & PRIVATE:
        findings.append(
            Finding(
                "WARN",
                f"{key_path} is mode {mode(key_mode)}: others may read the private key",
                f"`chmod 600 {q(key_path)}`",
            )
        )
    names = _names(leaf)
    return fold(name, findings, f"{cert_path}: {names}, valid until {ends:%Y-%m-%d}")


def _names(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cert.subject.rfc4514_string()
    values = san.get_values_for_type(x509.DNSName)
    values += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return ", ".join(values) or cert.subject.rfc4514_string()
