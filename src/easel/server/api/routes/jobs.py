"""Generation jobs: submit, read, follow (server-sent events), cancel, list."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from easel.errors import BadInput, NotFound
from easel.server.deps import CurrentUser, RunnerDep, SessionDep
from easel.server.jobs import GenerationRequest, JobHandle, JobRunner, load_upload
from easel.server.models import TERMINAL_STATES, Job, User
from easel.server.schemas import JobCreate, JobPublic, StyleChoice

router = APIRouter(prefix="/api", tags=["generation"])
SSE_POLL_SECONDS = 0.1


def decode_b64_image(value: str | None, what: str) -> object:
    """A base64 image (optionally a ``data:`` URL) checked by the registry's validator."""
    if value is None:
        return None
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"{what}: not valid base64") from exc
    return load_upload(data, what)


def request_from(body: JobCreate) -> GenerationRequest:
    return GenerationRequest(prompt=body.prompt, style=body.style, n=body.n, seed=body.seed,
                             steps=body.steps, guidance=body.guidance, strength=body.strength,
                             init_image=decode_b64_image(body.init_image, "init_image"),
                             mask_image=decode_b64_image(body.mask_image, "mask_image"),
                             upscale=body.upscale, include_prompt=body.include_prompt)


def job_public_from_row(row: Job) -> JobPublic:
    return JobPublic(id=row.id, state=row.state, progress=1.0 if row.state == "done" else 0.0,
                     mode=row.mode, n_images=row.n_images, result=list(row.result), error=row.error)


def visible_handle(runner: JobRunner, db: SessionDep, user: User, job_id: str) -> JobHandle | Job:
    """The live handle (or the row) of a job the user may see; ``NotFound`` otherwise."""
    handle = runner.get(job_id)
    if handle is not None:
        if handle.user_id == user.id or user.role == "operator":
            return handle
        raise NotFound(f"no job {job_id!r} of yours")
    row = db.get(Job, job_id)
    if row is None or (row.user_id != user.id and user.role != "operator"):
        raise NotFound(f"no job {job_id!r} of yours")
    return row


@router.post("/jobs", status_code=202, response_model=JobPublic,
             summary="Queue a generation (txt2img, or img2img/inpaint with init_image/mask_image)",
             responses={429: {"description": "quota used up or queue full (Retry-After)"}})
def submit(body: JobCreate, user: CurrentUser, runner: RunnerDep) -> JobPublic:
    handle = runner.submit(user, request_from(body))
    return JobPublic(**handle.snapshot())


@router.get("/styles", response_model=list[StyleChoice],
            summary="The styles you may generate with: the base model's, then personal styles")
def styles(user: CurrentUser, db: SessionDep, runner: RunnerDep) -> list[StyleChoice]:
    from easel.server import services

    out = [StyleChoice(value=s, label=s, personal=False) for s in services.base_styles()]
    out += [StyleChoice(value=p["ref"], label=p["label"], personal=True)
            for p in services.usable_personal_styles(db, user, runner.base_unet_sha256())]
    return out


@router.get("/jobs", response_model=list[JobPublic], summary="Your recent jobs, newest first")
def list_jobs(user: CurrentUser, db: SessionDep, runner: RunnerDep) -> list[JobPublic]:
    rows = db.scalars(select(Job).where(Job.user_id == user.id).order_by(Job.created_at.desc()).limit(100))
    out = []
    for row in rows:
        live = runner.get(row.id)
        out.append(JobPublic(**live.snapshot()) if live else job_public_from_row(row))
    return out


@router.get("/jobs/{job_id}", response_model=JobPublic, summary="A job's state and progress")
def get_job(job_id: str, user: CurrentUser, db: SessionDep, runner: RunnerDep) -> JobPublic:
    found = visible_handle(runner, db, user, job_id)
    return JobPublic(**found.snapshot()) if isinstance(found, JobHandle) else job_public_from_row(found)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic, summary="Cancel a queued or running job")
def cancel(job_id: str, user: CurrentUser, db: SessionDep, runner: RunnerDep) -> JobPublic:
    found = visible_handle(runner, db, user, job_id)
    if not isinstance(found, JobHandle):  # long finished, or held by another server
        if found.state == "queued" and runner.cancel_stored(found.id):
            db.refresh(found)
        return job_public_from_row(found)
    runner.cancel(found)
    return JobPublic(**found.snapshot())


@router.get("/jobs/{job_id}/events", summary="Server-sent events: the job's state on every change",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(job_id: str, request: Request, user: CurrentUser, db: SessionDep,
                 runner: RunnerDep) -> StreamingResponse:
    found = visible_handle(runner, db, user, job_id)
    db.close()  # the stream may last minutes: it needs no database connection

    async def stream() -> AsyncIterator[str]:
        if not isinstance(found, JobHandle):
            yield f"event: job\ndata: {job_public_from_row(found).model_dump_json()}\n\n"
            return
        if not found.history:  # nothing has happened yet: say where the job stands
            yield f"event: job\ndata: {json.dumps(found.snapshot())}\n\n"
        seen = 0
        while True:
            for version, snap in [entry for entry in list(found.history) if entry[0] > seen]:
                seen = version
                yield f"event: job\ndata: {json.dumps(snap)}\n\n"
                if snap["state"] in TERMINAL_STATES:
                    return
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_SECONDS)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
