"""A tiny Whisper model with random weights, written as OpenAI's ``.pt`` and as a Hugging Face
directory without torch, and a numpy reference of Whisper's forward pass (openai-whisper's
``model.py``) to check a conversion against.

The ``.pt`` is laid out as ``torch.save`` lays it out: a zip with ``<name>/data.pkl`` whose pickle
names ``torch._utils._rebuild_tensor_v2`` and ``torch.HalfStorage``/``torch.FloatStorage``, and
one stored member per storage. Pickle writes a global only if it can import it, so stand-in
``torch`` modules sit in ``sys.modules`` while it dumps.
"""

from __future__ import annotations

import collections
import io
import json
import math
import pickle
import sys
import types
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Dims:
    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 64
    n_audio_head: int = 2
    n_audio_layer: int = 2
    n_vocab: int = 51865  # the demo base model's tokenizer fits
    n_text_ctx: int = 448
    n_text_state: int = 64
    n_text_head: int = 2
    n_text_layer: int = 2


def random_weights(dims: Dims, seed: int = 7) -> dict[str, np.ndarray]:
    """OpenAI's state dict for ``dims``: float16, scaled so activations stay in range."""
    rng = np.random.default_rng(seed)
    d, mlp = dims.n_audio_state, 4 * dims.n_audio_state
    w: dict[str, np.ndarray] = {}

    def lin(name: str, n_out: int, n_in: int, bias: bool = True) -> None:
        w[name + ".weight"] = rng.normal(0, 1 / math.sqrt(n_in), (n_out, n_in))
        if bias:
            w[name + ".bias"] = rng.normal(0, 0.1, n_out)

    def norm(name: str) -> None:
        w[name + ".weight"] = 1 + rng.normal(0, 0.1, d)
        w[name + ".bias"] = rng.normal(0, 0.1, d)

    w["encoder.conv1.weight"] = rng.normal(0, 1 / math.sqrt(3 * dims.n_mels), (d, dims.n_mels, 3))
    w["encoder.conv1.bias"] = rng.normal(0, 0.1, d)
    w["encoder.conv2.weight"] = rng.normal(0, 1 / math.sqrt(3 * d), (d, d, 3))
    w["encoder.conv2.bias"] = rng.normal(0, 0.1, d)
    w["encoder.positional_embedding"] = sinusoids(dims.n_audio_ctx, d)
    for part, layers, attns in (
        ("encoder", dims.n_audio_layer, ["attn"]),
        ("decoder", dims.n_text_layer, ["attn", "cross_attn"]),
    ):
        for i in range(layers):
            p = f"{part}.blocks.{i}."
            for a in attns:
                for proj in ("query", "key", "value", "out"):
                    lin(p + a + "." + proj, d, d, bias=proj != "key")
                norm(p + a + "_ln")
            lin(p + "mlp.0", mlp, d)
            lin(p + "mlp.2", d, mlp)
            norm(p + "mlp_ln")
    norm("encoder.ln_post")
    w["decoder.token_embedding.weight"] = rng.normal(0, 0.5, (dims.n_vocab, d))
    w["decoder.positional_embedding"] = rng.normal(0, 0.1, (dims.n_text_ctx, d))
    norm("decoder.ln")
    return {k: v.astype(np.float16) for k, v in w.items()}


def sinusoids(length: int, channels: int) -> np.ndarray:
    increment = math.log(10000) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1)


# --- the .pt writer ----------------------------------------------------------------------------


class _Storage:
    def __init__(self, key: str, data: np.ndarray, kind: type) -> None:
        self.key, self.data, self.kind = key, data, kind


def _rebuild_tensor_v2(*args: Any) -> None:
    raise AssertionError("never called: only its name is pickled")


class _Tensor:
    def __init__(
        self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
    ):
        self.args = (storage, offset, shape, stride, False, collections.OrderedDict())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_tensor_v2, self.args)


@contextmanager
def _torch_names() -> Iterator[dict[str, type]]:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    kinds = {}
    for name in ("HalfStorage", "FloatStorage"):
        kinds[name] = type(name, (), {"__module__": "torch"})
        setattr(torch, name, kinds[name])
    _rebuild_tensor_v2.__module__ = "torch._utils"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield kinds
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.data.size)
        return None


