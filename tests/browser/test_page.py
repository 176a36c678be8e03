"""The page as a user meets it, in a real Chromium against a real server (docs/ui-contract.md).

Sign-in, an upload transcribed and read back (SRT download, a segment played), the microphone
(a fake device reading real speech), a file over the cap, another user's view, an admin's API key
used with the OpenAI SDK until revoked, the whole page in Chinese, and a session that ends under
the page. The ``web`` fixture fails a test whose pages asked anything but the server, logged a
console error, threw, or broke the CSP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
import srt
from playwright.sync_api import Locator, Page, Response, expect

from hushscribe.languages import LANGUAGES
from tests.browser.conftest import PASSWORDS, Web, hostname_words
from tests.service import ADMIN_PASSWORD, Service
from tests.speech import Clip, normalise

pytestmark = pytest.mark.slow

JOB_MS = 180_000
"""Longest wait for one job to end (a few seconds of work, on 2 shared cores)."""
SHARED: dict[str, str] = {}
"""ursula's jfk.flac job, once done: the later tests read it instead of transcribing again."""
MIC_WORDS = ("complaint", "wizard", "vanished", "curtain")

expect.set_options(timeout=20_000)


# ---- helpers ------------------------------------------------------------------------------------


def password(user: str) -> str:
    return ADMIN_PASSWORD if user == "admin" else PASSWORDS[user]


def sign_in(page: Page, user: str) -> None:
    """Fill in the sign-in form (already shown) and wait until the page says who is in."""
    form = page.locator("#login-form")
    expect(form).to_be_visible()
    page.locator("#login-username").fill(user)
    page.locator("#login-password").fill(password(user))
    page.locator("#login-submit").click()
    expect(page.locator("#whoami")).to_contain_text(user)
    expect(form).to_be_hidden()


def signed_in(web: Web, user: str) -> Page:
    page = web.page()
    page.goto("/")
    sign_in(page, user)
    return page


PLACES = {
    "transcribe": "#drop-zone",
    "jobs": "#jobs-table:visible, #jobs-empty:visible",
    "admin": "#users-table",
    "audit": "#audit-filters",
}


def go(page: Page, place: str) -> None:
    page.locator(f'nav a[data-nav="{place}"]').click()
    expect(page.locator(PLACES[place]).first).to_be_visible()


def open_options(page: Page) -> None:
    details = page.locator("#options")
    if not details.evaluate("d => d.open"):
        details.locator("summary").first.click()
    expect(page.locator("#opt-model")).to_be_visible()
    # Each model is offered with its size on disk (MB), never a size it could not read.
    labels = page.locator("#opt-model option").all_inner_texts()
    sized = [label for label in labels if "base" in label or "tiny" in label]
    assert sized and all(re.search(r"\d+\s*MB", label) for label in sized), labels


def is_post_jobs(r: Response) -> bool:
    return r.request.method == "POST" and urlsplit(r.url).path == "/v1/jobs"


def submit(page: Page, button: str) -> str:
    """Click ``button``, which posts a job; the new job's id."""
    with page.expect_response(is_post_jobs, timeout=60_000) as info:
        page.locator(button).click()
    response = info.value
    assert response.status == 202, response.text()
    return str(response.json()["id"])


def job_row(page: Page, job_id: str) -> Locator:
    return page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')


def wait_done(page: Page, job_id: str) -> Locator:
    """The job's row in the jobs place, once the page shows it ended; it must be ``done``."""
    go(page, "jobs")
    row = job_row(page, job_id)
    expect(row).to_have_attribute("data-status", re.compile("^(done|failed|cancelled)$"),
                                  timeout=JOB_MS)  # fmt: skip
    errors = row.locator(".job-error")
    why = errors.first.inner_text() if errors.count() else ""
    assert row.get_attribute("data-status") == "done", why
    return row


def open_transcript(page: Page, row: Locator, job_id: str) -> Locator:
    row.locator("button.job-open").click()
    transcript = page.locator("#transcript")
    expect(transcript).to_have_attribute("data-job-id", job_id)
    expect(transcript.locator(".segment").first).to_be_visible()
    return transcript


def said(transcript: Locator) -> str:
    """The transcript's words (its segments' text, not the labels around them), normalised."""
    return normalise(" ".join(transcript.locator(".segment-text").all_inner_texts()), "en")


