"""Live streams through StreamSession + decode_many with the real model on real speech.

Audio is fed the way a client sends it (pieces of 0.1-0.5 s) and decoded the way a worker does
(every session's pending step in one ``decode_many`` call). A ``Client`` reads the events as a
page would and checks, on every event, what LocalAgreement promises: the confirmed text of an
item only grows by appending, and every word it confirms was in the partial shown before it.
"""

from __future__ import annotations

import resource
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from hushscribe import audio
from hushscribe.engine import ModelManager
from hushscribe.engine.loader import LoadedModel
from hushscribe.engine.streaming import StepRequest, StreamDecode, StreamWord, decode_many
from hushscribe.settings import Settings
from hushscribe.stream import StreamOptions, StreamSession
from hushscribe.stream.agreement import normalise as normalise_word
from hushscribe.stream.session import CAP_S, WINDOW_S
from tests.speech import clip, normalise

SR = audio.SAMPLE_RATE
ITEM = "conversation.item.input_audio_transcription."


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.float32)


def speech(settings: Settings, name: str) -> np.ndarray:
    return audio.decode(clip(name).path, settings.audio).samples


def words_of(text: str) -> list[str]:
    return [w for w in (normalise_word(t) for t in text.split()) if w]


@dataclass
class Item:
    confirmed: str = ""
    partial: str = ""
    completed: str | None = None
    language: str | None = None
    kinds: list[str] = field(default_factory=list)


@dataclass
class Client:
    """One stream's events, as a client sees them, checked as they come."""

    items: dict[str, Item] = field(default_factory=dict)
    buffer_events: list[dict[str, Any]] = field(default_factory=list)

    def take(self, events: list[dict[str, Any]], final: bool = False) -> None:
        for event in events:
            kind = event["type"]
            if kind.startswith("input_audio_buffer."):
                self.buffer_events.append(event)
            if "item_id" not in event:
                continue
            item = self.items.setdefault(event["item_id"], Item())
            item.kinds.append(kind.rsplit(".", 1)[-1])
            if kind.endswith(".delta") or kind.endswith(".partial"):
                assert item.completed is None, f"{kind} after the item completed"
            if kind == ITEM + "delta":
                self._delta(item, event["delta"], final)
            elif kind == "hushscribe.transcription.partial":
                item.partial = event["text"]
            elif kind == ITEM + "completed":
                assert item.completed is None
                item.completed, item.language = event["transcript"], event["language"]

    def _delta(self, item: Item, delta: str, final: bool) -> None:
        assert delta and (delta[0] != " " or item.confirmed), "the first delta has no leading space"
        before = item.confirmed
        item.confirmed += delta
        assert item.confirmed.startswith(before)  # append-only, never rewritten
        if final:  # the turn's last decode confirms whatever it reads after the confirmed words
            item.partial = ""
            return
        shown, taken = words_of(item.partial), words_of(delta)
        assert shown[: len(taken)] == taken, f"confirmed {delta!r} not shown in {item.partial!r}"
        rest = item.partial.split()[len(delta.split()) :]
        item.partial = (" " + " ".join(rest)) if rest else ""

    @property
    def confirmed(self) -> str:
        return " ".join(i.confirmed for i in self.items.values())

    @property
    def completed(self) -> str:
        return " ".join(i.completed or "" for i in self.items.values())


Check = Callable[[list[StepRequest]], None]


def step(model: LoadedModel, sessions: list[StreamSession], clients: list[Client],
         check: Check | None = None) -> bool:  # fmt: skip
    """One decode of every session's pending request, in one ``decode_many`` call."""
    pending = [(k, r) for k, s in enumerate(sessions) if (r := s.pending()) is not None]
    if not pending:
        return False
    if check:
        check([r for _, r in pending])
    results = decode_many(model, [r for _, r in pending])
    for (k, request), result in zip(pending, results, strict=True):
        clients[k].take(sessions[k].apply(request, result), final=request.final)
    return True


