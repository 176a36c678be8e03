"""The audit log's format (its one serialization, hashes, MACs, signed checkpoints, file names)
and its two keys: an HMAC key (MAC of every record) and an Ed25519 signing key
(signed checkpoints), made on the first start, kept apart from the log, mode 0600.

Creation is race-safe between processes that start at once: each writes a complete key to a
private temporary file and *links* it into place (``link`` fails if the name exists, unlike
``rename``); the loser throws its key away and reads the winner's. A reader therefore never sees
a half-written key, and two processes never end up with different keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hushscribe.fsutil import atomic_write_bytes, fsync_dir, private_dir

log = logging.getLogger(__name__)

HMAC_KEY_FILE: Final = "audit-hmac.key"
SIGNING_KEY_FILE: Final = "audit-signing.pem"
PUBLIC_KEY_FILE: Final = "public-key.pem"
HEAD_FILE: Final = "head.json"
ZERO_HASH: Final = "0" * 64
FILE_RE: Final = re.compile(r"^audit-(\d{8})-(\d+)\.jsonl$")


# --- the format: what the writer makes and the verifier checks -----------------------------------
def canonical(obj: Any) -> bytes:
    """The one serialization of a record: sorted keys, no spaces, every non-ASCII and control
    character escaped (so no file name or detail can put a line break into the log)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def line_hash(line: bytes) -> str:
    """What the next record's ``prev`` holds: SHA-256 of this record's line, without newline."""
    return hashlib.sha256(line).hexdigest()


def record_mac(key: bytes, record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def signed_message(head_seq: int, head_hash: str, file: str, prev_checkpoint: str) -> bytes:
    """What a checkpoint's Ed25519 signature covers."""
    return canonical(
        {
            "head_seq": head_seq,
            "head_hash": head_hash,
            "file": file,
            "prev_checkpoint": prev_checkpoint,
        }
    )


def file_order(path: Path) -> tuple[int, int, str] | None:
    """Sort key of a log file: its first seq, then its name's width (a writer that finds the name
    taken, by a file holding only a record torn by a crash, pads the number once more), then day."""
    m = FILE_RE.match(path.name)
    return None if m is None else (int(m.group(2)), len(m.group(2)), m.group(1))


def log_files(audit_dir: Path) -> list[Path]:
    found = [(k, p) for p in audit_dir.glob("audit-*.jsonl") if (k := file_order(p)) is not None]
    return [p for _, p in sorted(found)]


def parse_record(raw: bytes) -> dict[str, Any] | None:
    """A line as a record (a JSON object with the fields every record has), or None."""
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    ok = (
        isinstance(rec, dict)
        and type(rec.get("seq")) is int
        and all(isinstance(rec.get(k), str) for k in ("prev", "mac", "type", "time"))
    )
    return rec if ok else None


# --- the keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditKeys:
    hmac_key: bytes
    signing_key: Ed25519PrivateKey
    public_pem: bytes
    public_sha256: str


def public_key_sha256(key: Ed25519PublicKey) -> str:
    """The key's fingerprint: SHA-256 of its DER SubjectPublicKeyInfo, hex (what a checkpoint
    names, and what ``openssl pkey -pubin -outform DER | sha256sum`` prints)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (ValueError for anything else)."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def load_hmac_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) != 32:
        raise ValueError(f"{path} is not an audit HMAC key (32 bytes; it has {len(data)})")
    return data


def _create_once(path: Path, make: Callable[[], bytes]) -> None:
    """Put ``make()`` at ``path`` (0600) unless a file is already there; complete or not at all."""
    if path.exists():
        return
    data = make()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):  # another process was first: keep its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _check_mode(path: Path) -> None:
    if path.stat().st_mode & 0o077:
        log.warning(
            "audit key %s is readable by others (mode %o): make it 0600",
            path,
            path.stat().st_mode & 0o777,
        )


def load_or_create(keys_dir: Path, audit_dir: Path) -> AuditKeys:
    """The log's keys, made if missing; the public key exported to ``audit_dir`` for auditors.
    OSError when the directories cannot be written, ValueError for a damaged key file."""
    hmac_path, signing_path = keys_dir / HMAC_KEY_FILE, keys_dir / SIGNING_KEY_FILE
    if not (hmac_path.exists() and signing_path.exists()):  # (keys may be on a read-only mount)
        private_dir(keys_dir)
    _create_once(hmac_path, lambda: secrets.token_bytes(32))
    _create_once(
        signing_path,
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    for path in (hmac_path, signing_path):
        _check_mode(path)
    hmac_key = load_hmac_key(hmac_path)
    signing = serialization.load_pem_private_key(signing_path.read_bytes(), password=None)
    if not isinstance(signing, Ed25519PrivateKey):
        raise ValueError(f"{signing_path} is not an Ed25519 private key")
    public = signing.public_key()
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    exported = audit_dir / PUBLIC_KEY_FILE
    try:
        current = exported.read_bytes()
    except FileNotFoundError:
        current = b""
    if current != public_pem:
        if current:
            log.warning("%s did not match the signing key; exported the right one", exported)
        atomic_write_bytes(exported, public_pem, mode=0o644)
    return AuditKeys(hmac_key, signing, public_pem, public_key_sha256(public))
