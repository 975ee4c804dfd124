"""An artist's works and consent: upload (with the ingest verdict), list, history, changes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from easel.server import services
from easel.server.deps import ArtistUser, CurrentUser, SessionDep, SettingsDep
from easel.server.schemas import ConsentChange, ConsentEventPublic, IngestVerdict, WorkPublic

router = APIRouter(prefix="/api", tags=["works"])


async def read_upload(file: UploadFile) -> tuple[str, bytes]:
    """The upload's checked name and bytes (reads at most one byte over the limit)."""
    data = await file.read(services.MAX_UPLOAD_BYTES + 1)
    name = services.check_upload(file.filename, file.content_type, data)
    return name, data


@router.post("/works", status_code=201, response_model=IngestVerdict,
             summary="Register a work (artists): fingerprinted and checked against every registered work",
             responses={403: {"description": "refused: matches another owner's or an opted-out work"},
                        413: {"description": "file too large"}, 415: {"description": "not an image"}})
async def upload(
    user: ArtistUser, db: SessionDep, settings: SettingsDep,
    file: Annotated[UploadFile, File(description="PNG, JPEG, WebP or SVG, at most 20 MiB")],
    title: Annotated[str, Form(max_length=300)],
    license_spdx: Annotated[str, Form(max_length=64, description="SPDX id, e.g. CC-BY-4.0")],
    attribution: Annotated[str, Form(max_length=1000)] = "",
    allow: Annotated[list[str] | None, Form(description="purposes allowed: train_base, train_style, "
                                            "commercial_output")] = None,
    no_ai: Annotated[bool, Form(description="opt this work out of all AI use")] = False,
) -> IngestVerdict:
    name, data = await read_upload(file)
    work = await run_in_threadpool(services.upload_work, settings, user, data, name, title, license_spdx,
                                   attribution, allow or [], no_ai)  # CPU work off the event loop
    db.expire_all()
    consent = services.consent_now(db, [work])
    return IngestVerdict(accepted=True, summary="accepted",
                         work=services.work_public(work, consent[work.id]))


@router.get("/works", response_model=list[WorkPublic], summary="Your works (all works for operators)")
def list_works(user: CurrentUser, db: SessionDep) -> list[WorkPublic]:
    works = services.list_works(db, user)
    consent = services.consent_now(db, works)
    return [services.work_public(w, consent[w.id]) for w in works]


@router.get("/works/{work_id}", response_model=WorkPublic, summary="One of your works")
def get_work(work_id: str, user: CurrentUser, db: SessionDep) -> WorkPublic:
    work = services.owned_work(db, user, work_id)
    return services.work_public(work, services.consent_now(db, [work])[work.id])


@router.get("/works/{work_id}/consent", response_model=list[ConsentEventPublic],
            summary="The consent history of one of your works (its events and your artist-wide ones)")
def work_history(work_id: str, user: CurrentUser, db: SessionDep) -> list[ConsentEventPublic]:
    return services.consent_history(db, user, work_id)


@router.post("/works/{work_id}/consent", status_code=201, response_model=ConsentEventPublic,
             summary="Grant, revoke, opt out or opt in, for one of your works")
def change_work_consent(work_id: str, body: ConsentChange, user: ArtistUser,
                        db: SessionDep) -> ConsentEventPublic:
    event = services.change_consent(db, user, body.action, body.purposes, work_id)
    db.commit()
    return _event(event)


@router.get("/consent", response_model=list[ConsentEventPublic], summary="Your whole consent history")
def my_history(user: CurrentUser, db: SessionDep) -> list[ConsentEventPublic]:
    return services.consent_history(db, user)


@router.post("/consent", status_code=201, response_model=ConsentEventPublic,
             summary="Grant, revoke, opt out or opt in for all your works")
def change_all_consent(body: ConsentChange, user: ArtistUser, db: SessionDep) -> ConsentEventPublic:
    event = services.change_consent(db, user, body.action, body.purposes, None)
    db.commit()
    return _event(event)


def _event(e: object) -> ConsentEventPublic:
    from easel.registry.models import ConsentEvent

    assert isinstance(e, ConsentEvent)
    return ConsentEventPublic(id=e.id, seq=e.seq, kind=e.kind, work_id=e.work_id, purposes=e.purpose_list,
                              basis=e.basis, created_at=e.created_at)
