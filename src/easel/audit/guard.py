"""The copy descriptor where images enter and leave: the registry's ingest check and the
generator's output guard.

``IngestDescriptors`` rides along an ``easel.registry.service.Ingestor``: ``check`` adds to the
ingest check every registered work (saved index plus works added in this session) whose copy
score with the upload reaches ``REGISTRY_COPY_THRESHOLD``; ``add`` stores a new work's copy
descriptors (one per reference view) and style descriptor in ``work_descriptors``; ``finish``
brings the saved indexes up to date.
Both do nothing (and say so once in the log) when no descriptor encoder is shipped.

``output_guard`` is called by ``provenance.publish._output_guard`` on every image about to be
published: one encoder pass and one FAISS search; a near-copy of any registered work is refused
naming the work. It skips, with a logged reason, when there is no encoder or no registered
work with descriptors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from easel.audit.thresholds import NEAR_COPY_THRESHOLD, REGISTRY_COPY_THRESHOLD
from easel.errors import PermissionDenied

log = logging.getLogger(__name__)
T = TypeVar("T")
_warned: set[str] = set()


def _encoder_or_none():  # type: ignore[no-untyped-def]
    folder = Path(__file__).resolve().parent.parent / "models" / "descriptors"
    if not (folder / "config.json").exists():  # checked before importing torch
        if "encoder" not in _warned:
            _warned.add("encoder")
            log.warning("no descriptor encoder shipped: copy-descriptor checks are skipped")
        return None
    from easel.audit.encoder import load_encoder

    return load_encoder()


def _warn_if_stale(session: Session) -> None:
    """Log once per process when registered works lack descriptors from the shipped encoder."""
    if "stale" in _warned:
        return
    _warned.add("stale")
    from easel.audit.service import stale_descriptor_works

    stale = stale_descriptor_works(session)
    if stale:
        log.warning("%d registered works were described by an older descriptor encoder: the copy-"
                    "descriptor check misses them until `easel audit index` describes them anew", stale)


class IngestDescriptors:
    """Copy-descriptor matching and storage for one ``Ingestor`` (one registry session)."""

    def __init__(self, session: Session, index_folder: Path) -> None:
        self.session = session
        self.folder = index_folder
        self.encoder = _encoder_or_none()
        self.pending_keys: list[int] = []
        self.pending_views: list[np.ndarray] = []  # [V x D] reference views of each
        self._descriptors: dict[str, np.ndarray] = {}
        self._queries: dict[str, np.ndarray] = {}  # from ``prepare``
        self._references: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # from ``prepare``
        self._saved: Any = None
        self._pending_matrix: np.ndarray | None = None

    def saved_index(self, dim: int) -> Any:
        """The saved copy index as of this session's first check (works added since are pending).

        Taken once: asked again after ``add``, the session's own uncommitted rows would make it
        look stale on every upload, and each check would rebuild it (what made importing the
        corpus slow down as the registry grew)."""
        if self._saved is None:
            from easel.audit.encoder import COPY_KIND
            from easel.audit.index import descriptor_index

            self._saved = descriptor_index(self.session, self.folder, COPY_KIND, dim)
        return self._saved

    def _pending(self) -> np.ndarray:
        """The pending works' reference views ``[P x V x D]``, stacked once per new work."""
        if self._pending_matrix is None or len(self._pending_matrix) != len(self.pending_views):
            self._pending_matrix = np.stack(self.pending_views)
        return self._pending_matrix

    def prepare(self, pictures: list[tuple[str, Image.Image]]) -> None:
        """Describe many uploads at once (``(sha256, picture)`` pairs), as queries and as
        registered works, so that ``check`` and ``add`` find their descriptors ready: one
        encoder pass per batch instead of two per work (23 → 15 ms a work on 2 cores; the
        corpus import's main cost). Optional: without it each work is described alone, with
        the same figures to float rounding."""
        if self.encoder is None or not pictures:
            return
        from easel.audit.encoder import describe, describe_references

        shas = [sha for sha, _ in pictures]
        images = [picture for _, picture in pictures]
        queries = describe(self.encoder, images).copy.numpy()
        views, whole = describe_references(self.encoder, images)
        views_np, styles = views.numpy(), whole.style.numpy()
        self._queries = {sha: queries[i] for i, sha in enumerate(shas)}
        self._references = {sha: (views_np[i], styles[i]) for i, sha in enumerate(shas)}

    def _describe(self, sha256: str, picture: Image.Image) -> np.ndarray:
        """The upload's copy descriptor ``[D]``, as a query: the picture as it is."""
        from easel.audit.encoder import describe

        if sha256 in self._queries:
            return self._queries[sha256]
        if sha256 not in self._descriptors:
            assert self.encoder is not None
            self._descriptors = {sha256: describe(self.encoder, [picture]).copy.numpy()[0]}
        return self._descriptors[sha256]

    def check(self, sha256: str, picture: Image.Image, pdq_variants: tuple[bytes, ...],
              found: dict[int, tuple[int, str]]) -> None:
        """Add to ``found`` (work key → (PDQ distance, how it matched)) the works whose copy
        score with ``picture`` reaches ``REGISTRY_COPY_THRESHOLD``; PDQ finds take precedence."""
        if self.encoder is None:
            return
        from easel.audit.encoder import COPY_KIND, best_view_scores
        from easel.audit.index import decisive_search

        if self._saved is None:
            _warn_if_stale(self.session)
        copy_vec = self._describe(sha256, picture)
        index = self.saved_index(copy_vec.size)
        found_rows = decisive_search(self.session, index, COPY_KIND, copy_vec[None], 10)
        scored = [(h.key, h.score) for h in found_rows]
        if self.pending_keys:
            pending = best_view_scores(copy_vec[None], self._pending())[0]
            scored += list(zip(self.pending_keys, pending.tolist(), strict=True))
        hits = {key: score for key, score in scored if score >= REGISTRY_COPY_THRESHOLD}
        if not hits:
            return
        from sqlalchemy import select

        from easel.registry.fingerprint import hamming
        from easel.registry.models import Work

        pdq = dict(self.session.execute(select(Work.pk, Work.pdq).where(Work.pk.in_(list(hits)))).all())
        for key, score in hits.items():
            if key in found:
                continue
            distance = min((hamming(v, bytes.fromhex(pdq[key])) for v in pdq_variants), default=256) \
                if pdq.get(key) else 256
            found[key] = (distance, f"copy descriptor {score:.2f}")

    def add(self, work_pk: int, sha256: str, picture: Image.Image) -> None:
        """Store the new work's descriptors and make it searchable for the rest of the session."""
        if self.encoder is None:
            return
        from easel.audit.encoder import COPY_KIND, STYLE_KIND, describe_references
        from easel.registry.descriptors import descriptor_row

        if sha256 in self._references:
            work_views, style = self._references[sha256]
        else:
            views, whole = describe_references(self.encoder, [picture])
            work_views, style = views.numpy()[0], whole.style.numpy()[0]
        self.session.add(descriptor_row(work_pk, COPY_KIND, work_views))
        self.session.add(descriptor_row(work_pk, STYLE_KIND, style))
        self.pending_keys.append(work_pk)
        self.pending_views.append(work_views)

    def finish(self) -> None:
        """After the commit: bring the saved descriptor indexes up to date (rebuild if stale)."""
        if self.encoder is None or not self.pending_keys:
            return
        from easel.audit.encoder import COPY_KIND, STYLE_KIND
        from easel.audit.index import descriptor_index

        with Session(self.session.get_bind()) as session:
            descriptor_index(session, self.folder, COPY_KIND, int(self.encoder.config.copy_dim))
            descriptor_index(session, self.folder, STYLE_KIND, int(self.encoder.config.style_dim))
        self.pending_keys.clear()
        self.pending_views.clear()
        self._references.clear()
        self._queries.clear()
        self._saved = self._pending_matrix = None


