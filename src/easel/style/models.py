"""The style studio's tables: personal styles, their works, shares and the credit ledger.

A style's row is updated only for what its owner controls (visibility, the commercial flag)
and for withdrawal (status). The credit ledger ``style_credits`` is append-only like the
consent ledger: the migration ``0005_style`` installs triggers that refuse UPDATE and DELETE.
Keep this module and that migration in step.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from easel.db import Base
from easel.registry.models import UTCDateTime, utcnow

VISIBILITIES = ("private", "shared", "public")
"""private: only the artist generates; shared: the artist and the named users; public: anyone."""
STATUSES = ("active", "withdrawn")


class PersonalStyle(Base):
    """An artist's personal style: a LoRA adapter trained only on that artist's consented works."""

    __tablename__ = "styles"
    __table_args__ = (UniqueConstraint("artist_id", "name"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)  # "st_" + 20 hex digits
    artist_id: Mapped[str] = mapped_column(ForeignKey("artists.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    adapter_path: Mapped[str] = mapped_column(Text)
    base_model_id: Mapped[str] = mapped_column(String(300))
    base_model_sha256: Mapped[str] = mapped_column(String(64))  # of the base UNet's weights file
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    style_tag: Mapped[str] = mapped_column(String(120))  # appended to prompts, e.g. "alice style"
    attribution: Mapped[str] = mapped_column(Text)
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    commercial: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    withdrawn_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    @property
    def ref(self) -> str:
        """How users name it: ``artist:<artist>/<name>``."""
        return f"artist:{self.artist_id}/{self.name}"


class StyleItem(Base):
    """A work a style was trained from, with the consent event that allowed it then."""

    __tablename__ = "style_items"

    style_pk: Mapped[int] = mapped_column(ForeignKey("styles.pk"), primary_key=True)
    work_pk: Mapped[int] = mapped_column(ForeignKey("works.pk"), primary_key=True, index=True)
    consent_event_id: Mapped[str] = mapped_column(String(32))


class StyleShare(Base):
    """A user (artist id or account name) a shared style is shared with."""

    __tablename__ = "style_shares"

    style_pk: Mapped[int] = mapped_column(ForeignKey("styles.pk"), primary_key=True)
    grantee: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StyleCredit(Base):
    """One credit to an artist for one output made with their style. Never updated or deleted."""

    __tablename__ = "style_credits"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    style_id: Mapped[str] = mapped_column(String(40), index=True)
    artist_id: Mapped[str] = mapped_column(String(64), index=True)
    generation_id: Mapped[str] = mapped_column(String(12), unique=True)
    user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    commercial: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
