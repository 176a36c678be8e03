"""Checks of what transcribes: the model store, the default model, the GPU, the media decoders,
and one real transcription. Heavy libraries are imported inside each check, so that a broken one
fails its own row instead of the doctor."""

from __future__ import annotations

import importlib
import time
from typing import Any

from hushscribe.doctor.base import Check, Finding, ProgressFactory, Status, fold
from hushscribe.errors import HushscribeError
from hushscribe.settings import Settings

TEST_CLIP_S = 1.0
TEST_TONE_HZ = 440.0
"""The test transcription's input: one second of a quiet tone, made here (no file to carry)."""

MEDIA: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = (
    # (what users call it, demuxers (one is enough), decoders: one of each group is needed)
    ("WAV", ("wav",), (("pcm_s16le",),)),
    ("MP3", ("mp3",), (("mp3float", "mp3"),)),
    ("M4A (AAC)", ("mov",), (("aac",),)),
    ("FLAC", ("flac",), (("flac",),)),
    ("OGG (Vorbis)", ("ogg",), (("vorbis", "libvorbis"),)),
    ("Opus", ("ogg",), (("opus", "libopus"),)),
    ("WEBM", ("matroska", "webm"), (("opus", "libopus", "vorbis", "libvorbis"),)),
)


def _demo_names() -> tuple[str, ...]:
    from hushscribe.engine.demo import DEMO_MODELS

    return tuple(DEMO_MODELS)


def _reinstall(name: str) -> str:
    """The command that puts a good copy of model ``name`` back."""
    if name in _demo_names():
        return f"`hushscribe models install-demo --name {name} --replace`"
    return f"re-import it: `hushscribe models import PATH --name {name} --replace`"


def models(settings: Settings, quick: bool, progress: ProgressFactory) -> list[Check]:
    """Every installed model present and matching its manifest (re-hashed unless ``quick``)."""
    from hushscribe.engine.store import ModelStore

    store = ModelStore(settings.models_dir)
    names = store.names()
    if not names:
        return [
            Check(
                "models",
                "FAIL",
                f"no models in {store.root}",
                "`hushscribe models install-demo`, or `hushscribe models import PATH --name NAME`",
            )
        ]
    rows = []
    for name in names:
        label = f"model {name}"
        try:
            total = store.info(name).bytes
            with progress(f"verifying {name}", total) as advance:
                info = store.verify(name, use_cache=quick, progress=advance)
        except (HushscribeError, OSError) as exc:
            message = exc.message if isinstance(exc, HushscribeError) else str(exc)
            fix = f"`hushscribe models verify {name}`; {_reinstall(name)}"
            rows.append(Check(label, "FAIL", f"model '{name}' is damaged: {message}", fix))
            continue
        how = "verified-cache trusted (--quick)" if quick else "every file re-hashed"
        rows.append(Check(label, "OK", f"{len(info.files)} files, {total / 1e6:,.0f} MB, {how}"))
    return rows


def default_model(settings: Settings) -> Check:
    """``engine.default_model`` is installed (whether it is intact is its own model row)."""
    from hushscribe.engine.store import ModelStore

    name = settings.engine.default_model
    store = ModelStore(settings.models_dir)
    if name in store.names():
        return Check("default model", "OK", f"'{name}' (engine.default_model) is installed")
    installed = ", ".join(store.names()) or "none"
    if name in _demo_names():
        fix = f"`hushscribe models install-demo --name {name}`"
    else:
        fix = f"`hushscribe models import PATH --name {name}`"
    if store.names():
        fix += f", or set engine.default_model to an installed model ({installed})"
    detail = f"engine.default_model is '{name}', which is not installed (installed: {installed})"
    return Check("default model", "FAIL", detail, fix)


def gpu(settings: Settings) -> Check:
    """CUDA devices CTranslate2 sees, their compute types and free memory; CPU mode otherwise."""
    import ctranslate2

    count = ctranslate2.get_cuda_device_count()
    device = settings.engine.device
    name = "GPU / CUDA"
    if count == 0:
        cpu_types = ", ".join(sorted(ctranslate2.get_supported_compute_types("cpu")))
        if device == "cuda":
            return Check(
                name,
                "FAIL",
                f'engine.device = "cuda" but CTranslate2 {ctranslate2.__version__} sees no CUDA '
                "device (no GPU, no NVIDIA driver, or CUDA 12 / cuDNN 9 libraries missing)",
                'set engine.device = "auto" (or "cpu"), or install the NVIDIA driver and the '
                "CUDA 12 and cuDNN 9 libraries",
            )
        return Check(
            name,
            "OK",
            f"CPU mode: no CUDA device visible (engine.device = {device}); CPU compute types: "
            f"{cpu_types}",
        )
    findings = [Finding("OK", _nvml_memory())]
    try:
        cuda_types = sorted(ctranslate2.get_supported_compute_types("cuda"))
    except RuntimeError as exc:  # e.g. "CUDA driver version is insufficient"
        status: Status = "OK" if device == "cpu" else "FAIL"
        return Check(
            name,
            status,
            f"{count} CUDA device(s), but CTranslate2 cannot use them: {exc}",
            ""
            if status == "OK"
            else "update the NVIDIA driver (CTranslate2 4 needs CUDA 12), "
            'or set engine.device = "cpu"',
        )
    findings.append(Finding("OK", f"compute types {', '.join(cuda_types)}"))
    wanted = settings.engine.compute_type
    if device != "cpu" and wanted != "auto" and wanted not in cuda_types:
        findings.append(
            Finding(
                "WARN",
                f'engine.compute_type = "{wanted}" is not supported by this GPU (CTranslate2 '
                f"converts to another type): supported {', '.join(cuda_types)}",
                'set engine.compute_type = "auto"',
            )
        )
    where = "models run on the CPU (engine.device = cpu)" if device == "cpu" else "models run here"
    return fold(name, findings, f"{count} CUDA device(s), {where}")


