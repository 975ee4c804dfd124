"""Personal styles in the studio: the picker lists only styles the user may use; jobs with one are
checked, credited to the artist, and refused once the artist withdraws consent."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from easel.config import Settings
from easel.db import session_scope
from easel.provenance.log import GenerationRecord
from easel.server.models import Job
from easel.style.adapter import StyleTrainConfig
from easel.style.models import StyleCredit
from tests.pictures import artwork, encode
from tests.server.helpers import api_key, bearer, post_form, wait_job

FAST = StyleTrainConfig(steps=3, batch_size=4)
REF = "artist:alice/default"


def _count(settings: Settings, model: type) -> int:
    with session_scope(settings.db_url) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _picker(client, username: str) -> str:  # type: ignore[no-untyped-def]
    client.cookies.clear()
    r = post_form(client, "/login", {"username": username, "password": "correct horse"})
    assert r.status_code == 200 and 'id="style"' in r.text, r.text[:300]
    page = client.get("/generate").text
    client.cookies.clear()
    return page


def test_personal_style_picker_jobs_credits_and_withdrawal(client, server_settings: Settings,
                                                           tiny_model_dir: Path) -> None:
    from easel.registry.store import registry_session
    from easel.style import service
    from easel.style.training import train_style

    alice = bearer(api_key(client, "alice", role="artist"))
    bob = bearer(api_key(client, "bob"))
    carol = bearer(api_key(client, "carol"))
    works = []
    for seed in (100, 101, 102):
        form = {"title": f"shape {seed}", "license_spdx": "CC-BY-4.0", "allow": ["train_style"]}
        r = client.post("/api/works", headers=alice, data=form,
                        files={"file": (f"{seed}.png", encode(artwork(seed, 128)), "image/png")})
        assert r.status_code == 201, r.text
        works.append(r.json()["work"]["id"])
    train_style("alice", model_dir=tiny_model_dir, config=FAST, url=server_settings.db_url, progress=False)

    # private: alice sees it in her picker, bob does not, and bob's job is refused with nothing stored
    assert f'value="{REF}"' in _picker(client, "alice")
    assert REF not in _picker(client, "bob")
    jobs = _count(server_settings, Job)
    r = client.post("/api/jobs", json={"prompt": "a cat", "style": REF, "steps": 1}, headers=bob)
    assert r.status_code == 403 and "private" in r.json()["error"]
    assert _count(server_settings, Job) == jobs

    # shared with bob: listed for bob (credited to alice), his job runs and credits alice
    with registry_session(server_settings.db_url) as session:
        service.share(session, service.owned_style(session, "alice", REF), ["bob"])
    bob_page = _picker(client, "bob")
    assert f'value="{REF}"' in bob_page and "by alice, credited" in bob_page
    listed = client.get("/api/styles", headers=bob).json()
    assert {"value": REF, "label": f"{REF} (by alice, credited)", "personal": True} in listed
    assert {"value": "twemoji", "label": "twemoji", "personal": False} in listed
    assert all(s["value"] != REF for s in client.get("/api/styles", headers=carol).json())
    assert REF not in _picker(client, "carol")
    r = client.post("/api/jobs", json={"prompt": "a cat", "style": REF, "steps": 1, "seed": 3}, headers=bob)
    assert r.status_code == 202, r.text
    done = wait_job(client, r.json()["id"], bob)
    assert done["state"] == "done", done
    with session_scope(server_settings.db_url) as session:
        record = session.scalar(select(GenerationRecord).where(GenerationRecord.id == done["result"][0]))
        assert record is not None and record.style == REF and record.style_artist == "alice"
        assert "a cat, alice style" in record.prompt
        credits = list(session.scalars(select(StyleCredit)))
    assert [(c.generation_id, c.user) for c in credits] == [(done["result"][0], "bob")]
    r = client.post("/api/jobs", json={"prompt": "a cat", "style": REF, "steps": 1}, headers=carol)
    assert r.status_code == 403

    # alice revokes train_style on one work: the style is withdrawn, gone from the picker, refused
    r = client.post(f"/api/works/{works[0]}/consent", json={"action": "revoke", "purposes": ["train_style"]},
                    headers=alice)
    assert r.status_code == 201, r.text
    assert REF not in _picker(client, "bob")
    jobs = _count(server_settings, Job)
    r = client.post("/api/jobs", json={"prompt": "a cat", "style": REF, "steps": 1}, headers=bob)
    assert r.status_code == 403 and "withdrawn" in r.json()["error"]
    assert _count(server_settings, Job) == jobs and _count(server_settings, StyleCredit) == 1
