"""Live streams on workers (``jobs/streams.py``) through the API's client (``StreamLink``): real
model, real speech, the real socket; the limits; broken and vanished peers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hushscribe.jobs.streams as stream_server
from hushscribe.audio import decode
from hushscribe.engine import ModelManager
from hushscribe.engine.streaming import decode_many
from hushscribe.jobs import stream_link
from hushscribe.jobs.queue import make_engine
from hushscribe.jobs.registry import WorkerRegistry
from hushscribe.jobs.stream_link import NoStreamWorker, StreamLink, StreamsFull, socket_path
from hushscribe.jobs.streams import StreamServer
from hushscribe.jobs.worker import Worker
from hushscribe.settings import Settings, load_settings
from hushscribe.stream.session import StreamSession
from tests.service import Service, service_data_dir
from tests.speech import clip, normalise

FRAME = 4000
"""Samples in one append: 0.25 s at 16 kHz."""
ASK_NOT = "ask not what your country"
Event = dict[str, Any]


def make_settings(root: Path, data_dir: Path, **streams: Any) -> Settings:
    if not (root / "models").exists():
        (root / "models").symlink_to(data_dir / "models", target_is_directory=True)
    engine = {"cpu_threads": 2, "default_model": "tiny.en"}
    return load_settings(None, data_dir=root, engine=engine, streams=streams)


Serve = Callable[..., StreamServer]


@pytest.fixture
def serve(tmp_path: Path, data_dir: Path, manager: ModelManager) -> Iterator[Serve]:
    """``serve(worker_id, **streams_settings)``: a stream server, stopped after the test."""
    started: list[StreamServer] = []

    def start(worker_id: str = "w-a", **limits: Any) -> StreamServer:
        server = StreamServer(make_settings(tmp_path, data_dir, **limits), worker_id, manager)
        assert server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def jfk_pcm(settings: Settings) -> bytes:
    samples = decode(clip("jfk.flac").path, settings.audio).samples
    return bytes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())


async def feed(link: StreamLink, pcm: bytes, pace_s: float) -> None:
    """``pcm`` in 0.25 s frames, ``pace_s`` apart."""
    for start in range(0, len(pcm), 2 * FRAME):
        await link.append(pcm[start : start + 2 * FRAME])
        await asyncio.sleep(pace_s)


async def events_of(link: StreamLink) -> list[Event]:
    return [event async for event in link.events()]


async def speak(link: StreamLink, pcm: bytes, pace_s: float = 0.05) -> list[Event]:
    """Feed ``pcm``, finish, and every event the stream gave."""
    collecting = asyncio.create_task(events_of(link))
    await feed(link, pcm, pace_s)
    await link.finish()
    return await asyncio.wait_for(collecting, 60)


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["type"] == kind]


def transcript(events: list[Event]) -> str:
    """The completed transcripts, turn after turn."""
    finals = of_type(events, "conversation.item.input_audio_transcription.completed")
    return " ".join(e["transcript"] for e in finals)


def wait_for(check: Any, within_s: float) -> None:  # until check() holds, else fail
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s"
        time.sleep(0.01)


def test_streamed_speech_comes_back_as_confirmed_text_and_finals(
    serve: Serve, jfk_pcm: bytes
) -> None:
    server = serve()

    async def scenario() -> tuple[list[Event], int]:
        link = await StreamLink.open(server.settings, {"model": "tiny.en", "language": "en"})
        held = server.active
        return await speak(link, jfk_pcm), held

    events, held = asyncio.run(scenario())
    assert held == 1
    items: dict[str, str] = {}  # one item per turn; the deltas of an item concatenate
    for e in of_type(events, "conversation.item.input_audio_transcription.delta"):
        items[e["item_id"]] = items.get(e["item_id"], "") + e["delta"]
    assert ASK_NOT in normalise(" ".join(items.values()), "en")
    completed = of_type(events, "conversation.item.input_audio_transcription.completed")
    assert completed and ASK_NOT in normalise(" ".join(e["transcript"] for e in completed), "en")
    assert completed[-1]["language"] == "en"
    assert events[-1]["type"] == "conversation.item.input_audio_transcription.completed"
    assert not of_type(events, "error")
    wait_for(lambda: server.active == 0, 1.0)  # finished: the slot is free


def test_a_full_worker_refuses_and_a_leaving_client_frees_its_slot(
    serve: Serve, jfk_pcm: bytes
) -> None:
    server = serve(max_per_worker=1)
    settings = server.settings

    async def scenario() -> None:
        link = await StreamLink.open(settings, {})
        await feed(link, jfk_pcm[: 2 * 16000 * 3], 0.0)  # mid-stream, mid-decode
        with pytest.raises(StreamsFull):
            await StreamLink.open(settings, {})
        await link.close()
        await asyncio.to_thread(wait_for, lambda: server.active == 0, 1.0)  # within a second
        again = await StreamLink.open(settings, {})  # the freed slot serves the next
        await again.close()

    asyncio.run(scenario())


def test_the_least_loaded_live_worker_gets_the_stream(serve: Serve) -> None:
    settings = serve("w-a", max_per_worker=2).settings
    serve("w-b", max_per_worker=2)
    engine = make_engine(settings.db_url)
    registry = WorkerRegistry(engine)
    registry.register("w-a", 1, [])  # w-b serves, but the registry does not know it alive

    async def scenario() -> list[str]:
        links = [await StreamLink.open(settings, {}) for _ in range(2)]
        spread = await stream_link.active_streams(settings)
        more = await StreamLink.open(settings, {}, registry)
        with pytest.raises(StreamsFull):  # w-a full; w-b is not a live worker by the registry
            await StreamLink.open(settings, {}, registry)
        for link in [*links, more]:
            await link.finish()  # nothing said: nothing to decode, the stream just ends
            assert link.ended
        return [link.worker_id for link in [*links, more]] + [str(spread)]

    assert asyncio.run(scenario()) == ["w-a", "w-b", "w-a", str({"w-a": 1, "w-b": 1})]
    engine.dispose()


def test_an_idle_stream_gets_an_error_then_its_final_then_the_end(
    serve: Serve, jfk_pcm: bytes
) -> None:
    server = serve(idle_timeout_s=1.0)
    settings = server.settings

    async def scenario() -> list[Event]:
        # one turn, ended by a commit only: the timeout's
        link = await StreamLink.open(settings, {"language": "en", "turn_detection": False})
        await feed(link, jfk_pcm[: 2 * 16000 * 3], 0.0)  # "And so my fellow Americans"
        return await asyncio.wait_for(events_of(link), 60)  # ends without a finish

    events = asyncio.run(scenario())
    errors = of_type(events, "error")
    assert [e["error"]["code"] for e in errors] == ["idle_timeout"]
    after = events[events.index(errors[0]) :]  # the turn's final comes after the error
    finals = of_type(after, "conversation.item.input_audio_transcription.completed")
    assert finals and "americans" in normalise(finals[-1]["transcript"], "en")
    assert server.active == 0


def test_a_stream_past_its_longest_duration_is_ended(serve: Serve, jfk_pcm: bytes) -> None:
    settings = serve(max_duration_s=2.0).settings

    async def scenario() -> list[Event]:
        link = await StreamLink.open(settings, {"language": "en", "turn_detection": False})
        collecting = asyncio.create_task(events_of(link))
        await feed(link, jfk_pcm[: 2 * 16000 * 4], 0.0)  # what comes after the limit is ignored
        return await asyncio.wait_for(collecting, 60)

    events = asyncio.run(scenario())
    errors = of_type(events, "error")
    assert [e["error"]["code"] for e in errors] == ["max_duration"]
    after = events[events.index(errors[0]) :]  # then the final of the 2 s heard: "And so"
    finals = of_type(after, "conversation.item.input_audio_transcription.completed")
    assert len(finals) == 1 and "and so" in normalise(finals[0]["transcript"], "en")
    assert "americans" not in normalise(transcript(events), "en")


def test_garbage_on_the_socket_costs_only_that_connection(serve: Serve, jfk_pcm: bytes) -> None:
    server = serve()
    settings = server.settings
    junk = [
        b"\xff" * 64,  # no such kind
        struct.pack(">IB", 1 << 30, ord("J")),  # a frame far over the limit
        struct.pack(">IB", 5, ord("J")) + b"[1,2]",  # JSON, not an object
        struct.pack(">IB", 2, ord("A")) + b"\0\0",  # audio before any open
        struct.pack(">IB", 13, ord("J")) + b'{"op":"hack"}',  # no such op
    ]
    for payload in junk:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(server.path))
            sock.sendall(payload)
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(4096):  # the worker closes this connection, and only this one
                    pass

    async def scenario() -> list[Event]:
        link = await StreamLink.open(settings, {"language": "en"})
        # an odd number of bytes is not PCM16: this stream ends, the next one is served
        await link.append(b"\0\0\0")
        broken = await asyncio.wait_for(events_of(link), 30)
        assert [e["error"]["code"] for e in of_type(broken, "error")] == ["bad_frame"]
        return await speak(await StreamLink.open(settings, {"language": "en"}), jfk_pcm, 0.0)

    events = asyncio.run(scenario())
    assert ASK_NOT in normalise(transcript(events), "en")
    assert server.active == 0


def test_a_worker_holding_a_stream_claims_no_file_job(tmp_path: Path, data_dir: Path) -> None:
    settings = make_settings(tmp_path, data_dir)
    worker = Worker(settings, "w-gate")
    assert worker.streams.start()
    try:
        settings.blobs_dir.mkdir(parents=True, exist_ok=True)
        blob = settings.blobs_dir / ("a" * 32)
        shutil.copyfile(clip("jfk.flac").path, blob)
        job = worker.queue.enqueue(
            "alice", "transcribe", "tiny.en", {}, str(blob), "0" * 64, 1, "jfk.flac"
        )

        async def hold_a_stream() -> bool:
            link = await StreamLink.open(settings, {})
            worked = await asyncio.to_thread(worker._step)  # streams first: the job waits
            await link.close()
            return worked

        assert asyncio.run(hold_a_stream()) is False
        queued = worker.queue.get(job.id, None)
        assert queued is not None and queued.status == "queued"
        wait_for(lambda: worker.streams.active == 0, 1.0)
        assert worker._step() is True  # no stream: the job runs
        done = worker.queue.get(job.id, None)
        assert done is not None and done.status == "done"
    finally:
        worker.streams.stop()
    assert not worker.streams.path.exists()  # a stopped worker's socket is gone


DOOMED = """
import sys, time
from hushscribe.engine import ModelManager
from hushscribe.jobs.streams import StreamServer
from hushscribe.settings import load_settings