def _nvml_memory() -> str:
    """Name and free memory of each GPU, through nvidia-ml-py when it is installed."""
    try:
        nvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return "free memory unknown (nvidia-ml-py not installed)"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError and its subclasses (no driver, no permission)
        return f"free memory unknown (NVML: {exc})"
    try:
        parts = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            raw = nvml.nvmlDeviceGetName(handle)
            label = raw.decode() if isinstance(raw, bytes) else str(raw)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            parts.append(
                f"{i}: {label}, {memory.free / 2**30:.1f} of {memory.total / 2**30:.1f} GiB free"
            )
        return "; ".join(parts)
    finally:
        nvml.nvmlShutdown()


def media_decoders() -> Check:
    """PyAV can open and decode each format users send."""
    import av

    demuxers = set(av.formats_available)

    def has_demuxer(name: str) -> bool:
        if name not in demuxers:
            return False
        try:
            return bool(av.format.ContainerFormat(name, "r").is_input)
        except ValueError:
            return False

    def has_decoder(name: str) -> bool:
        try:
            av.codec.Codec(name, "r")
        except (av.codec.codec.UnknownCodecError, ValueError):
            return False
        return True

    missing = []
    for label, formats, decoder_groups in MEDIA:
        gaps = [] if any(has_demuxer(f) for f in formats) else [f"demuxer {'|'.join(formats)}"]
        gaps += [f"decoder {'|'.join(g)}" for g in decoder_groups if not any(map(has_decoder, g))]
        if gaps:
            missing.append(f"{label} ({', '.join(gaps)})")
    versions = f"PyAV {av.__version__}, FFmpeg {getattr(av, 'ffmpeg_version_info', '?')}"
    if missing:
        return Check(
            "media decoders",
            "FAIL",
            f"cannot read {'; '.join(missing)} ({versions})",
            "reinstall PyAV from its wheel (it carries an FFmpeg with these decoders): "
            "`pip install --force-reinstall --no-index --find-links WHEELS av`",
        )
    return Check("media decoders", "OK", f"{', '.join(m[0] for m in MEDIA)} ({versions})")


def trial_transcription(settings: Settings) -> Check:
    """Load the default model on the configured device and transcribe a 1 s tone made here."""
    import numpy as np

    from hushscribe.audio import SAMPLE_RATE
    from hushscribe.engine.loader import load_model
    from hushscribe.engine.options import make_options
    from hushscribe.engine.store import ModelStore
    from hushscribe.engine.transcriber import transcribe

    name = settings.engine.default_model
    t = np.arange(int(SAMPLE_RATE * TEST_CLIP_S), dtype=np.float32) / SAMPLE_RATE
    audio = (0.1 * np.sin(2 * np.pi * TEST_TONE_HZ * t)).astype(np.float32)
    # One greedy pass over all of it: a check of the engine, not of accuracy (VAD would drop a
    # tone, and temperature fallbacks would decode it six times).
    options = make_options(vad=False, beam_size=1, temperature=(0.0,))
    started = time.perf_counter()
    try:
        model = load_model(ModelStore(settings.models_dir), name, settings.engine)
        loaded = time.perf_counter()
        transcribe(model, audio, options, settings.engine)
    except (HushscribeError, RuntimeError, ValueError, OSError) as exc:
        message = exc.message if isinstance(exc, HushscribeError) else f"{exc}"
        return Check(
            "test transcription",
            "FAIL",
            f"model '{name}' on engine.device = {settings.engine.device}: {message}",
            "see the model, default model and GPU rows; "
            f"`hushscribe transcribe FILE --model {name}` shows the same error",
        )
    done = time.perf_counter()
    return Check(
        "test transcription",
        "OK",
        f"'{name}' on {model.device} ({model.compute_type}): loaded in {loaded - started:.1f} s, "
        f"a {TEST_CLIP_S:g} s clip transcribed in {done - loaded:.1f} s",
    )