def drive(model: LoadedModel, streams: list[tuple[StreamSession, np.ndarray]], seed: int = 0,
          check: Check | None = None, commit: bool = False) -> list[Client]:  # fmt: skip
    """Feed each stream's audio in pieces of 0.1-0.5 s, decoding all pending steps together after
    each round; at the end (commit and) decode what is left."""
    rng = np.random.default_rng(seed)
    sessions = [s for s, _ in streams]
    clients = [Client() for _ in streams]
    positions = [0] * len(streams)
    while any(p < len(a) for p, (_, a) in zip(positions, streams, strict=True)):
        n = round(rng.uniform(0.1, 0.5) * SR)  # as if in real time: each stream as much
        for k, (session, samples) in enumerate(streams):
            clients[k].take(session.append(samples[positions[k] : positions[k] + n]))
            positions[k] += n
        step(model, sessions, clients, check)
    for session, client in zip(sessions, clients, strict=True):
        if commit:
            client.take(session.commit())
    while step(model, sessions, clients, check):
        pass
    return clients


@pytest.mark.parametrize("turn_detection", [True, False])
def test_jfk_is_confirmed_as_it_is_spoken(
    manager: ModelManager, settings: Settings, turn_detection: bool
) -> None:
    jfk = np.concatenate([silence(0.5), speech(settings, "jfk.flac"), silence(1.5)])
    session = StreamSession(StreamOptions(turn_detection=turn_detection), step_s=1.0)
    with manager.use("base") as model:
        (client,) = drive(model, [(session, jfk)], commit=not turn_detection)
    assert "ask not what your country" in normalise(client.confirmed, "en"), client.confirmed
    assert "ask not what your country" in normalise(client.completed, "en"), client.completed
    for item in client.items.values():
        assert item.completed is not None and item.language == "en"
        assert item.kinds[-1] == "completed" and "committed" in item.kinds
        assert item.partial == ""
    assert session.audio_s == pytest.approx(len(jfk) / SR)


def test_german_with_its_language(manager: ModelManager, settings: Settings) -> None:
    german = clip("cheetah_test_de.wav")
    samples = np.concatenate([silence(0.3), speech(settings, german.path.name), silence(1.5)])
    session = StreamSession(StreamOptions(language="de"), step_s=1.0)
    with manager.use("base") as model:
        (client,) = drive(model, [(session, samples)])
    expected = {"werbung", "vermittelt", "eindruck"}
    assert expected <= set(normalise(client.confirmed, "de").split()), client.confirmed
    assert expected <= set(normalise(client.completed, "de").split()), client.completed
    assert {i.language for i in client.items.values()} == {"de"}


def test_two_streams_in_one_batch_keep_their_own_words(
    manager: ModelManager, settings: Settings
) -> None:
    jfk = np.concatenate([silence(0.5), speech(settings, "jfk.flac"), silence(1.5)])
    german = np.concatenate([silence(0.5), speech(settings, "cheetah_test_de.wav"), silence(1.5)])
    sessions = [StreamSession(StreamOptions()), StreamSession(StreamOptions(language="de"))]
    sizes: list[int] = []
    with manager.use("base") as model:
        english, deutsch = drive(model, list(zip(sessions, [jfk, german], strict=True)),
                                 check=lambda batch: sizes.append(len(batch)))  # fmt: skip
    assert max(sizes) == 2  # both streams' steps were decoded in one call
    en_words = set(normalise(english.confirmed, "en").split())
    de_words = set(normalise(deutsch.confirmed, "de").split())
    assert {"americans", "country"} <= en_words and not {"werbung", "eindruck"} & en_words
    assert {"werbung", "eindruck"} <= de_words and not {"americans", "country"} & de_words


