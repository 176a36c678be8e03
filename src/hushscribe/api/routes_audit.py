"""The audit log, read over the API (``audit:read``): records by time, actor, action, type and
outcome with a seq cursor, and a check of the whole log — the page's audit tab."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from hushscribe.api.access import Caller
from hushscribe.api.deps import SettingsDep, audit
from hushscribe.api.network_gate import client_ip
from hushscribe.audit import read
from hushscribe.audit.keys import HMAC_KEY_FILE
from hushscribe.audit.verify import Report, verify
from hushscribe.errors import InvalidRequest
from hushscribe.security.auditing import Auditor
from hushscribe.security.principal import Principal
from hushscribe.settings import Settings

router = APIRouter(prefix="/v1", tags=["audit"])


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return read.parse_time(value)
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {exc}") from None


def _page(
    audit_dir: Path,
    since: datetime | None,
    until: datetime | None,
    after: int | None,
    filters: dict[str, str | None],
    limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    found = (r for r in read.records(audit_dir, since, until, after) if read.matches(r, **filters))
    page = list(islice(found, limit + 1))
    return page[:limit], len(page) > limit


@router.get("/audit")
async def list_audit(
    settings: SettingsDep,
    principal: Caller,
    since: Annotated[str | None, Query(max_length=64, description="RFC 3339, inclusive")] = None,
    until: Annotated[str | None, Query(max_length=64, description="RFC 3339, exclusive")] = None,
    actor: Annotated[str | None, Query(max_length=128, description="a user name")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[str | None, Query(max_length=16)] = None,
    after: Annotated[int | None, Query(ge=0, description="the last seq already seen")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Records oldest first; page on with ``after=<last_seq>`` while ``has_more``."""
    start, end = _time("since", since), _time("until", until)
    filters = {"actor": actor, "action": action, "type": type, "outcome": outcome}
    data, more = await asyncio.to_thread(
        _page, settings.audit_dir, start, end, after, filters, limit
    )
    last_seq = data[-1].get("seq") if data else after
    return {"object": "list", "data": data, "has_more": more, "last_seq": last_seq}


def report_json(report: Report) -> dict[str, Any]:
    """A verification report as JSON: ``ok``, counts, the time span, the damage or null."""
    return {
        "ok": report.ok,
        "records": report.records,
        "files": report.files,
        "checkpoints": report.checkpoints,
        "first_time": report.first_time,
        "last_time": report.last_time,
        "head_seq": report.head_seq,
        "damage": dataclasses.asdict(report.damage) if report.damage is not None else None,
        "warnings": report.warnings,
    }


def run_verify(settings: Settings, auditor: Auditor, principal: Principal, address: str) -> Report:
    """The whole log, with the service's own HMAC key (the signatures with the public key the
    service exported beside the log); the check itself is recorded, with its result."""
    hmac_key = settings.keys_dir / HMAC_KEY_FILE
    try:
        report = verify(settings.audit_dir, hmac_key=hmac_key if hmac_key.is_file() else None)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"the audit log cannot be checked: {exc}") from None
    damage = report.damage
    auditor.event(
        "audit_verified", principal, address, outcome="ok" if report.ok else "failed",
        records=report.records, ok=report.ok, first_bad_seq=damage.seq if damage else None,
        damage=damage.kind if damage else None,
    )  # fmt: skip
    return report


@router.post("/audit/verify")
async def verify_audit(
    request: Request, settings: SettingsDep, principal: Caller
) -> dict[str, Any]:
    """Check the whole log (chain, MACs with the service's key, signed checkpoints)."""
    report = await asyncio.to_thread(
        run_verify, settings, audit(request), principal, client_ip(request)
    )
    return report_json(report)
