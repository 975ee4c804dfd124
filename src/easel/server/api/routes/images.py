"""Generated images: the gallery, the signed files, and their credentials."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from easel.server import services
from easel.server.deps import CurrentUser, SessionDep, SettingsDep
from easel.server.schemas import ImagePublic

router = APIRouter(prefix="/api", tags=["images"])


@router.get("/images", response_model=list[ImagePublic], summary="Your gallery (everyone's for operators)")
def gallery(user: CurrentUser, db: SessionDep) -> list[ImagePublic]:
    return services.gallery(db, user)


@router.get("/images/{generation_id}", response_class=FileResponse,
            summary="The signed PNG, byte for byte as published (C2PA manifest included)",
            responses={200: {"content": {"image/png": {}}}})
def image_file(generation_id: str, user: CurrentUser, db: SessionDep) -> FileResponse:
    path = services.image_path(db, user, generation_id)
    return FileResponse(path, media_type="image/png", filename=path.name)


@router.get("/images/{generation_id}/credentials", summary="Verify the published file: its provenance")
def credentials(generation_id: str, user: CurrentUser, db: SessionDep,
                settings: SettingsDep) -> dict[str, Any]:
    path = services.image_path(db, user, generation_id)
    return services.verify_upload(settings, path.read_bytes())