class NearCopyRefused(PermissionDenied):
    """The output guard refused a generated picture as a near-copy of a registered work."""


def publish_or_redraw_once(image: Image.Image, seed: int, retry_seed: int,
                           publish: Callable[[Image.Image, int], T],
                           redraw: Callable[[int], Image.Image], say: Callable[[str], None]) -> T:
    """``publish(image, seed)``; if the output guard refuses it as a near-copy, ``say`` so, draw
    the picture once more from ``retry_seed`` and publish that. A second refusal propagates."""
    try:
        return publish(image, seed)
    except NearCopyRefused as exc:
        say(f"seed {seed}: {exc.message}; regenerating once with seed {retry_seed}")
        return publish(redraw(retry_seed), retry_seed)


def output_guard(image: Image.Image, db_url: str) -> Image.Image:
    """Refuse (``NearCopyRefused``, a ``PermissionDenied``) an image whose copy score with a
    registered work reaches ``NEAR_COPY_THRESHOLD``; return it unchanged otherwise, or when
    there is nothing to check."""
    from sqlalchemy import inspect

    from easel.db import get_engine

    encoder = _encoder_or_none()
    if encoder is None:
        return image
    from easel.audit.encoder import COPY_KIND, describe
    from easel.audit.index import decisive_search, descriptor_index
    from easel.registry.store import index_dir

    if db_url.startswith("sqlite:///") and not Path(db_url[len("sqlite:///"):]).exists():
        log.info("output guard skipped: no registry database at %s", db_url)
        return image
    engine = get_engine(db_url)
    if not inspect(engine).has_table("work_descriptors"):
        log.info("output guard skipped: the registry has no descriptor table yet")
        return image
    with Session(engine) as session:
        _warn_if_stale(session)
        index = descriptor_index(session, index_dir(db_url), COPY_KIND, int(encoder.config.copy_dim))
        if len(index) == 0:
            log.info("output guard skipped: no registered work has descriptors")
            return image
        vec = describe(encoder, [image]).copy.numpy()
        best = decisive_search(session, index, COPY_KIND, vec, 1)
        if best and best[0].score >= NEAR_COPY_THRESHOLD:
            from sqlalchemy import select

            from easel.registry.models import Work

            work_id, owner = session.execute(select(Work.id, Work.owner_id)
                                             .where(Work.pk == best[0].key)).one()
            raise NearCopyRefused(
                f"output refused: it is a near-copy of registered work {work_id} (owner {owner}, "
                f"copy score {best[0].score:.2f} ≥ {NEAR_COPY_THRESHOLD})",
                hint="change the prompt or seed; `easel audit` shows the evidence")
    return image
