"""The slot for learned descriptors of works (the audit stage fills it).

A descriptor is an L2-normalised float32 vector of one ``kind`` (a model name and version,
e.g. ``"sscd-tiny-v1"``), at most one per work and kind, stored in ``work_descriptors``. The
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


def set_descriptor(session: Session, work_id: str, kind: str, vector: np.ndarray) -> None:
    """Store (or replace) the ``kind`` descriptor of a work; ``vector`` is 1-D, L2-normalised."""
    vec = np.asarray(vector, dtype="<f4").reshape(-1)
    if vec.size == 0 or not np.isfinite(vec).all():
        raise BadInput(f"descriptor {kind!r} for {work_id} is empty or not finite")
    if abs(float(np.linalg.norm(vec)) - 1.0) > 1e-3:
        raise BadInput(f"descriptor {kind!r} for {work_id} is not L2-normalised")
    work = get_work(session, work_id)
    row = session.execute(select(WorkDescriptor).where(
        WorkDescriptor.work_pk == work.pk, WorkDescriptor.kind == kind)).scalar_one_or_none()
    if row is None:
        session.add(WorkDescriptor(work_pk=work.pk, kind=kind, dim=vec.size, vector=vec.tobytes()))
    else:
        row.dim, row.vector = vec.size, vec.tobytes()
    session.flush()


def load_descriptors(session: Session, kind: str) -> tuple[list[str], np.ndarray]:
    """Work ids and their ``kind`` descriptors as float32 ``[N x D]`` (``N`` may be 0)."""
    rows = session.execute(select(Work.id, WorkDescriptor.dim, WorkDescriptor.vector)
                           .join(WorkDescriptor, WorkDescriptor.work_pk == Work.pk)
                           .where(WorkDescriptor.kind == kind).order_by(Work.pk)).all()
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    dims = {dim for _, dim, _ in rows}
    if len(dims) != 1:
        raise BadInput(f"descriptors of kind {kind!r} have mixed sizes {sorted(dims)}")
    matrix = np.frombuffer(b"".join(v for _, _, v in rows), dtype="<f4").reshape(len(rows), -1)
    return [wid for wid, _, _ in rows], matrix.astype(np.float32)
