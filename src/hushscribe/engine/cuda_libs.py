"""CUDA libraries from the ``gpu`` extra: pip puts NVIDIA's cuBLAS in the environment
(``site-packages/nvidia/cublas/lib``), where the dynamic loader does not look. Loading it by path
once, globally, before CTranslate2 first uses the GPU, makes its ``dlopen("libcublas.so.12")``
find the copy already in the process — no ``LD_LIBRARY_PATH`` needed (the offline installer
still writes one, for other tools)."""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from pathlib import Path

log = logging.getLogger("hushscribe.models")
_LIBRARIES = ("libcublasLt.so.12", "libcublas.so.12")  # Lt first: cuBLAS needs it
_done = False


def preload() -> list[str]:
    """Load the pip-installed CUDA libraries that exist; their paths (empty without the extra)."""
    global _done
    if _done:
        return []
    _done = True
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    loaded = []
    for root in spec.submodule_search_locations:
        for name in _LIBRARIES:
            path = Path(root) / "cublas" / "lib" / name
            if path.is_file():
                try:
                    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                    loaded.append(str(path))
                except OSError as exc:
                    log.warning("could not load %s: %s", path, exc)
    return loaded
