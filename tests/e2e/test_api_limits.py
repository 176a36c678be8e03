"""The API's limits and error shapes, against real servers: upload caps that answer before the
body is read (and leave no file behind), concurrency, the queue cap's 429, one JSON error shape on
every route, and the caps on form fields and file names."""

from __future__ import annotations

import json
import secrets
import select
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from hushscribe.api import create_app
from hushscribe.api.access import PUBLIC_PATHS
from hushscribe.settings import load_settings
from tests.service import KEYS, LOOPBACK_CLIENT, Service, service_data_dir
from tests.speech import clip, normalise

MAX_BYTES = 1_000_000
"""The upload cap of the server started for the size tests."""
HUGE = 50 * 1000 * 1000
"""What the oversized uploads declare or stream: 50 times the cap."""
CHUNK = 64 * 1024
EXPECTED = {
    "LDC93S1.wav": "greasy wash water",
    "jfk.flac": "ask not what your country",
}
ERROR_KEYS = {"message", "type", "code"}


# --- helpers -------------------------------------------------------------------------------------


def _files_in(directory: Path) -> list[str]:
    """Everything in ``directory`` (hidden ``.part`` files included) that is not a directory."""
    return sorted(p.name for p in directory.iterdir() if not p.is_dir())


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    # A small send buffer keeps "bytes sent" close to "bytes the server could have read".
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
    return sock


def _upload_head(boundary: str, framing: dict[str, str]) -> bytes:
    """Request line and headers of alice's multipart upload; ``framing`` says how the body comes."""
    headers = {
        "Authorization": f"Bearer {KEYS['alice']}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        **framing,
    }
    lines = ["POST /v1/audio/transcriptions HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """(status, headers, body) once ``raw`` holds a whole response with a Content-Length."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    if length < 0 or len(body) < length:
        return None
    return status, headers, body[:length]


def _read_response(sock: socket.socket, timeout: float = 10) -> tuple[bytes, bool]:
    """Read until a whole response is in (or EOF, or ``timeout``); return it and whether the server
    closed the connection after it."""
    raw = b""
    closed = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            if _parse_response(raw) is not None:
                break
            continue
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not data:
            closed = True
            break
        raw += data
    return raw, closed


def _json_error(body: bytes | str) -> dict[str, Any]:
    data = json.loads(body)
    assert set(data) == {"error"}, data
    assert set(data["error"]) == ERROR_KEYS, data
    assert all(isinstance(v, str) and v for v in data["error"].values()), data
    error: dict[str, Any] = data["error"]
    return error


def _transcribe(svc: Service, name: str, **fields: str) -> httpx.Response:
    path = clip(name).path
    with svc.client() as client:
        return client.post(
            "/v1/audio/transcriptions",
            files={"file": (name, path.read_bytes())},
            data={"model": "whisper-1", **fields},  # `fields` may name another model
        )


# --- 1. upload cap: 413 before the body is read, and no blob left ------------------------------


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Service]:
    """A server whose upload cap is 1 MB."""
    root = service_data_dir(tmp_path_factory.mktemp("capped"), data_dir / "models")
    svc = Service(root, env={"HUSHSCRIBE_AUDIO__MAX_BYTES": str(MAX_BYTES)})
    try:
        svc.start(wait_ready=False)
        yield svc
    finally:
        svc.stop()


def _assert_still_serving(svc: Service) -> None:
    assert httpx.get(svc.url + "/healthz", timeout=10).status_code == 200
    blobs = svc.data_dir / "blobs"
    assert blobs.is_dir()
    assert _files_in(blobs) == [], f"uploads left behind in {blobs}"


@pytest.mark.slow
def test_declared_oversize_upload_is_refused_before_any_body_byte(capped: Service) -> None:
    boundary = secrets.token_hex(8)
    head = _upload_head(boundary, {"Content-Length": str(HUGE)})
    with _connect(capped.port) as sock:
        sock.sendall(head)  # not one byte of the body
        ready, _, _ = select.select([sock], [], [], 10)
        assert ready, "no answer to an oversized Content-Length until the body is sent"
        raw, closed = _read_response(sock)

    parsed = _parse_response(raw)
    assert parsed is not None, raw[:500]
    status, headers, body = parsed
    assert status == 413, raw[:500]
    assert headers["content-type"] == "application/json"
    assert headers.get("connection") == "close"
    error = _json_error(body)
    assert error["code"] == "too_large"
    assert error["type"] == "invalid_request_error"
    assert f"{MAX_BYTES:,}" in error["message"]
    assert closed, "the server kept a connection open whose body it will never read"
    _assert_still_serving(capped)


