"""The descriptor encoder: shapes, normalisation, save/load, and every picture mode it meets."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from easel.audit.augment import ATTACKS, text_bank, train_view
from easel.audit.encoder import (
    REFERENCE_VIEWS,
    DescriptorEncoder,
    best_view_scores,
    describe,
    describe_references,
    load_encoder,
    reference_views,
    to_square_rgb,
)
from tests.audit.conftest import artwork


def test_heads_are_l2_normalised_and_reload_identically(tiny_encoder_dir: Path) -> None:
    model = load_encoder(str(tiny_encoder_dir))
    pictures = [artwork(1), artwork(2, size=100)]
    out = describe(model, pictures)
    assert out.copy.shape == (2, 16) and out.style.shape == (2, 8) and out.content.shape == (2, 384)
    for t in (out.copy, out.style, out.content):
        assert torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)
    again = DescriptorEncoder.from_pretrained(str(tiny_encoder_dir))
    assert torch.allclose(describe(again, pictures).copy, out.copy, atol=1e-6)
    assert not torch.allclose(out.copy[0], out.copy[1])


def test_reference_views_cover_half_area_crops_and_turns(tiny_encoder_dir: Path) -> None:
    """A registered work keeps 12 views; a half-area corner crop of it is one of them exactly,
    so its best-view score with the work is 1, reached at that view."""
    picture = artwork(3, size=100).convert("RGBA")
    views = reference_views(picture)
    assert len(views) == REFERENCE_VIEWS == 12 and views[0].mode == "RGB" and views[0].size == (100, 100)
    assert all(v.size == (71, 71) for v in views[1:10]) and views[10].size == (100, 100)
    model = load_encoder(str(tiny_encoder_dir))
    crops, whole = describe_references(model, [picture, artwork(5)])
    assert crops.shape == (2, 12, 16) and whole.style.shape == (2, 8)
    assert torch.allclose(crops[:, 0], describe(model, [picture, artwork(5)]).copy, atol=1e-5)
    corner = describe(model, [picture.convert("RGB").crop((29, 29, 100, 100))]).copy.numpy()
    scores = best_view_scores(corner, crops.numpy())
    assert scores.shape == (1, 2) and scores[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert int(np.argmax(crops[0].numpy() @ corner[0])) == 9  # the bottom-right crop of the 3×3 grid


def test_to_square_rgb_pads_with_white_and_composites_alpha() -> None:
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    square = to_square_rgb(wide, 16)
    assert square.shape == (16, 16, 3)
    assert tuple(square[0, 8]) == (255, 255, 255) and tuple(square[8, 8])[0] > 200
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert (to_square_rgb(clear, 8) == 255).all()


def test_sixteen_bit_grey_is_rescaled_not_clipped() -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    opened = Image.open(io.BytesIO(buf.getvalue()))
    assert opened.mode.startswith("I")
    grey = to_square_rgb(opened, 64)[..., 0]
    assert grey[0, 0] == 0 and grey[-1, -1] == 255
    assert (grey == 255).mean() < 0.05  # clipping would make most of the ramp white


def test_training_views_keep_shape_and_range() -> None:
    x = torch.rand(6, 3, 32, 32)
    views = train_view(x, text_bank(32, count=4), torch.Generator().manual_seed(0), jpeg_fraction=0.5)
    assert views.shape == x.shape
    assert float(views.min()) >= 0.0 and float(views.max()) <= 1.0
    assert not torch.allclose(views, x)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_returns_an_rgb_picture(name: str) -> None:
    import random

    out = ATTACKS[name](artwork(3), random.Random(0))
    assert out.mode == "RGB" and min(out.size) >= 100
    if name != "none":
        assert out.tobytes() != artwork(3).tobytes()


def test_model_card_names_the_training_command_and_the_figures(tiny_encoder_dir: Path,
                                                              tmp_path: Path) -> None:
    import json
    import shutil

    from easel.audit.model_card import write_card

    folder = tmp_path / "encoder"
    shutil.copytree(tiny_encoder_dir, folder)
    training = {"config": {"manifest": "/data/64px/manifest.parquet", "max_steps": 4000, "minutes": 50.0,
                           "batch_size": 96, "lr": 0.0015, "init_from": None, "style_head_steps": 3000},
                "steps": 4000, "train_items": 17095, "sets": ["noto", "twemoji"]}
    pair = {"recall_at_fpr_1e-4": 0.9, "uAP": 0.95}
    report = {"split": "test", "icons": 12, "copy_negatives": 1320,
              "attacks": {"crop50": {"copy": pair,
                                     "copy_whole": {"recall_at_fpr_1e-4": 0.4, "uAP": 0.5},
                                     "pdq": {"recall_at_fpr_1e-4": 0.0, "uAP": 0.1}}},
              "copy_recall_at_fpr_1e-4": 0.9, "copy_whole_recall_at_fpr_1e-4": 0.4, "copy_uAP": 0.95,
              "pdq_recall_at_fpr_1e-4": 0.0, "pdq_uAP": 0.1, "style_mAP@10": 0.7, "style_recall@1": 0.8,
              "text_to_image_recall@5": 0.3, "text_queries": 5, "descriptor_images_per_s": 600.0}
    write_card(folder, training, report)
    readme = (folder / "README.md").read_text()
    assert ("`easel audit train --manifest /data/64px/manifest.parquet --steps 4000 --minutes 50.0 "
            "--batch-size 96 --lr 0.0015 --style-head-steps 3000`") in readme
    assert "| crop50 | 0.900 | 0.950 | 0.400 | 0.000 | 0.100 |" in readme and "--init-from" not in readme
    card = json.loads((folder / "card.json").read_text())
    assert card["evaluation"]["icons"] == 12 and card["parameters"] > 0
