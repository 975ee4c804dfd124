"""The job queue's bound: a burst beyond it is refused with 429 and stores nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from easel.db import session_scope
from easel.errors import EaselError
from easel.registry.store import upgrade
from easel.server.accounts import create_user
from easel.server.jobs import GenerationRequest, JobRunner, QueueFull
from easel.server.models import Job


def test_full_queue_refuses_and_queued_jobs_cancel(server_settings) -> None:
    from easel.server.app import status_for

    settings = server_settings.model_copy(update={"server_queue": 2})
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        user = create_user(session, "burst", "correct horse", "creator")
    runner = JobRunner(settings)  # not started: nothing takes jobs off the queue
    first = runner.submit(user, GenerationRequest(prompt="fox"))
    runner.submit(user, GenerationRequest(prompt="fox"))
    try:
        runner.submit(user, GenerationRequest(prompt="fox"))
        raise AssertionError("a third job fitted in a queue of two")
    except QueueFull as exc:
        assert status_for(exc) == 429 and "full" in exc.message
    with session_scope(settings.db_url) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2
    runner.cancel(first)
    assert first.state == "cancelled" and first.done_event.is_set()
    with session_scope(settings.db_url) as session:
        row = session.get(Job, first.id)
        assert row is not None and row.state == "cancelled"
    try:
        runner.submit(user, GenerationRequest(prompt="fox", steps=0))
        raise AssertionError("steps=0 was queued")
    except EaselError as exc:
        assert "steps" in exc.message


def test_compatible_queued_jobs_share_one_pipeline_call(server_settings) -> None:
    import time

    from easel.provenance.log import GenerationRecord

    upgrade(server_settings.db_url)
    with session_scope(server_settings.db_url) as session:
        user = create_user(session, "batcher", "correct horse", "creator")
    runner = JobRunner(server_settings)
    same = [runner.submit(user, GenerationRequest(prompt=p, steps=2, seed=s))
            for p, s in (("fox face", 1), ("red heart", 2), ("blue square", 3))]
    other = runner.submit(user, GenerationRequest(prompt="fox face", steps=3, seed=4))
    runner.start()  # the queue already holds all four when the worker looks
    try:
        deadline = time.time() + 120
        while not all(h.done_event.is_set() for h in [*same, other]) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    assert [h.state for h in [*same, other]] == ["done"] * 4
    with session_scope(server_settings.db_url) as session:
        started = {h.id: session.get(Job, h.id).started_at for h in [*same, other]}  # type: ignore[union-attr]
        seeds = {r.id: r.seed for r in session.scalars(select(GenerationRecord))}
        prompts = {r.id: r.prompt for r in session.scalars(select(GenerationRecord))}
    assert len({started[h.id] for h in same}) == 1  # one pipeline call
    assert started[other.id] != started[same[0].id]  # different steps: a call of its own
    for handle, (prompt, seed) in zip(same, (("fox face", 1), ("red heart", 2), ("blue square", 3)),
                                      strict=True):
        (gid,) = handle.result
        assert seeds[gid] == seed and prompts[gid] == prompt
