""" "Was my work in this model?" — match a picture or an artist's works against every model's data.

Every model Easel knows is a ``TrainedModel`` of the registry (the trainer records it with its
dataset id) or a model folder whose card names its dataset id. A dataset's rows come from its
manifest; their fingerprints from the curated manifest beside it (``curated.parquet``, kept rows)
or, for a manifest built without curation, computed once from its files and cached under
``EASEL_HOME/lookup``. A picture is in a model's data when a row's file is identical, its PDQ lies
within the registry's match distance of any of the picture's eight rotations/mirrors, or its copy
descriptor scores at least the audit's ``DUPLICATE_COPY_THRESHOLD`` (whole pictures) — so an
edited copy (re-encoded, resized, flipped) is found, and the picture need not be registered.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from easel.audit.thresholds import DUPLICATE_COPY_THRESHOLD
from easel.errors import BadInput, NotFound
from easel.registry.fingerprint import PDQ_MATCH_DISTANCE, PDQ_MIN_QUALITY

EVIDENCE_COLUMNS = (
    "item_id",
    "set_id",
    "caption",
    "rights_holder",
    "license_spdx",
    "consent_event_id",
    "png_sha256",
    "split",
)
"""Manifest columns quoted as evidence for a match."""


@dataclass(frozen=True)
class KnownModel:
    """A model and the manifest of the data it was trained on."""

    model_id: str
    dataset_id: str
    kind: str
    manifest_path: str


@dataclass
class Evidence:
    """One training row that matched, and how."""

    how: str
    row: dict[str, Any]


@dataclass
class ModelAnswer:
    """Whether a work was in one model's training data, with the matching rows as evidence."""

    model: KnownModel
    matches: list[Evidence] = field(default_factory=list)
    problem: str | None = None  # why this model's data could not be checked

    @property
    def found(self) -> bool:
        return bool(self.matches)


def known_models(session: Any, model: str | None = None) -> list[KnownModel]:
    """The registry's trained models with their datasets' manifests (only ``model`` if given:
    a model id, or a model folder whose ``model_card.json`` names a dataset id)."""
    from sqlalchemy import select

    from easel.registry.models import Dataset, TrainedModel

    rows = session.execute(
        select(TrainedModel, Dataset)
        .outerjoin(Dataset, Dataset.id == TrainedModel.dataset_id)
        .order_by(TrainedModel.created_at, TrainedModel.id)
    ).all()
    out = [KnownModel(m.id, m.dataset_id, m.kind, d.manifest_path if d is not None else "") for m, d in rows]
    if model is None:
        return out
    paths = {m.id: m.path for m, _ in rows}
    chosen = [
        m
        for m in out
        if model == m.model_id
        or (paths[m.model_id] and Path(paths[m.model_id]).resolve() == Path(model).resolve())
    ]
    if chosen:
        return chosen
    card_path = Path(model) / "model_card.json"
    if card_path.exists():
        card = json.loads(card_path.read_text())
        dataset_id = card.get("dataset_id", "")
        # A card records the manifest path of the machine that trained the model (the shipped
        # model's names the build machine's): where that is not here, this registry's build of
        # the same dataset id stands in for it.
        manifest = card.get("manifest", "")
        if not manifest or not _manifest_file(manifest).exists():
            dataset = session.get(Dataset, dataset_id)
            manifest = dataset.manifest_path if dataset is not None else manifest
        return [KnownModel(card.get("model_id", Path(model).name), dataset_id, "card", manifest)]
    raise NotFound(
        f"no model {model!r} is known", hint="see the models `easel dataset lookup` lists without --model"
    )


def _manifest_file(path: str) -> Path:
    p = Path(path)
    return p / "manifest.parquet" if p.is_dir() else p


