"""Which workers are alive and what they have loaded, in the job database.

Readiness is a fact about workers, which may live in other processes or on other nodes; each
writes its own row and renews ``last_seen``. A worker is alive while ``last_seen`` is recent.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import JSON, Column, Engine, Float, Integer, String, Table, delete, select
from sqlalchemy import update as sql_update

from hushscribe.db import metadata, upsert
from hushscribe.jobs.tables import WORKER_ID_MAX

workers = Table(
    "workers",
    metadata,
    Column("id", String(WORKER_ID_MAX), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("models", JSON, nullable=False),
)


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    started_at: float
    last_seen: float
    models: list[str]


class WorkerRegistry:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        metadata.create_all(engine, tables=[workers])

    def register(self, worker_id: str, pid: int, models: list[str]) -> None:
        """Record this worker as started now (a restarted worker with the same id replaces its
        old row, in one statement)."""
        now = self.clock()
        row = {"host": socket.gethostname()[:255], "pid": pid, "started_at": now,
               "last_seen": now, "models": models}  # fmt: skip
        with self.engine.begin() as conn:
            upsert(conn, workers, {"id": worker_id, **row}, ["id"], row)

    def heartbeat(self, worker_id: str, models: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sql_update(workers)
                .where(workers.c.id == worker_id)
                .values(last_seen=self.clock(), models=models)
            )

    def unregister(self, worker_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(workers).where(workers.c.id == worker_id))

    def alive(self, within_s: float) -> list[WorkerInfo]:
        since = self.clock() - within_s
        with self.engine.connect() as conn:
            rows = conn.execute(select(workers).where(workers.c.last_seen >= since)).all()
        return [
            WorkerInfo(r.id, r.host, r.pid, r.started_at, r.last_seen, list(r.models)) for r in rows
        ]
