"""What the API routes and the pages share: uploads, works, consent, the gallery, verify.

Thin over the registry and provenance libraries: ownership and consent rules stay in
``easel.registry.service`` and ``easel.registry.policy``; images come from the generation log.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from easel.config import Settings
from easel.errors import BadInput, NotFound, PermissionDenied
from easel.registry.models import PURPOSES, ConsentEvent, Work
from easel.server.models import Job, User
from easel.server.schemas import ConsentEventPublic, ImagePublic, WorkPublic

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Largest image upload (20 MiB): ample for an illustration; the registry's own cap is 50 MiB."""
UPLOAD_TYPES = {"image/png", "image/jpeg", "image/webp", "image/svg+xml"}
_PLAIN_NAME = re.compile(r"^[^/\\\x00-\x1f]{1,200}$")


def check_upload(filename: str | None, content_type: str | None, data: bytes) -> str:
    """Refuse path-like names, non-image types and oversized files; return a safe name.

    The name is only a label (files are stored under their sha256), but a name with a path in
    it is a sign of a confused or hostile client, and is refused rather than trimmed.
    """
    from easel.server.app import PayloadTooLarge, UnsupportedMediaType

    name = filename or "upload"
    if not _PLAIN_NAME.match(name) or name in (".", "..") or ".." in name.split("."):
        raise BadInput(f"file name {name!r} is not a plain file name",
                       hint="send a name without '/', '\\' or '..'")
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype not in UPLOAD_TYPES:
        raise UnsupportedMediaType(f"content type {ctype or 'none'!r} is not an image type accepted here",
                                   hint=f"send one of {', '.join(sorted(UPLOAD_TYPES))}")
    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
    if not data:
        raise BadInput("the file is empty")
    return name


def work_public(work: Work, consent: dict[str, bool] | None = None) -> WorkPublic:
    return WorkPublic(id=work.id, title=work.title, owner_id=work.owner_id, license_spdx=work.license_spdx,
                      attribution=work.attribution, media_type=work.media_type, width=work.width,
                      height=work.height, sha256=work.sha256, created_at=work.created_at,
                      consent=consent or {})


def consent_now(session: Session, works: list[Work]) -> dict[str, dict[str, bool]]:
    """work id → purpose → allowed now, decided by ``policy.decide_many`` (the one policy)."""
    from easel.registry.policy import decide_many

    out: dict[str, dict[str, bool]] = {w.id: {} for w in works}
    for purpose in PURPOSES:
        for work_id, decision in decide_many(session, works, purpose).items():
            out[work_id][purpose] = decision.allowed
    return out


def upload_work(settings: Settings, user: User, data: bytes, name: str, title: str, license_spdx: str,
                attribution: str = "", allow: list[str] | None = None,
                no_ai: bool = False) -> Work:
    """Register an upload as ``user``'s work, then record their consent choices.

    ``allow``: purposes granted (the others are revoked explicitly, so the choice does not
    depend on the licence's defaults); ``no_ai``: opt the work out of all AI use. One
    transaction: a refused upload stores nothing. Raises ``PermissionDenied`` naming the match.
    """
    from easel.registry.ledger import lock
    from easel.registry.service import Ingestor, change_consent, get_artist, prepare, set_optout
    from easel.registry.store import index_dir, registry_session

    if not user.artist_id:
        raise PermissionDenied(f"only artists register works; {user.username} is a {user.role}")
    chosen = sorted(set(allow or []))
    for p in chosen:
        if p not in PURPOSES:
            raise BadInput(f"unknown purpose {p!r}", hint=f"choose from {', '.join(PURPOSES)}")
    loaded, fp = prepare(data, name)  # CPU work before any lock
    url = settings.db_url
    with registry_session(url) as session:
        lock(session)
        owner = get_artist(session, user.artist_id)
        ingestor = Ingestor(session, index_dir(url), settings.home / "works")
        work = ingestor.ingest(data, owner, title, license_spdx, attribution=attribution, name=name,
                               loaded=loaded, fp=fp)
        if no_ai:
            set_optout(session, owner, work.id)
        else:
            if chosen:
                change_consent(session, owner, "grant", chosen, work.id)
            refused = [p for p in PURPOSES if p not in chosen]
            if refused:
                change_consent(session, owner, "revoke", refused, work.id)
    ingestor.finish()
    return work