def play_segment(page: Page, transcript: Locator, index: int, job_id: str) -> None:
    """Click segment ``index`` (-1: the last); the kept audio must play on from its start."""
    segments = transcript.locator(".segment")
    segment = segments.nth(segments.count() - 1 if index < 0 else index)
    start = float(segment.get_attribute("data-start") or "nan")
    segment.locator(".segment-text").click()
    state = poll(
        lambda: page.evaluate(
            "() => { const a = document.querySelector('#transcript-audio') ||"
            " document.querySelector('audio');"
            " return a ? {paused: a.paused, t: a.currentTime, src: a.currentSrc} : null; }"
        ),
        lambda s: s is not None and not s["paused"] and s["t"] > start + 0.2,
        15,
    )
    assert state is not None, "no <audio> element after clicking a segment"
    assert not state["paused"] and state["t"] > start + 0.2, (state, start)  # it plays on
    assert state["t"] < start + 15, (state, start)  # from the segment, not from elsewhere
    assert urlsplit(state["src"]).path == f"/v1/jobs/{job_id}/audio", state


def poll(read: Callable[[], Any], ok: Callable[[Any], bool], timeout_s: float) -> Any:
    """Read until ``ok`` (no page-side polling: Playwright's waits for a function evaluate a
    string, which this page's CSP refuses, and a refusal would count as a violation)."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


def api_jobs(svc: Service, user: str) -> list[dict[str, Any]]:
    with svc.signed_in(user, password(user)) as client:
        r = client.get("/v1/jobs", params={"limit": 100})
        r.raise_for_status()
        return list(r.json()["data"])


def choose(field: Locator, value: str) -> None:
    """A ``<select>`` or a text field: the contract names the field, not its kind."""
    if field.evaluate("e => e.tagName") == "SELECT":
        field.select_option(value)
    else:
        field.fill(value)


@pytest.fixture(scope="module")
def jfk_job(svc: Service, jfk: Path) -> str:
    """ursula's finished jfk.flac job: the one the upload test made, or one made here."""
    if "jfk" in SHARED:
        return SHARED["jfk"]
    with svc.signed_in("ursula", PASSWORDS["ursula"]) as client, jfk.open("rb") as fh:
        r = client.post("/v1/jobs", files={"file": ("jfk.flac", fh, "audio/flac")},
                        data={"model": "base"})  # fmt: skip
        assert r.status_code == 202, r.text
        job_id = str(r.json()["id"])
        job = poll(
            lambda: client.get(f"/v1/jobs/{job_id}").json(),
            lambda j: j["status"] in ("done", "failed", "cancelled"),
            JOB_MS / 1000,
        )
        assert job["status"] == "done", job
    SHARED["jfk"] = job_id
    return job_id


# ---- no English left in Chinese -----------------------------------------------------------------

COLLECT_TEXT = """
() => {
  const seen = (el) => el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
  const where = (el) => {
    const own = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
      (el.classList.length ? '.' + [...el.classList].join('.') : '');
    const holder = el.parentElement && el.parentElement.closest('[id]');
    return holder ? '#' + holder.id + ' ' + own : own;
  };
  const out = [{text: document.title, where: 'title', tag: 'title', skip: false}];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const text = n.nodeValue.trim();
    const el = n.parentElement;
    if (!text || !el || el.closest('script, style, template, noscript')) continue;
    const shown = el.tagName === 'OPTION' ? (el.closest('select') && seen(el.closest('select')))
                                          : seen(el);
    if (!shown) continue;
    // The transcript itself is what was said (English here), not the page's words; nor are an
    // audit record's own values (a reason code, a path, a file name) as the log holds them.
    const skip = !!el.closest('#transcript .segment-text, #audit-table .audit-value');
    out.push({text, where: where(el), tag: el.tagName.toLowerCase(), skip});
  }
  for (const el of document.querySelectorAll(
      '[placeholder], [title], [aria-label], input[type=submit], input[type=button]')) {
    if (!seen(el)) continue;
    for (const a of ['placeholder', 'title', 'aria-label', 'value']) {
      if (a === 'value' && !['submit', 'button'].includes(el.type)) continue;
      const v = el.getAttribute(a);
      if (v && v.trim()) out.push({text: v.trim(), where: where(el) + '@' + a,
                                   tag: el.tagName.toLowerCase(), skip: false});
    }
  }
  return out;
}
"""

