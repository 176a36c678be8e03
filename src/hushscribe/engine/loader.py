"""Load a verified model from the store into CTranslate2 — from a local path only."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel

from hushscribe.engine import cuda_libs, prompting
from hushscribe.engine.store import ModelInfo, ModelStore
from hushscribe.settings import EngineSettings


def resolve_device(settings: EngineSettings) -> tuple[str, str]:
    """(device, compute_type) for the settings: ``auto`` picks CUDA float16 when a GPU is seen."""
    device = settings.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = settings.compute_type
    if compute == "auto":
        compute = gpu_compute_type() if device == "cuda" else "int8"
    return device, compute


def gpu_compute_type() -> str:
    """The best compute type the GPU supports: float16, else int8 with float16, else float32
    (older cards lack fast float16)."""
    supported = ctranslate2.get_supported_compute_types("cuda")
    for kind in ("float16", "int8_float16"):
        if kind in supported:
            return kind
    return "float32"


class Whisper(WhisperModel):  # type: ignore[misc]
    """faster-whisper's model, remembering its last one-window encoding.

    The encoder is most of the cost of a short file, and faster-whisper runs it twice on the first
    window when the language is unknown: once to detect, once to decode. Our detection encodes
    exactly the features the decoder will ask for first, so that second pass is answered from
    here. A hit needs equal input features, so it cannot return another window's encoding."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._last: tuple[np.ndarray, ctranslate2.StorageView] | None = None
        self.encoder_passes = 0
        """Encoder passes actually run (read by tests and benchmarks)."""
        self.prompt_retries = 0
        """Windows decoded again without the earlier text (read by tests)."""

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        one_window = features.ndim == 2 or features.shape[0] == 1
        with self._lock:
            last = self._last
        if one_window and last is not None and np.array_equal(last[0], features):
            return last[1]
        encoded = super().encode(features)
        with self._lock:
            self.encoder_passes += 1
            if one_window:
                self._last = (features.copy(), encoded)
        return encoded

    def generate_with_fallback(
        self,
        encoder_output: ctranslate2.StorageView,
        prompt: list[int],
        tokenizer: Any,
        options: Any,
    ) -> prompting.Decoded:
        """faster-whisper's decode with temperature fallback, except that a window which fails
        at the first temperature while prompted with earlier text is decoded again without it
        before any sampling (see :mod:`hushscribe.engine.prompting`)."""
        bare = prompting.without_previous_text(prompt, tokenizer, options, self.max_length)
        if bare is None:
            return super().generate_with_fallback(encoder_output, prompt, tokenizer, options)  # type: ignore[no-any-return]
        once = prompting.first_temperature_only(options)
        first = super().generate_with_fallback(encoder_output, prompt, tokenizer, once)
        if not prompting.needs_fallback(first, options):
            return first  # type: ignore[no-any-return]
        self.prompt_retries += 1
        return super().generate_with_fallback(encoder_output, bare, tokenizer, options)  # type: ignore[no-any-return]

    def forget(self) -> None:
        """Drop the remembered encoding: nothing derived from a job's audio outlives the job."""
        with self._lock:
            self._last = None


@dataclass
class LoadedModel:
    """A model in memory, with where it came from and how it was loaded."""

    info: ModelInfo
    whisper: Whisper
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
    if device == "cuda":
        cuda_libs.preload()
    whisper = Whisper(
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
