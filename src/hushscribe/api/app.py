"""``create_app(settings)``: the FastAPI application, its state and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from hushscribe import __version__
from hushscribe.api import (
    errors,
    housekeeping,
    routes_admin,
    routes_audio,
    routes_audit,
    routes_auth,
    routes_jobs,
    routes_ops,
    routes_realtime,
    routes_ui,
)
from hushscribe.api.access import AccessGate, Authenticator, authorize
from hushscribe.api.headers import SecurityHeaders
from hushscribe.api.metrics import Metrics, MetricsMiddleware
from hushscribe.api.network_gate import NetworkGate
from hushscribe.api.waiters import Waiters
from hushscribe.audit.log import AuditLog
from hushscribe.audit.settings_record import changed_since_last_start
from hushscribe.errors import HushscribeError
from hushscribe.fsutil import private_dir
from hushscribe.jobs.blobs import BlobStore
from hushscribe.jobs.queue import JobQueue, make_engine
from hushscribe.jobs.registry import WorkerRegistry
from hushscribe.jobs.stats import Stats
from hushscribe.jobs.wakeup import Wakeups, relay_ended
from hushscribe.security import egress
from hushscribe.security.auditing import Auditor
from hushscribe.security.decisions import use_sink
from hushscribe.security.keys import KeyStore
from hushscribe.security.passwords import warm_up
from hushscribe.security.signin import SignIn
from hushscribe.security.users import UserStore
from hushscribe.settings import Settings

if TYPE_CHECKING:
    from hushscribe.jobs.supervisor import Supervisor


class DecisionSink:
    """ASGI middleware: this app's access decisions go to this app's audit log."""

    def __init__(self, app: ASGIApp, sink: Auditor) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        use_sink(self.sink)
        await self.app(scope, receive, send)


def _nothing() -> None:
    """No job is queued before the application has started."""


def create_app(settings: Settings, *, start_workers: bool = True) -> FastAPI:
    """The API for ``settings``. With ``start_workers`` its lifespan also runs the worker pool
    (``serve --role all``); without, workers run elsewhere (``--role api``) and this process
    never imports the speech engine."""
    private_dir(settings.data_dir)  # every owner's audio, transcripts and file names
    engine = make_engine(settings.db_url, upgrade=settings.database_auto_upgrade)
    metrics = Metrics()
    audit_log = AuditLog(settings.audit, settings.audit_dir, settings.keys_dir)
    auditor = Auditor(audit_log)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        waiters: Waiters = app.state.waiters
        wakeups = Wakeups(engine)  # other nodes' workers and API (PostgreSQL only)
        wakeups.listen(ended=waiters.ended, missed=waiters.wake_all)
        supervisor: Supervisor | None = None
        relay_stop = threading.Event()
        if start_workers:
            from hushscribe.jobs.supervisor import Supervisor  # the engine: here only

            def job_ended(job_id: str) -> None:
                waiters.ended(job_id)
                wakeups.job_ended(job_id)

            supervisor = Supervisor(
                settings,
                on_restart=metrics.worker_restarts.inc,
                on_job_ended=job_ended,
                queue=app.state.queue,
            )
            supervisor.start()
            wakeups.listen(work=supervisor.notify_work)
            relay_ended(supervisor.done_connections, job_ended, relay_stop)
        app.state.supervisor = supervisor
        wakeups.start()

        def notify_work() -> None:
            if supervisor is not None:
                supervisor.notify_work()
            wakeups.work_queued()

        app.state.notify_work = notify_work
        egress.report_to(egress.reporter_for(audit_log))  # where `hushscribe serve` guards
        purge = asyncio.create_task(housekeeping.run(app.state.queue, app.state.blobs, settings))
        await asyncio.to_thread(auditor.service, "service_start")
        changed = await asyncio.to_thread(changed_since_last_start, settings, settings.keys_dir)
        if changed:
            await asyncio.to_thread(auditor.event, "settings_changed", None, changed=changed)
        try:
            yield
        finally:
            with contextlib.suppress(HushscribeError):  # stopping goes on, recorded or not
                await asyncio.to_thread(auditor.service, "service_stop")
            purge.cancel()
            relay_stop.set()
            if supervisor is not None:
                await asyncio.to_thread(supervisor.stop)
                wakeups.work_queued()  # the jobs put back: other nodes' workers take them now
            await asyncio.to_thread(wakeups.stop)
            engine.dispose()
            audit_log.close()

    app = FastAPI(
        title="hushscribe",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # API docs are off: they load assets from outside and describe the surface
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(authorize)],  # every route's access rule, from access.POLICY
    )
    app.state.settings = settings
    app.state.queue = JobQueue(engine, ended_ttl_s=settings.jobs.result_ttl_s)
    app.state.blobs = BlobStore(settings.blobs_dir)
    app.state.registry = WorkerRegistry(engine)
    app.state.stats = Stats(engine)
    app.state.metrics = metrics
    app.state.waiters = Waiters()
    app.state.notify_work = _nothing  # the lifespan sets the wake-up of the workers
    app.state.auditor = auditor
    app.state.users = UserStore(engine, settings.auth)
    app.state.keys = KeyStore(engine)
    app.state.signin = SignIn(app.state.users, settings.auth)
    warm_up()  # the dummy hash: the first failed sign-in is no faster than the others
    metrics.watch_jobs(app.state.queue, app.state.stats)
    errors.install(app)
    app.include_router(routes_ops.router)
    app.include_router(routes_audio.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_auth.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_audit.router)
    app.include_router(routes_realtime.router)
    routes_ui.mount(app)
    # Outermost last: headers on every answer → source address → metrics → credentials.
    authenticator = Authenticator(settings, app.state.users, app.state.keys, app.state.signin)
    app.add_middleware(AccessGate, authenticator=authenticator)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(NetworkGate, settings=settings)
    app.add_middleware(SecurityHeaders, tls=settings.server.tls)
    app.add_middleware(DecisionSink, sink=auditor)  # every decision below goes to this log
    return app
