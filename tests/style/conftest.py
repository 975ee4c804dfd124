"""A registry with two artists and their works, and a tiny random base model, for style tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from easel.config import get_settings
from tests.pictures import artwork, encode


@dataclass
class Studio:
    url: str
    home: Path
    model_dir: Path
    keys: dict[str, str]
    works: dict[str, list[str]]  # artist → work ids


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Easel pipeline saved once per session."""
    from easel.diffusion.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-base") / "model")


@pytest.fixture
def studio(easel_home: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Studio:
    """Artists alice (4 works) and bob (3 works) and carol (none), each with a key file."""
    from easel.registry.importer import save_key
    from easel.registry.service import add_artist, register_work
    from easel.registry.store import registry_session

    url = f"sqlite:///{easel_home / 'easel.db'}"
    monkeypatch.setenv("EASEL_DATABASE_URL", url)
    monkeypatch.delenv("EASEL_API_KEY", raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_home()
    keys: dict[str, str] = {}
    with registry_session(url) as session:
        for artist in ("alice", "bob", "carol"):
            _, keys[artist] = add_artist(session, artist, artist.title())
    works: dict[str, list[str]] = {"alice": [], "bob": [], "carol": []}
    for artist, seeds in (("alice", range(100, 104)), ("bob", range(200, 203))):
        save_key(settings.keys_dir, artist, keys[artist])
        for seed in seeds:
            work = register_work(url, encode(artwork(seed, 128)), artist, keys[artist], f"shape {seed}",
                                 "CC-BY-4.0", name=f"{seed}.png", store_dir=settings.home / "works")
            works[artist].append(work.id)
    save_key(settings.keys_dir, "carol", keys["carol"])
    return Studio(url, easel_home, tiny_model, keys, works)
