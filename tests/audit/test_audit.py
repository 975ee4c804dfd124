"""Auditing against a real registry (SQLite): matches, verdicts, evidence, CLI, bad input, guard."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from easel.audit.encoder import COPY_KIND, REFERENCE_VIEWS, STYLE_KIND, has_shipped, load_encoder
from easel.audit.index import FloatIndex, descriptor_index, forget_cache
from easel.audit.service import Auditor, describe_works, query_picture, stale_descriptor_works
from easel.errors import BadInput, PermissionDenied
from easel.registry.models import Work
from easel.registry.service import add_artist, register_work
from easel.registry.store import index_dir, registry_session
from tests.audit.conftest import artwork, encode
from tests.conftest import run_cli


@pytest.fixture
def encoder_dir(tiny_encoder_dir: Path) -> Path | None:
    """The shipped encoder when there is one (ingest then stores its descriptors), else the tiny one."""
    return None if has_shipped() else tiny_encoder_dir


@pytest.fixture
def registry(easel_home: Path, encoder_dir: Path | None) -> dict[str, object]:
    """Two artists with three works each, described at ingest (shipped encoder) or afterwards."""
    url = f"sqlite:///{easel_home / 'easel.db'}"
    keys = {}
    with registry_session(url) as session:
        for artist in ("ann", "bob"):
            keys[artist] = add_artist(session, artist, artist.title())[1]
    works = {}
    for seed in range(6):
        owner = "ann" if seed < 3 else "bob"
        work = register_work(url, encode(artwork(seed)), owner, keys[owner], f"work {seed}", "CC-BY-4.0",
                             store_dir=easel_home / "store")
        works[seed] = work.id
    encoder = load_encoder(str(encoder_dir) if encoder_dir else None)
    with registry_session(url) as session:
        done, skipped = describe_works(session, encoder, progress=False)
    forget_cache()
    return {"url": url, "works": works, "keys": keys, "described": (done, skipped)}


def test_float_index_searches_saves_and_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FloatIndex(8)
    index.add(list(range(100, 150)), vectors)
    best = index.search(vectors[7:8], 3)
    assert best[0].key == 107 and best[0].score == pytest.approx(1.0, abs=1e-5)
    index.save(tmp_path, "x", {"count": 50, "newest": 1})
    loaded = FloatIndex.load(tmp_path, "x")
    assert loaded is not None and loaded[1]["count"] == 50
    assert loaded[0].search(vectors[7:8], 1)[0].key == 107
    (tmp_path / "x.keys.npy").write_bytes(b"junk")
    assert FloatIndex.load(tmp_path, "x") is None


def test_float_index_scores_a_work_by_its_best_view_and_returns_k_works(tmp_path: Path) -> None:
    """Works with several views (the copy kind's reference views): k distinct works come back,
    each scored by its best view, also after a save and load."""
    rng = np.random.default_rng(1)
    views = rng.normal(size=(6, 4, 8)).astype(np.float32)
    views /= np.linalg.norm(views, axis=2, keepdims=True)
    index = FloatIndex(8)
    index.add(np.repeat(np.arange(10, 16), 4), views.reshape(24, 8))
    query = views[2, 3:4]  # the last view of work 12
    best = index.search(query, 3)
    assert [h.key for h in best][0] == 12 and len({h.key for h in best}) == 3
    assert best[0].score == pytest.approx(1.0, abs=1e-5)
    assert best[1].score == pytest.approx(float(max(views[best[1].key - 10] @ query[0])), abs=1e-5)
    index.save(tmp_path, "v", {"count": 6, "newest": 6})
    loaded = FloatIndex.load(tmp_path, "v")
    assert loaded is not None and loaded[0].rows_per_key == 4 and len(loaded[0].search(query, 5)) == 5


def test_the_original_is_found_for_a_flipped_rotated_copy(registry: dict, encoder_dir: Path | None) -> None:
    assert registry["described"] == ((0, 0) if encoder_dir is None else (6, 0))
    url = str(registry["url"])
    copy = ImageOps.mirror(artwork(4)).rotate(90)
    with registry_session(url) as session:
        auditor = Auditor(session, index_dir(url), load_encoder(str(encoder_dir) if encoder_dir else None))
        result = auditor.audit(copy, "copy.png", k=3)
        assert result.matches[0].work_id == registry["works"][4]
        assert result.matches[0].verdict == "copy" and result.matches[0].pdq_distance is not None
        assert result.matches[0].pdq_distance <= 31
        assert len(result.matches) <= 3
        only_ann = auditor.audit(copy, "copy.png", k=10, artist="ann")
        assert {m.owner_id for m in only_ann.matches} == {"ann"}
        assert registry["works"][4] not in {m.work_id for m in only_ann.matches}


def test_descriptor_index_is_rebuilt_when_its_files_are_stale(registry: dict) -> None:
    url = str(registry["url"])
    folder = index_dir(url)
    with registry_session(url) as session:
        index = descriptor_index(session, folder, COPY_KIND, 16)
        assert index.key_count == 6 and len(index) == 6 * REFERENCE_VIEWS  # every view of every work
        dim = index.dim
    for f in folder.glob(f"desc-{COPY_KIND}.*"):
        f.unlink()
    forget_cache()
    with registry_session(url) as session:
        assert descriptor_index(session, folder, COPY_KIND, dim).key_count == 6
    assert (folder / f"desc-{COPY_KIND}.faiss").exists()


def test_descriptors_of_an_older_encoder_are_refused_until_reindexed(registry: dict,
                                                                      encoder_dir: Path | None) -> None:
    """Shipping new weights bumps ``COPY_KIND`` (or ``STYLE_KIND``, for a new style head alone):
    works described by the old encoder must not be scored against the new one's descriptors, and
    `easel audit index` describes them anew — a work whose copy descriptors are current gets its
    style descriptor only."""
    from sqlalchemy import func, select, update
    from sqlalchemy.orm import Session

    from easel.registry.models import WorkDescriptor

    url = str(registry["url"])
    encoder = load_encoder(str(encoder_dir) if encoder_dir else None)

    def copy_rows(session: Session, pks: list[int]) -> dict[int, bytes]:
        return {pk: bytes(v) for pk, v in session.execute(select(
            WorkDescriptor.work_pk, WorkDescriptor.vector).where(WorkDescriptor.kind == COPY_KIND,
                                                                  WorkDescriptor.work_pk.in_(pks)))}

    with registry_session(url) as session:  # as if an older encoder had described works 0–3:
        pks = [w.pk for w in sorted(session.query(Work).all(), key=lambda w: w.pk)[:4]]
        session.execute(update(WorkDescriptor).where(WorkDescriptor.work_pk.in_(pks[:2]),  # both heads
                                                     WorkDescriptor.kind.in_([COPY_KIND, STYLE_KIND]))
                        .values(kind=func.replace(WorkDescriptor.kind, "-v", "-old-v")))
        session.execute(update(WorkDescriptor).where(WorkDescriptor.work_pk.in_(pks[2:]),  # style only
                                                     WorkDescriptor.kind == STYLE_KIND)
                        .values(kind="easel-style-v0"))
        before = copy_rows(session, pks[2:])
    forget_cache()
    with registry_session(url) as session:
        assert stale_descriptor_works(session) == 4
        with pytest.raises(BadInput, match="older descriptor encoder") as err:
            Auditor(session, index_dir(url), encoder).audit(artwork(0), "x.png")
        assert "easel audit index" in str(err.value.hint)
    with registry_session(url) as session:  # what `easel audit index` does
        assert describe_works(session, encoder, progress=False) == (4, 0)
    forget_cache()
    with registry_session(url) as session:
        assert stale_descriptor_works(session) == 0
        for kind in (COPY_KIND, STYLE_KIND):  # one current row per work and head
            counts = session.execute(select(WorkDescriptor.work_pk, func.count()).where(
                WorkDescriptor.kind == kind).group_by(WorkDescriptor.work_pk)).all()
            assert len(counts) == len(registry["works"]) and {c for _, c in counts} == {1}
        assert copy_rows(session, pks[2:]) == before  # current copy descriptors left as they were
        best = Auditor(session, index_dir(url), encoder).audit(artwork(0), "x.png", k=1).matches[0]
        assert best.work_id == registry["works"][0]


def test_cli_audits_an_image_and_a_folder(registry: dict, encoder_dir: Path | None, tmp_path: Path,
                                          easel_home: Path) -> None:
    chosen = ["--encoder", str(encoder_dir)] if encoder_dir else []
    query = tmp_path / "suspect.png"
    query.write_bytes(encode(ImageOps.flip(artwork(1))))
    sheet = tmp_path / "sheet.png"
    proc = run_cli("audit", str(query), "-k", "2", *chosen, "--sheet", str(sheet),
                   env={"EASEL_HOME": str(easel_home)}, check=True)
    assert "suspect.png: copy" in proc.stdout and str(registry["works"][1]) in proc.stdout
    with Image.open(sheet) as im:
        assert im.width > 3 * 192 and im.height > 192
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(artwork(2).rotate(180)))
    (folder / "b.png").write_bytes(encode(artwork(99)))
    (folder / "c.gif").write_bytes(encode(artwork(5), "GIF"))
    out = tmp_path / "out.csv"
    proc = run_cli("audit", "--folder", str(folder), "--csv", str(out), *chosen,
                   "-k", "2", env={"EASEL_HOME": str(easel_home)}, check=True)
    assert "3 images audited" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    first = {r["image"]: r for r in rows if r["rank"] in ("1", "")}
    assert first["a.png"]["work_id"] == registry["works"][2] and first["a.png"]["verdict"] == "copy"
    assert first["c.gif"]["verdict"] == "refused" and "GIF" in first["c.gif"]["error"]
    bad = run_cli("audit", str(tmp_path / "missing.png"), env={"EASEL_HOME": str(easel_home)})
    assert bad.returncode == 2 and "is not a file" in bad.stderr


def _bytes(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_bad_inputs_are_handled_or_refused_clearly() -> None:
    with pytest.raises(BadInput, match="at least 8 pixels"):
        query_picture(_bytes(Image.new("RGB", (1, 1)), "PNG"), "dot.png")
    frames = [artwork(s, 64) for s in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(BadInput, match="GIF"):
        query_picture(gif.getvalue(), "anim.gif")
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    grey = query_picture(_bytes(Image.fromarray(ramp), "PNG"), "deep.png")
    assert grey.mode == "RGB" and (np.asarray(grey) == 255).mean() < 0.05
    cmyk = query_picture(_bytes(artwork(7, 64).convert("CMYK"), "JPEG"), "print.jpg")
    assert cmyk.mode == "RGB" and cmyk.size == (64, 64)
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert np.asarray(query_picture(_bytes(rgba, "PNG"), "clear.png")).min() == 255


def test_output_guard_skips_without_a_registry(easel_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    from easel.audit.guard import output_guard

    image = artwork(3)
    assert output_guard(image, f"sqlite:///{easel_home / 'none.db'}") is image


@pytest.mark.skipif(not has_shipped(), reason="no shipped descriptor encoder")
def test_shipped_encoder_refuses_a_cropped_rotated_bordered_copy_of_another_owners_work(
        easel_home: Path) -> None:
    from easel.audit.augment import ATTACKS
    from easel.audit.guard import output_guard

    url = f"sqlite:///{easel_home / 'easel.db'}"
    with registry_session(url) as session:
        ann = add_artist(session, "ann", "Ann")[1]
        bob = add_artist(session, "bob", "Bob")[1]
    originals = [artwork(s) for s in range(4)]
    for i, picture in enumerate(originals):
        register_work(url, encode(picture), "ann", ann, f"a{i}", "CC-BY-4.0")
    # The registry refuses another owner's upload from REGISTRY_COPY_THRESHOLD (0.88): drawing 3's
    # cropped, rotated and bordered copy scores 0.91 and PDQ puts it far away, so only the
    # descriptor can refuse it.
    copy = ATTACKS["crop80+rot10+border"](originals[3], random.Random(1))
    with pytest.raises(PermissionDenied, match="copy descriptor"):
        register_work(url, encode(copy), "bob", bob, "mine", "CC-BY-4.0")
    register_work(url, encode(artwork(50)), "bob", bob, "bob's own", "CC-BY-4.0")
    # The output guard refuses from NEAR_COPY_THRESHOLD (0.949): a regurgitated work comes out
    # soft; drawing 2 blurred scores above it.
    with pytest.raises(PermissionDenied, match="near-copy"):
        output_guard(ATTACKS["blur"](originals[2], random.Random(1)), url)
    assert output_guard(artwork(60), url) is not None


def test_cli_audit_index_rebuilds_the_indexes_on_demand(registry: dict, encoder_dir: Path | None,
                                                        easel_home: Path) -> None:
    url = str(registry["url"])
    chosen = ["--encoder", str(encoder_dir)] if encoder_dir else []
    state = index_dir(url) / f"desc-{COPY_KIND}.json"
    proc = run_cli("audit", "index", *chosen, env={"EASEL_HOME": str(easel_home)}, check=True)
    assert "6 works indexed" in proc.stdout and state.exists()
    before = state.stat().st_mtime_ns
    run_cli("audit", "index", *chosen, env={"EASEL_HOME": str(easel_home)}, check=True)
    assert state.stat().st_mtime_ns == before  # current: loaded, not written again
    proc = run_cli("audit", "index", "--rebuild", *chosen, env={"EASEL_HOME": str(easel_home)}, check=True)
    assert "6 works indexed" in proc.stdout and state.stat().st_mtime_ns > before


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "0"], "nothing to train"),
    (["--style-input", "every"], "--style-input must be all or mid"),
    (["--style-colour-levels", "40"], "--style-colour-levels must be 0–16"),
])
def test_audit_train_refuses_settings_it_cannot_train_with(args: list[str], message: str,
                                                           tmp_path: Path) -> None:
    proc = run_cli("audit", "train", *args, "--checkpoints", str(tmp_path / "ck"),
                   "--out", str(tmp_path / "o"), env={"EASEL_HOME": str(tmp_path / "home")})
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
