"""Speaker clustering: which windows of speech share a voice, in numpy alone.

Spectral clustering as 3D-Speaker and NME-SC do it for speaker embeddings: a cosine affinity
matrix, pruned row by row to each window's nearest neighbours (so one loud cross-speaker
similarity cannot join two voices), symmetrised; the number of speakers is the largest gap
between the smallest eigenvalues of its normalised Laplacian, and k-means (fixed seed) on those
eigenvectors labels the windows. Before that a similarity test answers "one voice" (the eigengap
cannot say 1); after it, two clusters are merged while their windows are nearly as alike across
the pair as within each (one voice split in two: a reader's two recording sessions, a noisy
monologue), which is what sets the count when the eigengap over-splits.

The affinity matrix is n², its eigendecomposition n³: a long file's windows are clustered by an
evenly spread subsample of at most ``MAX_POINTS`` and every other window joins its nearest
centroid, so 4 h of speech costs what ~40 min does.
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 2000
"""Windows clustered directly (25 min of speech): a 2000² affinity and its eigendecomposition
(2–4 s on 2 cores; 3000 took 9–17 s); a longer file is subsampled and the rest assigned."""
MAX_SPEAKERS = 20
"""Where the eigengap search stops when the caller gives no maximum."""
SAME_SPEAKER = 0.5
"""Cosine similarity between 1.5 s CAM++ windows that one voice keeps (different voices stay
well below it, ~0.0–0.3): when nearly all window pairs reach it, the file has one speaker."""
ONE_SPEAKER_QUANTILE = 0.1
"""…"nearly all": at most this fraction of pairs may fall below SAME_SPEAKER (a cough, a
window over a noise) and the file still counts as one voice."""
MERGE_CLEAN = 0.76
"""Two clusters are one voice when the mean similarity of their cross pairs of windows is at
least this fraction of the geometric mean of their within-cluster similarities. Measured on the
benchmark's 51 conversations and a reader recorded in two sessions (bench/diarization.py): on
clean audio 0.74–0.76 counted every file right; a fixed threshold on centroid similarity (0.75)
split the two-session reader and one of 17 clean files."""
MERGE_NOISY = 0.80
"""…and over noise (a telephone line at ~15 dB SNR), where every pair of windows sounds more
alike, two different voices reach 0.76–0.85 and one voice's halves fall to 0.70: there 0.80 did
best (0.76 cost 3 points of DER). ``merge_threshold`` interpolates between the two by the
recording's level spread (engine/diarize.py)."""
PRUNE_FRACTION = 0.022
"""p-pruning: each row keeps its strongest ~2 % of affinities (3D-Speaker's default)…"""
PRUNE_MIN = 6
"""…and at least this many, so a short file's graph stays connected within each voice."""
KMEANS_RESTARTS = 10
KMEANS_ITERATIONS = 100
SEED = 0


