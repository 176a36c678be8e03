"""Converting Whisper checkpoints on the machine: OpenAI's .pt and a Hugging Face directory.

A tiny model with random weights is written the way torch.save and Hugging Face write theirs
(tests/whisper_tiny.py, no torch). It goes through `hushscribe models import` like large-v3.pt
would, is verified, loaded by faster-whisper and transcribes real speech; random weights say
nothing about the mapping, so the converted model's encoder output and decoder logits are
compared with a numpy implementation of openai-whisper's model on the same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import ctranslate2
import numpy as np
import pytest

from hushscribe import audio
from hushscribe.engine import ModelManager, ModelStore, make_options, transcribe
from hushscribe.engine.convert import import_checkpoint
from hushscribe.engine.whisper_meta import (
    OPENAI_CHECKPOINTS,
    decode_alignment_heads,
    load_tokenizer,
    token_config,
    vocabulary,
)
from hushscribe.errors import (
    ConverterUnavailable,
    InsufficientStorage,
    InvalidModel,
    TokenizerRequired,
)
from hushscribe.settings import Settings, load_settings
from tests.speech import clip
from tests.tmpfs import small_tmpfs
from tests.whisper_tiny import (
    Dims,
    decode_logits,
    encode,
    random_weights,
    write_hf,
    write_pt,
)

DIMS = Dims()
SOT, EN, TRANSCRIBE, NO_TIMESTAMPS = 50258, 50259, 50359, 50363  # multilingual vocabulary
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}


def hushscribe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hushscribe", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**CLEAN_ENV, "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return random_weights(DIMS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, weights: dict[str, np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("pt") / "tiny-random.pt"
    write_pt(path, DIMS, weights)
    return path


def data_dir_with_base(root: Path, settings: Settings) -> Path:
    """A fresh data dir holding only the session's base model (linked, not copied)."""
    (root / "models").mkdir(parents=True)
    (root / "models" / "base").symlink_to(settings.models_dir / "base", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def converted(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings, checkpoint: Path
) -> tuple[Path, str]:
    """The .pt imported through the CLI, as an operator would: (data dir, CLI stdout)."""
    data = data_dir_with_base(tmp_path_factory.mktemp("data"), settings)
    proc = hushscribe(
        "--data-dir", str(data), "models", "import", str(checkpoint), "--name", "tiny-random"
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return data, proc.stdout


def leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.name.startswith("."))


def test_cli_converts_an_openai_checkpoint(
    converted: tuple[Path, str], checkpoint: Path, settings: Settings
) -> None:
    data, stdout = converted
    model = data / "models" / "tiny-random"
    base = settings.models_dir / "base"
    assert "Converted OpenAI checkpoint tiny-random.pt" in stdout
    assert "tokenizer: that of installed model 'base' (51865 tokens)" in stdout
    assert "not one of OpenAI's published checkpoints" in stdout
    manifest = json.loads((model / "manifest.json").read_text())
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert manifest["source"] == f"converted from {checkpoint.resolve()} (sha256 {digest})"
    assert set(manifest["files"]) == {
        "model.bin", "config.json", "tokenizer.json", "vocabulary.json",
        "preprocessor_config.json",
    }  # fmt: skip
    for name in ("tokenizer.json", "vocabulary.json"):  # what CTranslate2's converter writes
        assert (model / name).read_bytes() == (base / name).read_bytes(), name
    config, published = (json.loads((d / "config.json").read_text()) for d in (model, base))
    for key in ("suppress_ids", "suppress_ids_begin", "lang_ids"):
        assert config[key] == published[key], key
    assert config["alignment_heads"] == [[1, 0], [1, 1]]  # the last half of 2 layers × 2 heads
    assert json.loads((model / "preprocessor_config.json").read_text())["feature_size"] == 80
    rows = json.loads(hushscribe("--data-dir", str(data), "models", "list", "--json").stdout)
    row = next(r for r in rows if r["name"] == "tiny-random")
    assert row["multilingual"] is True and row["size"] == "d64"
    proc = hushscribe("--data-dir", str(data), "models", "verify", "tiny-random")
    assert proc.returncode == 0 and "ok" in proc.stdout
    assert leftovers(data / "models") == []


def test_converted_model_transcribes_real_speech(
    converted: tuple[Path, str], tmp_path: Path
) -> None:
    """Random weights say nothing sensible, but through faster-whisper they must say it in a
    well-formed transcript: segments in order, inside the audio."""
    data, _ = converted
    jfk = clip("jfk.flac").path
    proc = hushscribe(
        "--data-dir", str(data), "transcribe", str(jfk), "--model", "tiny-random",
        "--language", "en", "--format", "verbose_json", "--output-dir", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    body = json.loads((tmp_path / "jfk.verbose.json").read_text())
    assert body["model"]["name"] == "tiny-random" and 10.5 < body["duration"] < 11.5
    segments = body["segments"]
    assert isinstance(segments, list) and segments
    for s in segments:
        assert 0 <= s["start"] <= s["end"] <= body["duration"] + 0.5, s
        assert isinstance(s["text"], str) and s["tokens"]
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)


def features(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (DIMS.n_mels, 3000)).astype(np.float32)


def ct2_encoding(model_dir: Path, mel: np.ndarray) -> tuple[ctranslate2.models.Whisper, np.ndarray]:
    model = ctranslate2.models.Whisper(
        str(model_dir), device="cpu", compute_type="float32", intra_threads=2
    )
    out = model.encode(ctranslate2.StorageView.from_array(mel[None]), to_cpu=True)
    return model, np.array(out)[0]


def test_encoder_and_decoder_match_a_numpy_whisper(
    converted: tuple[Path, str], weights: dict[str, np.ndarray]
) -> None:
    """The converted model computes what openai-whisper's model computes on the same weights
    (float16 weights, float32 arithmetic; the gap is rounding, a mapping error is order 1)."""
    data, _ = converted
    w = {k: v.astype(np.float32) for k, v in weights.items()}
    mel = features()
    model, got = ct2_encoding(data / "models" / "tiny-random", mel)
    expected = encode(mel, w, DIMS)
    assert got.shape == (DIMS.n_audio_ctx, DIMS.n_audio_state)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    # The comparison has teeth: reading the value projections without their stride (they are
    # stored transposed in the .pt) gives a visibly different encoder.
    wrong = dict(w)
    for i in range(DIMS.n_audio_layer):
        wrong[f"encoder.blocks.{i}.attn.value.weight"] = w[
            f"encoder.blocks.{i}.attn.value.weight"
        ].T
    assert np.abs(encode(mel, wrong, DIMS) - got).max() > 0.05

    prompt = [SOT, EN, TRANSCRIBE, NO_TIMESTAMPS]
    result = model.generate(
        ctranslate2.StorageView.from_array(mel[None]), [prompt], beam_size=1,
        max_length=len(prompt) + 1, return_logits_vocab=True, suppress_blank=False,
        suppress_tokens=[],
    )[0]  # fmt: skip
    logits = np.array(result.logits[0])[0]
    reference = decode_logits(prompt, expected, w, DIMS)
    assert logits.shape == (DIMS.n_vocab,)
    np.testing.assert_allclose(logits, reference, atol=1e-2)
    assert int(logits.argmax()) == int(reference.argmax())

    # Language detection: the decoder after <|startoftranscript|>, over config.json's lang_ids.
    lang_ids = json.loads((data / "models" / "tiny-random" / "config.json").read_text())["lang_ids"]
    first = decode_logits([SOT], expected, w, DIMS)[lang_ids]
    probs = np.exp(first - first.max()) / np.exp(first - first.max()).sum()
    vocab = json.loads((data / "models" / "tiny-random" / "vocabulary.json").read_text())
    detected = dict(model.detect_language(ctranslate2.StorageView.from_array(mel[None]))[0])
    for token_id, p in zip(lang_ids, probs, strict=True):
        assert abs(detected[vocab[token_id]] - p) < 1e-3


def test_hugging_face_directory_converts_to_the_same_model(
    tmp_path: Path,
    converted: tuple[Path, str],
    weights: dict[str, np.ndarray],
    settings: Settings,
) -> None:
    """The same weights as a Hugging Face directory (float32 safetensors, tied output layer,
    generation_config.json) and as its pytorch_model.bin: the same model comes out."""
    data, _ = converted
    mel = features(2)
    _, from_pt = ct2_encoding(data / "models" / "tiny-random", mel)
    hf = tmp_path / "whisper-tiny-random"
    write_hf(hf, DIMS, weights, settings.models_dir / "base" / "tokenizer.json")
    store = ModelStore(tmp_path / "models")
    result = import_checkpoint(store, hf, "from-hf")
    assert result.source == "Hugging Face model"
    assert "tokenizer: the model's own tokenizer.json" in result.notes
    assert "from generation_config.json" in " ".join(result.notes)
    digest = hashlib.sha256((hf / "model.safetensors").read_bytes()).hexdigest()
    assert (
        result.info.source == f"converted from {hf.resolve()} (model.safetensors sha256 {digest})"
    )
    config = json.loads((result.info.path / "config.json").read_text())
    assert config["alignment_heads"] == [[1, 0]]
    _, from_hf = ct2_encoding(result.info.path, mel)
    np.testing.assert_allclose(from_hf, from_pt, atol=1e-5)

    (hf / "model.safetensors").unlink()
    write_pt(hf / "pytorch_model.bin", DIMS, weights, state_only=True)
    result = import_checkpoint(store, hf, "from-hf-bin", quantization="float32")
    _, from_bin = ct2_encoding(result.info.path, mel)
    np.testing.assert_allclose(from_bin, from_pt, atol=1e-5)
    assert store.names() == ["from-hf", "from-hf-bin"] and leftovers(store.root) == []


def test_a_checkpoint_that_names_another_global_is_refused_unrun(
    tmp_path: Path, settings: Settings, weights: dict[str, np.ndarray]
) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, (f"touch {marker}",))

    write_pt(evil, DIMS, weights, extra=Payload())
    data = data_dir_with_base(tmp_path / "data", settings)
    proc = hushscribe("--data-dir", str(data), "models", "import", str(evil), "--name", "evil")
    assert proc.returncode == 2
    assert "unsafe_checkpoint" in proc.stderr and ".system, which a model" in proc.stderr
    assert "nothing in it was run" in proc.stderr
    assert not marker.exists()
    assert sorted(p.name for p in (data / "models").iterdir()) == ["base"]

    # A pickle that tries to rewrite one of the allowed functions (BUILD on it) is refused too.
    sneaky = tmp_path / "sneaky.pt"
    with zipfile.ZipFile(sneaky, "w") as zf:
        # GLOBAL torch._utils._rebuild_tensor_v2, {"__code__": 1}, BUILD
        pkl = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x08\x00\x00\x00__code__K\x01sb."
        zf.writestr("sneaky/data.pkl", pkl)
    with pytest.raises(InvalidModel, match="attempt to change a function"):
        import_checkpoint(ModelStore(data / "models"), sneaky, "sneaky")


