"""Identity, statistics and the worker registry on a real PostgreSQL server (``tests/pg.py``),
and the same tests on SQLite: users, passwords, API keys and browser sessions as the server uses
them, and the upserts that several processes race on, checked by what the database holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from hushscribe.db import make_engine
from hushscribe.errors import InvalidCredentials, KeyNotFound, UserExists
from hushscribe.jobs.registry import WorkerRegistry, workers
from hushscribe.jobs.stats import Stats
from hushscribe.security.keys import KeyStore
from hushscribe.security.passwords import digest
from hushscribe.security.signin import SignIn
from hushscribe.security.tables import sessions, users
from hushscribe.security.users import UserStore, first_admin
from hushscribe.settings import AuthSettings

ALICE_PASSWORD = "alice's long passphrase 7"


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('identity') / 'hushscribe.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url, upgrade=True)
    assert engine.dialect.name == request.param
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def store(engine: Engine) -> UserStore:
    return UserStore(engine)


def together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` in ``n`` threads released at once; each one's result or exception."""
    start = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = work(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return out


def test_first_admin_once_even_when_processes_race(store: UserStore) -> None:
    made = together(4, lambda _: first_admin(store, None))
    winners = [m for m in made if m is not None]
    assert len(winners) == 1, made  # the others found it made: None, not an error
    admin, generated = winners[0]
    assert (admin.username, admin.role, admin.source, admin.disabled) == (
        "admin", "admin", "local", False,
    )  # fmt: skip
    assert generated is not None and len(generated) == 24
    assert first_admin(store, None) is None
    signin = SignIn(store, AuthSettings())
    user, method = signin.authenticate("Admin", generated, "127.0.0.1")
    assert (user.id, method) == (admin.id, "local")
    signed_in = store.get(admin.id)
    assert signed_in is not None and signed_in.last_login_at is not None


def test_users_passwords_and_disabling(store: UserStore, engine: Engine) -> None:
    alice = store.add("Alice", ALICE_PASSWORD, "user")
    assert store.named("ALICE") == alice and alice.username == "alice"
    with pytest.raises(UserExists, match="'alice' exists"):
        store.add("alice", "another passphrase 99", "admin")
    for name in ("carol", "dora", "erin"):  # first sign-ins from the directory, at once
        outcomes = together(6, lambda _, n=name: store.add(n, None, "user", source="ldap"))
        assert sorted(type(o).__name__ for o in outcomes) == ["User"] + ["UserExists"] * 5
        provisioned = together(6, lambda _, n=name: store.provision(n.upper(), "auditor"))
        assert {(u.username, u.role) for u in provisioned} == {(name, "auditor")}

    signin = SignIn(store, AuthSettings())
    assert signin.authenticate("alice", ALICE_PASSWORD, "127.0.0.1")[0].id == alice.id
    with pytest.raises(InvalidCredentials):
        signin.authenticate("alice", "not her passphrase", "127.0.0.1")
    assert store.set_role(alice.id, "auditor").role == "auditor"

    session = store.start_session(alice, "local", max_s=3600)
    disabled = store.set_disabled(alice.id, True)
    assert disabled.disabled is True  # a real boolean, both ways
    with engine.connect() as conn:
        row = conn.execute(select(users.c.disabled).where(users.c.id == alice.id)).one()
        left = conn.execute(select(func.count()).select_from(sessions)).scalar_one()
    assert row.disabled is True and left == 0  # signed out everywhere
    assert store.session_principal(session, idle_s=600) is None
    with pytest.raises(InvalidCredentials):
        signin.authenticate("alice", ALICE_PASSWORD, "127.0.0.2")
    assert store.set_disabled(alice.id, False).disabled is False
    assert [u.username for u in store.list()] == ["admin", "alice", "carol", "dora", "erin"]


def test_api_keys(store: UserStore, engine: Engine) -> None:
    bob = store.add("bob", None, "user", source="ldap")
    keys = KeyStore(engine)
    key, record = keys.create(bob.id, bob.role, "laptop", ["transcribe"], expires_in_s=3600)
    assert key.startswith("hs_") and record.scopes == ["transcribe"]
    assert record.expires_at is not None and record.expires_at > time.time() + 3500
    assert record.last_used_at is None

    found = keys.principal(key)
    assert found is not None
    assert (found.user_id, found.username, found.method, found.key_id, found.scopes) == (
        bob.id, "bob", "key", record.id, frozenset({"transcribe"}),
    )  # fmt: skip
    used = keys.get(record.id)
    assert used is not None and used.last_used_at is not None
    assert keys.principal(key + "x") is None
    assert [k.id for k in keys.list(bob.id)] == [record.id]
    with pytest.raises(KeyNotFound):
        keys.revoke(record.id, "someone else")

    revoked = keys.revoke(record.id, bob.id)
    assert revoked.revoked_at is not None and revoked.view()["state"] == "revoked"
    assert keys.principal(key) is None

    spare, spare_record = keys.create(bob.id, bob.role, "spare", expires_in_s=None)
    assert sorted(spare_record.scopes) == ["jobs:read", "transcribe"]
    assert keys.principal(spare) is not None
    store.set_disabled(bob.id, True)
    assert keys.principal(spare) is None  # a disabled owner's keys stop at once


def test_sessions_touch_expire_and_purge(store: UserStore, engine: Engine) -> None:
    dave = store.add("dave", "dave's passphrase 123", "user")

    def last_seen(session: str) -> float | None:
        query = select(sessions.c.last_seen_at).where(sessions.c.id_hash == digest(session))
        with engine.connect() as conn:
            seen: float | None = conn.execute(query).scalar_one_or_none()
        return seen

    live = store.start_session(dave, "local", max_s=3600)
    started = last_seen(live)
    assert started is not None
    time.sleep(0.3)
    found = store.session_principal(live, idle_s=1.0)  # touched past idle/4
    assert found is not None and (found.user_id, found.method) == (dave.id, "session")
    touched = last_seen(live)
    assert touched is not None and touched > started + 0.25

    idle = store.start_session(dave, "local", max_s=3600)
    short = store.start_session(dave, "local", max_s=0.2)
    time.sleep(0.8)
    assert store.session_principal(short, idle_s=600) is None  # past its absolute end
    assert last_seen(short) is None  # and ended
    assert store.purge_sessions(idle_s=0.5) == 2  # live and idle: idle longer than 0.5 s
    assert store.session_principal(idle, idle_s=600) is None

    kept = store.start_session(dave, "local", max_s=3600)
    store.end_session(digest(kept))
    assert last_seen(kept) is None


def test_stats_totals_under_concurrent_workers(engine: Engine) -> None:
    stats = Stats(engine)
    together(8, lambda i: stats.job_done(audio_seconds=10.0, processing_seconds=0.4 + i))
    together(4, lambda _: stats.add({"model_loads_total:base": 1.0}, {"queue_depth": 3.0}))
    stats.model_memory("base", 2**40)  # a terabyte: past 32 bits
    totals = stats.read()
    assert totals["processing_seconds_count"] == 8.0
    assert totals["audio_seconds_total"] == 80.0
    assert totals["processing_seconds_sum"] == pytest.approx(8 * 0.4 + sum(range(8)))
    assert totals["processing_seconds_bucket:+Inf"] == 8.0
    assert totals["processing_seconds_bucket:0.5"] == 1.0  # only the 0.4 s job
    assert totals["processing_seconds_bucket:5"] == 5.0  # 0.4, 1.4, 2.4, 3.4, 4.4
    assert totals["model_loads_total:base"] == 4.0
    assert totals["queue_depth"] == 3.0
    assert totals["model_memory_bytes:base"] == float(2**40)


def test_worker_registry(engine: Engine) -> None:
    now = [1_700_000_000.5]
    registry = WorkerRegistry(engine, clock=lambda: now[0])
    registry.register("node-a:1", 101, ["base"])
    registry.register("node-a:2", 102, [])
    now[0] += 5
    together(3, lambda i: registry.register("node-a:1", 200 + i, ["base", "tiny.en"]))
    registry.heartbeat("node-a:1", ["base", "tiny.en", "中文"])
    alive = {w.id: w for w in registry.alive(within_s=2)}
    assert list(alive) == ["node-a:1"]  # node-a:2 was last seen 5 s ago
    worker = alive["node-a:1"]
    assert worker.pid in (200, 201, 202) and worker.started_at == now[0]
    assert worker.models == ["base", "tiny.en", "中文"]
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(workers)).scalar_one()
    assert rows == 2  # re-registering replaced the row, never added one
    registry.unregister("node-a:1")
    assert [w.id for w in registry.alive(within_s=60)] == ["node-a:2"]
