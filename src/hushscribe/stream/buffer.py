"""A live stream's audio: the samples held, and Silero VAD reading them as they come."""

from __future__ import annotations

from collections import deque

import numpy as np
from faster_whisper.vad import get_vad_model


class HeldAudio:
    """The samples from ``start`` to ``end`` on the stream's clock, in the pieces they came in."""

    def __init__(self) -> None:
        self.pieces: deque[np.ndarray] = deque()
        self.start = 0
        self.end = 0

    def append(self, samples: np.ndarray) -> None:
        self.pieces.append(samples)
        self.end += len(samples)

    def slice(self, a: int, b: int) -> np.ndarray:
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return np.zeros(0, dtype=np.float32)
        joined = np.concatenate(list(self.pieces))
        return joined[a - self.start : b - self.start].copy()

    def drop_before(self, a: int) -> None:
        a = min(max(a, self.start), self.end)
        while self.pieces and self.start + len(self.pieces[0]) <= a:
            self.start += len(self.pieces.popleft())
        if self.pieces and self.start < a:
            self.pieces[0] = self.pieces[0][a - self.start :]
        self.start = a


class StreamVad:
    """Silero VAD over audio that comes in pieces: the model's state, and the last samples of the
    previous frame that it reads as context, carried from one piece to the next (the same
    probabilities as faster-whisper's ``get_speech_timestamps`` over the whole audio)."""

    FRAME = 512
    CONTEXT = 64

    def __init__(self) -> None:
        self._session = get_vad_model().session  # the ONNX model bundled with faster-whisper
        self._state = (np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32))
        self._context = np.zeros(self.CONTEXT, np.float32)
        self._rest = np.zeros(0, np.float32)
        self.done = 0
        """Samples read so far (whole frames)."""

    def feed(self, samples: np.ndarray) -> list[tuple[int, float]]:
        """(end sample, speech probability) of each whole frame the new samples complete."""
        audio = np.concatenate([self._rest, samples])
        n = len(audio) // self.FRAME * self.FRAME
        self._rest = audio[n:].copy()
        if not n:
            return []
        frames = audio[:n].reshape(-1, self.FRAME)
        contexts = np.concatenate([self._context[None], frames[:-1, -self.CONTEXT :]])
        h, c = self._state
        inputs = {"input": np.concatenate([contexts, frames], axis=1), "h": h, "c": c}
        probabilities, h, c = self._session.run(None, inputs)
        self._state = (h, c)
        self._context = frames[-1, -self.CONTEXT :].copy()
        ends = self.done + self.FRAME * np.arange(1, len(frames) + 1)
        self.done += n
        return list(zip(ends.tolist(), np.asarray(probabilities).reshape(-1).tolist(), strict=True))
