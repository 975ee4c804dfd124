"""Corpus fetch and build on a fixture icon set, and the bad inputs the issue names."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from easel.corpus.captions import caption_for, concept_for, split_for
from easel.corpus.manifest import build_corpus, dataset_id_of, load_manifest
from easel.corpus.sources import extract_set, fetch_sources, fetched_sets, sha256_file
from easel.errors import BadInput, EaselError, NotFound
from tests.conftest import pack_fixture_set, run_cli, write_icon_package


@pytest.mark.parametrize(("name", "caption", "concept"), [
    ("fox-face", "fox face", "fox-face"),
    ("waving-hand-medium-dark-skin-tone", "waving hand, medium-dark skin tone", "waving-hand"),
    ("people-holding-hands-light-skin-tone-dark-skin-tone",
     "people holding hands, light skin tone and dark skin tone", "people-holding-hands"),
    ("1st-place-medal", "1st place medal", "1st-place-medal"),
])
def test_captions_and_concepts(name: str, caption: str, concept: str) -> None:
    assert caption_for(name) == caption
    assert concept_for(name) == concept


def test_bare_tone_suffixes_need_a_base_sibling() -> None:
    siblings = {"artist", "artist-dark", "artist-medium-light", "vertical-traffic-light"}
    assert caption_for("artist-medium-light", siblings) == "artist, medium-light skin tone"
    assert concept_for("artist-dark", siblings) == "artist"
    assert caption_for("vertical-traffic-light", siblings) == "vertical traffic light"
    assert concept_for("vertical-traffic-light", siblings) == "vertical-traffic-light"
    assert caption_for("artist-dark") == "artist dark"  # no set context: left alone


def test_split_is_deterministic_and_by_concept() -> None:
    concepts = [f"concept-{i}" for i in range(2000)]
    first = [split_for(c, seed=0) for c in concepts]
    assert first == [split_for(c, seed=0) for c in concepts]
    assert first != [split_for(c, seed=1) for c in concepts]
    share = {s: first.count(s) / len(first) for s in ("train", "val", "test")}
    assert 0.85 < share["train"] < 0.95 and 0.02 < share["val"] < 0.08


def test_fetch_then_build(easel_home: Path, fixture_packages: dict) -> None:
    sources = easel_home / "sources"
    sets = list(fixture_packages.values())
    states = fetch_sources(sources, sets)
    assert [s for _, s in states] == ["fetched", "fetched"]
    # A re-run fetches nothing new.
    assert [s for _, s in fetch_sources(sources, sets)] == ["present", "present"]
    assert {s.set_id for s in fetched_sets(sources)} == {"alpha", "beta"}

    result = build_corpus(sources, easel_home / "corpus", sets, size=32, workers=2,
                          progress=False)
    assert result.rows == 12 and result.per_set == {"alpha": 6, "beta": 6}
    table = load_manifest(result.manifest_path)
    rows = {r["item_id"]: r for r in table.to_pylist()}
    fox = rows["alpha:fox-face"]
    assert fox["caption"] == "fox face" and fox["license_spdx"] == "CC-BY-4.0"
    assert fox["source"] == "@easel-test/alpha@1.0.0" and "Test Artist" in fox["attribution"]
    png = result.manifest_path.parent / fox["png_path"]
    assert sha256_file(png) == fox["png_sha256"]
    image = Image.open(png)
    assert image.mode == "RGB" and image.size == (32, 32)
    assert image.getpixel((0, 0)) == (255, 255, 255)  # white background
    assert image.getpixel((16, 16)) != (255, 255, 255)  # the icon is drawn
    # Skin-tone variants share a concept and therefore a split.
    assert rows["alpha:waving-hand"]["split"] == rows["alpha:waving-hand-dark-skin-tone"]["split"]
    # The dataset id is the hash of the rows, printed and stored.
    assert result.dataset_id == dataset_id_of(table)
    assert table.schema.metadata[b"dataset_id"].decode() == result.dataset_id
    # Same inputs, same id; a different size changes the rows and so the id.
    again = build_corpus(sources, easel_home / "corpus", sets, size=32, workers=1,
                         progress=False)
    assert again.dataset_id == result.dataset_id
    other = build_corpus(sources, easel_home / "corpus", sets, size=64, progress=False)
    assert other.dataset_id != result.dataset_id


def test_corrupted_tarball_is_refused_and_leaves_nothing(easel_home: Path,
                                                          fixture_packages: dict,
                                                          tmp_path: Path) -> None:
    icon_set = fixture_packages["alpha"]
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b not really a tarball")
    sources = easel_home / "sources"
    sources.mkdir(parents=True)
    with pytest.raises(EaselError, match="checksum mismatch"):
        extract_set(bad, icon_set, sources)
    assert list(sources.iterdir()) == []
    # Right checksum, wrong content: a tarball without icons.json is refused too.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"{}"
        info = tarfile.TarInfo("package/readme.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    empty = tmp_path / "empty.tgz"
    empty.write_bytes(buf.getvalue())
    from dataclasses import replace

    with pytest.raises(BadInput, match="icons.json"):
        extract_set(empty, replace(icon_set, sha256=sha256_file(empty)), sources)
    assert [p for p in sources.iterdir() if not p.name.startswith(".")] == []
    assert not any(sources.iterdir())


def test_svg_that_does_not_parse(easel_home: Path, tmp_path: Path) -> None:
    pkg = write_icon_package(tmp_path, "broken", {"ok-circle": '<circle cx="8" cy="8" r="5"/>'},
                             extra={"broken-icon": {"body": '<path d="M0 0" <<< >'}})
    icon_set = pack_fixture_set(pkg, "broken", tmp_path)
    sources = easel_home / "sources"
    fetch_sources(sources, [icon_set])
    corpus = easel_home / "corpus"
    with pytest.raises(EaselError, match="broken:broken-icon"):
        build_corpus(sources, corpus, [icon_set], size=32, progress=False)
    assert not (corpus / "32px").exists()  # nothing half-written
    result = build_corpus(sources, corpus, [icon_set], size=32, progress=False,
                          skip_failures=True)
    assert result.rows == 1 and [f.item_id for f in result.failures] == ["broken:broken-icon"]
    failures = json.loads((corpus / "32px" / "failures.json").read_text())
    assert failures[0]["item_id"] == "broken:broken-icon"


def test_build_without_sources_is_a_clear_error(easel_home: Path,
                                                fixture_packages: dict) -> None:
    with pytest.raises(NotFound, match="easel corpus fetch"):
        build_corpus(easel_home / "sources", easel_home / "corpus",
                     [fixture_packages["alpha"]], size=32, progress=False)


def test_manifest_missing_column(tmp_path: Path) -> None:
    import pyarrow as pa

    path = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"item_id": ["a"]}), path)
    with pytest.raises(BadInput, match="lacks column"):
        load_manifest(path)


def test_cli_bad_inputs(tmp_path: Path) -> None:
    env = {"EASEL_HOME": str(tmp_path / "home")}
    proc = run_cli("corpus", "fetch", "--set", "no-such-set", env=env)
    assert proc.returncode == 2
    assert "unknown icon set 'no-such-set'" in proc.stderr and "twemoji" in proc.stderr
    assert not (tmp_path / "home").exists()

    proc = run_cli("corpus", "build", "--size", "48", env=env)
    assert proc.returncode != 0

    readonly = tmp_path / "ro"
    readonly.mkdir()
    os.chmod(readonly, 0o500)
    try:
        proc = run_cli("corpus", "fetch", env={"EASEL_HOME": str(readonly / "home")})
        if os.geteuid() == 0:
            # root ignores directory permissions; use a path under a regular file instead
            (tmp_path / "file").write_text("x")
            proc = run_cli("corpus", "fetch", env={"EASEL_HOME": str(tmp_path / "file" / "h")})
        assert proc.returncode == 1
        assert "is not writable" in proc.stderr
    finally:
        os.chmod(readonly, 0o700)

    proc = run_cli("corpus", "show", str(tmp_path / "nothing.parquet"), env=env)
    assert proc.returncode == 2 and "no manifest" in proc.stderr

    proc = run_cli("--help")
    assert proc.returncode == 0 and "corpus" in proc.stdout


def test_cli_fetch_build_show_on_fixture(tmp_path: Path, fixture_packages: dict) -> None:
    home = tmp_path / "home"
    sources = home / "sources"
    fetch_sources(sources, list(fixture_packages.values()))
    env = {"EASEL_HOME": str(home)}
    proc = run_cli("corpus", "build", "--size", "32", env=env, check=True)
    assert "12 items" in proc.stdout and "dataset id" in proc.stdout
    proc = run_cli("corpus", "show", "--size", "32", env=env, check=True)
    assert "alpha" in proc.stdout and "CC-BY-4.0" in proc.stdout


def test_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_cli("corpus", "show", env={"EASEL_HOME": str(tmp_path), "EASEL_THREADS": "-1"})
    assert proc.returncode == 1
    assert "bad setting: EASEL_THREADS" in proc.stderr and "Traceback" not in proc.stderr
