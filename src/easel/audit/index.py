"""FAISS indexes of the learned descriptors of registered works, beside the PDQ index.

One ``FloatIndex`` per descriptor kind (copy, style): an exact inner-product index
(``faiss.IndexFlatIP``; descriptors are L2-normalised, so the score is the cosine) plus the work
key (``works.pk``) of each row. A work may own several rows — the copy kind keeps every
reference view of a work (``encoder.reference_views``) — and a search scores a work by its
best row. It is saved atomically as ``desc-<kind>.*`` in the registry's
index folder (``easel.registry.store.index_dir``) and rebuilt from the ``work_descriptors``
table whenever the files are missing, unreadable or stale (row count or newest row differ),
exactly as the PDQ index is.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from easel.registry.index import FAISS_THREADS, load_index_files, save_index_files
from easel.registry.models import WorkDescriptor

_cache: dict[tuple[str, str], tuple[tuple[int, int], FloatIndex]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Scored:
    """One indexed row near a query: its work key, cosine score, and which query found it."""

    key: int
    score: float
    query: int


class FloatIndex:
    """Exact cosine search over L2-normalised float32 vectors, each row tagged with a work key."""

    def __init__(self, dim: int) -> None:
        import faiss

        faiss.omp_set_num_threads(FAISS_THREADS)
        self.dim = dim
        self.index: Any = faiss.IndexFlatIP(dim)
        self.keys = np.zeros(0, dtype=np.int64)
        self.rows_per_key = 1  # the most rows any one key owns (views of one work); see _set_keys

    def __len__(self) -> int:
        """Rows (vectors); a work with several views has several."""
        return int(self.index.ntotal)

    def _set_keys(self, keys: np.ndarray) -> None:
        self.keys = keys
        if len(keys):
            self.rows_per_key = int(np.unique(keys, return_counts=True)[1].max())

    @property
    def key_count(self) -> int:
        """Distinct keys (works) indexed."""
        return len(np.unique(self.keys))

    def add(self, keys: list[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` float32 ``[N x dim]`` under ``keys`` (N ints)."""
        key_array = np.asarray(keys, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(key_array) != len(vectors):
            raise ValueError(f"{len(key_array)} keys for {len(vectors)} vectors")
        if len(vectors):
            self.index.add(vectors)
            self._set_keys(np.concatenate([self.keys, key_array]))

    def search(self, queries: np.ndarray, k: int) -> list[Scored]:
        """The ``k`` best keys over all queries (``[Q x dim]``), best first, each scored by its
        best row (enough rows are searched that ``k`` distinct keys come back when there are)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if len(self) == 0 or len(queries) == 0 or k <= 0:
            return []
        scores, rows = self.index.search(queries, min(k * self.rows_per_key, len(self)))
        best: dict[int, Scored] = {}
        for q in range(len(queries)):
            for s, r in zip(scores[q], rows[q], strict=True):
                if r < 0:
                    continue
                key = int(self.keys[int(r)])
                if key not in best or s > best[key].score:
                    best[key] = Scored(key, float(s), q)
        return sorted(best.values(), key=lambda h: (-h.score, h.key))[:k]

    def save(self, folder: Path, name: str, state: dict[str, int]) -> None:
        """Write ``<name>.faiss``, ``<name>.keys.npy`` and ``<name>.json`` atomically."""
        import faiss

        save_index_files(folder, name, lambda path: faiss.write_index(self.index, path),
                         self.keys, {"dim": self.dim, **state})

    @classmethod
    def load(cls, folder: Path, name: str) -> tuple[FloatIndex, dict[str, int]] | None:
        """Read a saved index and its state, or ``None`` if missing or unreadable."""
        import faiss

        loaded = load_index_files(folder, name, faiss.read_index, "dim")
        if loaded is None:
            return None
        index, keys, state = loaded
        out = cls(int(state["dim"]))
        out.index = index
        out._set_keys(keys)
        return out, state


def index_name(kind: str) -> str:
    """File stem of the index of descriptor ``kind`` (``desc-easel-copy-v3``)."""
    return f"desc-{kind}"


def _state(session: Session, kind: str) -> tuple[int, int]:
    count, newest = session.execute(
        select(func.count(WorkDescriptor.pk), func.coalesce(func.max(WorkDescriptor.pk), 0))
        .where(WorkDescriptor.kind == kind)).one()
    return int(count), int(newest)


def _rebuild(session: Session, kind: str) -> FloatIndex | None:
    rows = session.execute(select(WorkDescriptor.work_pk, WorkDescriptor.dim, WorkDescriptor.vector)
                           .where(WorkDescriptor.kind == kind).order_by(WorkDescriptor.pk)).all()
    if not rows:
        return None
    from easel.registry.descriptors import row_vectors

    dim = int(rows[0][1])
    index = FloatIndex(dim)
    views = [row_vectors(dim, r[2]) for r in rows]
    index.add(np.repeat([r[0] for r in rows], [len(v) for v in views]), np.concatenate(views))
    return index


def descriptor_index(session: Session, folder: Path, kind: str, dim: int) -> FloatIndex:
    """The index of ``kind`` descriptors of the database behind ``session``, current with it.

    Loaded from ``folder`` (cached in the process) or rebuilt and saved when stale.
    """
    state = _state(session, kind)
    key = (str(folder), kind)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == state:
            return cached[1]
        name = index_name(kind)
        loaded = FloatIndex.load(folder, name)
        if loaded is not None and (loaded[1].get("count"), loaded[1].get("newest")) == state \
                and loaded[0].key_count == state[0]:
            index = loaded[0]
        else:
            index = _rebuild(session, kind) or FloatIndex(dim)
            index.save(folder, name, {"count": state[0], "newest": state[1]})
        _cache[key] = (state, index)
        return index


def forget_cache() -> None:
    """Drop every cached descriptor index (tests; after restoring a database)."""
    with _lock:
        _cache.clear()