ALLOWED_WORDS = {
    "hushscribe",  # the product's name
    "srt", "vtt", "json", "txt", "wav", "flac", "ogg", "webm", "opus",  # format names
    "api", "cpu", "gpu", "ldap",  # acronyms Chinese interfaces write as they are
    "kib", "mib", "gib", "utc",  # units
    "ctrl", "mac",  # a key cap and a platform ("按住 Ctrl（Mac 上为 ⌘）")
}  # fmt: skip
"""Latin words a Chinese page may show; user names, model names and language codes are added per
run, and languages' own names are allowed in the language choice (``native_option``)."""
SAME_IN_ENGLISH = {"en", "tl", "af", "mg", "ha", "oc", "nn"}
"""Languages whose own name is spelled as English spells it (English, Tagalog, Afrikaans, …)."""
LATIN = "A-Za-z\u00c0-\u024f\u1e00-\u1eff\u02b0-\u02ff\u0300-\u036f"
"""Latin letters with their accents and modifier letters (Français, ʻŌlelo Hawaiʻi)."""
RUN = re.compile(f"[{LATIN}0-9_.\\-:@/+'’…]+")
WORD = re.compile(f"[{LATIN}]+")
FILE_NAME = re.compile(r".+\.(flac|wav|webm|ogg|oga|opus|mp3|m4a|mp4|mkv|srt|vtt|json|txt)$", re.I)
E_MAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]+$")
ID_PREFIXES = ("hs_", "key_", "job_")
LANGUAGE_OPTION = re.compile(r"(.+?)\s*\(([a-z]{2,3})\)")


def native_option(item: dict[str, Any]) -> bool:
    """A language choice written as its own name and code, "Français (fr)" — not as its English
    name ("French (fr)"), which a Chinese page would have to translate, unless that is its own
    name too ("Tagalog (tl)")."""
    m = LANGUAGE_OPTION.fullmatch(item["text"].strip())
    if item["tag"] != "option" or m is None or m[2] not in LANGUAGES:
        return False
    return m[1].strip().lower() != LANGUAGES[m[2]] or m[2] in SAME_IN_ENGLISH


def english_left(items: list[dict[str, Any]], exact: set[str], words: set[str]) -> list[str]:
    """Latin words of 3+ letters left in the page's texts, each with where it was."""
    found = []
    for item in items:
        text = item["text"]
        if item["skip"] or native_option(item):
            continue
        if item["tag"] != "option" and text.strip().lower() in exact:
            continue
        for run in RUN.findall(text):
            bare = run.strip(".:-'’…/")
            if (
                re.search(r"\d", run)  # ids, sizes, times, versions
                or bare.lower() in exact
                or bare.lower().startswith(ID_PREFIXES)
                or FILE_NAME.match(bare)
                or E_MAIL.match(bare)
            ):
                continue
            for word in WORD.findall(bare):
                if len(word) >= 3 and word.lower() not in words:
                    found.append(f"{item['where']}: {word!r} in {text!r}")
    return found


class ChineseCheck:
    """Collects what is left in English on each place; fails once, listing all of them."""

    def __init__(self, svc: Service) -> None:
        self.words = set(ALLOWED_WORDS) | hostname_words() | {"ursula", "victor", "audrey"}
        self.words |= set(LANGUAGES)  # codes beside names: "粵語 (yue)"
        self.words |= {LANGUAGES[code] for code in SAME_IN_ENGLISH}  # "语言：English"
        with svc.admin() as admin:
            models = [m["id"].lower() for m in admin.get("/v1/models").json()["data"]]
        self.exact = {"ursula", "victor", "audrey", "admin", *models}
        self.words |= {w for m in models for w in re.findall(r"[a-z]{3,}", m)}
        self.left: dict[str, list[str]] = {}

    def check(self, page: Page, place: str) -> None:
        expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))
        found = english_left(page.evaluate(COLLECT_TEXT), self.exact, self.words)
        if found:
            self.left[place] = found

    def assert_none(self) -> None:
        report = "\n".join(f"[{p}] {f}" for p, fs in self.left.items() for f in fs)
        assert not self.left, "English left on the Chinese page:\n" + report


# ---- the scenarios ------------------------------------------------------------------------------