def test_two_utterances_apart_are_two_turns(manager: ModelManager, settings: Settings) -> None:
    first, second = clip("61-70968-0000.flac"), clip("LDC93S1.wav")
    samples = np.concatenate([silence(0.5), speech(settings, first.path.name), silence(2.0),
                              speech(settings, second.path.name), silence(2.0)])  # fmt: skip
    session = StreamSession(StreamOptions(silence_duration_ms=700), step_s=1.0)
    with manager.use("tiny.en") as model:
        (client,) = drive(model, [(session, samples)])
    kinds = [e["type"].rsplit(".", 1)[-1] for e in client.buffer_events]
    assert kinds == ["speech_started", "speech_stopped", "committed"] * 2
    one, two = client.items.values()
    assert "confused complaint" in normalise(one.completed or "", "en")
    assert "greasy wash water" in normalise(two.completed or "", "en")
    assert "greasy wash water" not in normalise(one.confirmed, "en")
    committed = [e for e in client.buffer_events if e["type"].endswith("committed")]
    ids = list(client.items)
    assert [e["previous_item_id"] for e in committed] == [None, ids[0]]
    started, stopped = client.buffer_events[0], client.buffer_events[1]
    assert 0 <= started["audio_start_ms"] < stopped["audio_end_ms"]
    assert stopped["audio_end_ms"] < client.buffer_events[3]["audio_start_ms"]
    assert session.buffer_s < 1.0  # between turns only the prefix padding is held


def test_clear_drops_the_uncommitted_audio(manager: ModelManager, settings: Settings) -> None:
    session = StreamSession(StreamOptions(turn_detection=False))
    client = Client()
    jfk, other = speech(settings, "jfk.flac"), speech(settings, "LDC93S1.wav")
    client.take(session.append(jfk[: 3 * SR]))
    assert session.buffer_s == pytest.approx(3.0)
    assert session.clear() == [{"type": "input_audio_buffer.cleared"}]
    assert session.buffer_s == 0 and session.pending() is None
    assert session.commit()[0]["error"]["code"] == "input_audio_buffer_commit_empty"
    client.take(session.append(other))
    client.take(session.commit())
    with manager.use("tiny.en") as model:
        while step(model, [session], [client]):
            pass
    (item,) = client.items.values()
    assert "greasy wash water" in normalise(item.completed or "", "en")
    assert "americans" not in normalise(item.completed or "", "en")


def test_a_full_buffer_is_cut_after_confirmed_words() -> None:
    """Decodes that confirm words but no sentence end: the buffer is cut at the cap, the
    words cut off still count in the turn's transcript; the request never exceeds 30 s."""
    session = StreamSession(StreamOptions(turn_detection=False), step_s=1.0)
    client = Client()
    for _ in range(60):
        client.take(session.append(np.full(SR, 0.01, dtype=np.float32)))
        request = session.pending()
        assert request is not None and len(request.audio) <= WINDOW_S * SR
        start = session.audio_s - len(request.audio) / SR
        words = [StreamWord(t - start, t - start + 0.5, f" w{int(t)}", 0.9)
                 for t in np.arange(np.ceil(start), session.audio_s - 0.5)]  # fmt: skip
        client.take(session.apply(request, StreamDecode(words, "", "en")))
        assert session.buffer_s <= CAP_S + 1.0
    client.take(session.commit())
    final = session.pending()
    assert final is not None and final.final
    client.take(session.apply(final, StreamDecode([], "", "en")), final=True)
    (item,) = client.items.values()
    assert item.completed is not None and item.completed.split()[:3] == ["w0", "w1", "w2"]
    assert words_of(item.confirmed) == [f"w{i}" for i in range(len(words_of(item.confirmed)))]


KEY_PHRASES = {
    "jfk.flac": "your country can do for you",
    "LJ001-0001.flac": "printing in the only sense",
    "1089-134686-0000.flac": "stew for dinner",
    "61-70968-0000.flac": "confused complaint",
}


