"""Live captions on the page, in a real Chromium against a real server: the fake microphone (a
real English clip, looped) → the AudioWorklet → PCM16 at 24 kHz over /v1/realtime with the
session cookie → grey partial words, then black confirmed ones → Stop → the stream saved as a job
whose transcript holds the same words. The ``web`` fixture fails a test whose pages asked
anything but the server, logged a console error, threw, or broke the CSP."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocket, expect

from tests.browser.conftest import Web
from tests.browser.test_page import (
    JOB_MS,
    MIC_WORDS,
    ChineseCheck,
    poll,
    said,
    sign_in,
    signed_in,
)
from tests.service import Service
from tests.speech import Clip, normalise

pytestmark = pytest.mark.slow

CAPTIONS_S = 90
"""Longest wait for confirmed words (two loops of the clip are ~13 s; the model shares 2 cores)."""

# Every change of a paragraph's words, as the user saw it: its confirmed and partial text and
# the partial's computed style. Installed from the test (an evaluated function, not an inline
# script: the page's CSP stays as it is).
WATCH_CAPTIONS = """
() => {
  window.__liveSeen = [];
  const box = document.querySelector('#live-captions');
  let last = '';
  const snap = () => {
    for (const p of box.querySelectorAll('.live-item')) {
      const confirmed = p.querySelector('.live-confirmed');
      const partial = p.querySelector('.live-partial');
      const key = [p.dataset.itemId, confirmed.textContent, partial.textContent].join('|');
      if (!partial.textContent.trim() || key === last) continue;
      last = key;
      const style = getComputedStyle(partial);
      window.__liveSeen.push({
        item: p.dataset.itemId, state: p.dataset.state,
        confirmed: confirmed.textContent, partial: partial.textContent,
        partialColor: style.color, partialStyle: style.fontStyle,
        confirmedColor: getComputedStyle(confirmed).color,
      });
    }
  };
  new MutationObserver(snap).observe(box, {subtree: true, childList: true, characterData: true});
}
"""
CONFIRMED_TEXT = """
() => Array.from(document.querySelectorAll('#live-captions .live-item'), (p) => ({
  item: p.dataset.itemId, state: p.dataset.state,
  confirmed: p.querySelector('.live-confirmed').textContent,
}))
"""


def go_live(page: Page) -> None:
    page.locator('nav a[data-nav="live"]').click()
    expect(page.locator("#live-start")).to_be_enabled()
    # The model menu is filled from /v1/models, the default first.
    expect(page.locator("#live-model option").first).to_have_text(re.compile(r"default|默认"))


def words(text: str) -> set[str]:
    return set(normalise(text, "en").split())


def test_live_captions_grey_then_black_then_saved_as_a_job(
    web: Web, svc: Service, mic_clip: Clip
) -> None:
    page = signed_in(web, "ursula")
    go_live(page)
    expect(page.locator("#live-empty")).to_be_visible()
    page.evaluate(WATCH_CAPTIONS)

    sent: list[str] = []  # the frames the page sends, from the first (a handler set in time)

    def watch(socket: WebSocket) -> None:
        if "/v1/realtime" in socket.url:
            socket.on("framesent", lambda payload: sent.append(str(payload)[:200]))

    page.on("websocket", watch)
    page.locator("#live-start").click()
    expect(page.locator("#live-stop")).to_be_enabled(timeout=30_000)
    level = poll(lambda: page.locator("#live-level").evaluate("m => m.value"),
                 lambda v: v > 0, 2 * mic_clip.duration)  # fmt: skip
    assert level > 0, "the level meter never moved while the fake microphone spoke"

    # Confirmed (black) words of the clip appear while it plays.
    def confirmed() -> str:
        return " ".join(p["confirmed"] for p in page.evaluate(CONFIRMED_TEXT))

    text = poll(lambda: normalise(confirmed(), "en"),
                lambda t: sum(w in t for w in MIC_WORDS) >= 3, CAPTIONS_S)  # fmt: skip
    heard = [w for w in MIC_WORDS if w in text]
    assert len(heard) >= 3, (heard, text, page.locator("#live-error").all_inner_texts())
    expect(page.locator(".live-item[data-state='done']").first).to_be_visible(timeout=30_000)
    expect(page.locator("#live-detected-language")).to_have_text("English")
    web.shoot(page, "live")

    # Scrolled up to read back, the captions stay put until "follow" is asked for again. (The
    # box is made small through the CSSOM, which the CSP allows, so that it scrolls at all.)
    box = page.locator("#live-captions")
    box.evaluate("b => { b.style.minHeight = '0'; b.style.maxHeight = '3rem'; }")
    assert box.evaluate("b => b.scrollHeight > b.clientHeight")
    box.evaluate("b => { b.scrollTop = b.scrollHeight; }")  # where following keeps it
    page.wait_for_timeout(200)
    follow = page.locator("#live-follow")
    for _ in range(3):  # (a caption drawn in the same frame may still follow; then again)
        box.evaluate("b => { b.scrollTop = 0; }")  # the reader goes back
        if poll(follow.is_visible, bool, 2):
            break
    expect(follow).to_be_visible()
    page.wait_for_timeout(1500)  # captions keep coming meanwhile
    assert box.evaluate("b => b.scrollTop") == 0
    follow.click()
    expect(follow).to_be_hidden()
    assert box.evaluate("b => b.scrollHeight - b.scrollTop - b.clientHeight") < 32
    box.evaluate("b => { b.style.minHeight = ''; b.style.maxHeight = ''; }")

    # A word was grey (and in italics) before it turned black: seen as a partial, and later in
    # the confirmed text of the same paragraph.
    seen: list[dict[str, Any]] = page.evaluate("() => window.__liveSeen")
    assert seen, "no partial (grey) text was ever shown"
    final = {p["item"]: words(p["confirmed"]) for p in page.evaluate(CONFIRMED_TEXT)}
    promoted = [
        s for s in seen
        if (words(s["partial"]) - words(s["confirmed"])) & final.get(s["item"], set())
    ]  # fmt: skip
    assert promoted, (seen, final)
    shown = promoted[0]
    assert shown["partialColor"] != shown["confirmedColor"], shown
    assert shown["partialColor"] == "rgb(95, 107, 122)", shown  # the page's grey
    assert shown["partialStyle"] == "italic", shown
    assert all(s["state"] == "open" for s in seen), seen  # partials only while a turn is open

    # What went over the wire: the session first, then base64 PCM appends, 24 kHz.
    assert sent and '"session.update"' in sent[0] and '"rate":24000' in sent[0], sent[:1]
    assert sum('"input_audio_buffer.append"' in f for f in sent) >= 10

    # Stop → the whole stream saved as a job → its transcript with the same words.
    page.locator("#live-stop").click()
    saved = page.locator("#live-saved")
    expect(saved).to_be_visible(timeout=120_000)
    assert any('"hushscribe.stop"' in f for f in sent)
    link = page.locator("#live-job-link")
    job_id = link.get_attribute("data-job-id")
    assert job_id and link.get_attribute("href") == f"#/jobs/{job_id}"
    expect(saved).to_have_attribute("data-status", "done", timeout=JOB_MS)
    expect(page.locator("#live-start")).to_be_enabled()
    expect(page.locator("#live-stop")).to_be_disabled()
    link.click()
    transcript = page.locator("#transcript")
    expect(transcript).to_have_attribute("data-job-id", job_id)
    expect(transcript.locator(".segment").first).to_be_visible()
    text = said(transcript)
    assert sum(w in text for w in MIC_WORDS) >= 3, text
    expect(page.locator('button[data-download="txt"]')).to_be_visible()
    # My jobs lists it too, with the name the server gave the stream.
    page.locator('nav a[data-nav="jobs"]').click()
    row = page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "done")
    expect(row.locator(".job-name")).to_contain_text("live-")


def test_live_view_in_chinese(web: Web, svc: Service) -> None:
    page = web.page(locale="zh-CN")
    page.goto("/")
    sign_in(page, "ursula")
    expect(page.locator('nav a[data-nav="live"]')).to_have_text("实时字幕")
    go_live(page)
    expect(page.locator("#live-start")).to_have_text("开始字幕")
    check = ChineseCheck(svc)
    check.check(page, "live")
    check.assert_none()