def test_sign_in_shows_the_user_and_a_wrong_password_a_sentence(web: Web) -> None:
    page = web.page()
    page.goto("/")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^en"))
    web.shoot(page, "sign-in")

    page.locator("#login-username").fill("ursula")
    page.locator("#login-password").fill("not ursula's password at all")
    page.locator("#login-submit").click()
    error = page.locator("#login-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    text = error.inner_text().strip()
    assert len(text.split()) >= 3, text  # a sentence
    assert "{" not in text and "invalid_credentials" not in text, text
    expect(page.locator("#login-form")).to_be_visible()

    sign_in(page, "ursula")
    expect(page.locator("#login-error")).to_be_hidden()
    expect(page.locator("#drop-zone")).to_be_visible()  # the transcribe place comes first
    expect(page.locator('nav a[data-nav="admin"]')).to_have_count(0)  # not for a user
    web.shoot(page, "transcribe")


def test_upload_is_transcribed_downloaded_and_played(web: Web, jfk: Path, tmp_path: Path) -> None:
    page = signed_in(web, "ursula")
    go(page, "transcribe")
    page.locator("#file-input").set_input_files(jfk)
    expect(page.locator("#file-list")).to_contain_text("jfk.flac")
    open_options(page)
    page.locator("#opt-model").select_option("base")
    job_id = submit(page, "#submit")

    row = wait_done(page, job_id)
    expect(row.locator(".job-name")).to_contain_text("jfk.flac")
    SHARED["jfk"] = job_id
    web.shoot(page, "jobs")

    transcript = open_transcript(page, row, job_id)
    assert "ask not what your country" in said(transcript)
    expect(page.locator("#transcript-language")).to_have_text(re.compile(r"english|\ben\b", re.I))
    expect(page.locator("#transcript-model")).to_contain_text("base")
    web.shoot(page, "transcript")

    # The SRT download: real subtitles, the words inside, times in order.
    with page.expect_download() as info:
        page.locator('button[data-download="srt"]').click()
    download = info.value
    assert download.suggested_filename.endswith(".srt"), download.suggested_filename
    path = tmp_path / "download.srt"
    download.save_as(path)
    subtitles = list(srt.parse(path.read_text(encoding="utf-8")))
    assert subtitles
    assert "ask not what your country" in normalise(" ".join(s.content for s in subtitles), "en")
    assert all(s.start < s.end for s in subtitles)
    assert all(a.start <= b.start and a.end <= b.end for a, b in pairwise(subtitles))

    # A click on a segment plays the kept audio from there.
    play_segment(page, transcript, -1, job_id)


def test_microphone_recording_is_transcribed(web: Web, mic_clip: Clip) -> None:
    page = signed_in(web, "ursula")
    go(page, "transcribe")
    start = page.locator("#mic-start")
    expect(start).to_be_enabled()
    start.click()
    began = time.monotonic()
    expect(page.locator("#mic-stop")).to_be_enabled()
    # Twice the looped file and a second: one whole, unbroken copy of the sentence is in it,
    # wherever in the loop the device was when the page opened it.
    seconds = 2 * (mic_clip.duration + 1.5) + 1
    level = poll(lambda: page.locator("#mic-level").evaluate("m => m.value"),
                 lambda v: v > 0, seconds)  # fmt: skip
    assert level > 0, "the level meter never moved while the fake microphone spoke"
    page.wait_for_timeout(max(0.0, seconds - (time.monotonic() - began)) * 1000)
    page.locator("#mic-stop").click()

    play = page.locator("#mic-play")
    expect(play).to_be_enabled()
    play.click()  # plays it back (a blob: source would break the CSP: the fixture would see it)
    expect(page.locator("#mic-send")).to_be_enabled()
    job_id = submit(page, "#mic-send")

    row = wait_done(page, job_id)
    transcript = open_transcript(page, row, job_id)
    text = said(transcript)
    heard = [w for w in MIC_WORDS if w in text]
    assert len(heard) >= 3, (heard, text)
    play_segment(page, transcript, 0, job_id)  # the recording is kept like any upload


def test_file_over_the_cap_gets_a_sentence_and_no_job(
    web: Web, svc: Service, big_file: Path
) -> None:
    before = api_jobs(svc, "ursula")
    page = signed_in(web, "ursula")
    go(page, "transcribe")
    page.locator("#file-input").set_input_files(big_file)
    expect(page.locator("#file-list")).to_contain_text(big_file.name)
    page.locator("#submit").click()

    message = page.locator("#transcribe-error:visible, #jobs-table .job-error:visible").first
    expect(message).to_be_visible(timeout=60_000)
    text = message.inner_text().strip()
    assert len(text.split()) >= 3, text
    assert "{" not in text and "too_large" not in text, text
    assert re.search(r"large|big|limit|size|exceed|MB", text, re.I), text  # says what is wrong

    after = api_jobs(svc, "ursula")
    assert not [j for j in after if j["filename"] == big_file.name], after
    assert len(after) == len(before), (before, after)


def test_another_user_sees_none_of_her_jobs(web: Web, jfk_job: str) -> None:
    page = signed_in(web, "victor")
    go(page, "jobs")
    expect(page.locator("#jobs-empty")).to_be_visible()
    expect(page.locator(f'tr[data-job-id="{jfk_job}"]')).to_have_count(0)
    # Nor through the API with his session (the page context's cookies).
    for path in (f"/v1/jobs/{jfk_job}", f"/v1/jobs/{jfk_job}/result?format=txt",
                 f"/v1/jobs/{jfk_job}/audio"):  # fmt: skip
        r = page.request.get(path)
        assert r.status == 404, (path, r.status, r.text())


def test_admin_key_works_with_the_openai_sdk_until_revoked(
    web: Web, svc: Service, jfk: Path
) -> None:
    page = signed_in(web, "admin")
    go(page, "admin")
    expect(page.locator('#users-table tr[data-username="ursula"]')).to_be_visible()
    expect(page.locator("#status")).to_be_visible()

    form = page.locator("#key-create-form")
    form.locator("#key-name").fill("k9")
    choose(form.locator("#key-user"), "ursula")
    with page.expect_response(
        lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/v1/keys"
    ) as info:
        form.locator("[type=submit]").click()
    assert info.value.status == 201, info.value.text()
    key_id = info.value.json()["id"]
    shown = page.locator("#key-created-value")
    expect(shown).to_be_visible()
    is_field = shown.evaluate("e => e.tagName === 'INPUT' || e.tagName === 'TEXTAREA'")
    key = (shown.input_value() if is_field else shown.inner_text()).strip()
    assert re.fullmatch(r"hs_[A-Za-z0-9_\-]{20,}", key), key
    row = page.locator(f'#keys-table tr[data-key-id="{key_id}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("ursula")
    web.shoot(page, "admin")

    client = openai.OpenAI(base_url=svc.url + "/v1", api_key=key, max_retries=0, timeout=300)
    with jfk.open("rb") as fh:
        text = client.audio.transcriptions.create(model="whisper-1", file=fh).text
    assert "ask not" in normalise(text, "en"), text

    with page.expect_response(
        lambda r: r.request.method == "DELETE" and urlsplit(r.url).path == f"/v1/keys/{key_id}"
    ) as info:
        row.locator("button.key-revoke").click()
    assert info.value.ok, info.value.text()
    with pytest.raises(openai.AuthenticationError), jfk.open("rb") as fh:
        client.audio.transcriptions.create(model="whisper-1", file=fh)

    # The models: a size is a size name ("base"), never a count of bytes; their files check out.
    model = page.locator('#models-table tr[data-model="tiny.en"]')
    expect(model).to_be_visible()
    state = model.locator(".model-state")
    unchecked = state.inner_text()
    with page.expect_response(lambda r: urlsplit(r.url).path == "/v1/models/tiny.en/verify") as v:
        model.locator("button.model-verify").click()
    assert v.value.ok and v.value.json()["ok"] is True, v.value.text()
    expect(state).not_to_have_text(unchecked)
    expect(page.locator("[role=alert]:visible")).to_have_count(0)
    cells = [c.strip() for c in model.locator("td").all_inner_texts()]
    assert not [c for c in cells if re.fullmatch(r"0\s*(bytes|B)", c)], cells


def test_chinese_leaves_no_english_string(web: Web, svc: Service, jfk: Path, jfk_job: str) -> None:
    page = signed_in(web, "ursula")
    check = ChineseCheck(svc)
    page.locator("#lang-switch").click()
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))

    go(page, "transcribe")
    page.locator("#file-input").set_input_files(jfk)
    open_options(page)
    check.check(page, "transcribe")
    web.shoot(page, "zh-transcribe")

    row = wait_done(page, jfk_job)
    check.check(page, "jobs")
    web.shoot(page, "zh-jobs")

    open_transcript(page, row, jfk_job)
    check.check(page, "transcript")
    web.shoot(page, "zh-transcript")

    page.locator("#logout").click()
    expect(page.locator("#login-form")).to_be_visible()
    page.locator("#login-password").fill("不对的密码 wrong")
    page.locator("#login-username").fill("ursula")
    page.locator("#login-submit").click()
    expect(page.locator("#login-error")).to_be_visible()
    check.check(page, "sign-in")
    web.shoot(page, "zh-sign-in")

    sign_in(page, "admin")
    if not (page.locator("html").get_attribute("lang") or "").startswith("zh"):
        page.locator("#lang-switch").click()  # the choice need not outlive a sign-out
    go(page, "admin")
    check.check(page, "admin")
    web.shoot(page, "zh-admin")
    check.assert_none()