def owned_work(session: Session, user: User, work_id: str) -> Work:
    """The work if ``user`` owns it (operators see all); ``NotFound``/``PermissionDenied`` else."""
    from easel.registry.service import get_work

    work = get_work(session, work_id)
    if user.role != "operator" and work.owner_id != user.artist_id:
        raise PermissionDenied(f"work {work_id} is not yours; nothing was changed")
    return work


def list_works(session: Session, user: User) -> list[Work]:
    query = select(Work).order_by(Work.pk.desc())
    if user.role != "operator":
        if not user.artist_id:
            return []
        query = query.where(Work.owner_id == user.artist_id)
    return list(session.scalars(query.limit(500)))


def change_consent(session: Session, user: User, action: str, purposes: list[str],
                   work_id: str | None) -> ConsentEvent:
    """grant / revoke / optout / optin by the owning artist, for one work or all their works."""
    from easel.registry import service
    from easel.registry.ledger import lock

    if not user.artist_id:
        raise PermissionDenied(f"only artists have consent to change; {user.username} is a {user.role}")
    if work_id is not None:
        work = owned_work(session, user, work_id)
        if work.owner_id != user.artist_id:  # an operator may look, but consent is the owner's
            raise PermissionDenied(f"work {work_id} is not yours; consent is its owner's to change")
    lock(session)
    actor = service.get_artist(session, user.artist_id)
    if action in ("grant", "revoke"):
        return service.change_consent(session, actor, action, purposes, work_id)
    if action in ("optout", "optin"):
        return service.set_optout(session, actor, work_id, undo=action == "optin")
    raise BadInput(f"action {action!r} is not one of grant, revoke, optout, optin")


def consent_history(session: Session, user: User, work_id: str | None = None) -> list[ConsentEventPublic]:
    from easel.registry.service import history

    if work_id is not None:
        owned_work(session, user, work_id)
        events = history(session, work_id=work_id)
    elif user.artist_id:
        events = history(session, artist_id=user.artist_id)
    else:
        events = []
    return [ConsentEventPublic(id=e.id, seq=e.seq, kind=e.kind, work_id=e.work_id,
                               purposes=e.purpose_list, basis=e.basis, created_at=e.created_at)
            for e in events]


# Images ------------------------------------------------------------------------------------------
def user_generation_ids(session: Session, user: User, limit: int = 200) -> list[str]:
    """The generation ids of the user's finished jobs, newest first."""
    jobs = session.scalars(select(Job).where(Job.user_id == user.id, Job.state == "done")
                           .order_by(Job.created_at.desc()).limit(limit))
    return [gid for job in jobs for gid in job.result]


def gallery(session: Session, user: User, limit: int = 200) -> list[ImagePublic]:
    """The user's generated images (an operator's gallery shows everyone's), newest first."""
    from easel.provenance.log import GenerationRecord

    query = select(GenerationRecord).order_by(GenerationRecord.pk.desc()).limit(limit)
    if user.role != "operator":
        ids = user_generation_ids(session, user, limit)
        if not ids:
            return []
        query = query.where(GenerationRecord.id.in_(ids))
    return [ImagePublic(generation_id=r.id, url=f"/api/images/{r.id}", mode=r.mode, model_id=r.model_id,
                        seed=r.seed, style=r.style, created_at=r.created_at, watermarked=r.watermarked,
                        signed=r.signed) for r in session.scalars(query)]


