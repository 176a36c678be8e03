"""The client side of /v1/realtime without a server: events, session updates, audio checks,
the 24 → 16 kHz resampler and the recording that becomes a job."""

from __future__ import annotations

import asyncio
import base64
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hushscribe.api.realtime_audio import Recording, Resampler, decode_append, wav_header
from hushscribe.api.realtime_events import (
    ClientError,
    SessionConfig,
    apply_update,
    error_event,
    parse_event,
)
from hushscribe.jobs.blobs import BlobStore

BASE = SessionConfig(model="base")


def _code(fn: Any, *args: Any) -> str:
    with pytest.raises(ClientError) as caught:
        fn(*args)
    return caught.value.code


def _update(session: dict[str, Any], beta: bool = False, config: SessionConfig = BASE) -> Any:
    kind = "transcription_session.update" if beta else "session.update"
    return apply_update(config, {"type": kind, "session": session}, beta)


def test_events_must_be_json_objects_with_a_type() -> None:
    assert parse_event('{"type": "input_audio_buffer.commit", "event_id": "e1"}')["type"] == (
        "input_audio_buffer.commit"
    )
    assert _code(parse_event, "{not json") == "invalid_json"
    assert _code(parse_event, "[1, 2]") == "invalid_event"
    assert _code(parse_event, '{"type": 5}') == "invalid_event"
    assert _code(parse_event, "[" * 100_000) == "invalid_json"  # no RecursionError escapes


def test_error_events_name_the_client_event() -> None:
    event = error_event(ClientError("invalid_base64", "bad", param="audio"), "evt_7")
    assert event == {
        "type": "error",
        "error": {"type": "invalid_request_error", "code": "invalid_base64", "message": "bad",
                  "param": "audio", "event_id": "evt_7"},
    }  # fmt: skip
    assert "event_id" not in error_event(ClientError("x", "y"))["error"]


def test_session_update_current_form() -> None:
    update = _update({
        "type": "transcription",
        "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000},
            "transcription": {"model": "tiny.en", "language": "German", "prompt": "Grimmelshausen"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
            "noise_reduction": {"type": "near_field"},  # accepted and ignored
        }},
    })  # fmt: skip
    config = update.config
    assert update.model == "tiny.en" and update.model_given
    assert (config.rate, config.language, config.prompt) == (16000, "de", "Grimmelshausen")
    assert config.turn_detection is not None
    assert config.turn_detection.silence_duration_ms == 800
    assert config.turn_detection.threshold == 0.5  # left out: kept
    session = config.session("sess_1")
    assert session["type"] == "transcription" and session["id"] == "sess_1"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert session["audio"]["input"]["transcription"]["language"] == "de"
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"


def test_fields_left_out_keep_their_values_and_null_turns_vad_off() -> None:
    first = _update({"audio": {"input": {"transcription": {"language": "fr"}}}}).config
    second = _update({"audio": {"input": {"turn_detection": None}}}, config=first)
    assert second.config.language == "fr" and second.config.turn_detection is None
    assert not second.model_given
    assert second.config.session("s")["audio"]["input"]["turn_detection"] is None
    cleared = _update({"audio": {"input": {"transcription": {"language": None}}}}, config=first)
    assert cleared.config.language is None  # null: detect


@pytest.mark.parametrize(
    ("session", "code"),
    [
        ({"type": "realtime"}, "invalid_value"),
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}}}, "invalid_value"),
        ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "invalid_value"),
        ({"audio": {"input": {"transcription": {"language": "klingon"}}}}, "invalid_language"),
        ({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}, "invalid_value"),
        ({"audio": {"input": {"turn_detection": {"threshold": 3}}}}, "invalid_value"),
        ({"audio": {"input": {"transcription": {"prompt": "x" * 5000}}}}, "invalid_value"),
        ({"audio": "loud"}, "invalid_value"),
    ],
)
def test_bad_session_updates(session: dict[str, Any], code: str) -> None:
    assert _code(_update, session) == code


def test_a_session_that_is_no_object() -> None:
    assert _code(apply_update, BASE, {"type": "session.update", "session": 3}, False) == (
        "invalid_value"
    )