AUDIT_PAGE = 100
"""Records the audit place asks for at a time."""


def audit_rows(page: Page) -> Locator:
    return page.locator("#audit-table tbody tr[data-seq]")


def is_audit_list(r: Response) -> bool:
    return r.request.method == "GET" and urlsplit(r.url).path == "/v1/audit"


def test_auditor_reads_filters_and_verifies_the_audit_log(web: Web, svc: Service) -> None:
    # More records than one page holds: each refused request is one (audrey may not list jobs).
    with svc.signed_in("audrey", password("audrey")) as client:
        for _ in range(AUDIT_PAGE + 10):
            assert client.get("/v1/jobs").status_code == 403
    page = web.page()
    page.goto("/")
    # A failed sign-in first: the log must show it.
    page.locator("#login-username").fill("audrey")
    page.locator("#login-password").fill("not audrey's password")
    page.locator("#login-submit").click()
    expect(page.locator("#login-error")).to_be_visible()
    with page.expect_response(is_audit_list) as first:
        sign_in(page, "audrey")
    assert first.value.ok, first.value.text()

    # Only the audit place: an auditor neither transcribes nor has jobs.
    expect(page.locator("nav a[data-nav]")).to_have_count(1)
    expect(page.locator('nav a[data-nav="audit"]')).to_have_attribute("aria-current", "page")
    expect(page.locator("#drop-zone")).to_be_hidden()
    expect(page.locator("#audit-filters")).to_be_visible()
    rows = audit_rows(page)
    expect(rows.first).to_be_visible()
    expect(page.locator("#audit-empty")).to_be_hidden()

    # Oldest first: "Load more" follows the cursor to the end, where audrey's sign-in here is.
    event = "td:nth-child(3)"
    signed_in_event = page.locator(event, has_text=re.compile(r"^\s*Signed in\s*$"))
    mine = page.locator("#audit-table tbody tr", has_text="audrey").filter(has=signed_in_event)
    more = page.locator("#audit-more")
    expect(more).to_be_visible()
    for _ in range(50):
        if not more.is_visible():
            break
        shown = rows.count()
        with page.expect_response(is_audit_list) as info:
            more.click()
        assert f"after={rows.nth(shown - 1).get_attribute('data-seq')}" in info.value.url
        expect(rows).not_to_have_count(shown)
    expect(more).to_be_hidden()
    assert rows.count() > AUDIT_PAGE
    expect(mine).to_have_count(2)  # through the API above, and in this browser
    last_denied = rows.filter(has=page.locator(event, has_text="Access denied")).last
    assert int(mine.last.get_attribute("data-seq") or 0) > int(
        last_denied.get_attribute("data-seq") or 0
    )
    seqs = [int(s) for s in rows.evaluate_all("rs => rs.map(r => r.dataset.seq)")]
    assert seqs == sorted(set(seqs)), seqs  # in log order, none twice
    cells = [c.strip() for c in mine.last.locator("td").all_inner_texts()]
    assert "Succeeded" in cells[6], cells  # the outcome in words, not only in colour
    assert re.search(r"\d", cells[1]) and not re.search(r"\d{4}-\d\d-\d\dT", cells[1]), cells

    # Only failed sign-ins: the one above is among them.
    page.locator("#audit-type").select_option("login_failed")
    with page.expect_response(is_audit_list) as info:
        page.locator("#audit-filters [type=submit]").click()
    assert "type=login_failed" in info.value.url, info.value.url
    data = info.value.json()["data"]
    assert data and {r["type"] for r in data} == {"login_failed"}, data
    expect(rows).to_have_count(len(data))  # the table drawn again, from this answer
    expect(rows.first).to_have_attribute("data-seq", str(data[0]["seq"]))
    failed = page.locator("#audit-table tbody tr", has_text="audrey")
    expect(failed.first).to_be_visible()
    events = {e.strip() for e in rows.locator(event).all_inner_texts()}
    assert events == {"Sign-in failed"}, events
    outcome = failed.first.locator("td").nth(6)
    expect(outcome).to_have_text(re.compile("Denied"))

    # The whole log checks out.
    result = page.locator("#audit-verify-result")
    expect(result).to_have_attribute("role", "status")
    with page.expect_response(lambda r: urlsplit(r.url).path == "/v1/audit/verify") as v:
        page.locator("#audit-verify").click()
    assert v.value.ok and v.value.json()["ok"] is True, v.value.text()
    expect(result).to_contain_text("intact")
    expect(result).to_contain_text(re.compile(r"\d+ records"))
    expect(page.locator("[role=alert]:visible")).to_have_count(0)
    web.shoot(page, "audit")

    # In Chinese, nothing on the place is left in English but the records' own data.
    check = ChineseCheck(svc)
    page.locator("#lang-switch").click()
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))
    expect(result).to_contain_text("完好")
    check.check(page, "audit")
    with page.expect_response(is_audit_list):  # every kind of record the tests above caused
        page.locator("#audit-clear").click()
    expect(page.locator("#audit-type")).to_have_value("")
    expect(rows).to_have_count(AUDIT_PAGE)
    check.check(page, "audit, unfiltered")
    web.shoot(page, "zh-audit")
    check.assert_none()


