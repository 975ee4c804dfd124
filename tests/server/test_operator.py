"""Operators: made with `easel serve --add-operator`, they see all; consent stays the owner's."""

from __future__ import annotations

from tests.conftest import run_cli
from tests.server.conftest import png_bytes
from tests.server.helpers import api_key, bearer


def test_operator_sees_all_but_cannot_change_consent(server_settings) -> None:
    from fastapi.testclient import TestClient

    from easel.server import create_app

    made = run_cli("serve", "--add-operator", "root", env={"EASEL_OPERATOR_PASSWORD": "operator pass"})
    assert made.returncode == 0 and "operator root created" in made.stdout, made.stderr
    again = run_cli("serve", "--add-operator", "root", env={"EASEL_OPERATOR_PASSWORD": "operator pass"})
    assert again.returncode == 2 and "taken" in again.stderr

    with TestClient(create_app(server_settings)) as client:
        artist = bearer(api_key(client, "olga", role="artist"))
        r = client.post("/api/works", headers=artist, data={"title": "Owl", "license_spdx": "CC-BY-4.0"},
                        files={"file": ("owl.png", png_bytes(21), "image/png")})
        work_id = r.json()["work"]["id"]
        r = client.post("/api/auth/login", json={"username": "root", "password": "operator pass"})
        assert r.status_code == 200 and r.json()["user"]["role"] == "operator"
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        assert client.get(f"/api/works/{work_id}").status_code == 200
        assert [w["id"] for w in client.get("/api/works").json()] == [work_id]
        r = client.post(f"/api/works/{work_id}/consent", json={"action": "optout"}, headers=csrf)
        assert r.status_code == 403
        assert client.get("/api/me").json()["daily_quota"] is None
        r = client.post("/sdapi/v1/options", json={"easel_include_prompt": True}, headers=csrf)
        assert r.status_code == 200
        assert client.get("/sdapi/v1/options").json()["easel_include_prompt"] is True
