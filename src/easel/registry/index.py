"""Similarity look-up over registered works: a FAISS binary index of PDQ hashes on disk.

``BinaryIndex`` is a flat FAISS binary index (exact Hamming search) plus the work key of each
row; it saves atomically into a folder beside the database. ``pdq_index(session, folder)``
returns the index for a database, rebuilding it from the ``works`` table when the files are
missing, unreadable or stale (their recorded row count or newest work differs from the
database). Other stages reuse it: the provenance log looks up PDQ hashes with the same class,
and learned descriptors get a float index beside it under another name.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from easel.registry.fingerprint import PDQ_BITS, PDQ_BYTES, PDQ_MIN_QUALITY
from easel.registry.models import Work

PDQ_INDEX_NAME = "pdq"
FAISS_THREADS = 1
"""OpenMP threads FAISS searches with. Measured here (2 cores shared with a training run): a
range search of 8 queries took 47 ms with 2 threads whatever the index size, against 0.01 ms
(150 rows), 1 ms (100 k) and 14 ms (1 M) with one; thread start-up dominates."""
_cache: dict[str, tuple[tuple[int, int], BinaryIndex]] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Hit:
    """One indexed row within range of a query: its key, distance, and which query matched."""

    key: int
    distance: int
    query: int


class BinaryIndex:
    """Exact Hamming search over ``bits``-bit codes, each row tagged with an int64 key."""

    def __init__(self, bits: int = PDQ_BITS) -> None:
        import faiss

        faiss.omp_set_num_threads(FAISS_THREADS)
        self.bits = bits
        self.index: faiss.IndexBinary = faiss.IndexBinaryFlat(bits)
        self.keys = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, keys: Iterable[int], codes: np.ndarray) -> None:
        """Add ``codes`` (uint8 ``[N x bits/8]``) under ``keys`` (N ints)."""
        key_array = np.asarray(list(keys), dtype=np.int64)
        codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, self.bits // 8)
        if len(key_array) != len(codes):
            raise ValueError(f"{len(key_array)} keys for {len(codes)} codes")
        if len(codes):
            self.index.add(codes)
            self.keys = np.concatenate([self.keys, key_array])

    def search(self, queries: np.ndarray, max_distance: int) -> list[Hit]:
        """Every row within ``max_distance`` bits of any query (uint8 ``[Q x bits/8]``),
        nearest first; a key hit by several queries is reported once, at its least distance."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, self.bits // 8)
        if len(self) == 0 or len(queries) == 0:
            return []
        # FAISS returns rows strictly closer than the radius.
        lims, distances, rows = self.index.range_search(queries, max_distance + 1)
        best: dict[int, Hit] = {}
        for q in range(len(queries)):
            for j in range(int(lims[q]), int(lims[q + 1])):
                key = int(self.keys[int(rows[j])])
                hit = Hit(key, int(distances[j]), q)
                if key not in best or hit.distance < best[key].distance:
                    best[key] = hit
        return sorted(best.values(), key=lambda h: (h.distance, h.key))

    def nearest(self, queries: np.ndarray, k: int = 1) -> list[Hit]:
        """The ``k`` nearest rows over all queries, however far (nearest first)."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, self.bits // 8)
        if len(self) == 0:
            return []
        distances, rows = self.index.search(queries, min(k, len(self)))
        best: dict[int, Hit] = {}
        for q in range(len(queries)):
            for d, r in zip(distances[q], rows[q], strict=True):
                if r < 0:
                    continue
                key = int(self.keys[int(r)])
                if key not in best or d < best[key].distance:
                    best[key] = Hit(key, int(d), q)
        return sorted(best.values(), key=lambda h: (h.distance, h.key))[:k]

    def save(self, folder: Path, name: str, state: dict[str, int]) -> None:
        """Write ``<name>.faiss``, ``<name>.keys.npy`` and ``<name>.json`` atomically."""
        import faiss

        save_index_files(folder, name, lambda path: faiss.write_index_binary(self.index, path),
                         self.keys, {"bits": self.bits, **state})

    @classmethod
    def load(cls, folder: Path, name: str) -> tuple[BinaryIndex, dict[str, int]] | None:
        """Read a saved index and its state, or ``None`` if missing or unreadable."""
        import faiss

        loaded = load_index_files(folder, name, faiss.read_index_binary, "bits")
        if loaded is None:
            return None
        index, keys, state = loaded
        out = cls(int(state["bits"]))
        out.index = index
        out.keys = keys
        return out, state


def save_index_files(folder: Path, name: str, write: Callable[[str], None], keys: np.ndarray,
                     state: dict[str, int]) -> None:
    """Write a FAISS index (through ``write(path)``), its keys and its state atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{name}-") as tmp:
        staging = Path(tmp)
        write(str(staging / f"{name}.faiss"))
        np.save(staging / f"{name}.keys.npy", keys)
        (staging / f"{name}.json").write_text(json.dumps(state))
        # The state file goes last: a reader that sees it sees matching data files.
        for suffix in (".faiss", ".keys.npy", ".json"):
            os.replace(staging / f"{name}{suffix}", folder / f"{name}{suffix}")


