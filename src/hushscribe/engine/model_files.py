"""What a model directory holds, read from its files alone: a CTranslate2 Whisper model
(``model.bin`` with its config and vocabulary; the size named by the decoder's width) or a
speaker-embedding model (``model.onnx``). The model store (engine/store.py) checks a directory
with these before it hashes and installs it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hushscribe.errors import InvalidModel

WHISPER = "whisper"
SPEAKER = "speaker"
"""What a model is for (``kind``); a manifest without one (written before there were two) is
Whisper."""
MAIN_FILE = {WHISPER: "model.bin", SPEAKER: "model.onnx"}
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
VOCABULARY_FILES = ("vocabulary.json", "vocabulary.txt")
OPTIONAL_FILES = ("preprocessor_config.json",)
CT2_WHISPER_MAGIC = b"WhisperSpec"
MULTILINGUAL_VOCAB = 51865  # English-only Whisper models have 51864 tokens, large-v3 has 51866
# Whisper's width (d_model) names its size; turbo is a large-v3 with a shallow decoder.
_SIZES = {384: "tiny", 512: "base", 768: "small", 1024: "medium", 1280: "large"}
_EMBEDDING = b"decoder/embeddings/weight\x00"


def inspect_model_dir(path: Path) -> tuple[list[str], bool, str]:
    """Check that ``path`` is a CTranslate2 Whisper model; return (files, multilingual, size)."""
    if not path.is_dir():
        raise InvalidModel(f"{path} is not a directory")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    vocab = [f for f in VOCABULARY_FILES if (path / f).is_file()]
    if missing or not vocab:
        need = ", ".join(missing + ([] if vocab else ["vocabulary.json|txt"]))
        raise InvalidModel(f"{path} is not a CTranslate2 Whisper model: missing {need}")
    with (path / "model.bin").open("rb") as fh:
        if CT2_WHISPER_MAGIC not in fh.read(256):
            raise InvalidModel(f"{path}/model.bin is not a CTranslate2 Whisper model")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or "lang_ids" not in config:
            raise InvalidModel(f"{path}/config.json is not a Whisper model config")
        if vocab[0].endswith(".json"):
            n_vocab = len(json.loads((path / vocab[0]).read_text(encoding="utf-8")))
        else:
            n_vocab = len((path / vocab[0]).read_text(encoding="utf-8").splitlines())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"{path} holds an unreadable model file: {exc}") from None
    files = list(REQUIRED_FILES) + vocab[:1]
    files += [f for f in OPTIONAL_FILES if (path / f).is_file()]
    return files, n_vocab >= MULTILINGUAL_VOCAB, _size_label(path / "model.bin")


def inspect_speaker_dir(path: Path) -> tuple[list[str], bool, str]:
    """Check that ``path`` holds a speaker model (an ONNX ``model.onnx``); the same triple as
    :func:`inspect_model_dir` (speaker embeddings serve every language)."""
    onnx_file = path / MAIN_FILE[SPEAKER]
    if not onnx_file.is_file():
        raise InvalidModel(f"{path} is not a speaker model: missing {onnx_file.name}")
    with onnx_file.open("rb") as fh:
        if fh.read(1) != b"\x08":  # an ONNX ModelProto starts with its ir_version field
            raise InvalidModel(f"{onnx_file} is not an ONNX model")
    return [onnx_file.name], True, SPEAKER


def kind_of(path: Path) -> str:
    """A directory holding ``model.onnx`` and no ``model.bin`` is a speaker model."""
    speaker = (path / MAIN_FILE[SPEAKER]).is_file() and not (path / MAIN_FILE[WHISPER]).exists()
    return SPEAKER if speaker else WHISPER


def inspect(path: Path, kind: str) -> tuple[list[str], bool, str]:
    """(files, multilingual, size) of a model directory of ``kind``."""
    return inspect_speaker_dir(path) if kind == SPEAKER else inspect_model_dir(path)


def _size_label(model_bin: Path) -> str:
    """Read the decoder embedding's shape from the CTranslate2 header: its width names the size."""
    with model_bin.open("rb") as fh:
        head = fh.read(64 * 1024)
    at = head.find(_EMBEDDING)
    if at < 0:
        return "unknown"
    pos = at + len(_EMBEDDING)
    rank = head[pos]
    if rank != 2 or pos + 9 > len(head):
        return "unknown"
    _, width = struct.unpack_from("<2i", head, pos + 1)
    return _SIZES.get(width, f"d{width}")
