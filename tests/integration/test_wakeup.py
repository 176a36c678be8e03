"""Wake-ups between nodes (``jobs/wakeup.py``) on a real PostgreSQL server: what one process
sends, another hears within a second, never its own; a listener whose connection is cut
reconnects and says it may have missed something; a waiting request is woken by another node's
"job ended". On SQLite nothing is sent and nothing fails."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from hushscribe.api.waiters import Waiters
from hushscribe.jobs.wakeup import CHANNEL_WORK, Wakeups
from tests.pg import PgServer

HEARD_WITHIN_S = 5.0
"""Generous: a notification arrives in milliseconds; a loaded CI machine must not fail this."""


@pytest.fixture
def url(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database("test_wakeup")
    yield url
    pg_server.drop_database(url)


class Heard:
    """What a node's handlers were called with, in order."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()

    def work(self) -> None:
        self.events.put(("work", ""))

    def ended(self, job_id: str) -> None:
        self.events.put(("ended", job_id))

    def missed(self) -> None:
        self.events.put(("missed", ""))

    def next(self, timeout: float = HEARD_WITHIN_S) -> tuple[str, str]:
        return self.events.get(timeout=timeout)

    def nothing_for(self, seconds: float) -> bool:
        try:
            event = self.events.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected {event}")


def listening(url: str, heard: Heard) -> tuple[Engine, Wakeups]:
    engine = create_engine(url)
    node = Wakeups(engine)
    node.listen(work=heard.work, ended=heard.ended, missed=heard.missed)
    node.start()
    assert node.listener is not None and node.listener.connected.wait(HEARD_WITHIN_S)
    # Connected: it looks once (work, then missed), for what was sent before it listened.
    assert {heard.next(), heard.next()} == {("work", ""), ("missed", "")}
    return engine, node


def test_another_node_is_heard_and_its_own_notifications_are_not(url: str) -> None:
    heard = Heard()
    engine, node = listening(url, heard)
    other_engine = create_engine(url)
    other = Wakeups(other_engine)
    other.start()  # sends only: no listener
    try:
        assert other.listener is None
        other.work_queued()
        assert heard.next() == ("work", "")
        other.job_ended("0123456789abcdef0123456789abcdef")
        assert heard.next() == ("ended", "0123456789abcdef0123456789abcdef")
        node.work_queued()  # its own workers heard it through their pipes
        node.job_ended("fedcba9876543210fedcba9876543210")
        assert heard.nothing_for(1.0)
        with engine.begin() as conn:  # a stranger's payload on the channel still wakes
            conn.execute(text("SELECT pg_notify(:c, 'someone')"), {"c": CHANNEL_WORK})
        assert heard.next() == ("work", "")
    finally:
        other.stop()
        node.stop()
        other_engine.dispose()
        engine.dispose()


def test_a_cut_connection_is_reopened_and_reported_as_missed(url: str) -> None:
    heard = Heard()
    engine, node = listening(url, heard)
    sender_engine = create_engine(url)
    sender = Wakeups(sender_engine)
    sender.start()
    try:
        with engine.begin() as conn:  # what an administrator or a failover does to it
            cut = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                )
            ).all()
        assert cut == [(True,)]
        # Reconnected after its back-off (1 s): everyone looks once, then it hears again.
        assert {heard.next(), heard.next()} == {("work", ""), ("missed", "")}
        sender.job_ended("0123456789abcdef0123456789abcdef")
        assert heard.next() == ("ended", "0123456789abcdef0123456789abcdef")
    finally:
        sender.stop()
        node.stop()
        sender_engine.dispose()
        engine.dispose()


def test_a_waiting_request_is_woken_by_another_nodes_worker(url: str) -> None:
    """The API node's side: ``Waiters`` wired as ``create_app`` wires them."""
    waiters = Waiters()
    engine = create_engine(url)
    api = Wakeups(engine)
    api.listen(ended=waiters.ended, missed=waiters.wake_all)
    api.start()
    worker_engine = create_engine(url)
    worker = Wakeups(worker_engine)
    worker.start()

    async def scenario() -> float:
        with waiters.watch("0123456789abcdef0123456789abcdef") as ended:
            assert api.listener is not None
            await asyncio.to_thread(api.listener.connected.wait, HEARD_WITHIN_S)
            ended.clear()  # set by the connection's "missed": a woken request looks anyway
            sent = time.monotonic()
            worker.job_ended("0123456789abcdef0123456789abcdef")
            await asyncio.wait_for(ended.wait(), HEARD_WITHIN_S)
            return time.monotonic() - sent

    try:
        assert asyncio.run(scenario()) < HEARD_WITHIN_S
    finally:
        worker.stop()
        api.stop()
        worker_engine.dispose()
        engine.dispose()


def test_on_sqlite_nothing_is_sent_or_heard(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    node = Wakeups(engine)
    node.listen(work=lambda: None)
    node.start()
    node.work_queued()
    node.job_ended("x")
    node.stop()
    assert not node.enabled and node.listener is None
    assert [t.name for t in threading.enumerate() if t.name.startswith("wakeup")] == []


def test_a_database_that_is_away_costs_a_warning_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine("postgresql+psycopg://nobody:x@127.0.0.1:9/none?connect_timeout=1")
    node = Wakeups(engine)
    heard = Heard()
    node.listen(work=heard.work)
    node.start()
    node.work_queued()  # returns at once; the sending thread fails and says so
    time.sleep(1.5)
    node.stop()
    assert heard.nothing_for(0.1)
    text_ = caplog.text
    assert "cannot LISTEN for wake-ups" in text_ and "could not send 1 wake-ups" in text_
