"""Model lifecycle: load on first use, share while in use, unload after an idle time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hushscribe.engine.loader import LoadedModel, load_model
from hushscribe.engine.store import ModelStore
from hushscribe.settings import Settings


@dataclass
class _Entry:
    model: LoadedModel
    refs: int = 0
    last_used: float = 0.0


class ModelManager:
    """Holds loaded models by name; thread-safe; one load per model even under concurrent use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.models_dir)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def _load(self, name: str) -> _Entry:
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                if name in self._entries:
                    return self._entries[name]
            model = load_model(self.store, name, self.settings.engine)
            with self._lock:
                entry = self._entries.setdefault(name, _Entry(model=model))
            return entry

    @contextmanager
    def use(self, name: str | None = None) -> Iterator[LoadedModel]:
        """The loaded model ``name`` (default model when None), held for the ``with`` block."""
        name = name or self.settings.engine.default_model
        entry = self._load(name)
        with self._lock:
            entry.refs += 1
        try:
            yield entry.model
        finally:
            with self._lock:
                entry.refs -= 1
                entry.last_used = time.monotonic()

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Unload models unused for ``model_idle_unload_s``; return their names."""
        ttl = self.settings.engine.model_idle_unload_s
        if ttl <= 0:
            return []
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [n for n, e in self._entries.items() if e.refs == 0 and now - e.last_used >= ttl]
            for n in idle:
                del self._entries[n]
        return idle
