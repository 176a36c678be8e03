"""Fixtures shared by every test: settings on a temporary data dir, the demo models, real speech."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hushscribe.engine import ModelManager, ModelStore
from hushscribe.engine.demo import install_demo
from hushscribe.settings import Settings, load_settings
from tests.service import Service, service_data_dir
from tests.speech import SPEECH

pytest_plugins = ["tests.pg"]  # a throwaway PostgreSQL server: pg_server, pg_url


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests say which settings they mean; none leak in from the caller (the Makefile sets some)."""
    import os

    for key in [k for k in os.environ if k.startswith("HUSHSCRIBE_")]:
        monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    if not (SPEECH / "manifest.tsv").is_file():
        pytest.fail(f"real speech fixtures missing: {SPEECH} (the shared/ folder beside the repo)")
    return SPEECH


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data dir per test session with both demo models assembled and verified: the one copy of
    the models in a session (servers and other data dirs link to it, see ``service_data_dir``)."""
    root = tmp_path_factory.mktemp("data")
    store = ModelStore(root / "models")
    for name in ("base", "tiny.en"):
        install_demo(store, name)
    yield root
    # ~220 MB that the packages rebuild in seconds: not worth keeping, even after a failure.
    shutil.rmtree(root / "models", ignore_errors=True)


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    return load_settings(None, data_dir=data_dir, engine={"cpu_threads": 2})


@pytest.fixture(scope="session")
def manager(settings: Settings) -> Iterator[ModelManager]:
    yield ModelManager(settings)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Service]:
    """One real server (API + one worker) for the API tests that can share it."""
    root = service_data_dir(tmp_path_factory.mktemp("service"), data_dir / "models")
    svc = Service(root).start()
    yield svc
    svc.stop()