settings = load_settings(None, data_dir=sys.argv[1], engine={"default_model": "tiny.en"})
assert StreamServer(settings, "w-doomed", ModelManager(settings)).start()
print("serving", flush=True)
time.sleep(600)
"""


def test_a_worker_process_killed_mid_stream_ends_it_with_an_error(
    tmp_path: Path, data_dir: Path, jfk_pcm: bytes
) -> None:
    settings = make_settings(tmp_path, data_dir)
    child = subprocess.Popen(
        [sys.executable, "-c", DOOMED, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    with child:
        assert child.stdout is not None and child.stdout.readline() == "serving\n"

        async def scenario() -> list[Event]:
            link = await StreamLink.open(settings, {})
            assert link.worker_id == "w-doomed"
            await feed(link, jfk_pcm[: 2 * 8000], 0.0)  # half a second: no decode yet
            child.kill()  # SIGKILL: no goodbye from the worker
            events = await asyncio.wait_for(events_of(link), 30)
            await link.append(jfk_pcm[: 2 * FRAME])  # into a gone worker: no exception
            await link.finish()
            return events

        events = asyncio.run(scenario())
        child.kill()  # dead already, unless the test failed before
    assert [e["error"]["code"] for e in of_type(events, "error")] == ["worker_lost"]
    assert socket_path(settings, "w-doomed").exists()  # left behind, and refusing:
    with pytest.raises(NoStreamWorker):
        asyncio.run(StreamLink.open(settings, {}))


def test_streams_on_one_model_are_decoded_together(
    serve: Serve, jfk_pcm: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_sent = threading.Event()
    sessions: list[Any] = []

    class Held(StreamSession):  # nothing to decode until both streams sent 3 s
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            sessions.append(self)

        def pending(self) -> Any:
            return super().pending() if both_sent.is_set() else None

    batches: list[int] = []

    def counted(model: Any, requests: list[Any]) -> Any:
        batches.append(sum(not r.final for r in requests))  # the steps (finals go one by one)
        return decode_many(model, requests)

    monkeypatch.setattr(stream_server, "StreamSession", Held)
    monkeypatch.setattr(stream_server, "decode_many", counted)
    settings, head = serve().settings, 2 * 16000 * 3

    async def scenario() -> list[list[Event]]:
        options = {"language": "en", "turn_detection": False}  # one long turn: steps, then a final
        links = [await StreamLink.open(settings, options) for _ in range(2)]
        collecting = [asyncio.create_task(events_of(link)) for link in links]
        for link in links:
            await feed(link, jfk_pcm[:head], 0.0)
        await asyncio.to_thread(wait_for, lambda: all(s.audio_s >= 3 for s in sessions), 30)
        both_sent.set()  # the next steps (woken by more audio) find both streams to decode
        for link in links:  # both streams' audio before either ends, so steps can share a batch
            await feed(link, jfk_pcm[head:], 0.0)
        for link in links:
            await link.finish()
        return [await asyncio.wait_for(c, 60) for c in collecting]

    for events in asyncio.run(scenario()):
        assert ASK_NOT in normalise(transcript(events), "en")
    # A decode round may start just before the gate opens and take one stream alone; the rounds
    # after it find both streams with audio to decode, and decode them in one batch.
    assert 2 in batches, batches


def test_a_real_worker_serves_streams_and_its_successor_takes_new_ones(
    tmp_path: Path, data_dir: Path, jfk_pcm: bytes
) -> None:
    """``hushscribe serve`` with one worker process: the stream goes through the worker's own
    socket; killed, the worker's stream ends with an error and its restarted successor serves."""
    root = service_data_dir(tmp_path / "svc", data_dir / "models")
    service = Service(root).start()
    engine = None
    try:
        settings = load_settings(None, data_dir=root, jobs={"lease_s": 3})
        engine = make_engine(settings.db_url)
        registry = WorkerRegistry(engine)

        async def scenario() -> tuple[str, list[Event], list[Event], str]:
            link = await StreamLink.open(settings, {"model": "tiny.en"}, registry)
            said = await speak(link, jfk_pcm)
            doomed = await StreamLink.open(settings, {"model": "tiny.en"}, registry)
            for pid in service.worker_pids():
                os.kill(pid, signal.SIGKILL)
            lost = await asyncio.wait_for(events_of(doomed), 30)
            deadline = time.monotonic() + 60
            while True:  # the supervisor starts a new worker, with a new id and socket
                with contextlib.suppress(NoStreamWorker):
                    successor = await StreamLink.open(settings, {}, registry)
                    await successor.close()
                    return link.worker_id, said, lost, successor.worker_id
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)

        first, said, lost, second = asyncio.run(scenario())
    finally:
        service.stop()
        if engine is not None:
            engine.dispose()
    assert ASK_NOT in normalise(transcript(said), "en")
    assert [e["error"]["code"] for e in of_type(lost, "error")] == ["worker_lost"]
    assert second != first