def write_pt(
    path: Path, dims: Dims, weights: dict[str, np.ndarray], *, extra: Any = None,
    state_only: bool = False,
) -> None:  # fmt: skip
    """``torch.save({"dims": …, "model_state_dict": …}, path)`` as torch would write it; with
    ``state_only``, Hugging Face's ``pytorch_model.bin``: the state dict alone, under its names.

    Most tensors are float16, each in its own storage; to exercise what real checkpoints hold,
    the positional embeddings are float32, and the key and value of each attention share one
    storage (at an offset), the value stored transposed (a strided view)."""
    stem = path.stem
    members: dict[str, bytes] = {}
    state: dict[str, Any] = collections.OrderedDict()
    with _torch_names() as kinds:

        def storage(data: np.ndarray, kind: str) -> _Storage:
            s = _Storage(str(len(members)), data, kinds[kind])
            members[f"{stem}/data/{s.key}"] = data.tobytes()
            return s

        for name, value in weights.items():
            if name.endswith(".key.weight"):
                continue
            if name.endswith(".value.weight"):
                key = weights[name.replace(".value.", ".key.")]
                shared = storage(np.concatenate([key.ravel(), value.T.ravel()]), "HalfStorage")
                n = value.shape[0]
                state[name.replace(".value.", ".key.")] = _Tensor(shared, 0, key.shape, (n, 1))
                state[name] = _Tensor(shared, key.size, value.shape, (1, n))
                continue
            kind = "FloatStorage" if "positional" in name else "HalfStorage"
            data = value.astype(np.float32 if kind == "FloatStorage" else np.float16)
            stride = tuple(int(np.prod(value.shape[i + 1 :])) for i in range(value.ndim))
            state[name] = _Tensor(storage(data.ravel(), kind), 0, value.shape, stride)
        obj: dict[str, Any] = {"dims": asdict(dims), "model_state_dict": state}
        if extra is not None:
            obj["extra"] = extra
        if state_only:
            obj = collections.OrderedDict((hf_name(k), v) for k, v in state.items())
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{stem}/data.pkl", buf.getvalue())
        zf.writestr(f"{stem}/byteorder", "little")
        for member, data in members.items():
            zf.writestr(member, data)
        zf.writestr(f"{stem}/version", "3\n")


# --- the Hugging Face writer -------------------------------------------------------------------

_TO_HF = [
    ("attn.query.", "self_attn.q_proj."), ("attn.key.", "self_attn.k_proj."),
    ("attn.value.", "self_attn.v_proj."), ("attn.out.", "self_attn.out_proj."),
    ("attn_ln.", "self_attn_layer_norm."), ("mlp.0.", "fc1."), ("mlp.2.", "fc2."),
    ("mlp_ln.", "final_layer_norm."), ("blocks.", "layers."),
]  # fmt: skip


def hf_name(name: str) -> str:
    name = name.replace("cross_attn.", "encoder_attn.").replace(
        "cross_attn_ln.", "encoder_attn_layer_norm."
    )
    name = name.replace("encoder_attn.query.", "encoder_attn.q_proj.")
    name = name.replace("encoder_attn.key.", "encoder_attn.k_proj.")
    name = name.replace("encoder_attn.value.", "encoder_attn.v_proj.")
    name = name.replace("encoder_attn.out.", "encoder_attn.out_proj.")
    for a, b in _TO_HF:
        name = name.replace(a, b)
    name = name.replace("encoder.positional_embedding", "encoder.embed_positions.weight")
    name = name.replace("decoder.positional_embedding", "decoder.embed_positions.weight")
    name = name.replace("encoder.ln_post.", "encoder.layer_norm.").replace(
        "decoder.ln.", "decoder.layer_norm."
    )
    name = name.replace("decoder.token_embedding.", "decoder.embed_tokens.")
    return "model." + name


