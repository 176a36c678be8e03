"""The official ``openai`` package, unchanged, against a real server with real models."""

from __future__ import annotations

import warnings

import openai
import pytest
import srt
import webvtt
from openai import OpenAI

from tests.service import KEYS, Service
from tests.speech import clip, normalise

JFK = "ask not what your country can do for you"


@pytest.fixture(scope="module")
def client(service: Service) -> OpenAI:
    return OpenAI(base_url=service.url + "/v1", api_key=KEYS["alice"], max_retries=0)


def test_all_five_response_formats(client: OpenAI) -> None:
    path = clip("jfk.flac").path
    with path.open("rb") as fh:
        as_json = client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert JFK in normalise(as_json.text, "en")
    with path.open("rb") as fh:
        text = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="text"
        )
    assert isinstance(text, str) and JFK in normalise(text, "en")
    with path.open("rb") as fh:
        subs = client.audio.transcriptions.create(model="base", file=fh, response_format="srt")
    parsed = list(srt.parse(str(subs)))
    assert parsed and JFK in normalise(" ".join(s.content for s in parsed), "en")
    with path.open("rb") as fh:
        vtt = client.audio.transcriptions.create(model="base", file=fh, response_format="vtt")
    captions = webvtt.from_string(str(vtt)).captions
    assert JFK in normalise(" ".join(c.text for c in captions), "en")
    with path.open("rb") as fh:
        verbose = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )  # fmt: skip
    assert verbose.language == "english"
    assert verbose.duration == pytest.approx(11.0, abs=0.1)
    assert verbose.segments and verbose.segments[0].start >= 0
    assert verbose.words and "country" in {w.word.strip(" ,.").lower() for w in verbose.words}


def test_language_and_prompt_are_passed(client: OpenAI) -> None:
    with clip("cheetah_test_de.wav").path.open("rb") as fh:
        out = client.audio.transcriptions.create(
            model="base", file=fh, language="de", response_format="verbose_json"
        )
    assert out.language == "german"
    assert "werbung" in normalise(out.text, "de")


def test_translation_to_english(client: OpenAI) -> None:
    # openai 3.x marks translations deprecated (OpenAI's newer models don't translate); the
    # endpoint is still part of the API that clients call.
    with warnings.catch_warnings(), clip("aeneas_de.mp3").path.open("rb") as fh:
        warnings.simplefilter("ignore", DeprecationWarning)
        out = client.audio.translations.create(model="whisper-1", file=fh)
    text = normalise(out.text, "en")
    found = {w for w in ("life", "world", "truth", "laugh", "new", "adventure") if w in text}
    assert len(found) >= 3, text


def test_models(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"base", "tiny.en"} <= ids
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    assert client.models.retrieve("tiny.en").id == "tiny.en"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("large-v3")
    assert "hushscribe models import" in str(err.value)


def test_unsupported_file_is_a_bad_request(client: OpenAI, service: Service) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(
            model="whisper-1", file=("notes.wav", b"this is not audio" * 100)
        )
    assert err.value.status_code == 400
    # The message says which upload and what is wrong with it (in OpenAI's error shape).
    assert "notes.wav is not an audio or video file" in err.value.message, err.value.message
    assert err.value.code == "unsupported_media"
    assert "Traceback" not in str(err.value)
    assert not any((service.data_dir / "blobs").glob("*")), "the upload must be purged"


def test_wrong_key_and_unknown_model(service: Service) -> None:
    bad = OpenAI(base_url=service.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = OpenAI(base_url=service.url + "/v1", api_key=KEYS["bob"], max_retries=0)
    with (
        pytest.raises(openai.BadRequestError, match="not installed here; available: base"),
        clip("LDC93S1.wav").path.open("rb") as fh,
    ):
        good.audio.transcriptions.create(model="large-v3", file=fh)
    with (
        pytest.raises(openai.BadRequestError, match="English-only"),
        warnings.catch_warnings(),
        clip("LDC93S1.wav").path.open("rb") as fh,
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        good.audio.translations.create(model="tiny.en", file=fh)
