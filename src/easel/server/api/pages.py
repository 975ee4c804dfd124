"""The web studio's pages: server-rendered Jinja2 templates over the same services as the API.

Forms post back to the page's own path with the session's CSRF token in a hidden field; the
generate page queues jobs through ``/api/jobs`` with the token in ``X-CSRF-Token`` and follows
them over server-sent events. Errors render the page again with the message (or ``error.html``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from easel.errors import EaselError
from easel.registry.models import PURPOSES
from easel.server import accounts, security, services
from easel.server.api.routes.auth import set_session_cookie
from easel.server.deps import Auth, CurrentUser, OptionalAuthDep, SessionDep, SettingsDep

router = APIRouter(include_in_schema=False)


def _safe_next(value: str | None, default: str) -> str:
    """Only same-site paths: ``//evil.example`` and absolute URLs fall back to ``default``."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def render(request: Request, template: str, auth: Auth | None, status: int = 200,
           **context: Any) -> HTMLResponse:
    """Render a page with the user and their CSRF token."""
    csrf = ""
    if auth is not None and auth.session_token:
        csrf = security.csrf_token(request.app.state.secret, auth.session_token)
    templates = request.app.state.templates
    return templates.TemplateResponse(request, template, {  # type: ignore[no-any-return]
        "user": auth.user if auth else None, "csrf": csrf, "purposes": PURPOSES, **context},
        status_code=status)


def _status(exc: EaselError) -> int:
    from easel.server.app import status_for

    return status_for(exc)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, auth: OptionalAuthDep) -> Response:
    return render(request, "home.html", auth)


def _pre_session_page(request: Request, template: str, auth: Auth | None, status: int = 200,
                      headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """The log-in or sign-up page: its form carries the token of a pre-session cookie, which is
    set here (kept if the browser already has one)."""
    cookie = request.cookies.get(security.PRE_SESSION_COOKIE)
    if not cookie or len(cookie) > 100:
        cookie = security.new_token()
    token = security.pre_session_csrf(request.app.state.secret, cookie)
    response = render(request, template, auth, status=status, form_csrf=token, **context)
    response.set_cookie(security.PRE_SESSION_COOKIE, cookie, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    if headers:
        response.headers.update(headers)
    return response


def _pre_session_ok(request: Request, given: str) -> bool:
    return security.pre_session_csrf_ok(request.app.state.secret,
                                        request.cookies.get(security.PRE_SESSION_COOKIE), given)


CSRF_FORM_ERROR = "the form has no valid CSRF token (it was not sent from this site's page); " \
    "nothing was changed — submit the form again"


@router.get("/signup", response_class=HTMLResponse)
def signup_page(request: Request, auth: OptionalAuthDep) -> Response:
    return _pre_session_page(request, "signup.html", auth)


@router.post("/signup", response_class=HTMLResponse)
def signup(request: Request, db: SessionDep, username: Annotated[str, Form(max_length=64)],
           password: Annotated[str, Form(max_length=256)], role: Annotated[str, Form(max_length=16)],
           display_name: Annotated[str, Form(max_length=200)] = "",
           csrf_token: Annotated[str, Form(max_length=128)] = "") -> Response:
    if not _pre_session_ok(request, csrf_token):
        return _pre_session_page(request, "signup.html", None, status=403, error=CSRF_FORM_ERROR,
                                 username=username)
    try:
        user = accounts.create_user(db, username, password, role, display_name or None)
        token = accounts.start_session(db, user)
        db.commit()
    except EaselError as exc:
        db.rollback()
        return _pre_session_page(request, "signup.html", None, status=_status(exc), error=str(exc),
                                 username=username)
    response = RedirectResponse("/works" if user.role == "artist" else "/generate", status_code=303)
    set_session_cookie(request, response, token)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, auth: OptionalAuthDep, next: str | None = None) -> Response:
    return _pre_session_page(request, "login.html", auth, next=_safe_next(next, "/generate"))


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, db: SessionDep, username: Annotated[str, Form(max_length=64)],
          password: Annotated[str, Form(max_length=256)],
          next: Annotated[str, Form(max_length=300)] = "/generate",
          csrf_token: Annotated[str, Form(max_length=128)] = "") -> Response:
    from easel.server import ratelimit

    if not _pre_session_ok(request, csrf_token):
        return _pre_session_page(request, "login.html", None, status=403, error=CSRF_FORM_ERROR,
                                 username=username, next=_safe_next(next, "/generate"))
    try:
        user = ratelimit.login(request.app.state.settings.db_url, db, username, password,
                               ratelimit.client_address(request))
    except EaselError as exc:
        retry = getattr(exc, "retry_after", None)
        return _pre_session_page(request, "login.html", None, status=_status(exc), error=exc.message,
                                 headers={"Retry-After": str(retry)} if retry else None,
                                 username=username, next=_safe_next(next, "/generate"))
    token = accounts.start_session(db, user)
    db.commit()
    response = RedirectResponse(_safe_next(next, "/generate"), status_code=303)
    set_session_cookie(request, response, token)
    return response


@router.post("/logout")
def logout(auth: OptionalAuthDep, db: SessionDep) -> Response:
    if auth is not None and auth.session_token:
        accounts.end_session(db, auth.session_token)
        db.commit()
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(security.SESSION_COOKIE, path="/")
    return response


@router.get("/generate", response_class=HTMLResponse)
def generate_page(request: Request, auth: OptionalAuthDep, user: CurrentUser, db: SessionDep,
                  settings: SettingsDep) -> Response:
    styles = services.base_styles()
    quota = None if user.role == "operator" else (
        user.daily_quota if user.daily_quota is not None else settings.server_daily_quota)
    personal = services.usable_personal_styles(db, user, request.app.state.runner.base_unet_sha256())
    return render(request, "generate.html", auth, styles=styles, personal_styles=personal,
                  used=accounts.images_last_day(db, user),
                  quota=quota, model_id=request.app.state.runner.model_id)


