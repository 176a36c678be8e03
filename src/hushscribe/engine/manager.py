"""Model lifecycle: load on first use, share while in use, unload after an idle time, keep at
most ``models.max_resident`` and within ``models.memory_budget_mb``, and fall back along an
alias's chain when a model cannot serve."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hushscribe.engine.fallback import (
    Choice,
    NoModelCanServe,
    Step,
    detail_of,
    is_out_of_memory,
    reason_of,
)
from hushscribe.engine.loader import LoadedModel, load_model
from hushscribe.engine.store import ModelStore, stat_key
from hushscribe.errors import HushscribeError, ModelLoadFailed, ModelOverBudget
from hushscribe.settings import Settings

log = logging.getLogger("hushscribe.models")
MB = 1_000_000
T = TypeVar("T")


@dataclass
class _Entry:
    model: LoadedModel
    bytes: int  # the model's files on disk: the budget's estimate of its memory
    memory_bytes: int  # resident memory the load added, as measured
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

    def memory(self) -> dict[str, int]:
        """Resident memory each loaded model added when it was loaded (bytes)."""
        with self._lock:
            return {n: e.memory_bytes for n, e in self._entries.items()}

    # --- names ---------------------------------------------------------------------------------

    def chain(self, requested: str | None) -> tuple[str, list[str]]:
        """(name asked for, models to try in order): an alias's chain, else the model itself."""
        name = requested or self.settings.engine.default_model
        return name, self.settings.models.chain(name)

    def pinned(self) -> set[str]:
        """Models kept loaded: the default's and the preloaded ones' first models."""
        names = {self.settings.engine.default_model, *self.settings.models.preload}
        return {self.chain(n)[1][0] for n in names}

    # --- loading -------------------------------------------------------------------------------

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
                size = self.store.info(name).bytes
                self._make_room(name, size)
                before = _resident_bytes()
                model = self._load_engine(name)
                added = max(0, _resident_bytes() - before)
            except ModelOverBudget:
                raise  # not the files' fault: another time, with other models idle, it fits
            except HushscribeError as exc:
                self._failed[name] = (files, exc)
                raise
            self._failed.pop(name, None)
            with self._lock:
                entry = self._entries.setdefault(name, _Entry(model, size, added))
            return entry

    def _load_engine(self, name: str) -> LoadedModel:
        try:
            return load_model(self.store, name, self.settings.engine)
        except HushscribeError:
            raise
        except (RuntimeError, OSError, ValueError, MemoryError) as exc:  # CTranslate2's errors
            oom = is_out_of_memory(exc)
            error = ModelLoadFailed(
                f"model '{name}' could not be loaded"
                f"{' (out of memory)' if oom else ''}: {type(exc).__name__}: {str(exc)[:200]}"
            )
            error.out_of_memory = oom  # type: ignore[attr-defined]
            raise error from exc

    def _make_room(self, name: str, size: int) -> None:
        """Unload idle models, least recently used first, until ``name`` fits the resident
        count and the memory budget; :class:`ModelOverBudget` when it cannot fit."""
        limits = self.settings.models
        budget = limits.memory_budget_mb * MB if limits.memory_budget_mb else None
        if budget is not None and size > budget:
            raise ModelOverBudget(
                f"model '{name}' needs about {size / MB:,.0f} MB, more than the memory budget of "
                f"{budget / MB:,.0f} MB (models.memory_budget_mb)"
            )
        with self._lock:
            idle = sorted(
                (e.last_used, n) for n, e in self._entries.items() if e.refs == 0 and n != name
            )
            while idle and (
                len(self._entries) >= limits.max_resident
                or (budget is not None and self._used() + size > budget)
            ):
                _, victim = idle.pop(0)
                del self._entries[victim]
                log.info("unloaded model %s to make room for %s", victim, name)
            if budget is not None and self._used() + size > budget:
                busy = ", ".join(sorted(self._entries))
                raise ModelOverBudget(
                    f"model '{name}' needs about {size / MB:,.0f} MB; the memory budget "
                    f"({budget / MB:,.0f} MB) is taken by models in use ({busy})"
                )

    def _used(self) -> int:
        return sum(e.bytes for e in self._entries.values())

    def _files_state(self, name: str) -> object:
        """Size and modification time of every file of a model's directory (cheap: no reads)."""
        try:
            folder = self.store.path(name)
            return sorted((p.name, stat_key(p)) for p in folder.iterdir() if p.is_file())
        except (OSError, HushscribeError):
            return None  # missing (or an invalid name): "found" later is a change

    # --- use -----------------------------------------------------------------------------------

    @contextmanager
    def use(self, name: str | None = None) -> Iterator[LoadedModel]:
        """The loaded model ``name`` (default model when None), held for the ``with`` block."""
        with self._hold(self._load(name or self.settings.engine.default_model)) as model:
            yield model

    @contextmanager
    def _hold(self, entry: _Entry) -> Iterator[LoadedModel]:
        with self._lock:
            entry.refs += 1
        try:
            yield entry.model
        finally:
            with self._lock:
                entry.refs -= 1
                entry.last_used = time.monotonic()

    @contextmanager
    def use_best(
        self,
        requested: str | None,
        waited_s: float = 0.0,
        passed_over: list[Step] | None = None,
    ) -> Iterator[tuple[LoadedModel, Choice]]:
        """The first model of ``requested``'s chain that can serve now, held for the block,
        with the :class:`Choice` that says which and why. ``passed_over``: models already known
        not to serve this job (one that ran out of memory during it)."""
        name, models = self.chain(requested)
        steps = list(passed_over or [])
        skip = {s.model for s in steps}
        alias = self.settings.models.aliases.get(name)
        wait_limit = alias.queue_wait_s if alias is not None else None
        if wait_limit is not None and waited_s > wait_limit and len(models) > 1:
            first = models[0]
            if first not in skip:
                detail = f"waited {waited_s:.1f} s in the queue (limit {wait_limit:g} s)"
                steps.append(Step(first, "queue_wait", detail))
                skip.add(first)
        last: HushscribeError | None = None
        for model_name in models:
            if model_name in skip:
                continue
            try:
                entry = self._load(model_name)
            except HushscribeError as exc:
                steps.append(Step(model_name, reason_of(exc), detail_of(exc)))
                last = exc
                continue
            with self._hold(entry) as model:
                yield model, Choice(name, model_name, steps)
            return
        if len(models) == 1 and last is not None and not passed_over:
            raise last  # a plain model: its own error, as before aliases existed
        raise NoModelCanServe(name, steps, last)

    def run(
        self, requested: str | None, waited_s: float, work: Callable[[LoadedModel], T]
    ) -> tuple[T, Choice]:
        """``work`` with the best model of the chain; when the device runs out of memory during
        it, once more with the next model."""
        passed: list[Step] = []
        while True:
            with self.use_best(requested, waited_s, passed) as (model, choice):
                try:
                    return work(model), choice
                except Exception as exc:
                    if passed or not is_out_of_memory(exc):
                        raise
                    log.warning("model %s ran out of memory during a job; trying the next one",
                                choice.model)  # fmt: skip
                    passed = [*choice.fallbacks, Step(choice.model, "out_of_memory",
                                                      detail_of(exc))]  # fmt: skip

    def unload_idle(self, now: float | None = None, keep: str | None = None) -> list[str]:
        """Unload models unused for ``model_idle_unload_s`` (but ``keep`` and the preloaded
        ones); return their names."""
        ttl = self.settings.engine.model_idle_unload_s
        if ttl <= 0:
            return []
        now = time.monotonic() if now is None else now
        kept = self.pinned() | ({keep} if keep else set())
        with self._lock:
            idle = [
                n
                for n, e in self._entries.items()
                if e.refs == 0 and now - e.last_used >= ttl and n not in kept
            ]
            for n in idle:
                del self._entries[n]
        return idle


def _resident_bytes() -> int:
    """This process's resident memory (Linux ``/proc``; 0 where it cannot be read)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
