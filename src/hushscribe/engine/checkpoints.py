"""Whisper checkpoints as published, read without torch or transformers: OpenAI's ``.pt`` (what
openai-whisper caches in ``~/.cache/whisper``) and a Hugging Face model directory
(``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

Both become one :class:`Checkpoint`: the model's dimensions and its tensors under OpenAI's names
(``encoder.blocks.0.attn.query.weight``), each read only when asked. Every shape is checked
against the dimensions before anything is converted, so a damaged or foreign file fails with a
message, not inside CTranslate2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hushscribe.engine import torch_zip
from hushscribe.errors import ConverterUnavailable, InvalidModel

MAX_JSON_BYTES = 4 * 1024 * 1024
"""config.json and generation_config.json are a few kB; more is not a Whisper model's."""

N_AUDIO_CTX = 1500
"""Encoder positions for 30 s of audio: faster-whisper always feeds 30 s windows."""

PT_SUFFIXES = (".pt", ".pth")
ZIP_MAGIC = b"PK\x03\x04"


class Tensor(Protocol):
    """A tensor not read yet: its shape, its size, and a way to read it."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def nbytes(self) -> int: ...

    def array(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Dims:
    """openai-whisper's ``ModelDimensions``."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @classmethod
    def parse(cls, raw: object, where: Path) -> Dims:
        names = [f.name for f in fields(cls)]
        if not isinstance(raw, dict) or any(
            not isinstance(raw.get(n), int) or isinstance(raw.get(n), bool) or raw[n] <= 0
            for n in names
        ):
            raise InvalidModel(
                f"{where}: the model dimensions are missing or invalid: {raw!r}"[:400]
            )
        dims = cls(**{n: int(raw[n]) for n in names})
        if dims.n_audio_state % dims.n_audio_head or dims.n_text_state % dims.n_text_head:
            raise InvalidModel(f"{where}: the width is not a multiple of the number of heads")
        if dims.n_audio_state != dims.n_text_state:
            raise InvalidModel(f"{where}: encoder and decoder widths differ; not a Whisper model")
        if dims.n_audio_ctx != N_AUDIO_CTX:
            raise InvalidModel(
                f"{where}: the encoder has {dims.n_audio_ctx} positions; faster-whisper needs "
                f"{N_AUDIO_CTX} (30 s windows)"
            )
        return dims


@dataclass
class Checkpoint:
    """A Whisper model as read from its published files."""

    kind: str  # "OpenAI checkpoint" | "Hugging Face model"
    path: Path
    weight_files: list[Path]
    dims: Dims
    tensors: dict[str, Tensor]  # OpenAI names
    tokenizer: Path | None = None
    generation: dict[str, Any] = field(default_factory=dict)


def checkpoint_kind(path: Path) -> str | None:
    """What ``path`` is: "openai" for a ``.pt`` file (or any torch zip), "hf" for a Hugging Face
    Whisper directory, None otherwise (a CTranslate2 model directory or archive, imported as
    it is)."""
    if path.is_file():
        with path.open("rb") as fh:
            magic = fh.read(4)
        return "openai" if path.suffix in PT_SUFFIXES or magic == ZIP_MAGIC else None
    if path.is_dir() and (path / "config.json").is_file():
        config = _read_json(path / "config.json")
        return "hf" if config.get("model_type") == "whisper" else None
    return None


@contextmanager
def open_checkpoint(path: Path) -> Iterator[Checkpoint]:
    """The checkpoint at ``path``; files it maps stay open until the block ends."""
    kind = checkpoint_kind(path)
    with ExitStack() as stack:
        if kind == "openai":
            checkpoint = _openai(path)
        elif kind == "hf":
            checkpoint = _hugging_face(path, stack)
        else:
            raise InvalidModel(f"{path} is neither an OpenAI .pt nor a Hugging Face Whisper model")
        check_shapes(checkpoint)
        yield checkpoint


