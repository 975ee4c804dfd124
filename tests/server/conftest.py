"""Server fixtures: a tiny random pipeline on disk, an app over a fresh EASEL_HOME, accounts."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from easel.config import Settings, get_settings


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from easel.diffusion.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture
def server_settings(easel_home: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("EASEL_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("EASEL_SERVER_DAILY_QUOTA", "6")
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def client(server_settings: Settings) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from easel.server import create_app

    with TestClient(create_app(server_settings)) as test_client:
        yield test_client


def png_bytes(seed: int, size: int = 128) -> bytes:
    """A distinct, fingerprintable picture per seed (shapes at seed-dependent places)."""
    import random

    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(0, size - 30), rng.randrange(0, size - 30)
        color = tuple(rng.randrange(0, 256) for _ in range(3))
        draw.rectangle([x0, y0, x0 + rng.randrange(10, 30), y0 + rng.randrange(10, 30)], fill=color)
        draw.ellipse([y0, x0, y0 + 20, x0 + 25], fill=color[::-1])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
