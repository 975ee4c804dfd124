"""The corpus as a query over the registry: the items allowed for a purpose now.

``easel corpus build --purpose P`` calls ``allowed_items(P)`` and builds only those items,
recording each one's consent-event id in the manifest; ``record_build`` then records the
dataset in the registry so a later withdrawal can name it (``easel registry affected``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select


def allowed_items(purpose: str, url: str | None = None,
                  at: datetime | None = None) -> dict[str, str]:
    """Corpus item id → consent event id for every registered corpus item allowed for ``purpose``.

    Items are works whose source is a corpus item id (``set:icon``, as ``import-corpus`` makes
    them). The decision is ``easel.registry.policy``'s, nothing else's.
    """
    from easel.registry.models import Work
    from easel.registry.policy import check_purpose, decide_many
    from easel.registry.store import registry_session

    check_purpose(purpose)
    with registry_session(url) as session:
        works = list(session.execute(select(Work).where(Work.source.is_not(None))
                                     .order_by(Work.pk)).scalars())
        works = [w for w in works if w.source and ":" in w.source and "://" not in w.source]
        decisions = decide_many(session, works, purpose, at)
        out: dict[str, str] = {}
        for work in works:
            decision = decisions[work.id]
            if decision.allowed and decision.event_id is not None and work.source:
                out[work.source] = decision.event_id
        return out


def record_build(manifest_path: Path, purpose: str, url: str | None = None) -> str:
    """Record a built manifest as a dataset of the registry; returns its dataset id."""
    from easel.corpus.manifest import load_manifest, manifest_metadata
    from easel.registry.lineage import record_dataset
    from easel.registry.store import registry_session

    table = load_manifest(manifest_path)
    dataset_id = manifest_metadata(table)["dataset_id"]
    items = dict(zip(table.column("item_id").to_pylist(),
                     table.column("consent_event_id").to_pylist(), strict=True))
    with registry_session(url) as session:
        record_dataset(session, dataset_id, purpose, manifest_path, items)
    return dataset_id


def disallowed(item_ids: list[str], purpose: str, url: str | None = None) -> dict[str, str]:
    """Item id → reason for each corpus item not allowed for ``purpose`` now (the trainer's check).

    A thin wrapper that opens the registry; the decision is ``policy.disallowed_items``'.
    """
    from easel.registry.policy import disallowed_items
    from easel.registry.store import registry_session

    with registry_session(url) as session:
        return disallowed_items(session, item_ids, purpose)


def require_consent(manifest: Path, purpose: str = "train_base", url: str | None = None) -> dict[str, str]:
    """Refuse (``PermissionDenied``, naming items) unless every manifest row is allowed for ``purpose`` now.

    Every trainer calls this before it reads an image. Returns item id → consent-event id.
    """
    from easel.corpus.manifest import load_manifest
    from easel.errors import PermissionDenied

    table = load_manifest(manifest)
    ids = table.column("item_id").to_pylist()
    refused = disallowed(ids, purpose, url)
    if refused:
        listed = "; ".join(f"{k}: {v}" for k, v in sorted(refused.items())[:3])
        raise PermissionDenied(
            f"{len(refused)} of {len(ids)} items of {manifest} are not allowed for {purpose} now ({listed}…)",
            hint=f"rebuild the manifest with `easel corpus build --purpose {purpose}`",
        )
    events = table.column("consent_event_id").to_pylist() if "consent_event_id" in table.column_names \
        else [None] * len(ids)
    return {i: e for i, e in zip(ids, events, strict=True) if e}
