"""The whole corpus described as the registry describes its works, for the audit benchmarks.

``registered_descriptors`` gives every row's copy descriptors over its reference views
``[N x V x D]`` and its whole-picture copy descriptors ``[N x D]``; with ``cache`` (an ``.npz``
path) they are kept there, keyed by the encoder folder and the manifest's rows, so that
``guard_rate.py`` and ``audit_refusals.py`` describe the 19 k works (12 views each) only once.
``scores_with_registry`` and ``scores_with_originals`` score queries against them as the
registry does (the best over a work's views).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def registered_descriptors(encoder: Any, encoder_path: str | None, rows: list[dict], root: Path,
                           cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(views ``[N x V x D]``, whole pictures ``[N x D]``) of the manifest rows' pictures."""
    from tqdm import tqdm

    from easel.audit.encoder import describe_references

    key = hashlib.sha256(json.dumps([encoder_path or "shipped", [r["item_id"] for r in rows],
                                     [r.get("png_sha256") for r in rows]]).encode()).hexdigest()
    if cache is not None and cache.exists():
        saved = np.load(cache)
        if str(saved["key"]) == key:
            return saved["views"], saved["whole"]
    views, whole = [], []
    for start in tqdm(range(0, len(rows), 256), desc="describe registered works", unit="batch"):
        pictures = [Image.open(root / r["png_path"]).convert("RGB") for r in rows[start:start + 256]]
        v, w = describe_references(encoder, pictures)
        views.append(v.numpy())
        whole.append(w.copy.numpy())
    out = np.concatenate(views), np.concatenate(whole)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=np.array(key), views=out[0], whole=out[1])
    return out


def scores_with_registry(queries: np.ndarray, views: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Copy scores ``[Q x N]`` of queries ``[Q x D]`` with every registered work (``views``
    ``[N x V x D]``), computed ``chunk`` queries at a time to bound memory."""
    from easel.audit.encoder import best_view_scores

    if len(queries) == 0:
        return np.zeros((0, len(views)), dtype=np.float32)
    return np.concatenate([best_view_scores(queries[s:s + chunk], views)
                           for s in range(0, len(queries), chunk)])


def backgrounds(scores: np.ndarray, k: int) -> np.ndarray:
    """Each query's mean copy score with its ``k`` best registered works (rows of ``scores``
    ``[Q x N]``): the background of `easel audit eval`'s per-query normalised score."""
    if scores.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    return -np.partition(-scores, k - 1, axis=1)[:, :k].mean(axis=1)


def scores_with_originals(queries: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """Copy score ``[N]`` of query ``i`` (``[N x D]``) with its own original, work ``i`` of
    ``originals`` (``[N x V x D]``): the best over that work's views."""
    return np.einsum("nd,nvd->nv", queries, originals).max(axis=1)
