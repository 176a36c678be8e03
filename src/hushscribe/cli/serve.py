"""``hushscribe serve``: the HTTP API and its worker processes."""

from __future__ import annotations

import signal
from typing import Annotated, Any

import typer

from hushscribe.cli.common import err_console, state


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
) -> None:
    """Serve the OpenAI-compatible API and the job queue, with worker processes."""
    import uvicorn

    from hushscribe.api import create_app
    from hushscribe.api.connections import MAX_HEAD_BYTES, connection_limit, protocol_class

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
    if not settings.auth.api_keys and not settings.auth.allow_anonymous:
        err_console.print(
            "[yellow]No API keys are configured: every request will get 401.[/] Set one with "
            'HUSHSCRIBE_AUTH__API_KEYS=\'{"admin": "<a long random key>"}\' or \\[auth.api_keys] '
            "in the config file.",
            soft_wrap=True,
        )
    err_console.print(
        f"hushscribe on http://{settings.server.host}:{settings.server.port} — data in "
        f"{settings.data_dir}, default model {settings.engine.default_model}",
        soft_wrap=True,
    )
    # uvicorn stops gracefully on SIGTERM, then re-raises the signal with the handler it found.
    # A no-op handler here makes a graceful stop end with exit status 0, as systemd expects.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    limits = settings.server
    uvicorn.run(
        create_app(settings),
        host=limits.host,
        port=limits.port,
        http=protocol_class(limits.header_timeout_s, connection_limit(limits.max_connections)),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=limits.keep_alive_s,
        log_level=log_level,
        timeout_graceful_shutdown=30,
        server_header=False,
        date_header=True,
    )
    err_console.print("hushscribe stopped; running jobs were put back in the queue")
