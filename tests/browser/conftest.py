"""The page in a real Chromium (Python Playwright, the Debian browser) against a real server.

One server per module (both demo models, audio kept for segment playback, a 2 MB upload cap),
the users ursula and victor and the auditor audrey beside the first admin, and one browser whose
microphone is a fake device reading a real English clip. Every page the tests open is watched:
each request must go to the server's own origin, and no console error, uncaught page error or
CSP violation may happen; the ``web`` fixture checks that when the test ends.
"""

from __future__ import annotations

import json
import re
import socket
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.service import Service, service_data_dir
from tests.speech import Clip, clip

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DESKTOP = {"width": 1440, "height": 900}
SMALL = {"width": 360, "height": 740}

MAX_BYTES = 2_000_000
"""The server's upload cap here: above jfk.flac (1.15 MB), below ``big_file``."""
PASSWORDS = {
    "ursula": "ursula's long password 2",
    "victor": "victor's long password 3",
    "audrey": "audrey's long password 4",
}
ROLES = {"audrey": "auditor"}
"""Users with another role than ``user``."""
MIC_CLIP = "61-70968-0000.flac"
"""What the fake microphone says (4.9 s): "he began a confused complaint against the wizard who
had vanished behind the curtain on the left"."""
MIC_PAD_S = (0.5, 1.0)
"""Silence before and after the clip in the fake device's file (it loops the file)."""

# Reports CSP violations twice over: to the test at once (a binding, which survives navigation)
# and into window.__csp (read when the test ends). An init script runs outside the page's CSP.
CSP_LISTENER = """
window.__csp = [];
window.addEventListener('securitypolicyviolation', (e) => {
  const v = {directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile,
             line: e.lineNumber, sample: e.sample, page: location.href};
  window.__csp.push(v);
  try { window.__hsReportCsp(v); } catch (_) { /* the binding is not there yet */ }
}, true);
"""


@dataclass
class Watch:
    """What the pages of one test did, checked when it ends."""

    origin: str
    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)

    def on_request(self, request: Any) -> None:
        url = request.url
        self.requests.append(f"{request.method} {url}")
        parts = urlsplit(url)
        if parts.scheme == "blob":  # a page-made object (a download): the origin inside it
            parts = urlsplit(url[len("blob:") :])
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(url)

    def on_response(self, response: Any) -> None:
        if response.status >= 500:
            self.server_errors.append(f"{response.status} {response.request.method} {response.url}")

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = message.text
        where = message.location.get("url", "") if message.location else ""
        # Chromium logs every 4xx answer to fetch() as "Failed to load resource: …" — the page
        # meets 401 (not signed in, session ended), 413 (too large) on purpose, and the tests
        # assert on what it shows for them; they are kept apart, not counted as page errors.
        if text.startswith("Failed to load resource: the server responded with a status of 4"):
            self.http_errors.append(f"{text} ({where})")
            return
        self.console_errors.append(f"{text} ({where})")

    def on_csp(self, violation: dict[str, Any]) -> None:
        entry = json.dumps(violation, sort_keys=True)
        if entry not in self.csp:
            self.csp.append(entry)

    def problems(self) -> list[str]:
        out = []
        for name in ("foreign", "console_errors", "page_errors", "csp", "server_errors"):
            found = getattr(self, name)
            if found:
                out.append(f"{name}: {json.dumps(found, indent=1, ensure_ascii=False)}")
        return out


