"""CSRF on the log-in and sign-up forms; failed log-ins and wrong API keys are rate limited."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from easel.config import Settings
from easel.db import session_scope
from easel.server import ratelimit, security
from easel.server.models import AuthFailure, LoginSession, User
from tests.server.helpers import api_key, bearer, form_token, post_form, signup


def _count(settings: Settings, model: type) -> int:
    with session_scope(settings.db_url) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_login_and_signup_forms_refuse_posts_without_their_token(client, server_settings) -> None:
    form = {"username": "mallory", "password": "correct horse", "role": "creator"}
    # a cross-site post: no pre-session cookie, no token
    r = client.post("/signup", data=form)
    assert r.status_code == 403 and "CSRF" in r.text
    assert _count(server_settings, User) == 0
    # the attacker's own token (from their own cookie) does not fit the victim's cookie
    attacker_token = form_token(client, "/signup")
    client.cookies.clear()
    client.cookies.set(security.PRE_SESSION_COOKIE, "victims-cookie")
    r = client.post("/signup", data={**form, "csrf_token": attacker_token})
    assert r.status_code == 403 and _count(server_settings, User) == 0
    # a made-up token with the right cookie neither
    client.cookies.clear()
    form_token(client, "/signup")
    r = client.post("/signup", data={**form, "csrf_token": "0" * 64})
    assert r.status_code == 403 and _count(server_settings, User) == 0
    # the refusal page carries a fresh token: submitting it again works
    client.cookies.clear()
    r = post_form(client, "/signup", form, follow_redirects=False)
    assert r.status_code == 303 and _count(server_settings, User) == 1
    client.cookies.clear()

    # log-in: right password, no token: refused, no session made, no cookie set
    sessions = _count(server_settings, LoginSession)
    r = client.post("/login", data={"username": "mallory", "password": "correct horse"},
                    follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text
    assert security.SESSION_COOKIE not in r.cookies
    assert _count(server_settings, LoginSession) == sessions
    # a refused form is not a failed log-in: it does not count toward the limit
    assert _count(server_settings, AuthFailure) == 0
    r = post_form(client, "/login", {"username": "mallory", "password": "correct horse"},
                  follow_redirects=False)
    assert r.status_code == 303 and r.cookies.get(security.SESSION_COOKIE)
    assert _count(server_settings, LoginSession) == sessions + 1


def test_json_login_cannot_be_posted_as_a_cross_site_form(client, server_settings) -> None:
    signup(client, "nadia")
    sessions = _count(server_settings, LoginSession)
    # what a cross-site <form enctype="text/plain"> can send: refused, nothing made
    r = client.post("/api/auth/login", content=b'{"username": "nadia", "password": "correct horse"}',
                    headers={"Content-Type": "text/plain"})
    assert 400 <= r.status_code < 500 and security.SESSION_COOKIE not in r.cookies
    assert _count(server_settings, LoginSession) == sessions


def test_failed_logins_are_limited_per_account_across_restarts(client, server_settings) -> None:
    from fastapi.testclient import TestClient

    from easel.server import create_app

    signup(client, "kim")
    signup(client, "lee")
    for _ in range(ratelimit.MAX_FAILURES_PER_ACCOUNT):
        r = client.post("/api/auth/login", json={"username": "kim", "password": "wrong password"})
        assert r.status_code == 403
    # now even the right password is not checked: 429 with Retry-After and a JSON body
    r = client.post("/api/auth/login", json={"username": "kim", "password": "correct horse"})
    assert r.status_code == 429
    wait = int(r.headers["Retry-After"])
    assert 0 < wait <= ratelimit.WINDOW.total_seconds()
    assert r.json()["retry_after"] == wait and "too many failed log-ins" in r.json()["error"]
    assert security.SESSION_COOKIE not in r.cookies
    # the form and HTTP basic auth are limited too
    r = post_form(client, "/login", {"username": "kim", "password": "correct horse"}, follow_redirects=False)
    assert r.status_code == 429 and "too many" in r.text and int(r.headers["Retry-After"]) > 0
    basic = base64.b64encode(b"kim:correct horse").decode()
    r = client.get("/sdapi/v1/sd-models", headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 429 and r.headers["Retry-After"]
    # another account from the same address is not locked
    r = client.post("/api/auth/login", json={"username": "lee", "password": "correct horse"})
    assert r.status_code == 200
    # the count is in the database: a new app over it (a restart, another worker) still refuses
    with TestClient(create_app(server_settings)) as other:
        r = other.post("/api/auth/login", json={"username": "kim", "password": "correct horse"})
        assert r.status_code == 429


def test_address_limit_is_not_reset_by_logging_into_ones_own_account(client, server_settings) -> None:
    signup(client, "own")
    targets = [f"target{i}" for i in range(5)]
    for name in targets:
        signup(client, name)
    failures = 0
    # spread guesses so that no account reaches its own limit
    while failures < ratelimit.MAX_FAILURES_PER_ADDRESS - 1:
        name = targets[failures % len(targets)]
        r = client.post("/api/auth/login", json={"username": name, "password": "guess guess"})
        assert r.status_code == 403, (failures, r.text)
        failures += 1
    # logging into one's own account works and clears that account only
    assert client.post("/api/auth/login", json={"username": "own", "password": "correct horse"}).status_code \
        == 200
    r = client.post("/api/auth/login", json={"username": "target0", "password": "guess guess"})
    assert r.status_code == 403  # the 20th failure from this address
    r = client.post("/api/auth/login", json={"username": "own", "password": "correct horse"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    # another address is not affected
    ratelimit.check_login(server_settings.db_url, "own", "192.0.2.7")


def test_names_and_passwords_that_are_not_utf8_are_wrong_credentials(client, server_settings) -> None:
    signup(client, "uma")
    # lone surrogates are valid JSON escapes but cannot be stored or hashed as UTF-8
    r = client.post("/api/auth/login", content=b'{"username": "\\udaad\\udd6d", "password": "pass word"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 403 and r.json()["error"] == "wrong username or password", r.text
    assert _count(server_settings, AuthFailure) == 2  # one failure, per account and per address
    r = client.post("/api/auth/login", content=b'{"username": "uma", "password": "\\udaad pass"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code in (403, 422), r.text  # the body's model refuses it, or the check does
    assert client.post("/api/auth/login", json={"username": "uma", "password": "correct horse"}).status_code \
        == 200


def test_wrong_api_keys_are_limited_per_address_but_a_valid_key_still_works(client) -> None:
    key = api_key(client, "scripter")
    for i in range(ratelimit.MAX_KEY_FAILURES_PER_ADDRESS):
        r = client.get("/api/me", headers=bearer(f"esk_wrong{i}"))
        assert r.status_code == 401, i
    r = client.get("/api/me", headers=bearer("esk_wrong-again"))
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 900
    assert r.json()["status"] == 429
    r = client.get("/api/me", headers={"X-API-Key": "esk_nope"})
    assert r.status_code == 429
    basic = base64.b64encode(b"scripter:esk_nope").decode()
    assert client.get("/sdapi/v1/options", headers={"Authorization": f"Basic {basic}"}).status_code == 429
    # a valid key is never refused (keys cannot be guessed; the limit only stops the hammering)
    r = client.get("/api/me", headers=bearer(key))
    assert r.status_code == 200 and r.json()["username"] == "scripter"


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_failures_age_out_of_the_window(db_url: str) -> None:
    from easel.registry.store import upgrade

    upgrade(db_url)
    now = datetime.now(UTC)
    with session_scope(db_url) as session:
        # five failures 14 minutes ago and one 16 minutes ago (outside the window)
        for minutes in (14, 14, 14, 14, 14, 16):
            session.add(AuthFailure(scope=ratelimit.SCOPE_ACCOUNT, key="oscar",
                                    at=now - timedelta(minutes=minutes)))
    with pytest.raises(ratelimit.TooManyAttempts) as caught:
        ratelimit.check_login(db_url, "Oscar", "198.51.100.1")  # usernames compare case-blind
    assert 50 <= caught.value.retry_after <= 61
    ratelimit.check_login(db_url, "olga", "198.51.100.1")
    # recording prunes rows that left the window; clearing an account keeps the address rows
    ratelimit.record_login_failure(db_url, "olga", "198.51.100.1")
    with session_scope(db_url) as session:
        ats = [a for a in session.scalars(select(AuthFailure.at))]
        assert len(ats) == 7 and all(a > now - ratelimit.WINDOW for a in ats)
    ratelimit.clear_account(db_url, "olga")
    with session_scope(db_url) as session:
        scopes = sorted(session.scalars(select(AuthFailure.scope).where(AuthFailure.key != "oscar")))
    assert scopes == [ratelimit.SCOPE_ADDRESS]