def _openai(path: Path) -> Checkpoint:
    obj = torch_zip.load(path)
    if not isinstance(obj, dict) or "dims" not in obj or "model_state_dict" not in obj:
        raise InvalidModel(
            f"{path} is a PyTorch checkpoint but not an OpenAI Whisper one (no 'dims' and "
            "'model_state_dict'); for a Hugging Face model, give its directory"
        )
    state = obj["model_state_dict"]
    if not isinstance(state, dict):
        raise InvalidModel(f"{path}: model_state_dict is not a dictionary")
    tensors: dict[str, Tensor] = {
        str(k): v for k, v in state.items() if isinstance(v, torch_zip.TensorRef)
    }
    return Checkpoint("OpenAI checkpoint", path, [path], Dims.parse(obj["dims"], path), tensors)


# Hugging Face's names (transformers' WhisperForConditionalGeneration) → OpenAI's.
_HF_NAMES = [
    (r"(encoder|decoder)\.layers\.(\d+)\.self_attn\.q_proj\.", r"\1.blocks.\2.attn.query."),
    (r"(encoder|decoder)\.layers\.(\d+)\.self_attn\.k_proj\.", r"\1.blocks.\2.attn.key."),
    (r"(encoder|decoder)\.layers\.(\d+)\.self_attn\.v_proj\.", r"\1.blocks.\2.attn.value."),
    (r"(encoder|decoder)\.layers\.(\d+)\.self_attn\.out_proj\.", r"\1.blocks.\2.attn.out."),
    (r"(encoder|decoder)\.layers\.(\d+)\.self_attn_layer_norm\.", r"\1.blocks.\2.attn_ln."),
    (r"decoder\.layers\.(\d+)\.encoder_attn\.q_proj\.", r"decoder.blocks.\1.cross_attn.query."),
    (r"decoder\.layers\.(\d+)\.encoder_attn\.k_proj\.", r"decoder.blocks.\1.cross_attn.key."),
    (r"decoder\.layers\.(\d+)\.encoder_attn\.v_proj\.", r"decoder.blocks.\1.cross_attn.value."),
    (r"decoder\.layers\.(\d+)\.encoder_attn\.out_proj\.", r"decoder.blocks.\1.cross_attn.out."),
    (r"decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.", r"decoder.blocks.\1.cross_attn_ln."),
    (r"(encoder|decoder)\.layers\.(\d+)\.fc1\.", r"\1.blocks.\2.mlp.0."),
    (r"(encoder|decoder)\.layers\.(\d+)\.fc2\.", r"\1.blocks.\2.mlp.2."),
    (r"(encoder|decoder)\.layers\.(\d+)\.final_layer_norm\.", r"\1.blocks.\2.mlp_ln."),
    (r"encoder\.embed_positions\.weight$", "encoder.positional_embedding"),
    (r"decoder\.embed_positions\.weight$", "decoder.positional_embedding"),
    (r"encoder\.layer_norm\.", "encoder.ln_post."),
    (r"decoder\.layer_norm\.", "decoder.ln."),
    (r"decoder\.embed_tokens\.", "decoder.token_embedding."),
    (r"(encoder\.conv[12]\.)", r"\1"),
]
_HF_PATTERNS = [(re.compile(r"^(?:model\.)?" + a), b) for a, b in _HF_NAMES]


def openai_name(hf_name: str) -> str | None:
    """OpenAI's name for a Hugging Face Whisper tensor; None for one that has no part here."""
    if hf_name == "proj_out.weight":
        return "proj_out.weight"  # the output layer: in Whisper, the token embedding again
    for pattern, replacement in _HF_PATTERNS:
        renamed, count = pattern.subn(replacement, hf_name, count=1)
        if count:
            return renamed
    return None


