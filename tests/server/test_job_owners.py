"""Several servers on one database: jobs are owned, claimed atomically, and only orphans requeued.

Two ``JobRunner`` instances in one process stand for two ``easel serve`` processes; each test
runs on SQLite and on the real PostgreSQL of ``tests/conftest.py``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from easel.config import Settings
from easel.db import session_scope
from easel.provenance.log import GenerationRecord
from easel.registry.store import upgrade
from easel.server.accounts import create_user
from easel.server.jobs import MAX_JOB_ATTEMPTS, GenerationRequest, JobRunner
from easel.server.models import TERMINAL_STATES, Job, Server

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


class CountingPipe:
    """The tiny real pipeline, noting every prompt it is asked to draw."""

    def __init__(self, model_dir: Path, seen: list[str], lock: threading.Lock) -> None:
        from easel.diffusion.pipeline import load_pipeline

        self.inner = load_pipeline(model_dir)
        self.seen, self.lock = seen, lock

    def __call__(self, prompts: list[str], **kwargs: Any) -> Any:
        with self.lock:
            self.seen.extend(prompts)
        return self.inner(prompts, **kwargs)


def _user(url: str, name: str = "runner") -> Any:
    upgrade(url)
    with session_scope(url) as session:
        return create_user(session, name, "correct horse", "operator", allow_operator=True)


def _ownerless(url: str, user_id: str, n: int, prefix: str = "job") -> list[str]:
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    with session_scope(url) as session:
        for i, job_id in enumerate(ids):
            req = GenerationRequest(prompt=f"{prefix} number {i}", steps=1, seed=i)
            session.add(Job(id=job_id, user_id=user_id, state="queued", mode="txt2img", n_images=1,
                            request=req.public(), result=[]))
    return ids


def _wait_rows(url: str, ids: list[str], timeout: float = 180.0) -> dict[str, Job]:
    deadline = time.time() + timeout
    while True:
        with session_scope(url) as session:
            rows = {row.id: row for row in session.scalars(select(Job).where(Job.id.in_(ids)))}
        if all(row.state in TERMINAL_STATES for row in rows.values()) or time.time() > deadline:
            return rows
        time.sleep(0.05)


def test_two_servers_never_run_the_same_job_twice(db_url: str, server_settings: Settings,
                                                  tiny_model_dir: Path) -> None:
    assert server_settings.db_url == db_url
    user = _user(db_url)
    ids = _ownerless(db_url, user.id, 16)
    seen: list[str] = []
    lock = threading.Lock()
    runners = [JobRunner(server_settings, lambda: CountingPipe(tiny_model_dir, seen, lock),
                         poll_seconds=0.01) for _ in range(2)]
    assert runners[0].server_id != runners[1].server_id
    for runner in runners:
        runner.start()
    try:
        rows = _wait_rows(db_url, ids)
    finally:
        for runner in runners:
            runner.stop()
    assert {row.state for row in rows.values()} == {"done"}, {r.id: (r.state, r.error) for r in rows.values()}
    drawn = Counter(seen)
    assert sorted(drawn) == sorted(f"job number {i}" for i in range(16))
    assert set(drawn.values()) == {1}  # each job's prompt went through a pipeline exactly once
    assert all(row.attempts == 1 and len(row.result) == 1 for row in rows.values())
    assert {row.server_id for row in rows.values()} <= {r.server_id for r in runners}
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count()).select_from(GenerationRecord)) == 16
        servers = {s.id: s for s in session.scalars(select(Server))}
    assert all(servers[r.server_id].stopped_at is not None for r in runners)


def test_adoption_and_claims_are_atomic_under_contention(db_url: str, server_settings: Settings) -> None:
    user = _user(db_url)
    ids = _ownerless(db_url, user.id, 24)
    settings = server_settings.model_copy(update={"server_workers": 24})
    a, b = JobRunner(settings), JobRunner(settings)  # not started: nothing runs, only claims
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def grab(runner: JobRunner) -> None:
        try:
            barrier.wait()
            for _ in range(8):
                runner.adopt()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=grab, args=(r,)) for r in (a, b, a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    held_a, held_b = {h.id for h in a._pending}, {h.id for h in b._pending}
    assert not held_a & held_b and held_a | held_b == set(ids)
    assert len(a._pending) == len(held_a) and len(b._pending) == len(held_b)  # no job queued twice
    with session_scope(db_url) as session:
        owners = {row[0]: row[1] for row in session.execute(select(Job.id, Job.server_id))}
    assert all(owners[i] == a.server_id for i in held_a) and all(owners[i] == b.server_id for i in held_b)
    # a server cannot start a job another owns, and a job starts only once
    owner, thief = (a, b) if held_a else (b, a)
    some = next(iter(held_a or held_b))
    handle = owner.get(some)
    assert handle is not None
    stolen = type(handle)(id=some, user_id=user.id, request=handle.request)
    assert thief._claim([stolen]) == []
    assert stolen.state == "failed" and "another server" in (stolen.error or "")
    assert owner._claim([handle]) == [handle]
    again = type(handle)(id=some, user_id=user.id, request=handle.request)
    assert owner._claim([again]) == []  # already running: never started twice


def test_only_jobs_of_servers_that_are_gone_are_requeued(db_url: str, server_settings: Settings,
                                                         tiny_model_dir: Path) -> None:
    from easel.diffusion.pipeline import load_pipeline

    user = _user(db_url)
    now = datetime.now(UTC)
    req = GenerationRequest(prompt="fox face", steps=1, seed=5).public()
    with session_scope(db_url) as session:
        session.add(Server(id="alive", host="h", pid=1, started_at=now, heartbeat_at=now))
        session.add(Server(id="dead", host="h", pid=2, started_at=now - timedelta(hours=1),
                           heartbeat_at=now - timedelta(minutes=10)))
        session.add(Server(id="stopped", host="h", pid=3, started_at=now, heartbeat_at=now, stopped_at=now))
        for job_id, state, owner, attempts in (
                ("alive-running", "running", "alive", 1), ("alive-queued", "queued", "alive", 0),
                ("dead-running", "running", "dead", 1), ("dead-queued", "queued", "dead", 0),
                ("stopped-running", "running", "stopped", 1), ("vanished", "running", "no-such-server", 1),
                ("tired", "running", "dead", MAX_JOB_ATTEMPTS)):
            session.add(Job(id=job_id, user_id=user.id, state=state, mode="txt2img", n_images=1, request=req,
                            result=[], server_id=owner, attempts=attempts))
    runner = JobRunner(server_settings, lambda: load_pipeline(tiny_model_dir), poll_seconds=0.05)
    runner._register()
    assert runner.requeue_orphans() == 5
    with session_scope(db_url) as session:
        rows = {row.id: row for row in session.scalars(select(Job))}
    assert (rows["alive-running"].state, rows["alive-running"].server_id) == ("running", "alive")
    assert (rows["alive-queued"].state, rows["alive-queued"].server_id) == ("queued", "alive")
    for job_id in ("dead-running", "dead-queued", "stopped-running", "vanished"):
        assert (rows[job_id].state, rows[job_id].server_id) == ("queued", None), job_id
    assert rows["tired"].state == "failed" and "stopped" in (rows["tired"].error or "")
    # once started, this server adopts and runs the requeued jobs, and leaves the live server's
    runner.start()
    try:
        orphans = _wait_rows(db_url, ["dead-running", "dead-queued", "stopped-running", "vanished"])
    finally:
        runner.stop()
    assert {row.state for row in orphans.values()} == {"done"}
    assert rows["dead-running"].attempts == 1 and orphans["dead-running"].attempts == 2
    with session_scope(db_url) as session:
        assert session.get(Job, "alive-running").state == "running"  # type: ignore[union-attr]
        assert session.get(Job, "alive-queued").server_id == "alive"  # type: ignore[union-attr]


def test_a_stopping_server_hands_back_its_queue_and_cancels_reach_other_servers(
        db_url: str, server_settings: Settings, tiny_model_dir: Path) -> None:
    from easel.diffusion.pipeline import load_pipeline

    user = _user(db_url)
    first = JobRunner(server_settings)  # never started: its jobs wait in its queue
    kept = first.submit(user, GenerationRequest(prompt="blue square", steps=1, seed=1))
    dropped = first.submit(user, GenerationRequest(prompt="red heart", steps=1, seed=2))
    second = JobRunner(server_settings, lambda: load_pipeline(tiny_model_dir), poll_seconds=0.05)
    assert second.cancel_stored(dropped.id)  # cancelled from another server while queued
    assert not second.cancel_stored(dropped.id)
    first.stop()  # hands "kept" back to the shared queue
    with session_scope(db_url) as session:
        row = session.get(Job, kept.id)
        assert row is not None and row.state == "queued" and row.server_id is None
    second.start()
    try:
        rows = _wait_rows(db_url, [kept.id, dropped.id])
    finally:
        second.stop()
    assert rows[kept.id].state == "done" and rows[kept.id].server_id == second.server_id
    assert rows[dropped.id].state == "cancelled" and rows[dropped.id].result == []