class Web:
    """Contexts and pages for one test, all watched; screenshots at both sizes."""

    def __init__(self, browser: Browser, svc: Service) -> None:
        self.browser = browser
        self.svc = svc
        self.watch = Watch(origin=svc.url)
        self.contexts: list[BrowserContext] = []

    def page(self, locale: str = "en-US") -> Page:
        ctx = self.browser.new_context(
            base_url=self.svc.url,
            locale=locale,
            viewport=DESKTOP,
            accept_downloads=True,
            permissions=["microphone"],
        )
        ctx.set_default_timeout(20_000)
        ctx.expose_function("__hsReportCsp", self.watch.on_csp)
        ctx.add_init_script(CSP_LISTENER)
        ctx.on("request", self.watch.on_request)
        ctx.on("response", self.watch.on_response)
        ctx.on("console", self.watch.on_console)
        ctx.on("weberror", lambda e: self.watch.page_errors.append(str(e.error)))
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.on("dialog", lambda d: d.accept())  # confirm("Revoke …?") and the like: yes
        return page

    def shoot(self, page: Page, name: str) -> None:
        """``<name>-desktop.png`` (1440x900) and ``<name>-360.png`` (360x740, whole page)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        size = page.viewport_size or DESKTOP
        page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"))
        page.set_viewport_size(SMALL)
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{name}-360.png"), full_page=True)
        finally:
            page.set_viewport_size(size)

    def close(self) -> None:
        for ctx in self.contexts:
            for page in ctx.pages:
                try:
                    for v in page.evaluate("() => window.__csp || []"):
                        self.watch.on_csp(v)
                except Exception:
                    pass
            ctx.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Service]:
    """A real server for the browser: audio kept, a 2 MB cap, users ursula and victor, and
    audrey, an auditor."""
    root = service_data_dir(tmp_path_factory.mktemp("browser-service"), data_dir / "models")
    env = {
        "HUSHSCRIBE_JOBS__KEEP_AUDIO": "true",
        "HUSHSCRIBE_AUDIO__MAX_BYTES": str(MAX_BYTES),
    }
    service = Service(root, env=env).start()
    try:
        with service.admin() as admin:
            for name, password in PASSWORDS.items():
                role = ROLES.get(name, "user")
                r = admin.post(
                    "/v1/users", json={"username": name, "password": password, "role": role}
                )
                assert r.status_code == 201, r.text
        yield service
    finally:
        service.stop()


def to_wav_48k(src: Path, dst: Path, pad_s: tuple[float, float] = (0.0, 0.0)) -> Path:
    """``src`` as 16-bit PCM WAV, 48 kHz mono (what Chromium's fake capture device reads)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
    chunks = []
    with av.open(str(src)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    before, after = (np.zeros(int(48_000 * s), dtype="<i2") for s in pad_s)
    pcm = np.concatenate([before, *chunks, after]).astype("<i2")
    with wave.open(str(dst), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48_000)
        out.writeframes(pcm.tobytes())
    return dst


@pytest.fixture(scope="module")
def mic_clip(speech_dir: Path) -> Clip:
    return clip(MIC_CLIP)


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory, mic_clip: Clip) -> Path:
    out = tmp_path_factory.mktemp("mic") / "mic.wav"
    return to_wav_48k(mic_clip.path, out, MIC_PAD_S)


@pytest.fixture(scope="module")
def jfk(speech_dir: Path) -> Path:
    return clip("jfk.flac").path


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real WAV (quiet noise, 16 kHz mono) of 3 MB: over the cap with room to spare."""
    path = tmp_path_factory.mktemp("big") / "big-recording.wav"
    samples = (3_000_000 - 44) // 2
    noise = np.random.default_rng(7).normal(0, 300, samples).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(noise.tobytes())
    assert path.stat().st_size > MAX_BYTES + 64 * 1024
    return path


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, mic_wav: Path) -> Iterator[Browser]:
    flags = [
        *CHROMIUM_FLAGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav}",
    ]
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
    yield b
    b.close()


@pytest.fixture
def web(browser: Browser, svc: Service) -> Iterator[Web]:
    """Pages for this test; when it ends: only the server's origin was asked, and no console
    error, page error, CSP violation or 5xx answer happened."""
    w = Web(browser, svc)
    yield w
    w.close()
    problems = w.watch.problems()
    assert not problems, "\n".join(problems) + "\nrequests:\n" + "\n".join(w.watch.requests)
    assert w.watch.requests, "no request was watched"


def hostname_words() -> set[str]:
    """Words of this machine's name (a worker's id may show it on the status panel)."""
    return {w.lower() for w in re.findall(r"[A-Za-z]+", socket.gethostname())}
