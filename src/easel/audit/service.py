"""Auditing an image against the registry: the works most like it, with scores and verdicts.

``Auditor`` holds the encoder and the database; ``audit`` encodes the image once, searches the
copy and style indexes (and PDQ with the image's eight rotations and mirrors), and scores every
candidate on all three: copy score (the best cosine over the work's reference views: the
whole picture, half-area crops, slight rotations), style score (cosines of the shipped encoder)
and PDQ distance, with a verdict from ``thresholds``. ``describe_works`` fills the registry's
``work_descriptors`` slot for works that lack descriptors (from their stored file, or for
corpus works by re-rendering the icon), and ``add_work_descriptors`` does it for one work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from easel.audit.encoder import COPY_KIND, STYLE_KIND, DescriptorEncoder, describe, describe_references
from easel.audit.index import descriptor_index, stored_vectors
from easel.audit.thresholds import PDQ_COPY_DISTANCE, VERDICTS, verdict
from easel.errors import BadInput, NotFound
from easel.registry.models import Artist, Work, WorkDescriptor

log = logging.getLogger(__name__)


@dataclass
class Match:
    """One registered work and how much the audited image resembles it."""

    work_id: str
    owner_id: str
    title: str
    copy_score: float
    style_score: float
    pdq_distance: int | None
    verdict: str
    picture: Path | None = None  # the work's stored file, when there is one


@dataclass
class AuditResult:
    """The audit of one image: its matches, most serious first, and the overall verdict."""

    name: str
    matches: list[Match] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return self.matches[0].verdict if self.matches else "none"


def query_picture(data: bytes, name: str) -> Image.Image:
    """Validate an image file as the registry does (formats, bombs, truncation, SVG safety) and
    return its RGB picture on white; a 16-bit grey PNG is rescaled, not clipped."""
    import io

    from easel.registry.validate import load_image

    loaded = load_image(data, name)
    if loaded.media_type == "image/png":
        with Image.open(io.BytesIO(data)) as opened:
            if opened.mode.startswith("I"):
                from easel.audit.encoder import to_square_rgb

                opened.load()
                side = max(opened.size)
                return Image.fromarray(to_square_rgb(opened, side))
    if min(loaded.width, loaded.height) < 8:
        raise BadInput(f"{name} is {loaded.width}×{loaded.height} pixels; an audit needs at least "
                       "8 pixels a side", hint="audit the full-size image")
    return loaded.image


def pdq_distances(picture: Image.Image, pdq_hexes: list[str]) -> list[int | None]:
    """Least Hamming distance from the picture's 8 rotated/mirrored PDQ hashes to each hash."""
    from easel.registry.fingerprint import fingerprint, hamming

    fp = fingerprint(picture)
    out: list[int | None] = []
    for hexed in pdq_hexes:
        if not hexed:
            out.append(None)
            continue
        target = bytes.fromhex(hexed)
        out.append(min(hamming(v, target) for v in fp.dihedral))
    return out