@pytest.mark.slow
def test_ten_minutes_stay_bounded_and_lose_no_repeat(
    manager: ModelManager, settings: Settings
) -> None:
    """10 minutes of clips with pauses, no turn detection (one turn, cut again and again): every
    step's buffer stays short, memory stays flat, and every repeat's key phrase is confirmed."""
    clips = [np.concatenate([speech(settings, name), silence(1.0)]) for name in KEY_PHRASES]
    round_s = sum(len(c) for c in clips) / SR
    rounds = int(np.ceil(600 / round_s))
    samples = np.concatenate(clips * rounds)
    step_s = 3.0  # ~200 decodes: the cost of a step does not depend on the stream's length
    session = StreamSession(StreamOptions(turn_detection=False), step_s=step_s)
    client, longest, memory = watched(manager, session, samples, CAP_S + step_s + 0.5)
    assert len(samples) / SR >= 600
    assert max(longest) <= WINDOW_S
    text = normalise(client.confirmed, "en")
    for phrase in KEY_PHRASES.values():
        assert text.count(phrase) == rounds, (phrase, text)
    (item,) = client.items.values()
    assert normalise(item.completed or "", "en").count("stew for dinner") == rounds
    early, late = memory[2], memory[-1]
    assert late[0] - early[0] < 8_000_000, memory  # Python objects: no growth with the stream
    assert late[1] - early[1] < 200_000, memory  # peak RSS (KiB): no growth with the stream


@pytest.mark.slow
def test_an_hour_of_meeting_stays_flat_and_keeps_every_turn(
    manager: ModelManager, settings: Settings
) -> None:
    """An hour-long stream as a meeting sends it (server VAD on): the same clips again and again,
    with long pauses between them. Every turn's words come back; what a step decodes, the buffer
    and memory are as small in the last minutes as in the first."""
    pause = silence(90.0)
    phrases = {name: KEY_PHRASES[name] for name in ("jfk.flac", "61-70968-0000.flac")}
    clips = [np.concatenate([speech(settings, name), pause]) for name in phrases]
    round_s = sum(len(c) for c in clips) / SR
    rounds = int(np.ceil(3600 / round_s))
    samples = np.concatenate(clips * rounds)
    session = StreamSession(StreamOptions(), step_s=3.0)
    client, lengths, memory = watched(manager, session, samples, CAP_S + 3.5)
    assert session.audio_s >= 3600
    completed = normalise(client.completed, "en")
    for phrase in phrases.values():
        assert completed.count(phrase) == rounds, (phrase, completed)
    # The cost of a step is the audio it decodes: no longer at the end than at the start.
    quarter = len(lengths) // 4
    assert max(lengths[-quarter:]) <= max(max(lengths[:quarter]), 5.0) + 3.0, lengths
    assert max(lengths) <= WINDOW_S
    early, late = memory[1], memory[-1]
    assert late[0] - early[0] < 8_000_000, memory  # Python objects: no growth with the hour
    assert late[1] - early[1] < 200_000, memory  # peak RSS (KiB)


def watched(
    manager: ModelManager, session: StreamSession, samples: np.ndarray, buffer_max_s: float
) -> tuple[Client, list[float], list[tuple[int, int]]]:
    """Drive one long tiny.en stream, checking its buffer at every step; the client, the audio
    length each step decoded, and (traced bytes, peak RSS KiB) every 20 steps."""
    lengths: list[float] = []
    memory: list[tuple[int, int]] = []

    def check(batch: list[StepRequest]) -> None:
        lengths.append(max(len(r.audio) for r in batch) / SR)
        assert session.buffer_s <= buffer_max_s
        if len(lengths) % 20 == 0:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            memory.append((tracemalloc.get_traced_memory()[0], rss))

    tracemalloc.start()
    try:
        with manager.use("tiny.en") as model:
            (client,) = drive(model, [(session, samples)], check=check, commit=True)
    finally:
        tracemalloc.stop()
    return client, lengths, memory
