"""FAISS indexes of the learned descriptors of registered works, beside the PDQ index.

One ``FloatIndex`` per descriptor kind (copy, style) plus the work key (``works.pk``) of each
row. A work may own several rows — the copy kind keeps every reference view of a work
(``encoder.reference_views``) — and a search scores a work by its best row. Up to
``EXACT_MAX_ROWS`` rows the index is exact (``faiss.IndexFlatIP``; descriptors are
L2-normalised, so the score is the cosine); above it, a flat search is too slow for an
interactive audit (p50 209 ms at 1.2 M rows, BENCHMARKS.md) and the index is an inverted file
with 8-bit scalar quantisation (``IVF<n>,SQ8``, a quarter of the memory): it *finds*
candidates, and every caller that decides something scores them exactly from the stored
vectors (``exact_scores``). It is saved atomically as ``desc-<kind>.*`` in the registry's
index folder (``easel.registry.store.index_dir``); when the ``work_descriptors`` table has
grown by new rows only, the saved index takes just those, otherwise (missing, unreadable,
rows removed or replaced — a replaced descriptor is a new row — or an exact index that the new
rows would carry past ``EXACT_MAX_ROWS``) it is rebuilt, as the PDQ index is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from easel.registry.index import FAISS_THREADS, load_index_files, save_index_files
from easel.registry.models import WorkDescriptor

log = logging.getLogger(__name__)

_cache: dict[tuple[str, str], tuple[tuple[int, int], FloatIndex]] = {}
_lock = threading.Lock()

EXACT_MAX_ROWS = 600_000
"""Above this many rows (50,000 works of 12 views) a rebuilt index is approximate (IVF-SQ8)."""
IVF_PROBE_SHARE = 1 / 8
"""Share of the inverted lists one search visits (``nprobe`` = ``nlist`` × this, at least 8)."""


@dataclass(frozen=True)
class Scored:
    """One indexed row near a query: its work key, cosine score, and which query found it."""

    key: int
    score: float
    query: int


class FloatIndex:
    """Cosine search over L2-normalised float32 vectors, each row tagged with a work key: exact,
    or approximate (``FloatIndex.approximate``) for large registries."""

    def __init__(self, dim: int) -> None:
        import faiss

        faiss.omp_set_num_threads(FAISS_THREADS)
        self.dim = dim
        self.index: Any = faiss.IndexFlatIP(dim)
        self.keys = np.zeros(0, dtype=np.int64)
        self.rows_per_key = 1  # the most rows any one key owns (views of one work)
        self.key_count = 0  # distinct keys (works) indexed

    @classmethod
    def approximate(cls, dim: int, sample: np.ndarray, nlist: int | None = None) -> FloatIndex:
        """An empty inverted-file index (``IVF<nlist>,SQ8``, inner product) whose lists and
        quantiser are trained on ``sample`` (``[N x dim]`` vectors like those it will hold;
        ``nlist`` defaults to about √N·2, 64–4,096)."""
        import faiss

        sample = np.ascontiguousarray(sample, dtype=np.float32).reshape(-1, dim)
        if nlist is None:
            nlist = int(np.clip(2 * np.sqrt(len(sample)), 64, 4096))
        if len(sample) < 4 * nlist:
            raise ValueError(f"{len(sample)} sample vectors are too few to train {nlist} lists")
        out = cls(dim)
        out.index = faiss.index_factory(dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        out.index.train(sample)
        out._set_probes()
        return out

    @property
    def is_approximate(self) -> bool:
        """Whether scores are approximate (rescore with ``exact_scores`` before deciding)."""
        return hasattr(self.index, "nprobe")

    def _set_probes(self) -> None:
        if self.is_approximate:
            self.index.nprobe = max(8, round(self.index.nlist * IVF_PROBE_SHARE))

    def __len__(self) -> int:
        """Rows (vectors); a work with several views has several."""
        return int(self.index.ntotal)

    def _set_keys(self, keys: np.ndarray) -> None:
        self.keys = keys
        counts = np.unique(keys, return_counts=True)[1]
        self.key_count = len(counts)
        self.rows_per_key = int(counts.max()) if len(counts) else 1

    def add(self, keys: list[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` float32 ``[N x dim]`` under ``keys`` (N ints). Callers add all of a
        key's rows in one call (one work's views together) and never a key twice."""
        key_array = np.asarray(keys, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(key_array) != len(vectors):
            raise ValueError(f"{len(key_array)} keys for {len(vectors)} vectors")
        if not len(vectors):
            return
        self.index.add(vectors)
        # Only the new block is counted: np.unique over millions of rows per added work would
        # make ingest O(registry); rows of one key never span two calls (see above).
        counts = np.unique(key_array, return_counts=True)[1]
        self.keys = np.concatenate([self.keys, key_array])
        self.rows_per_key = max(self.rows_per_key, int(counts.max()))
        self.key_count += len(counts)

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

    def ranked_scores(self, queries: np.ndarray, k: int) -> np.ndarray:
        """For each query row on its own, the scores of its ``k`` best keys (each key by its best
        row), best first: ``[Q x k]`` float32, NaN where fewer than ``k`` keys are indexed."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        out = np.full((len(queries), k), np.nan, dtype=np.float32)
        if len(self) == 0 or len(queries) == 0 or k <= 0:
            return out
        scores, rows = self.index.search(queries, min(k * self.rows_per_key, len(self)))
        for q in range(len(queries)):
            valid = rows[q] >= 0
            keys = self.keys[rows[q][valid]]
            # rows come best first, so a key's first appearance is its best row
            _, first = np.unique(keys, return_index=True)
            best = np.sort(scores[q][valid][first])[::-1][:k]
            out[q, :len(best)] = best
        return out

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
        out._set_probes()
        return out, state


def index_name(kind: str) -> str:
    """File stem of the index of descriptor ``kind`` (``desc-easel-copy-v3``)."""
    return f"desc-{kind}"


def _state(session: Session, kind: str) -> tuple[int, int]:
    count, newest = session.execute(
        select(func.count(WorkDescriptor.pk), func.coalesce(func.max(WorkDescriptor.pk), 0))
        .where(WorkDescriptor.kind == kind)).one()
    return int(count), int(newest)


def _rows(session: Session, kind: str, after: int = 0,
          batch: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(keys, vectors)`` blocks of the ``kind`` rows with ``pk > after``, in pk order."""
    from easel.registry.descriptors import row_vectors

    query = (select(WorkDescriptor.work_pk, WorkDescriptor.dim, WorkDescriptor.vector)
             .where(WorkDescriptor.kind == kind, WorkDescriptor.pk > after)
             .order_by(WorkDescriptor.pk).execution_options(yield_per=batch))
    keys: list[int] = []
    views: list[np.ndarray] = []
    for work_pk, dim, blob in session.execute(query):
        vectors = row_vectors(int(dim), blob)
        keys.extend([int(work_pk)] * len(vectors))
        views.append(vectors)
        if len(views) >= batch:
            yield np.asarray(keys, dtype=np.int64), np.concatenate(views)
            keys, views = [], []
    if views:
        yield np.asarray(keys, dtype=np.int64), np.concatenate(views)


def _rebuild(session: Session, kind: str, dim: int, count: int) -> FloatIndex:
    """Every ``kind`` row (``count`` of them) in an exact index, or past ``EXACT_MAX_ROWS`` an
    approximate one trained on a spread sample of the rows (every n-th, about 20,000 works)."""
    first = session.execute(select(WorkDescriptor.dim, WorkDescriptor.vector)
                            .where(WorkDescriptor.kind == kind).limit(1)).first()
    if first is not None:  # the stored rows' size wins over the caller's
        dim = int(first[0])
    views = len(first[1]) // (4 * dim) if first is not None else 1
    if count * views <= EXACT_MAX_ROWS:
        index = FloatIndex(dim)
    else:
        from easel.registry.descriptors import row_vectors

        stride = max(1, count // 20_000)
        sample = np.concatenate([row_vectors(int(d), v) for d, v in session.execute(
            select(WorkDescriptor.dim, WorkDescriptor.vector)
            .where(WorkDescriptor.kind == kind, WorkDescriptor.pk % stride == 0))])
        log.info("%s: %d works × %d views; training an approximate index on %d rows",
                 kind, count, views, len(sample))
        index = FloatIndex.approximate(dim, sample)
    for keys, vectors in _rows(session, kind):
        index.add(keys, vectors)
    return index


def descriptor_index(session: Session, folder: Path, kind: str, dim: int) -> FloatIndex:
    """The index of ``kind`` descriptors of the database behind ``session``, current with it.

    Loaded from ``folder`` (cached in the process); when the table has only gained rows since
    it was saved, the loaded index takes the new rows; rebuilt otherwise; saved when changed.
    """
    state = _state(session, kind)
    key = (str(folder), kind)
    name = index_name(kind)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == state:
            return cached[1]
        # a fresh object, never the cached one: another thread may be searching that
        found = FloatIndex.load(folder, name)
        index = None
        if found is not None:
            old, old_state = found
            had = (int(old_state.get("count", -1)), int(old_state.get("newest", -1)))
            if old.key_count == had[0] == state[0] and had[1] == state[1]:
                index = old  # current: nothing to save
            elif old.key_count == had[0] and _extendable(old, had, state, _newer_rows(session, kind, had)):
                for keys, vectors in _rows(session, kind, after=had[1]):
                    old.add(keys, vectors)
                index = old
                index.save(folder, name, {"count": state[0], "newest": state[1]})
        if index is None:
            index = _rebuild(session, kind, dim, state[0])
            index.save(folder, name, {"count": state[0], "newest": state[1]})
        _cache[key] = (state, index)
        return index


def _newer_rows(session: Session, kind: str, had: tuple[int, int]) -> int:
    """How many ``kind`` rows are newer than the newest one a saved index holds."""
    return int(session.execute(select(func.count(WorkDescriptor.pk)).where(
        WorkDescriptor.kind == kind, WorkDescriptor.pk > had[1])).scalar_one())


def _extendable(index: FloatIndex, had: tuple[int, int], now: tuple[int, int], newer: int) -> bool:
    """Whether a saved index (of state ``had``) may just take the ``newer`` rows to reach ``now``:
    the table has only gained rows since, and an *exact* index would not pass
    ``EXACT_MAX_ROWS`` rows by taking them (then it is rebuilt as an approximate one instead;
    an exact index grown by ingest alone would otherwise stay exact, and slow, however large
    the registry became)."""
    grown_only = 0 <= had[1] <= now[1] and had[0] + newer == now[0]
    outgrown = not index.is_approximate and len(index) + newer * index.rows_per_key > EXACT_MAX_ROWS
    return grown_only and not outgrown


def stored_vectors(session: Session, kind: str, pks: list[int]) -> dict[int, np.ndarray]:
    """The stored ``kind`` vectors of works ``pks``: ``[V x D]`` each (V views; 1 for style)."""
    from easel.registry.descriptors import row_vectors

    rows = session.execute(select(WorkDescriptor.work_pk, WorkDescriptor.dim, WorkDescriptor.vector)
                           .where(WorkDescriptor.kind == kind, WorkDescriptor.work_pk.in_(pks))).all()
    return {int(pk): row_vectors(int(dim), blob) for pk, dim, blob in rows}


def exact_scores(session: Session, kind: str, hits: list[Scored], queries: np.ndarray) -> list[Scored]:
    """``hits`` scored exactly from the stored vectors (each work by its best view over all
    ``queries``), best first: what an approximate index found, as an exact one would score it."""
    if not hits:
        return []
    queries = np.asarray(queries, dtype=np.float32).reshape(-1, queries.shape[-1])
    out = []
    for work_pk, vectors in stored_vectors(session, kind, [h.key for h in hits]).items():
        scores = vectors @ queries.T  # [V x Q]
        q = int(scores.max(axis=0).argmax())
        out.append(Scored(work_pk, float(scores[:, q].max()), q))
    return sorted(out, key=lambda h: (-h.score, h.key))


def query_backgrounds(index: FloatIndex, queries: np.ndarray, k: int) -> np.ndarray:
    """Each query's *background* ``[Q]``: its mean copy score with the ``k`` works it scores
    highest in ``index`` (fewer when fewer are indexed). A query like many registered works —
    a plain red square, a yellow face of the commonest template — has a high one; a query like
    nothing but its original a low one. Approximate indexes give approximate backgrounds."""
    return np.nanmean(index.ranked_scores(queries, k), axis=1).astype(np.float32)


def decisive_search(session: Session, index: FloatIndex, kind: str, queries: np.ndarray,
                    k: int) -> list[Scored]:
    """``index.search``, with exact scores: an approximate index's finds (10 at least, so that
    the best one is among them) are re-scored from the stored vectors before anyone decides."""
    if not index.is_approximate:
        return index.search(queries, k)
    return exact_scores(session, kind, index.search(queries, max(k, 10)), queries)[:k]


def forget_cache() -> None:
    """Drop every cached descriptor index (tests; after restoring a database)."""
    with _lock:
        _cache.clear()