def load_index_files(folder: Path, name: str, read: Callable[[str], Any],
                     dim_key: str) -> tuple[Any, np.ndarray, dict[str, int]] | None:
    """Read what ``save_index_files`` wrote, or ``None`` if missing, unreadable or inconsistent
    (key count or dimension ``state[dim_key]`` not matching the index)."""
    try:
        state = json.loads((folder / f"{name}.json").read_text())
        index = read(str(folder / f"{name}.faiss"))
        keys = np.load(folder / f"{name}.keys.npy")
    except (OSError, ValueError, RuntimeError):
        return None
    if index.ntotal != len(keys) or index.d != state.get(dim_key):
        return None
    return index, keys.astype(np.int64), state


def _db_state(session: Session) -> tuple[int, int]:
    count, newest = session.execute(
        select(func.count(Work.pk), func.coalesce(func.max(Work.pk), 0))
        .where(Work.pdq_quality >= PDQ_MIN_QUALITY)).one()
    return int(count), int(newest)


def _rebuild(session: Session) -> BinaryIndex:
    index = BinaryIndex(PDQ_BITS)
    batch_keys: list[int] = []
    batch_codes: list[bytes] = []
    query = (select(Work.pk, Work.pdq).where(Work.pdq_quality >= PDQ_MIN_QUALITY)
             .order_by(Work.pk).execution_options(yield_per=50_000))
    for pk, pdq in session.execute(query):
        batch_keys.append(pk)
        batch_codes.append(bytes.fromhex(pdq))
        if len(batch_keys) >= 50_000:
            index.add(batch_keys, np.frombuffer(b"".join(batch_codes), np.uint8))
            batch_keys, batch_codes = [], []
    index.add(batch_keys, np.frombuffer(b"".join(batch_codes), np.uint8).reshape(-1, PDQ_BYTES))
    return index


def pdq_index(session: Session, folder: Path) -> BinaryIndex:
    """The PDQ index of the database behind ``session``, current with its ``works`` table.

    Loaded from ``folder`` (cached in the process); rebuilt from the database and saved when
    the files are missing, unreadable or stale.
    """
    state = _db_state(session)
    cache_key = str(folder)
    with _cache_lock:
        cached = _cache.get(cache_key)
        if cached is not None and cached[0] == state:
            return cached[1]
        loaded = BinaryIndex.load(folder, PDQ_INDEX_NAME)
        if loaded is not None and (loaded[1].get("count"), loaded[1].get("newest")) == state \
                and len(loaded[0]) == state[0]:
            index = loaded[0]
        else:
            index = _rebuild(session)
            index.save(folder, PDQ_INDEX_NAME, {"count": state[0], "newest": state[1]})
        _cache[cache_key] = (state, index)
        return index


def add_to_pdq_index(session: Session, folder: Path, works: Iterable[Work]) -> None:
    """Add newly committed works to the saved index (or rebuild it if it was already stale)."""
    fresh = [w for w in works if w.pdq_quality >= PDQ_MIN_QUALITY]
    state = _db_state(session)
    cache_key = str(folder)
    with _cache_lock:
        cached = _cache.get(cache_key)
    if cached is not None:
        index = cached[1]
        present = set(index.keys[-len(fresh):].tolist()) if fresh else set()
        todo = [w for w in fresh if w.pk not in present]
        if len(index) + len(todo) == state[0]:
            index.add([w.pk for w in todo],
                      np.frombuffer(b"".join(bytes.fromhex(w.pdq) for w in todo), np.uint8))
            index.save(folder, PDQ_INDEX_NAME, {"count": state[0], "newest": state[1]})
            with _cache_lock:
                _cache[cache_key] = (state, index)
            return
    pdq_index(session, folder)


def forget_cache() -> None:
    """Drop every cached index (tests; after restoring a database)."""
    with _cache_lock:
        _cache.clear()