@router.get("/gallery", response_class=HTMLResponse)
def gallery_page(request: Request, auth: OptionalAuthDep, user: CurrentUser, db: SessionDep) -> Response:
    return render(request, "gallery.html", auth, images=services.gallery(db, user))


def _works_page(request: Request, auth: Auth | None, db: SessionDep, status: int = 200,
                **context: Any) -> HTMLResponse:
    assert auth is not None
    works = services.list_works(db, auth.user)
    consent = services.consent_now(db, works)
    return render(request, "works.html", auth, status=status, works=works, consent=consent, **context)


@router.get("/works", response_class=HTMLResponse)
def works_page(request: Request, auth: OptionalAuthDep, user: CurrentUser, db: SessionDep) -> Response:
    return _works_page(request, auth, db)


@router.post("/works", response_class=HTMLResponse)
async def works_upload(request: Request, auth: OptionalAuthDep, user: CurrentUser, db: SessionDep,
                       settings: SettingsDep, file: Annotated[UploadFile, File()],
                       title: Annotated[str, Form(max_length=300)],
                       license_spdx: Annotated[str, Form(max_length=64)],
                       attribution: Annotated[str, Form(max_length=1000)] = "",
                       allow: Annotated[list[str] | None, Form()] = None,
                       no_ai: Annotated[bool, Form()] = False) -> Response:
    from easel.server.api.routes.works import read_upload

    try:
        name, data = await read_upload(file)
        work = await run_in_threadpool(services.upload_work, settings, user, data, name, title,
                                       license_spdx, attribution, allow or [], no_ai)
    except EaselError as exc:
        return _works_page(request, auth, db, status=_status(exc),
                           verdict={"accepted": False, "summary": str(exc)})
    db.expire_all()
    return _works_page(request, auth, db, status=201, verdict={
        "accepted": True, "summary": f"accepted: registered as {work.id}", "work_id": work.id})


@router.get("/consent", response_class=HTMLResponse)
def consent_page(request: Request, auth: OptionalAuthDep, user: CurrentUser, db: SessionDep) -> Response:
    works = services.list_works(db, user)
    return render(request, "consent.html", auth, history=services.consent_history(db, user),
                  works=works, consent=services.consent_now(db, works))


@router.post("/consent", response_class=HTMLResponse)
def consent_change(request: Request, auth: OptionalAuthDep, user: CurrentUser, db: SessionDep,
                   action: Annotated[str, Form(max_length=16)],
                   purposes: Annotated[list[str] | None, Form()] = None,
                   work_id: Annotated[str, Form(max_length=40)] = "") -> Response:
    message, status = None, 200
    try:
        event = services.change_consent(db, user, action, purposes or list(PURPOSES), work_id or None)
        db.commit()
        message = f"recorded {event.kind} ({', '.join(event.purpose_list) or 'all'}) as event {event.id}"
    except EaselError as exc:
        db.rollback()
        message, status = str(exc), _status(exc)
    works = services.list_works(db, user)
    return render(request, "consent.html", auth, status=status, message=message, ok=status == 200,
                  history=services.consent_history(db, user), works=works,
                  consent=services.consent_now(db, works))


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, auth: OptionalAuthDep) -> Response:
    available = services.audit_encoder(request.app.state) is not None
    return render(request, "audit.html", auth, available=available)


@router.post("/audit", response_class=HTMLResponse)
async def audit_post(request: Request, auth: OptionalAuthDep, settings: SettingsDep,
                     file: Annotated[UploadFile, File()]) -> Response:
    from easel.server.api.routes.works import read_upload

    encoder = services.audit_encoder(request.app.state)
    if encoder is None:
        return render(request, "audit.html", auth, status=404, available=False)
    try:
        name, data = await read_upload(file)
        result = await run_in_threadpool(services.audit_upload, settings, data, encoder, name)
    except EaselError as exc:
        return render(request, "audit.html", auth, status=_status(exc), available=True, error=str(exc))
    return render(request, "audit.html", auth, available=True, result=result)


@router.get("/verify", response_class=HTMLResponse)
def verify_page(request: Request, auth: OptionalAuthDep) -> Response:
    return render(request, "verify.html", auth)


@router.post("/verify", response_class=HTMLResponse)
async def verify_post(request: Request, auth: OptionalAuthDep, settings: SettingsDep,
                      file: Annotated[UploadFile, File()]) -> Response:
    from easel.server.api.routes.works import read_upload

    try:
        _name, data = await read_upload(file)
        result = await run_in_threadpool(services.verify_upload, settings, data)
    except EaselError as exc:
        return render(request, "verify.html", auth, status=_status(exc), error=str(exc))
    return render(request, "verify.html", auth, result=result)


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, auth: OptionalAuthDep, user: CurrentUser, db: SessionDep) -> Response:
    from sqlalchemy import select

    from easel.server.models import ApiKey

    keys = list(db.scalars(select(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))))
    return render(request, "account.html", auth, keys=keys)


@router.post("/account/keys", response_class=HTMLResponse)
def account_new_key(request: Request, auth: OptionalAuthDep, user: CurrentUser, db: SessionDep,
                    label: Annotated[str, Form(max_length=100)] = "") -> Response:
    from sqlalchemy import select

    from easel.server.models import ApiKey

    _row, key = accounts.create_api_key(db, user, label)
    db.commit()
    keys = list(db.scalars(select(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))))
    return render(request, "account.html", auth, keys=keys, new_key=key)
