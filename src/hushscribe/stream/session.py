"""One live stream: its audio buffer, its turns, its confirmed and tentative text.

Audio arrives in small pieces (``append``). With turn detection on, Silero VAD (faster-whisper's
bundled ONNX model, run frame by frame as the audio comes) opens a turn when speech starts and
ends it after ``silence_duration_ms`` of silence; without it, a turn ends only when the client
commits. While a turn is open, ``pending`` asks for a decode of the turn's buffer every
``step_s`` seconds of new audio; ``apply`` feeds the words to LocalAgreement-2 and answers with
the newly confirmed words (``delta``) and the tentative rest (``partial``). An ended turn is
decoded once more with the full options, and that text is the turn's ``completed`` transcript.

The buffer stays short whatever the stream's length: past ``TRIM_S`` it is cut after the last
confirmed sentence, past ``CAP_S`` after the last confirmed word. Audio between turns is not
kept (but for ``prefix_padding_ms``), nor is the text of a turn, but for the part of it cut from
the buffer, which its transcript needs. A session is not thread-safe: one caller at a time.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hushscribe.audio import SAMPLE_RATE
from hushscribe.engine.streaming import StepRequest, StreamDecode
from hushscribe.stream.agreement import LocalAgreement, TimedWord
from hushscribe.stream.buffer import HeldAudio, StreamVad

TRIM_S = 15.0
"""A buffer longer than this is cut after its last confirmed sentence."""
CAP_S = 25.0
"""A buffer longer than this is cut after its last confirmed word; Whisper reads 30 s at most."""
WINDOW_S = 30.0
KEEP_S = 10.0
"""When nothing in a full buffer can be confirmed, the words of its latest decode that end this
far before its end are taken as they are and the audio before them dropped."""
END_PAD_S = 0.3
"""Audio kept after the last speech frame of a turn, for its last sounds."""
LANGUAGE_AFTER_S = 3.0
"""A turn's language, when not given, is fixed by its first decode of at least this much audio
that found words (a shorter one often guesses wrong)."""
CONTEXT_CHARS = 200
"""Confirmed text before the buffer given to the decoder as its prompt (whisper_streaming's)."""
MIN_COMMIT_S = 0.1
SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")
NO_SPACE_LANGUAGES = ("zh", "yue", "ja", "th", "lo", "my")

Event = dict[str, Any]
ITEM_EVENTS = "conversation.item.input_audio_transcription"


@dataclass(frozen=True)
class StreamOptions:
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    task: str = "transcribe"
    turn_detection: bool = True
    """Server VAD; False: turns end only on commit."""
    vad_threshold: float = 0.5
    silence_duration_ms: int = 500
    prefix_padding_ms: int = 300


def new_item_id() -> str:
    return "item_" + secrets.token_hex(10)


@dataclass
class _Turn:
    item_id: str
    start: int
    """First sample of the buffer (on the stream's clock): moves forward as it is cut."""
    language: str | None
    agreement: LocalAgreement
    decoded_to: int
    in_buffer: list[TimedWord] = field(default_factory=list)
    """Confirmed words not cut from the buffer yet."""
    before: list[str] = field(default_factory=list)
    """Text of the confirmed words cut from the buffer: the transcript's start."""
    said: bool = False
    partial: str = ""


class StreamSession:
    def __init__(self, options: StreamOptions, step_s: float = 1.0) -> None:
        self.options = options
        self.step = max(1, round(step_s * SAMPLE_RATE))
        self._audio = HeldAudio()
        self._vad = StreamVad() if options.turn_detection else None
        padding = options.prefix_padding_ms if options.turn_detection else 0
        self._padding = round(padding * SAMPLE_RATE / 1000)
        self._silence = round(options.silence_duration_ms * SAMPLE_RATE / 1000)
        self._quiet_since: int | None = None
        self._last_end = 0
        self._turn: _Turn | None = None
        self._finals: deque[tuple[_Turn, StepRequest]] = deque()
        self._issued: tuple[StepRequest, _Turn, int] | None = None
        self._last_item: str | None = None
        self._context = ""
        self._outbox: list[Event] = []

    @property
    def audio_s(self) -> float:
        return self._audio.end / SAMPLE_RATE

    @property
    def buffer_s(self) -> float:
        return (self._audio.end - self._audio.start) / SAMPLE_RATE

    # --- audio in ------------------------------------------------------------------------------

    def append(self, samples: np.ndarray) -> list[Event]:
        """Buffer float32 16 kHz samples; with turn detection, run VAD over them."""
        samples = np.array(samples, dtype=np.float32).reshape(-1)  # a copy: the caller's may change
        events, self._outbox = self._outbox, []
        if not len(samples):
            return events
        self._audio.append(samples)
        if self._vad is None:
            if self._turn is None:
                self._open(self._audio.end - len(samples))
        else:
            for frame_end, probability in self._vad.feed(samples):
                self._on_frame(frame_end, probability, events)
            if self._turn is None:  # between turns only the padding for the next one is kept
                self._audio.drop_before(self._vad.done - self._padding - StreamVad.FRAME)
        if (
            self._turn is not None
            and self._audio.end - self._turn.start > 2 * WINDOW_S * SAMPLE_RATE
        ):
            events += self._fit(self._turn, WINDOW_S)  # nobody asked for decodes: stay bounded
        return events

    def commit(self) -> list[Event]:
        """The client ends the current turn."""
        turn = self._turn
        if turn is None or self._audio.end - turn.start < MIN_COMMIT_S * SAMPLE_RATE:
            return [
                _error(
                    "input_audio_buffer_commit_empty",
                    "buffer too small: no audio to commit since the last turn ended",
                )
            ]
        return self._end(turn, self._audio.end, stopped_at=None)

    def clear(self) -> list[Event]:
        """Drop the audio not committed yet, and the open turn with it."""
        self._turn = None
        self._quiet_since = None
        self._audio.drop_before(self._audio.end)
        self._last_end = self._audio.end
        return [_event("cleared")]

    def _on_frame(self, frame_end: int, probability: float, events: list[Event]) -> None:
        threshold = self.options.vad_threshold
        frame_start = frame_end - StreamVad.FRAME
        if self._turn is None:
            if probability >= threshold:
                start = max(frame_start - self._padding, self._audio.start, self._last_end)
                self._quiet_since = None
                turn = self._open(start)
                events.append(
                    _event("speech_started", audio_start_ms=_ms(start), item_id=turn.item_id)
                )
            return
        if probability >= threshold:
            self._quiet_since = None
        elif probability < max(threshold - 0.15, 0.01) and self._quiet_since is None:
            self._quiet_since = frame_start
        if self._quiet_since is not None and frame_end - self._quiet_since >= self._silence:
            end = min(self._quiet_since + round(END_PAD_S * SAMPLE_RATE), frame_end)
            events += self._end(self._turn, end, stopped_at=frame_end)

    def _open(self, start: int) -> _Turn:
        self._turn = _Turn(
            new_item_id(),
            start,
            self.options.language,
            LocalAgreement(start / SAMPLE_RATE),
            decoded_to=start,
        )
        return self._turn

    def _end(self, turn: _Turn, end: int, stopped_at: int | None) -> list[Event]:
        events: list[Event] = []
        if stopped_at is not None:
            events.append(
                _event("speech_stopped", audio_end_ms=_ms(stopped_at), item_id=turn.item_id)
            )
        events.append(_event("committed", item_id=turn.item_id, previous_item_id=self._last_item))
        self._last_item = turn.item_id
        events += self._fit(turn, WINDOW_S, end)
        audio = self._audio.slice(turn.start, end)
        self._finals.append((turn, self._request(turn, audio, final=True)))
        self._turn = None
        self._quiet_since = None
        self._last_end = end
        self._audio.drop_before(end)
        return events

    # --- decoding ------------------------------------------------------------------------------

    def pending(self) -> StepRequest | None:
        """What to decode now: a committed turn's final decode first, else a step of the open
        turn once ``step_s`` of new audio came; None when there is nothing to do."""
        if self._finals:
            ended, final = self._finals[0]
            self._issued = (final, ended, -1)
            return final
        turn = self._turn
        if turn is None or self._audio.end - turn.decoded_to < self.step:
            return None
        self._outbox += self._fit(turn, WINDOW_S)
        request = self._request(turn, self._audio.slice(turn.start, self._audio.end))
        turn.decoded_to = self._audio.end
        self._issued = (request, turn, turn.start)
        return request

    def apply(self, request: StepRequest, result: StreamDecode) -> list[Event]:
        """The decode of ``request`` (from ``pending``) → delta / partial / completed events."""
        events, self._outbox = self._outbox, []
        if self._issued is None or self._issued[0] is not request:
            return events  # superseded, or its audio was cleared meanwhile
        _, turn, base = self._issued
        self._issued = None
        if request.final:
            self._finals.popleft()
            return events + self._complete(turn, result)
        if turn is not self._turn and all(turn is not t for t, _ in self._finals):
            return events
        offset = base / SAMPLE_RATE
        words = [TimedWord(offset + w.start, offset + w.end, w.word) for w in result.words]
        events += self._confirmed(turn, turn.agreement.insert(words)) + self._partial(turn)
        if turn.language is None and words and len(request.audio) >= LANGUAGE_AFTER_S * SAMPLE_RATE:
            turn.language = result.language
        if turn is self._turn:  # words it forces out of the tail come after that tail's partial
            events += self._trim(turn) + self._partial(turn)
        return events

    def _request(self, turn: _Turn, audio: np.ndarray, final: bool = False) -> StepRequest:
        prompt = " ".join(p for p in ((self.options.prompt or "").strip(), self._context) if p)
        return StepRequest(audio, turn.language, prompt or None, self.options.task, final)

    def _complete(self, turn: _Turn, result: StreamDecode) -> list[Event]:
        offset = turn.start / SAMPLE_RATE
        words = [TimedWord(offset + w.start, offset + w.end, w.word) for w in result.words]
        events = self._confirmed(turn, turn.agreement.flush(words))
        turn.agreement.tail = []
        events += self._partial(turn)
        joiner = "" if result.language in NO_SPACE_LANGUAGES else " "
        earlier = "".join(turn.before).strip()
        transcript = joiner.join(t for t in (earlier, result.text.strip()) if t)
        self._remember(result.text)
        events.append(
            _item_event("completed", turn, transcript=transcript, language=result.language)
        )
        return events

    def _confirmed(self, turn: _Turn, words: list[TimedWord]) -> list[Event]:
        turn.in_buffer += words
        text = "".join(w.text for w in words)
        if not turn.said:
            text = text.lstrip()
        if not text:
            return []
        turn.said = True
        return [_item_event("delta", turn, delta=text)]

    def _partial(self, turn: _Turn) -> list[Event]:
        text = "".join(w.text for w in turn.agreement.tail)
        if not turn.said:
            text = text.lstrip()
        if text == turn.partial:
            return []
        turn.partial = text
        return [_item_event("partial", turn, text=text)]

    # --- keeping the buffer short --------------------------------------------------------------

    def _trim(self, turn: _Turn) -> list[Event]:
        held = (self._audio.end - turn.start) / SAMPLE_RATE
        if held <= TRIM_S:
            return []
        ends = [w for w in turn.in_buffer if w.text.rstrip().endswith(SENTENCE_ENDS)]
        if ends:
            self._cut(turn, ends[-1].end)
        elif held > CAP_S:
            return self._fit(turn, CAP_S)
        return []

    def _fit(self, turn: _Turn, most_s: float, end: int | None = None) -> list[Event]:
        """Cut the turn's buffer (up to ``end``) to at most ``most_s``: after its last confirmed
        word, else after the words of its latest decode that end ``KEEP_S`` before its end."""
        end = self._audio.end if end is None else end
        if end - turn.start <= most_s * SAMPLE_RATE:
            return []
        if turn.in_buffer:
            self._cut(turn, turn.in_buffer[-1].end)
            if end - turn.start <= most_s * SAMPLE_RATE:
                return []
        until = end / SAMPLE_RATE - KEEP_S
        events = self._confirmed(turn, turn.agreement.force(until))
        self._cut(turn, max(until, turn.in_buffer[-1].end if turn.in_buffer else until))
        turn.agreement.skip_to(turn.start / SAMPLE_RATE)
        return events

    def _cut(self, turn: _Turn, time: float) -> None:
        sample = min(max(round(time * SAMPLE_RATE), turn.start), self._audio.end)
        gone = [w for w in turn.in_buffer if w.end * SAMPLE_RATE <= sample]
        turn.in_buffer = turn.in_buffer[len(gone) :]
        if gone:
            turn.before.append("".join(w.text for w in gone))
            self._remember(turn.before[-1])
        turn.start = sample
        turn.decoded_to = max(turn.decoded_to, sample)
        self._audio.drop_before(sample)

    def _remember(self, text: str) -> None:
        context = (self._context + " " + text.strip()).strip()
        if len(context) > CONTEXT_CHARS:
            context = context[-CONTEXT_CHARS:]
            context = context.split(" ", 1)[-1] if " " in context else context
        self._context = context


def _ms(sample: int) -> int:
    return sample * 1000 // SAMPLE_RATE


def _error(code: str, message: str) -> Event:
    return {
        "type": "error",
        "error": {"type": "invalid_request_error", "code": code, "message": message},
    }


def _event(kind: str, **fields: Any) -> Event:
    """An ``input_audio_buffer.*`` event."""
    return {"type": f"input_audio_buffer.{kind}", **fields}


def _item_event(kind: str, turn: _Turn, **fields: Any) -> Event:
    """A transcription event of the turn's item (``partial`` is ours, the rest OpenAI's)."""
    prefix = "hushscribe.transcription" if kind == "partial" else ITEM_EVENTS
    return {"type": f"{prefix}.{kind}", "item_id": turn.item_id, "content_index": 0, **fields}
