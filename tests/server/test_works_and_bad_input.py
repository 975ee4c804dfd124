"""Artists' works and consent over the API, and bad input: each a clear 4xx, nothing stored changed."""

from __future__ import annotations

from sqlalchemy import func, select

from easel.config import get_settings
from easel.db import session_scope
from easel.registry.models import ConsentEvent, Work
from easel.server.models import ApiKey
from tests.server.conftest import png_bytes
from tests.server.helpers import api_key, bearer, csrf_from_page, post_form, signup


def _counts() -> tuple[int, int]:
    with session_scope(get_settings().db_url) as session:
        works = int(session.scalar(select(func.count()).select_from(Work)) or 0)
        events = int(session.scalar(select(func.count()).select_from(ConsentEvent)) or 0)
    return works, events


def _upload(client, headers, data: bytes, name: str = "fox.png", ctype: str = "image/png",
            allow: list[str] | None = None, **extra: str):
    form = {"title": "Fox", "license_spdx": "LicenseRef-proprietary", **extra}
    if allow is not None:
        form["allow"] = allow  # type: ignore[assignment]
    return client.post("/api/works", headers=headers, data=form, files={"file": (name, data, ctype)})


def test_upload_consent_and_ownership(client) -> None:
    alice = bearer(api_key(client, "alice", role="artist"))
    r = _upload(client, alice, png_bytes(1), allow=["train_style"])
    assert r.status_code == 201, r.text
    verdict = r.json()
    assert verdict["accepted"] and verdict["work"]["owner_id"] == "alice"
    work_id = verdict["work"]["id"]
    assert verdict["work"]["consent"] == {"train_base": False, "train_style": True,
                                          "commercial_output": False}

    # withdraw, then the policy says no; the history shows every event in order
    r = client.post(f"/api/works/{work_id}/consent", headers=alice,
                    json={"action": "revoke", "purposes": ["train_style"]})
    assert r.status_code == 201 and r.json()["kind"] == "revoke"
    assert client.get(f"/api/works/{work_id}", headers=alice).json()["consent"]["train_style"] is False
    kinds = [e["kind"] for e in client.get(f"/api/works/{work_id}/consent", headers=alice).json()]
    assert kinds == ["register", "grant", "revoke", "revoke"]

    # another artist: cannot read or change it, nor register the same picture
    bob = bearer(api_key(client, "bob", role="artist"))
    before = _counts()
    assert client.get(f"/api/works/{work_id}", headers=bob).status_code == 403
    r = client.post(f"/api/works/{work_id}/consent", headers=bob,
                    json={"action": "grant", "purposes": ["train_base"]})
    assert r.status_code == 403 and "not yours" in r.json()["error"]
    r = _upload(client, bob, png_bytes(1), name="mine.png")
    assert r.status_code == 403 and work_id in r.json()["error"]
    assert _counts() == before
    assert client.get("/api/works", headers=bob).json() == []

    # a creator has no works or consent to change
    carol = bearer(api_key(client, "carol"))
    r = _upload(client, carol, png_bytes(2))
    assert r.status_code == 403 and "only artists" in r.json()["error"]

    # opt-out wins over the grant
    r = client.post(f"/api/works/{work_id}/consent", headers=alice, json={"action": "optout"})
    assert r.status_code == 201
    assert not any(client.get(f"/api/works/{work_id}", headers=alice).json()["consent"].values())


