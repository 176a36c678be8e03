"""Convert a Whisper checkpoint to a CTranslate2 model on this machine, offline, and install it.

``hushscribe models import large-v3.pt --name large-v3`` lands here: OpenAI's ``.pt`` (or a Hugging
Face model directory) is read without torch (:mod:`hushscribe.engine.checkpoints`), its tensors
are laid into CTranslate2's ``WhisperSpec`` — the mapping of ``ct2-transformers-converter``,
from OpenAI's names — and saved into the store's staging directory, then installed by
:meth:`ModelStore.install_prepared` like any import: the same manifest and checksums, and nothing
left behind when a step fails. The manifest's ``source`` names the file and its SHA-256.
"""

from __future__ import annotations

import errno
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from ctranslate2.specs import model_spec
from ctranslate2.specs.whisper_spec import WhisperSpec

from hushscribe.engine.checkpoints import Checkpoint, Reader, open_checkpoint
from hushscribe.engine.store import QUANTIZATIONS, ModelInfo, ModelStore, sha256_file
from hushscribe.engine.whisper_meta import (
    OPENAI_CHECKPOINTS,
    decode_alignment_heads,
    default_alignment_heads,
    load_tokenizer,
    preprocessor_config,
    token_config,
    tokenizer_from_store,
    valid_alignment_heads,
    vocabulary,
)
from hushscribe.errors import (
    InsufficientStorage,
    InvalidModel,
    InvalidOption,
    ModelExists,
    TokenizerRequired,
)

_TOKENIZER_HINTS = {
    51866: "large-v3 and turbo: the tokenizer.json of openai/whisper-large-v3 (Hugging Face) or "
    "of any CTranslate2 conversion of large-v3",
    51865: "a multilingual model: the tokenizer.json of any multilingual Whisper model, e.g. "
    "after `hushscribe models install-demo` (base)",
    51864: "an English-only model: the tokenizer.json of any *.en Whisper model, e.g. after "
    "`hushscribe models install-demo` (tiny.en)",
}


