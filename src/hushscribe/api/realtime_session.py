"""One live stream's session: the client's events in, the worker's events out, the recording,
and how it ends (a saved job, an audit record). :mod:`hushscribe.api.routes_realtime` admits the
client and hands it here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from hushscribe.api.network_gate import client_ip
from hushscribe.api.realtime_audio import STREAM_RATE, Recording, Resampler, decode_append
from hushscribe.api.realtime_events import (
    ClientError,
    SessionConfig,
    TurnDetection,
    apply_update,
    client_event_id,
    error_event,
    new_id,
    parse_event,
)
from hushscribe.api.submit import OPENAI_ALIASES, resolve_model
from hushscribe.engine import make_options
from hushscribe.errors import HushscribeError
from hushscribe.jobs.stream_link import NoStreamWorker, StreamLink, StreamsFull
from hushscribe.security.principal import Principal
from hushscribe.settings import Settings

log = logging.getLogger("hushscribe.realtime")

NORMAL, POLICY, SERVER_ERROR, TRY_LATER = 1000, 1008, 1011, 1013
COMPLETED: Final = "conversation.item.input_audio_transcription.completed"


def stamp(event: dict[str, Any]) -> dict[str, Any]:
    """An event as sent: with its own ``event_id``."""
    return {"event_id": new_id("event"), **event}


@dataclass
class Ending:
    """How a stream ended, for its audit record."""

    reason: str = "disconnected"
    outcome: str = "ok"
    job_id: str | None = None


class LiveStream:
    """One client's stream: its session, its link to a worker, its recording."""

    def __init__(self, websocket: WebSocket, principal: Principal, settings: Settings) -> None:
        self.ws, self.principal, self.settings = websocket, principal, settings
        self.state = websocket.app.state
        self.address = client_ip(websocket)
        self.session_id = new_id("sess")
        model = settings.streams.default_model or settings.engine.default_model
        self.config = SessionConfig(model=model)
        self.link: StreamLink | None = None
        self.pump: asyncio.Task[None] | None = None
        self.resampler = Resampler(self.config.rate)
        audio = settings.audio
        cap = min(audio.max_bytes - 44, int(audio.max_duration_s * STREAM_RATE) * 2)
        self.recording = Recording(self.state.blobs, cap)
        self.samples = 0
        self.items: set[str] = set()
        self.started = self.last_audio = time.monotonic()
        self.ending = Ending()
        self.gone = self.recorded = False
        self.worker_error: str | None = None
        self.said: set[str] = set()
        self._send_lock = asyncio.Lock()

    # --- sending -------------------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        async with self._send_lock:
            if self.gone or self.ws.application_state != WebSocketState.CONNECTED:
                return
            try:
                await self.ws.send_json(stamp(event))
            except (WebSocketDisconnect, OSError, RuntimeError):
                self.gone = True  # the client left: the receiving side sees it too

    async def error(self, exc: ClientError, event: dict[str, Any] | None = None) -> None:
        await self.send(error_event(exc, client_event_id(event) if event else None))

    async def close(self, code: int, exc: ClientError | None = None) -> None:
        if exc is not None:
            await self.error(exc)
        async with self._send_lock:
            if not self.gone and self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                    await self.ws.close(code)

    async def _pump(self, link: StreamLink) -> None:
        async for event in link.events():
            if event.get("type") == COMPLETED and isinstance(event.get("item_id"), str):
                self.items.add(event["item_id"])
            elif event.get("type") == "error" and isinstance(event.get("error"), dict):
                self.worker_error = str(event["error"].get("code"))
                if self.worker_error in self.said:
                    continue  # the same limit, already told by this side
                self.said.add(self.worker_error)
            await self.send(event)

    # --- the session ---------------------------------------------------------------------------

    async def run(self) -> None:
        await self.send(
            {"type": "session.created", "session": self.config.session(self.session_id)}
        )
        receiving: asyncio.Task[Any] = asyncio.ensure_future(self.ws.receive())
        try:
            while True:
                idle = self.settings.streams.idle_timeout_s - (time.monotonic() - self.last_audio)
                waiting = {receiving} | ({self.pump} if self.pump is not None else set())
                done, _ = await asyncio.wait(waiting, timeout=max(idle, 0.0),
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if self.gone:
                    return
                if self.pump is not None and self.pump in done:  # the worker ended the stream
                    code = self.worker_error  # its error event (already sent) says why
                    lost = code in (None, "worker_lost")
                    self.ending = Ending(code or "worker_lost", "failed" if lost else "ok")
                    await self.close(SERVER_ERROR if lost else NORMAL)
                    return
                if not done:
                    limit = self.settings.streams.idle_timeout_s
                    await self.end(
                        "idle_timeout", f"no audio for {limit:g} s; the stream is closed"
                    )
                    return
                message = receiving.result()
                if message["type"] == "websocket.disconnect":
                    return
                if not await self.handle(message) or self.gone:
                    return
                receiving = asyncio.ensure_future(self.ws.receive())
        finally:
            receiving.cancel()

    async def handle(self, message: dict[str, Any]) -> bool:
        """One client message; False when the stream is over."""
        text = message.get("text")
        event: dict[str, Any] | None = None
        try:
            if text is None:
                raise ClientError("invalid_event", "send events as JSON text frames")
            if len(text) > self.settings.streams.max_frame_bytes:
                raise ClientError(
                    "message_too_large",
                    f"a message of {len(text):,} bytes; the limit is "
                    f"{self.settings.streams.max_frame_bytes:,} (send shorter appends)",
                )
            event = parse_event(text)
            return await self.dispatch(event)
        except ClientError as exc:
            await self.error(exc, event)
            return True

    async def dispatch(self, event: dict[str, Any]) -> bool:
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            return await self.append(decode_append(event))
        if kind in ("session.update", "transcription_session.update"):
            await self.update(event, beta=kind.startswith("transcription_session"))
        elif kind == "input_audio_buffer.commit":
            if self.link is None:
                raise ClientError("input_audio_buffer_commit_empty", "no audio to commit yet")
            await self.link.commit()
        elif kind == "input_audio_buffer.clear":
            if self.link is None:
                await self.send({"type": "input_audio_buffer.cleared"})
            else:
                await self.link.clear()
        elif kind == "hushscribe.stop":
            await self.stop()
            return False
        else:
            raise ClientError("unknown_event_type", f"unknown event type {kind[:64]!r}",
                              param="type")  # fmt: skip
        return True

    async def update(self, event: dict[str, Any], beta: bool) -> None:
        update = apply_update(self.config, event, beta)
        config = update.config
        if update.model_given:
            config = replace(config, model=await self._model(update.model))
        if self.link is not None and _options(config) != _options(self.config):
            raise ClientError(
                "session_active",
                "model, language, prompt and turn detection are fixed once audio has come; "
                "open a new stream to change them",
            )
        if config.rate != self.resampler.rate:
            tail = self.resampler.flush()
            self.resampler = Resampler(config.rate)
            if tail:
                await self._forward(tail)
        self.config = config
        if beta:
            updated = {"type": "transcription_session.updated",
                       "session": config.beta_session(self.session_id)}  # fmt: skip
        else:
            updated = {"type": "session.updated", "session": config.session(self.session_id)}
        await self.send(updated)

    async def _model(self, name: str | None) -> str:
        wanted = (
            name if name and name not in OPENAI_ALIASES else self.settings.streams.default_model
        )
        try:
            return await asyncio.to_thread(resolve_model, wanted, self.settings)
        except HushscribeError as exc:
            raise ClientError(exc.code, exc.message, param="model") from None

    async def _open(self) -> StreamLink:
        if self.link is not None:
            return self.link
        try:
            link = await StreamLink.open(self.settings, _options(self.config), self.state.registry)
        except StreamsFull:
            self.ending = Ending("streams_full", "denied")
            await self.close(TRY_LATER, ClientError(
                "rate_limit_exceeded", "every worker serves as many streams as it may; retry later"
            ))  # fmt: skip
            raise
        except NoStreamWorker:
            self.ending = Ending("no_worker", "failed")
            await self.close(SERVER_ERROR, ClientError(
                "no_stream_worker", "no worker serves live streams now; retry later",
                type_="server_error",
            ))  # fmt: skip
            raise
        except ValueError as exc:
            raise ClientError("invalid_value", str(exc)[:200]) from None
        self.link = link
        self.pump = asyncio.create_task(self._pump(link))
        return link

    async def append(self, pcm: bytes) -> bool:
        try:
            await self._forward(self.resampler(pcm))
        except (StreamsFull, NoStreamWorker):
            return False
        limit = self.settings.streams.max_duration_s
        if self.samples / STREAM_RATE >= limit:
            await self.end("max_duration", f"the stream reached its limit of {limit:g} s")
            return False
        return True

    async def end(self, code: str, message: str) -> None:
        """A limit reached: told once (the worker may tell it too), the open turn finished and
        delivered, then closed normally."""
        self.ending.reason = code
        if code not in self.said:
            self.said.add(code)
            await self.error(ClientError(code, message))
        if self.link is not None:
            await self.link.finish()
            if self.pump is not None:
                await self.pump
        await self.close(NORMAL)

    async def _forward(self, pcm16k: bytes) -> None:
        if not pcm16k:
            return
        link = await self._open()
        self.last_audio = time.monotonic()
        self.samples += len(pcm16k) // 2
        await link.append(pcm16k)
        failed = self.recording.failed
        await self.recording.write(pcm16k)
        if self.recording.failed is not None and failed is None:  # said once; captions go on
            exc = self.recording.failed
            await self.error(ClientError(exc.code, exc.message, type_="server_error"))

    # --- the end -------------------------------------------------------------------------------

    async def stop(self) -> None:
        """``hushscribe.stop``: the open turn finished, the stream saved as its owner's job."""
        self.ending.reason = "stopped"
        if self.link is not None:
            with contextlib.suppress(StreamsFull, NoStreamWorker):
                await self._forward(self.resampler.flush())
            await self.link.finish()
            if self.pump is not None:
                await self.pump
        try:
            job = await self._save()
        except HushscribeError as exc:
            self.ending.outcome = "failed"
            await self.close(NORMAL, ClientError(exc.code, exc.message, type_="server_error"))
            return
        if job is None:
            await self.close(NORMAL, ClientError("empty_audio", "no audio came: nothing saved"))
            return
        self.ending.job_id = job["id"]
        try:
            await self.record()  # not recorded, not done: the job goes again
        except HushscribeError as exc:
            self.ending = Ending("stopped", "failed")
            path = await asyncio.to_thread(self.state.queue.delete, job["id"], None)
            if path:
                self.state.blobs.delete(path)
            await self.close(NORMAL, ClientError(exc.code, exc.message, type_="server_error"))
            return
        self.state.notify_work()
        await self.send({"type": "hushscribe.job.created", "job": job})
        await self.close(NORMAL)

    async def _save(self) -> dict[str, Any] | None:
        if self.recording.size == 0:
            return None
        blob = await self.recording.save()
        config, settings, queue = self.config, self.settings, self.state.queue
        name = f"live-{datetime.now(UTC):%Y%m%d-%H%M%S}.wav"
        options = make_options(
            task="transcribe", language=config.language, initial_prompt=config.prompt
        ).model_dump(mode="json", exclude_none=True)
        try:
            job = await asyncio.to_thread(
                queue.enqueue, owner=self.principal.user_id, task="transcribe",
                model=config.model, options=options, blob_path=str(blob.path),
                blob_sha256=blob.sha256, blob_bytes=blob.size, filename=name,
                max_attempts=settings.jobs.max_attempts, queue_max=settings.jobs.queue_max,
            )  # fmt: skip
        except BaseException:
            self.state.blobs.delete(blob.path)
            raise
        return {"id": job.id, "status": job.status, "url": f"/v1/jobs/{job.id}"}

    async def cleanup(self) -> None:
        """Whatever way the stream ended: the link dropped, unsaved audio deleted."""
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
        if self.link is not None:
            with contextlib.suppress(Exception):
                await self.link.close()
        if self.ending.job_id is None:
            self.recording.abort()

    async def record(self) -> None:
        """The stream's audit record: who, from where, how long, which model, what came of it."""
        ending = self.ending
        details = {
            "duration_s": round(self.samples / STREAM_RATE, 3),
            "wall_s": round(time.monotonic() - self.started, 3),
            "model": self.config.model, "language": self.config.language,
            "items": len(self.items), "job_id": ending.job_id, "reason": ending.reason,
        }  # fmt: skip
        try:
            await asyncio.to_thread(
                self.state.auditor.event, "live_stream", self.principal, self.address,
                self.session_id, ending.outcome, **details,
            )  # fmt: skip
        except HushscribeError:
            log.exception("could not record the end of stream %s", self.session_id)
            raise
        self.recorded = True


def _options(config: SessionConfig) -> dict[str, Any]:
    """The worker's ``StreamOptions`` as the plain dict :class:`StreamLink` carries."""
    turns = config.turn_detection
    return {
        "model": config.model, "language": config.language, "prompt": config.prompt,
        "task": "transcribe", "turn_detection": turns is not None,
        "vad_threshold": (turns or TurnDetection()).threshold,
        "silence_duration_ms": (turns or TurnDetection()).silence_duration_ms,
        "prefix_padding_ms": (turns or TurnDetection()).prefix_padding_ms,
    }  # fmt: skip
