"""``train_style``: from the registry's consented works of one artist to an adapter and its row.

1. ask the policy which of the artist's works allow ``train_style`` (``service.eligible_works``);
2. load their pictures (stored uploads, or corpus icons re-rendered) at the base resolution;
3. train a LoRA adapter on the base model (``adapter.train_adapter``);
4. write the adapter and its manifest under ``EASEL_HOME/styles/<artist>/``;
5. ask the policy again (consent may have changed while training) and record the style.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from easel import __version__
from easel.errors import BadInput, PermissionDenied
from easel.style.adapter import StyleTrainConfig, config_dict


@dataclass
class TrainedStyle:
    """The recorded style: its id and reference, adapter directory, manifest and what was skipped."""

    style_id: str
    ref: str
    adapter_dir: Path
    manifest: dict[str, Any]
    skipped: dict[str, str]
    seconds: float


def styles_dir() -> Path:
    """Where adapters live: ``EASEL_HOME/styles`` (never in the repository)."""
    from easel.config import get_settings

    return get_settings().home / "styles"


def train_style(artist_id: str, name: str = "default", work_ids: Sequence[str] | None = None,
                model_dir: Path | None = None, config: StyleTrainConfig | None = None,
                url: str | None = None, progress: bool = True, device: str | None = None) -> TrainedStyle:
    """Train and record artist ``artist_id``'s personal style ``name`` (the caller has already
    proven it acts as that artist). Raises ``PermissionDenied`` naming works that may not be
    used, ``BadInput`` for too few works or a taken name."""
    import torch
    from sqlalchemy import select

    from easel.audit.service import work_picture
    from easel.diffusion.pipeline import load_pipeline, resolve_model_dir
    from easel.registry.models import Artist
    from easel.registry.store import registry_session
    from easel.style import service
    from easel.style.adapter import (
        LORA_TARGETS,
        MANIFEST_FILE,
        base_identity,
        pixels_of,
        train_adapter,
        write_adapter,
    )
    from easel.style.models import PersonalStyle

    config = config or StyleTrainConfig()
    service.check_name(name)
    tag = service.style_tag(artist_id, name)
    # 1. consent
    with registry_session(url) as session:
        eligible = service.eligible_works(session, artist_id, work_ids)
        artist = session.get(Artist, artist_id)
        assert artist is not None
        if session.scalar(select(PersonalStyle.pk).where(PersonalStyle.artist_id == artist_id,
                                                         PersonalStyle.name == name)):
            raise BadInput(f"artist {artist_id!r} already has a style named {name!r}",
                           hint="choose another --name, or `easel style delete` it first")
        artist_name = artist.name
        works = [(w.id, w.title, w.sha256, w.license_spdx, w.attribution, w) for w in eligible.works]
    # 2. pictures
    path = resolve_model_dir(model_dir)
    pipe = load_pipeline(path, device=device)
    size = pipe.base_resolution
    pixels, items = [], []
    for wid, title, sha, spdx, attribution, work in works:
        picture = work_picture(work)
        if picture is None:
            raise BadInput(f"work {wid} has no stored picture to train from",
                           hint="register it with a stored file (easel registry work add)")
        px = pixels_of(picture, size)
        pixels.append(px)
        items.append({"work_id": wid, "title": title, "sha256": sha, "license_spdx": spdx,
                      "attribution": attribution, "consent_event_id": eligible.consent[wid],
                      "pixels_sha256": hashlib.sha256(px.numpy().tobytes()).hexdigest()})
    prompts = [f"{title.strip().lower()}, {tag}" for _, title, *_ in works]
    # 3. train
    trained = train_adapter(pipe, torch.stack(pixels), prompts, config, progress=progress)
    # 4. write
    style_id = service.new_style_id()
    adapter_dir = styles_dir() / artist_id / f"{name}-{style_id}"
    attribution = (f"Style of {artist_name} ({artist_id}), trained with consent from "
                   f"{len(items)} of their works")
    manifest = {
        "style_id": style_id, "artist_id": artist_id, "artist_name": artist_name, "name": name,
        "ref": f"artist:{artist_id}/{name}", "style_tag": tag, "attribution": attribution,
        "purpose": service.PURPOSE, "items": items,
        "base_model": base_identity(path),
        "lora": {"target_modules": list(LORA_TARGETS), "rank": config.rank, "alpha": config.rank},
        "config": config_dict(config), "easel_version": __version__, "torch_version": torch.__version__,
    }
    manifest_sha = write_adapter(adapter_dir, trained, manifest)
    manifest = json.loads((adapter_dir / MANIFEST_FILE).read_text())
    # 5. ask again and record
    try:
        with registry_session(url) as session:
            again = service.eligible_works(session, artist_id, [w[0] for w in works])
            if {w.id for w in again.works} != {w[0] for w in works}:
                raise PermissionDenied("consent changed while the style was training")
            service.record_style(session, style_id, artist_id, name, adapter_dir, manifest,
                                 manifest_sha, again)
    except BaseException:
        shutil.rmtree(adapter_dir, ignore_errors=True)
        raise
    return TrainedStyle(style_id, f"artist:{artist_id}/{name}", adapter_dir, manifest,
                        eligible.skipped, trained.seconds)
