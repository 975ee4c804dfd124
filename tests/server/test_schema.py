"""Schemathesis against our OpenAPI schema: generated requests to every documented operation,
authenticated with an API key, must never produce a server error (5xx).

Few examples per operation keep it to seconds; CI's run of the same test is what guards it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

EXAMPLES_PER_OPERATION = 8
REQUEST_TIMEOUT_S = 60
"""Per request (schemathesis' default is 10 s). A log-in runs one argon2id check, measured at
4-6 s on the shared 2-core machine at load average 12 (0.1 s when idle); this test looks for
server errors, not latency."""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[tuple[object, str]]:
    from fastapi.testclient import TestClient

    from easel.config import get_settings
    from easel.server import create_app
    from tests.server.helpers import api_key

    home = tmp_path_factory.mktemp("schema-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EASEL_HOME", str(home))
        mp.setenv("EASEL_MODEL_DIR", str(tiny_model_dir))
        mp.setenv("EASEL_SERVER_DAILY_QUOTA", "4")
        mp.delenv("EASEL_DATABASE_URL", raising=False)
        get_settings.cache_clear()
        app = create_app(get_settings())
        with TestClient(app) as client:
            key = api_key(client, "fuzzer", role="artist")
            yield app, key
        get_settings.cache_clear()


def test_no_server_errors(api: tuple[object, str]) -> None:
    from hypothesis import given

    app, key = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {key}"}
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: object) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error],  # type: ignore[attr-defined]
                                   timeout=REQUEST_TIMEOUT_S)

        check()
    assert "POST /sdapi/v1/txt2img" in labels and len(labels) >= 20


def test_schema_documents_every_api_route(api: tuple[object, str]) -> None:
    app, _key = api
    spec = app.openapi()  # type: ignore[attr-defined]
    paths = set(spec["paths"])
    for required in ("/api/jobs", "/api/jobs/{job_id}/events", "/api/works", "/api/verify",
                     "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/sd-models",
                     "/sdapi/v1/samplers", "/sdapi/v1/progress", "/sdapi/v1/options"):
        assert required in paths, required
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
    assert os.environ.get("EASEL_HOME") != ""
