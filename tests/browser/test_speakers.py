"""Who spoke, in a real Chromium: "Who spoke" on the transcribe form, the speakers' names at the
turns of the transcript, and the rename form (PATCH /v1/jobs/{id}/speakers) whose names every
download then shows. Two LibriSpeech readers, one after the other, then the first again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import srt
from playwright.sync_api import expect

from hushscribe.engine.speaker_model import install_speaker_model
from hushscribe.engine.store import ModelStore
from tests.browser.conftest import PASSWORDS, Web
from tests.browser.test_page import go, open_transcript, signed_in, submit, wait_done
from tests.service import Service
from tests.speakers import whisper_service, write_readers
from tests.speech import normalise

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Service]:
    """A server with the Whisper models and the speaker model, and the user ursula."""
    root = tmp_path_factory.mktemp("speakers-service")
    service = whisper_service(root, data_dir)
    install_speaker_model(ModelStore(root / "models"))
    service.start()
    try:
        with service.admin() as admin:
            ursula = {"username": "ursula", "password": PASSWORDS["ursula"], "role": "user"}
            r = admin.post("/v1/users", json=ursula)
            assert r.status_code == 201, r.text
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_readers(tmp_path_factory.mktemp("speakers") / "meeting.wav")


def test_who_spoke_is_shown_and_renamed(web: Web, svc: Service, conversation: Path) -> None:
    page = signed_in(web, "ursula")
    go(page, "transcribe")
    page.locator("#file-input").set_input_files(str(conversation))
    checkbox = page.locator("#opt-diarize")
    expect(checkbox).to_be_visible()  # not hidden in the options
    checkbox.check()
    job_id = submit(page, "#submit")
    transcript = open_transcript(page, wait_done(page, job_id), job_id)

    labels = transcript.locator(".segment-speaker:visible")
    expect(labels).to_have_text(["Speaker 1", "Speaker 2", "Speaker 1"])
    second = transcript.locator('.segment[data-speaker="Speaker 2"] .segment-text')
    assert "confused complaint" in normalise(" ".join(second.all_inner_texts()), "en")

    form = page.locator("#speakers-form")
    expect(form).to_be_visible()
    web.shoot(page, "speakers")
    field = form.locator('input.speaker-name[data-speaker-id="Speaker 2"]')
    expect(field).to_have_value("")  # an unnamed speaker: nothing to delete before typing
    page.get_by_label("Name for Speaker 2").fill("Dorothy")
    page.locator("#speakers-save").click()
    expect(page.locator("#speakers-status")).to_have_text("The names are saved.")
    expect(labels).to_have_text(["Speaker 1", "Dorothy", "Speaker 1"])

    with svc.signed_in("ursula", PASSWORDS["ursula"]) as client:
        text = client.get(f"/v1/jobs/{job_id}/result", params={"format": "srt"}).text
    contents = [cue.content for cue in srt.parse(text)]
    assert any(c.startswith("[Dorothy] ") for c in contents), contents

    page.locator("#lang-switch").click()  # 中文: an unnamed speaker in Chinese, a name as given
    expect(labels).to_have_text(["说话人 1", "Dorothy", "说话人 1"])
    expect(page.locator("#speakers-save")).to_have_text("保存姓名")
