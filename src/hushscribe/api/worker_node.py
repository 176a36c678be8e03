"""``serve --role worker``: the worker processes of this node and nothing else to the world but
a health endpoint for its probes (``/healthz``, ``/readyz``; loopback by default).

Jobs reach the workers through the shared database; on PostgreSQL a queued job wakes them at
once (``jobs/wakeup.py``: one listening connection per node, passed on to the workers through
their pipes) and the jobs they end wake the requests that API nodes hold for them. Without it
(SQLite shared on one machine) the workers poll every ``jobs.poll_interval_s``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hushscribe import __version__
from hushscribe.api import errors
from hushscribe.api.headers import SecurityHeaders
from hushscribe.jobs.queue import JobQueue, make_engine
from hushscribe.jobs.registry import WorkerRegistry
from hushscribe.jobs.wakeup import Wakeups, relay_ended
from hushscribe.settings import Settings

if TYPE_CHECKING:
    from hushscribe.jobs.supervisor import Supervisor


def _supervisor(request: Request) -> Supervisor | None:
    supervisor: Supervisor | None = getattr(request.app.state, "supervisor", None)
    return supervisor if supervisor is not None and supervisor.watching() else None


def healthy(app: FastAPI) -> bool:
    """The supervisor runs and has at least one live worker process (what systemd's watchdog
    is told)."""
    supervisor: Supervisor | None = getattr(app.state, "supervisor", None)
    return supervisor is not None and supervisor.watching() and supervisor.alive() > 0


def create_worker_app(settings: Settings) -> FastAPI:
    """The worker node for ``settings``: its lifespan runs the supervisor (and through it the
    worker processes); its routes say whether they live and can transcribe."""
    engine = make_engine(settings.db_url, upgrade=settings.database_auto_upgrade)
    queue = JobQueue(engine, ended_ttl_s=settings.jobs.result_ttl_s)
    registry = WorkerRegistry(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from hushscribe.jobs.supervisor import Supervisor

        wakeups = Wakeups(engine)
        supervisor = Supervisor(settings, on_job_ended=wakeups.job_ended, queue=queue)
        supervisor.start()
        wakeups.listen(work=supervisor.notify_work)
        relay_stop = threading.Event()
        if wakeups.enabled:  # nobody here waits for a job: the API nodes hear of it
            relay_ended(supervisor.done_connections, wakeups.job_ended, relay_stop)
        wakeups.start()
        app.state.supervisor = supervisor
        try:
            yield
        finally:
            relay_stop.set()
            await asyncio.to_thread(supervisor.stop)  # the workers put their jobs back
            wakeups.work_queued()  # for the other nodes' workers, now (sent before it stops)
            await asyncio.to_thread(wakeups.stop)
            engine.dispose()

    app = FastAPI(
        title="hushscribe worker",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.supervisor = None

    @app.get("/healthz")
    def healthz(request: Request) -> JSONResponse:
        """The process answers and its supervisor (which restarts workers) runs."""
        if _supervisor(request) is None:
            body = {"status": "failing", "reasons": ["the worker supervisor is not running"]}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        """Ready when one of this node's workers is alive (in the job database's registry)
        with the default model, or one of its fallbacks, loaded."""
        reasons: list[str] = []
        supervisor = _supervisor(request)
        if supervisor is None:
            reasons.append("the worker supervisor is not running")
        else:
            try:
                mine = supervisor.worker_ids()
                alive = [w for w in registry.alive(within_s=settings.jobs.lease_s) if w.id in mine]
                default = settings.engine.default_model
                if not alive:
                    reasons.append("no worker of this node is alive")
                elif not any(set(settings.models.chain(default)) & set(w.models) for w in alive):
                    reasons.append(f"default model '{default}' is not loaded")
            except Exception as exc:  # the database is down
                reasons.append(f"database unavailable: {type(exc).__name__}")
        body = {"status": "ready" if not reasons else "not ready", "reasons": reasons}
        return JSONResponse(body, status_code=200 if not reasons else 503)

    errors.install(app)
    app.add_middleware(SecurityHeaders, tls=False)
    return app