def cluster(
    embeddings: np.ndarray,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    max_points: int = MAX_POINTS,
    merge: float = MERGE_CLEAN,
) -> np.ndarray:
    """One label per row of ``embeddings`` (L2-normalised), 0..k-1 in order of first appearance.

    ``num_speakers`` fixes k; otherwise k is estimated within [min_speakers, max_speakers].
    ``merge``: how alike two clusters' windows must be to count as one voice (see MERGE_CLEAN)."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    x = _normalise(np.asarray(embeddings, dtype=np.float32))
    low, high = _bounds(n, num_speakers, min_speakers, max_speakers)
    if n > max_points:
        chosen = np.linspace(0, n - 1, max_points).round().astype(np.int64)
        labels = _assign(x, x[chosen], _cluster_all(x[chosen], low, high, merge))
    else:
        labels = _cluster_all(x, low, high, merge)
    return _first_appearance(labels)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = x / np.maximum(norms, 1e-12)
    return out


def _bounds(n: int, num: int | None, low: int | None, high: int | None) -> tuple[int, int]:
    """The range k may take: a forced number is both ends; never more speakers than windows."""
    if num is not None:
        k = max(1, min(num, n))
        return k, k
    lo = max(1, low or 1)
    hi = min(n, high if high is not None else MAX_SPEAKERS)
    return min(lo, n), max(min(lo, n), hi)


def _cluster_all(x: np.ndarray, low: int, high: int, merge: float) -> np.ndarray:
    n = len(x)
    if high <= 1 or n < 2:
        return np.zeros(n, dtype=np.int64)
    sim = x @ x.T
    if low <= 1 and _one_voice(sim):
        return np.zeros(n, dtype=np.int64)
    vectors, k = _spectral(sim, low, high)
    labels = _kmeans(vectors[:, :k], k)
    return _merge_alike(sim, labels, low, merge)


def _one_voice(sim: np.ndarray) -> bool:
    """True when nearly every pair of windows sounds like one speaker."""
    pairs = sim[~np.eye(len(sim), dtype=bool)]
    return bool(np.quantile(pairs, ONE_SPEAKER_QUANTILE) >= SAME_SPEAKER)


def _prune(sim: np.ndarray) -> np.ndarray:
    """Keep each row's strongest affinities, zero the rest, then symmetrise (float32, a few
    n² arrays at most: 2000 windows, 16 MB each)."""
    n = len(sim)
    keep = min(n, max(PRUNE_MIN, int(np.ceil(PRUNE_FRACTION * n))))
    a = np.maximum(sim, np.float32(0.0))
    kth = np.partition(a, n - keep, axis=1)[:, n - keep]
    a[a < kth[:, None]] = 0.0
    out: np.ndarray = a + a.T
    out *= np.float32(0.5)
    return out


def _spectral(sim: np.ndarray, low: int, high: int) -> tuple[np.ndarray, int]:
    """Eigenvectors of the pruned graph's normalised Laplacian (ascending) and k from the
    eigengap."""
    a = _prune(sim.astype(np.float32, copy=False))
    np.fill_diagonal(a, 0.0)
    scale = (1.0 / np.sqrt(np.maximum(a.sum(axis=1), 1e-12))).astype(np.float32)
    a *= scale[:, None]
    a *= scale[None, :]
    np.negative(a, out=a)  # the Laplacian I - D^-1/2 A D^-1/2, built in place
    a[np.diag_indices(len(a))] += 1.0
    values, vectors = np.linalg.eigh(a)
    if low == high:
        return vectors, low
    gaps = np.diff(values[: high + 1])
    # gaps[i] is the jump after the (i+1)-th smallest eigenvalue: i+1 clusters
    candidates = np.arange(1, len(gaps) + 1)
    allowed = (candidates >= max(low, 2)) & (candidates <= high)
    if not allowed.any():
        return vectors, max(low, min(high, 2))
    k = int(candidates[allowed][np.argmax(gaps[allowed])])
    return vectors, k


def _kmeans(points: np.ndarray, k: int) -> np.ndarray:
    """Lloyd's k-means, k-means++ starts, best of KMEANS_RESTARTS, a fixed seed."""
    n = len(points)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(SEED)
    best: np.ndarray | None = None
    best_cost = np.inf
    for _ in range(KMEANS_RESTARTS):
        centres = _plus_plus(points, k, rng)
        labels = np.zeros(n, dtype=np.int64)
        for _ in range(KMEANS_ITERATIONS):
            d = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
            new = d.argmin(axis=1)
            for j in range(k):
                members = points[new == j]
                centres[j] = members.mean(axis=0) if len(members) else points[d[:, j].argmin()]
            if np.array_equal(new, labels):
                break
            labels = new
        cost = float(((points - centres[labels]) ** 2).sum())
        if cost < best_cost - 1e-12:
            best, best_cost = labels.copy(), cost
    assert best is not None
    return best


def _plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        total = d.sum()
        if total <= 0:
            centres.append(points[rng.integers(len(points))])
            continue
        centres.append(points[rng.choice(len(points), p=d / total)])
    return np.array(centres, dtype=np.float64)


def _centroids(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.unique(labels)
    cents = np.stack([x[labels == i].mean(axis=0) for i in ids])
    return ids, _normalise(cents)


def _merge_alike(sim: np.ndarray, labels: np.ndarray, low: int, merge: float) -> np.ndarray:
    """Join the two most alike clusters while they sound like one voice: the mean similarity
    across their windows, over the geometric mean of each one's own (a single window's own is
    1), reaches ``merge``. Sums per cluster pair come from one k×k product and are updated in
    place as clusters join."""
    ids, labels = np.unique(labels, return_inverse=True)
    member = np.zeros((len(labels), len(ids)), dtype=np.float64)
    member[np.arange(len(labels)), labels] = 1.0
    sums = member.T @ sim.astype(np.float64) @ member  # sums[i, j]: over pairs i×j
    counts = member.sum(axis=0)
    alive = list(range(len(ids)))
    while len(alive) > max(low, 1):
        own = {i: _own_similarity(sums[i, i], counts[i]) for i in alive}
        best, pair = -np.inf, (0, 0)
        for a, i in enumerate(alive):
            for j in alive[a + 1 :]:
                score = sums[i, j] / (counts[i] * counts[j]) / np.sqrt(own[i] * own[j])
                if score > best:
                    best, pair = score, (i, j)
        if best < merge:
            break
        i, j = pair
        sums[i, :] += sums[j, :]
        sums[:, i] += sums[:, j]
        counts[i] += counts[j]
        labels[labels == j] = i
        alive.remove(j)
    out: np.ndarray = labels.astype(np.int64)
    return out


def _own_similarity(total: float, count: float) -> float:
    """Mean similarity between a cluster's distinct windows (1 for a single window)."""
    if count < 2:
        return 1.0
    return max((total - count) / (count * (count - 1)), 1e-6)


def _assign(x: np.ndarray, sample: np.ndarray, sample_labels: np.ndarray) -> np.ndarray:
    """Every window to the cluster whose centroid (of the clustered subsample) is nearest."""
    ids, cents = _centroids(sample, sample_labels)
    out: np.ndarray = ids[(x @ cents.T).argmax(axis=1)]
    return out


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber so the first window's cluster is 0, the next new one 1, and so on."""
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], dtype=np.int64)