def test_bad_uploads_are_4xx_and_store_nothing(client) -> None:
    h = bearer(api_key(client, "dora", role="artist"))
    before = _counts()
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (20 * 1024 * 1024)
    cases = [
        (dict(data=big), 413, "larger than 20 MiB"),
        (dict(data=png_bytes(3), ctype="text/plain"), 415, "content type"),
        (dict(data=png_bytes(3), ctype="application/octet-stream"), 415, "content type"),
        (dict(data=png_bytes(3), name="../../etc/passwd.png"), 400, "plain file name"),
        (dict(data=png_bytes(3), name="..\\evil.png"), 400, "plain file name"),
        (dict(data=b"not an image at all"), 400, "image"),
        (dict(data=png_bytes(3), license_spdx="not a licence!"), 400, "SPDX"),
        (dict(data=png_bytes(3), allow=["train_everything"]), 400, "purpose"),
    ]
    for kwargs, status, words in cases:
        r = _upload(client, h, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, (kwargs.get("name"), r.text[:300])
        body = r.json()
        assert words in body["error"] and body["status"] == status, body
    # a body over the request limit is refused from its Content-Length, before it is read
    r = client.post("/api/works", headers={**h, "Content-Type": "multipart/form-data; boundary=x",
                                           "Content-Length": str(64 * 1024 * 1024)}, content=b"")
    assert r.status_code == 413
    assert _counts() == before


def test_missing_or_wrong_credentials_are_401(client) -> None:
    signup(client, "eve")
    assert client.get("/api/me").status_code == 401
    for headers in ({"Authorization": "Bearer esk_wrong"}, {"X-API-Key": "nope"},
                    {"Authorization": "Basic bm90LWJhc2U2NA"},  # malformed
                    {"Authorization": "Basic ZXZlOndyb25nIHBhc3N3b3Jk"}):  # eve:wrong password
        r = client.get("/api/me", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"] and r.json()["status"] == 401
    # a revoked key stops working
    key = api_key(client, "fred")
    keys = client.get("/api/keys", headers=bearer(key)).json()
    assert client.delete(f"/api/keys/{keys[0]['id']}", headers=bearer(key)).status_code == 204
    assert client.get("/api/me", headers=bearer(key)).status_code == 401


def test_csrf_is_required_for_cookie_sessions(client) -> None:
    signup(client, "gail", role="artist")
    r = post_form(client, "/login", {"username": "gail", "password": "correct horse"}, follow_redirects=False)
    assert r.status_code == 303 and client.cookies.get("easel_session")
    page = client.get("/works")
    assert page.status_code == 200
    token = csrf_from_page(page.text)
    before = _counts()
    form = {"title": "Fox", "license_spdx": "CC-BY-4.0"}
    files = {"file": ("fox.png", png_bytes(4), "image/png")}
    # a form post with no token, with a wrong token, and a JSON call without the header
    r = client.post("/api/works", data=form, files=files)
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = client.post("/api/works", data={**form, "csrf_token": "0" * 64}, files=files)
    assert r.status_code == 403
    r = client.post("/api/keys", json={"label": "x"})
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"]
    r = client.post("/api/keys", json={"label": "x"}, headers={"X-CSRF-Token": "f" * 64})
    assert r.status_code == 403
    assert _counts() == before
    with session_scope(get_settings().db_url) as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 0
    # with the page's token the same upload goes through, and the page shows the verdict
    r = client.post("/works", data={**form, "csrf_token": token, "allow": ["train_base"]}, files=files)
    assert r.status_code == 201 and "accepted: registered as wk_" in r.text
    assert _counts()[0] == before[0] + 1


def test_pages_render_and_redirect(client) -> None:
    assert client.get("/generate", follow_redirects=False).headers["location"].startswith("/login")
    r = post_form(client, "/signup", {"username": "hugo", "password": "correct horse", "role": "creator"},
                  follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/generate"
    for path in ("/generate", "/gallery", "/consent", "/audit", "/verify", "/account"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "hugo" in r.text
    from easel.server.services import audit_encoder

    audit = client.get("/audit").text
    available = audit_encoder(client.app.state) is not None
    assert ('id="audit-form"' in audit) if available else ("not available yet" in audit)
    # login refuses an off-site "next"
    r = post_form(client, "/login", {"username": "hugo", "password": "correct horse",
                                     "next": "//evil.example/"}, follow_redirects=False)
    assert r.headers["location"] == "/generate"
    r = post_form(client, "/signup", {"username": "hugo", "password": "correct horse", "role": "creator"})
    assert r.status_code == 400 and "taken" in r.text
    r = post_form(client, "/signup", {"username": "ivy", "password": "pw", "role": "operator"})
    assert r.status_code == 400
