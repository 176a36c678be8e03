"""The speech engine: model store, model loading and lifecycle, transcription."""

from hushscribe.engine.loader import LoadedModel, load_model
from hushscribe.engine.manager import ModelManager
from hushscribe.engine.options import TranscribeOptions, make_options
from hushscribe.engine.store import ModelInfo, ModelStore
from hushscribe.engine.transcriber import transcribe

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
