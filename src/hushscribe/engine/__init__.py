"""The speech engine: model store, model loading and lifecycle, transcription.

The names below are imported on first use, not with the package: ``engine.store`` and
``engine.options`` are light (the API reads the store and validates options), while the loader
brings CTranslate2, faster-whisper and their native libraries, which an API-only process
(``hushscribe serve --role api``) must never load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hushscribe.engine.loader import LoadedModel, load_model
    from hushscribe.engine.manager import ModelManager
    from hushscribe.engine.options import TranscribeOptions, make_options
    from hushscribe.engine.store import ModelInfo, ModelStore
    from hushscribe.engine.transcriber import transcribe

_WHERE = {
    "LoadedModel": "loader",
    "load_model": "loader",
    "ModelManager": "manager",
    "TranscribeOptions": "options",
    "make_options": "options",
    "ModelInfo": "store",
    "ModelStore": "store",
    "transcribe": "transcriber",
}

__all__ = [
    "LoadedModel",
    "ModelInfo",
    "ModelManager",
    "ModelStore",
    "TranscribeOptions",
    "load_model",
    "make_options",
    "transcribe",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once is enough
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
