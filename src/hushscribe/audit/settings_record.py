"""What changed in the configuration since the last start: the ``settings_changed`` record.

Each start compares the settings (secrets shown only as whether they are set) with those of the
previous start, kept beside the audit keys, and names the keys that differ; values are not put
in the log (a changed LDAP bind password must not appear there in any form)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hushscribe.fsutil import atomic_write_bytes, private_dir
from hushscribe.settings import Settings

STATE_FILE = "settings-at-last-start.json"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out |= _flat(inner, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def snapshot(settings: Settings) -> dict[str, Any]:
    # SecretStr dumps as "**********" in JSON mode: set or not, never the value.
    return _flat(settings.model_dump(mode="json"))


def changed_since_last_start(settings: Settings, keys_dir: Path) -> list[str] | None:
    """The setting names that differ from the previous start (None at the first start), and
    remember these settings for the next one."""
    path = keys_dir / STATE_FILE
    now = snapshot(settings)
    try:
        before: dict[str, Any] | None = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    private_dir(keys_dir)
    atomic_write_bytes(path, json.dumps(now, sort_keys=True).encode(), mode=0o600)
    if before is None:
        return None
    return sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
