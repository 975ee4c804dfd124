"""The judges, the scoring and the reference generators on a synthetic three-set corpus."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from easel.errors import BadInput, EaselError
from easel.evaluation import (
    NoiseGenerator,
    RealIconGenerator,
    contact_sheet,
    ensure_judges,
    evaluate_generator,
    format_report,
    load_eval_corpus,
    select_prompts,
)
from easel.evaluation.data import DRAW_SEED_STRIDE, concept_holdout, to_rgb_array, with_draws
from easel.evaluation.judges import judge_dir, judge_split
from easel.evaluation.metrics import frechet_distance
from tests.evaluation.conftest import TINY_TRAIN


def test_judges_beat_chance_on_held_out_real_images(tiny_judges) -> None:  # type: ignore[no-untyped-def]
    corpus, judges = tiny_judges
    style = judges.style.config["metrics"]
    concept = judges.concept.config["metrics"]
    assert style["n"] == 18  # the 6 val-split concepts x 3 sets
    assert style["top1"] >= 0.7 > 2 * style["chance_top1"]
    assert concept["n"] == 24  # 18 train concepts x 1 set + 6 val concepts x 1 of 3 sets
    assert concept["top5"] >= 2 * 5 * concept["chance_top1"]
    assert "never saw" in judges.style.config["holdout"]
    # the held-out images really were held out
    train, held, _ = judge_split(corpus, "concept")
    assert not set(train) & set(held) and len(train) + len(held) == len(corpus.rows)


def test_judges_are_saved_and_reused(tiny_judges, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    corpus, first = tiny_judges
    folder = judge_dir(tmp_path, corpus.dataset_id)
    assert first.directory is not None and (first.directory / "style.safetensors").exists()
    assert json.loads((first.directory / "concept.json").read_text())["dataset_id"] == corpus.dataset_id
    shutil.copytree(first.directory, folder)
    again = ensure_judges(corpus, tmp_path, train=TINY_TRAIN, progress=False, allow_training=False)
    x = np.stack([to_rgb_array(Image.new("RGB", (40, 40), "red"))])
    assert np.allclose(first.style.predict(x)[0].numpy(), again.style.predict(x)[0].numpy(), atol=1e-5)
    # loaded without naming their config: kept, with a warning that they are not today's default
    with caplog.at_level(logging.WARNING, logger="easel.evaluation.judges"):
        kept = ensure_judges(corpus, tmp_path, progress=False, allow_training=False)
    assert kept.style.config["train_config"] == asdict(TINY_TRAIN["style"])
    assert "--retrain" in caplog.text and "style judge" in caplog.text
    # saved under another manifest's id: not reused
    other = judge_dir(tmp_path / "other", "0" * 64)
    shutil.copytree(first.directory, other)
    with pytest.raises(EaselError, match="eval classifiers"):
        ensure_judges(corpus, tmp_path / "other", progress=False, allow_training=False)


def test_shipped_judges_serve_a_home_without_its_own(tiny_judges, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    corpus, first = tiny_judges
    shipped = tmp_path / "shipped"
    shutil.copytree(first.directory, shipped)
    home = tmp_path / "home"
    with caplog.at_level(logging.INFO, logger="easel.evaluation.judges"):
        judges = ensure_judges(corpus, home, train=TINY_TRAIN, progress=False, allow_training=False,
                               shipped_dir=shipped)
    assert judges.style.source == shipped and judges.concept.source == shipped
    assert "shipped" in caplog.text
    assert not judge_dir(home, corpus.dataset_id).exists()  # nothing trained, nothing copied
    # A home's own judges for the dataset win over the shipped ones.
    own = judge_dir(home, corpus.dataset_id)
    shutil.copytree(first.directory, own)
    mine = ensure_judges(corpus, home, train=TINY_TRAIN, progress=False, allow_training=False,
                         shipped_dir=shipped)
    assert mine.style.source == own and mine.concept.source == own
    # Shipped judges of another dataset are not used for this one.
    shutil.rmtree(own)
    for kind in ("style", "concept"):
        config = json.loads((shipped / f"{kind}.json").read_text())
        (shipped / f"{kind}.json").write_text(json.dumps({**config, "dataset_id": "0" * 64}))
    with pytest.raises(EaselError, match="eval classifiers"):
        ensure_judges(corpus, home, progress=False, allow_training=False, shipped_dir=shipped)


def test_the_package_ships_judges_for_the_pinned_emoji_build() -> None:
    """The shipped judges load, are the 64 px seven-set build's, and carry their held-out scores."""
    from easel.evaluation.judges import DEFAULT_TRAIN, SHIPPED_JUDGES_DIR, load_judge

    for kind in ("style", "concept"):
        judge = load_judge(SHIPPED_JUDGES_DIR, kind)
        assert judge is not None, kind
        assert judge.config["dataset_id"].startswith("6d1af0f0")  # BENCHMARKS.md, "Corpus build"
        assert judge.config["train_config"] == asdict(DEFAULT_TRAIN[kind])
        assert judge.config["metrics"]["n"] > 1000
        logits, feats = judge.predict(np.full((2, 64, 64, 3), 255, dtype=np.uint8))
        assert logits.shape == (2, len(judge.classes)) and feats.shape == (2, judge.model.feature_dim)
    assert len(load_judge(SHIPPED_JUDGES_DIR, "style").classes) == 7  # type: ignore[union-attr]


