"""Edges of the API against real servers: a locked database does not stall the event loop, a full
disk is a typed 507, refused uploads leave no audio, files are private, malformed multipart bodies
and oversized heads get the JSON error shape, the queue cap holds under a race, and /v1 answers
401 before it says which routes exist."""

from __future__ import annotations

import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from hushscribe.api import create_app
from hushscribe.settings import load_settings
from tests.e2e.test_api_limits import (
    _connect,
    _files_in,
    _json_error,
    _parse_response,
    _read_response,
    _upload_head,
)
from tests.service import KEYS, LOOPBACK_CLIENT, Service, free_port, service_data_dir
from tests.speech import clip
from tests.tmpfs import small_tmpfs

AUTH = {"Authorization": f"Bearer {KEYS['alice']}"}


def _audio(name: str = "LDC93S1.wav") -> tuple[str, bytes]:
    return (name, clip(name).path.read_bytes())


def _wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def _delete_job(svc: Service, job_id: str) -> None:
    """Cancel (if it has not ended) and delete a job, leaving a shared server as found."""
    with svc.client() as client:
        for _ in range(2):
            if client.delete(f"/v1/jobs/{job_id}").status_code == 404:
                break


# --- the event loop never waits for the database --------------------------------------------------


@pytest.mark.slow
def test_a_locked_database_does_not_stall_other_requests(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> None:
    root = service_data_dir(tmp_path_factory.mktemp("locked"), data_dir / "models")
    svc = Service(root).start(wait_ready=False)
    lock = sqlite3.connect(root / "hushscribe.db", timeout=30, check_same_thread=False)
    lock.isolation_level = None
    try:
        lock.execute("BEGIN EXCLUSIVE")  # every writer now waits (up to its 30 s busy timeout)
        release = threading.Timer(3.0, lambda: lock.execute("COMMIT"))
        release.start()
        with ThreadPoolExecutor(1) as pool, svc.client() as client:
            submitted = pool.submit(client.post, "/v1/jobs", files={"file": _audio()})
            # Once its audio is stored, the request is at the database, waiting for the lock.
            blobs = root / "blobs"
            _wait_until(
                lambda: any(not n.startswith(".") for n in _files_in(blobs)), 10, "upload stored"
            )
            slowest = 0.0
            answered = 0
            while release.is_alive() and not submitted.done():
                started = time.monotonic()
                response = httpx.get(svc.url + "/healthz", timeout=10)
                slowest = max(slowest, time.monotonic() - started)
                assert response.status_code == 200
                answered += 1
            release.join()
            job = submitted.result(timeout=60)
        assert answered >= 1
        assert slowest < 0.5, f"/healthz took {slowest:.2f} s while a job waited for the database"
        assert job.status_code == 202, job.text
        _delete_job(svc, job.json()["id"])
    finally:
        lock.close()
        svc.stop()


# --- a full disk is 507 insufficient_storage, and leaves nothing behind ---------------------------


@pytest.fixture
def small_blobs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Service]:
    """A server whose upload directory is a 1 MiB file system (the database is elsewhere)."""
    root = service_data_dir(tmp_path_factory.mktemp("full"), data_dir / "models")
    with small_tmpfs(root / "blobs", "1m"):
        svc = Service(root)
        try:
            svc.start(wait_ready=False)
            yield svc
        finally:
            svc.stop()


@pytest.mark.slow
def test_upload_to_a_full_disk_is_507_and_leaves_no_partial_file(small_blobs: Service) -> None:
    blobs = small_blobs.data_dir / "blobs"
    with small_blobs.client() as client:
        response = client.post("/v1/jobs", files={"file": _audio("jfk.flac")})  # 1.15 MB
        assert response.status_code == 507, response.text
        error = _json_error(response.content)
        assert (error["type"], error["code"]) == ("server_error", "insufficient_storage")
        assert "disk" in error["message"] and "later" in error["message"]
        assert _files_in(blobs) == []
        # The partial file is gone, so its space is free again: a small upload fits.
        response = client.post("/v1/jobs", files={"file": _audio()})
        assert response.status_code == 202, response.text
    _delete_job(small_blobs, response.json()["id"])


# --- refused uploads leave no audio ---------------------------------------------------------------


def test_bad_response_format_deletes_the_upload_at_once(service: Service) -> None:
    blobs = service.data_dir / "blobs"
    before = set(_files_in(blobs))
    with service.client() as client:
        response = client.post(
            "/v1/audio/transcriptions",
            files={"file": _audio()},
            data={"model": "whisper-1", "response_format": "xml"},
        )
    assert response.status_code == 400, response.text
    error = _json_error(response.content)
    assert error["code"] == "invalid_option" and "response_format" in error["message"]
    assert set(_files_in(blobs)) <= before, "the refused upload's audio was left behind"


# --- the data directory and the database are private ----------------------------------------------


DB_FILES = ("hushscribe.db", "hushscribe.db-wal", "hushscribe.db-shm")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_dir_and_database_are_private(service: Service) -> None:
    assert _mode(service.data_dir) == 0o700
    modes = {name: _mode(service.data_dir / name) for name in DB_FILES}
    assert modes == dict.fromkeys(DB_FILES, 0o600)


def test_new_or_loose_data_dirs_are_made_private(tmp_path: Path) -> None:
    loose = tmp_path / "loose"  # as an older version (or a umask of 022) left it
    loose.mkdir()
    loose.chmod(0o755)
    sqlite3.connect(loose / "hushscribe.db").close()
    (loose / "hushscribe.db").chmod(0o644)
    fresh = tmp_path / "new" / "data"
    for data in (loose, fresh):
        settings = load_settings(None, data_dir=data, auth={"api_keys": KEYS})
        with TestClient(
            create_app(settings, start_workers=False), client=LOOPBACK_CLIENT
        ) as client:
            assert client.get("/v1/jobs", headers=AUTH).status_code == 200
            assert _mode(data) == 0o700, data
            assert {name: _mode(data / name) for name in DB_FILES} == dict.fromkeys(DB_FILES, 0o600)


