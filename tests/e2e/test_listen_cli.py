"""``hushscribe listen`` against a real server (API + worker, the real models on real speech): the
captions of a file, the "microphone" path (a PyAV input device, here FFmpeg's lavfi reading a
clip, since CI has no sound card) saved as a job, and the words it prints when it is refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_api_jobs import wait
from tests.service import KEYS, Service
from tests.speech import clip, normalise

pytestmark = pytest.mark.slow

JFK = "ask not what your country can do for you"


def listen(
    service: Service, *args: str, key: str | None = KEYS["alice"]
) -> subprocess.CompletedProcess[str]:
    """``hushscribe listen --url <service> …`` as a user runs it; no HUSHSCRIBE_* from here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "hushscribe", "listen", "--url", service.url, *args]
    if key is not None:
        command += ["--key", key]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_a_file_prints_its_captions(service: Service) -> None:
    done = listen(service, "--file", str(clip("jfk.flac").path), "--model", "tiny.en")
    assert done.returncode == 0, done.stderr
    assert JFK in normalise(done.stdout, "en"), (done.stdout, done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert all("{" not in line for line in lines), lines  # captions, not events
    assert "language: en" in done.stderr


def test_a_device_stream_is_saved_as_a_job(service: Service) -> None:
    """The input-device path (lavfi reads the clip as a device would give it), ``--save``:
    the whole stream becomes a job of the key's owner, transcribed again."""
    source = clip("jfk.flac").path
    assert all(ch not in str(source) for ch in ":,;'\\[]="), source  # a plain filter argument
    done = listen(service, "--device", f"lavfi:amovie={source}", "--language", "en", "--save",
                  "--model", "tiny.en")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert JFK in normalise(done.stdout, "en"), (done.stdout, done.stderr)
    saved = [line for line in done.stderr.splitlines() if line.startswith("saved as job ")]
    assert len(saved) == 1, done.stderr
    job_id = saved[0].removeprefix("saved as job ").strip()
    with service.client() as client:
        job, _ = wait(client, job_id)
        assert job["status"] == "done", job
        text = client.get(f"/v1/jobs/{job_id}/result", params={"format": "txt"}).text
    assert JFK in normalise(text, "en"), text


def test_a_wrong_key_is_refused_in_words(service: Service) -> None:
    wrong = listen(service, "--file", str(clip("jfk.flac").path), key="sk-wrong-" + "x" * 32)
    assert wrong.returncode == 1, (wrong.stdout, wrong.stderr)
    assert "API key was refused" in wrong.stderr, wrong.stderr
    assert wrong.stdout.strip() == ""
    assert "Traceback" not in wrong.stderr

    missing = listen(service, "--file", str(clip("jfk.flac").path), key=None)
    assert missing.returncode == 1, (missing.stdout, missing.stderr)
    assert "--key" in missing.stderr and "HUSHSCRIBE_API_KEY" in missing.stderr, missing.stderr


def test_an_unreachable_server_is_said_plainly(tmp_path: Path) -> None:
    gone = Service(tmp_path)  # never started: its port is free
    done = listen(gone, "--file", str(clip("jfk.flac").path))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"cannot reach {gone.url}" in done.stderr, done.stderr


def test_the_openai_sdk_example_of_the_docs_runs(service: Service, tmp_path: Path) -> None:
    """docs/live.md's script, unchanged, with the official ``openai`` package: the captions of
    jfk.flac, and the stream saved as a job."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "live.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(# live_file\.py.*?)```", doc, re.S)
    assert found, "docs/live.md lost its OpenAI SDK example"
    script = tmp_path / "live_file.py"
    script.write_text(found[1], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
    env |= {"HUSHSCRIBE_URL": service.url, "HUSHSCRIBE_API_KEY": KEYS["alice"]}
    command = [sys.executable, str(script), str(clip("jfk.flac").path)]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert JFK in normalise(done.stdout, "en"), (done.stdout, done.stderr)
    job_id = done.stderr.split("saved as job", 1)[1].split()[0]
    with service.client() as client:
        job, _ = wait(client, job_id)
    assert job["status"] == "done", job
