"""``hushscribe listen``: live captions from a running server (``/v1/realtime``), for tests and
demos. Audio from a file (``--file``, decoded by :mod:`hushscribe.audio`, at real time with
``--realtime``) or from a local input device through PyAV (``--device``, ALSA by default); the
captions print as they come: confirmed words plain, unconfirmed ones dim, one line per turn.

A client only: it reads no settings and no data directory. The egress guard of the
``hushscribe`` command lets it reach the one server that ``--url`` names, nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from hushscribe.cli.common import console, err_console
from hushscribe.security import egress

DEFAULT_URL = "http://127.0.0.1:8000"
RATE = 16_000
"""What is sent: PCM16 mono at Whisper's own rate, which :mod:`hushscribe.audio` decodes to and
the server takes as it is (OpenAI's 24 kHz would be resampled there and back)."""
CHUNK_S = 0.1
"""Audio per ``input_audio_buffer.append`` at real time: captions can move every 100 ms."""
FAST_CHUNK_S = 1.0
"""Audio per append when a file is sent ahead of real time (32 KB, 43 KB as base64)."""
FAST_LEAD_S, FAST_SPEED = 10.0, 4.0
"""Without ``--realtime`` a file runs up to 10 s ahead of the clock, then at 4x real time: as
fast as a stream is sensibly fed (the server decodes a turn's buffer once a step; a buffer far
ahead of its decodes confirms nothing until its turn ends)."""
QUIET_S = 30.0
"""After the audio: how long to wait for the next event before giving up on the last turns."""
SYSTEM_ALSA = "/usr/share/alsa"
"""The system's ALSA configuration. PyAV's wheel carries its own alsa-lib, which looks for its
configuration where the wheel was built: pointed here (``ALSA_CONFIG_DIR``), it finds the
machine's devices."""
DEVICE_FORMATS = ("alsa", "pulse", "oss", "jack", "lavfi")
"""PyAV (FFmpeg) inputs ``--device`` may name as ``FORMAT:NAME``; ``lavfi`` makes audio from a
filter graph (``lavfi:sine=f=440``, ``lavfi:amovie=clip.flac``), for tests without a sound card."""
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
PARTIAL = "hushscribe.transcription.partial"


class ListenError(Exception):
    """Why listening failed, in words; exit code 1."""


def realtime_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` → ``ws(s)://…/v1/realtime?intent=transcription``."""
    parts = urlsplit(url.strip())
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.hostname:
        raise ListenError(f"--url {url!r}: give the server's address, like {DEFAULT_URL}")
    path = parts.path.rstrip("/") + "/v1/realtime"
    return urlunsplit((schemes[parts.scheme], parts.netloc, path, "intent=transcription", ""))


def allow_server(url: str) -> None:
    """The egress guard (when on) lets this process reach the server ``url`` names, too."""
    policy = egress.active()
    host = urlsplit(url).hostname
    if policy is None or policy.anything or not host:
        return
    networks, hosts = policy.networks, policy.hosts
    try:
        networks = (*networks, ipaddress.ip_network(host))
    except ValueError:
        hosts = hosts | {host.lower().rstrip(".")}
    egress.install(egress.EgressPolicy(networks, hosts, set(policy.resolved)))


def why_refused(url: str, key: str | None, status: int, body: bytes) -> str:
    """Words for a refused upgrade. The access check refuses a WebSocket without saying why
    (HTTP 403); the same key on ``GET /v1/models`` tells whether it is the key or the address."""
    told = _message(body)
    if status in (401, 403) and not told:
        if not key:
            return "the server wants an API key: pass --key KEY or set HUSHSCRIBE_API_KEY"
        parts = urlsplit(realtime_url(url))  # checked: ws or wss, so http or https here
        probe = urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc,
                            parts.path.removesuffix("/realtime") + "/models", "", ""))  # fmt: skip
        request = urllib.request.Request(probe, headers={"Authorization": f"Bearer {key}"})  # noqa: S310
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            told = _message(exc.read())
            if exc.code == 401:
                return f"the API key was refused (wrong, revoked or expired): {told}"
            if told:
                return f"the server refused: {told}"
        except OSError:
            pass
        return "the server refused the live stream (HTTP 403): the key may not transcribe"
    if status == 429:
        return f"the server is busy: {told or 'every live stream is taken'} (HTTP 429)"
    return f"the server refused the live stream (HTTP {status}){': ' + told if told else ''}"


def _message(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return f"{error['message']} ({error['code']})"
    except (ValueError, KeyError, TypeError):
        return ""


# --- captions ------------------------------------------------------------------------------------


@dataclass
class Captions:
    """Prints the session's events: a line per completed turn (stdout); on a terminal the open
    turns live below them, confirmed words plain and the partial tail dim. ``committed``: turns
    ended whose final text has not come yet."""

    live: Live | None = None
    items: dict[str, list[str]] = field(default_factory=dict)  # id → [confirmed, partial]
    committed: set[str] = field(default_factory=set)
    language: str | None = None
    errors: int = 0
    job: str | None = None
    ending: bool = False
    """The client sent its last commit: no open turn to end then is no error."""
    drained: bool = False
    """The server answered the ``clear`` after that commit: every event of the audio is out."""

    def line(self, words: str) -> None:
        if self.live:
            self.live.update(self.view())  # what it redraws below the line: without this turn
        if words:
            (self.live.console if self.live else console).print(
                words, markup=False, highlight=False, soft_wrap=True
            )

    def event(self, event: dict[str, Any]) -> None:
        kind, item_id = event.get("type"), str(event.get("item_id", ""))
        item = self.items.setdefault(item_id, ["", ""]) if item_id else ["", ""]
        if kind == DELTA:
            item[0] += str(event.get("delta", ""))
        elif kind == PARTIAL:
            item[1] = str(event.get("text", ""))
        elif kind == "input_audio_buffer.committed":
            self.committed.add(item_id)
        elif kind == COMPLETED:
            self.items.pop(item_id, None)
            self.committed.discard(item_id)
            self.line(str(event.get("transcript", "")).strip())
            language = event.get("language")
            if language and language != self.language:
                self.language = str(language)
                err_console.print(f"[dim]language: {escape(self.language)}[/]")
        elif kind == "input_audio_buffer.cleared" and self.ending:
            self.drained = True  # an open turn the commit could not end is gone with the clear
            self.items = {k: v for k, v in self.items.items() if k in self.committed}
        elif kind == "error":
            self.error(event.get("error") or {})
        elif kind == "hushscribe.job.created":
            self.job = str((event.get("job") or {}).get("id"))
            err_console.print(f"saved as job [bold]{escape(self.job)}[/]")
        if self.live:
            self.live.update(self.view())  # drawn 10 times a second: a delta and the partial
            # that follows it show together

    def error(self, error: dict[str, Any]) -> None:
        code = str(error.get("code"))
        if self.ending and code == "input_audio_buffer_commit_empty":
            return  # the audio ended between turns: nothing to commit
        self.errors += 1
        message = escape(str(error.get("message")))
        err_console.print(f"[red]error[/] [dim]({escape(code)})[/]: {message}", soft_wrap=True)

    def view(self) -> Text:
        text = Text()
        for confirmed, partial in self.items.values():
            text.append(confirmed)
            text.append(partial, style="dim")
            text.append("\n")
        return text

    def close(self) -> None:
        """Turns that never completed: their confirmed words at least."""
        for confirmed, _ in self.items.values():
            self.line(confirmed.strip())
        self.items.clear()
        if self.live:
            self.live.update(Text(), refresh=True)


# --- audio sources -------------------------------------------------------------------------------


def chunked(pieces: Iterator[bytes], chunk_s: float) -> Iterator[bytes]:
    """PCM16 in pieces of any length → pieces of ``chunk_s`` (the last one shorter)."""
    size, pending = int(chunk_s * RATE) * 2, b""
    for piece in pieces:
        pending += piece
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


def file_pcm(path: Path) -> Iterator[bytes]:
    """The file as :mod:`hushscribe.audio` decodes it (16 kHz mono, the server's own limits);
    opened and checked now, so a file that is no audio is said before connecting."""
    import numpy as np

    from hushscribe import audio
    from hushscribe.settings import AudioLimits

    reader = audio.AudioReader(path, AudioLimits())

    def read() -> Iterator[bytes]:
        with reader:
            for block in reader.blocks(RATE):
                yield np.clip(block * 32768.0, -32768, 32767).astype("<i2").tobytes()

    return read()


def device_pcm(device: str, stop: threading.Event) -> Iterator[bytes]:
    """PCM16 16 kHz mono from an input device (``[FORMAT:]NAME``, ALSA when no format), opened
    now (a wrong name is said before connecting), read until ``stop``."""
    import av

    fmt, known, name = device.partition(":")
    if not known or fmt not in DEVICE_FORMATS:  # "default", "hw:1,0": ALSA's own names
        fmt, name = "alsa", device
    if fmt not in av.formats_available:
        raise ListenError(f"this PyAV build has no {fmt!r} input; try alsa:default")
    if fmt == "alsa" and Path(SYSTEM_ALSA, "alsa.conf").is_file():
        os.environ.setdefault("ALSA_CONFIG_DIR", SYSTEM_ALSA)
    try:
        container = av.open(name or "default", format=fmt)
    except (av.FFmpegError, OSError) as exc:
        raise ListenError(f"cannot open the input device {device!r} ({fmt}): {exc}") from None
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)

    def read() -> Iterator[bytes]:
        with container:
            for frame in container.decode(audio=0):
                yield b"".join(
                    o.to_ndarray().astype("<i2").tobytes() for o in resampler.resample(frame)
                )
                if stop.is_set():
                    return

    return read()


async def paced(chunks: Iterator[bytes], realtime: bool, fast: bool) -> AsyncIterator[bytes]:
    """The blocks of a (blocking) iterator, read in a thread; at real time with ``realtime``,
    else (``fast``) up to :data:`FAST_LEAD_S` ahead and then :data:`FAST_SPEED` times it."""
    started = time.monotonic()
    sent_s = 0.0
    while True:
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            return
        if realtime or fast:
            speed = 1.0 if realtime else FAST_SPEED
            lead = 0.0 if realtime else FAST_LEAD_S
            wait = (sent_s - lead) / speed - (time.monotonic() - started)
            if wait > 0:
                await asyncio.sleep(wait)
        sent_s += len(chunk) / 2 / RATE
        yield chunk


# --- the session ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    url: str
    key: str | None
    model: str | None
    language: str | None
    save: bool


def session_update(request: Request) -> dict[str, Any]:
    transcription = {
        k: v for k, v in (("model", request.model), ("language", request.language)) if v
    }
    audio_input = {
        "format": {"type": "audio/pcm", "rate": RATE},
        "transcription": transcription,
        "turn_detection": {"type": "server_vad"},
    }
    return {"type": "session.update",
            "session": {"type": "transcription", "audio": {"input": audio_input}}}  # fmt: skip


async def listen(request: Request, source: AsyncIterator[bytes], captions: Captions) -> int:
    """Stream ``source`` to the server and print what comes back; the exit code."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    headers = {"Authorization": f"Bearer {request.key}"} if request.key else {}
    try:
        ws = await connect(
            realtime_url(request.url), additional_headers=headers, proxy=None,
            compression=None, max_size=4 << 20, open_timeout=20,
        )  # fmt: skip
    except InvalidStatus as exc:
        status, body = exc.response.status_code, bytes(exc.response.body or b"")
        reason = await asyncio.to_thread(why_refused, request.url, request.key, status, body)
        raise ListenError(reason) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise ListenError(f"cannot reach {request.url}: {exc or type(exc).__name__}") from None
    async with ws:
        await ws.send(json.dumps(session_update(request)))
        try:
            while True:  # session.created, then the answer to the update
                event = json.loads(await ws.recv())
                if event.get("type") == "error":
                    captions.event(event)
                    raise ListenError("the server did not accept the session (see above)")
                if event.get("type") == "session.updated":
                    break
        except ConnectionClosed as exc:
            raise ListenError(f"the server closed the stream: {exc}") from None
        transcription = event["session"]["audio"]["input"]["transcription"]
        err_console.print(
            f"[dim]live captions from {escape(request.url)} · model "
            f"{escape(str(transcription.get('model')))} · language "
            f"{escape(str(transcription.get('language') or 'detected'))}[/]"
        )
        sender = asyncio.create_task(_send(ws, source, request, captions))
        try:
            closed = await _receive(ws, captions, sender)
        finally:
            sender.cancel()
    captions.close()
    return 1 if closed not in (None, 1000) or captions.errors else 0


async def _send(
    ws: Any, source: AsyncIterator[bytes], request: Request, captions: Captions
) -> None:
    async for chunk in source:
        audio = base64.b64encode(chunk).decode("ascii")
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
    captions.ending = True
    if request.save:  # the last turn, the job, then the server closes
        await ws.send(json.dumps({"type": "hushscribe.stop"}))
        return
    # The commit ends the open turn; the clear after it is answered once the server has handled
    # all that came before: from then on, the committed turns are all there is to wait for.
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))


async def _receive(ws: Any, captions: Captions, sender: asyncio.Task[None]) -> int | None:
    """Events until the server closes (after ``hushscribe.stop``), or until every turn has
    completed after the last commit; the close code (None: closed by us)."""
    from websockets.exceptions import ConnectionClosed

    heard = time.monotonic()
    while True:
        if sender.done() and sender.exception() is not None:
            raise sender.exception()  # type: ignore[misc]
        if captions.drained and not captions.committed:
            await ws.close()
            return None
        try:
            captions.event(json.loads(await asyncio.wait_for(ws.recv(), timeout=1.0)))
            heard = time.monotonic()
        except TimeoutError:
            if sender.done() and time.monotonic() - heard > QUIET_S:
                err_console.print("[yellow]no answer for the last turns; stopping[/]")
                await ws.close()
                return None
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            if code != 1000:
                err_console.print(f"[red]the server closed the stream[/] ({escape(str(exc))})")
            return code


# --- the command ---------------------------------------------------------------------------------


# fmt: off
def listen_cmd(
    url: Annotated[str, typer.Option(help="The server.")] = DEFAULT_URL,
    key: Annotated[str | None, typer.Option(
        help="API key (or HUSHSCRIBE_API_KEY).", envvar="HUSHSCRIBE_API_KEY", show_default=False,
    )] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Model; the server's default if left out.")] = None,
    language: Annotated[str | None, typer.Option(
        "--language", "-l", help="Spoken language; detected if left out.")] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", help="Play this audio or video file instead of a microphone.", exists=True,
        dir_okay=False, show_default=False,
    )] = None,
    realtime: Annotated[bool, typer.Option(
        help="Send at real time, as a microphone would (else faster).")] = False,
    device: Annotated[str, typer.Option(
        help="Input device: NAME (ALSA) or FORMAT:NAME, FORMAT one of "
        f"{', '.join(DEVICE_FORMATS)}.",
    )] = "default",
    save: Annotated[bool, typer.Option(
        help="Save the whole stream as a job of yours at the end.")] = False,
) -> None:
    # fmt: on
    """Print live captions of a microphone (Ctrl+C ends) or a file, from a running server."""
    request = Request(url, key, model, language, save)
    captions = Captions()
    try:
        allow_server(url)
        realtime_url(url)
        code = asyncio.run(_run(request, captions, file, realtime, device))
    except ListenError as exc:
        err_console.print(f"[red]error[/]: {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


async def _run(
    request: Request, captions: Captions, file: Path | None, realtime: bool, device: str
) -> int:
    stop = threading.Event()
    if file is not None:
        chunks = chunked(file_pcm(file), CHUNK_S if realtime else FAST_CHUNK_S)
        source = paced(chunks, realtime, fast=True)
    else:
        source = paced(chunked(device_pcm(device, stop), CHUNK_S), realtime, fast=False)
        loop = asyncio.get_running_loop()

        def interrupted() -> None:  # the first Ctrl+C: the last turn, then out; a second: out
            loop.remove_signal_handler(signal.SIGINT)
            stop.set()

        loop.add_signal_handler(signal.SIGINT, interrupted)
        err_console.print("[dim]listening; Ctrl+C ends[/]")
    if not console.is_terminal:  # piped: the final lines only
        return await listen(request, source, captions)
    with Live(console=console, transient=True, refresh_per_second=10) as live:
        captions.live = live
        return await listen(request, source, captions)
