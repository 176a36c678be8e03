"""A self-signed certificate for a first install, so the service can speak HTTPS at once.

Browsers let a page use the microphone only in a secure context: HTTPS, or ``localhost``. A closed
network often has no certificate authority at hand on day one; this writes a certificate good
enough to start with (the browser shows a warning until it is trusted) and that states exactly
what it is for: a leaf (not a CA), for TLS servers only, for the names and addresses given.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hushscribe.errors import ConfigError
from hushscribe.fsutil import atomic_write_bytes

MAX_DAYS = 825
"""Longest validity browsers accept for a TLS server certificate they are asked to trust."""
BACKDATE = datetime.timedelta(minutes=5)
"""``not_before`` lies this far back, so a client whose clock is a little behind accepts it."""


def write_self_signed(
    cert_path: Path,
    key_path: Path,
    hosts: list[str],
    ips: list[str],
    days: int = MAX_DAYS,
    *,
    force: bool = False,
) -> str:
    """Write a new EC P-256 key (mode 0600) and a self-signed certificate for ``hosts`` (DNS
    names) and ``ips``; return the certificate's SHA-256 fingerprint (``AB:CD:…``), which users
    compare with what the browser shows before trusting it.

    Refuses (ConfigError) to replace existing files unless ``force``: a certificate that clients
    already trust must not change by accident. Both files are written whole or not at all.
    """
    if not hosts and not ips:
        raise ConfigError("name at least one host name or IP address for the certificate")
    if not 1 <= days <= MAX_DAYS:
        raise ConfigError(f"days must be between 1 and {MAX_DAYS}, browsers refuse longer")
    try:
        addresses = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise ConfigError(f"not an IP address: {exc}") from None
    existing = [str(p) for p in (cert_path, key_path) if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{' and '.join(existing)} already exist; pass --force to replace them (clients that "
            "trust the old certificate will then refuse the new one)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(key, hosts, addresses, days)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # the server starts unattended; the file mode guards it
    )
    for path in (cert_path, key_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(key_path, key_pem, mode=0o600)
    atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return fingerprint(cert)


def _certificate(
    key: ec.EllipticCurvePrivateKey,
    hosts: list[str],
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    days: int,
) -> x509.Certificate:
    """A leaf certificate for servers: clients match the SAN (never the CN) against the URL.
    Key usage is digitalSignature only: TLS 1.2 ECDHE and TLS 1.3 sign with the key and never
    encrypt to it."""
    common = hosts[0] if hosts else str(addresses[0])
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hushscribe (self-signed)"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    alt_names += [x509.IPAddress(a) for a in addresses]
    usage = x509.KeyUsage(
        digital_signature=True,
        key_encipherment=False,  # an EC key signs; RFC 5480 forbids keyEncipherment for it
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, as browsers and ``openssl x509 -fingerprint`` show it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def read_fingerprint(cert_path: Path) -> str:
    """The fingerprint of the (first) certificate in a PEM file."""
    return fingerprint(x509.load_pem_x509_certificate(cert_path.read_bytes()))
