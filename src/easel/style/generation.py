"""Generating with a personal style: the check at every call, the adapter, the credit.

``begin`` proves who is acting and asks ``service.check_use`` (visibility, withdrawal, the
consent of every work the style learned from); ``apply`` loads the adapter onto the pipeline
(refusing another base model); ``publish_fields`` gives ``GenerationInfo`` the attribution
(C2PA manifest and generation log name the artist) and the hook that writes one credit row in
the generation log's transaction — refusing there if the style was withdrawn meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from easel.style.service import StyleUse

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from easel.diffusion.pipeline import EaselPipeline


def begin(ref: str, user: str | None, key: str | None, url: str | None = None) -> StyleUse:
    """Check that ``user`` (proven by ``key``; None: anonymous) may generate with ``ref`` now."""
    from easel.registry.store import registry_session
    from easel.style import service

    with registry_session(url) as session:
        acting = service.identify(session, user, key) if user else None
        return service.check_use(session, ref, acting)


def apply(pipe: EaselPipeline, use: StyleUse, model_dir: Path) -> dict[str, Any]:
    """Load the style's adapter onto ``pipe`` (loaded from ``model_dir``); returns its manifest."""
    from easel.style.adapter import apply_style

    return apply_style(pipe, use.adapter_path, model_dir)


def styled_prompt(prompt: str, use: StyleUse) -> str:
    """The prompt the adapter was trained with: "<prompt>, <style tag>"."""
    return f"{prompt}, {use.style_tag}"


def publish_fields(use: StyleUse) -> dict[str, Any]:
    """``GenerationInfo`` keyword arguments for an output made with ``use``."""
    from easel.style.service import record_credit

    def credit(session: Session, generation_id: str) -> None:
        record_credit(session, use, generation_id)

    return {"style": use.ref, "style_artist": use.artist_id, "style_attribution": use.attribution,
            "on_log": credit}


def parameters(use: StyleUse) -> dict[str, Any]:
    """What the generation parameters record about the style (manifest and log)."""
    return {"style_id": use.style_id, "style_commercial_use": use.commercial}
