"""Small helpers for the server tests: sign up, log in, get a key, wait for a job."""

from __future__ import annotations

import re
import time
from typing import Any

from easel.server.models import TERMINAL_STATES


def signup(client: Any, username: str, role: str = "creator", password: str = "correct horse") -> dict:
    r = client.post("/api/auth/signup", json={"username": username, "password": password, "role": role})
    assert r.status_code == 201, r.text
    return r.json()


def api_key(client: Any, username: str, role: str = "creator", password: str = "correct horse") -> str:
    """Sign up, log in, make a key with the cookie + CSRF token, then drop the cookie."""
    signup(client, username, role, password)
    r = client.post("/api/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf_token"]
    r = client.post("/api/keys", json={"label": "tests"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    client.cookies.clear()
    return r.json()["key"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_job(client: Any, job_id: str, headers: dict[str, str], timeout: float = 60.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if body["state"] in TERMINAL_STATES:
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def csrf_from_page(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def form_token(client: Any, path: str) -> str:
    """Open the log-in or sign-up page (which sets the pre-session cookie); its form's token."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(rf'action="{path}"[^>]*>\s*<input type="hidden" name="csrf_token" value="([0-9a-f]+)"',
                      page.text)
    assert match, f"no CSRF token in the form of {path}"
    return match.group(1)


def post_form(client: Any, path: str, data: dict[str, Any], **kwargs: Any) -> Any:
    """Post the log-in or sign-up form as a browser would: with the token of its page."""
    return client.post(path, data={**data, "csrf_token": form_token(client, path)}, **kwargs)