class Stages(Protocol):
    """Where a conversion reports how far it is: one stage after another, bytes in each."""

    def stage(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...


class _Quiet:
    def stage(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@dataclass(frozen=True)
class Converted:
    """An installed conversion and what the operator should know about it."""

    info: ModelInfo
    source: str  # "OpenAI checkpoint", "Hugging Face model"
    notes: tuple[str, ...]
    input_bytes: int  # bytes of tensors read
    seconds: float  # reading, converting and writing; not hashing or verifying


def import_checkpoint(
    store: ModelStore,
    source: Path,
    name: str,
    *,
    tokenizer: Path | None = None,
    quantization: str = "float16",
    replace: bool = False,
    progress: Stages | None = None,
) -> Converted:
    """Convert the checkpoint at ``source`` and install it in ``store`` as ``name``."""
    stages = progress or _Quiet()
    if quantization not in QUANTIZATIONS:
        raise InvalidOption(
            f"quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}"
        )
    if store.path(name).exists() and not replace:
        raise ModelExists(f"model '{name}' already exists; remove it first or choose another name")
    if not source.exists():
        raise InvalidModel(f"{source} does not exist")
    with open_checkpoint(source) as checkpoint:
        tokenizer_path, notes = _tokenizer(checkpoint, tokenizer, store)
        digests = {f: _sha256(f, stages) for f in checkpoint.weight_files}
        heads, note = _alignment_heads(checkpoint, digests)
        notes.append(note)
        with store.staging() as staging:
            out = staging / "model"
            out.mkdir()
            started = time.perf_counter()
            read = write_model(checkpoint, out, tokenizer_path, heads, quantization, stages)
            seconds = time.perf_counter() - started
            stages.stage(f"verifying {name}", sum(f.stat().st_size for f in out.iterdir()))
            info = store.install_prepared(
                out, name, _label(checkpoint, digests), progress=stages.advance
            )
    return Converted(info, checkpoint.kind, tuple(notes), read, seconds)


def write_model(
    checkpoint: Checkpoint,
    out: Path,
    tokenizer_path: Path,
    alignment_heads: list[list[int]],
    quantization: str,
    stages: Stages,
) -> int:
    """Write the CTranslate2 model directory; return the bytes of tensors read."""
    dims = checkpoint.dims
    tokenizer = load_tokenizer(tokenizer_path)
    tokens = vocabulary(tokenizer, dims.n_vocab, tokenizer_path)
    spec = WhisperSpec(dims.n_audio_layer, dims.n_audio_head, dims.n_text_layer, dims.n_text_head)
    total = sum(t.nbytes for t in checkpoint.tensors.values())
    stages.stage(f"reading {checkpoint.path.name}", total)
    # int8 is quantized by CTranslate2 from the weights as they are; floats are cast as read.
    dtype = quantization if quantization in ("float16", "float32") else None
    _fill(spec, Reader(checkpoint, stages.advance, dtype))
    for key, value in token_config(tokenizer, dims.n_vocab).items():
        setattr(spec.config, key, value)
    spec.config.alignment_heads = alignment_heads
    spec.register_vocabulary(tokens)
    spec.register_file(str(tokenizer_path), "tokenizer.json")
    spec.validate()
    stages.stage(f"storing as {quantization}", None)
    spec.optimize(quantization=quantization)
    size = _count_writes(spec, stages.advance)
    stages.stage("writing model.bin", size)
    try:
        spec.save(str(out))
        (out / "preprocessor_config.json").write_text(
            json.dumps(preprocessor_config(dims.n_mels), indent=2) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise InsufficientStorage(
            f"no space left in {out.parent.parent} for the converted model "
            f"({size / 1e9:.1f} GB); free some, or store it as int8 (--quantization int8)"
        ) from None
    return total


def _fill(spec: Any, read: Reader) -> None:
    """Lay OpenAI's tensors into CTranslate2's Whisper spec (its converter's mapping)."""
    enc, dec = spec.encoder, spec.decoder
    _linear(enc.conv1, read, "encoder.conv1")
    _linear(enc.conv2, read, "encoder.conv2")
    enc.position_encodings.encodings = read("encoder.positional_embedding")
    _norm(enc.layer_norm, read, "encoder.ln_post")
    for i, layer in enumerate(enc.layer):
        p = f"encoder.blocks.{i}."
        _attention(layer.self_attention, read, p + "attn", fused=True)
        _norm(layer.self_attention.layer_norm, read, p + "attn_ln")
        _ffn(layer.ffn, read, p)
    embedding = read("decoder.token_embedding.weight")
    dec.embeddings.weight = embedding
    dec.position_encodings.encodings = read("decoder.positional_embedding")
    _norm(dec.layer_norm, read, "decoder.ln")
    # Whisper's output layer is its token embedding (tied weights); CTranslate2 aliases the copy.
    tied = "proj_out.weight" in read.tensors
    dec.projection.weight = read("proj_out.weight") if tied else embedding
    for i, layer in enumerate(dec.layer):
        p = f"decoder.blocks.{i}."
        _attention(layer.self_attention, read, p + "attn", fused=True)
        _norm(layer.self_attention.layer_norm, read, p + "attn_ln")
        _attention(layer.attention, read, p + "cross_attn", fused=False)
        _norm(layer.attention.layer_norm, read, p + "cross_attn_ln")
        _ffn(layer.ffn, read, p)


def _linear(spec: Any, read: Reader, name: str) -> None:
    spec.weight = read(name + ".weight")
    spec.bias = read(name + ".bias")


def _norm(spec: Any, read: Reader, name: str) -> None:
    spec.gamma = read(name + ".weight")
    spec.beta = read(name + ".bias")


def _ffn(spec: Any, read: Reader, prefix: str) -> None:
    _norm(spec.layer_norm, read, prefix + "mlp_ln")
    _linear(spec.linear_0, read, prefix + "mlp.0")
    _linear(spec.linear_1, read, prefix + "mlp.2")


def _attention(spec: Any, read: Reader, prefix: str, *, fused: bool) -> None:
    """Self-attention: query, key and value in one matrix; cross-attention: query alone, key
    and value together (computed once from the audio). Whisper's key has no bias: zeros."""
    q, k, v = (read(f"{prefix}.{x}.weight") for x in ("query", "key", "value"))
    q_bias, v_bias = read(f"{prefix}.query.bias"), read(f"{prefix}.value.bias")
    k_bias = np.zeros(q_bias.shape, dtype=q_bias.dtype)
    if fused:
        spec.linear[0].weight = np.concatenate([q, k, v])
        spec.linear[0].bias = np.concatenate([q_bias, k_bias, v_bias])
    else:
        spec.linear[0].weight, spec.linear[0].bias = q, q_bias
        spec.linear[1].weight = np.concatenate([k, v])
        spec.linear[1].bias = np.concatenate([k_bias, v_bias])
    _linear(spec.linear[-1], read, prefix + ".out")


class _Counted(model_spec.NumpyVariable):  # type: ignore[misc]
    """A variable that reports its bytes as CTranslate2 writes them."""

    def __init__(self, array: np.ndarray, advance: Any) -> None:
        super().__init__(array)
        self._advance = advance

    def to_bytes(self) -> bytes:
        data: bytes = super().to_bytes()
        self._advance(len(data))
        return data


def _count_writes(spec: Any, advance: Any) -> int:
    total = 0

    def wrap(layer: Any, name: str, value: Any) -> None:
        nonlocal total
        if isinstance(value, model_spec.NumpyVariable):
            setattr(layer, name.rsplit("/", 1)[-1], _Counted(value.array, advance))
            total += int(value.num_bytes())

    model_spec.visit_spec(spec, wrap)
    return total


def _tokenizer(
    checkpoint: Checkpoint, given: Path | None, store: ModelStore
) -> tuple[Path, list[str]]:
    n_vocab = checkpoint.dims.n_vocab
    if given is not None:
        if not given.is_file():
            raise InvalidModel(f"--tokenizer {given}: no such file")
        return given, [f"tokenizer: {given}"]
    if checkpoint.tokenizer is not None:
        return checkpoint.tokenizer, ["tokenizer: the model's own tokenizer.json"]
    found = tokenizer_from_store(store, n_vocab)
    if found is not None:
        return found[0], [f"tokenizer: that of installed model '{found[1]}' ({n_vocab} tokens)"]
    hint = _TOKENIZER_HINTS.get(n_vocab, "the tokenizer.json published with this model")
    raise TokenizerRequired(
        f"{checkpoint.path} holds no tokenizer, and no installed model has a vocabulary of "
        f"{n_vocab} tokens; give the model's tokenizer.json with --tokenizer PATH ({hint})"
    )


def _alignment_heads(
    checkpoint: Checkpoint, digests: dict[Path, str]
) -> tuple[list[list[int]], str]:
    """The cross-attention heads that word timestamps follow: OpenAI's for its published
    checkpoints (known by SHA-256), the model's own from generation_config.json, else the
    default of CTranslate2's converter."""
    layers, heads = checkpoint.dims.n_text_layer, checkpoint.dims.n_text_head
    for digest in digests.values():
        if digest in OPENAI_CHECKPOINTS:
            known, mask = OPENAI_CHECKPOINTS[digest]
            decoded = decode_alignment_heads(mask, layers, heads)
            if decoded is not None:
                return decoded, f"OpenAI's published {known} checkpoint (SHA-256 matches)"
    own = valid_alignment_heads(checkpoint.generation.get("alignment_heads"), layers, heads)
    if own is not None:
        return own, "alignment heads for word timestamps: from generation_config.json"
    return default_alignment_heads(layers, heads), (
        "not one of OpenAI's published checkpoints: word timestamps follow every head of the "
        "decoder's last half (CTranslate2's default), which may place words less precisely"
    )


def _sha256(path: Path, stages: Stages) -> str:
    stages.stage(f"hashing {path.name}", path.stat().st_size)
    return sha256_file(path, stages.advance)


def _label(checkpoint: Checkpoint, digests: dict[Path, str]) -> str:
    if checkpoint.weight_files == [checkpoint.path]:
        return f"converted from {checkpoint.path.resolve()} (sha256 {digests[checkpoint.path]})"
    files = ", ".join(f"{f.name} sha256 {d}" for f, d in digests.items())
    return f"converted from {checkpoint.path.resolve()} ({files})"
