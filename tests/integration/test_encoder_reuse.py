"""Language detection rides on the encoder pass the decoder needs anyway.

The encoder is most of the cost of a short file; faster-whisper pays it twice when the language
is unknown. These tests count real encoder passes of the real model.
"""

from __future__ import annotations

import pytest

from hushscribe import audio
from hushscribe.engine import ModelManager, make_options, transcribe
from hushscribe.engine.batch import Item, transcribe_many
from hushscribe.engine.language import window_features
from hushscribe.settings import Settings
from hushscribe.transcript import Transcript
from tests.speech import clip, normalise


@pytest.mark.parametrize(("name", "language"), [("jfk.flac", "en"), ("cheetah_test_fr.wav", "fr")])
def test_unknown_language_costs_no_extra_encoder_pass(
    manager: ModelManager, settings: Settings, name: str, language: str
) -> None:
    samples = audio.decode(clip(name).path, settings.audio).samples
    with manager.use("base") as loaded:
        whisper = loaded.whisper
        before = whisper.encoder_passes
        given = transcribe(loaded, samples, make_options(language=language), settings.engine)
        middle = whisper.encoder_passes
        detected = transcribe(loaded, samples, make_options(), settings.engine)
        after = whisper.encoder_passes
    assert middle - before == 1  # one 30 s window to decode
    assert after - middle == 1  # detection and decoding share it
    # Detected, not given: the options record no language. (The probability is rounded to four
    # places; a clear clip can round to 1.0 on another processor, so it is no sign of detection.)
    assert detected.language == language and detected.options["language"] is None
    assert given.options["language"] == language
    assert 0.5 < detected.language_probability <= 1.0
    assert detected.text == given.text


def test_the_remembered_encoding_is_dropped_when_the_job_ends(
    manager: ModelManager, settings: Settings
) -> None:
    samples = audio.decode(clip("jfk.flac").path, settings.audio).samples
    with manager.use("base") as loaded:
        transcribe(loaded, samples, make_options(), settings.engine)
        before = loaded.whisper.encoder_passes
        loaded.whisper.encode(window_features(loaded.whisper, samples))
        assert loaded.whisper.encoder_passes == before + 1  # encoded afresh, not from memory
        loaded.whisper.encode(window_features(loaded.whisper, samples))
        assert loaded.whisper.encoder_passes == before + 1  # within a job, reused
        loaded.whisper.forget()


def test_batch_mixes_given_and_detected_languages(
    manager: ModelManager, settings: Settings
) -> None:
    names = ["cheetah_test_fr.wav", "cheetah_test_de.wav", "jfk.flac"]
    samples = [audio.decode(clip(n).path, settings.audio).samples for n in names]
    items = [
        Item(samples[0], make_options(language="fr")),
        Item(samples[1], make_options()),
        Item(samples[2], make_options(language="en")),
    ]
    with manager.use("base") as loaded:
        before = loaded.whisper.encoder_passes
        fr, de, en = transcribe_many(loaded, items, settings.engine)
        assert loaded.whisper.encoder_passes - before == 1
    assert isinstance(fr, Transcript) and isinstance(de, Transcript) and isinstance(en, Transcript)
    assert (fr.language, fr.language_probability) == ("fr", 1.0)
    assert de.language == "de" and de.options["language"] is None
    assert 0.5 < de.language_probability <= 1.0  # 0.9997 here: may round to 1.0 elsewhere
    assert "mer" in normalise(fr.text, "fr")
    assert "werbung" in normalise(de.text, "de")
    assert "ask not what your country" in normalise(en.text, "en")
    assert {t.options["batch_jobs"] for t in (fr, de, en)} == {3}


def test_word_timestamps_batch_by_language_so_chinese_splits_by_character(
    manager: ModelManager, settings: Settings
) -> None:
    """Words are cut at spaces in English and per character in Chinese: jobs that want word
    times have their language found first and share a decode only with the same language."""
    zh_samples = audio.decode(clip("BAC009S0724W0121.wav").path, settings.audio).samples
    en_samples = audio.decode(clip("jfk.flac").path, settings.audio).samples
    items = [Item(s, make_options(word_timestamps=True)) for s in (zh_samples, en_samples)]
    with manager.use("base") as loaded:
        zh, en = transcribe_many(loaded, items, settings.engine)
    assert isinstance(zh, Transcript) and isinstance(en, Transcript)
    assert zh.language == "zh" and en.language == "en"
    assert zh.options["batch_jobs"] == 1 and en.options["batch_jobs"] == 1
    assert "广州" in zh.text
    assert max(len(w.word.strip()) for w in zh.words) <= 2  # characters, not a whole line
    spoken = [w.word.strip(" ,.").lower() for w in en.words]
    assert "country" in spoken


def test_batch_translates_each_job_from_its_own_detected_language(
    manager: ModelManager, settings: Settings
) -> None:
    names = ["cheetah_test_de.wav", "cheetah_test_fr.wav"]
    samples = [audio.decode(clip(n).path, settings.audio).samples for n in names]
    items = [Item(s, make_options(task="translate")) for s in samples]
    with manager.use("base") as loaded:
        de, fr = transcribe_many(loaded, items, settings.engine)
        alone = transcribe(loaded, samples[1], make_options(task="translate"), settings.engine)
    assert isinstance(de, Transcript) and isinstance(fr, Transcript)
    assert (de.language, fr.language) == ("de", "fr") and de.task == fr.task == "translate"
    assert "sea" in normalise(fr.text, "en") and "mer" not in normalise(fr.text, "en")
    assert fr.text == alone.text  # the same English as when it is decoded on its own
