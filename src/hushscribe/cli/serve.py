"""``hushscribe serve``: the HTTP API and its worker processes."""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hushscribe.cli.common import err_console, state
from hushscribe.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI


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

    engine = make_engine(settings.db_url)
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
    """Serve the OpenAI-compatible API and the job queue, with worker processes."""
    import uvicorn

    from hushscribe.api import create_app
    from hushscribe.api.connections import MAX_HEAD_BYTES, connection_limit, protocol_class
    from hushscribe.sdnotify import Notifier, NotifyingServer

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
    first_run(settings, first_run_key)
    err_console.print(
        f"hushscribe on {'https' if settings.server.tls else 'http'}://"
        f"{settings.server.host}:{settings.server.port} — data in "
        f"{settings.data_dir}, default model {settings.engine.default_model}",
        soft_wrap=True,
    )
    # uvicorn stops gracefully on SIGTERM, then re-raises the signal with the handler it found.
    # A no-op handler here makes a graceful stop end with exit status 0, as systemd expects.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    limits = settings.server
    app = create_app(settings)
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
    http_server = NotifyingServer(config, Notifier.from_environ(), lambda: _workers_alive(app))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a graceful stop, as uvicorn.run
        http_server.run()
    if not http_server.started:  # uvicorn.run's exit status when the server could not start
        raise typer.Exit(STARTUP_FAILURE)
    err_console.print("hushscribe stopped; running jobs were put back in the queue")
