"""Live captions over /v1/realtime: OpenAI's Realtime transcription protocol against a real server
(API + worker, the real models on real speech). Its edges without a worker, in process:
tests/integration/test_realtime_api.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.test_api_jobs import wait
from tests.service import KEYS, Service, service_data_dir
from tests.speech import clip, normalise

PATH = "/v1/realtime?intent=transcription"
FRAME_S = 0.2
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
STARTED, STOPPED = "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"
COMMITTED = "input_audio_buffer.committed"
ENGLISH = {"model": "tiny.en", "language": "en", "prompt": None}


def pcm(name: str, rate: int = 24_000) -> bytes:
    """A clip from ../shared/speech as PCM16LE mono at ``rate``."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    out: list[np.ndarray] = []
    with av.open(str(clip(name).path)) as container:
        for frame in container.decode(audio=0):
            out += [f.to_ndarray().ravel() for f in resampler.resample(frame)]
    out += [f.to_ndarray().ravel() for f in resampler.resample(None)]
    return np.concatenate(out).astype("<i2").tobytes()


def frames(audio: bytes, rate: int = 24_000) -> Iterator[str]:
    """``input_audio_buffer.append`` events of FRAME_S each."""
    step = int(rate * FRAME_S) * 2
    for start in range(0, len(audio), step):
        chunk = base64.b64encode(audio[start : start + step]).decode()
        yield json.dumps({"type": "input_audio_buffer.append", "audio": chunk})


def update(rate: int = 24_000, silence_ms: int = 500, **transcription: Any) -> str:
    session = {
        "type": "transcription",
        "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": rate},
            "transcription": {**ENGLISH, **transcription},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": silence_ms},
        }},
    }  # fmt: skip
    return json.dumps({"type": "session.update", "event_id": "evt_update", "session": session})


def headers(owner: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[owner]}"}


def ws_url(service: Service) -> str:
    return service.url.replace("http", "ws", 1) + PATH


