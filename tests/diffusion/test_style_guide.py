"""Style classifier guidance on tiny real components: the classifier learns, its gradient points
the right way, the pipeline guides only prompts whose style it knows, and the model round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from easel.diffusion.pipeline import EaselPipeline, load_pipeline
from easel.diffusion.style_guide import (
    FAKE_SEED_BASE,
    LatentStyleClassifier,
    draw_fakes,
    export_style_guide,
    guide_score,
    guided_velocity,
    train_discriminator,
    train_style_classifier,
)
from easel.diffusion.tiny import tiny_pipeline
from easel.diffusion.training import weights_tag
from easel.errors import BadInput

TAGS = ["noto style", "twemoji style"]


def tiny_classifier(seed: int = 0, kind: str = "style") -> LatentStyleClassifier:
    torch.manual_seed(seed)
    return LatentStyleClassifier(style_tags=TAGS, in_channels=4, width=8, emb_dim=16, kind=kind)


def two_style_latents(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Latents ``[n x 4 x 16 x 16]`` whose style is the sign of channel 0's mean (noise around ±1)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = 0.5 * torch.randn((n, 4, 16, 16), generator=gen)
    x[:, 0] += (labels.float() * 2 - 1)[:, None, None]
    return x, [TAGS[int(i)] for i in labels]


def _arr(image) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(image, dtype=np.int16)


def test_the_classifier_learns_two_styles_and_says_how_well_it_does_at_each_noise_level() -> None:
    latents, tags = two_style_latents(256, seed=0)
    val, val_tags = two_style_latents(128, seed=1)
    result = train_style_classifier(latents, tags, steps=60, batch_size=32, width=8, val_latents=val,
                                    val_tags=val_tags, progress=False)
    assert result.classifier.tags == TAGS and result.steps == 60 and result.train_items == 256
    assert set(result.accuracy) == {"sigma=0", "sigma=0.3", "sigma=0.6", "sigma=0.8", "sigma=0.95"}
    assert result.accuracy["sigma=0"] > 0.95  # an easy task, learned
    assert result.accuracy["sigma=0.95"] < result.accuracy["sigma=0"]  # noise hides the style


@pytest.mark.parametrize("kwargs, message", [
    ({"tags": ["noto style"] * 8}, "needs two or more"),
    ({"steps": 0}, "steps must be at least 1"),
    ({"batch_size": 64}, "fewer than one batch"),
])
def test_training_refuses_what_it_cannot_learn_from(kwargs: dict, message: str) -> None:
    latents, tags = two_style_latents(8, seed=0)
    with pytest.raises(BadInput, match=message):
        train_style_classifier(latents, kwargs.get("tags", tags), steps=kwargs.get("steps", 2),
                               batch_size=kwargs.get("batch_size", 4), width=8, progress=False)
    with pytest.raises(BadInput, match="at least two style tags"):
        LatentStyleClassifier(style_tags=["noto style"])
    with pytest.raises(BadInput, match="kind is one of style, discriminator"):
        LatentStyleClassifier(style_tags=TAGS, kind="critic")


def model_latents(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """What a model draws in this toy: the right style (channel 0's sign) but a mark real latents
    lack, channel 1 raised by 1.5."""
    x, tags = two_style_latents(n, seed)
    x[:, 1] += 1.5
    return x, tags


def test_the_discriminator_tells_the_models_latents_from_real_ones_per_style() -> None:
    real, tags = two_style_latents(256, seed=0)
    fake, fake_tags = model_latents(160, seed=2)
    val, val_tags = two_style_latents(128, seed=1)
    result = train_discriminator(real, tags, fake, fake_tags, steps=80, batch_size=32, width=8,
                                 val_real=val, val_real_tags=val_tags, progress=False)
    disc = result.classifier
    assert disc.is_discriminator and disc.tags == TAGS and result.steps == 80
    assert result.train_items == 256 + 144  # the last tenth of the fakes is held out
    assert result.accuracy["sigma=0"] > 0.95  # an easy mark, learned
    assert result.accuracy["sigma=0.95"] < result.accuracy["sigma=0"]  # noise hides it
    # The log-ratio reads a held-out fake as less real than a real latent of the same style.
    labels = disc.labels_for(val_tags[:16])
    with torch.no_grad():
        real_side = guide_score(disc, val[:16], torch.zeros(16), labels)
        fake_side = guide_score(disc, val[:16] + torch.tensor([0, 1.5, 0, 0])[None, :, None, None],
                                torch.zeros(16), labels)
    assert bool((real_side > fake_side).all())


@pytest.mark.parametrize("fake_tags, kwargs, message", [
    (["crayon style"] * 40, {}, "the fakes ask for style tags the real latents lack: crayon style"),
    (TAGS * 20, {"steps": 0}, "steps must be at least 1"),
    (TAGS * 3, {}, "6 fake latents left for training is fewer than one batch of 8"),
])
def test_discriminator_training_refuses_what_it_cannot_learn_from(fake_tags: list[str], kwargs: dict,
                                                                   message: str) -> None:
    real, tags = two_style_latents(64, seed=0)
    fake = torch.zeros((len(fake_tags), 4, 16, 16))
    with pytest.raises(BadInput, match=message):
        train_discriminator(real, tags, fake, fake_tags, steps=kwargs.get("steps", 2), batch_size=16,
                            width=8, val_real=real, val_real_tags=tags, progress=False)


@pytest.mark.parametrize("kind", ["style", "discriminator"])
def test_the_guided_velocity_moves_an_euler_step_towards_the_asked_style(kind: str) -> None:
    """One Euler step with the guided velocity raises what guidance climbs for each latent's
    label (the style's log-probability; a discriminator's log-ratio of real to fake) against the
    same step without it; a label of −1 is left alone."""
    classifier = tiny_classifier(kind=kind).eval()
    gen = torch.Generator().manual_seed(3)
    latents = torch.randn((6, 4, 16, 16), generator=gen)
    v = torch.randn((6, 4, 16, 16), generator=gen)
    labels = torch.tensor([0, 1, 0, 1, -1, 1])
    sigma, dt = 0.7, 0.05
    guided = guided_velocity(classifier, latents, sigma, v, labels, scale=4.0)
    assert torch.equal(guided[4], v[4])

    def logp(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return guide_score(classifier, x, torch.full((x.shape[0],), sigma - dt), labels.clamp(min=0))

    plain_step, guided_step = latents - dt * v, latents - dt * guided  # σ falls by dt
    gain = logp(guided_step) - logp(plain_step)
    assert bool((gain[labels >= 0] > 0).all()), gain
    assert torch.equal(guided_velocity(classifier, latents, sigma, v, labels, scale=0.0), v)
    assert torch.equal(guided_velocity(classifier, latents, 0.0, v, labels, scale=4.0), v)


@pytest.fixture(scope="module")
def guided_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model exported with a tiny classifier (default scale 3) beside it."""
    from easel.diffusion.style_guide import ClassifierResult
    from easel.diffusion.training import write_pipeline_dir

    root = tmp_path_factory.mktemp("guided")
    base = root / "base"
    card = {"model_id": "easel-embedded-test-s10-d5", "summary": "tiny", "easel_version": "test",
            "dataset_id": "d" * 64, "sources": [], "objective": "",
            "training": {"items": 3, "held_out_sets": [], "steps": 10, "samples": 40, "seconds": 1.0,
                         "cpu_seconds": 1.0, "device": "cpu", "final_loss": 0.5,
                         "unet_parameters": 1, "vae_parameters": 1, "vae_val_psnr": None,
                         "config": {"batch_size": 4}},
            "evaluation": {"val": {"style": 0.5}}}
    write_pipeline_dir(base, tiny_pipeline(), card, lambda staging: None)
    result = ClassifierResult(tiny_classifier(), steps=7, seconds=1.5,
                              accuracy={"sigma=0": 0.9, "sigma=0.6": 0.7}, train_items=256)
    return export_style_guide(root / "guided", base, result, "e" * 64, consent_events=3,
                              guidance_scale=3.0)


def test_an_exported_guide_saves_loads_and_is_named_in_the_card(guided_dir: Path) -> None:
    from easel.diffusion.model_card import read_model_card

    card = read_model_card(guided_dir)
    assert card["model_id"] == f"easel-embedded-test-s10-c7w{weights_tag(tiny_classifier())}-d5"
    record = card["style_classifier"]
    assert record["style_tags"] == TAGS and record["guidance_scale"] == 3.0 and record["steps"] == 7
    assert record["dataset_id"] == "e" * 64 and "3 items" in record["consent"]
    assert record["from_model"] == "easel-embedded-test-s10-d5"
    assert card["evaluation"] == {}  # the base model's figures do not describe the guided one
    assert "Style classifier guidance" in (guided_dir / "MODEL_CARD.md").read_text()
    index = json.loads((guided_dir / "model_index.json").read_text())
    assert index["style_classifier"] == ["easel.diffusion.style_guide", "LatentStyleClassifier"]
    pipe = load_pipeline(guided_dir, device="cpu")
    assert isinstance(pipe.style_classifier, LatentStyleClassifier)
    assert pipe.config.classifier_guidance_scale == 3.0
    for a, b in zip(pipe.style_classifier.state_dict().values(), tiny_classifier().state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    # A new guide for the guided model replaces its guide: the id names one, not two. A guide of
    # as many steps with other weights (another seed) gets another id.
    from easel.diffusion.style_guide import ClassifierResult

    again = export_style_guide(guided_dir.parent / "again", guided_dir,
                               ClassifierResult(tiny_classifier(1), 9, 1.0, {}, 8), "e" * 64)
    again_id = read_model_card(again)["model_id"]
    assert again_id == f"easel-embedded-test-s10-c9w{weights_tag(tiny_classifier(1))}-d5"
    other = export_style_guide(guided_dir.parent / "other", guided_dir,
                               ClassifierResult(tiny_classifier(2), 9, 1.0, {}, 8), "e" * 64)
    assert read_model_card(other)["model_id"] != again_id


def test_guidance_changes_only_prompts_whose_style_the_classifier_knows(guided_dir: Path) -> None:
    """The model's default scale guides "…, twemoji style"; scale 0 is the plain pipeline to the
    pixel; a prompt without a style, or with a style the classifier does not know, is not guided."""
    pipe = load_pipeline(guided_dir, device="cpu")
    plain = tiny_pipeline()

    def run(p: EaselPipeline, prompt: str, **kw: object) -> tuple[np.ndarray, dict]:
        out = p(prompt, seeds=[11], num_inference_steps=4, upscale=False, **kw)
        return _arr(out.images[0]), out.parameters

    guided, params = run(pipe, "fox face, twemoji style")
    unguided, plain_params = run(plain, "fox face, twemoji style")
    assert not np.array_equal(guided, unguided)
    assert params["classifier_guidance_scale"] == 3.0 and "classifier_guidance_scale" not in plain_params
    assert np.array_equal(run(pipe, "fox face, twemoji style", classifier_guidance_scale=0.0)[0], unguided)
    assert np.array_equal(run(pipe, "fox face")[0], run(plain, "fox face")[0])
    assert np.array_equal(run(pipe, "fox face, crayon style")[0], run(plain, "fox face, crayon style")[0])
    stronger, _ = run(pipe, "fox face, twemoji style", classifier_guidance_scale=9.0)
    assert not np.array_equal(stronger, guided)
    with pytest.raises(BadInput, match="classifier_guidance_scale"):
        pipe("fox face, twemoji style", seeds=[1], num_inference_steps=2, classifier_guidance_scale=-1.0)


def test_a_classifier_of_other_latents_is_refused() -> None:
    from easel.diffusion.tiny import tiny_unet, tiny_vae
    from easel.diffusion.training import new_scheduler

    wrong = LatentStyleClassifier(style_tags=TAGS, in_channels=8, width=8, emb_dim=16)
    with pytest.raises(BadInput, match="latent channels"):
        EaselPipeline(unet=tiny_unet(), vae=tiny_vae(), scheduler=new_scheduler(), style_classifier=wrong)


def test_draw_fakes_gives_the_pipelines_own_latents_for_prompts_in_a_seeded_order() -> None:
    pipe = tiny_pipeline()
    prompts = ["fox face, noto style", "cat face, twemoji style", "owl, noto style"]
    latents, chosen = draw_fakes(pipe, prompts, 5, batch_size=2, progress=False)
    r = pipe.latent_resolution
    assert latents.shape == (5, 4, r, r)
    assert sorted(chosen[:3]) == sorted(prompts) and chosen[3:] == chosen[:2]  # each once, then again
    again, chosen_again = draw_fakes(pipe, prompts, 5, batch_size=5, progress=False)
    assert chosen_again == chosen and torch.allclose(again, latents, atol=1e-5)
    own = pipe(chosen[4], seeds=[FAKE_SEED_BASE + 4], upscale=False).latents
    assert own is not None and torch.allclose(own[0], latents[4], atol=1e-5)
    with pytest.raises(BadInput, match="no prompts"):
        draw_fakes(pipe, [], 2, progress=False)


def test_an_exported_discriminator_is_named_as_one_and_guides(tmp_path: Path) -> None:
    from easel.diffusion.model_card import read_model_card
    from easel.diffusion.style_guide import ClassifierResult

    base = _tiny_model_dir(tmp_path / "base")
    result = ClassifierResult(tiny_classifier(kind="discriminator"), 5, 1.0, {"sigma=0": 0.9}, 12)
    out = export_style_guide(tmp_path / "out", base, result, "e" * 64, guidance_scale=4.0, fakes=40)
    record = read_model_card(out)["style_classifier"]
    assert record["kind"] == "discriminator" and record["fakes"] == 40 and record["guidance_scale"] == 4.0
    shown = (out / "MODEL_CARD.md").read_text()
    assert "## Discriminator guidance" in shown and "40 pictures" in shown
    assert "Style classifier guidance" not in shown
    pipe = load_pipeline(out, device="cpu")
    assert pipe.style_classifier.is_discriminator and pipe.style_classifier.tags == TAGS
    guided = pipe("fox face, twemoji style", seeds=[2], num_inference_steps=4, upscale=False).latents
    plain = pipe("fox face, twemoji style", seeds=[2], num_inference_steps=4, upscale=False,
                 classifier_guidance_scale=0.0).latents
    assert guided is not None and plain is not None and not torch.equal(guided, plain)


def _tiny_model_dir(path: Path) -> Path:
    from easel.diffusion.training import write_pipeline_dir

    card = {"model_id": "easel-embedded-test-s10", "summary": "tiny", "easel_version": "test",
            "dataset_id": "d" * 64, "sources": [], "objective": "",
            "training": {"items": 3, "held_out_sets": [], "steps": 10, "samples": 40, "seconds": 1.0,
                         "cpu_seconds": 1.0, "device": "cpu", "final_loss": 0.5, "unet_parameters": 1,
                         "vae_parameters": 1, "vae_val_psnr": None, "config": {"batch_size": 4}}}
    return write_pipeline_dir(path, tiny_pipeline(), card, lambda staging: None)


def test_train_style_guide_refuses_bad_options_before_touching_anything(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    env = {"EASEL_HOME": str(tmp_path / "home")}
    model = _tiny_model_dir(tmp_path / "model")
    cases = [(["--init-from", str(model), "--steps", "0"], "--steps must be at least 1"),
             (["--init-from", str(model), "--discriminator", "--fakes", "3"], "--fakes must be at least"),
             (["--init-from", str(model), "--scale", "-1"], "--scale"),
             (["--init-from", str(model), "--scale", "nan"], "--scale"),
             (["--init-from", str(model), "--batch-size", "1"], "--batch-size must be at least 2"),
             (["--init-from", str(tmp_path / "nothing")], "not an Easel model directory")]
    for args, message in cases:
        proc = run_cli("train", "style-guide", "--out", str(tmp_path / "out"), *args, env=env)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()


# Two sets of different drawings (stripes, not the shared fixture icons), so the registry keeps both.
STRIPES = {f"stripes-{i}": "".join(f'<rect x="{x}" y="0" width="1" height="16" fill="#{c}"/>'
                                   for x in range(i % 3, 16, 3 + i))
           for i, c in enumerate(["204080", "802040", "408020", "a0a020", "20a0a0", "a020a0"])}


def test_train_style_guide_on_a_consented_manifest_writes_a_guided_model(
        easel_home: Path, fixture_packages: dict, tmp_path: Path) -> None:
    from easel.corpus.manifest import load_manifest
    from easel.corpus.sources import fetch_sources
    from easel.diffusion.model_card import read_model_card
    from tests.conftest import pack_fixture_set, run_cli, write_icon_package

    stripes = pack_fixture_set(write_icon_package(tmp_path / "pkgs", "stripes", STRIPES), "stripes",
                               tmp_path / "pkgs")
    fetch_sources(easel_home / "sources", [fixture_packages["alpha"], stripes])
    run_cli("registry", "import-corpus", check=True)
    run_cli("corpus", "build", "--size", "64", "--purpose", "train_base", check=True)
    manifest = easel_home / "corpus" / "64px"
    dataset_id = load_manifest(manifest).schema.metadata[b"dataset_id"].decode()
    model = _tiny_model_dir(tmp_path / "model")
    out = tmp_path / "guided"
    proc = run_cli("train", "style-guide", "--init-from", str(model), "--out", str(out), "--steps", "3",
                   "--batch-size", "4", "--width", "8", "--scale", "2", "--threads", "1", check=True)
    assert "style classifier: 3 steps" in proc.stdout
    card = read_model_card(out)
    record = card["style_classifier"]
    assert record["style_tags"] == ["alpha style", "stripes style"] and record["dataset_id"] == dataset_id
    pipe = load_pipeline(out, device="cpu")
    assert record["guidance_scale"] == 2.0
    assert card["model_id"] == f"easel-embedded-test-s10-c3w{weights_tag(pipe.style_classifier)}"
    assert pipe.config.classifier_guidance_scale == 2.0 and pipe.style_classifier.tags == record["style_tags"]
    report = run_cli("registry", "affected", "--artist", "stripes", check=True).stdout
    assert "easel-embedded-test-s10-c3" in report
    # The discriminator: the model draws its own pictures for the training prompts first.
    disc_out = tmp_path / "disc"
    proc = run_cli("train", "style-guide", "--init-from", str(model), "--out", str(disc_out),
                   "--discriminator", "--fakes", "8", "--steps", "3", "--batch-size", "4", "--width", "8",
                   "--scale", "4", "--threads", "1", check=True)
    assert "discriminator: 3 steps" in proc.stdout and "balanced accuracy" in proc.stdout
    record = read_model_card(disc_out)["style_classifier"]
    assert record["kind"] == "discriminator" and record["fakes"] == 8 and record["dataset_id"] == dataset_id
    assert record["style_tags"] == ["alpha style", "stripes style"] and record["guidance_scale"] == 4.0
    assert load_pipeline(disc_out, device="cpu").style_classifier.is_discriminator


def test_easel_generate_guides_with_the_models_scale_and_records_it(guided_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    env = {"EASEL_HOME": str(tmp_path / "home")}
    for extra, recorded in (([], '"classifier_guidance_scale": 3.0'),
                            (["--classifier-guidance", "0"], None)):
        out = tmp_path / f"out{len(extra)}"
        run_cli("generate", "fox face", "--style", "twemoji", "-n", "1", "--seed", "3", "--steps", "2",
                "--no-upscale", "--model-dir", str(guided_dir), "-o", str(out), *extra, env=env, check=True)
        shown = run_cli("verify", str(next(out.glob("*.png"))), env=env, check=True).stdout
        if recorded:
            assert recorded in shown, shown
        else:
            assert "classifier_guidance_scale" not in shown, shown
    proc = run_cli("generate", "fox face", "--model", str(guided_dir), "--classifier-guidance", "2", env=env)
    assert proc.returncode == 2 and "drop --model" in proc.stderr, proc.stderr