# --- multipart edges ------------------------------------------------------------------------------


def _post_raw(svc: Service, body: bytes, boundary: str) -> httpx.Response:
    with svc.client() as client:
        return client.post(
            "/v1/jobs",
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )


def _file_part(boundary: str, data: bytes) -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    return head.encode() + data


def test_overlong_multipart_boundary_is_a_400(service: Service) -> None:
    for length in (201, 300):
        boundary = "b" * length
        body = _file_part(boundary, b"RIFF") + f"\r\n--{boundary}--\r\n".encode()
        response = _post_raw(service, body, boundary)
        assert response.status_code == 400, (length, response.text)
        error = _json_error(response.content)
        assert error["code"] == "invalid_request" and "boundary" in error["message"]


def test_multipart_body_without_its_closing_boundary_is_refused(service: Service) -> None:
    blobs = service.data_dir / "blobs"
    before = set(_files_in(blobs))
    response = _post_raw(service, _file_part("XYZ", clip("LDC93S1.wav").path.read_bytes()), "XYZ")
    assert response.status_code == 400, response.text
    error = _json_error(response.content)
    assert error["code"] == "invalid_request" and "closing boundary" in error["message"]
    assert set(_files_in(blobs)) <= before, "the refused upload's audio was left behind"


# --- oversized or malformed request heads get the JSON error shape --------------------------------


def _raw_exchange(svc: Service, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with _connect(svc.port) as sock:
        sock.sendall(request)
        raw, _ = _read_response(sock)
    parsed = _parse_response(raw)
    assert parsed is not None, raw[:500]
    return parsed


def test_oversized_request_head_is_a_json_431(service: Service) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"x" * 40_000 + b"\r\n\r\n"
    status, headers, body = _raw_exchange(service, head)
    assert status == 431, body[:300]
    assert headers["content-type"] == "application/json"
    error = _json_error(body)
    assert (error["type"], error["code"]) == ("invalid_request_error", "headers_too_large")


def test_malformed_request_head_is_a_json_400(service: Service) -> None:
    status, headers, body = _raw_exchange(service, b"NOT AN HTTP REQUEST\r\n\r\n")
    assert status == 400, body[:300]
    assert headers["content-type"] == "application/json"
    error = _json_error(body)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_request")


# --- the queue cap holds when uploads race --------------------------------------------------------


@pytest.fixture
def no_workers(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An API-only server (no worker drains the queue) with ``jobs.queue_max = 2``."""
    settings = load_settings(
        None, data_dir=tmp_path / "data", auth={"api_keys": KEYS}, jobs={"queue_max": 2}
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, start_workers=False), host="127.0.0.1", port=port,
            log_level="warning",
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: server.started, 30, "the server started")
        yield port, settings.blobs_dir
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_queue_cap_holds_when_uploads_race(no_workers: tuple[int, Path]) -> None:
    port, blobs = no_workers
    audio = clip("jfk.flac").path.read_bytes()  # 1.15 MB: half of it is written at once
    boundary = secrets.token_hex(8)
    body = _file_part(boundary, audio) + f"\r\n--{boundary}--\r\n".encode()
    split = len(body) // 2
    head = _upload_head(boundary, {"Content-Length": str(len(body))})
    head = head.replace(b"/v1/audio/transcriptions", b"/v1/jobs")
    socks = [_connect(port) for _ in range(6)]
    try:
        for sock in socks:  # every upload starts while the queue is empty
            sock.sendall(head + body[:split])
        _wait_until(
            lambda: sum(n.endswith(".part") for n in _files_in(blobs)) == 6, 10, "6 uploads begun"
        )
        for sock in socks:
            sock.sendall(body[split:])
        statuses = []
        for sock in socks:
            raw, _ = _read_response(sock)
            parsed = _parse_response(raw)
            assert parsed is not None, raw[:300]
            statuses.append(parsed[0])
            if parsed[0] == 429:
                assert _json_error(parsed[2])["code"] == "queue_full"
                assert parsed[1]["retry-after"].isdigit()
    finally:
        for sock in socks:
            sock.close()
    assert sorted(statuses) == [202, 202, 429, 429, 429, 429], statuses
    assert len([n for n in _files_in(blobs) if not n.startswith(".")]) == 2


# --- /v1 says 401 before it says whether a route exists -------------------------------------------


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(None, data_dir=tmp_path / "data", auth={"api_keys": KEYS})
    with TestClient(create_app(settings, start_workers=False), client=LOOPBACK_CLIENT) as client:
        yield client


def test_v1_answers_401_without_a_key_whatever_the_path_or_method(app_client: TestClient) -> None:
    probes = [
        ("GET", "/v1"),
        ("GET", "/v1/"),
        ("GET", "/v1/nope"),
        ("GET", "/v1/admin/users"),
        ("PUT", "/v1/models"),
        ("PATCH", "/v1/jobs"),
        ("POST", "/v1/jobs/x/y"),
        ("OPTIONS", "/v1/audio/transcriptions"),
    ]
    for method, path in probes:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = app_client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            error = _json_error(response.content)
            assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    # With a key, the answers say what they did before.
    assert app_client.get("/v1/nope", headers=AUTH).status_code == 404
    assert app_client.put("/v1/models", headers=AUTH).status_code == 405
    assert app_client.get("/nope").status_code == 401  # outside /v1 the same: only public
    assert app_client.get("/nope", headers=AUTH).status_code == 404  # paths answer without
    assert app_client.get("/healthz").status_code == 200