@dataclass
class Stream:
    """A client's view of one stream: every event it got, in order."""

    ws: ClientConnection
    events: list[dict[str, Any]] = field(default_factory=list)

    async def next(self, kind: str, timeout: float = 180) -> dict[str, Any]:
        """The next event of type ``kind`` (the ones before it are kept in ``events``)."""
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await self.ws.recv())
                self.events.append(event)
                if event["type"] == kind:
                    return event

    async def settle(self, timeout: float = 240) -> None:
        """Receive until every turn that started is completed and nothing came for a while."""
        async with asyncio.timeout(timeout):
            while True:
                counts = {len(self.of(kind)) for kind in (STARTED, STOPPED, COMMITTED, COMPLETED)}
                quiet = len(self.events)
                await self.drain(1.5)
                if len(self.events) == quiet and len(counts) == 1 and counts != {0}:
                    return

    async def drain(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    self.events.append(json.loads(await self.ws.recv()))

    async def send_all(self, messages: Iterator[str], pace_s: float = 0.05) -> None:
        for message in messages:
            await self.ws.send(message)
            await asyncio.sleep(pace_s)  # 4× real time: the buffer grows between decodes

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def text(self) -> str:
        """The confirmed text: every delta, item by item, in order."""
        items: dict[str, str] = {}
        for e in self.of(DELTA):
            items[e["item_id"]] = items.get(e["item_id"], "") + e["delta"]
        return " ".join(items.values())


@contextlib.asynccontextmanager
async def opened(service: Service, owner: str = "alice", **kw: Any) -> Any:
    async with connect(ws_url(service), additional_headers=headers(owner), **kw) as ws:
        stream = Stream(ws)
        created = await stream.next("session.created", timeout=30)
        assert created["session"]["type"] == "transcription"
        yield stream


def silence(seconds: float, rate: int = 24_000) -> bytes:
    return b"\x00\x00" * int(rate * seconds)


def assert_turns_in_order(stream: Stream) -> None:
    """Each item: speech started, stopped, committed, completed — in that order."""
    positions = {id(e): i for i, e in enumerate(stream.events)}
    completed = stream.of(COMPLETED)
    assert completed
    for done in completed:
        item = done["item_id"]
        steps = [next(e for e in stream.of(kind) if e.get("item_id") == item)
                 for kind in (STARTED, STOPPED, COMMITTED)] + [done]  # fmt: skip
        order = [positions[id(e)] for e in steps]
        assert order == sorted(order), [e["type"] for e in steps]
    for event in stream.events:
        assert event["event_id"].startswith("event_") and len(event["event_id"]) > 10


# --- a real server -----------------------------------------------------------------------------


def test_jfk_streamed_at_24k_with_server_vad(service: Service) -> None:
    async def run() -> Stream:
        async with opened(service) as stream:
            await stream.ws.send(update())
            updated = await stream.next("session.updated")
            assert updated["session"]["audio"]["input"]["transcription"]["model"] == "tiny.en"
            await stream.send_all(frames(pcm("jfk.flac") + silence(2.0)))
            await stream.settle()  # every turn VAD ended in the pauses, decoded
            return stream

    stream = asyncio.run(run())
    assert_turns_in_order(stream)
    confirmed = normalise(stream.text(), "en")
    assert "ask not what your country" in confirmed, stream.text()
    final = normalise(" ".join(e["transcript"] for e in stream.of(COMPLETED)), "en")
    assert "ask not what your country can do for you" in final
    assert all(e["language"] == "en" for e in stream.of(COMPLETED))


def test_beta_form_and_bad_frames_keep_the_stream_going(service: Service) -> None:
    beta = {"type": "transcription_session.update", "session": {
        "input_audio_format": "pcm16",
        "input_audio_transcription": {"model": "tiny.en", "language": "en"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
    }}  # fmt: skip
    too_big = {"type": "input_audio_buffer.append", "event_id": "big", "audio": "A" * (1 << 20)}
    odd = {"type": "input_audio_buffer.append", "event_id": "odd",
           "audio": base64.b64encode(b"abc").decode()}  # fmt: skip
    rate = {"type": "session.update", "event_id": "rate", "session": {"type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}}}}  # fmt: skip
    late = {"type": "session.update", "event_id": "late", "session": {"type": "transcription",
            "audio": {"input": {"transcription": {"language": "fr"}}}}}  # fmt: skip
    bad = [  # (message, the event_id the error names, its code)
        ('{"type": "input_audio_buffer.append", "event_id": "b64", "audio": "%%%"}', "b64",
         "invalid_base64"),
        (json.dumps(odd), "odd", "invalid_audio"),
        (json.dumps(too_big), None, "message_too_large"),  # not even parsed
        ('{"type": "input_audio_buffer.dance", "event_id": "what"}', "what", "unknown_event_type"),
        ("{this is not json", None, "invalid_json"),
        (json.dumps(rate), "rate", "invalid_value"),
        (json.dumps(late), "late", "session_active"),  # the language is fixed once audio came
    ]  # fmt: skip
    wanted = [(event_id, code) for _, event_id, code in bad]

    async def run() -> Stream:
        async with opened(service) as stream:
            await stream.ws.send(json.dumps(beta))
            updated = await stream.next("transcription_session.updated")
            assert updated["session"]["input_audio_transcription"]["model"] == "tiny.en"
            good = list(frames(pcm("jfk.flac") + silence(2.0)))
            for i, message in enumerate(good):
                if i % 8 == 3 and bad:  # a bad frame now and then, between good ones
                    await stream.ws.send(bad.pop(0)[0])
                await stream.ws.send(message)
                await asyncio.sleep(0.05)
            await stream.settle()
            return stream

    stream = asyncio.run(run())
    errors = [(e["error"].get("event_id"), e["error"]["code"]) for e in stream.of("error")]
    assert errors == wanted
    assert all(e["error"]["type"] == "invalid_request_error" for e in stream.of("error"))
    assert_turns_in_order(stream)
    assert "ask not what your country" in normalise(stream.text(), "en"), stream.text()


def test_german_at_16k_with_language_de(service: Service) -> None:
    async def run() -> Stream:
        async with opened(service) as stream:
            await stream.ws.send(update(rate=16000, model="base", language="de"))
            await stream.next("session.updated")
            audio = pcm("cheetah_test_de.wav", 16000) + silence(2.0, 16000)
            await stream.send_all(frames(audio, 16000))
            await stream.settle()
            return stream

    stream = asyncio.run(run())
    assert_turns_in_order(stream)
    assert {e["language"] for e in stream.of(COMPLETED)} == {"de"}
    text = normalise(" ".join(e["transcript"] for e in stream.of(COMPLETED)), "de")
    assert "werbung" in text and "eindruck" in text, stream.of(COMPLETED)


def test_stop_saves_the_stream_as_a_job_and_audits_it(service: Service) -> None:
    async def run() -> tuple[Stream, int | None]:
        async with opened(service) as stream:
            await stream.ws.send(update(silence_ms=2000))  # no turn ends before the stop
            await stream.next("session.updated")
            await stream.send_all(frames(pcm("jfk.flac")), pace_s=0.01)
            await stream.ws.send('{"type": "hushscribe.stop"}')
            await stream.next("hushscribe.job.created")
            with contextlib.suppress(ConnectionClosed):
                await stream.drain(10)
            return stream, stream.ws.close_code

    stream, code = asyncio.run(run())
    assert code == 1000
    created = stream.of("hushscribe.job.created")[0]
    assert stream.of(COMPLETED), "the open turn is finished before the job is saved"
    assert stream.events.index(created) > stream.events.index(stream.of(COMPLETED)[-1])
    with service.client("alice") as alice:
        job, _ = wait(alice, created["job"]["id"])
        assert job["status"] == "done" and job["audio_seconds"] == pytest.approx(11.0, abs=0.3)
        text = normalise(alice.get(f"/v1/jobs/{job['id']}/result?format=text").text, "en")
        assert "ask not what your country can do for you" in text
    with service.admin() as admin:
        records = admin.get("/v1/audit", params={"type": "live_stream", "limit": 1000}).json()
    mine = [r for r in records["data"] if r["details"].get("job_id") == job["id"]]
    assert len(mine) == 1, records
    record = mine[0]
    assert record["actor"]["user"] == "alice" and record["address"] == "127.0.0.1"
    assert record["details"]["duration_s"] == pytest.approx(11.0, abs=0.3)
    assert record["details"]["model"] == "tiny.en" and record["details"]["reason"] == "stopped"


def test_unauthenticated_and_wrong_keys_are_refused_before_the_session(service: Service) -> None:
    async def refused(extra: dict[str, str]) -> int:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(ws_url(service), additional_headers=extra):
                pass
        return caught.value.response.status_code

    assert asyncio.run(refused({})) == 403
    assert asyncio.run(refused({"Authorization": "Bearer sk-wrong-" + "x" * 32})) == 403
    with service.admin() as browser:  # a page's session cookie: from this origin only
        cookie = {"Cookie": f"hs_session={browser.cookies['hs_session']}"}
    evil = {**cookie, "Origin": "https://evil.example"}
    assert asyncio.run(refused(evil)) == 403

    async def from_the_page() -> str:
        page = {**cookie, "Origin": service.url}
        async with connect(ws_url(service), additional_headers=page) as ws:
            return str(json.loads(await ws.recv())["type"])

    assert asyncio.run(from_the_page()) == "session.created"


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Service]:
    """A server that holds one stream at a time, of 4 s at most, behind a trusted proxy at
    127.0.0.1."""
    root = service_data_dir(tmp_path_factory.mktemp("narrow"), data_dir / "models")
    env = {
        "HUSHSCRIBE_STREAMS__MAX_TOTAL": "1",
        "HUSHSCRIBE_STREAMS__MAX_PER_USER": "1",
        "HUSHSCRIBE_NETWORK__TRUSTED_PROXIES": '["127.0.0.1/32"]',
        "HUSHSCRIBE_STREAMS__MAX_DURATION_S": "4",
    }
    svc = Service(root, env=env).start()
    yield svc
    svc.stop()


def test_limits_answer_429_and_a_dropped_client_frees_its_slot(narrow: Service) -> None:
    async def run() -> float:
        async with opened(narrow, "alice") as first:
            await first.ws.send(update())
            await first.next("session.updated")
            await first.send_all(frames(pcm("jfk.flac")[: 24000 * 2 * 2]), pace_s=0.01)
            for owner in ("alice", "bob"):  # one each, one in all
                with pytest.raises(InvalidStatus) as caught:
                    async with connect(ws_url(narrow), additional_headers=headers(owner)):
                        pass
                assert caught.value.response.status_code == 429
                assert caught.value.response.headers["Retry-After"]
            first.ws.transport.abort()  # gone without a goodbye, mid-stream
            gone = time.monotonic()
        while True:
            with contextlib.suppress(InvalidStatus):
                async with opened(narrow, "bob") as second:
                    took = time.monotonic() - gone
                    await second.ws.send(update(silence_ms=2000))
                    await second.next("session.updated")
                    await second.send_all(frames(pcm("jfk.flac")[: 24000 * 2 * 2]), pace_s=0.01)
                    await second.ws.send('{"type": "input_audio_buffer.commit"}')
                    await second.next(COMMITTED, timeout=30)  # the worker took it too
                    return took
            assert time.monotonic() - gone < 5, "the slot was never freed"
            await asyncio.sleep(0.05)

    assert asyncio.run(run()) < 1.0
    time.sleep(0.5)
    blobs = narrow.data_dir / "blobs"
    assert not [p for p in blobs.iterdir()], "a dropped stream leaves no audio behind"
    with narrow.client("alice") as alice:
        assert alice.get("/v1/jobs").json()["data"] == []
    with narrow.admin() as admin:
        records = admin.get("/v1/audit", params={"type": "live_stream"}).json()["data"]
    dropped = [r for r in records if r["actor"]["user"] == "alice"]
    assert [r["details"]["reason"] for r in dropped] == ["disconnected"]
    assert "job_id" not in dropped[0]["details"] and dropped[0]["details"]["duration_s"] > 1


def test_addresses_outside_the_allowlist_are_refused(narrow: Service) -> None:
    async def attempt(forwarded: str | None) -> int:
        extra = {**headers(), **({"X-Forwarded-For": forwarded} if forwarded else {})}
        try:
            async with connect(ws_url(narrow), additional_headers=extra) as ws:
                json.loads(await ws.recv())
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt("10.20.30.40")) == 403
    assert asyncio.run(attempt("192.168.7.7")) == 403
    assert asyncio.run(attempt(None)) == 101  # the proxy itself, on loopback


def test_a_stream_ends_at_its_longest(narrow: Service) -> None:
    async def run() -> tuple[Stream, int | None]:
        deadline = time.monotonic() + 10
        while True:  # the slot of the previous test's stream may take a moment
            try:
                async with opened(narrow) as stream:
                    await stream.ws.send(update(silence_ms=2000))
                    await stream.next("session.updated")
                    with contextlib.suppress(ConnectionClosed):
                        await stream.send_all(frames(pcm("jfk.flac")[: 24000 * 2 * 6]), 0.02)
                        await stream.drain(60)
                    return stream, stream.ws.close_code
            except InvalidStatus:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)

    stream, code = asyncio.run(run())
    assert code == 1000
    assert [e["error"]["code"] for e in stream.of("error")] == ["max_duration"]
    with narrow.admin() as admin:
        records = admin.get("/v1/audit", params={"type": "live_stream"}).json()["data"]
    ended = [r for r in records if r["details"]["reason"] == "max_duration"]
    assert len(ended) == 1 and ended[0]["details"]["duration_s"] == pytest.approx(4.0, abs=0.25)
