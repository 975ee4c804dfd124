"""The per-item curation stages, as plain functions over pyarrow tables of manifest rows.

``first_pass`` runs them in order on one batch — consent, integrity, safety, attribution — and
fingerprints every file that decodes (PDQ, and the copy descriptor when an encoder is given).
Each item gets ``decision`` (``keep``/``drop``), the ``stage`` that dropped it and a one-line
``reason``; the first stage that refuses decides. Duplicates need the whole input, so they are
decided afterwards by ``easel.curation.duplicates`` from the fingerprints written here.

The functions are pure in their inputs (a batch and a ``CurateConfig``), so the in-process
engine and Ray Data run exactly the same code and get exactly the same rows.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

STAGES = ("consent", "integrity", "safety", "attribution", "duplicates")
"""Every stage, in the order they decide."""
KEEP, DROP = "keep", "drop"

ATTRIBUTION_NOT_REQUIRED = frozenset({"CC0-1.0", "UNLICENSE", "0BSD"})
"""SPDX ids (upper-cased) whose terms ask for no attribution; every other licence does (CC BY
and its share-alike forms, MIT, Apache, BSD, ISC all require the notice to travel with the work)."""

UNSAFE_CLASSES = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
"""NudeNet classes that count as sexual content; covered parts, faces and feet do not."""

DESCRIBE_BATCH = 32
"""Pictures per forward pass of the descriptor encoder. Fixed because the last bits of a descriptor
depend on the batch size it was computed in (oneDNN picks kernels by shape: measured up to 1.9e-7
apart between batches of 2 and 8); a fixed size makes both engines write the same bytes."""

CURATION_FIELDS = [
    ("decision", pa.string()),
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("duplicate_of", pa.string()),
    ("work_id", pa.string()),
    ("work_seq", pa.int64()),
    ("consent_rule", pa.string()),
    ("file_sha256", pa.string()),
    ("pdq", pa.string()),
    ("pdq_quality", pa.int32()),
    ("copy_descriptor", pa.binary()),
    ("safety_score", pa.float32()),
]
"""Columns the curation adds to every manifest row (``consent_event_id`` is overwritten with the
event that decided consent now). ``work_seq`` is the work's registration order (``works.pk``);
``copy_descriptor`` is the float32 little-endian copy descriptor, empty when not computed."""


@dataclass(frozen=True)
class CurateConfig:
    """Everything a stage needs besides its batch; plain values so Ray can ship it to workers."""

    db_url: str
    base_dir: str  # folder that relative ``png_path`` values are relative to
    purpose: str = "train_base"
    consent_at: str = ""  # ISO time of the consent snapshot; the same for every batch of a run
    safety_threshold: float = 0.8  # the default of Settings.curation_safety_threshold
    stages: tuple[str, ...] = STAGES
    encoder: str | None = None  # descriptor encoder folder; "" = shipped, None = no descriptors
    batch_size: int = 256

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Item:
    decision: str = KEEP
    stage: str | None = None
    reason: str = "kept"
    extra: dict[str, Any] = field(default_factory=dict)

    def drop(self, stage: str, reason: str) -> None:
        if self.decision == KEEP:
            self.decision, self.stage, self.reason = DROP, stage, reason


def consent_decisions(
    config: CurateConfig, item_ids: list[str]
) -> dict[str, tuple[bool, str, str | None, str, str | None, int | None]]:
    """Item id → (allowed, reason, event id, rule, work id, work seq) from ``easel.registry.policy``.

    Fails closed: if the registry cannot answer, every item of the batch is refused with the error
    as its reason (never allowed).
    """
    from easel.registry import policy
    from easel.registry.store import registry_session

    at = datetime.fromisoformat(config.consent_at) if config.consent_at else None
    try:
        with registry_session(config.db_url) as session:
            works = policy.works_by_source(session, item_ids)
            decided = policy.decide_many(session, list(works.values()), config.purpose, at)
            out: dict[str, tuple[bool, str, str | None, str, str | None, int | None]] = {}
            for item in item_ids:
                work = works.get(item)
                if work is None:
                    out[item] = (False, f"{item} is not a registered work", None, "unregistered", None, None)
                    continue
                d = decided[work.id]
                out[item] = (d.allowed, d.reason, d.event_id, d.rule, work.id, work.pk)
            return out
    except Exception as exc:  # fail closed: an error is a refusal with its reason, never a pass
        reason = f"consent could not be checked ({type(exc).__name__}: {exc})".replace("\n", " ")[:300]
        return {item: (False, reason, None, "error", None, None) for item in item_ids}


def load_picture(path: Path, expected_sha256: str) -> tuple[Any, str, str | None]:
    """Read and decode one file: (RGB PIL image or None, file sha256, why it failed or None)."""
    from PIL import Image

    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, "", f"file missing or unreadable: {path.name} ({exc.strerror or exc})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            picture = opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        return None, digest, f"file does not decode as an image ({type(exc).__name__})"
    if expected_sha256 and digest != expected_sha256:
        return picture, digest, f"sha256 {digest[:12]}… differs from the manifest's {expected_sha256[:12]}…"
    low, high = picture.convert("L").getextrema()
    if low == high:
        return picture, digest, f"blank image (every pixel is {low})"
    return picture, digest, None


@lru_cache(maxsize=1)
def _nude_detector() -> Any:
    """NudeNet's detector on its packaged ONNX model (``nudenet/320n.onnx``), one thread, no download."""
    import os

    import nudenet
    import onnxruntime as ort

    model = os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")
    if not os.path.exists(model):
        from easel.errors import NotFound

        raise NotFound(f"NudeNet's detector is not at {model}", hint="reinstall the nudenet package")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    detector = nudenet.NudeDetector(model_path=model)
    detector.onnx_session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return detector


