"""Load a verified model from the store into CTranslate2 — from a local path only."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import ctranslate2
from faster_whisper import BatchedInferencePipeline, WhisperModel

from hushscribe.engine.store import ModelInfo, ModelStore
from hushscribe.settings import EngineSettings


def resolve_device(settings: EngineSettings) -> tuple[str, str]:
    """(device, compute_type) for the settings: ``auto`` picks CUDA float16 when a GPU is seen."""
    device = settings.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = settings.compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    return device, compute


@dataclass
class LoadedModel:
    """A model in memory, with where it came from and how it was loaded."""

    info: ModelInfo
    whisper: WhisperModel
    device: str
    compute_type: str
    load_seconds: float
    _batched: BatchedInferencePipeline | None = field(default=None, repr=False)

    @property
    def batched(self) -> BatchedInferencePipeline:
        if self._batched is None:
            self._batched = BatchedInferencePipeline(self.whisper)
        return self._batched


def load_model(store: ModelStore, name: str, settings: EngineSettings) -> LoadedModel:
    """Verify ``name`` against its manifest, then load it from its directory (never a hub id)."""
    started = time.perf_counter()
    info = store.verify(name)
    device, compute = resolve_device(settings)
    whisper = WhisperModel(
        str(info.path.resolve()),  # an absolute local path: faster-whisper never resolves a hub id
        device=device,
        compute_type=compute,
        cpu_threads=settings.cpu_threads,
        local_files_only=True,
    )
    return LoadedModel(
        info=info,
        whisper=whisper,
        device=device,
        compute_type=compute,
        load_seconds=time.perf_counter() - started,
    )