def test_prompt_selection_is_deterministic_and_honest(tiny_judges) -> None:  # type: ignore[no-untyped-def]
    corpus, _ = tiny_judges
    rows = select_prompts(corpus, "val", n=140)
    assert rows == select_prompts(corpus, "val", n=140)
    held = concept_holdout(corpus)
    assert rows and all((r.concept, r.set_id) in held and r.split == "val" for r in rows)
    assert [r.seed for r in rows] == list(range(len(rows)))
    assert {r.set_id for r in rows[:3]} == {"alpha", "beta", "gamma"}  # round-robin over sets
    assert rows[0].prompt.endswith(f", {rows[0].style_tag}")
    assert len(select_prompts(corpus, "train,val", n=7)) == 7


@pytest.mark.parametrize("split, message", [("test", "no evaluation prompts"), ("nope", "unknown split"),
                                            ("", "unknown split")])
def test_bad_splits_say_what_to_do(tiny_judges, split: str, message: str) -> None:  # type: ignore[no-untyped-def]
    corpus, _ = tiny_judges
    with pytest.raises(BadInput, match=message):
        select_prompts(corpus, split)


def test_real_icons_score_high_and_noise_near_chance(tiny_judges) -> None:  # type: ignore[no-untyped-def]
    corpus, judges = tiny_judges
    rows = select_prompts(corpus, "val")
    real = evaluate_generator(RealIconGenerator(corpus), rows, corpus=corpus, judges=judges,
                              name="real", progress=False)
    noise = evaluate_generator(NoiseGenerator(), rows, corpus=corpus, judges=judges,
                               name="noise", progress=False)
    r, z = real["generated"]["overall"], noise["generated"]["overall"]
    assert r["style_accuracy"] >= 0.7
    assert z["style_accuracy"] <= 0.6  # noise lands in one or two classes: chance is 1/3
    # Noise lands in one or two concept classes too: it can name a prompt's concept only when one
    # of those happens to be asked for, at most two prompts' worth — far below the real icons.
    # (Asserting 0 asked which class the tiny judge's weights put noise in: it differed by machine.)
    assert z["concept_top1"] <= 2 / noise["n_prompts"] and z["concept_top1"] < r["concept_top1"] / 2
    assert z["frechet"] > 3 * r["frechet"]
    # the real reference *is* the real-icons column
    assert real["real_icons"]["overall"] == r
    # val concepts are never drawn in training: no near-copies; noise neither
    assert r["near_copy_share"] == 0.0 and z["near_copy_share"] == 0.0
    assert set(real["generated"]) >= {"overall", "unseen", "per_set"} and "seen" not in real["generated"]
    assert set(real["generated"]["per_set"]) == {row.set_id for row in rows}
    item = noise["items"][0]
    assert {"prompt", "seed", "style_predicted", "concept_rank", "nearest_item", "nearest_rmse",
            "pdq_distance", "near_copy"} <= set(item)
    text = format_report(noise)
    assert "style accuracy" in text and "never saw" in text


def test_training_icons_are_flagged_as_copies(tiny_judges) -> None:  # type: ignore[no-untyped-def]
    corpus, judges = tiny_judges
    rows = select_prompts(corpus, "train", n=9)
    report = evaluate_generator(RealIconGenerator(corpus), rows, corpus=corpus, judges=judges,
                                real_baseline=False, progress=False)
    assert report["generated"]["seen"]["near_copy_share"] == 1.0
    assert all(item["nearest_item"] == item["item_id"] for item in report["items"])
    assert "real_icons" not in report