def test_truncated_and_foreign_files_fail_clearly(
    tmp_path: Path, settings: Settings, checkpoint: Path
) -> None:
    data = data_dir_with_base(tmp_path / "data", settings)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    proc = hushscribe("--data-dir", str(data), "models", "import", str(cut), "--name", "cut")
    assert proc.returncode == 2 and "invalid_model" in proc.stderr
    assert "is not a PyTorch checkpoint, or it is truncated" in proc.stderr
    store = ModelStore(data / "models")
    plain = tmp_path / "state.pt"  # a valid torch zip, but not OpenAI's {"dims", ...}
    write_pt(plain, DIMS, {"encoder.conv1.bias": np.zeros(4, np.float16)}, state_only=True)
    with pytest.raises(InvalidModel, match="not an OpenAI Whisper one"):
        import_checkpoint(store, plain, "plain")
    damaged = tmp_path / "damaged.pt"
    data_bytes = bytearray(checkpoint.read_bytes())
    data_bytes[len(data_bytes) // 2] ^= 0xFF  # inside a storage: the zip CRC catches it
    damaged.write_bytes(bytes(data_bytes))
    tokenizer = settings.models_dir / "base" / "tokenizer.json"
    with pytest.raises(InvalidModel, match="damaged"):
        import_checkpoint(store, damaged, "damaged", tokenizer=tokenizer)
    assert store.names() == ["base"] and leftovers(store.root) == []


def test_a_missing_tokenizer_names_the_option(
    tmp_path: Path, settings: Settings, checkpoint: Path
) -> None:
    data = tmp_path / "empty"
    proc = hushscribe("--data-dir", str(data), "models", "import", str(checkpoint), "--name", "x")
    assert proc.returncode == 2 and "tokenizer_required" in proc.stderr
    assert "holds no tokenizer" in proc.stderr and "--tokenizer PATH" in proc.stderr
    store = ModelStore(data / "models")
    english = settings.models_dir / "tiny.en" / "tokenizer.json"
    with pytest.raises(TokenizerRequired, match=r"51864 tokens; this one has 51865.*--tokenizer"):
        import_checkpoint(store, checkpoint, "x", tokenizer=english)
    assert store.names() == [] and leftovers(store.root) == []


def test_safetensors_needs_the_convert_extra(
    tmp_path: Path,
    settings: Settings,
    weights: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hf = tmp_path / "hf"
    write_hf(hf, DIMS, weights, settings.models_dir / "base" / "tokenizer.json")
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    with pytest.raises(ConverterUnavailable) as raised:
        import_checkpoint(ModelStore(tmp_path / "models"), hf, "x")
    assert "pip install 'hushscribe[convert]'" in raised.value.message


def test_what_the_tokenizer_gives_is_what_openai_published(settings: Settings) -> None:
    """config.json's token lists, the vocabulary and OpenAI's alignment heads, derived here, equal
    those CTranslate2's converter wrote for the demo models from Hugging Face's files."""
    for name, n_vocab in (("base", 51865), ("tiny.en", 51864)):
        model = settings.models_dir / name
        published = json.loads((model / "config.json").read_text())
        tokenizer = load_tokenizer(model / "tokenizer.json")
        derived = token_config(tokenizer, n_vocab)
        assert derived["suppress_ids"] == published["suppress_ids"], name
        assert derived["suppress_ids_begin"] == published["suppress_ids_begin"], name
        vocab_file = next(model.glob("vocabulary.*"))
        lines = vocab_file.read_text(encoding="utf-8")
        expected = json.loads(lines) if vocab_file.suffix == ".json" else lines.splitlines()
        assert vocabulary(tokenizer, n_vocab, model) == expected, name
        masks = {n: m for n, m in OPENAI_CHECKPOINTS.values()}
        layers, heads = {"base": (6, 8), "tiny.en": (4, 6)}[name]
        assert decode_alignment_heads(masks[name], layers, heads) == published["alignment_heads"]


def large_v3_tokenizer(base: Path, dest: Path) -> Path:
    """large-v3's tokenizer, made from base's as OpenAI made it: <|yue|> after the 99 languages,
    every later special token one id up (51866 tokens)."""
    data = json.loads(base.read_text(encoding="utf-8"))
    for token in data["added_tokens"]:
        if token["id"] >= 50358:
            token["id"] += 1
    yue = {**data["added_tokens"][0], "id": 50358, "content": "<|yue|>"}
    data["added_tokens"].append(yue)
    data["added_tokens"].sort(key=lambda t: t["id"])
    data["post_processor"] = None  # names the old ids; transcription does not use it
    dest.write_text(json.dumps(data), encoding="utf-8")
    return dest


def test_a_large_v3_shaped_checkpoint_needs_its_own_tokenizer_and_128_mels(
    tmp_path: Path, settings: Settings
) -> None:
    """large-v3 differs from the rest: 128 mel bins, and 51866 tokens (no installed model's
    tokenizer fits). Converted with its own tokenizer, faster-whisper reads 128-bin features."""
    dims = Dims(n_mels=128, n_vocab=51866)
    pt = tmp_path / "large-v3-tiny.pt"
    write_pt(pt, dims, random_weights(dims, seed=3))
    data = data_dir_with_base(tmp_path / "data", settings)
    proc = hushscribe("--data-dir", str(data), "models", "import", str(pt), "--name", "v3")
    assert proc.returncode == 2 and "vocabulary of 51866 tokens" in proc.stderr
    assert "--tokenizer PATH (large-v3 and turbo" in proc.stderr
    tokenizer = large_v3_tokenizer(settings.models_dir / "base" / "tokenizer.json", tmp_path / "t")
    proc = hushscribe(
        "--data-dir", str(data), "models", "import", str(pt), "--name", "v3",
        "--tokenizer", str(tokenizer),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    model = data / "models" / "v3"
    config = json.loads((model / "config.json").read_text())
    vocab = json.loads((model / "vocabulary.json").read_text())
    assert len(vocab) == 51866 and vocab[50358] == "<|yue|>" and vocab[-1] == "<|30.00|>"
    assert len(config["lang_ids"]) == 100 and 50358 in config["lang_ids"]
    assert config["suppress_ids_begin"] == [220, 50257]
    assert {50359, 50360, 50361, 50362, 50363} <= set(config["suppress_ids"])  # the specials
    assert json.loads((model / "preprocessor_config.json").read_text())["feature_size"] == 128

    s = load_settings(None, data_dir=data, engine={"cpu_threads": 2})
    decoded = audio.decode(clip("jfk.flac").path, s.audio)
    with ModelManager(s).use("v3") as loaded:
        assert loaded.whisper.feature_extractor.mel_filters.shape[0] == 128
        t = transcribe(loaded, decoded.samples, make_options(language="en"), s.engine)
    assert t.segments and all(0 <= x.start <= x.end <= t.duration + 0.5 for x in t.segments)


def test_a_full_disk_fails_the_import_and_leaves_nothing(
    tmp_path: Path, settings: Settings, checkpoint: Path
) -> None:
    tokenizer = settings.models_dir / "base" / "tokenizer.json"
    with small_tmpfs(tmp_path / "models", "6m") as root:  # the model needs 12 MB
        store = ModelStore(root)
        with pytest.raises(InsufficientStorage, match=r"no space left in .* for the converted"):
            import_checkpoint(store, checkpoint, "big", tokenizer=tokenizer)
        assert list(root.iterdir()) == []