class Auditor:
    """Audits pictures against the registry at ``index_folder`` with ``encoder``."""

    def __init__(self, session: Session, index_folder: Path, encoder: DescriptorEncoder) -> None:
        self.session = session
        self.folder = index_folder
        self.encoder = encoder

    def audit(self, picture: Image.Image, name: str = "image", k: int = 10,
              artist: str | None = None) -> AuditResult:
        """The ``k`` registered works (of ``artist`` only, if given) most like ``picture``."""
        if k < 1:
            raise BadInput(f"-k must be at least 1, not {k}")
        if artist is not None and self.session.get(Artist, artist) is None:
            raise NotFound(f"no artist {artist!r}", hint="see `easel registry artist list`")
        desc = describe(self.encoder, [picture])
        copy_q, style_q = desc.copy.numpy(), desc.style.numpy()
        cfg = self.encoder.config
        copy_index = descriptor_index(self.session, self.folder, COPY_KIND, int(cfg.copy_dim))
        style_index = descriptor_index(self.session, self.folder, STYLE_KIND, int(cfg.style_dim))
        stale = stale_descriptor_works(self.session)
        if stale:
            raise BadInput(f"{stale} registered works were described by an older descriptor encoder, "
                           "whose scores do not compare with this one's",
                           hint="run `easel audit index` to describe them with the shipped encoder")
        if len(copy_index) == 0:
            log.info("no registered work has descriptors yet: nothing to audit against")
            return AuditResult(name)
        if copy_index.dim != copy_q.shape[1]:
            raise BadInput(f"the registry's copy descriptors are {copy_index.dim}-d but this encoder "
                           f"makes {copy_q.shape[1]}-d ones",
                           hint="audit with the encoder that described the registry (the shipped one)")
        if artist is None:
            pks = {h.key for h in copy_index.search(copy_q, k)}
            pks |= {h.key for h in style_index.search(style_q, k)}
        else:  # one artist's works: score them all (an artist has at most thousands)
            pks = set(self.session.execute(select(Work.pk).where(Work.owner_id == artist)).scalars())
        # PDQ can find a copy the descriptors rank low (a plain copy at small size)
        from easel.registry.fingerprint import PDQ_MATCH_DISTANCE, fingerprint
        from easel.registry.index import pdq_index

        fp = fingerprint(picture)
        if fp.usable:
            queries = np.frombuffer(b"".join(fp.dihedral), np.uint8).reshape(len(fp.dihedral), -1)
            for hit in pdq_index(self.session, self.folder).search(queries, PDQ_MATCH_DISTANCE):
                pks.add(hit.key)
        if not pks:
            return AuditResult(name)
        works = {w.pk: w for w in self.session.execute(select(Work).where(Work.pk.in_(list(pks)))).scalars()
                 if artist is None or w.owner_id == artist}
        copies = stored_vectors(self.session, COPY_KIND, list(works))
        styles = stored_vectors(self.session, STYLE_KIND, list(works))
        from easel.registry.fingerprint import hamming

        matches = []
        for pk, work in works.items():
            copy_score = float((copies[pk] @ copy_q[0]).max()) if pk in copies else 0.0
            style_score = float((styles[pk] @ style_q[0]).max()) if pk in styles else 0.0
            distance = min(hamming(v, bytes.fromhex(work.pdq)) for v in fp.dihedral) if work.pdq else None
            matches.append(Match(work.id, work.owner_id, work.title, copy_score, style_score, distance,
                                 verdict(copy_score, style_score, distance),
                                 Path(work.stored_path) if work.stored_path else None))
        matches.sort(key=lambda m: (VERDICTS.index(m.verdict),
                                    m.pdq_distance is None or m.pdq_distance > PDQ_COPY_DISTANCE,
                                    -m.copy_score, -m.style_score))
        return AuditResult(name, matches[:k])


def stale_descriptor_works(session: Session) -> int:
    """How many works have a copy or style descriptor from another encoder (another
    ``easel-copy-*`` or ``easel-style-*`` kind) and none of that head from the shipped one:
    ``easel audit index`` describes them anew."""
    from sqlalchemy import func, or_

    conditions = []
    for family, kind in (("easel-copy-%", COPY_KIND), ("easel-style-%", STYLE_KIND)):
        current = select(WorkDescriptor.work_pk).where(WorkDescriptor.kind == kind)
        conditions.append(WorkDescriptor.kind.like(family) & (WorkDescriptor.kind != kind)
                          & WorkDescriptor.work_pk.not_in(current))
    query = select(func.count(func.distinct(WorkDescriptor.work_pk))).where(or_(*conditions))
    return int(session.execute(query).scalar_one())


