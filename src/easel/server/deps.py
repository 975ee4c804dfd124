"""Dependencies as ``Annotated`` aliases: ``SessionDep``, ``CurrentUser``, ``ArtistUser`` …

A request is authenticated by, in order: an API key (``Authorization: Bearer esk_…`` or
``X-API-Key``), HTTP basic auth (username + password, or username + API key, as A1111's
``--api-auth`` clients send), or the session cookie. Only cookie-authenticated requests can be
forged by another site, so only they must carry the CSRF token (``X-CSRF-Token`` header or the
``csrf_token`` form field) on unsafe methods.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from easel.config import Settings
from easel.errors import EaselError, PermissionDenied
from easel.server import accounts, security
from easel.server.jobs import JobRunner
from easel.server.models import User

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class NotAuthenticated(EaselError):
    """No or wrong credentials (HTTP 401)."""


class CsrfFailed(PermissionDenied):
    """A cookie-authenticated form or call without its CSRF token (HTTP 403)."""


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_runner(request: Request) -> JobRunner:
    return request.app.state.runner  # type: ignore[no-any-return]


def get_db(request: Request) -> Iterator[Session]:
    """A database session per request; commits on success, rolls back on error."""
    from easel.registry.store import registry_session

    with registry_session(request.app.state.settings.db_url) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
SessionDep = Annotated[Session, Depends(get_db)]


@dataclass
class Auth:
    """Who is calling and how (``via``: "api_key", "basic" or "cookie")."""

    user: User
    via: str
    session_token: str | None = None


def _basic(header: str) -> tuple[str, str] | None:
    try:
        raw = base64.b64decode(header, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, secret = raw.partition(":")
    return (name, secret) if sep else None


def identify(request: Request, db: SessionDep) -> Auth | None:
    """The caller if credentials were given and are right; None if none were given.

    Wrong credentials are an error (401), never a silent fall-back to anonymous. The session's
    connection goes back to the pool once the caller is known (the loaded user stays usable).
    """
    try:
        return _identify(request, db)
    finally:
        db.commit()


def _identify(request: Request, db: Session) -> Auth | None:
    from easel.server import ratelimit

    url = request.app.state.settings.db_url
    address = ratelimit.client_address(request)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    key = request.headers.get("x-api-key")
    if scheme.lower() == "bearer":
        key = value.strip()
    if key is not None:
        user = accounts.user_for_api_key(db, key)
        if user is None:
            _raise_key_failure(url, address, NotAuthenticated(
                "the API key is not valid", hint="create one on the account page or with POST /api/keys"))
        assert user is not None
        return Auth(user, "api_key")
    if scheme.lower() == "basic":
        pair = _basic(value.strip())
        if pair is None:
            raise NotAuthenticated("the basic auth header is malformed")
        name, secret = pair
        wrong = NotAuthenticated("wrong username, password or API key in basic auth")
        if secret.startswith(security.API_KEY_PREFIX):
            user = accounts.user_for_api_key(db, secret)
            if user is None or user.username != name.strip().lower():
                _raise_key_failure(url, address, wrong)
        else:  # a password: the log-in limits apply
            try:
                user = ratelimit.login(url, db, name, secret, address)
            except PermissionDenied:  # a wrong password (TooManyAttempts passes through: 429)
                raise wrong from None
        assert user is not None
        return Auth(user, "basic")
    token = request.cookies.get(security.SESSION_COOKIE)
    if token:
        user = accounts.user_for_session(db, token)
        if user is not None:
            if request.method not in SAFE_METHODS:
                _check_csrf_header(request, token)
            return Auth(user, "cookie", token)
    return None


def _raise_key_failure(url: str, address: str, error: EaselError) -> None:
    """Count a wrong API key; raise 429 if the address is over its limit, else ``error``."""
    from easel.server import ratelimit

    limited = ratelimit.key_failure(url, address)
    raise limited if limited is not None else error


def _check_csrf_header(request: Request, token: str) -> None:
    """Header check here; form posts are checked by ``check_csrf_form`` once the form is read."""
    given = request.headers.get(security.CSRF_HEADER)
    if given is not None:
        if not security.csrf_ok(request.app.state.secret, token, given):
            raise CsrfFailed("the CSRF token is wrong", hint="reload the page and try again")
        request.state.csrf_checked = True
        return
    ctype = request.headers.get("content-type", "")
    if not (ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded")):
        raise CsrfFailed("a cookie-authenticated request needs the X-CSRF-Token header",
                         hint="send the token shown on the page, or use an API key")
    request.state.csrf_checked = False


async def guarded_auth(request: Request, auth: Annotated[Auth | None, Depends(identify)]) -> Auth | None:
    """The caller (or None), with CSRF enforced for cookie-authenticated unsafe requests."""
    await check_csrf_form(request, auth)
    return auth


OptionalAuthDep = Annotated[Auth | None, Depends(guarded_auth)]


def require_auth(auth: OptionalAuthDep) -> Auth:
    if auth is None:
        raise NotAuthenticated("you are not logged in",
                               hint="log in, or send an API key (Authorization: Bearer esk_…)")
    return auth


AuthDep = Annotated[Auth, Depends(require_auth)]


def current_user(auth: AuthDep) -> User:
    return auth.user


CurrentUser = Annotated[User, Depends(current_user)]


def artist_user(user: CurrentUser) -> User:
    if user.role != "artist" or not user.artist_id:
        raise PermissionDenied(f"only artists have works and consent; {user.username} is a {user.role}")
    return user


ArtistUser = Annotated[User, Depends(artist_user)]


def operator_user(user: CurrentUser) -> User:
    if user.role != "operator":
        raise PermissionDenied("only an operator may do this")
    return user


OperatorUser = Annotated[User, Depends(operator_user)]


async def check_csrf_form(request: Request, auth: Auth | None) -> None:
    """For cookie-authenticated form posts without the header: the form's ``csrf_token``."""
    if auth is None or auth.via != "cookie" or request.method in SAFE_METHODS:
        return
    if getattr(request.state, "csrf_checked", False):
        return
    form = await request.form()
    given = form.get(security.CSRF_FIELD)
    assert auth.session_token is not None
    if not isinstance(given, str) or not security.csrf_ok(request.app.state.secret, auth.session_token,
                                                          given):
        raise CsrfFailed("the form has no valid CSRF token", hint="reload the page and submit again")
    request.state.csrf_checked = True
