"""An API-only process (``serve --role api``) never imports the speech engine: what the command
and the API import is checked in a fresh interpreter, and so is the check itself (the engine's
own modules do bring the native libraries)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("ctranslate2", "faster_whisper", "av", "onnxruntime")
"""The engine's native packages: CTranslate2, faster-whisper (with Silero VAD on onnxruntime),
PyAV (FFmpeg)."""


def imported_after(code: str, tmp_path: Path) -> list[str]:
    """The heavy top-level packages a fresh interpreter has imported after running ``code``."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        heavy = {HEAVY!r}
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"HUSHSCRIBE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_the_api_role_imports_no_engine(tmp_path: Path) -> None:
    """The CLI, the API app built as ``serve --role api`` builds it, its lifespan run and a
    request answered: nothing of the engine is imported."""
    code = """
        import hushscribe.cli  # every command is registered, serve among them
        from hushscribe.cli.serve import Role, _workers_alive
        from hushscribe.api import create_app
        from hushscribe.settings import load_settings
        from fastapi.testclient import TestClient

        app = create_app(load_settings(None), start_workers=False)
        with TestClient(app, client=("127.0.0.1", 50000)) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/readyz").status_code == 503  # no worker anywhere
        assert _workers_alive(app) and app.state.supervisor is None
    """
    assert imported_after(code, tmp_path) == []


def test_the_light_parts_of_the_engine_stay_light(tmp_path: Path) -> None:
    """The model store, options and languages (the API reads them) import nothing native, and
    the package's names still resolve, the heavy ones on first use."""
    code = """
        from hushscribe.engine import ModelInfo, ModelStore, TranscribeOptions, make_options
        from hushscribe.engine.store import QUANTIZATIONS
        from hushscribe import languages, transcript
        assert make_options(language="German").language == "de"
        assert "int8" in QUANTIZATIONS
    """
    assert imported_after(code, tmp_path) == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("from hushscribe.engine import ModelManager", ["ctranslate2", "faster_whisper"]),
        ("import hushscribe.jobs.supervisor", ["av", "ctranslate2", "faster_whisper"]),
        ("from hushscribe.api import create_app; import hushscribe.audio", ["av"]),
    ],
)
def test_the_check_sees_the_engine(code: str, expected: list[str], tmp_path: Path) -> None:
    """What the workers import is seen: the tests above could fail."""
    assert set(expected) <= set(imported_after(code, tmp_path))


def test_the_engine_package_names_resolve() -> None:
    import hushscribe.engine as engine
    from hushscribe.engine import loader, manager, options, store, transcriber

    assert engine.ModelManager is manager.ModelManager
    assert engine.LoadedModel is loader.LoadedModel and engine.load_model is loader.load_model
    assert engine.ModelStore is store.ModelStore and engine.ModelInfo is store.ModelInfo
    assert engine.make_options is options.make_options
    assert engine.transcribe is transcriber.transcribe
    assert set(engine.__all__) <= set(dir(engine))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = engine.nothing  # type: ignore[attr-defined]
