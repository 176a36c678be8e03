"""Model lifecycle: load on first use, share while in use, unload after an idle time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hushscribe.engine.loader import LoadedModel, load_model
from hushscribe.engine.store import ModelStore, stat_key
from hushscribe.errors import HushscribeError
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
        self._failed: dict[str, tuple[object, HushscribeError]] = {}
        """A model that could not be loaded, with the state of its files then: asked again with
        the files unchanged, the same error is raised at once, without hashing 145 MB-3 GB again."""

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
            files = self._files_state(name)
            failed = self._failed.get(name)
            if failed is not None and failed[0] == files:
                raise failed[1]
            try:
                model = load_model(self.store, name, self.settings.engine)
            except HushscribeError as exc:
                self._failed[name] = (files, exc)
                raise
            self._failed.pop(name, None)
            with self._lock:
                entry = self._entries.setdefault(name, _Entry(model=model))
            return entry

    def _files_state(self, name: str) -> object:
        """Size and modification time of every file of a model's directory (cheap: no reads)."""
        try:
            folder = self.store.path(name)
            return sorted((p.name, stat_key(p)) for p in folder.iterdir() if p.is_file())
        except (OSError, HushscribeError):
            return None  # missing (or an invalid name): "found" later is a change

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

    def unload_idle(self, now: float | None = None, keep: str | None = None) -> list[str]:
        """Unload models (but ``keep``) unused for ``model_idle_unload_s``; return their names."""
        ttl = self.settings.engine.model_idle_unload_s
        if ttl <= 0:
            return []
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [
                n
                for n, e in self._entries.items()
                if e.refs == 0 and now - e.last_used >= ttl and n != keep
            ]
            for n in idle:
                del self._entries[n]
        return idle
