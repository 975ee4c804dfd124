"""The generation log: one row per image that left through ``publish_image``.

It lives in the registry database (SQLite under ``EASEL_HOME`` or PostgreSQL) and is made by
the Alembic revision ``0002_generation_log``; keep the two in step. ``verify`` looks images
up here by watermark id and by PDQ fingerprint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from easel.db import Base
from easel.registry.models import UTCDateTime, utcnow


class GenerationRecord(Base):
    """One generated image: what made it, its content hash and its fingerprints."""

    __tablename__ = "generation_log"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(12), unique=True)  # = the watermark payload (48 bits)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    mode: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text, default="")
    model_id: Mapped[str] = mapped_column(String(300))
    # the weights' digest (easel.diffusion.identity), from revision 0006_model_digest on
    model_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    dataset_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    style: Mapped[str | None] = mapped_column(String(200), nullable=True)
    style_artist: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    style_attribution: Mapped[str | None] = mapped_column(Text, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    pdq: Mapped[str] = mapped_column(String(64))
    pdq_quality: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    watermarked: Mapped[bool] = mapped_column(Boolean, default=True)
    signed: Mapped[bool] = mapped_column(Boolean, default=True)
    visible_mark: Mapped[bool] = mapped_column(Boolean, default=False)
    manifest_label: Mapped[str | None] = mapped_column(String(120), nullable=True)
    easel_version: Mapped[str] = mapped_column(String(32))

    def provenance(self) -> dict[str, Any]:
        """The row as a plain dict (what ``verify`` prints)."""
        return {
            "generation_id": self.id, "created_at": self.created_at.isoformat(), "mode": self.mode,
            "model_id": self.model_id, "model_sha256": self.model_sha256, "dataset_id": self.dataset_id,
            "seed": self.seed,
            "parameters": self.parameters, "style": self.style, "style_artist": self.style_artist,
            "style_attribution": self.style_attribution, "sha256": self.sha256, "pdq": self.pdq,
            "size": [self.width, self.height], "easel_version": self.easel_version,
        }


def by_id(session: Session, generation_id: str) -> GenerationRecord | None:
    """The log row with this generation id, if any."""
    return session.scalar(select(GenerationRecord).where(GenerationRecord.id == generation_id))


def by_sha256(session: Session, sha256: str) -> GenerationRecord | None:
    """The (first) log row whose published file has this sha256."""
    return session.scalar(select(GenerationRecord).where(GenerationRecord.sha256 == sha256).limit(1))


def all_pdq(session: Session) -> list[tuple[str, str]]:
    """(generation id, PDQ hex) of every row, for fingerprint lookup."""
    return [(row[0], row[1]) for row in session.execute(select(GenerationRecord.id, GenerationRecord.pdq))]
