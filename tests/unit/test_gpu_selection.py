"""Device choices without a GPU on this machine: CTranslate2's answers about CUDA are the one
thing replaced here (what a GPU host would say); the choices made from them are real."""

from pathlib import Path

import ctranslate2
import httpx
import pytest

from hushscribe.api.gpu_metrics import GpuCollector
from hushscribe.engine import loader
from hushscribe.jobs import supervisor
from hushscribe.settings import load_settings


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int, types: set[str]) -> None:
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: count)
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: types)


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ({"float32", "int8", "float16", "int8_float16"}, "float16"),
        ({"float32", "int8", "int8_float16"}, "int8_float16"),
        ({"float32", "int8"}, "float32"),
    ],
)
def test_auto_compute_type_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch, types: set[str], expected: str
) -> None:
    _gpus(monkeypatch, 1, types)
    assert loader.resolve_device(load_settings(None).engine) == ("cuda", expected)


def test_auto_on_a_machine_without_gpu_is_int8_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 0, set())
    assert loader.resolve_device(load_settings(None).engine) == ("cpu", "int8")


def test_one_worker_per_gpu_each_with_its_own_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _gpus(monkeypatch, 3, {"float16"})
    s = load_settings(None, data_dir=tmp_path)
    sup = supervisor.Supervisor(s)
    assert len(sup.slots) == 3
    assert [sup._gpu(slot) for slot in sup.slots] == [0, 1, 2]
    more = supervisor.Supervisor(load_settings(None, data_dir=tmp_path, jobs={"workers": 4}))
    assert [more._gpu(slot) for slot in more.slots] == [0, 1, 2, 0]  # shared in turn
    cpu = supervisor.Supervisor(load_settings(None, data_dir=tmp_path, engine={"device": "cpu"}))
    assert len(cpu.slots) == supervisor.CPU_WORKERS
    assert {cpu._gpu(slot) for slot in cpu.slots} == {None}


def test_gpu_metrics_are_cleanly_absent_without_a_driver(service) -> None:
    """nvidia-ml-py is installed with the test extras; this machine has no NVIDIA driver, so
    the collector reports nothing, and /metrics holds no GPU series (and no error)."""
    assert GpuCollector().nvml is None
    assert list(GpuCollector().collect()) == []
    with service.admin() as admin:
        r = admin.get("/metrics")
    assert r.status_code == 200
    assert "hushscribe_gpu_" not in r.text
    assert "hushscribe_jobs" in r.text
    assert isinstance(r, httpx.Response)
