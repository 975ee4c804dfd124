"""A populated registry and a corpus of a few dozen icons the tests draw, built once per session.

Set ``alpha`` (one owner) holds 24 distinct drawings, a skin-tone pair, a blank icon and a fox
that its owner opts out; set ``beta`` (another owner) holds 6 drawings of its own. Each test
gets a copy of the built home, so tests may change the registry and files freely.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from easel.config import get_settings
from tests.conftest import pack_fixture_set, write_icon_package

COLOURS = ("#dd2e44", "#55acee", "#78b159", "#f4900c", "#aa8ed6", "#ffcc4d", "#31373d", "#c1694f")


def _drawing(i: int) -> str:
    """A distinct 16×16 drawing for index ``i``: a few shapes placed by the bits of ``i``."""
    c1, c2 = COLOURS[i % 8], COLOURS[(i * 3 + 1) % 8]
    x, y = 1 + (i % 4) * 2, 1 + (i // 4 % 4) * 2
    shapes = [
        f'<rect x="{x}" y="{y}" width="{6 + i % 3}" height="{5 + i % 5}" fill="{c1}"/>',
        f'<circle cx="{12 - i % 5}" cy="{4 + i % 7 + (i // 7) % 3}" r="{2 + i % 3}" fill="{c2}"/>',
    ]
    if i % 2:
        shapes.append(
            f'<path d="M1 15L{3 + i % 9} {8 + i % 4}L{9 + i % 6} 15z" fill="{COLOURS[(i + 5) % 8]}"/>'
        )
    if i % 3 == 0:
        shapes.append(f'<rect x="{10 - i % 4}" y="1" width="3" height="{3 + i % 6}" fill="#292f33"/>')
    return "".join(shapes)


ALPHA = {f"shape-{i:02d}": _drawing(i) for i in range(24)}
ALPHA.update(
    {
        "fox-face": '<circle cx="8" cy="8" r="7" fill="#f4900c"/><circle cx="5" cy="6" r="1" fill="#000"/>'
        '<circle cx="11" cy="6" r="1" fill="#000"/><path d="M6 11h4l-2 2z" fill="#000"/>',
        "waving-hand": '<rect x="3" y="2" width="10" height="12" rx="3" fill="#ffdc5d"/>'
        '<rect x="5" y="4" width="2" height="6" fill="#000"/>',
        "waving-hand-dark-skin-tone": '<rect x="3" y="2" width="10" height="12" rx="3" fill="#7c533e"/>'
        '<rect x="5" y="4" width="2" height="6" fill="#000"/>',
        "white-square": '<rect x="0" y="0" width="16" height="16" fill="#fff"/>',
    }
)
BETA = {f"beta-{i}": _drawing(100 + 7 * i).replace('fill="#', 'stroke="#000" fill="#') for i in range(6)}


def _build(root: Path) -> Path:
    import os

    from easel.corpus.manifest import build_corpus
    from easel.corpus.sources import fetch_sources
    from easel.registry.importer import import_corpus
    from easel.registry.models import Artist
    from easel.registry.policy import works_by_source
    from easel.registry.service import set_optout
    from easel.registry.store import registry_session

    home = root / "home"
    os.environ["EASEL_HOME"] = str(home)
    get_settings.cache_clear()
    settings = get_settings()
    sets = [
        pack_fixture_set(write_icon_package(root / "pkgs", "alpha", ALPHA), "alpha", root),
        pack_fixture_set(write_icon_package(root / "pkgs", "beta", BETA), "beta", root),
    ]
    sets[1] = dataclasses.replace(sets[1], rights_holder="Beta Studio")
    fetch_sources(settings.sources_dir, sets)
    url = settings.db_url
    result = import_corpus(url, settings.sources_dir, sets, settings.keys_dir)
    assert not getattr(result, "refused", None), result
    with registry_session(url) as session:
        fox = works_by_source(session, ["alpha:fox-face"])["alpha:fox-face"]
        set_optout(session, session.get(Artist, "alpha"), fox.id)
    build_corpus(settings.sources_dir, settings.corpus_dir, sets, size=64, workers=1, progress=False)
    return home


@pytest.fixture(scope="session")
def built_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's built home (do not change it: use ``curation_home``)."""
    import os

    before = os.environ.get("EASEL_HOME")
    home = _build(tmp_path_factory.mktemp("curation"))
    if before is None:
        os.environ.pop("EASEL_HOME", None)
    else:
        os.environ["EASEL_HOME"] = before
    get_settings.cache_clear()
    yield home


@pytest.fixture
def curation_home(built_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private copy of the built home, set as EASEL_HOME."""
    home = tmp_path / "home"
    shutil.copytree(built_home, home)
    monkeypatch.setenv("EASEL_HOME", str(home))
    monkeypatch.delenv("EASEL_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