def test_beta_form() -> None:
    update = _update(
        {"input_audio_format": "pcm16",
         "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
         "turn_detection": {"type": "server_vad", "threshold": 0.6}},
        beta=True,
    )  # fmt: skip
    assert update.model == "gpt-4o-transcribe" and update.config.rate == 24000
    turns = update.config.turn_detection
    assert turns is not None and turns.threshold == 0.6
    beta = update.config.beta_session("sess_2")
    assert beta["input_audio_format"] == "pcm16" and beta["id"] == "sess_2"
    assert beta["input_audio_transcription"]["language"] == "en"
    assert _code(_update, {"input_audio_format": "g711_ulaw"}, True) == "invalid_value"


def test_appends_carry_whole_pcm16_samples_in_base64() -> None:
    pcm = np.arange(-5, 5, dtype="<i2").tobytes()
    assert decode_append({"audio": base64.b64encode(pcm).decode()}) == pcm
    assert _code(decode_append, {"audio": "not base64 at all!"}) == "invalid_base64"
    assert _code(decode_append, {"audio": base64.b64encode(b"abc").decode()}) == "invalid_audio"
    assert _code(decode_append, {"audio": 12}) == "invalid_value"
    assert _code(decode_append, {}) == "invalid_value"


def _tone(rate: int, seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 12000).astype("<i2")


def test_24k_to_16k_in_frames_keeps_the_pitch_and_has_no_seams() -> None:
    source = _tone(24000, 2.0, 440.0)
    framed = Resampler(24000)
    out = b"".join(framed(source[i : i + 4800].tobytes()) for i in range(0, len(source), 4800))
    out += framed.flush()
    samples = np.frombuffer(out, dtype="<i2").astype(np.float64)
    assert len(samples) == 32000
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16000 / len(samples) - 440.0) < 2.0
    whole = Resampler(24000)
    once = np.frombuffer(whole(source.tobytes()) + whole.flush(), dtype="<i2")
    n = min(len(once), len(samples))
    # The same filter state carried across frames: framing changes nothing (±1 for rounding).
    assert np.max(np.abs(once[:n].astype(int) - samples[:n].astype(int))) <= 1


def test_what_16k_cannot_hold_is_filtered_out_not_folded_in() -> None:
    """A 10 kHz tone has no place at 16 kHz: without the low-pass it would come back at 6 kHz."""
    resampler = Resampler(24000)
    loud = _tone(24000, 1.0, 10_000.0)
    out = np.frombuffer(resampler(loud.tobytes()), dtype="<i2").astype(np.float64)
    passed = Resampler(24000)
    speech_band = np.frombuffer(passed(_tone(24000, 1.0, 3_000.0).tobytes()), dtype="<i2")
    assert np.sqrt(np.mean(out[200:] ** 2)) < 12000 / 1000  # 60 dB down, at least
    assert np.sqrt(np.mean(speech_band[200:].astype(np.float64) ** 2)) > 12000 / np.sqrt(2) * 0.98


def test_16k_passes_through() -> None:
    pcm = _tone(16000, 0.5, 300.0).tobytes()
    same = Resampler(16000)
    assert same(pcm) == pcm and same.flush() == b""


def test_wav_header_is_what_the_wave_module_reads(tmp_path: Path) -> None:
    pcm = _tone(16000, 0.25, 500.0).tobytes()
    path = tmp_path / "x.wav"
    path.write_bytes(wav_header(len(pcm)) + pcm)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.readframes(w.getnframes()) == pcm


def test_recording_saves_a_wav_blob_and_leaves_nothing_else(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    pcm = _tone(16000, 5.0, 200.0).tobytes()

    async def record() -> Any:
        recording = Recording(blobs, 1 << 30)
        for i in range(0, len(pcm), 6400):
            await recording.write(pcm[i : i + 6400])
        return await recording.save()

    blob = asyncio.run(record())
    assert [p.name for p in blobs.root.iterdir()] == [blob.path.name]
    with wave.open(str(blob.path)) as w:
        assert w.getnframes() == 80000 and w.readframes(80000) == pcm
    assert blob.size == len(pcm) + 44


def test_an_abandoned_recording_is_deleted_and_a_full_one_stops_growing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")

    async def abandon() -> None:
        recording = Recording(blobs, 1000)
        await recording.write(b"\x01\x00" * 300)
        await recording.write(b"\x01\x00" * 300)  # past the cap: cut at a whole sample
        assert recording.size == 1000 and recording.truncated
        recording.abort()

    asyncio.run(abandon())
    assert list(blobs.root.iterdir()) == []


def test_session_json_is_plain_json() -> None:
    assert json.loads(json.dumps(BASE.session("s"))) == BASE.session("s")
