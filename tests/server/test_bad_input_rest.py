"""The rest of issue 8's bad-input list: bodies without Content-Length past the limit, another
user's job, wrong content types on JSON routes — each a clear 4xx, nothing stored changed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from easel.config import get_settings
from easel.db import session_scope
from easel.registry.models import Work
from easel.server.models import Job
from tests.server.conftest import png_bytes
from tests.server.helpers import api_key, bearer, wait_job


def _count(model: type) -> int:
    with session_scope(get_settings().db_url) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _chunks(total: int, head: bytes = b"") -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), ``total`` bytes long."""
    yield head
    sent = len(head)
    while sent < total:
        piece = min(16 * 1024, total - sent)
        sent += piece
        yield b"a" * piece


def test_chunked_bodies_past_the_limit_are_413_and_store_nothing(client,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import easel.server.app as server_app

    artist = bearer(api_key(client, "paula", role="artist"))
    creator = bearer(api_key(client, "quinn"))
    monkeypatch.setattr(server_app, "MAX_REQUEST_BYTES", 256 * 1024)
    works, jobs = _count(Work), _count(Job)
    # a JSON job whose prompt never ends
    r = client.post("/api/jobs", headers={**creator, "Content-Type": "application/json"},
                    content=_chunks(1024 * 1024, b'{"prompt": "'))
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    # a multipart upload streamed past the limit
    boundary = "xyz"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nFox\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"license_spdx\"\r\n\r\nCC-BY-4.0\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = client.post("/api/works", headers={**artist, **multipart}, content=_chunks(1024 * 1024, head))
    assert r.status_code == 413 and r.json()["status"] == 413
    # a page form too (HTML answer)
    r = client.post("/audit", headers=multipart, content=_chunks(1024 * 1024, head))
    assert r.status_code == 413 and "Too large" in r.text
    assert (_count(Work), _count(Job)) == (works, jobs)
    # under the limit, a chunked body is read as usual
    r = client.post("/api/jobs", headers={**creator, "Content-Type": "application/json"},
                    content=iter([b'{"prompt": "fox", ', b'"steps": 1}']))
    assert r.status_code == 202, r.text


def test_another_users_job_cannot_be_seen_cancelled_or_followed(client) -> None:
    owner = bearer(api_key(client, "rita"))
    other = bearer(api_key(client, "sam"))
    r = client.post("/api/jobs", json={"prompt": "fox face", "steps": 1, "seed": 1}, headers=owner)
    job_id = r.json()["id"]
    for method, path in (("get", f"/api/jobs/{job_id}"), ("post", f"/api/jobs/{job_id}/cancel"),
                         ("get", f"/api/jobs/{job_id}/events"), ("get", "/api/jobs/..%2F..%2Fetc%2Fpasswd"),
                         ("post", "/api/jobs/no-such-job/cancel")):
        r = client.request(method, path, headers=other)
        assert r.status_code == 404, (path, r.text)
        assert "error" in r.json()
    done = wait_job(client, job_id, owner)
    assert done["state"] == "done"  # the other user's cancel changed nothing
    assert all(j["id"] != job_id for j in client.get("/api/jobs", headers=other).json())


def test_json_routes_refuse_other_content_types(client) -> None:
    h = bearer(api_key(client, "tess"))
    jobs = _count(Job)
    r = client.post("/api/jobs", headers=h, data={"prompt": "fox"})  # a form, not JSON
    assert r.status_code == 422 and r.json()["status"] == 422
    r = client.post("/api/jobs", headers={**h, "Content-Type": "text/plain"}, content=b'{"prompt": "fox"}')
    assert r.status_code == 422
    r = client.post("/api/jobs", headers={**h, "Content-Type": "application/json"}, content=b'{"prompt": ')
    assert r.status_code == 422 and r.json()["error"]
    r = client.post("/api/jobs", headers=h, json={"prompt": "fox", "init_image": "@@not base64@@"})
    assert r.status_code == 400 and "init_image" in r.json()["error"]
    r = client.post("/api/jobs", headers=h, json={"prompt": "fox", "init_image": png_bytes(1).hex()})
    assert r.status_code == 400 and "init_image" in r.json()["error"]
    assert _count(Job) == jobs
