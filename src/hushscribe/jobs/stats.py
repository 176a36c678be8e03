"""Cumulative processing statistics kept in the job database.

Workers are separate processes (maybe on other nodes), so what they measure — audio seconds
transcribed, processing time, model load time — is added to rows here in small transactions,
and ``/metrics`` reads the totals. Totals survive restarts, as Prometheus counters expect.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Engine, Float, String, Table, select

from hushscribe.db import metadata, upsert

stats = Table(
    "stats",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Float, nullable=False),
)

PROCESSING_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Seconds from claim to result; one short clip to an hour-long meeting."""


def _bucket_keys(seconds: float) -> list[str]:
    keys = [f"processing_seconds_bucket:{b}" for b in PROCESSING_BUCKETS if seconds <= b]
    return [*keys, "processing_seconds_bucket:+Inf"]


class Stats:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[stats])

    def add(self, values: dict[str, float], set_values: dict[str, float] | None = None) -> None:
        """Add ``values`` to the named totals and set ``set_values``, in one transaction.

        Each key is one ``INSERT … ON CONFLICT DO UPDATE``: a first write and a concurrent one
        from another worker both land. Keys are written in sorted order, so two transactions
        lock shared rows in the same order and never deadlock (PostgreSQL locks each row)."""
        changes: dict[str, Any] = {k: stats.c.value + delta for k, delta in values.items()}
        changes |= dict((set_values or {}).items())
        initial = dict(values) | dict(set_values or {})
        with self.engine.begin() as conn:
            for key in sorted(changes):
                row = {"key": key, "value": initial[key]}
                upsert(conn, stats, row, ["key"], {"value": changes[key]})

    def job_done(self, audio_seconds: float, processing_seconds: float) -> None:
        deltas = {k: 1.0 for k in _bucket_keys(processing_seconds)}
        deltas.update(
            {
                "audio_seconds_total": audio_seconds,
                "processing_seconds_sum": processing_seconds,
                "processing_seconds_count": 1.0,
            }
        )
        rtf = processing_seconds / audio_seconds if audio_seconds else 0.0
        self.add(deltas, {"last_real_time_factor": rtf})

    def model_loaded(self, name: str, seconds: float) -> None:
        self.add({f"model_loads_total:{name}": 1.0}, {f"model_load_seconds:{name}": seconds})

    def fallback(self, reason: str) -> None:
        self.add({f"model_fallbacks_total:{reason}": 1.0}, {})

    def model_memory(self, name: str, resident_bytes: int) -> None:
        self.add({}, {f"model_memory_bytes:{name}": float(resident_bytes)})

    def read(self) -> dict[str, float]:
        with self.engine.connect() as conn:
            return {r.key: r.value for r in conn.execute(select(stats.c.key, stats.c.value))}
