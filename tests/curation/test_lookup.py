"""`easel dataset lookup`: a work that went into a model is found, also edited; an opted-out one is not."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from easel.curation.run import curate
from easel.diffusion.model_card import datasheet_lines
from easel.registry.lineage import record_model
from easel.registry.store import registry_session
from tests.conftest import run_cli
from tests.curation.test_curate import _config


def _edited(path: Path) -> Path:
    """The picture at half size, saved as JPEG quality 50."""
    picture = Image.open(path).convert("RGB")
    picture = picture.resize((picture.width // 2, picture.height // 2), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=50)
    out = path.parent.parent.parent.parent / f"edited-{path.stem}.jpg"
    out.write_bytes(buffer.getvalue())
    return out


def test_lookup_finds_trained_works_and_not_opted_out_ones(curation_home: Path) -> None:
    from easel.config import get_settings

    corpus = curation_home / "corpus" / "64px"
    out = curation_home / "curated"
    result = curate(
        corpus, out, _config(curation_home, stages=("consent", "integrity", "duplicates")), progress=False
    )
    from easel.corpus.consented import record_build

    record_build(out / "manifest.parquet", "train_base")
    with registry_session(get_settings().db_url) as session:
        record_model(session, "base-test", result.dataset_id, "base", str(curation_home / "model"))
    assert datasheet_lines({"manifest": str(out / "manifest.parquet")}) == [
        f"- datasheet: [datasheet.md]({out / 'datasheet.md'})"
    ]

    images = corpus / "images"
    for name in ("alpha/shape-07.png", "beta/beta-1.png"):
        edited = _edited(images / name)
        proc = run_cli("dataset", "lookup", str(edited), check=True)
        item = name.replace("/", ":").removesuffix(".png")
        assert "base-test" in proc.stdout and "YES" in proc.stdout and item in proc.stdout, proc.stdout
    # The fox was opted out before training: neither it nor an edited copy is in any model.
    fox = run_cli("dataset", "lookup", str(_edited(images / "alpha" / "fox-face.png")), check=True)
    assert "base-test" in fox.stdout and "not in any model" in fox.stdout
    # A picture nobody registered can be asked about too.
    stranger = curation_home / "stranger.png"
    Image.new("RGB", (32, 32), (30, 200, 90)).save(stranger)
    assert "not in any model" in run_cli("dataset", "lookup", str(stranger), check=True).stdout

    artist = run_cli("dataset", "lookup", "--artist", "beta", "--json", check=True)
    import json

    answer = json.loads(artist.stdout)[0]
    assert answer["found"] and {m["row"]["item_id"] for m in answer["matches"]} >= {
        f"beta:beta-{i}" for i in range(6)
    }
    # A model folder from another machine: its card names the dataset id and a manifest path that
    # is not here (as the shipped model's does); this registry's build of that dataset answers.
    folder = curation_home / "elsewhere-model"
    folder.mkdir()
    folder.joinpath("model_card.json").write_text(json.dumps({
        "model_id": "easel-embedded-elsewhere", "dataset_id": result.dataset_id,
        "manifest": "/nowhere/home/corpus/64px/manifest.parquet"}))
    edited = _edited(images / "alpha" / "shape-07.png")
    other = run_cli("dataset", "lookup", str(edited), "--model", str(folder), check=True)
    assert "easel-embedded-elsewhere" in other.stdout and "YES" in other.stdout, other.stdout
    assert "is gone" not in other.stdout
    neither = run_cli("dataset", "lookup")
    assert neither.returncode != 0 and "give an IMAGE or --artist" in neither.stderr