def _hugging_face(path: Path, stack: ExitStack) -> Checkpoint:
    config = _read_json(path / "config.json")
    if config.get("activation_function", "gelu") != "gelu":
        raise InvalidModel(f"{path}: activation {config['activation_function']!r} is not Whisper's")
    keys = {
        "n_mels": "num_mel_bins", "n_audio_ctx": "max_source_positions",
        "n_audio_state": "d_model", "n_audio_head": "encoder_attention_heads",
        "n_audio_layer": "encoder_layers", "n_vocab": "vocab_size",
        "n_text_ctx": "max_target_positions", "n_text_state": "d_model",
        "n_text_head": "decoder_attention_heads", "n_text_layer": "decoder_layers",
    }  # fmt: skip
    dims = Dims.parse({k: config.get(v) for k, v in keys.items()}, path / "config.json")
    files, raw = _hf_weights(path, stack)
    tensors: dict[str, Tensor] = {}
    for hf_name, tensor in raw.items():
        name = openai_name(hf_name)
        if name is not None:
            tensors[name] = tensor
    generation = path / "generation_config.json"
    return Checkpoint(
        "Hugging Face model",
        path,
        files,
        dims,
        tensors,
        tokenizer=path / "tokenizer.json" if (path / "tokenizer.json").is_file() else None,
        generation=_read_json(generation) if generation.is_file() else {},
    )


def _hf_weights(path: Path, stack: ExitStack) -> tuple[list[Path], dict[str, Tensor]]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InvalidModel(f"{index} has no weight_map")
        names = sorted({str(v) for v in weight_map.values()})
        if any(Path(n).name != n or not n.endswith(".safetensors") for n in names):
            raise InvalidModel(f"{index} names files outside its directory")
        files = [path / n for n in names]
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    elif (path / "pytorch_model.bin").is_file():
        state = torch_zip.load(path / "pytorch_model.bin")
        if not isinstance(state, dict):
            raise InvalidModel(f"{path / 'pytorch_model.bin'} is not a state dict")
        found: dict[str, Tensor] = {
            str(k): v for k, v in state.items() if isinstance(v, torch_zip.TensorRef)
        }
        return [path / "pytorch_model.bin"], found
    else:
        raise InvalidModel(f"{path} holds no model.safetensors or pytorch_model.bin")
    tensors: dict[str, Tensor] = {}
    for file in files:
        tensors.update(_safetensors(file, stack))
    return files, tensors


@dataclass(frozen=True)
class _SafeTensor:
    handle: Any
    name: str
    shape: tuple[int, ...]
    nbytes: int

    def array(self) -> np.ndarray:
        return np.asarray(self.handle.get_tensor(self.name))


_SAFETENSORS_ITEMSIZE = {"F16": 2, "F32": 4, "F64": 8, "BF16": 2}


def _safetensors(file: Path, stack: ExitStack) -> dict[str, Tensor]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise ConverterUnavailable(
            "reading a Hugging Face model.safetensors needs the optional converter packages: "
            "pip install 'hushscribe[convert]' (or from the offline bundle); "
            "OpenAI .pt files need nothing more"
        ) from None
    try:
        handle = stack.enter_context(safe_open(str(file), framework="numpy"))
        out: dict[str, Tensor] = {}
        for name in handle.keys():  # noqa: SIM118 - safe_open is no mapping
            piece = handle.get_slice(name)
            dtype, shape = piece.get_dtype(), tuple(piece.get_shape())
            if dtype not in _SAFETENSORS_ITEMSIZE:
                continue  # not a weight (Whisper's are all floating point)
            if dtype == "BF16":
                raise InvalidModel(f"{file}: bfloat16 weights need torch to read; use float16/32")
            size = int(np.prod(shape, dtype=np.int64)) * _SAFETENSORS_ITEMSIZE[dtype]
            out[name] = _SafeTensor(handle, name, shape, size)
        return out
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidModel(f"{file} is not a readable safetensors file: {exc}") from None


