"""`easel eval classifiers` and `easel eval model --reference …` as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from easel.evaluation.judges import judge_dir
from tests.conftest import run_cli


def _home_with_judges(tiny_judges, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """An EASEL_HOME holding the session's tiny judges (training them in the CLI is slower)."""
    corpus, judges = tiny_judges
    shutil.copytree(judges.directory, judge_dir(tmp_path / "home", corpus.dataset_id))
    return {"EASEL_HOME": str(tmp_path / "home")}


def test_eval_cli_shows_judges_then_scores_references(synthetic_manifest: Path, tiny_judges,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    env = _home_with_judges(tiny_judges, tmp_path)
    m = str(synthetic_manifest)
    proc = run_cli("eval", "classifiers", "--manifest", m, "--json", str(tmp_path / "judges.json"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "style judge: 3 classes" in proc.stdout
    assert f"(loaded from {judge_dir(tmp_path / 'home', tiny_judges[0].dataset_id)})" in proc.stdout
    assert "held out:" in proc.stdout
    assert json.loads((tmp_path / "judges.json").read_text())["concept"]["metrics"]["n"] == 24

    out, sheet = tmp_path / "noise.json", tmp_path / "sheet.png"
    proc = run_cli("eval", "model", "--reference", "noise", "--manifest", m, "-n", "6",
                   "--json", str(out), "--contact-sheet", str(sheet), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "judge on held-out real images" in proc.stdout
    report = json.loads(out.read_text())
    assert report["n_prompts"] == 6 and report["generator"] == "reference:noise"
    # noise falls in one or two concept classes: at most those prompts' worth of hits (see
    # test_real_icons_score_high_and_noise_near_chance)
    assert report["generated"]["overall"]["concept_top1"] <= 2 / 6
    assert len(report["contact_sheet"]["prompts"]) == 16
    assert Image.open(sheet).width > 4 * 128

    # Two pictures per prompt: both draws are scored, and the report says so.
    drawn = tmp_path / "drawn.json"
    proc = run_cli("eval", "model", "--reference", "real", "--manifest", m, "-n", "3", "--draws", "2",
                   "--json", str(drawn), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "2 pictures per prompt" in proc.stdout and "unseen concepts by draw" in proc.stdout  # val split
    two = json.loads(drawn.read_text())
    assert two["settings"]["draws"] == 2 and len(two["items"]) == 6 and len(two["by_draw"]) == 2
    assert set(two["spread"]) == {"unseen"} and two["spread"]["unseen"]["prompts"] == 3

    # The real icons of the same prompts, then the two compared prompt by prompt.
    real_out = tmp_path / "real.json"
    proc = run_cli("eval", "model", "--reference", "real", "--manifest", m, "-n", "6",
                   "--json", str(real_out), env=env)
    assert proc.returncode == 0, proc.stderr
    real = {(i["prompt"], i["seed"]): i for i in json.loads(real_out.read_text())["items"]}
    noise = {(i["prompt"], i["seed"]): i for i in report["items"]}
    assert real.keys() == noise.keys() and all("seen" in i for i in real.values())
    only_real = sum(1 for k in real if real[k]["style_predicted"] == real[k]["set_id"]
                    and noise[k]["style_predicted"] != noise[k]["set_id"])
    only_noise = sum(1 for k in real if noise[k]["style_predicted"] == noise[k]["set_id"]
                     and real[k]["style_predicted"] != real[k]["set_id"])
    proc = run_cli("eval", "compare", str(out), str(real_out), "--json", str(tmp_path / "cmp.json"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "real.json against noise.json: 6 shared prompts" in proc.stdout
    style = json.loads((tmp_path / "cmp.json").read_text())["comparisons"][str(real_out)]["all"][0]
    assert style["measure"] == "style" and style["prompts"] == 6
    assert (style["only_new"], style["only_base"]) == (only_real, only_noise)
    assert only_real > only_noise  # real icons carry their style; noise does not


def test_eval_cli_bad_input_is_one_clear_line(synthetic_manifest: Path, tmp_path: Path) -> None:
    env = {"EASEL_HOME": str(tmp_path / "home")}  # no judges: bad input is refused before training
    proc = run_cli("eval", "model", "--reference", "noise", "--manifest", str(synthetic_manifest),
                   "--split", "nope", env=env)
    assert proc.returncode == 2 and "error: unknown split 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("eval", "model", "--reference", "blur", "--manifest", str(synthetic_manifest), env=env)
    assert proc.returncode == 2 and "unknown reference 'blur'" in proc.stderr
    for bad, says in (("0.5", "two numbers"), ("0.9,0.2", "LO < HI"), ("a,b", "two numbers")):
        proc = run_cli("eval", "model", "--manifest", str(synthetic_manifest), "--guidance-interval", bad,
                       env=env)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("eval", "model", "--reference", "noise", "--manifest", str(synthetic_manifest),
                   "--guidance-interval", "0.5,1", env=env)
    assert proc.returncode == 2 and "no sampler" in proc.stderr
    proc = run_cli("eval", "model", "--manifest", str(synthetic_manifest), "--style-guidance", "-1", env=env)
    assert proc.returncode == 2 and "--style-guidance must be between 0" in proc.stderr
    proc = run_cli("eval", "model", "--reference", "noise", "--manifest", str(synthetic_manifest),
                   "--draws", "0", env=env)
    assert proc.returncode == 2 and "--draws must be between 1 and 64, got 0" in proc.stderr


@pytest.mark.slow
def test_eval_model_drives_the_real_pipeline(tiny_judges, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The wiring to `easel.diffusion.pipeline.load_pipeline` with a tiny random-weight model."""
    tiny = pytest.importorskip("easel.diffusion.tiny")
    from easel.evaluation import PipelineGenerator, evaluate_generator, select_prompts

    corpus, judges = tiny_judges
    model_dir = tiny.save_tiny_pipeline(tmp_path / "model")
    rows = select_prompts(corpus, "val", n=3)
    report = evaluate_generator(PipelineGenerator(model_dir, steps=2, guidance=2.0), rows, corpus=corpus,
                                judges=judges, progress=False, real_baseline=False)
    assert report["n_prompts"] == 3 and report["generated"]["overall"]["n"] == 3
    assert 0.0 <= report["generated"]["overall"]["style_accuracy"] <= 1.0
    limited = PipelineGenerator(model_dir, steps=2, guidance=2.0, guidance_interval=(0.5, 1.0))
    assert len(limited(["fox face"], [1])) == 1  # the interval reaches the pipeline (tested there)


@pytest.mark.slow
def test_eval_record_writes_the_card_and_its_learning_curve(synthetic_manifest: Path, tiny_judges,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    """`--record` puts the figures and a curve point into the card; a re-run replaces, not repeats."""
    tiny = pytest.importorskip("easel.diffusion.tiny")
    from easel.diffusion.model_card import read_model_card, write_model_card

    env = _home_with_judges(tiny_judges, tmp_path)
    model_dir = tiny.save_tiny_pipeline(tmp_path / "model")
    args = ["eval", "model", "--model", str(model_dir), "--manifest", str(synthetic_manifest), "-n", "3",
            "--steps", "2", "--record"]
    proc = run_cli(*args, env=env)
    assert proc.returncode == 2 and "has no model card" in proc.stderr  # refused before any work

    card = {"model_id": "tiny-s7", "dataset_id": "d" * 64, "sources": [], "easel_version": "test",
            "training": {"items": 3, "held_out_sets": [], "steps": 7, "samples": 56, "seconds": 1.0,
                         "cpu_seconds": 36.0, "device": "cpu", "final_loss": 0.5, "unet_parameters": 1,
                         "vae_parameters": 1, "config": {"batch_size": 8}}}
    write_model_card(model_dir, card)
    for _ in range(2):
        proc = run_cli(*args, env=env)
        assert proc.returncode == 0, proc.stderr
    saved = read_model_card(model_dir)
    assert list(saved["evaluation"]) == ["val"] and saved["evaluation"]["val"]["n_prompts"] == 3
    (point,) = saved["learning_curve"]
    assert point["steps"] == 7 and point["cpu_hours"] == 0.01 and point["n"] == 3
    assert 0.0 <= point["style_accuracy"] <= 1.0 and 0.0 <= point["real_style"] <= 1.0
    # the point names the judges that scored it, by their own held-out accuracy
    _, judges = tiny_judges
    assert point["judge_style"] == judges.style.config["metrics"]["top1"]
    assert point["judge_top5"] == judges.concept.config["metrics"]["top5"]
    md = (model_dir / "MODEL_CARD.md").read_text()
    assert "## Learning curve" in md and f"| {point['judge_style']:.3f} / {point['judge_top5']:.3f} |" in md

    proc = run_cli("eval", "model", "--reference", "noise", "--record", env=env)
    assert proc.returncode == 2 and "--record" in proc.stderr


def test_learning_curve_carries_within_a_run_and_history_across_datasets(tmp_path: Path) -> None:
    from easel.diffusion.model_card import carried_lineage, write_model_card

    previous = {"model_id": "m-s30", "dataset_id": "a" * 64, "consent": "checked",
                "training": {"items": 5, "steps": 30, "samples": 300, "cpu_seconds": 36.0},
                "learning_curve": [{"steps": 10}, {"steps": 30}]}
    assert carried_lineage(previous, "a" * 64, 20) == {"learning_curve": [{"steps": 10}]}
    assert carried_lineage({}, "a" * 64, 20) == {}
    # Weights continued on other data keep their whole curve, marked, and name the earlier model.
    other = carried_lineage(previous, "b" * 64, 50)
    assert [p["dataset_id"] for p in other["learning_curve"]] == ["a" * 64] * 2
    assert other["history"] == [{"model_id": "m-s30", "dataset_id": "a" * 64, "items": 5, "steps": 30,
                                 "samples": 300, "cpu_hours": 0.01, "consent": "checked"}]
    # A third stage keeps the first in its history.
    card = {**previous, "model_id": "m-s50", "dataset_id": "b" * 64, **other}
    third = carried_lineage(card, "c" * 64, 90)
    assert [h["model_id"] for h in third["history"]] == ["m-s30", "m-s50"]
    assert third["learning_curve"][0]["dataset_id"] == "a" * 64
    card.update(sources=[], evaluation={}, easel_version="0", training={
        "items": 5, "held_out_sets": [], "steps": 50, "samples": 500, "cpu_seconds": 60.0, "seconds": 60.0,
        "unet_parameters": 1e6, "vae_parameters": 1e5, "config": {"batch_size": 10, "learning_rate": 1e-3,
                                                                  "warmup_steps": 1}, "device": "cpu",
        "final_loss": 0.5})
    card["learning_curve"] = [{"steps": 30, "samples": 300, "cpu_hours": 0.01, "split": "val", "n": 3,
                               "style_accuracy": 0.5, "concept_top5": 0.1, "frechet": 30.0,
                               "near_copy_share": 0.0, "real_style": 0.8, "real_top5": 0.4,
                               "dataset_id": "a" * 64}]
    write_model_card(tmp_path, card)
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert "## Training history" in text and f"`{'a' * 64}`" in text and "| m-s30 |" in text
    assert "| 30 (dataset `aaaaaaaa…`) |" in text
    assert text.rstrip().count("| 0.800 / 0.400 | — |") == 1  # a point that names no judges


@pytest.mark.slow
def test_autoencoder_reference_is_the_real_icons_through_a_models_autoencoder(  # type: ignore[no-untyped-def]
        synthetic_manifest: Path, tiny_judges, tmp_path: Path) -> None:
    tiny = pytest.importorskip("easel.diffusion.tiny")
    import numpy as np
    import torch

    from easel.evaluation import AutoencodedIconGenerator, RealIconGenerator, select_prompts

    corpus, _ = tiny_judges
    model_dir = tiny.save_tiny_pipeline(tmp_path / "model")
    vae = tiny.tiny_vae().eval()
    rows = select_prompts(corpus, "val", n=3)
    prompts, seeds = [r.prompt for r in rows], [r.seed for r in rows]
    real = RealIconGenerator(corpus)(prompts, seeds)
    out = AutoencodedIconGenerator(corpus, vae)(prompts, seeds)
    x = torch.from_numpy(np.array(real[0].convert("RGB"))).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        want = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    got = torch.from_numpy(np.array(out[0])).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert out[0].size == real[0].size and (got - want).abs().max() <= 1 / 127.5 + 1e-6
    assert np.abs(np.asarray(out[0], dtype=int) - np.asarray(real[0].convert("RGB"), dtype=int)).mean() > 5

    env = _home_with_judges(tiny_judges, tmp_path)
    m, report_path = str(synthetic_manifest), tmp_path / "ae.json"
    proc = run_cli("eval", "model", "--reference", "autoencoder", "--model", str(model_dir),
                   "--manifest", m, "-n", "6", "--json", str(report_path), env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    assert report["generator"] == "reference:autoencoder" and report["settings"]["model"] == str(model_dir)
    # a random-weight autoencoder destroys the pictures: far from the real icons' style accuracy
    assert (report["generated"]["overall"]["style_accuracy"]
            < report["real_icons"]["overall"]["style_accuracy"])
    proc = run_cli("eval", "model", "--reference", "noise", "--model", str(model_dir), "--manifest", m,
                   env=env)
    assert proc.returncode == 2 and "not both" in proc.stderr
    proc = run_cli("eval", "model", "--reference", "autoencoder", "--model", str(tmp_path), "--manifest", m,
                   env=env)
    assert proc.returncode == 2 and "no autoencoder" in proc.stderr and "Traceback" not in proc.stderr


NEW_FIGURES = {"style_accuracy": 0.4, "concept_top1": 0.1, "concept_top5": 0.2, "frechet": 5.0,
               "near_copy_share": 0.0}
"""The figures of a new evaluation in the learning-curve tests (the old point has style 0.1)."""


def _card_with_one_point(model_dir: Path, model_id: str, old_fields: dict[str, str]) -> None:
    """Write a model card for ``model_id`` at step 7 whose curve holds one old ``val`` point
    (style 0.1) with ``old_fields`` added: the learning-curve tests record beside or over it."""
    from easel.diffusion.model_card import write_model_card

    old_point = {"steps": 7, "samples": 56, "cpu_hours": 0.01, "split": "val", "n": 3,
                 "style_accuracy": 0.1, "concept_top1": 0.0, "concept_top5": 0.0, "frechet": 9.0,
                 "near_copy_share": 0.0, "real_style": 0.9, "real_top5": 0.5, **old_fields}
    card = {"model_id": model_id, "dataset_id": "d" * 64, "sources": [], "easel_version": "test",
            "learning_curve": [old_point],
            "training": {"items": 3, "held_out_sets": [], "steps": 7, "samples": 56, "seconds": 1.0,
                         "cpu_seconds": 36.0, "device": "cpu", "final_loss": 0.5, "unet_parameters": 1,
                         "vae_parameters": 1, "config": {"batch_size": 8}}}
    write_model_card(model_dir, card)


def test_a_fine_tuned_decoder_gets_its_own_learning_curve_point(tmp_path: Path) -> None:
    """The same denoiser steps with another decoder (model id ``…-d<steps>``) is another model:
    its point stands beside the plain model's instead of replacing it."""
    from easel.diffusion.model_card import read_model_card, record_evaluation, write_model_card

    _card_with_one_point(tmp_path, "tiny-s7-d5", {})  # a point recorded before points named models
    report = {"splits": ["val"], "n_prompts": 3, "generated": {"overall": NEW_FIGURES},
              "real_icons": {"overall": NEW_FIGURES}}
    for _ in range(2):
        record_evaluation(tmp_path, report, "tiny-s7-d5")
    curve = read_model_card(tmp_path)["learning_curve"]
    assert [p.get("model_id") for p in curve] == [None, "tiny-s7-d5"]
    assert curve[0]["style_accuracy"] == 0.1 and curve[1]["style_accuracy"] == 0.4
    assert "| 7 + decoder d5 |" in (tmp_path / "MODEL_CARD.md").read_text()
    # the plain model's own re-evaluation replaces its old point
    card = read_model_card(tmp_path)
    card["model_id"] = "tiny-s7"
    write_model_card(tmp_path, card)
    record_evaluation(tmp_path, report, "tiny-s7")
    curve = read_model_card(tmp_path)["learning_curve"]
    assert [p.get("model_id") for p in curve] == ["tiny-s7", "tiny-s7-d5"]


def test_a_point_at_another_guidance_stands_beside_the_old_one(tmp_path: Path) -> None:
    """Guidance changes the figures, so the same model scored at a new guidance gets a second
    point; points without a guidance were measured at the old default 3.0 and say so."""
    from easel.diffusion.model_card import read_model_card, record_evaluation

    _card_with_one_point(tmp_path, "tiny-s7", {"model_id": "tiny-s7"})  # recorded before guidance

    def report(guidance: float) -> dict:  # type: ignore[type-arg]
        return {"splits": ["val"], "n_prompts": 3, "settings": {"steps": 20, "guidance": guidance},
                "generated": {"overall": NEW_FIGURES}, "real_icons": {"overall": NEW_FIGURES}}

    for _ in range(2):  # a re-run at the same guidance replaces its point
        record_evaluation(tmp_path, report(6.0), "tiny-s7")
    curve = read_model_card(tmp_path)["learning_curve"]
    assert [(p.get("guidance"), p["style_accuracy"]) for p in curve] == [(None, 0.1), (6.0, 0.4)]
    rows = [line for line in (tmp_path / "MODEL_CARD.md").read_text().splitlines()
            if line.startswith("| 7 |")]
    assert [row.split(" | ")[5] for row in rows] == ["3", "6"]
    record_evaluation(tmp_path, report(3.0), "tiny-s7")  # the old default's point is replaced
    curve = read_model_card(tmp_path)["learning_curve"]
    assert [(p.get("guidance"), p["style_accuracy"]) for p in curve] == [(3.0, 0.4), (6.0, 0.4)]


def test_a_point_of_several_draws_stands_beside_the_one_draw_point(tmp_path: Path) -> None:
    """Pooling more pictures per prompt measures the same model more closely, not another model:
    its point stands beside the one-draw point, and the card shows the draws and the error."""
    from easel.diffusion.model_card import read_model_card, record_evaluation

    _card_with_one_point(tmp_path, "tiny-s7", {"model_id": "tiny-s7", "guidance": 6.0})
    report = {"splits": ["val"], "n_prompts": 3, "n_pictures": 12,
              "settings": {"steps": 20, "guidance": 6.0, "draws": 4},
              "draws": 4, "spread": {"seen": {"prompts": 3, "style_accuracy_se": 0.031}},
              "by_draw": [{"draw": d} for d in range(4)],
              "generated": {"overall": NEW_FIGURES, "seen": dict(NEW_FIGURES, style_accuracy=0.45)},
              "real_icons": {"overall": NEW_FIGURES}}
    for _ in range(2):  # a re-run with as many draws replaces its point
        record_evaluation(tmp_path, report, "tiny-s7")
    card = read_model_card(tmp_path)
    assert [(p.get("draws"), p["style_accuracy"]) for p in card["learning_curve"]] == [(None, 0.1), (4, 0.4)]
    assert card["learning_curve"][1]["group_style"] == {"group": "seen", "style_accuracy": 0.45, "se": 0.031}
    assert set(card["evaluation"]) == {"val, 4 draws"} and card["evaluation"]["val, 4 draws"]["draws"] == 4
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert "| 3 × 4 draws | 6 | 0.400 (seen: 0.450 ± 0.031) |" in text