def test_generator_contract_is_checked(tiny_judges) -> None:  # type: ignore[no-untyped-def]
    corpus, judges = tiny_judges
    rows = select_prompts(corpus, "val", n=3)
    with pytest.raises(EaselError, match="returned 1 images for 3 prompts"):
        evaluate_generator(lambda p, s: NoiseGenerator()(p[:1], s[:1]), rows, corpus=corpus,
                           judges=judges, progress=False)
    with pytest.raises(BadInput, match="no prompts"):
        evaluate_generator(NoiseGenerator(), [], corpus=corpus, judges=judges, progress=False)
    with pytest.raises(BadInput, match="no corpus icon"):
        RealIconGenerator(corpus)(["fox face, nowhere style"], [0])


def test_any_image_size_and_mode_is_accepted() -> None:
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert to_rgb_array(rgba).shape == (64, 64, 3) and to_rgb_array(rgba).min() == 255  # white
    assert to_rgb_array(Image.new("L", (256, 256), 0)).max() == 0


def test_frechet_distance_separates_distributions() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    assert frechet_distance(a, b) < 0.3 < 10 < frechet_distance(a, b + 3.0)
    assert np.isnan(frechet_distance(a[:1], b))


def test_contact_sheet_lays_out_a_grid() -> None:
    images = [Image.new("RGB", (64, 64), (i * 15, 0, 0)) for i in range(16)]
    sheet = contact_sheet(images, [f"prompt {i}" for i in range(16)], columns=4, tile=64)
    assert sheet.width > 4 * 64 and sheet.height > 4 * 64
    assert sheet.getpixel((6 + 3 * 70 + 10, 6 + 10)) == (45, 0, 0)  # 4th tile of the first row
    with pytest.raises(BadInput):
        contact_sheet(images, ["one"])


def test_load_eval_corpus_refuses_missing_manifest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EaselError, match="no manifest"):
        load_eval_corpus(tmp_path)


def test_judges_leave_the_callers_threads_alone(tiny_judges) -> None:  # type: ignore[no-untyped-def]
    import torch

    _, judges = tiny_judges
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        judges.style.predict(np.zeros((2, 64, 64, 3), np.uint8))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_draws_pool_several_seeds_per_prompt_and_say_how_far_apart_they_lie(tiny_judges) -> None:  # type: ignore[no-untyped-def]
    corpus, judges = tiny_judges
    rows = select_prompts(corpus, "train", n=6)
    drawn = with_draws(rows, 3)
    assert drawn[:6] == rows  # draw 0 is the one-draw evaluation itself
    assert [r.seed for r in drawn[6:12]] == [r.seed + DRAW_SEED_STRIDE for r in rows]
    assert len({r.seed for r in drawn}) == 18 and {r.draw for r in drawn} == {0, 1, 2}
    # real icons for draws 0 and 2, noise for draw 1 (told apart by their seeds)
    real, noise = RealIconGenerator(corpus), NoiseGenerator()

    def mixed(prompts: list[str], seeds: list[int]) -> list:
        return [(noise if s // DRAW_SEED_STRIDE == 1 else real)([p], [s])[0]
                for p, s in zip(prompts, seeds, strict=True)]

    report = evaluate_generator(mixed, drawn, corpus=corpus, judges=judges, progress=False)
    one = evaluate_generator(mixed, rows, corpus=corpus, judges=judges, progress=False)
    assert report["draws"] == 3 and report["generated"]["overall"]["n"] == 18
    assert (report["n_prompts"], report["n_pictures"]) == (6, 18)
    assert report["seeds"] == one["seeds"] == [rows[0].seed, rows[-1].seed]  # draw 0's seeds
    by = [d["seen"]["style_accuracy"] for d in report["by_draw"]]
    assert by[0] == by[2] == one["generated"]["seen"]["style_accuracy"] > by[1]
    pooled = report["generated"]["seen"]["style_accuracy"]
    assert pooled == pytest.approx(sum(by) / 3, abs=1e-3)
    assert report["spread"]["seen"]["prompts"] == 6 and report["spread"]["seen"]["style_accuracy_se"] > 0
    assert "unseen" not in report["spread"]  # train-split prompts only
    assert [it["draw"] for it in report["items"]] == [r.draw for r in drawn]
    assert report["real_icons"]["overall"]["n"] == 6  # the real icons once per prompt
    assert "3 pictures per prompt" in format_report(report)
    with pytest.raises(BadInput, match="--draws must be between 1"):
        with_draws(rows, 0)