@pytest.mark.slow
def test_chunked_oversize_upload_is_cut_off_early(capped: Service) -> None:
    boundary = secrets.token_hex(8)
    head = _upload_head(boundary, {"Transfer-Encoding": "chunked"})
    part_head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    payload = b"\x00" * CHUNK
    sent = 0  # body bytes (chunk payloads) handed to the socket
    responded = False
    broken = False
    with _connect(capped.port) as sock:
        sock.sendall(head)
        first = True
        while sent < HUGE:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                responded = True
                break
            data = part_head + payload[len(part_head) :] if first else payload
            first = False
            try:
                sock.sendall(b"%x\r\n%b\r\n" % (len(data), data))
            except (BrokenPipeError, ConnectionResetError):
                broken = True  # the server answered and closed; its answer may be readable
                break
            except TimeoutError:
                break  # the server stopped reading; see whether it answered
            sent += len(data)
        if not responded and not broken and sent >= HUGE:
            sock.sendall(f"\r\n--{boundary}--\r\n".encode() + b"0\r\n\r\n")
        raw, _ = _read_response(sock)

    assert sent < HUGE // 10, (
        f"the server let {sent:,} of {HUGE:,} bytes in before answering (cap {MAX_BYTES:,})"
    )
    assert raw.startswith(b"HTTP/1.1 413 "), raw[:500]
    assert b'"code":"too_large"' in raw
    parsed = _parse_response(raw)
    assert parsed is not None, raw[:500]
    assert _json_error(parsed[2])["code"] == "too_large"
    _assert_still_serving(capped)


# --- 2. concurrency ------------------------------------------------------------------------------


@pytest.mark.slow
def test_twenty_concurrent_transcriptions(service: Service) -> None:
    names = ["LDC93S1.wav", "jfk.flac"] * 10

    def send(name: str) -> httpx.Response:
        # tiny.en: 20 jobs in turn on one CPU worker stay well within the suite's time budget
        return _transcribe(service, name, model="tiny.en")

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        responses = list(pool.map(send, names))

    assert [r.status_code for r in responses] == [200] * len(names), [
        r.text[:200] for r in responses if r.status_code != 200
    ]
    for name, response in zip(names, responses, strict=True):
        assert response.headers["content-type"].startswith("application/json")
        text = normalise(response.json()["text"], "en")
        assert EXPECTED[name] in text, (name, text)


# --- 3. queue cap --------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_queue_answers_429_with_retry_after(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> None:
    root = service_data_dir(tmp_path_factory.mktemp("queue-cap"), data_dir / "models")
    svc = Service(
        root,
        env={"HUSHSCRIBE_JOBS__QUEUE_MAX": "2", "HUSHSCRIBE_ENGINE__DEFAULT_MODEL": "tiny.en"},
    )
    try:
        svc.start()

        def send(i: int) -> httpx.Response:
            time.sleep(0.05 * i)  # overlapping, but each finds the queue as the others left it
            return _transcribe(svc, "jfk.flac")

        with ThreadPoolExecutor(max_workers=12) as pool:
            responses = list(pool.map(send, range(12)))
        statuses = [r.status_code for r in responses]

        assert all(s < 500 for s in statuses), [(r.status_code, r.text[:200]) for r in responses]
        assert set(statuses) == {200, 429}, statuses
        for response in responses:
            if response.status_code == 429:
                retry_after = response.headers.get("retry-after", "")
                assert retry_after.isdigit() and int(retry_after) > 0, response.headers
                error = _json_error(response.content)
                assert error["code"] == "queue_full"
                assert error["type"] == "rate_limit_error"
            else:
                text = normalise(response.json()["text"], "en")
                assert EXPECTED["jfk.flac"] in text, text
        assert _files_in(root / "blobs") == []
    finally:
        svc.stop()


# --- 4. one error shape on every route -----------------------------------------------------------


KEY = "hs-3qV9xTb7LmN2pR8sK4wZ6yD1cF5gH0jA"


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    keys = {"alice": KEY}
    settings = load_settings(None, data_dir=tmp_path / "data", auth={"api_keys": keys})
    app = create_app(settings, start_workers=False)
    with TestClient(app, raise_server_exceptions=False, client=LOOPBACK_CLIENT) as client:
        yield client


AUTH = {"Authorization": f"Bearer {KEY}"}