def end_sessions(svc: Service, user: str) -> None:
    """Sign ``user`` out everywhere, server-side: disabling ends their sessions, and enabling
    them again does not bring those back."""
    with svc.admin() as admin:
        for disabled in (True, False):
            r = admin.patch(f"/v1/users/{user}", json={"disabled": disabled})
            assert r.status_code == 200, r.text


def test_expired_session_signs_in_again_over_the_page(
    web: Web, svc: Service, mic_clip: Clip, jfk_job: str
) -> None:
    page = signed_in(web, "ursula")
    page.evaluate("() => { window.__hsSamePage = 42; }")  # gone if the page reloads

    # An open transcript, searched: a download meets the ended session, the form comes over the
    # page, and after signing in the download happens and the view is as it was.
    go(page, "jobs")
    open_transcript(page, job_row(page, jfk_job), jfk_job)
    page.locator("#transcript-search").fill("country")
    end_sessions(svc, "ursula")
    with page.expect_download(timeout=60_000) as info:
        page.locator('button[data-download="txt"]').click()
        expect(page.locator("#login-form")).to_be_visible()
        expect(page.locator("#transcript")).to_be_attached()  # still there, under the form
        sign_in(page, "ursula")
    assert "ask not" in normalise(Path(info.value.path()).read_text(encoding="utf-8"), "en")
    expect(page.locator("#transcript")).to_have_attribute("data-job-id", jfk_job)
    expect(page.locator("#transcript")).to_be_visible()
    expect(page.locator("#transcript-search")).to_have_value("country")

    # A submission with a chosen file and options: retried once after signing in, with them.
    go(page, "transcribe")
    page.locator("#file-input").set_input_files(mic_clip.path)
    open_options(page)
    page.locator("#opt-model").select_option("tiny.en")
    page.locator("#opt-language").select_option("en")
    before = {j["id"] for j in api_jobs(svc, "ursula")}
    end_sessions(svc, "ursula")
    with page.expect_response(lambda r: is_post_jobs(r) and r.status == 401):
        page.locator("#submit").click()
    expect(page.locator("#login-form")).to_be_visible()
    with page.expect_response(lambda r: is_post_jobs(r) and r.status == 202,
                              timeout=60_000) as retried:  # fmt: skip
        sign_in(page, "ursula")
    job_id = retried.value.json()["id"]
    expect(job_row(page, job_id)).to_be_visible()  # on to the jobs, as after any submission
    new = [j for j in api_jobs(svc, "ursula") if j["id"] not in before]
    assert [j["id"] for j in new] == [job_id], new  # retried once, not twice
    assert (new[0]["filename"], new[0]["model"]) == (mic_clip.path.name, "tiny.en"), new[0]
    go(page, "transcribe")
    open_options(page)
    expect(page.locator("#opt-model")).to_have_value("tiny.en")
    expect(page.locator("#opt-language")).to_have_value("en")
    assert page.evaluate("() => window.__hsSamePage") == 42, "the page reloaded"
