"""Verify any image: content credentials, else watermark, else fingerprint (no login needed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from fastapi.concurrency import run_in_threadpool

from easel.server.api.routes.works import read_upload
from easel.server.deps import OptionalAuthDep, SettingsDep
from easel.server.schemas import VerifyPublic
from easel.server.services import verify_upload

router = APIRouter(prefix="/api", tags=["provenance"])


@router.post("/verify", response_model=VerifyPublic, summary="Where did this image come from?")
async def verify(auth: OptionalAuthDep, settings: SettingsDep,
                 file: Annotated[UploadFile, File(description="PNG, JPEG or WebP")]) -> VerifyPublic:
    _name, data = await read_upload(file)
    return VerifyPublic(**await run_in_threadpool(verify_upload, settings, data))
