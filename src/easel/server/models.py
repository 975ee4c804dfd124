"""The server's tables: users, login sessions, API keys and generation jobs.

They share the registry database (``easel.db.Base``) and are made by the Alembic revisions
``0003_server`` and ``0004_server_hardening``; keep the two in step. An artist's user row points
at their registry ``Artist`` (works and consent stay in the registry's own tables and services).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from easel.db import Base
from easel.registry.models import UTCDateTime, utcnow

ROLES = ("artist", "creator", "operator")
"""artist: registers works and decides their consent; creator: generates; operator: sees all."""
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL_STATES = frozenset({"done", "failed", "cancelled"})


class User(Base):
    """An account of the web studio and HTTP API."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, encoded
    role: Mapped[str] = mapped_column(String(16))
    artist_id: Mapped[str | None] = mapped_column(ForeignKey("artists.id"), nullable=True, unique=True)
    daily_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: the setting
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginSession(Base):
    """A browser session: the cookie holds a random token, the table only its sha256."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """A key for scripts (``Authorization: Bearer``, ``X-API-Key`` or HTTP basic); stored hashed."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Job(Base):
    """A generation job: its request, state, progress and the generation ids it published."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    mode: Mapped[str] = mapped_column(String(16))
    n_images: Mapped[int] = mapped_column(Integer)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[list[str]] = mapped_column(JSON, default=list)  # generation ids
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The server that owns the job (queued for it or running on it); None: any server may claim it.
    server_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    init_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    mask_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class Server(Base):
    """A running ``easel serve`` process; its heartbeat tells others whether its jobs are orphans."""

    __tablename__ = "servers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:start time
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuthFailure(Base):
    """One failed log-in or API-key check, under one scope: ``account`` (the username tried) or
    ``address`` (the client address). Counted in a window by ``easel.server.ratelimit``."""

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failures_scope_key_at", "scope", "key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
