"""Accounts: sign-up, login sessions, API keys, quotas. Every function takes an open session.

An artist's account owns the registry ``Artist`` of the same id, so works and consent go
through ``easel.registry.service`` with that artist as the actor; the registry's own rules
(ownership, the ledger, the policy) stay the only ones.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from easel.errors import BadInput, PermissionDenied
from easel.registry.models import Artist
from easel.server import security
from easel.server.models import ROLES, ApiKey, Job, LoginSession, User

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256
SIGN_UP_ROLES = ("artist", "creator")
"""Roles anyone may sign up for; operators are made with ``easel serve --add-operator``."""


def create_user(session: Session, username: str, password: str, role: str,
                display_name: str | None = None, allow_operator: bool = False) -> User:
    """Create an account; an artist also gets their registry ``Artist`` (same id)."""
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise BadInput(f"username {username!r} is not valid",
                       hint="use 2-64 lower-case letters, digits, '.', '_' or '-'")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadInput(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters long")
    allowed = ROLES if allow_operator else SIGN_UP_ROLES
    if role not in allowed:
        raise BadInput(f"role {role!r} is not one of {', '.join(allowed)}")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise BadInput(f"username {username!r} is taken", hint="choose another")
    artist_id = None
    if role == "artist":
        if session.get(Artist, username) is not None:
            raise BadInput(f"username {username!r} is taken by a registered artist", hint="choose another")
        from easel.registry.service import add_artist

        artist, _registry_key = add_artist(session, username, (display_name or username).strip())
        artist_id = artist.id
    user = User(id=uuid.uuid4().hex, username=username, password_hash=security.hash_password(password),
                role=role, artist_id=artist_id)
    session.add(user)
    session.flush()
    return user


def authenticate_password(session: Session, username: str, password: str) -> User:
    """The user if the password is right; ``PermissionDenied`` (same message either way) if not."""
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        security.burn_password_check(password)
    elif security.check_password(password, user.password_hash):
        return user
    raise PermissionDenied("wrong username or password")


def start_session(session: Session, user: User) -> str:
    """A new login session; returns the cookie token (only its hash is stored)."""
    token = security.new_token()
    now = datetime.now(UTC)
    session.add(LoginSession(token_hash=security.token_hash(token), user_id=user.id, created_at=now,
                             expires_at=now + timedelta(days=security.SESSION_DAYS)))
    return token


def end_session(session: Session, token: str) -> None:
    """Log out: delete the session row."""
    row = session.get(LoginSession, security.token_hash(token))
    if row is not None:
        session.delete(row)


def user_for_session(session: Session, token: str) -> User | None:
    """The user of a live session token, or None."""
    row = session.get(LoginSession, security.token_hash(token))
    if row is None or row.expires_at <= datetime.now(UTC):
        return None
    return session.get(User, row.user_id)


def create_api_key(session: Session, user: User, label: str = "") -> tuple[ApiKey, str]:
    """A new API key for ``user``; the key is returned once and stored only hashed."""
    if len(label) > 100:
        raise BadInput("label is longer than 100 characters")
    key = security.new_api_key()
    row = ApiKey(id=uuid.uuid4().hex, user_id=user.id, key_hash=security.token_hash(key), label=label)
    session.add(row)
    session.flush()
    return row, key


def user_for_api_key(session: Session, key: str) -> User | None:
    """The user an unrevoked API key belongs to, or None."""
    if not key.startswith(security.API_KEY_PREFIX):
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == security.token_hash(key)))
    if row is None or row.revoked_at is not None:
        return None
    return session.get(User, row.user_id)


def images_last_day(session: Session, user: User) -> int:
    """Images ``user`` asked for in the last 24 h, in jobs that did not fail or get cancelled."""
    since = datetime.now(UTC) - timedelta(days=1)
    total = session.scalar(select(func.coalesce(func.sum(Job.n_images), 0)).where(
        Job.user_id == user.id, Job.created_at >= since, Job.state.in_(("queued", "running", "done"))))
    return int(total or 0)


def check_quota(session: Session, user: User, n_images: int, default_quota: int) -> None:
    """Raise ``PermissionDenied`` if ``n_images`` more would pass the user's 24-hour quota."""
    if user.role == "operator":
        return
    quota = user.daily_quota if user.daily_quota is not None else default_quota
    used = images_last_day(session, user)
    if used + n_images > quota:
        raise QuotaExceeded(f"quota reached: {used} of {quota} images in the last 24 hours, "
                            f"{n_images} more asked", hint="try again later or ask an operator")


class QuotaExceeded(PermissionDenied):
    """A user's generation quota is used up (HTTP 429)."""
