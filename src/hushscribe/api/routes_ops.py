"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from hushscribe.api.deps import SettingsDep
from hushscribe.jobs.registry import WorkerRegistry

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, settings: SettingsDep) -> JSONResponse:
    """Ready when the database answers, a worker is alive and one has the default model loaded.
    Public (probes carry no key), so it says no more than that: no host, no worker list; admins
    see those at ``/v1/status``."""
    reasons: list[str] = []
    try:
        with request.app.state.queue.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        registry: WorkerRegistry = request.app.state.registry
        alive = registry.alive(within_s=settings.jobs.lease_s)
        if not alive:
            reasons.append("no worker is alive")
        elif not any(
            set(settings.models.chain(settings.engine.default_model)) & set(w.models) for w in alive
        ):
            reasons.append(f"default model '{settings.engine.default_model}' is not loaded")
    except Exception as exc:  # the database itself is down
        reasons.append(f"database unavailable: {type(exc).__name__}")
    body = {
        "status": "ready" if not reasons else "not ready",
        "reasons": reasons,
    }
    return JSONResponse(body, status_code=200 if not reasons else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