def dataset_fingerprints(model: KnownModel, cache_dir: Path, progress: bool = False) -> pa.Table:
    """The rows of ``model``'s training manifest with ``pdq``, ``pdq_quality``, ``file_sha256`` and
    ``copy_descriptor`` columns (from ``curated.parquet`` beside it, else computed and cached)."""
    from easel.corpus.manifest import load_manifest

    manifest = _manifest_file(model.manifest_path)
    if not manifest.exists():
        raise NotFound(f"the manifest of dataset {model.dataset_id[:12]}… is gone ({manifest})")
    table = load_manifest(manifest)
    curated = manifest.parent / "curated.parquet"
    if curated.exists():
        rows = pq.read_table(curated)
        rows = rows.filter(pc.is_in(rows.column("item_id"), value_set=table.column("item_id")))
        if rows.num_rows == table.num_rows:
            return rows
    cache = cache_dir / f"{model.dataset_id}.parquet"
    if cache.exists():
        return pq.read_table(cache)
    from easel.curation.stages import copy_descriptors, load_picture
    from easel.registry.fingerprint import pdq_of_array, prepare

    pdqs, quals, shas, pictures, index = [], [], [], [], []
    for i, row in enumerate(table.to_pylist()):
        path = Path(row["png_path"])
        picture, digest, _ = load_picture(path if path.is_absolute() else manifest.parent / path, "")
        shas.append(digest)
        if picture is None:
            pdqs.append("")
            quals.append(0)
            continue
        code, quality = pdq_of_array(prepare(picture))
        pdqs.append(code.hex())
        quals.append(quality)
        pictures.append(picture)
        index.append(i)
    descriptors = [b""] * table.num_rows
    if _encoder_path() is not None:
        for i, vec in zip(index, copy_descriptors(_encoder_path() or "", pictures), strict=True):
            descriptors[i] = vec
    out = (
        table.append_column("file_sha256", pa.array(shas, pa.string()))
        .append_column("pdq", pa.array(pdqs, pa.string()))
        .append_column("pdq_quality", pa.array(quals, pa.int32()))
        .append_column("copy_descriptor", pa.array(descriptors, pa.binary()))
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(out, cache)
    return out


def _encoder_path() -> str | None:
    from easel.audit.encoder import has_shipped

    return "" if has_shipped() else None


@dataclass
class Query:
    """A picture's fingerprints: sha256, the 8 dihedral PDQ hashes, quality, copy descriptor."""

    sha256: str
    dihedral: list[bytes]
    usable: bool
    copy: np.ndarray | None


def query_of(data: bytes) -> Query:
    """Fingerprint an image file's bytes (any format Pillow reads)."""
    from PIL import Image

    from easel.curation.stages import copy_descriptors
    from easel.registry.fingerprint import fingerprint

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            picture = opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInput(
            f"the image does not decode ({type(exc).__name__})", hint="give a PNG, JPEG or WebP file"
        ) from None
    fp = fingerprint(picture)
    enc = _encoder_path()
    copy = np.frombuffer(copy_descriptors(enc, [picture])[0], "<f4") if enc is not None else None
    return Query(hashlib.sha256(data).hexdigest(), list(fp.dihedral), fp.usable, copy)


def match_rows(rows: pa.Table, query: Query, limit: int = 3) -> list[Evidence]:
    """The rows of ``rows`` (with fingerprint columns) that hold ``query``'s picture, best first."""
    found: list[tuple[tuple[int, float], Evidence]] = []
    shas = rows.column("file_sha256").to_pylist()
    pdqs = rows.column("pdq").to_pylist()
    quals = rows.column("pdq_quality").to_pylist()
    descs = rows.column("copy_descriptor").to_pylist()
    distance = np.full(len(pdqs), 999, dtype=np.int32)
    valid = [i for i, (p, q) in enumerate(zip(pdqs, quals, strict=True)) if p and (q or 0) >= PDQ_MIN_QUALITY]
    if query.usable and valid:
        codes = np.frombuffer(b"".join(bytes.fromhex(pdqs[i]) for i in valid), np.uint8).reshape(
            len(valid), -1
        )
        best = np.full(len(valid), 999, dtype=np.int32)
        for variant in query.dihedral:
            d = np.unpackbits(codes ^ np.frombuffer(variant, np.uint8), axis=1).sum(axis=1)
            best = np.minimum(best, d)
        distance[valid] = best
    scores = np.zeros(len(pdqs), dtype=np.float32)
    if query.copy is not None:
        have = [i for i, v in enumerate(descs) if v]
        if have:
            matrix = np.stack([np.frombuffer(descs[i], "<f4") for i in have])
            if matrix.shape[1] == query.copy.shape[0]:
                scores[have] = matrix @ query.copy
    columns = [c for c in EVIDENCE_COLUMNS if c in rows.column_names]
    for i in range(len(pdqs)):
        if shas[i] and shas[i] == query.sha256:
            how, rank = "identical file", (0, 0.0)
        elif distance[i] <= PDQ_MATCH_DISTANCE:
            how, rank = f"PDQ distance {int(distance[i])} ≤ {PDQ_MATCH_DISTANCE}", (1, float(distance[i]))
        elif scores[i] >= DUPLICATE_COPY_THRESHOLD:
            how = f"copy score {float(scores[i]):.3f} ≥ {DUPLICATE_COPY_THRESHOLD}"
            rank = (2, -float(scores[i]))
        else:
            continue
        row = {c: rows.column(c)[i].as_py() for c in columns}
        found.append((rank, Evidence(how, row)))
    found.sort(key=lambda x: (x[0], x[1].row["item_id"]))
    return [e for _, e in found[:limit]]


def lookup_image(session: Any, data: bytes, cache_dir: Path, model: str | None = None) -> list[ModelAnswer]:
    """For every known model (or ``model``), whether the picture ``data`` was in its training data."""
    query = query_of(data)
    answers = []
    for known in known_models(session, model):
        answer = ModelAnswer(known)
        try:
            answer.matches = match_rows(dataset_fingerprints(known, cache_dir), query)
        except (NotFound, BadInput) as exc:
            answer.problem = exc.message
        answers.append(answer)
    return answers


def lookup_artist(
    session: Any, artist_id: str, cache_dir: Path, model: str | None = None
) -> list[ModelAnswer]:
    """For every known model, the training rows that are ``artist_id``'s works or copies of them.

    A row counts when it is one of the artist's registered works (its item id is the work's
    source) or when its fingerprint matches one of the artist's works (PDQ of the work against the
    row, all eight rotations/mirrors stored with the work).
    """
    from sqlalchemy import select

    from easel.registry.models import Work
    from easel.registry.service import get_artist

    get_artist(session, artist_id)
    works = list(session.execute(select(Work).where(Work.owner_id == artist_id).order_by(Work.pk)).scalars())
    sources = {w.source for w in works if w.source}
    answers = []
    for known in known_models(session, model):
        answer = ModelAnswer(known)
        try:
            rows = dataset_fingerprints(known, cache_dir)
        except (NotFound, BadInput) as exc:
            answer.problem = exc.message
            answers.append(answer)
            continue
        columns = [c for c in EVIDENCE_COLUMNS if c in rows.column_names]
        mine = rows.filter(pc.is_in(rows.column("item_id"), value_set=pa.array(sorted(sources), pa.string())))
        for r in mine.select(columns).to_pylist():
            answer.matches.append(Evidence("the work itself (its item id)", r))
        others = rows.filter(
            pc.invert(pc.is_in(rows.column("item_id"), value_set=pa.array(sorted(sources), pa.string())))
        )
        for work in works:
            if not work.pdq or work.pdq_quality < PDQ_MIN_QUALITY or others.num_rows == 0:
                continue
            variants = [bytes.fromhex(h) for h in (work.pdq_dihedral or work.pdq).split(",") if h]
            query = Query(work.sha256, variants, True, None)
            for e in match_rows(others, query):
                answer.matches.append(Evidence(f"copy of {work.id} ({e.how})", e.row))
        answers.append(answer)
    return answers