def write_hf(directory: Path, dims: Dims, weights: dict[str, np.ndarray], tokenizer: Path) -> None:
    """A Hugging Face Whisper directory (float32 weights, as openai/whisper-* publish them)."""
    from safetensors.numpy import save_file

    directory.mkdir()
    tensors = {hf_name(k): v.astype(np.float32) for k, v in weights.items()}
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"]
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
        "activation_function": "gelu", "num_mel_bins": dims.n_mels,
        "max_source_positions": dims.n_audio_ctx, "d_model": dims.n_audio_state,
        "encoder_attention_heads": dims.n_audio_head, "encoder_layers": dims.n_audio_layer,
        "vocab_size": dims.n_vocab, "max_target_positions": dims.n_text_ctx,
        "decoder_attention_heads": dims.n_text_head, "decoder_layers": dims.n_text_layer,
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "generation_config.json").write_text(json.dumps({"alignment_heads": [[1, 0]]}))
    (directory / "tokenizer.json").write_bytes(tokenizer.read_bytes())


# --- the numpy reference (openai-whisper's model.py, in float32) ------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def layer_norm(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * w[name + ".weight"] + w[name + ".bias"]


def linear(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    y = x @ w[name + ".weight"].T
    return y + w[name + ".bias"] if name + ".bias" in w else y


def conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """x [C_in, T] → [C_out, T / stride]; kernel 3, padding 1."""
    padded = np.pad(x, ((0, 0), (1, 1)))
    n_out = (x.shape[1] + 2 - 3) // stride + 1
    out = np.zeros((weight.shape[0], n_out))
    for k in range(3):
        out += weight[:, :, k] @ padded[:, k : k + stride * (n_out - 1) + 1 : stride]
    return out + bias[:, None]


def attention(
    x: np.ndarray, w: dict[str, np.ndarray], name: str, n_head: int, xa: np.ndarray | None = None,
    causal: bool = False,
) -> np.ndarray:  # fmt: skip
    src = x if xa is None else xa
    q, k, v = (
        linear(x, w, name + ".query"),
        linear(src, w, name + ".key"),
        linear(src, w, name + ".value"),
    )
    d = q.shape[1] // n_head
    out = []
    for h in range(n_head):
        s = slice(h * d, (h + 1) * d)
        logits = q[:, s] @ k[:, s].T / math.sqrt(d)
        if causal:
            logits = logits + np.triu(np.full(logits.shape, -np.inf), 1)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        out.append((p / p.sum(-1, keepdims=True)) @ v[:, s])
    return linear(np.concatenate(out, axis=1), w, name + ".out")


def encode(mel: np.ndarray, w: dict[str, np.ndarray], dims: Dims) -> np.ndarray:
    """AudioEncoder.forward: mel [n_mels, 3000] → [1500, d]."""
    x = gelu(conv1d(mel, w["encoder.conv1.weight"], w["encoder.conv1.bias"], 1))
    x = gelu(conv1d(x, w["encoder.conv2.weight"], w["encoder.conv2.bias"], 2)).T
    x = x + w["encoder.positional_embedding"]
    for i in range(dims.n_audio_layer):
        p = f"encoder.blocks.{i}."
        x = x + attention(layer_norm(x, w, p + "attn_ln"), w, p + "attn", dims.n_audio_head)
        x = x + linear(gelu(linear(layer_norm(x, w, p + "mlp_ln"), w, p + "mlp.0")), w, p + "mlp.2")
    return layer_norm(x, w, "encoder.ln_post")


def decode_logits(
    tokens: list[int], xa: np.ndarray, w: dict[str, np.ndarray], dims: Dims
) -> np.ndarray:
    """TextDecoder.forward: the logits after the last of ``tokens``."""
    x = (
        w["decoder.token_embedding.weight"][tokens]
        + w["decoder.positional_embedding"][: len(tokens)]
    )
    for i in range(dims.n_text_layer):
        p = f"decoder.blocks.{i}."
        x = x + attention(
            layer_norm(x, w, p + "attn_ln"), w, p + "attn", dims.n_text_head, causal=True
        )
        x = x + attention(
            layer_norm(x, w, p + "cross_attn_ln"), w, p + "cross_attn", dims.n_text_head, xa
        )
        x = x + linear(gelu(linear(layer_norm(x, w, p + "mlp_ln"), w, p + "mlp.0")), w, p + "mlp.2")
    x = layer_norm(x, w, "decoder.ln")
    return x[-1] @ w["decoder.token_embedding.weight"].T
