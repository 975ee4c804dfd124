"""What was built from registered works: datasets (corpus manifests) and models trained on them.

``easel corpus build --purpose P`` records its dataset here with each item's consent event;
the trainer records each model with ``record_model``. ``affected`` answers a withdrawal's
question: which datasets and models included this artist's works, and which of those works
may no longer be used for the dataset's purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from easel.errors import BadInput
from easel.registry import policy
from easel.registry.models import Dataset, DatasetItem, TrainedModel, Work
from easel.registry.service import get_artist


def record_dataset(session: Session, dataset_id: str, purpose: str, manifest_path: Path | str,
                   items: Mapping[str, str]) -> Dataset:
    """Record a dataset built for ``purpose`` from ``items`` (corpus item id → consent event id).

    Recording the same dataset id again is a no-op (the id is the manifest's hash).
    """
    policy.check_purpose(purpose)
    existing = session.get(Dataset, dataset_id)
    if existing is not None:
        return existing
    works = policy.works_by_source(session, items)
    missing = [item for item in items if item not in works]
    if missing:
        raise BadInput(f"{len(missing)} dataset item(s) are not registered works, e.g. {missing[0]}")
    dataset = Dataset(id=dataset_id, purpose=purpose, manifest_path=str(manifest_path),
                      item_count=len(items))
    session.add(dataset)
    session.flush()
    session.add_all(DatasetItem(dataset_id=dataset_id, work_pk=works[item].pk,
                                consent_event_id=event_id) for item, event_id in items.items())
    session.flush()
    return dataset


def record_model(session: Session, model_id: str, dataset_id: str, kind: str = "base",
                 path: str = "") -> TrainedModel:
    """Record that model ``model_id`` was trained on dataset ``dataset_id`` (idempotent)."""
    existing = session.get(TrainedModel, model_id)
    if existing is not None:
        if existing.dataset_id != dataset_id:
            raise BadInput(f"model {model_id!r} is already recorded with dataset "
                           f"{existing.dataset_id[:12]}…",
                           hint="an export's id names its weights, so these very weights were "
                                f"recorded from that dataset ({existing.path or 'no path'}); "
                                "train on until they differ, or keep the recorded model")
        return existing
    model = TrainedModel(id=model_id, dataset_id=dataset_id, kind=kind, path=path)
    session.add(model)
    session.flush()
    return model


@dataclass
class AffectedDataset:
    """A dataset holding some of an artist's works, and the models trained on it."""

    dataset_id: str
    purpose: str
    manifest_path: str
    works: list[str] = field(default_factory=list)
    withdrawn: dict[str, str] = field(default_factory=dict)  # work id → why no longer allowed
    models: list[TrainedModel] = field(default_factory=list)
    outputs: int = 0  # images in this database's generation log whose record names the dataset
    model_outputs: dict[str, int] = field(default_factory=dict)  # model id → its logged images


def affected(session: Session, artist_id: str) -> list[AffectedDataset]:
    """Every recorded dataset that includes a work of ``artist_id``, oldest first, with the
    models trained on it and the images logged here whose records name it (in all and per model
    id): the outputs a withdrawal may concern."""
    from easel.provenance.log import GenerationRecord

    get_artist(session, artist_id)
    rows = session.execute(
        select(Dataset, Work)
        .join(DatasetItem, DatasetItem.dataset_id == Dataset.id)
        .join(Work, Work.pk == DatasetItem.work_pk)
        .where(Work.owner_id == artist_id)
        .order_by(Dataset.created_at, Dataset.id, Work.pk)).all()
    out: dict[str, AffectedDataset] = {}
    works_by_dataset: dict[str, list[Work]] = {}
    for dataset, work in rows:
        entry = out.setdefault(dataset.id, AffectedDataset(dataset.id, dataset.purpose,
                                                           dataset.manifest_path))
        entry.works.append(work.id)
        works_by_dataset.setdefault(dataset.id, []).append(work)
    for dataset_id, entry in out.items():
        decisions = policy.decide_many(session, works_by_dataset[dataset_id], entry.purpose)
        entry.withdrawn = {wid: d.reason for wid, d in decisions.items() if not d.allowed}
        entry.models = list(session.execute(select(TrainedModel).where(
            TrainedModel.dataset_id == dataset_id).order_by(TrainedModel.created_at)).scalars())
        entry.model_outputs = {model_id: int(n) for model_id, n in session.execute(
            select(GenerationRecord.model_id, func.count()).where(
                GenerationRecord.dataset_id == dataset_id).group_by(GenerationRecord.model_id))}
        entry.outputs = sum(entry.model_outputs.values())
    return list(out.values())
