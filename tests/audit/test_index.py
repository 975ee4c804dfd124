"""The descriptor indexes: exact and approximate search, growth without a rebuild, exact re-scoring."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete

import easel.audit.index as index_module
from easel.audit.index import (
    FloatIndex,
    Scored,
    decisive_search,
    descriptor_index,
    exact_scores,
    forget_cache,
)
from easel.registry.descriptors import descriptor_row
from easel.registry.models import Work, WorkDescriptor
from easel.registry.service import add_artist
from easel.registry.store import index_dir, registry_session

KIND = "test-desc-v1"


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def url(easel_home: Path) -> str:
    url = f"sqlite:///{easel_home / 'easel.db'}"
    with registry_session(url) as session:
        add_artist(session, "ann", "Ann")
    return url


def add_works(url: str, vectors: np.ndarray, start: int = 0) -> list[int]:
    """Work rows (test records, no pictures) with one descriptor row each (``[N x V x D]``)."""
    pks = []
    with registry_session(url) as session:
        for i, views in enumerate(vectors, start):
            digest = hashlib.sha256(str(i).encode()).hexdigest()
            work = Work(id=f"w{i}", owner_id="ann", title=f"work {i}", license_spdx="CC0-1.0",
                        sha256=digest, media_type="image/png", width=64, height=64, pdq="", pdq_quality=0,
                        pdq_dihedral="")
            session.add(work)
            session.flush()
            session.add(descriptor_row(work.pk, KIND, views))
            pks.append(work.pk)
    return pks


def test_an_approximate_index_finds_a_works_view_and_keeps_its_settings_through_save_and_load(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    views = unit(rng, 400, 4, 16)
    index = FloatIndex.approximate(16, views.reshape(-1, 16), nlist=16)
    assert index.is_approximate and not FloatIndex(16).is_approximate
    index.add(np.repeat(np.arange(1000, 1400), 4), views.reshape(-1, 16))
    query = views[123, 2] + 0.05 * rng.normal(size=16).astype(np.float32)
    query /= np.linalg.norm(query)
    best = index.search(query[None], 5)
    assert best[0].key == 1123 and len({h.key for h in best}) == 5
    assert best[0].score == pytest.approx(float(views[123, 2] @ query), abs=0.02)  # SQ8: close, not exact
    index.save(tmp_path, "ivf", {"count": 400, "newest": 400})
    loaded = FloatIndex.load(tmp_path, "ivf")
    assert loaded is not None
    again = loaded[0]
    assert again.is_approximate and again.index.nprobe == index.index.nprobe == 8
    assert again.rows_per_key == 4 and again.key_count == 400
    assert again.search(query[None], 1)[0].key == 1123


def test_too_small_a_sample_to_train_is_refused() -> None:
    with pytest.raises(ValueError, match="too few"):
        FloatIndex.approximate(16, unit(np.random.default_rng(0), 100, 16), nlist=64)


def test_the_saved_index_takes_new_rows_without_a_rebuild_and_is_rebuilt_when_rows_go(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    first = unit(rng, 5, 3, 8)
    add_works(url, first)
    folder = index_dir(url)
    with registry_session(url) as session:
        assert descriptor_index(session, folder, KIND, 8).key_count == 5
    later = unit(rng, 2, 3, 8)
    new_pks = add_works(url, later, start=5)
    forget_cache()

    def no_rebuild(*args: object) -> FloatIndex:
        raise AssertionError("the index was rebuilt, not extended")

    monkeypatch.setattr(index_module, "_rebuild", no_rebuild)
    with registry_session(url) as session:
        grown = descriptor_index(session, folder, KIND, 8)
        assert len(grown) == 21 and grown.key_count == 7
        assert grown.search(later[1, 2][None], 1)[0].key == new_pks[1]
    forget_cache()
    with registry_session(url) as session:  # the extended index was saved: loaded as it is
        assert descriptor_index(session, folder, KIND, 8).key_count == 7
    monkeypatch.undo()
    with registry_session(url) as session:
        session.execute(delete(WorkDescriptor).where(WorkDescriptor.work_pk == new_pks[0]))
    with registry_session(url) as session:
        rebuilt = descriptor_index(session, folder, KIND, 8)
        assert rebuilt.key_count == 6 and new_pks[0] not in set(rebuilt.keys.tolist())


def test_a_large_registry_gets_an_approximate_index_whose_finds_are_rescored_exactly(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    views = unit(rng, 300, 2, 16)
    pks = add_works(url, views)
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 100)
    forget_cache()
    query = views[40, 1] + 0.1 * rng.normal(size=16).astype(np.float32)
    query /= np.linalg.norm(query)
    with registry_session(url) as session:
        index = descriptor_index(session, index_dir(url), KIND, 16)
        assert index.is_approximate and index.key_count == 300
        found = index.search(query[None], 5)
        assert found[0].key == pks[40]
        exact = exact_scores(session, KIND, found, query[None])
        assert decisive_search(session, index, KIND, query[None], 1) == exact[:1]  # what guards decide on
    by_pk = dict(zip(pks, views, strict=True))
    true_best = {h.key: float((by_pk[h.key] @ query).max()) for h in exact}
    assert [h.key for h in exact] == sorted(true_best, key=lambda k: -true_best[k])
    for hit in exact:
        assert hit.score == pytest.approx(float((by_pk[hit.key] @ query).max()), abs=1e-6)
    with registry_session(url) as session:
        assert exact_scores(session, KIND, [Scored(pks[0], 0.0, 0)], query[None])[0].score == pytest.approx(
            float((views[0] @ query).max()), abs=1e-6)


def test_ranked_scores_give_each_query_its_best_works_by_their_best_view() -> None:
    index = FloatIndex(2)
    angles = {7: (0.0, 0.5), 8: (0.2,), 9: (1.2, 1.4)}  # work → its views' angles
    for key, views in angles.items():
        index.add([key] * len(views), np.array([[np.cos(a), np.sin(a)] for a in views]))
    queries = np.array([[1.0, 0.0], [np.cos(1.3), np.sin(1.3)]], dtype=np.float32)
    ranked = index.ranked_scores(queries, 4)
    expected0 = sorted([1.0, np.cos(0.2), np.cos(1.2)], reverse=True)  # work 7's best view is 0.0
    assert np.allclose(ranked[0, :3], expected0, atol=1e-6) and np.isnan(ranked[0, 3])
    assert np.isclose(ranked[1, 0], np.cos(0.1), atol=1e-6)  # work 9, within 0.1 of either view
    assert np.allclose(ranked[:, :3], np.sort(ranked[:, :3], axis=1)[:, ::-1])  # best first


def test_a_replaced_descriptor_is_what_the_index_finds_afterwards(url: str) -> None:
    """`set_descriptor` over an existing row: the saved index must not keep the old vector."""
    from easel.registry.descriptors import set_descriptor

    rng = np.random.default_rng(3)
    views = unit(rng, 6, 2, 8)
    pks = add_works(url, views)
    folder = index_dir(url)
    with registry_session(url) as session:
        assert descriptor_index(session, folder, KIND, 8).search(views[2, 0][None], 1)[0].key == pks[2]
    replacement = unit(rng, 2, 8)
    with registry_session(url) as session:
        set_descriptor(session, "w2", KIND, replacement)
    for cached in (True, False):  # the process's cached index and the saved one, reloaded
        if not cached:
            forget_cache()
        with registry_session(url) as session:
            index = descriptor_index(session, folder, KIND, 8)
            best = index.search(replacement[1][None], 1)[0]
            assert best.key == pks[2] and best.score == pytest.approx(1.0, abs=1e-5)
            old = index.search(views[2, 0][None], 1)[0]
            assert old.key != pks[2] or old.score < 0.99
            assert index.key_count == 6 and len(index) == 12


def test_an_exact_index_that_ingest_would_carry_past_the_limit_is_rebuilt_approximate(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    first = unit(rng, 40, 2, 16)
    add_works(url, first)
    folder = index_dir(url)
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 100)
    with registry_session(url) as session:
        assert not descriptor_index(session, folder, KIND, 16).is_approximate  # 80 rows
    add_works(url, unit(rng, 5, 2, 16), start=40)  # 90 rows: still exact, extended
    with registry_session(url) as session:
        assert not descriptor_index(session, folder, KIND, 16).is_approximate
    later = unit(rng, 260, 2, 16)
    new_pks = add_works(url, later, start=45)  # 610 rows: past the limit
    with registry_session(url) as session:
        index = descriptor_index(session, folder, KIND, 16)
        assert index.is_approximate and index.key_count == 305
        assert index.search(later[7, 1][None], 1)[0].key == new_pks[7]
