"""What every command shares: the settings of this invocation, consoles, error display."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hushscribe.audit.events import Actor
from hushscribe.audit.log import AuditLog
from hushscribe.security import egress
from hushscribe.security.auditing import Auditor
from hushscribe.security.decisions import use_sink
from hushscribe.settings import Settings, config_file_from_env, load_settings

console = Console()
err_console = Console(stderr=True)

DEV_DATA_DIR = Path(".data")
"""Where `make serve` keeps models, jobs and its config (``hushscribe.toml``), in the checkout."""


@dataclass
class State:
    config: Path | None = None
    data_dir: Path | None = None
    _settings: Settings | None = None
    _auditor: Auditor | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self._load()
            egress.configure(self._settings)  # the hosts they name may now be reached
        return self._settings

    def _load(self) -> Settings:
        """Settings as configured; when nothing names a data directory or config file, the dev
        layout `make serve` made in the current directory, so the CLI finds the same models."""
        if self.data_dir:
            return load_settings(self.config, data_dir=self.data_dir)
        settings = load_settings(self.config)
        configured = (
            self.config or config_file_from_env() or "data_dir" in settings.model_fields_set
        )
        found = None if configured else dev_layout(Path.cwd())
        if found is None:
            return settings
        data_dir, config = found
        settings = load_settings(config)
        if "data_dir" not in settings.model_fields_set:
            settings = load_settings(config, data_dir=data_dir)
        err_console.print(
            f"[dim]data directory {escape(str(settings.data_dir))}"
            f"{f', config {escape(str(config))}' if config else ''} (found in the current "
            "directory, as `make serve` left them; --data-dir or HUSHSCRIBE_DATA_DIR chooses "
            "another)[/]",
            highlight=False,
            soft_wrap=True,
        )
        return settings


def dev_layout(cwd: Path) -> tuple[Path, Path | None] | None:
    """``(data_dir, config or None)`` of a ``./.data`` holding a config file or models."""
    data_dir = (cwd / DEV_DATA_DIR).absolute()
    config = data_dir / "hushscribe.toml"
    if config.is_file():
        return data_dir, config
    if (data_dir / "models").is_dir():
        return data_dir, None
    return None


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


def bytes_progress() -> Progress:
    """A progress bar for hashing or copying bytes."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


def operator() -> Actor:
    """The person at the shell, as audit records name them."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor(user=f"cli:{name}", method="cli")


def auditor(ctx: typer.Context) -> Auditor:
    """This command's audit log (the service's own), also receiving its access decisions."""
    obj = state(ctx)
    if obj._auditor is None:
        settings = obj.settings
        obj._auditor = Auditor(AuditLog(settings.audit, settings.audit_dir, settings.keys_dir))
        use_sink(obj._auditor)
    return obj._auditor
