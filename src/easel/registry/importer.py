"""``easel registry import-corpus``: the fetched emoji sets as artists, their icons as works.

Each set becomes one artist (id = set id) whose icons are registered as works under the set's
licence, with the corpus item id (``twemoji:fox-face``) as their source. Consent comes from the
licence (``policy.LICENCE_DEFAULTS``) through each work's registration event. Every icon goes
through the same ingest as an upload — validation, PDQ with the eight variants, the match
check — so an icon within the match distance of another set's icon is refused and reported,
not registered. Re-running registers only what is missing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from easel.corpus.render import icon_svg
from easel.corpus.sources import IconSet, load_set_json
from easel.errors import BadInput, PermissionDenied
from easel.registry.fingerprint import Fingerprint
from easel.registry.ledger import lock
from easel.registry.models import Artist, Work
from easel.registry.service import Ingestor, add_artist, prepare
from easel.registry.store import index_dir, registry_session
from easel.registry.validate import LoadedImage

Prepared = tuple[str, bytes, LoadedImage | None, Fingerprint | None, str | None]
BATCH = 256
"""Icons registered per transaction: the ledger lock is held for one batch, not a whole set."""


@dataclass
class ImportResult:
    """Per set: how many icons were registered, were already there, or were refused (and why)."""

    registered: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # item id → reason
    keys: dict[str, Path] = field(default_factory=dict)  # new artist id → key file
    seconds: float = 0.0

    @property
    def total_registered(self) -> int:
        return sum(self.registered.values())


def save_key(keys_dir: Path, artist_id: str, key: str) -> Path:
    """Write an artist's API key to ``keys_dir/artists/<id>.key``, readable by the owner only."""
    folder = keys_dir / "artists"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{artist_id}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return path


def _prepare_one(task: tuple[str, bytes]) -> Prepared:
    item_id, data = task
    try:
        loaded, fp = prepare(data, item_id)
    except BadInput as exc:
        return item_id, data, None, None, exc.message
    return item_id, data, loaded, fp, None


def _prepared(tasks: list[tuple[str, bytes]], workers: int) -> Iterator[Prepared]:
    """Validate, render and fingerprint icons (the CPU work) in ``workers`` processes, in order."""
    if workers <= 1 or len(tasks) < 64:
        yield from map(_prepare_one, tasks)
        return
    with mp.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_prepare_one, tasks, chunksize=32)


def import_corpus(url: str, sources_dir: Path, sets: list[IconSet], keys_dir: Path,
                  progress: Callable[[str, int, int], None] | None = None,
                  workers: int = 1) -> ImportResult:
    """Register ``sets`` (already fetched) as artists and works in the database at ``url``.

    ``workers`` processes validate, render and hash icons; the checks and inserts are serial,
    under the ledger lock.
    """
    started = time.perf_counter()
    result = ImportResult()
    folder = index_dir(url)
    for icon_set in sets:
        icons_json, info = load_set_json(sources_dir, icon_set)
        lic = info.get("license", {})
        spdx = lic.get("spdx") or "LicenseRef-unknown"
        default_w = icons_json.get("width", 16)
        default_h = icons_json.get("height", 16)
        with registry_session(url) as session:
            artist = session.get(Artist, icon_set.set_id)
            if artist is None:
                artist, key = add_artist(session, icon_set.set_id, icon_set.rights_holder)
                result.keys[artist.id] = save_key(keys_dir, artist.id, key)
            have = set(session.execute(select(Work.source).where(
                Work.owner_id == artist.id)).scalars())
        registered = present = 0
        tasks: list[tuple[str, bytes]] = []
        titles: dict[str, str] = {}
        for name, icon in sorted(icons_json.get("icons", {}).items()):
            item_id = f"{icon_set.set_id}:{name}"
            if item_id in have:
                present += 1
            elif not isinstance(icon, dict) or "body" not in icon:
                result.refused[item_id] = "icon entry has no SVG body"
            else:
                tasks.append((item_id, icon_svg(icon, default_w, default_h).encode()))
                titles[item_id] = name.replace("-", " ")
        stream = _prepared(tasks, workers)
        done = 0
        while done < len(tasks):
            batch = [item for _, item in zip(range(BATCH), stream, strict=False)]
            if not batch:
                break
            done += len(batch)
            with registry_session(url) as session:
                ingestor = Ingestor(session, folder)
                # Descriptors for the whole batch in one encoder pass (IngestDescriptors.prepare),
                # before the ledger lock: the checks and inserts under it need no encoder.
                ingestor.descriptors.prepare([(loaded.sha256, loaded.image)
                                              for _, _, loaded, _, error in batch
                                              if error is None and loaded is not None])
                lock(session)
                owner = session.get(Artist, icon_set.set_id)
                assert owner is not None
                for item_id, data, loaded, fp, error in batch:
                    if error is not None:
                        result.refused[item_id] = error
                        continue
                    caption = titles[item_id]
                    attribution = (f"\"{caption}\" from {icon_set.title} by "
                                   f"{icon_set.rights_holder}, {spdx} ({lic.get('url', 'no URL')}), "
                                   f"via {icon_set.spec}")
                    try:
                        # Refusals are raised before anything is written: the session stays clean.
                        ingestor.ingest(data, owner, caption, spdx, attribution=attribution,
                                        source=item_id, name=item_id, loaded=loaded, fp=fp)
                    except (BadInput, PermissionDenied) as exc:
                        result.refused[item_id] = exc.message
                        continue
                    registered += 1
            ingestor.finish()
            if progress is not None:
                progress(icon_set.set_id, done, len(tasks))
        result.registered[icon_set.set_id] = registered
        result.present[icon_set.set_id] = present
    result.seconds = time.perf_counter() - started
    return result