def expected_shapes(dims: Dims, n_mlp: int) -> dict[str, tuple[int, ...]]:
    """Every tensor a Whisper model of ``dims`` has, under OpenAI's names, with its shape."""
    d = dims.n_audio_state
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.conv1.weight": (d, dims.n_mels, 3),
        "encoder.conv1.bias": (d,),
        "encoder.conv2.weight": (d, d, 3),
        "encoder.conv2.bias": (d,),
        "encoder.positional_embedding": (dims.n_audio_ctx, d),
        "encoder.ln_post.weight": (d,),
        "encoder.ln_post.bias": (d,),
        "decoder.token_embedding.weight": (dims.n_vocab, d),
        "decoder.positional_embedding": (dims.n_text_ctx, d),
        "decoder.ln.weight": (d,),
        "decoder.ln.bias": (d,),
    }
    blocks = [("encoder", i, ["attn"]) for i in range(dims.n_audio_layer)]
    blocks += [("decoder", i, ["attn", "cross_attn"]) for i in range(dims.n_text_layer)]
    for part, i, attentions in blocks:
        p = f"{part}.blocks.{i}."
        for attn in attentions:
            for proj in ("query", "key", "value", "out"):
                shapes[f"{p}{attn}.{proj}.weight"] = (d, d)
                if proj != "key":
                    shapes[f"{p}{attn}.{proj}.bias"] = (d,)
            shapes[f"{p}{attn}_ln.weight"] = shapes[f"{p}{attn}_ln.bias"] = (d,)
        shapes[f"{p}mlp.0.weight"], shapes[f"{p}mlp.0.bias"] = (n_mlp, d), (n_mlp,)
        shapes[f"{p}mlp.2.weight"], shapes[f"{p}mlp.2.bias"] = (d, n_mlp), (d,)
        shapes[f"{p}mlp_ln.weight"] = shapes[f"{p}mlp_ln.bias"] = (d,)
    return shapes


def check_shapes(checkpoint: Checkpoint) -> None:
    """Every tensor the model needs is there, with the shape its dimensions give."""
    first_mlp = checkpoint.tensors.get("encoder.blocks.0.mlp.0.weight")
    n_mlp = first_mlp.shape[0] if first_mlp is not None else 4 * checkpoint.dims.n_audio_state
    expected = expected_shapes(checkpoint.dims, n_mlp)
    if "proj_out.weight" in checkpoint.tensors:
        expected["proj_out.weight"] = expected["decoder.token_embedding.weight"]
    missing = [n for n in expected if n not in checkpoint.tensors]
    wrong = [
        f"{n} {tuple(t.shape)} (expected {expected[n]})"
        for n, t in checkpoint.tensors.items()
        if n in expected and tuple(t.shape) != expected[n]
    ]
    if missing or wrong:
        problems = [f"missing {n}" for n in missing[:5]] + wrong[:5]
        more = len(missing) + len(wrong) - len(problems)
        raise InvalidModel(
            f"{checkpoint.path} does not hold the Whisper model its dimensions describe: "
            + "; ".join(problems)
            + (f"; and {more} more" if more else "")
        )
    for name in [n for n in checkpoint.tensors if n not in expected]:
        del checkpoint.tensors[name]  # buffers and extras (e.g. alignment_heads) have no use


class Reader:
    """Reads each tensor once, as a float array, counting bytes for a progress bar.

    With ``dtype``, floats are stored in it as they are read: a float32 checkpoint converted to
    float16 then never holds its float32 copy in memory (safetensors reads into memory), and a
    float16 one is left as it is, mapped from the file."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        progress: Callable[[int], None] | None = None,
        dtype: str | None = None,
    ) -> None:
        self.tensors = checkpoint.tensors
        self.progress = progress
        self.dtype = dtype

    def __call__(self, name: str) -> np.ndarray:
        tensor = self.tensors[name]
        array = tensor.array()
        if array.dtype.kind != "f":
            raise InvalidModel(f"tensor {name} holds {array.dtype}, not floating point numbers")
        if self.dtype is not None:
            array = array.astype(self.dtype, copy=False)
        if self.progress:
            self.progress(tensor.nbytes)
        return array


def _read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise InvalidModel(f"{path} is too large for a model's JSON file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidModel(f"{path} is not a JSON object")
    return data