def work_picture(work: Work) -> Image.Image | None:
    """The picture of a registered work: its stored file, or a corpus icon re-rendered."""
    from easel.registry.validate import load_image

    if work.stored_path and Path(work.stored_path).exists():
        return load_image(Path(work.stored_path).read_bytes(), work.id).image
    if work.source and ":" in work.source:
        from easel.config import get_settings
        from easel.corpus.render import icon_svg, render_svg
        from easel.corpus.sources import SETS_BY_ID, load_set_json

        set_id, icon = work.source.split(":", 1)
        if set_id in SETS_BY_ID:
            try:
                icons_json, _ = _set_json(get_settings().sources_dir, set_id, load_set_json)
                entry = icons_json.get("icons", {}).get(icon)
                if isinstance(entry, dict) and "body" in entry:
                    svg = icon_svg(entry, icons_json.get("width", 16), icons_json.get("height", 16))
                    return render_svg(svg, 128)
            except (OSError, ValueError, NotFound, BadInput) as exc:
                log.warning("cannot re-render %s for %s: %s", work.source, work.id, exc)
    return None


_SET_JSON: dict[tuple[str, str], tuple[dict, dict]] = {}


def _set_json(sources_dir: Path, set_id: str, loader: Any) -> tuple[dict, dict]:
    from easel.corpus.sources import SETS_BY_ID

    key = (str(sources_dir), set_id)
    if key not in _SET_JSON:
        _SET_JSON[key] = loader(sources_dir, SETS_BY_ID[set_id])
    return _SET_JSON[key]


def store_descriptors(session: Session, pks: list[int], pictures: list[Image.Image],
                      encoder: DescriptorEncoder) -> None:
    """Compute and store the descriptors works ``pks`` (their pictures) lack: the copy
    descriptors of every reference view, and the style descriptor of the whole picture. A work
    that has its copy descriptors and lacks only the style one (a new style head shipped) costs
    one encoder pass instead of ``REFERENCE_VIEWS``."""
    from easel.registry.descriptors import descriptor_row

    if not pks:
        return
    have = {kind: {int(pk) for pk in session.execute(select(WorkDescriptor.work_pk).where(
        WorkDescriptor.kind == kind, WorkDescriptor.work_pk.in_(pks))).scalars()}
        for kind in (COPY_KIND, STYLE_KIND)}
    need_copy = [i for i, pk in enumerate(pks) if pk not in have[COPY_KIND]]
    need_style = [i for i, pk in enumerate(pks) if pk not in have[STYLE_KIND]]
    styles: dict[int, np.ndarray] = {}
    if need_copy:
        views, whole = describe_references(encoder, [pictures[i] for i in need_copy])
        session.add_all(descriptor_row(pks[i], COPY_KIND, vectors)
                        for i, vectors in zip(need_copy, views.numpy(), strict=True))
        styles.update(zip(need_copy, whole.style.numpy(), strict=True))
    style_only = [i for i in need_style if i not in styles]
    if style_only:
        styles.update(zip(style_only, describe(encoder, [pictures[i] for i in style_only]).style.numpy(),
                          strict=True))
    session.add_all(descriptor_row(pks[i], STYLE_KIND, styles[i]) for i in need_style)
    session.flush()


def describe_works(session: Session, encoder: DescriptorEncoder, progress: bool = True,
                   batch: int = 256) -> tuple[int, int]:
    """Fill descriptors for every work lacking them; returns (described, skipped: no picture)."""
    from tqdm import tqdm

    have_copy = select(WorkDescriptor.work_pk).where(WorkDescriptor.kind == COPY_KIND)
    have_style = select(WorkDescriptor.work_pk).where(WorkDescriptor.kind == STYLE_KIND)
    todo = list(session.execute(select(Work).where(Work.pk.not_in(have_copy) | Work.pk.not_in(have_style))
                                .order_by(Work.pk)).scalars())
    done = skipped = 0
    bar = tqdm(total=len(todo), desc="describe", unit="work", disable=not progress)
    for start in range(0, len(todo), batch):
        pks, pictures = [], []
        for work in todo[start:start + batch]:
            picture = work_picture(work)
            if picture is None:
                skipped += 1
                continue
            pks.append(work.pk)
            pictures.append(picture)
        store_descriptors(session, pks, pictures, encoder)
        done += len(pks)
        bar.update(min(batch, len(todo) - start))
    bar.close()
    return done, skipped
