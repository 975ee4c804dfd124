"""The registry's tables: artists, works, consent events, datasets and models built from works.

Consent is never a column that is updated: it is the ``consent_events`` ledger, append-only
and chained by hash (see ``easel.registry.ledger``); ``easel.registry.policy`` reads it.
The schema is created by the Alembic revision ``0001_registry``; keep the two in step.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column, relationship

from easel.db import Base

PURPOSES = ("train_base", "train_style", "commercial_output")
"""What a work may be used for: the base model, a personal style model, commercial outputs."""

EVENT_KINDS = ("register", "grant", "revoke", "optout", "optin")
GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first consent event."""


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored with its zone on PostgreSQL and as UTC on SQLite; always read back aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Artist(Base):
    """A rights holder: an illustrator, a studio, or an emoji set's publisher."""

    __tablename__ = "artists"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    contact: Mapped[str | None] = mapped_column(String(320), nullable=True)
    contact_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    # "scrypt$<salt hex>$<digest hex>"; the key itself is shown once and never stored.
    api_key_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    works: Mapped[list[Work]] = relationship(back_populates="owner")


class Work(Base):
    """A registered artwork, fingerprinted on the way in."""

    __tablename__ = "works"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("artists.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    license_spdx: Mapped[str] = mapped_column(String(64))
    attribution: Mapped[str] = mapped_column(Text, default="")
    # Where the work came from: a URL, or a corpus item id such as "twemoji:fox-face".
    source: Mapped[str | None] = mapped_column(String(300), unique=True, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    media_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    pdq: Mapped[str] = mapped_column(String(64))  # 256-bit PDQ hash, hex
    pdq_quality: Mapped[int] = mapped_column(Integer)
    # The PDQ hashes of the 8 rotated/mirrored images, hex, comma-separated (identity first).
    pdq_dihedral: Mapped[str] = mapped_column(Text)
    stored_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    owner: Mapped[Artist] = relationship(back_populates="works")


class WorkDescriptor(Base):
    """A learned descriptor of a work (the slot the audit stage fills), one per kind."""

    __tablename__ = "work_descriptors"
    __table_args__ = (UniqueConstraint("work_pk", "kind"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    work_pk: Mapped[int] = mapped_column(ForeignKey("works.pk"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, L2-normalised


class ConsentEvent(Base):
    """One entry of the consent ledger. Rows are inserted, never updated or deleted.

    ``hash`` is sha256 over the canonical JSON of every other field, ``prev_hash`` included,
    so changing, removing or reordering any event breaks the chain (``verify_log``).
    """

    __tablename__ = "consent_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    artist_id: Mapped[str] = mapped_column(ForeignKey("artists.id"), index=True)
    work_id: Mapped[str | None] = mapped_column(ForeignKey("works.id"), index=True, nullable=True)
    actor_id: Mapped[str] = mapped_column(String(64))
    purposes: Mapped[str] = mapped_column(String(100), default="")  # comma-separated, sorted
    basis: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")  # canonical JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    @property
    def purpose_list(self) -> list[str]:
        return [p for p in self.purposes.split(",") if p]


class LedgerHead(Base):
    """The last event's seq and hash, one row: appends lock it, so the chain never forks."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class Dataset(Base):
    """A corpus manifest built from the registry for a purpose (its id is the manifest hash)."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    manifest_path: Mapped[str] = mapped_column(Text)
    item_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DatasetItem(Base):
    """A work in a dataset, with the consent event that allowed it when the dataset was built."""

    __tablename__ = "dataset_items"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    work_pk: Mapped[int] = mapped_column(ForeignKey("works.pk"), primary_key=True, index=True)
    consent_event_id: Mapped[str] = mapped_column(String(32))


class TrainedModel(Base):
    """A model trained on a dataset (recorded by the trainer), so withdrawals can name it."""

    __tablename__ = "trained_models"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # "base" or "style"
    path: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
