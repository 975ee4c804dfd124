"""The slot for learned descriptors of works (the audit stage fills it).

A descriptor is an L2-normalised float32 vector of one ``kind`` (a model name and version,
e.g. ``"sscd-tiny-v1"``), or several of them — one per *view* of the work, such as the crops
and rotations the copy search keeps of each registered work — at most one row per work and
kind, stored in ``work_descriptors`` (``dim`` is one vector's size; the row holds them all). The
audit stage computes them and searches them (a FAISS inner-product index beside the PDQ one);
this module only stores and loads them.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from easel.errors import BadInput
from easel.registry.models import Work, WorkDescriptor
from easel.registry.service import get_work


def descriptor_row(work_pk: int, kind: str, vectors: np.ndarray) -> WorkDescriptor:
    """A ``work_descriptors`` row holding ``vectors``: one ``[D]`` or views ``[V x D]``, each
    L2-normalised (``BadInput`` otherwise)."""
    views = np.asarray(vectors, dtype="<f4")
    views = views.reshape(1, -1) if views.ndim == 1 else views.reshape(len(views), -1)
    if views.size == 0 or not np.isfinite(views).all():
        raise BadInput(f"descriptor {kind!r} is empty or not finite")
    if np.abs(np.linalg.norm(views, axis=1) - 1.0).max() > 1e-3:
        raise BadInput(f"descriptor {kind!r} is not L2-normalised")
    return WorkDescriptor(work_pk=work_pk, kind=kind, dim=views.shape[1], vector=views.tobytes())


def row_vectors(dim: int, blob: bytes) -> np.ndarray:
    """The vectors a ``work_descriptors`` row holds: float32 ``[V x dim]`` (V = 1 for one)."""
    return np.frombuffer(blob, dtype="<f4").reshape(-1, dim).astype(np.float32)


def set_descriptor(session: Session, work_id: str, kind: str, vector: np.ndarray) -> None:
    """Store (or replace) the ``kind`` descriptor of a work: ``vector`` 1-D, or ``[V x D]`` views,
    each L2-normalised."""
    work = get_work(session, work_id)
    try:
        new = descriptor_row(work.pk, kind, vector)
    except BadInput as exc:
        raise BadInput(f"{exc.message} (work {work_id})") from None
    row = session.execute(select(WorkDescriptor).where(
        WorkDescriptor.work_pk == work.pk, WorkDescriptor.kind == kind)).scalar_one_or_none()
    if row is not None:
        # A replacement is a new row (a new pk), never an update in place: the saved indexes
        # notice changes by the table's row count and newest pk, and would keep serving the old
        # vector of a row rewritten where it stood.
        session.delete(row)
        session.flush()
    session.add(new)
    session.flush()


def load_descriptors(session: Session, kind: str) -> tuple[list[str], np.ndarray]:
    """Work ids and their ``kind`` descriptors as float32 ``[N x D]``, or ``[N x V x D]`` for a
    kind that keeps ``V`` views per work (``N`` may be 0)."""
    rows = session.execute(select(Work.id, WorkDescriptor.dim, WorkDescriptor.vector)
                           .join(WorkDescriptor, WorkDescriptor.work_pk == Work.pk)
                           .where(WorkDescriptor.kind == kind).order_by(Work.pk)).all()
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    dims = {dim for _, dim, _ in rows}
    if len(dims) != 1:
        raise BadInput(f"descriptors of kind {kind!r} have mixed sizes {sorted(dims)}")
    dim = dims.pop()
    views = {len(v) // (4 * dim) for _, _, v in rows}
    if len(views) != 1:
        raise BadInput(f"descriptors of kind {kind!r} have mixed view counts {sorted(views)}")
    count = views.pop()
    matrix = np.frombuffer(b"".join(v for _, _, v in rows), dtype="<f4").astype(np.float32)
    shape = (len(rows), dim) if count == 1 else (len(rows), count, dim)
    return [wid for wid, _, _ in rows], matrix.reshape(shape)
