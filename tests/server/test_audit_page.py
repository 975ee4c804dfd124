"""The audit page over ``easel.audit``'s Auditor, with a tiny random-weight descriptor encoder."""

from __future__ import annotations

import re

import pytest

from tests.server.conftest import png_bytes
from tests.server.helpers import api_key, bearer


def test_audit_page_finds_the_registered_work(client) -> None:
    encoder_mod = pytest.importorskip("easel.audit.encoder")
    service = pytest.importorskip("easel.audit.service")
    import torch

    from easel.config import get_settings
    from easel.db import session_scope

    artist = bearer(api_key(client, "paula", role="artist"))
    picture = png_bytes(31)
    r = client.post("/api/works", headers=artist, data={"title": "Parrot", "license_spdx": "CC-BY-4.0"},
                    files={"file": ("parrot.png", picture, "image/png")})
    work_id = r.json()["work"]["id"]
    torch.manual_seed(0)
    encoder = encoder_mod.DescriptorEncoder(channels=(8, 16, 16, 16)).eval()
    with session_scope(get_settings().db_url) as session:
        service.describe_works(session, encoder, progress=False)
    with session_scope(get_settings().db_url) as session:
        from sqlalchemy import func, select

        from easel.registry.models import WorkDescriptor

        assert session.scalar(select(func.count()).select_from(WorkDescriptor)) >= 1
    client.app.state.audit_encoder = encoder

    page = client.get("/audit")
    assert 'id="audit-form"' in page.text
    r = client.post("/audit", files={"file": ("suspect.png", picture, "image/png")})
    assert r.status_code == 200, r.text[-500:]
    assert work_id in r.text and "paula" in r.text
    assert re.search(r"Verdict:</strong> \w+", r.text)
    r = client.post("/audit", files={"file": ("../x.png", picture, "image/png")})
    assert r.status_code == 400 and "plain file name" in r.text
