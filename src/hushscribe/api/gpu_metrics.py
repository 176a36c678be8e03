"""GPU metrics for /metrics through NVIDIA's management library (``nvidia-ml-py``, in the
``gpu`` extra): memory, utilisation and temperature per device. Without the library or a
driver, nothing is reported — no error, no empty series."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("hushscribe.metrics")


def _nvml() -> Any | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver (NVMLError_LibraryNotFound, DriverNotLoaded, …)
        return None
    return pynvml


class GpuCollector(Collector):
    """Reads every device at each scrape (cheap: NVML answers from the driver)."""

    def __init__(self) -> None:
        self.nvml = _nvml()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.nvml is None:
            return
        nv = self.nvml
        families = {
            "used": GaugeMetricFamily("hushscribe_gpu_memory_used_bytes", "GPU memory in use.",
                                      labels=["gpu", "name"]),
            "free": GaugeMetricFamily("hushscribe_gpu_memory_free_bytes", "GPU memory free.",
                                      labels=["gpu", "name"]),
            "util": GaugeMetricFamily("hushscribe_gpu_utilization_ratio",
                                      "GPU busy fraction over the driver's last sample period.",
                                      labels=["gpu", "name"]),
            "temp": GaugeMetricFamily("hushscribe_gpu_temperature_celsius", "GPU temperature.",
                                      labels=["gpu", "name"]),
        }  # fmt: skip
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception:
            log.exception("NVML: cannot count devices")
            return
        for index in range(count):
            with contextlib.suppress(Exception):  # one device failing must not hide the others
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                name = nv.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                labels = [str(index), name]
                memory = nv.nvmlDeviceGetMemoryInfo(handle)
                families["used"].add_metric(labels, float(memory.used))
                families["free"].add_metric(labels, float(memory.free))
                rates = nv.nvmlDeviceGetUtilizationRates(handle)
                families["util"].add_metric(labels, rates.gpu / 100.0)
                temp = nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)
                families["temp"].add_metric(labels, float(temp))
        yield from families.values()
