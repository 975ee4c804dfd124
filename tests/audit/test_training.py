"""The training objectives and batch sampling of the descriptor encoder, and a run paused and stopped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from easel.audit.augment import mild_view, text_bank, train_view
from easel.audit.training import BatchSampler, info_nce, koleo, sup_con_bank


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_info_nce_is_low_for_matched_views_and_ignores_the_same_icon_in_the_memory() -> None:
    a = _unit(8, 16, 0)
    ids = torch.arange(8)
    empty, no_ids = torch.zeros(0, 16), torch.zeros(0, dtype=torch.long)
    matched = info_nce(a, a.clone(), ids, empty, no_ids, 0.05)
    shuffled = info_nce(a, a.roll(1, 0), ids, empty, no_ids, 0.05)
    assert float(matched) < 0.1 < float(shuffled)
    # a memory holding the same icons (stale views of the positives) must not count as negatives
    with_self = info_nce(a, a.clone(), ids, a.clone(), ids.clone(), 0.05)
    assert abs(float(with_self) - float(matched)) < 1e-4
    # the same memory under other icons' ids is a wall of hard negatives
    as_others = info_nce(a, a.clone(), ids, a.clone(), ids + 100, 0.05)
    assert float(as_others) > float(matched) + 0.5


def test_koleo_falls_as_icons_spread_and_skips_views_of_one_icon() -> None:
    spread = torch.eye(4)
    huddled = F.normalize(torch.eye(4) * 0.1 + 1.0, dim=1)
    ids = torch.arange(4)
    assert float(koleo(spread, ids)) < float(koleo(huddled, ids))
    pair = torch.cat([spread[:2], spread[:2]])
    assert torch.isfinite(koleo(pair, torch.tensor([0, 1, 0, 1])))


def test_sup_con_bank_prefers_embeddings_grouped_by_label() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    grouped = F.normalize(torch.tensor([[1.0, 0.05], [1.0, -0.05], [-0.05, 1.0], [0.05, 1.0]]), dim=1)
    mixed = grouped[[0, 2, 1, 3]]
    bank, bank_labels = grouped.clone(), labels.clone()
    assert float(sup_con_bank(grouped, labels, bank, bank_labels, 0.1)) < \
        float(sup_con_bank(mixed, labels, bank, bank_labels, 0.1))


def test_batches_balance_sets_and_pair_captions_across_sets() -> None:
    labels = np.array([0] * 50 + [1] * 10 + [2] * 10)
    captions = [f"c{i % 10}" for i in range(70)]  # every caption is drawn by all three sets
    sampler = BatchSampler(labels, captions, partner_fraction=0.5)
    idx = sampler(600, torch.Generator().manual_seed(0)).numpy()
    first, second = idx[:300], idx[300:]
    counts = np.bincount(labels[first], minlength=3)
    assert counts.min() > 70  # even over sets, though set 0 has five times the icons
    assert all(captions[i] == captions[j] and labels[i] != labels[j]
               for i, j in zip(first[:300], second, strict=True))


def test_views_keep_shape_and_the_mild_view_keeps_colours() -> None:
    x = torch.rand(6, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    strong = train_view(x, text_bank(32, count=4), g)
    mild = mild_view(x, g)
    assert strong.shape == mild.shape == x.shape
    assert float(mild.min()) >= 0.0 and float(mild.max()) <= 1.0
    # the mild view's colour statistics stay near the original's (no hue or gain changes)
    assert (mild.mean(dim=(2, 3)) - x.mean(dim=(2, 3))).abs().max() < 0.1


def test_colour_histogram_counts_drawn_pixels_by_colour_and_ignores_the_white_ground() -> None:
    from easel.audit.encoder import colour_histogram

    pictures = torch.ones(3, 3, 8, 8)  # white
    pictures[0, 1:, :4, :] = 0.0  # the top half pure red
    pictures[1, :, :, :] = 0.0  # all black
    hist = colour_histogram(pictures, levels=2)
    cells = hist[:, :8]
    red = (1 * 2 + 0) * 2 + 0  # R high, G and B low
    assert torch.allclose(cells[0], torch.eye(8)[red])  # sqrt of shares: all drawn pixels are red
    assert hist[0, 8] == 0.5 and hist[0, 9] == 0.0  # half the picture drawn, none of it dark
    assert hist[1, 0] == 1.0 and hist[1, 8] == 1.0 and hist[1, 9] == 1.0  # black: dark outline cell
    assert torch.count_nonzero(hist[2]) == 0  # nothing drawn: zeros, no division by zero


def test_a_style_head_fitted_on_the_frozen_trunk_learns_the_sets_and_leaves_copy_alone(
        tmp_path: Path) -> None:
    """Two "sets" that draw the same shapes in different palettes: the re-fitted head (every
    stage's statistics and the colour histogram, its standardisation folded into its first layer)
    groups pictures by set; the copy and content heads are the original's to the bit."""
    from easel.audit.encoder import DescriptorEncoder, describe
    from easel.audit.evaluate import style_retrieval
    from easel.audit.training import SplitData, train_style_head, with_style_head

    torch.manual_seed(0)
    original = DescriptorEncoder(image_size=32, channels=(8, 16, 16, 32), copy_dim=16, style_dim=8).eval()
    rng = np.random.default_rng(0)
    palettes = [((220, 40, 40), (250, 200, 30)), ((40, 90, 220), (40, 180, 90))]
    pixels, labels, captions = [], [], []
    for i in range(80):
        s = i % 2
        picture = np.full((32, 32, 3), 255, np.uint8)
        x0, y0, side = rng.integers(2, 12), rng.integers(2, 12), rng.integers(10, 18)
        picture[y0:y0 + side, x0:x0 + side] = palettes[s][0]
        picture[y0 + side // 3:y0 + side // 2, x0:x0 + side] = palettes[s][1]
        pixels.append(picture)
        labels.append(s)
        captions.append(f"shape {i // 2}")  # each shape drawn by both sets
    data = SplitData(np.stack(pixels), np.array(labels), ["a", "b"], captions, [str(i) for i in range(80)])
    model = with_style_head(original, style_input="all", style_colour_levels=4, style_hidden=32)
    assert model is not original and with_style_head(model, "all", 4, 32) is model
    losses = train_style_head(model, data, steps=60, batch_size=64)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    model.save_pretrained(str(tmp_path / "enc"))
    reloaded = DescriptorEncoder.from_pretrained(str(tmp_path / "enc"))
    assert reloaded.config.style_input == "all" and reloaded.config.style_colour_levels == 4
    from PIL import Image

    pictures = [Image.fromarray(p) for p in data.pixels]
    before, after = describe(original, pictures), describe(reloaded, pictures)
    assert torch.equal(before.copy, after.copy) and torch.equal(before.content, after.content)
    sets = ["a" if s == 0 else "b" for s in labels]
    assert style_retrieval(after.style.numpy(), sets)["style_mAP@10"] > 0.95
    assert style_retrieval(after.style.numpy(), sets)["style_mAP@10"] > \
        style_retrieval(before.style.numpy(), sets)["style_mAP@10"]


def test_a_run_pauses_without_counting_it_stops_on_ctrl_c_with_its_checkpoint_and_resumes(
        tmp_path: Path) -> None:
    """`easel audit train`: Ctrl-Z (SIGTSTP) pauses the run and the pause is not training time;
    Ctrl-C saves the checkpoint and ends the run with `Interrupted` (exit 130), writing no model;
    the same call again goes on from the saved step."""
    from easel.audit.training import TrainConfig, train
    from tests.evaluation.conftest import write_synthetic_corpus
    from tests.signalling import paused_then_stopped

    manifest = write_synthetic_corpus(tmp_path / "corpus")
    checkpoints, out = tmp_path / "ck", tmp_path / "encoder"
    config = TrainConfig(manifest=str(manifest), batch_size=8, max_steps=100_000, minutes=1.0,
                         checkpoint_every=2, image_size=32, memory=0)
    saved = paused_then_stopped(lambda: train(config, checkpoints, out, progress=False),
                                checkpoints / "latest.pt")
    assert saved["step"] >= 2 and not out.exists()
    config.max_steps = saved["step"] + 2
    train(config, checkpoints, out, progress=False)
    assert torch.load(checkpoints / "latest.pt", weights_only=False)["step"] == saved["step"] + 2
    assert (out / "training.json").exists()