def safety_scores(pictures: list[Any]) -> list[float]:
    """For each RGB picture, NudeNet's highest score over ``UNSAFE_CLASSES`` (0 when none, 0–1)."""
    if not pictures:
        return []
    detector = _nude_detector()
    # NudeNet converts with COLOR_RGBA2BGR, so it is given RGBA arrays.
    arrays = [np.asarray(p.convert("RGBA")) for p in pictures]
    results = detector.detect_batch(arrays, batch_size=16)
    return [
        max((d["score"] for d in found if d["class"] in UNSAFE_CLASSES), default=0.0) for found in results
    ]


@lru_cache(maxsize=2)
def _encoder(path: str) -> Any:
    from easel.audit.encoder import load_encoder

    return load_encoder(path or None)


def copy_descriptors(encoder_path: str, pictures: list[Any]) -> list[bytes]:
    """The copy descriptor (float32 ``[Dc]``, L2-normalised) of each picture, as bytes."""
    if not pictures:
        return []
    from PIL import Image

    from easel.audit.encoder import describe

    # Always DESCRIBE_BATCH pictures per forward pass (the last chunk padded with blanks), so an
    # item's descriptor is bit-identical however the engines cut the input into batches.
    model = _encoder(encoder_path)
    out: list[bytes] = []
    for start in range(0, len(pictures), DESCRIBE_BATCH):
        chunk = pictures[start:start + DESCRIBE_BATCH]
        pad = [Image.new("RGB", (8, 8), "white")] * (DESCRIBE_BATCH - len(chunk))
        vectors = describe(model, chunk + pad, batch_size=DESCRIBE_BATCH).copy.numpy().astype("<f4")
        out += [row.tobytes() for row in vectors[:len(chunk)]]
    return out


def attribution_problem(licence: str | None, attribution: str | None) -> str | None:
    """Why an item's licence data is not enough to use it, or ``None`` when it is."""
    spdx = (licence or "").strip()
    if not spdx:
        return "no licence id"
    if spdx.upper() not in ATTRIBUTION_NOT_REQUIRED and not (attribution or "").strip():
        return f"licence {spdx} requires attribution but the item has no attribution text"
    return None


def first_pass(batch: pa.Table, config: CurateConfig) -> pa.Table:
    """Consent, integrity, safety and attribution for one batch, plus fingerprints.

    Returns the batch's rows with ``CURATION_FIELDS`` added (``duplicate_of`` still empty).
    """
    from easel.registry.fingerprint import pdq_of_array, prepare

    rows = batch.to_pylist()
    ids = [r["item_id"] for r in rows]
    items = [_Item() for _ in rows]
    consent = consent_decisions(config, ids) if "consent" in config.stages else {}
    base = Path(config.base_dir)
    pictures: list[Any] = [None] * len(rows)
    for i, row in enumerate(rows):
        item = items[i]
        if "consent" in config.stages:
            allowed, reason, event_id, rule, work_id, work_seq = consent[row["item_id"]]
            row["consent_event_id"] = event_id
            item.extra.update(consent_rule=rule, work_id=work_id, work_seq=work_seq)
            if not allowed:
                item.drop("consent", reason)
        path = Path(row["png_path"] or "")
        picture, digest, problem = load_picture(
            path if path.is_absolute() else base / path, row.get("png_sha256") or ""
        )
        item.extra["file_sha256"] = digest
        pictures[i] = picture
        if problem is not None and "integrity" in config.stages:
            item.drop("integrity", problem)
    decoded = [i for i, p in enumerate(pictures) if p is not None]
    for i in decoded:
        code, quality = pdq_of_array(prepare(pictures[i]))
        items[i].extra.update(pdq=code.hex(), pdq_quality=quality)
    if config.encoder is not None:
        for i, vec in zip(
            decoded, copy_descriptors(config.encoder, [pictures[i] for i in decoded]), strict=True
        ):
            items[i].extra["copy_descriptor"] = vec
    if "safety" in config.stages:
        # Only items still kept are scored (the detector is the costliest step).
        todo = [i for i in decoded if items[i].decision == KEEP]
        for i, score in zip(todo, safety_scores([pictures[i] for i in todo]), strict=True):
            items[i].extra["safety_score"] = float(score)
            if score >= config.safety_threshold:
                items[i].drop(
                    "safety", f"NudeNet sexual-content score {score:.2f} ≥ {config.safety_threshold}"
                )
    if "attribution" in config.stages:
        for row, item in zip(rows, items, strict=True):
            problem = attribution_problem(row.get("license_spdx"), row.get("attribution"))
            if problem is not None:
                item.drop("attribution", problem)
    for row, item in zip(rows, items, strict=True):
        row.update(decision=item.decision, stage=item.stage, reason=item.reason, duplicate_of=None)
        for name, _ in CURATION_FIELDS[4:]:
            row[name] = item.extra.get(name)
    return pa.Table.from_pylist(rows, schema=curated_schema(batch.schema))


def curated_schema(input_schema: pa.Schema) -> pa.Schema:
    """The input's columns (``consent_event_id`` as string) followed by ``CURATION_FIELDS``."""
    fields = [f for f in input_schema if f.name not in dict(CURATION_FIELDS)]
    fields = [
        pa.field("consent_event_id", pa.string()) if f.name == "consent_event_id" else f.remove_metadata()
        for f in fields
    ]
    return pa.schema(fields + [pa.field(n, t) for n, t in CURATION_FIELDS])
