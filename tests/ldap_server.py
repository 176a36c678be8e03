"""A real OpenLDAP ``slapd`` on free loopback ports, for directory sign-in tests.

The directory (``dc=example,dc=org``) is built with ``slapadd`` from :data:`LDIF` before slapd
starts; slapd serves ``ldap://`` (with StartTLS) and ``ldaps://`` with a certificate from a CA made
here. Only the service account ``cn=hushscribe,ou=services`` and each user (itself) may read
entries: an anonymous search finds nothing, so the service bind is needed. ``dynlist`` computes
``memberOf`` from the groups, for settings without ``group_base``.

Use the module-scoped ``slapd`` fixture (``from tests.ldap_server import slapd  # noqa: F401``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hushscribe.settings import LdapSettings

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
SERVICE_DN = f"cn=hushscribe,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "svc-Hq7r2Lw9xZ"
ROOT_PASSWORD = "root-Pz3k8Vn1"

PASSWORDS = {
    "alice": "alice-Wonder 4land",
    "olga": "Ölga-pässwört ✓ 7",  # not ASCII: sent as UTF-8
    "audrey": "audrey-Aud1t!",
    "mallory": "mallory-Ev1l",
    "twin": "twin-Tw1n",
}
GROUP_ROLES = {
    f"cn=transcribers,{GROUPS}": "user",
    f"cn=hs-admins,{GROUPS}": "admin",
    f"cn=auditors,{GROUPS}": "auditor",
}


def dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def ssha(password: str) -> str:
    """``{SSHA}`` as slappasswd writes it: SHA-1 of password + salt, then the salt."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _person(uid: str, cn: str, extra: str = "", base: str = PEOPLE) -> str:
    password = f"userPassword: {ssha(PASSWORDS[uid])}\n" if uid in PASSWORDS else ""
    return (
        f"dn: uid={uid},{base}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\n"
        f"sn: {cn.split()[-1]}\n{extra}{password}\n"
    )


def _group(cn: str, *members: str) -> str:
    lines = "".join(f"member: {m}\n" for m in members)
    return f"dn: cn={cn},{GROUPS}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}\n"


def _ou(ou: str, parent: str = SUFFIX) -> str:
    return f"dn: ou={ou},{parent}\nobjectClass: organizationalUnit\nou: {ou}\n\n"


def ldif() -> str:
    return (
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\n"
        "dc: example\n\n"
        + _ou("people") + _ou("contractors", PEOPLE) + _ou("groups") + _ou("services")
        + f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: hushscribe\nuserPassword: {ssha(SERVICE_PASSWORD)}\n\n"
        + _person("alice", "Alice Liddell", "displayName: Alice L.\n")
        + _person("olga", "Olga Adminova")
        + _person("audrey", "Audrey Auditor")
        + _person("mallory", "Mallory Malicious")
        + _person("nopass", "No Password")  # no userPassword: cannot bind
        + _person("twin", "Twin One")  # two entries with one uid: ambiguous, refused
        + _person("twin", "Twin Two", base=f"ou=contractors,{PEOPLE}")
        + _group("transcribers", dn("alice"), dn("olga"), dn("audrey"), dn("nopass"))
        + _group("hs-admins", dn("olga"))
        + _group("auditors", dn("audrey"))
        + _group("others", dn("mallory"), dn("twin"))
    )  # fmt: skip


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_ca(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Name]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, subject


def make_server_cert(
    directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name
) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (not for 127.0.0.2: a wrong-host check)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Slapd:
    """One slapd with its own config, database, certificates and ports (kept across restarts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.ldaps_port = free_port(), free_port()
        self.other_host_port = free_port("127.0.0.2")  # same certificate, a name it does not hold
        self.ca_file, ca_key, ca_name = make_ca(root, "test-ca")
        self.wrong_ca_file, _, _ = make_ca(root, "other-ca")
        cert, key = make_server_cert(root, ca_key, ca_name)
        self.log_path = root / "slapd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        (root / "db").mkdir()
        self.conf = root / "slapd.conf"
        schema = "/etc/ldap/schema"
        self.conf.write_text(
            "".join(f"include {schema}/{s}.schema\n"
                    for s in ("core", "cosine", "inetorgperson", "nis", "dyngroup"))
            + "modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload dynlist\n"
            f"pidfile {root}/slapd.pid\nargsfile {root}/slapd.args\n"
            f"TLSCACertificateFile {self.ca_file}\nTLSCertificateFile {cert}\n"
            f"TLSCertificateKeyFile {key}\n"
            f'database mdb\nsuffix "{SUFFIX}"\nrootdn "cn=admin,{SUFFIX}"\n'
            f"rootpw {ROOT_PASSWORD}\ndirectory {root}/db\nmaxsize 16777216\n"
            "access to attrs=userPassword\n  by anonymous auth\n  by * none\n"
            f'access to *\n  by dn.exact="{SERVICE_DN}" read\n  by self read\n  by * none\n'
            "overlay dynlist\n"
            "dynlist-attrset groupOfURLs memberURL member+memberOf@groupOfNames\n"
        )  # fmt: skip
        (root / "test.ldif").write_text(ldif())
        subprocess.run(
            [SLAPADD, "-q", "-f", str(self.conf), "-l", str(root / "test.ldif")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def other_host_url(self) -> str:
        """``ldaps://127.0.0.2:…``: served by this slapd, not named in its certificate."""
        return f"ldaps://127.0.0.2:{self.other_host_port}"

    def settings(self, **over: Any) -> LdapSettings:
        """StartTLS with the test CA, the service account, groups searched under ou=groups."""
        values: dict[str, Any] = {
            "url": self.url,
            "start_tls": True,
            "ca_file": self.ca_file,
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PASSWORD,
            "user_base": PEOPLE,
            "group_base": GROUPS,
            "group_roles": GROUP_ROLES,
            "timeout_s": 3,
        }
        values.update(over)
        return LdapSettings(**values)

    def start(self, timeout: float = 20) -> Slapd:
        assert self.proc is None or self.proc.poll() is not None, "slapd is already running"
        urls = f"{self.url}/ {self.ldaps_url}/ {self.other_host_url}/"
        with self.log_path.open("ab") as log:  # -d: stay in the foreground; 256: stats (queries)
            self.proc = subprocess.Popen(
                [SLAPD, "-d", "256", "-h", urls, "-f", str(self.conf)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}:\n{self.log()}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd did not answer in {timeout} s:\n{self.log()}")

    def _answers(self) -> bool:
        """Whether slapd replies to an anonymous bind (an LDAP answer, not only an open port)."""
        bind = b"\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03\x04\x00\x80\x00"  # msgid 1, v3, anon
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(bind)
                return s.recv(64).startswith(b"\x30")
        except OSError:
            return False

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The directory down for the duration of the block, up again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """slapd stopped with SIGSTOP: connections are accepted by the kernel, never answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd")).start()
    yield server
    server.stop()
