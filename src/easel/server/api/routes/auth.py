"""Accounts: sign up, log in and out, who am I, API keys."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from easel.errors import NotFound
from easel.server import accounts, security
from easel.server.deps import AuthDep, CurrentUser, OptionalAuthDep, SessionDep, SettingsDep
from easel.server.models import ApiKey
from easel.server.schemas import (
    ApiKeyCreate,
    ApiKeyPublic,
    LoginBody,
    LoginPublic,
    Me,
    UserCreate,
    UserPublic,
)

router = APIRouter(prefix="/api", tags=["accounts"])


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    """The login cookie: HttpOnly, SameSite=Lax, Secure when served over HTTPS."""
    response.set_cookie(security.SESSION_COOKIE, token, max_age=security.SESSION_DAYS * 86400,
                        httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/")


@router.post("/auth/signup", status_code=201, response_model=UserPublic,
             summary="Create an artist or creator account")
def signup(body: UserCreate, db: SessionDep) -> UserPublic:
    user = accounts.create_user(db, body.username, body.password, body.role, body.display_name)
    db.commit()
    return UserPublic.model_validate(user)


@router.post("/auth/login", response_model=LoginPublic,
             summary="Log in; sets the session cookie and returns the CSRF token for it",
             responses={429: {"description": "too many failed log-ins for the account or address "
                                             "(Retry-After)"}})
def login(body: LoginBody, request: Request, response: Response, db: SessionDep) -> LoginPublic:
    from easel.server import ratelimit

    user = ratelimit.login(request.app.state.settings.db_url, db, body.username, body.password,
                           ratelimit.client_address(request))
    token = accounts.start_session(db, user)
    db.commit()
    set_session_cookie(request, response, token)
    return LoginPublic(user=UserPublic.model_validate(user),
                       csrf_token=security.csrf_token(request.app.state.secret, token))


@router.post("/auth/logout", status_code=204, summary="End the cookie session")
def logout(auth: OptionalAuthDep, response: Response, db: SessionDep) -> None:
    if auth is not None and auth.session_token:
        accounts.end_session(db, auth.session_token)
        db.commit()
    response.delete_cookie(security.SESSION_COOKIE, path="/")


@router.get("/me", response_model=Me, summary="The caller's account and quota use")
def me(user: CurrentUser, db: SessionDep, settings: SettingsDep) -> Me:
    quota = None if user.role == "operator" else (
        user.daily_quota if user.daily_quota is not None else settings.server_daily_quota)
    return Me(**UserPublic.model_validate(user).model_dump(),
              images_last_day=accounts.images_last_day(db, user), daily_quota=quota)


@router.post("/keys", status_code=201, response_model=ApiKeyPublic,
             summary="Create an API key (shown once) for scripts and A1111 clients")
def create_key(body: ApiKeyCreate, auth: AuthDep, db: SessionDep) -> ApiKeyPublic:
    row, key = accounts.create_api_key(db, auth.user, body.label)
    db.commit()
    return ApiKeyPublic(id=row.id, label=row.label, key=key, created_at=row.created_at)


@router.get("/keys", response_model=list[ApiKeyPublic], summary="The caller's live API keys")
def list_keys(user: CurrentUser, db: SessionDep) -> list[ApiKeyPublic]:
    rows = db.scalars(select(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
                      .order_by(ApiKey.created_at))
    return [ApiKeyPublic(id=r.id, label=r.label, created_at=r.created_at) for r in rows]


@router.delete("/keys/{key_id}", status_code=204, summary="Revoke one of the caller's API keys")
def revoke_key(key_id: str, user: CurrentUser, db: SessionDep) -> None:
    row = db.get(ApiKey, key_id)
    if row is None or row.user_id != user.id or row.revoked_at is not None:
        raise NotFound(f"you have no live API key {key_id!r}")
    row.revoked_at = datetime.now(UTC)
    db.commit()