def _api_routes(app: Any) -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every API route, also where FastAPI keeps included routers wrapped."""
    for route in app.routes:
        if isinstance(route, APIRoute):
            yield route.path, set(route.methods)
        elif hasattr(route, "effective_route_contexts"):  # FastAPI's lazily included routers
            for context in route.effective_route_contexts():
                if isinstance(context.original_route, APIRoute):
                    yield context.path, set(context.methods or ())


def test_every_v1_route_refuses_a_missing_key_in_openai_shape(app_client: TestClient) -> None:
    routes = list(_api_routes(app_client.app))
    assert ("/healthz", {"GET"}) in routes, routes
    checked = []
    for template, methods in routes:
        if not template.startswith("/v1") or template in PUBLIC_PATHS:
            continue
        path = template
        while "{" in path:
            start, end = path.index("{"), path.index("}")
            path = path[:start] + "nope" + path[end + 1 :]
        for method in sorted(methods):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                response = app_client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                error = _json_error(response.content)
                assert error["type"] == "authentication_error", (method, path)
                assert error["code"] == "invalid_api_key", (method, path)
            checked.append(f"{method} {template}")
    assert {
        "POST /v1/audio/transcriptions",
        "POST /v1/audio/translations",
        "GET /v1/models",
        "GET /v1/models/{model_id}",
        "POST /v1/jobs",
        "GET /v1/jobs",
        "GET /v1/jobs/{job_id}",
        "GET /v1/jobs/{job_id}/result",
        "DELETE /v1/jobs/{job_id}",
    } <= set(checked), checked


def test_errors_with_a_valid_key_keep_the_shape(app_client: TestClient) -> None:
    response = app_client.get("/v1/jobs/nope", headers=AUTH)
    assert response.status_code == 404
    assert _json_error(response.content)["code"] == "job_not_found"

    for path in ("/nope", "/v1/nope"):
        response = app_client.get(path, headers=AUTH)
        assert response.status_code == 404, path
        error = _json_error(response.content)
        assert (error["type"], error["code"]) == ("invalid_request_error", "not_found"), path

    response = app_client.put("/v1/models", headers=AUTH)
    assert response.status_code == 405
    assert _json_error(response.content)["code"] == "method_not_allowed"

    response = app_client.post("/v1/audio/transcriptions", headers=AUTH, json={"model": "x"})
    assert response.status_code == 415
    assert _json_error(response.content)["code"] == "unsupported_body"

    response = app_client.post(
        "/v1/audio/transcriptions", headers=AUTH, files={"model": (None, "whisper-1")}
    )
    assert response.status_code == 400
    error = _json_error(response.content)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_request")

    response = app_client.get("/v1/jobs?limit=0", headers=AUTH)
    assert response.status_code == 400
    assert _json_error(response.content)["code"] == "invalid_request"


def test_unexpected_errors_hide_their_text(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hushscribe.api import routes_audio

    def broken(self: object) -> list[object]:
        raise RuntimeError("secret-detail")

    monkeypatch.setattr(routes_audio.ModelStore, "list", broken)
    response = app_client.get("/v1/models", headers=AUTH)

    assert response.status_code == 500
    assert "secret-detail" not in response.text
    assert "RuntimeError" not in response.text
    error = _json_error(response.content)
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert "error id" in error["message"]
    assert "secret-detail" in caplog.text  # the operator's log has it


# --- 5. form field limits ------------------------------------------------------------------------


def _audio_file() -> tuple[str, bytes]:
    return ("LDC93S1.wav", clip("LDC93S1.wav").path.read_bytes())


def _blob_files(svc: Service) -> set[str]:
    return set(_files_in(svc.data_dir / "blobs"))


def test_oversized_form_field_is_refused(service: Service) -> None:
    before = _blob_files(service)
    with service.client() as client:
        response = client.post(  # the field after the file: its blob must go again
            "/v1/audio/transcriptions",
            files=[("file", _audio_file()), ("prompt", (None, "p" * (16 * 1024 + 1)))],
        )
    assert response.status_code == 400, response.text
    error = _json_error(response.content)
    assert error["code"] == "invalid_request"
    assert "prompt" in error["message"]
    assert _blob_files(service) <= before, "the refused upload's audio was left behind"


def test_too_many_form_fields_are_refused(service: Service) -> None:
    before = _blob_files(service)
    fields = [(f"x{i}", (None, "1")) for i in range(65)]
    with service.client() as client:
        response = client.post("/v1/audio/transcriptions", files=[("file", _audio_file()), *fields])
    assert response.status_code == 400, response.text
    error = _json_error(response.content)
    assert error["code"] == "invalid_request"
    assert "fields" in error["message"]
    assert _blob_files(service) <= before, "the refused upload's audio was left behind"


def test_long_filename_with_path_is_cut_to_a_plain_name(service: Service) -> None:
    name = "../../etc/passwd" + "x" * 1000
    with service.client() as client:
        response = client.post(
            "/v1/jobs", files={"file": (name, clip("LDC93S1.wav").path.read_bytes())}
        )
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"/v1/jobs/{job['id']}"
        assert "/" not in job["filename"] and "\\" not in job["filename"]
        assert 0 < len(job["filename"]) <= 255
        assert job["filename"].startswith("passwdxxx")
        assert client.get(f"/v1/jobs/{job['id']}").json()["filename"] == job["filename"]
        # Leave the shared server as found: cancel the job (if it has not ended), then delete it.
        for _ in range(2):
            if client.delete(f"/v1/jobs/{job['id']}").status_code == 404:
                break
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_malformed_multipart_is_a_clear_400(service: Service) -> None:
    body = b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nabc'
    body += b"\r\n--XYZ\x00\x01garbage-without-end"
    with service.client("alice") as c:
        r = c.post(
            "/v1/audio/transcriptions",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=XYZ"},
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert not any(p.is_file() for p in (service.data_dir / "blobs").iterdir())
