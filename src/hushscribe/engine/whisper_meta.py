"""What a converted Whisper model needs besides its weights: the vocabulary, ``config.json``'s
token lists, the feature extractor's settings, and which attention heads align words to time.

CTranslate2's own converter (``ct2-transformers-converter``) reads these from a Hugging Face
model's generation config; an OpenAI checkpoint has none, so they are derived here from the
tokenizer, as openai-whisper and faster-whisper derive them at run time, and checked against the
published models in the tests (the demo models were converted by CTranslate2).
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from faster_whisper.tokenizer import _LANGUAGE_CODES
from faster_whisper.tokenizer import Tokenizer as WhisperTokenizer

from hushscribe.engine.model_files import VOCABULARY_FILES
from hushscribe.engine.store import ModelStore
from hushscribe.errors import HushscribeError, InvalidModel, TokenizerRequired

TIMESTAMP_TOKENS = 1501
"""<|0.00|> … <|30.00|> in steps of 0.02 s: the last tokens of every Whisper vocabulary."""

MAX_TOKENIZER_BYTES = 64 * 1024 * 1024
"""Whisper's tokenizer.json is 2-4 MB; a much larger one is not a Whisper tokenizer."""

# OpenAI's published checkpoints, by the SHA-256 in their download URLs (openai-whisper's
# ``_MODELS``), with the cross-attention heads that follow the audio (its ``_ALIGNMENT_HEADS``:
# base85 of a gzipped (n_text_layer, n_text_head) boolean mask). Word timestamps use these heads.
OPENAI_CHECKPOINTS: dict[str, tuple[str, bytes]] = {
    "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03": (
        "tiny.en", b"ABzY8J1N>@0{>%R00Bk>$p{7v037`oCl~+#00"),
    "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9": (
        "tiny", b"ABzY8bu8Lr0{>%RKn9Fp%m@SkK7Kt=7ytkO"),
    "25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead": (
        "base.en", b"ABzY8;40c<0{>%RzzG;p*o+Vo09|#PsxSZm00"),
    "ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e": (
        "base", b"ABzY8KQ!870{>%RzyTQH3`Q^yNP!>##QT-<FaQ7m"),
    "f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872": (
        "small.en", b"ABzY8>?_)10{>%RpeA61k&I|OI3I$65C{;;pbCHh0B{qLQ;+}v00"),
    "9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794": (
        "small", b"ABzY8DmU6=0{>%Rpa?J`kvJ6qF(V^F86#Xh7JUGMK}P<N0000"),
    "d7440d1dc186f76616474e0ff0b3b6b879abc9d1a4926b7adfa41db2d497ab4f": (
        "medium.en", b"ABzY8usPae0{>%R7<zz_OvQ{)4kMa0BMw6u5rT}kRKX;$NfYBv00*Hl@qhsU00"),
    "345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1": (
        "medium", b"ABzY8B0Jh+0{>%R7}kK1fFL7w6%<-Pf*t^=N)Qr&0RR9"),
    "e4b87e7e0bf463eb8e6956e646f1e277e901512310def2c24bf0e11bd3c28e9a": (
        "large-v1", b"ABzY8r9j$a0{>%R7#4sLmoOs{s)o3~84-RPdcFk!JR<kSfC2yj"),
    "81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524": (
        "large-v2", b"ABzY8zd+h!0{>%R7=D0pU<_bnWW*tkYAhobTNnu$jnkEkXqp)j;w1Tzk)UH3X%SZd&fFZ2fC2yj"),
    "e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb": (
        "large-v3", b"ABzY8gWO1E0{>%R7(9S+Kn!D~%ngiGaR?*L!iJG9p-nab0JQ=-{D1-g00"),
    "aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a": (
        "large-v3-turbo", b"ABzY8j^C+e0{>%RARaKHP%t(lGR*)0g!tONPyhe`"),
}  # fmt: skip


def decode_alignment_heads(mask: bytes, n_layers: int, n_heads: int) -> list[list[int]] | None:
    """openai-whisper's packed head mask as ``[[layer, head], …]``; None if it does not fit."""
    array = np.frombuffer(gzip.decompress(base64.b85decode(mask)), dtype=bool)
    if array.size != n_layers * n_heads:
        return None
    return [[int(a), int(b)] for a, b in np.argwhere(array.reshape(n_layers, n_heads))]


