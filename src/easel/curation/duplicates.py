"""The global duplicate step: one deterministic pass over the fingerprints of the whole input.

Candidates are the items every per-item stage kept. Two items are duplicates when their files are
byte-identical (sha256), their PDQ hashes lie within the registry's match distance
(``PDQ_MATCH_DISTANCE``, both of usable quality), or their copy descriptors score at least the
audit's ``DUPLICATE_COPY_THRESHOLD`` (whole picture against whole picture). Candidates are
visited in registration order (``work_seq``, then item id); each one that duplicates an item
already kept is dropped, naming that item (the earliest registered one it matches), so the
earliest-registered work of every cluster is kept and no two kept items are duplicates. A
candidate that duplicates a work whose owner refused it (opted out or revoked) is dropped too:
an edited copy must not carry a refused work into training.

The answer depends only on the fingerprints, never on how the input was split into batches, so
both engines get the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from easel.audit.thresholds import DUPLICATE_COPY_THRESHOLD
from easel.registry.fingerprint import PDQ_MATCH_DISTANCE, PDQ_MIN_QUALITY

OWNER_REFUSALS = frozenset({"optout", "work", "artist"})
"""Consent rules by which an owner said no; a near-copy of such a work is dropped as well."""
COLUMNS = (
    "item_id",
    "decision",
    "stage",
    "consent_rule",
    "work_seq",
    "file_sha256",
    "pdq",
    "pdq_quality",
    "copy_descriptor",
)
"""The columns of the first pass that this step reads."""


@dataclass(frozen=True)
class Duplicate:
    """Why an item was dropped as a duplicate and of which item."""

    of: str
    reason: str


def _pdq_pairs(codes: np.ndarray, queries: np.ndarray) -> list[tuple[int, int, int]]:
    """(query row, code row, distance) for every pair within ``PDQ_MATCH_DISTANCE``."""
    from easel.registry.index import BinaryIndex

    index = BinaryIndex()
    index.add(range(len(codes)), codes)
    if len(index) == 0 or len(queries) == 0:
        return []
    out: list[tuple[int, int, int]] = []
    step = 4096
    for start in range(0, len(queries), step):
        # FAISS returns rows strictly closer than the radius.
        lims, dist, rows = index.index.range_search(
            np.ascontiguousarray(queries[start : start + step]), PDQ_MATCH_DISTANCE + 1
        )
        for q in range(len(lims) - 1):
            for j in range(int(lims[q]), int(lims[q + 1])):
                out.append((start + q, int(rows[j]), int(dist[j])))
    return out


def _descriptor_pairs(vectors: np.ndarray, queries: np.ndarray) -> list[tuple[int, int, float]]:
    """(query row, vector row, cosine) for every pair scoring at least
    ``DUPLICATE_COPY_THRESHOLD``."""
    from easel.audit.index import FloatIndex

    if len(vectors) == 0 or len(queries) == 0:
        return []
    index = FloatIndex(vectors.shape[1])
    index.add(np.arange(len(vectors)), vectors)
    out: list[tuple[int, int, float]] = []
    step = 4096
    for start in range(0, len(queries), step):
        lims, scores, rows = index.index.range_search(
            np.ascontiguousarray(queries[start : start + step]), DUPLICATE_COPY_THRESHOLD - 1e-4
        )
        for q in range(len(lims) - 1):
            for j in range(int(lims[q]), int(lims[q + 1])):
                if float(scores[j]) >= DUPLICATE_COPY_THRESHOLD:
                    out.append((start + q, int(rows[j]), float(scores[j])))
    return out


def find_duplicates(table: pa.Table) -> dict[str, Duplicate]:
    """Item id → ``Duplicate`` for every candidate of ``table`` (first-pass rows) to drop."""
    rows = table.select(list(COLUMNS)).to_pylist()
    seen: set[str] = set()
    unique = []
    for r in sorted(rows, key=lambda r: r["item_id"]):
        if r["item_id"] not in seen:  # a batch retried by Ray may have been written twice
            seen.add(r["item_id"])
            unique.append(r)
    big = np.iinfo(np.int64).max
    candidates = sorted(
        (r for r in unique if r["decision"] == "keep"),
        key=lambda r: (r["work_seq"] if r["work_seq"] is not None else big, r["item_id"]),
    )
    refused = [r for r in unique if r["stage"] == "consent" and r["consent_rule"] in OWNER_REFUSALS]
    pool = candidates + refused  # rows 0..len(candidates)-1 are the candidates, in rank order
    n_cand = len(candidates)

    # Every candidate's neighbours: pool row → (kind, value), the strongest evidence per pair.
    neighbours: list[dict[int, tuple[str, float]]] = [{} for _ in range(n_cand)]
    by_sha: dict[str, list[int]] = {}
    for j, r in enumerate(pool):
        if r["file_sha256"]:
            by_sha.setdefault(r["file_sha256"], []).append(j)
    for members in by_sha.values():
        for a in members:
            if a < n_cand:
                for b in members:
                    if b != a:
                        neighbours[a][b] = ("exact", 0.0)
    usable = [j for j, r in enumerate(pool) if r["pdq"] and (r["pdq_quality"] or 0) >= PDQ_MIN_QUALITY]
    if usable:
        codes = np.frombuffer(b"".join(bytes.fromhex(pool[j]["pdq"]) for j in usable), np.uint8).reshape(
            len(usable), -1
        )
        cand_rows = [k for k, j in enumerate(usable) if j < n_cand]
        for q, c, d in _pdq_pairs(codes, codes[cand_rows]):
            a, b = usable[cand_rows[q]], usable[c]
            if a != b and b not in neighbours[a]:
                neighbours[a][b] = ("pdq", float(d))
    described = [j for j, r in enumerate(pool) if r["copy_descriptor"]]
    if described:
        vectors = np.stack([np.frombuffer(pool[j]["copy_descriptor"], "<f4") for j in described])
        cand_rows = [k for k, j in enumerate(described) if j < n_cand]
        for q, c, s in _descriptor_pairs(vectors, vectors[cand_rows]):
            a, b = described[cand_rows[q]], described[c]
            if a != b and b not in neighbours[a]:
                neighbours[a][b] = ("descriptor", s)

    def evidence(kind: str, value: float) -> str:
        if kind == "exact":
            return "identical file"
        if kind == "pdq":
            return f"PDQ distance {int(value)} ≤ {PDQ_MATCH_DISTANCE}"
        return f"copy score {value:.3f} ≥ {DUPLICATE_COPY_THRESHOLD}"

    kept: set[int] = set()
    out: dict[str, Duplicate] = {}
    for a in range(n_cand):
        item = candidates[a]["item_id"]
        near = neighbours[a]
        refusing = sorted((b for b in near if b >= n_cand), key=lambda b: pool[b]["item_id"])
        earlier = sorted(b for b in near if b in kept)  # candidate rows are in rank order
        if refusing or earlier:
            b, why = ((refusing[0], "whose owner refused its use") if refusing
                      else (earlier[0], "registered earlier"))
            other = pool[b]["item_id"]
            out[item] = Duplicate(other, f"duplicate of {other} ({evidence(*near[b])}), {why}")
            continue
        kept.add(a)
    return out


def apply_duplicates(batch: pa.Table, duplicates: dict[str, Duplicate]) -> pa.Table:
    """Mark the rows of ``batch`` (first-pass rows) that ``duplicates`` names as dropped."""
    rows = batch.to_pylist()
    for row in rows:
        dup = duplicates.get(row["item_id"])
        if dup is not None and row["decision"] == "keep":
            row.update(decision="drop", stage="duplicates", reason=dup.reason, duplicate_of=dup.of)
    return pa.Table.from_pylist(rows, schema=batch.schema)