def image_path(session: Session, user: User, generation_id: str) -> Path:
    """The file of a generated image the user may see (theirs, or any for an operator)."""
    from easel.provenance.log import by_id

    if not re.fullmatch(r"[0-9a-f]{12}", generation_id):
        raise NotFound(f"no image {generation_id!r}")
    record = by_id(session, generation_id)
    if record is None or (user.role != "operator"
                          and generation_id not in user_generation_ids(session, user, 10_000)):
        raise NotFound(f"no image {generation_id!r} of yours")
    path = Path(record.path)
    if not path.is_file():
        raise NotFound(f"image {generation_id} is logged but its file is gone")
    return path


def verify_upload(settings: Settings, data: bytes) -> dict[str, Any]:
    """``easel.provenance.verify.verify_bytes`` as a JSON-ready dict."""
    from easel.provenance.origin import verification_origin
    from easel.provenance.verify import verify_bytes

    result = verify_bytes(data, settings)
    out = {k: result.to_dict().get(k) for k in (
        "found", "generation_id", "credentials_state", "credentials_failures", "watermark_id",
        "fingerprint_id", "fingerprint_distance", "exact_file", "provenance", "notes")}
    origin = verification_origin(result, settings.db_url, cache_dir=settings.home / "cache")
    if origin is not None:
        origin.pop("model_dir", None)  # the server's file system is not for anonymous callers
    out["origin"] = origin
    return out


def audit_encoder(app_state: Any) -> Any:
    """The descriptor encoder for the audit page: one set on the app (tests), else the shipped
    one, else None (the page then says the audit is not available)."""
    given = getattr(app_state, "audit_encoder", None)
    if given is not None:
        return given
    try:
        from easel.audit.encoder import has_shipped, load_encoder
    except ImportError:
        return None
    return load_encoder() if has_shipped() else None


def audit_upload(settings: Settings, data: bytes, encoder: Any, name: str = "image",
                 k: int = 10) -> dict[str, Any]:
    """``easel.audit.service.Auditor.audit`` over an upload: the verdict and the closest works."""
    from easel.audit.service import Auditor, query_picture
    from easel.registry.store import index_dir, registry_session

    picture = query_picture(data, name)
    with registry_session(settings.db_url) as session:
        result = Auditor(session, index_dir(settings.db_url), encoder).audit(picture, name, k=k)
    return {"verdict": result.verdict, "matches": [
        {"work_id": m.work_id, "owner_id": m.owner_id, "title": m.title,
         "copy_score": round(m.copy_score, 3), "style_score": round(m.style_score, 3),
         "pdq_distance": m.pdq_distance, "verdict": m.verdict} for m in result.matches]}


def usable_personal_styles(session: Session, user: User,
                           base_unet_sha256: str | None) -> list[dict[str, str]]:
    """The personal styles ``user`` may generate with on this server, for the style picker:
    active, admitted by their visibility (``easel.style.service.may_use``), every work they
    learned from still allowing ``train_style``, and trained on this server's base model.
    Each as ``{"ref", "label"}``; the same checks run again when a job is queued and run."""
    from easel.style import service as styles

    out = []
    for style in styles.list_styles(session):
        if style.status != "active":
            continue
        if not styles.may_use(style, user.username, styles.shares(session, style)):
            continue
        if base_unet_sha256 is not None and style.base_model_sha256 != base_unet_sha256:
            continue
        if styles.unconsented_items(session, style):
            continue
        whose = "yours" if style.artist_id == user.username else f"by {style.artist_id}, credited"
        out.append({"ref": style.ref, "label": f"{style.ref} ({whose})"})
    return out


def base_styles() -> list[str]:
    """The base model's styles (the training sets' style tags, the held-out set excluded)."""
    from easel.corpus.sources import HELD_OUT_SET, SETS_BY_ID

    return sorted(v.style_tag.removesuffix(" style") for k, v in SETS_BY_ID.items() if k != HELD_OUT_SET)