def default_alignment_heads(n_layers: int, n_heads: int) -> list[list[int]]:
    """Every head of the last half of the layers: CTranslate2's choice for an unknown model."""
    return [[a, b] for a, b in itertools.product(range(n_layers // 2, n_layers), range(n_heads))]


def valid_alignment_heads(value: Any, n_layers: int, n_heads: int) -> list[list[int]] | None:
    """A model's own alignment heads (generation_config.json), if they are well-formed."""
    if not isinstance(value, list) or not value:
        return None
    pairs = []
    for pair in value:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            return None
        layer, head = pair
        if not (isinstance(layer, int) and isinstance(head, int)):
            return None
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            return None
        pairs.append([layer, head])
    return pairs


def load_tokenizer(path: Path) -> tokenizers.Tokenizer:
    try:
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise InvalidModel(f"{path} is too large to be a Whisper tokenizer.json")
        return tokenizers.Tokenizer.from_file(str(path))
    except OSError as exc:
        raise InvalidModel(f"cannot read the tokenizer {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # the tokenizers library raises plain Exception on bad JSON
        raise InvalidModel(f"{path} is not a tokenizer.json: {str(exc)[:200]}") from None


def vocabulary(tokenizer: tokenizers.Tokenizer, n_vocab: int, where: Path) -> list[str]:
    """The model's vocabulary: the tokenizer's tokens by id, then the timestamp tokens up to
    ``n_vocab`` (what CTranslate2's converter writes). Refuses a tokenizer of another model."""
    by_id = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in by_id]
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise InvalidModel(f"{where}: the token ids are not 0…{len(by_id) - 1} without gaps")
    needed = ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")
    no_timestamps = tokenizer.token_to_id("<|notimestamps|>")
    if no_timestamps is None or any(tokenizer.token_to_id(t) is None for t in needed):
        raise InvalidModel(f"{where} is not a Whisper tokenizer (no {', '.join(needed)})")
    fits = no_timestamps + 1 + TIMESTAMP_TOKENS
    if fits != n_vocab or len(tokens) > n_vocab:
        raise TokenizerRequired(
            f"{where} is the tokenizer of a model with {fits} tokens; this one has {n_vocab}. "
            "Give its own tokenizer.json with --tokenizer PATH"
        )
    tokens += [f"<|{(i - no_timestamps - 1) * 0.02:.2f}|>" for i in range(len(tokens), n_vocab)]
    return tokens


def token_config(tokenizer: tokenizers.Tokenizer, n_vocab: int) -> dict[str, Any]:
    """``suppress_ids``, ``suppress_ids_begin`` and ``lang_ids`` for ``config.json``, derived as
    openai-whisper does: non-speech symbols and the special tokens a transcript never holds."""
    wt = WhisperTokenizer(tokenizer, multilingual=False)
    specials = {wt.transcribe, wt.translate, wt.sot, wt.sot_prev, wt.sot_lm, wt.no_speech}
    langs = (tokenizer.token_to_id(f"<|{code}|>") for code in _LANGUAGE_CODES)
    return {
        "suppress_ids": sorted(set(wt.non_speech_tokens) | {s for s in specials if s is not None}),
        "suppress_ids_begin": [*wt.encode(" "), wt.eot],
        "lang_ids": sorted(i for i in langs if i is not None and i < n_vocab),
    }


def preprocessor_config(n_mels: int) -> dict[str, Any]:
    """The feature extractor's settings; faster-whisper reads ``feature_size`` (80 mel bins, 128
    for large-v3) from here, and assumes 80 without the file."""
    return {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": n_mels,
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }


def vocabulary_size(model_dir: Path) -> int | None:
    for name in VOCABULARY_FILES:
        path = model_dir / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            return len(json.loads(text)) if name.endswith(".json") else len(text.splitlines())
    return None


def tokenizer_from_store(store: ModelStore, n_vocab: int) -> tuple[Path, str] | None:
    """(tokenizer.json, model name) of a verified installed model with ``n_vocab`` tokens."""
    for name in store.names():
        try:
            info = store.verify(name)
            if vocabulary_size(info.path) == n_vocab:
                return info.path / "tokenizer.json", name
        except (HushscribeError, OSError, ValueError):
            continue  # a damaged model is no source of a tokenizer
    return None
