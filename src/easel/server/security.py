"""Passwords (argon2id), session tokens, API keys and CSRF tokens.

Passwords are hashed with argon2-cffi's defaults (argon2id, RFC 9106 low-memory profile).
Session tokens and API keys are 32 random bytes: only their sha256 is stored, which is enough
for secrets of that entropy and lets a request find its row by an indexed look-up. CSRF tokens
are an HMAC of the session token under the server's session secret, so pages need no extra
state and a token from one session is useless in another. The log-in and sign-up forms come
before any session: their token is an HMAC of a random pre-session cookie (a signed
double-submit cookie), so a cross-site post, which can neither read the cookie nor compute
the HMAC, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from easel.config import Settings

SESSION_COOKIE = "easel_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
PRE_SESSION_COOKIE = "easel_presession"
"""The random cookie that the log-in and sign-up forms' CSRF token is bound to."""
API_KEY_PREFIX = "esk_"
SESSION_DAYS = 14
"""How long a login lasts."""


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (salt and parameters encoded in the string)."""
    return _hasher().hash(password)


def check_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches an ``hash_password`` value."""
    try:
        return _hasher().verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_DUMMY: list[str] = []


def burn_password_check(password: str) -> None:
    """Spend the time of a real check (for an unknown user), so timing does not tell."""
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_hex(8)))
    check_password(password, _DUMMY[0])


def new_token() -> str:
    """A fresh URL-safe random token (256 bits)."""
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    """A fresh API key, ``esk_…``."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """sha256 hex of a token or key: what the database stores."""
    return hashlib.sha256(token.encode()).hexdigest()


def session_secret(settings: Settings) -> bytes:
    """``EASEL_SESSION_SECRET``, else the secret under ``EASEL_HOME/server/`` (made on first run)."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    path = Path(settings.home) / "server" / "session_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        if not path.exists():
            os.replace(tmp, path)
        else:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode()


def csrf_token(secret: bytes, session_token: str) -> str:
    """The CSRF token that belongs to one session."""
    return hmac.new(secret, b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, session_token: str, given: str | None) -> bool:
    """Whether ``given`` is this session's CSRF token (constant-time compare)."""
    if not given:
        return False
    return hmac.compare_digest(csrf_token(secret, session_token), given)


def pre_session_csrf(secret: bytes, cookie: str) -> str:
    """The log-in/sign-up form token that belongs to one pre-session cookie."""
    return hmac.new(secret, b"pre-session:" + cookie.encode(), hashlib.sha256).hexdigest()


def pre_session_csrf_ok(secret: bytes, cookie: str | None, given: str | None) -> bool:
    """Whether ``given`` is the form token of the pre-session ``cookie`` (constant-time)."""
    if not cookie or not given:
        return False
    return hmac.compare_digest(pre_session_csrf(secret, cookie), given)
