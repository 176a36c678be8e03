"""Spectral clustering of speaker embeddings (engine/clustering.py) on vectors with known groups:
voices as directions in 192 dimensions, windows as noisy copies of them."""

from __future__ import annotations

import numpy as np
import pytest

from hushscribe.engine.clustering import cluster

DIM = 192


def voices(sizes: list[int], noise: float = 0.9, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Windows of len(sizes) voices (sizes[i] windows each), interleaved as turns would be;
    cosine between two windows of one voice ≈ 0.55, of two voices ≈ 0."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    rng.shuffle(truth)
    x = centres[truth] + noise * rng.standard_normal((len(truth), DIM)) / np.sqrt(DIM)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), truth


def same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    pairs = {(int(a), int(b)) for a, b in zip(labels, truth, strict=True)}
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


def test_nothing_to_cluster() -> None:
    assert cluster(np.zeros((0, DIM), np.float32)).shape == (0,)
    assert cluster(voices([1])[0]).tolist() == [0]


def test_one_voice_is_one_cluster() -> None:
    x, _ = voices([80])
    assert set(cluster(x).tolist()) == {0}
    noisy, _ = voices([80], noise=1.1)  # ~0.45 alike, as a monologue over a noisy phone line
    assert set(cluster(noisy).tolist()) == {0}


@pytest.mark.parametrize("sizes", [[30, 25], [20, 30, 15], [12, 15, 10, 20, 14, 9, 16]])
def test_voices_found(sizes: list[int]) -> None:
    x, truth = voices(sizes)
    labels = cluster(x)
    assert same_partition(labels, truth)


def test_labels_in_order_of_first_appearance_and_repeatable() -> None:
    x, _ = voices([20, 20, 20])
    labels = cluster(x).tolist()
    firsts = [labels.index(k) for k in range(3)]
    assert labels[0] == 0 and firsts == sorted(firsts)
    assert cluster(x).tolist() == labels


def test_number_of_speakers_asked_for() -> None:
    x, truth = voices([20, 30, 15])
    assert len(set(cluster(x, num_speakers=2).tolist())) == 2
    five = cluster(x, num_speakers=5)
    assert len(set(five.tolist())) == 5
    assert len(set(cluster(x, max_speakers=2).tolist())) == 2
    assert len(set(cluster(x, min_speakers=4).tolist())) >= 4
    assert same_partition(cluster(x, min_speakers=2, max_speakers=6), truth)
    few, _ = voices([2, 2])
    assert len(set(cluster(few, num_speakers=10).tolist())) == 4  # never more than windows


def test_many_windows_subsampled_then_assigned() -> None:
    x, truth = voices([400, 250, 350])
    labels = cluster(x, max_points=120)
    assert same_partition(labels, truth)
    assert same_partition(cluster(x), truth)


def two_sessions(shift: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Voice A recorded in two sessions (its windows drawn around two directions ``shift``
    apart, as a reader's two chapters are), voice B between them: truth 0, 1, 0."""
    rng = np.random.default_rng(seed)
    a, b, channel = _unit(rng.standard_normal((3, DIM)))
    first, second = _unit(a + shift * channel), _unit(a - shift * channel)
    truth = np.repeat([0, 1, 0], [30, 20, 30])
    centres = np.stack([first, b, second])[np.repeat([0, 1, 2], [30, 20, 30])]
    x = centres + 0.8 * rng.standard_normal((len(truth), DIM)) / np.sqrt(DIM)
    return _unit(x).astype(np.float32), truth


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return out


def test_one_voice_in_two_sessions_is_one_speaker() -> None:
    """The eigengap sees three groups; the two sessions' windows are nearly as alike across as
    within, so they merge: two speakers, A's windows together. A stricter ``merge`` (as for a
    noisy recording) keeps the sessions apart."""
    x, truth = two_sessions(shift=0.3)
    assert same_partition(cluster(x), truth)
    assert len(set(cluster(x, merge=0.95).tolist())) == 3


def test_two_voices_as_alike_as_one_voices_sessions_stay_two() -> None:
    x, truth = voices([30, 30], noise=0.9, seed=4)
    assert same_partition(cluster(x), truth)
    assert same_partition(cluster(x, merge=0.80), truth)


def test_a_noisy_recording_needs_more_to_merge() -> None:
    """The merge threshold follows the recording's level spread: 0.80 at 24 dB or less (noise),
    0.76 at 32 dB or more, a line between; the spread of clean speech with pauses is wide, of
    the same speech under steady noise narrow."""
    from hushscribe.engine.diarize import level_spread_db, merge_threshold

    assert merge_threshold(10.0) == merge_threshold(24.0) == pytest.approx(0.80)
    assert merge_threshold(90.0) == merge_threshold(32.0) == pytest.approx(0.76)
    assert merge_threshold(28.0) == pytest.approx(0.78)
    rng = np.random.default_rng(0)
    t = np.arange(16_000 * 20) / 16_000
    speech = np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 0.25 * t) > 0)  # 2 s on, 2 s off
    quiet = speech + 0.001 * rng.standard_normal(len(t))
    noisy = speech + 0.05 * rng.standard_normal(len(t))
    assert level_spread_db(quiet) > 32 > 24 > level_spread_db(noisy) > 10
    assert level_spread_db(np.zeros(100, np.float32)) == 0.0
