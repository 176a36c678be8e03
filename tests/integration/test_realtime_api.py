"""/v1/realtime in process, without a worker: the session and its updates, errors, limits,
refusals and timeouts — everything the API decides before audio reaches a worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from hushscribe.api import create_app
from hushscribe.settings import load_settings
from tests.e2e.test_realtime import PATH, frames, headers, silence, update
from tests.service import KEYS, LOOPBACK_CLIENT, service_data_dir


@pytest.fixture
def app_client(tmp_path: Path, data_dir: Path) -> Iterator[TestClient]:
    root = service_data_dir(tmp_path / "inproc", data_dir / "models")
    settings = load_settings(
        None, data_dir=root, auth={"api_keys": KEYS}, streams={"max_per_user": 1}
    )
    with TestClient(create_app(settings, start_workers=False), client=LOOPBACK_CLIENT) as c:
        yield c


def test_session_updates_validate_model_and_language(app_client: TestClient) -> None:
    with app_client.websocket_connect(PATH, headers=headers()) as ws:
        created = ws.receive_json()
        assert created["type"] == "session.created" and created["event_id"].startswith("event_")
        session = created["session"]
        assert session["id"].startswith("sess_") and session["type"] == "transcription"
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["input"]["turn_detection"] == {
            "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
        }  # fmt: skip
        ws.send_text(update(model="whisper-1", language="de"))
        updated = ws.receive_json()
        assert updated["type"] == "session.updated" and updated["session"]["id"] == session["id"]
        assert updated["session"]["audio"]["input"]["transcription"] == {
            "model": "base",
            "language": "de",
            "prompt": None,
        }  # OpenAI's model names mean the default
        ws.send_text(update(model="large-v9"))
        error = ws.receive_json()["error"]
        assert error["code"] == "model_not_found" and error["event_id"] == "evt_update"
        assert "base" in error["message"] and "tiny.en" in error["message"]
        ws.send_text(update(language="xx-klingon"))
        assert ws.receive_json()["error"]["code"] == "invalid_language"
        ws.send_text('{"type": "input_audio_buffer.commit"}')
        assert ws.receive_json()["error"]["code"] == "input_audio_buffer_commit_empty"
        ws.send_text('{"type": "input_audio_buffer.clear"}')
        assert ws.receive_json()["type"] == "input_audio_buffer.cleared"
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["error"]["code"] == "invalid_event"
        ws.send_text(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_transcription": {"model": "tiny.en"}}}))  # fmt: skip
        beta = ws.receive_json()
        assert beta["type"] == "transcription_session.updated"
        assert beta["session"]["input_audio_transcription"]["model"] == "tiny.en"
        assert beta["session"]["input_audio_transcription"]["language"] == "de"  # kept


def test_without_a_stream_worker_the_first_audio_gets_1011(app_client: TestClient) -> None:
    with app_client.websocket_connect(PATH, headers=headers()) as ws:
        ws.receive_json()
        ws.send_text(next(frames(silence(0.2))))
        error = ws.receive_json()
        assert error["error"]["code"] == "no_stream_worker"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1011
    assert not list((app_client.app.state.settings.blobs_dir).iterdir())


def test_an_idle_stream_is_closed(tmp_path: Path, data_dir: Path) -> None:
    root = service_data_dir(tmp_path / "idle", data_dir / "models")
    settings = load_settings(
        None, data_dir=root, auth={"api_keys": KEYS}, streams={"idle_timeout_s": 0.3}
    )
    app = create_app(settings, start_workers=False)
    with (
        TestClient(app, client=LOOPBACK_CLIENT) as client,
        client.websocket_connect(PATH, headers=headers()) as ws,
    ):
        assert ws.receive_json()["type"] == "session.created"
        assert ws.receive_json()["error"]["code"] == "idle_timeout"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000


def test_other_intents_limits_and_credentials_in_process(app_client: TestClient) -> None:
    with app_client.websocket_connect("/v1/realtime", headers=headers()) as ws:
        assert ws.receive_json()["error"]["code"] == "unsupported_intent"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    with pytest.raises(WebSocketDisconnect) as refused, app_client.websocket_connect(PATH):
        pass
    assert refused.value.code == 1008  # the access gate: no session, no audio read
    with app_client.websocket_connect(PATH, headers=headers()) as ws:
        ws.receive_json()
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            app_client.websocket_connect(PATH, headers=headers()),
        ):
            pass
        assert denied.value.status_code == 429
        assert denied.value.json()["error"]["code"] == "rate_limit_exceeded"
        with app_client.websocket_connect(PATH, headers=headers("bob")) as other:
            assert other.receive_json()["type"] == "session.created"  # per user, not in all
        ws.send_text('{"type": "hushscribe.stop"}')
        assert ws.receive_json()["error"]["code"] == "empty_audio"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000
