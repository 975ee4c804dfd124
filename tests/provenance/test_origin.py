"""From a generation record to what its model learned from (``easel.provenance.origin``)."""

from __future__ import annotations

import json
from pathlib import Path

from easel.diffusion.identity import weights_digest
from easel.provenance.origin import model_origin

DATASET = "d" * 64


def _model(folder: Path, model_id: str = "m1", dataset_id: str = DATASET) -> Path:
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(folder.name.encode() * 64)
    (folder / "model_card.json").write_text(json.dumps({
        "model_id": model_id, "dataset_id": dataset_id,
        "sources": [{"set_id": "alpha", "rights_holder": "Alpha", "license_spdx": "MIT", "items": 6,
                     "attribution": "alpha icons by Alpha, MIT", "source": "npm"}]}))
    return folder


def test_the_folder_whose_weights_made_the_image_names_its_sources(tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    url = f"sqlite:///{tmp_path / 'easel.db'}"
    record = {"model_id": "m1", "model_sha256": weights_digest(model, tmp_path / "c"), "dataset_id": DATASET}
    origin = model_origin(record, url, model, tmp_path / "c")
    assert origin is not None and origin["model_dir"] == str(model) and origin["matched_by"] == "weights"
    assert origin["sources"] == [{"set_id": "alpha", "rights_holder": "Alpha", "license_spdx": "MIT",
                                  "items": 6, "attribution": "alpha icons by Alpha, MIT"}]
    assert origin["notes"] == [] and "registry" not in origin  # this registry never built it

    # Other weights under the same id are not taken for the model that made the image.
    other = _model(tmp_path / "other")
    origin = model_origin(record, url, other, tmp_path / "c")
    assert origin is not None and "model_dir" not in origin
    assert origin["notes"] == ["no model folder on this machine matches the record's weights digest"]


def test_old_records_match_by_id_and_say_so(tmp_path: Path) -> None:
    model = _model(tmp_path / "model", dataset_id="e" * 64)
    url = f"sqlite:///{tmp_path / 'easel.db'}"
    origin = model_origin({"model_id": "m1", "dataset_id": DATASET}, url, model, tmp_path / "c")
    assert origin is not None and origin["matched_by"] == "id"
    assert any("model id only" in n for n in origin["notes"])
    assert any("another dataset" in n for n in origin["notes"])
    assert model_origin(None, url) is None
    assert model_origin({"mode": "txt2img"}, url) is None


def test_weak_records_say_what_they_rest_on(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from easel.provenance.origin import verification_origin

    model = _model(tmp_path / "model")
    url = f"sqlite:///{tmp_path / 'easel.db'}"
    record = {"model_id": "m1", "model_sha256": weights_digest(model, tmp_path / "c"), "dataset_id": DATASET}

    def notes(found: str, state: str | None) -> list[str]:
        result = SimpleNamespace(provenance=record, found=found, credentials_state=state)
        origin = verification_origin(result, url, model, tmp_path / "c")
        assert origin is not None and origin["matched_by"] == "weights"
        return origin["notes"]

    assert notes("credentials", "Trusted") == []
    assert any("signer is not in the trust list" in n for n in notes("credentials", "Valid"))
    assert any("found by fingerprint" in n for n in notes("fingerprint", None))
    assert notes("watermark", None) == []


def test_an_upscaled_image_leads_back_to_the_shipped_upscaler(tmp_path: Path) -> None:
    from easel.diffusion.upscaler import default_upscaler_dir

    record = {"model_id": "easel-upscaler-0.1.0", "mode": "upscale",
              "model_sha256": weights_digest(default_upscaler_dir(), tmp_path / "c")}
    origin = model_origin(record, f"sqlite:///{tmp_path / 'easel.db'}", cache_dir=tmp_path / "c")
    assert origin is not None and origin["matched_by"] == "weights"
    assert Path(origin["model_dir"]).resolve() == default_upscaler_dir().resolve()
