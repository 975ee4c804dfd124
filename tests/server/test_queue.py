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
