"""``easel registry import-corpus``: the fetched emoji sets as artists, their icons as works.

Each set becomes one artist (id = set id) whose icons are registered as works under the set's
licence, with the corpus item id (``twemoji:fox-face``) as their source. Consent comes from the
licence (``policy.LICENCE_DEFAULTS``) through each work's registration event. Every icon goes
through the same ingest as an upload — validation, PDQ with the eight variants, the match
check — so an icon within the match distance of another set's icon is refused and reported,
not registered. Re-running registers only what is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from easel.corpus.render import icon_svg
from easel.corpus.sources import IconSet, load_set_json
from easel.errors import BadInput, PermissionDenied
from easel.registry.models import Artist
from easel.registry.service import Ingestor, add_artist
from easel.registry.store import index_dir, registry_session


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


def import_corpus(url: str, sources_dir: Path, sets: list[IconSet], keys_dir: Path,
                  progress: Callable[[str, int, int], None] | None = None) -> ImportResult:
    """Register ``sets`` (already fetched) as artists and works in the database at ``url``."""
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
            from sqlalchemy import select

            from easel.registry.models import Work

            have = set(session.execute(select(Work.source).where(
                Work.owner_id == artist.id)).scalars())
        registered = present = 0
        icons = sorted(icons_json.get("icons", {}).items())
        with registry_session(url) as session:
            ingestor = Ingestor(session, folder)
            owner = session.get(Artist, icon_set.set_id)
            assert owner is not None
            for n, (name, icon) in enumerate(icons):
                item_id = f"{icon_set.set_id}:{name}"
                if progress is not None:
                    progress(icon_set.set_id, n, len(icons))
                if item_id in have:
                    present += 1
                    continue
                if not isinstance(icon, dict) or "body" not in icon:
                    result.refused[item_id] = "icon entry has no SVG body"
                    continue
                svg = icon_svg(icon, default_w, default_h)
                caption = name.replace("-", " ")
                attribution = (f"\"{caption}\" from {icon_set.title} by {icon_set.rights_holder}, "
                               f"{spdx} ({lic.get('url', 'no URL')}), via {icon_set.spec}")
                try:
                    # Refusals are raised before anything is written, so the session stays clean.
                    ingestor.ingest(svg.encode(), owner, caption, spdx, attribution=attribution,
                                    source=item_id, name=item_id)
                except (BadInput, PermissionDenied) as exc:
                    result.refused[item_id] = exc.message
                    continue
                registered += 1
        ingestor.finish()
        result.registered[icon_set.set_id] = registered
        result.present[icon_set.set_id] = present
    result.seconds = time.perf_counter() - started
    return result
