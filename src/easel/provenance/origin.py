"""From a generation record back to what its model learned from: the model folder whose weights
made the image, the sets and artists its card credits, and what this registry knows of the
dataset.

A record names its model by id and by weights digest (``model_sha256``) and its training data by
dataset id. This machine can say more where it holds that model: the shipped one, the one
``EASEL_MODEL_DIR`` names, or a folder given to ``easel verify --model-dir``. A folder counts when
its weights digest equals the record's; a record logged before digests were kept is matched by
model id alone, and the answer says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def candidate_model_dirs(extra: Path | None = None) -> list[Path]:
    """Model folders this machine knows, without duplicates: ``extra``, the configured model, the
    shipped one and its upscaler (which ``easel upscale`` records as a model of its own)."""
    from easel.config import get_settings
    from easel.diffusion.defaults import SHIPPED_MODEL_DIR

    out: list[Path] = []
    for folder in (extra, get_settings().model_dir, SHIPPED_MODEL_DIR, SHIPPED_MODEL_DIR / "upscaler"):
        if folder is not None and Path(folder).is_dir() and Path(folder).resolve() not in {
                p.resolve() for p in out}:
            out.append(Path(folder))
    return out


def _card(folder: Path) -> dict[str, Any] | None:
    path = folder / "model_card.json"
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def find_model(provenance: dict[str, Any], folders: list[Path],
               cache_dir: Path | None = None) -> tuple[Path, dict[str, Any], str] | None:
    """(folder, its card, "weights" | "id") for the folder that made the record's image, if any."""
    from easel.diffusion.identity import weights_digest
    from easel.errors import BadInput

    recorded = provenance.get("model_sha256")
    for folder in folders:
        card = _card(folder)
        if card is None and not recorded:
            continue
        card = card or {}  # a folder without a card can still be the one, by its weights
        if recorded:
            try:
                if weights_digest(folder, cache_dir) == recorded:
                    return folder, card, "weights"
            except BadInput:
                continue
        elif card.get("model_id") == provenance.get("model_id"):
            return folder, card, "id"
    return None


def registry_dataset(db_url: str, dataset_id: str) -> dict[str, Any] | None:
    """What this registry recorded of ``dataset_id``: purpose, works, and works per artist."""
    from sqlalchemy import func, select

    from easel.registry.models import Artist, Dataset, DatasetItem, Work
    from easel.registry.store import registry_session

    with registry_session(db_url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            return None
        rows = session.execute(
            select(Artist.id, Artist.name, func.count())
            .select_from(DatasetItem)
            .join(Work, Work.pk == DatasetItem.work_pk)
            .join(Artist, Artist.id == Work.owner_id)
            .where(DatasetItem.dataset_id == dataset_id)
            .group_by(Artist.id, Artist.name)
            .order_by(func.count().desc(), Artist.id)).all()
        return {"purpose": dataset.purpose, "works": int(dataset.item_count),
                "artists": [{"id": a, "name": n, "works": int(c)} for a, n, c in rows]}


def model_origin(provenance: dict[str, Any] | None, db_url: str, extra_dir: Path | None = None,
                 cache_dir: Path | None = None) -> dict[str, Any] | None:
    """What the record's model learned from, as far as this machine can tell; None without a record.

    Keys: ``model_dir`` and ``matched_by`` ("weights" or "id") when a known folder made it;
    ``sources`` (the card's sets: rights holder, licence, attribution line) and ``card_dataset_id``
    from that folder's card; ``registry`` (this registry's record of the dataset) when it has one;
    ``notes`` for what could not be tied together."""
    if not provenance or not provenance.get("model_id"):
        return None
    origin: dict[str, Any] = {"notes": []}
    found = find_model(provenance, candidate_model_dirs(extra_dir), cache_dir)
    if found is None:
        origin["notes"].append("no model folder on this machine matches the record's "
                               + ("weights digest" if provenance.get("model_sha256") else "model id"))
    else:
        folder, card, how = found
        origin.update(model_dir=str(folder), matched_by=how, card_dataset_id=card.get("dataset_id"),
                      sources=[{k: s.get(k) for k in ("set_id", "rights_holder", "license_spdx",
                                                       "items", "attribution")}
                               for s in card.get("sources", []) if isinstance(s, dict)])
        if how == "id":
            origin["notes"].append("matched by model id only: the record predates weights digests")
        if provenance.get("dataset_id") and card.get("dataset_id") != provenance.get("dataset_id"):
            origin["notes"].append("the model card names another dataset than the record")
    dataset_id = provenance.get("dataset_id")
    if dataset_id:
        from sqlalchemy.exc import SQLAlchemyError

        from easel.errors import EaselError

        try:
            known = registry_dataset(db_url, str(dataset_id))
        except (SQLAlchemyError, EaselError) as exc:  # the answer stands without the registry's part
            log.warning("could not read dataset %s from the registry: %s", dataset_id, exc)
            known = None
        if known is not None:
            origin["registry"] = known
    return origin


def verification_origin(result: Any, db_url: str, extra_dir: Path | None = None,
                        cache_dir: Path | None = None) -> dict[str, Any] | None:
    """``model_origin`` of a ``verify`` result, with a note where the record is weaker than it
    looks: a manifest whose signer is not trusted, or a fingerprint likeness."""
    origin = model_origin(result.provenance, db_url, extra_dir, cache_dir)
    if origin is None:
        return None
    if result.found == "credentials" and result.credentials_state != "Trusted":
        origin["notes"].append("the record is the manifest's own claim: its signer is not in the "
                               "trust list")
    elif result.found == "fingerprint":
        origin["notes"].append("the record is of a logged image that looks like this one "
                               "(found by fingerprint), not of this file")
    return origin


__all__ = ["candidate_model_dirs", "find_model", "model_origin", "registry_dataset", "verification_origin"]
