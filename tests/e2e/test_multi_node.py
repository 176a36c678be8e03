"""Scale-out, end to end: a real PostgreSQL, one API node and two worker nodes, each in its own
network namespace (its own address; the database and the API reached over veths), sharing the
data directory as nodes share a ReadWriteMany volume. 20 jobs spread over both workers; one worker
node is killed with SIGKILL mid-job and its job finishes on the other; the API is restarted
meanwhile and clients see nothing worse than a retry; no job is lost or done twice. At the
defaults a user gets: 30 s leases."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.netns import Lab, Namespace
from tests.pg import PgServer, start_server
from tests.service import ADMIN_PASSWORD, KEYS, free_port, service_data_dir
from tests.speech import clips

pytestmark = pytest.mark.slow
JOBS = 20
DONE_LINE = re.compile(r"job (\S+) done by (\S+) with")


class Node:
    """One ``hushscribe serve --role …`` process inside a namespace."""

    def __init__(self, ns: Namespace, name: str, args: list[str], env: dict[str, str], log: Path):
        self.ns, self.name, self.args, self.env, self.log = ns, name, args, env, log
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> "Node":
        hushscribe = str(Path(sys.executable).with_name("hushscribe"))
        with self.log.open("a") as out:
            self.proc = self.ns.popen(
                [hushscribe, "serve", *self.args, "--log-level", "info"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def done_jobs(self) -> list[str]:
        return [m.group(1) for m in DONE_LINE.finditer(self.log.read_text(errors="replace"))]

    def pids(self) -> set[int]:
        assert self.proc is not None
        try:
            me = psutil.Process(self.proc.pid)
            return {self.proc.pid, *(c.pid for c in me.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(30)


def _short_english() -> list[Any]:
    """English clips, shortest first: the later jobs take seconds each, so a worker is caught
    in the middle of one."""
    found = sorted((c for c in clips() if c.language == "en" and 3 < c.duration < 40),
                   key=lambda c: c.duration)  # fmt: skip
    assert len(found) >= 6, found
    return found


def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _retrying(call: Any, retries: list[int]) -> httpx.Response:
    """What a client does when the API node restarts: retry a refused connection."""
    for _ in range(240):
        try:
            return call()
        except httpx.TransportError:
            retries.append(1)
            time.sleep(0.25)
    raise AssertionError("the API did not come back")


def test_two_worker_nodes_an_api_node_a_kill_and_a_restart(tmp_path: Path, data_dir: Path) -> None:
    with Lab() as lab:
        api_ns, w1_ns, w2_ns = lab.add(), lab.add(), lab.add()
        pg: PgServer = start_server(listen=("127.0.0.1", *(n.gateway for n in lab.namespaces)))
        nodes: list[Node] = []
        try:
            _run(tmp_path, data_dir, lab, pg, api_ns, (w1_ns, w2_ns), nodes)
        finally:
            for node in nodes:
                node.stop()
            pg.stop()


def _run(
    tmp_path: Path, data_dir: Path, lab: Lab, pg: PgServer, api_ns: Namespace,
    worker_ns: tuple[Namespace, Namespace], nodes: list[Node],
) -> None:  # fmt: skip
    database = pg.create_database("multinode").rsplit("/", 1)[1]
    shared = service_data_dir(tmp_path / "shared", data_dir / "models")

    def env(ns: Namespace) -> dict[str, str]:
        url = pg.url(database).replace("127.0.0.1", ns.gateway)
        base = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
        return {
            **base,
            "HUSHSCRIBE_DATA_DIR": str(shared),
            "HUSHSCRIBE_DATABASE_URL": url,
            "HUSHSCRIBE_AUTH__API_KEYS": json.dumps(KEYS),
            "HUSHSCRIBE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "HUSHSCRIBE_NETWORK__ALLOW": json.dumps([str(lab.net(1).supernet(8)), "127.0.0.0/8"]),
            "HUSHSCRIBE_ENGINE__DEFAULT_MODEL": "tiny.en",
            "HUSHSCRIBE_ENGINE__CPU_THREADS": "1",
            "HUSHSCRIBE_JOBS__WORKERS": "1",
        }

    upgrade = subprocess.run(
        [str(Path(sys.executable).with_name("hushscribe")), "db", "upgrade"],
        env={**env(api_ns), "HUSHSCRIBE_DATABASE_URL": pg.url(database)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    port = free_port()
    api = Node(api_ns, "api", ["--role", "api", "--host", "0.0.0.0", "--port", str(port)],
               env(api_ns), tmp_path / "api.log").start()  # fmt: skip
    nodes.append(api)
    workers = [
        Node(ns, f"worker{i}", ["--role", "worker"], env(ns), tmp_path / f"worker{i}.log").start()
        for i, ns in enumerate(worker_ns, 1)
    ]
    nodes.extend(workers)
    url = f"http://{api_ns.address}:{port}"
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    client = httpx.Client(base_url=url, headers=headers, timeout=120, trust_env=False)
    try:
        _jobs(client, api, workers, pg, database)
    finally:
        client.close()


def _jobs(
    client: httpx.Client, api: Node, workers: list[Node], pg: PgServer, database: str
) -> None:
    shared = Path(api.env["HUSHSCRIBE_DATA_DIR"])

    def ready() -> bool:
        try:
            return client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    _until("the API node ready with a live worker", ready, 120)
    _until("both worker nodes registered", lambda: len(_alive_workers(pg, database)) >= 2, 120)

    chosen = _short_english()
    submitted: dict[str, Any] = {}

    def submit(i: int) -> None:
        c = chosen[i % len(chosen)]
        with c.path.open("rb") as fh:
            r = client.post("/v1/jobs", files={"file": (c.path.name, fh)},
                            data={"language": "en"})  # fmt: skip
        assert r.status_code == 202, r.text
        submitted[r.json()["id"]] = c

    # Half the jobs first: both nodes take some. Then the rest at once, so that both are busy
    # for a while, and kill (SIGKILL: no requeue, its lease must run out) a node holding a job.
    for i in range(JOBS // 2):
        submit(i)
    _until("both worker nodes done with a job", lambda: all(w.done_jobs() for w in workers), 240)
    for i in range(JOBS // 2, JOBS):
        submit(i)

    def busy() -> tuple[Node, list[str]] | None:
        for node in workers:
            running = _running_on(pg, database, node.pids())
            if running:
                return node, running
        return None

    victim, held = _until("a worker node in the middle of a job", busy, 240)
    survivor = workers[1] if victim is workers[0] else workers[0]
    killed_at = time.monotonic()
    done_before_kill = len(victim.done_jobs())
    victim.kill9()
    killed_job = held[0]

    # Restart the API node meanwhile; clients poll through it and retry.
    assert api.stop() == 0
    api.start()
    retries: list[int] = []
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 420
    while len(results) < JOBS and time.monotonic() < deadline:
        for job_id in submitted:
            if job_id in results:
                continue
            view = _retrying(lambda j=job_id: client.get(f"/v1/jobs/{j}"), retries)
            assert view.status_code == 200, view.text
            body = view.json()
            assert body["status"] not in ("failed", "cancelled"), body
            if body["status"] == "done":
                r = _retrying(lambda j=job_id: client.get(f"/v1/jobs/{j}/result"), retries)
                assert r.status_code == 200, r.text
                results[job_id] = {"view": body, "text": r.json()["text"]}
        time.sleep(0.5)
    assert len(results) == JOBS, f"{JOBS - len(results)} jobs never finished"
    finished_in = time.monotonic() - killed_at

    # Every job's words are there: nothing lost, nothing mixed up between jobs.
    for job_id, c in submitted.items():
        said = _words(results[job_id]["text"])
        expected = _words(c.reference)
        assert len(set(expected) & set(said)) >= len(set(expected)) // 2, (c.path.name, said)
        assert expected[0] in said, (c.path.name, said)
    # Done once each: one result, one audit record per job.
    audit = [
        json.loads(line)
        for f in sorted((shared / "audit").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    done_records = Counter(r["target"] for r in audit if r["type"] == "transcription_done")
    assert set(done_records) == set(submitted)
    assert max(done_records.values()) == 1, done_records
    # Spread over both worker nodes; the killed node's job was finished by the other.
    by_victim, by_survivor = victim.done_jobs(), survivor.done_jobs()
    assert len(by_victim) == done_before_kill
    assert killed_job in by_survivor and killed_job not in by_victim
    assert sorted(by_victim + by_survivor) == sorted(submitted)
    assert by_victim and by_survivor
    assert results[killed_job]["view"]["attempts"] == 2
    print(
        f"\nmulti-node: {JOBS} jobs — killed node {len(by_victim)} (then mid-job {killed_job}),"
        f" other node {len(by_survivor)}; API restarted, client retries {len(retries)};"
        f" all done {finished_in:.0f} s after the kill"
    )


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _db(pg: PgServer, database: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(pg.conninfo(database)) as conn:
        return list(conn.execute(sql.encode()).fetchall())


def _alive_workers(pg: PgServer, database: str) -> list[tuple[Any, ...]]:
    return _db(pg, database, "SELECT id, pid FROM workers")


def _running_on(pg: PgServer, database: str, pids: set[int]) -> list[str]:
    """Jobs running under a worker whose process is one of ``pids``."""
    owners = {wid for wid, pid in _alive_workers(pg, database) if pid in pids}
    rows = _db(pg, database, "SELECT id, lease_owner FROM jobs WHERE status = 'running'")
    return [job_id for job_id, owner in rows if owner in owners]
