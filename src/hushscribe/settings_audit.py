"""Settings of the audit log (``[audit]``): where it lives, how it is kept, where it is copied."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SyslogSettings(BaseModel):
    """A copy of every record to a collector, as RFC 5424 over TCP (RFC 6587 octet counting)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="The collector's host (an address or a name it resolves).")
    port: int = Field(6514, ge=1, le=65535, description="Its TCP port (6514: syslog over TLS).")
    tls: bool = Field(True, description="Speak TLS to the collector.")
    ca_file: Path | None = Field(None, description="CA certificate(s) the collector chains to.")
    app_name: str = Field("hushscribe", max_length=48, description="APP-NAME of each message.")


class AuditSettings(BaseModel):
    """The tamper-evident audit log: JSON Lines under ``dir``, hash-chained, HMAC'd, with
    Ed25519-signed checkpoints. Auditors copy ``dir`` and run `hushscribe audit verify`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Keep the audit log (turn off only for benchmarks).")
    dir: Path | None = Field(None, description="Where the log lives; default `<data_dir>/audit`.")
    keys_dir: Path | None = Field(
        None,
        description="Where the HMAC key and the signing key live (mode 0600), apart from the log "
        "so that a copy of the log does not carry them; default `<data_dir>/keys`.",
    )
    fsync: Literal["each", "batch"] = Field(
        "each",
        description="`each`: every record is on disk before the request that caused it answers; "
        "`batch`: records are flushed at once but synced at most every `fsync_interval_s`.",
    )
    fsync_interval_s: float = Field(0.2, gt=0, le=10, description="With `fsync = batch`.")
    rotate_bytes: int = Field(
        64 * 1024 * 1024, ge=4096, description="A file is closed and a new one begun past this."
    )
    rotate_daily: bool = Field(True, description="Begin a new file each UTC day as well.")
    checkpoint_every: int = Field(
        1000, ge=1, description="Records between signed checkpoints (and one at each rotation)."
    )
    include_text: bool = Field(
        False,
        description="Put transcript text in `transcription_done` records (each such record is "
        "marked). Off: the log proves who transcribed what without holding what was said.",
    )
    fail_open: bool = Field(
        False,
        description="When a record cannot be written, go on anyway (logged). Off: the request "
        "fails with 503 and nothing is processed.",
    )
    syslog: SyslogSettings | None = Field(
        None, description="Copy every record to a syslog collector; unset: no connection."
    )
