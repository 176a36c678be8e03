"""``hushscribe serve``: the HTTP API and its worker processes."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hushscribe.cli.common import err_console, state
from hushscribe.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from uvicorn import Config


def first_run(settings: Settings, with_key: bool) -> None:
    """With no users yet: create ``admin`` (password from HUSHSCRIBE_ADMIN_PASSWORD or random,
    printed once) and, ``with_key``, an API key for it (printed once)."""
    import os

    from hushscribe.audit.log import AuditLog
    from hushscribe.db import make_engine
    from hushscribe.errors import InvalidRequest
    from hushscribe.security.auditing import Auditor
    from hushscribe.security.decisions import Decision, record, use_sink
    from hushscribe.security.keys import KeyStore
    from hushscribe.security.users import ADMIN_PASSWORD_ENV, UserStore, first_admin

    engine = make_engine(settings.db_url, upgrade=settings.database_auto_upgrade)
    log = AuditLog(settings.audit, settings.audit_dir, settings.keys_dir)
    use_sink(Auditor(log))  # the first admin and key are on record
    try:
        try:
            made = first_admin(UserStore(engine, settings.auth), os.environ.get(ADMIN_PASSWORD_ENV))
        except InvalidRequest as exc:
            raise InvalidRequest(f"{ADMIN_PASSWORD_ENV}: {exc.message}") from None
        if made is None:
            return
        user, password = made
        record(Decision("user_changed", "ok", "local", "first-run", "cli", user.username))
        lines = [f"First start: created user [bold]{user.username}[/] (role admin)."]
        if password:
            lines.append(
                f"  password: [bold]{password}[/]   (shown once; change it with "
                "`hushscribe users passwd admin`)"
            )
        else:
            lines.append(f"  password: the one in {ADMIN_PASSWORD_ENV}")
        if with_key:
            key, record_ = KeyStore(engine).create(user.id, user.role, "first-run")
            record(Decision("key_created", "ok", "local", "first-run", "cli", record_.id))
            lines.append(
                f"  API key:  [bold]{key}[/]   (shown once; more with "
                "`hushscribe keys create --user admin --name LABEL`)"
            )
        err_console.print("\n".join(lines), soft_wrap=True, highlight=False)
    finally:
        engine.dispose()
        use_sink(None)
        log.close()


STARTUP_FAILURE = 3
"""Exit status when the server could not start (uvicorn's)."""


class Role(StrEnum):
    """What one ``serve`` process does; ``all`` is one machine, the others split it across
    nodes that share a PostgreSQL database (or an SQLite file on one machine)."""

    all = "all"
    api = "api"
    worker = "worker"


HEALTH_PORT = 8001
"""Where ``--role worker`` answers its probes unless told otherwise (beside the API's 8000)."""


def _workers_alive(app: FastAPI) -> bool:
    """The worker pool can work: at least one worker process lives (or workers run elsewhere)."""
    supervisor = getattr(app.state, "supervisor", None)
    return supervisor is None or int(supervisor.alive()) > 0


def serve_cmd(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: server.host, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port, 8000).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: jobs.workers).")
    ] = None,
    role: Annotated[
        Role,
        typer.Option(
            envvar="HUSHSCRIBE_ROLE",
            help="all: the API and its worker processes. api: the API only (workers run on "
            "other nodes sharing the database; the speech engine is never loaded). worker: the "
            "worker processes only, with a health endpoint (--health-host/--health-port).",
        ),
    ] = Role.all,
    health_host: Annotated[
        str | None,
        typer.Option(help="--role worker: address of /healthz and /readyz (default 127.0.0.1)."),
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(help=f"--role worker: port of /healthz and /readyz (default {HEALTH_PORT})."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    first_run_key: Annotated[
        bool,
        typer.Option(
            "--first-run-key",
            help="On the first start (no users yet) also create an API key for admin and print "
            "it once (what `make serve` does).",
        ),
    ] = False,
) -> None:
    """Serve the OpenAI-compatible API and the job queue with worker processes, or one of the
    two (--role)."""
    from hushscribe.sdnotify import Notifier, NotifyingServer

    if role is Role.worker and (host or port):
        raise typer.BadParameter("--role worker serves no API: use --health-host/--health-port")
    if role is not Role.worker and (health_host or health_port):
        raise typer.BadParameter("--health-host/--health-port belong to --role worker")
    if role is Role.api and workers is not None:
        raise typer.BadParameter("--role api runs no workers: --workers belongs to all or worker")
    settings = state(ctx).settings
    update: dict[str, Any] = {}
    if host or port:
        server = settings.server.model_copy(
            update={k: v for k, v in (("host", host), ("port", port)) if v is not None}
        )
        update["server"] = server
    if workers is not None:
        update["jobs"] = settings.jobs.model_copy(update={"workers": workers})
    settings = settings.model_copy(update=update)
    # uvicorn stops gracefully on SIGTERM, then re-raises the signal with the handler it found.
    # A no-op handler here makes a graceful stop end with exit status 0, as systemd expects.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    if role is Role.worker:
        config, app, healthy = _worker_server(settings, health_host, health_port, log_level)
    else:
        from hushscribe.security.passwords import warm_up

        # The dummy password hash (create_app wants it) takes ~0.3 s of argon2, which leaves
        # the GIL: made in a thread, it costs nothing while the API's modules are imported.
        warming = threading.Thread(target=warm_up, name="password-warm-up", daemon=True)
        warming.start()
        first_run(settings, first_run_key)
        config, app = _api_server(settings, role, log_level, warming)
        healthy = _workers_alive
    http_server = NotifyingServer(config, Notifier.from_environ(), lambda: healthy(app))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a graceful stop, as uvicorn.run
        http_server.run()
    if not http_server.started:  # uvicorn.run's exit status when the server could not start
        raise typer.Exit(STARTUP_FAILURE)
    if role is Role.api:
        err_console.print("hushscribe stopped")
    else:
        err_console.print("hushscribe stopped; running jobs were put back in the queue")


def _api_server(
    settings: Settings, role: Role, log_level: str, warming: threading.Thread
) -> tuple[Config, FastAPI]:
    """The API (and, ``--role all``, its workers) on ``server.host:server.port``."""
    import uvicorn

    from hushscribe.api import create_app
    from hushscribe.api.connections import MAX_HEAD_BYTES, connection_limit, protocol_class

    limits = settings.server
    what = "hushscribe" if role is Role.all else "hushscribe API (workers run elsewhere)"
    err_console.print(
        f"{what} on {'https' if limits.tls else 'http'}://{limits.host}:{limits.port} — data "
        f"in {settings.data_dir}, default model {settings.engine.default_model}",
        soft_wrap=True,
    )
    warming.join()
    app = create_app(settings, start_workers=role is Role.all)
    config = uvicorn.Config(
        app,
        host=limits.host,
        port=limits.port,
        http=protocol_class(limits.header_timeout_s, connection_limit(limits.max_connections)),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=limits.keep_alive_s,
        log_level=log_level,
        timeout_graceful_shutdown=30,
        server_header=False,
        date_header=True,
        ssl_certfile=str(limits.tls_cert) if limits.tls_cert else None,
        ssl_keyfile=str(limits.tls_key) if limits.tls_key else None,
        proxy_headers=False,  # X-Forwarded-For is read by NetworkGate, from trusted proxies only
    )
    return config, app


def _worker_server(
    settings: Settings, host: str | None, port: int | None, log_level: str
) -> tuple[Config, FastAPI, Callable[[FastAPI], bool]]:
    """The worker processes, and their health endpoint on loopback (by default)."""
    import uvicorn

    from hushscribe.api.worker_node import create_worker_app, healthy

    host, port = host or "127.0.0.1", port or HEALTH_PORT
    err_console.print(
        f"hushscribe workers — health on http://{host}:{port}/healthz, /readyz — data in "
        f"{settings.data_dir}, default model {settings.engine.default_model}",
        soft_wrap=True,
    )
    app = create_worker_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        limit_concurrency=32,  # probes, not clients
        timeout_graceful_shutdown=30,
        server_header=False,
        proxy_headers=False,
    )
    return config, app, healthy
