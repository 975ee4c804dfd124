"""The Easel pipeline on tiny random weights: modes, reproducible seeds, input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easel.diffusion.pipeline import EaselPipeline, load_pipeline
from easel.diffusion.tiny import save_tiny_pipeline
from easel.errors import BadInput, NotFound


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> EaselPipeline:
    path = save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model")
    return load_pipeline(path, device="cpu")


def _arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_save_load_and_txt2img_seeds_reproduce(pipe: EaselPipeline) -> None:
    out = pipe(["fox face, twemoji style", "red heart"], seeds=[1, 2], num_inference_steps=2,
               upscale=False)
    assert [im.size for im in out.images] == [(64, 64), (64, 64)]
    assert out.seeds == [1, 2] and out.parameters["mode"] == "txt2img"
    again = pipe(["fox face, twemoji style", "red heart"], seeds=[1, 2], num_inference_steps=2,
                 upscale=False)
    assert np.array_equal(_arr(out.images[0]), _arr(again.images[0]))
    other = pipe(["fox face, twemoji style"], seeds=[3], num_inference_steps=2, upscale=False)
    assert not np.array_equal(_arr(out.images[0]), _arr(other.images[0]))
    # No guidance (scale 1) takes the single-pass path and still works.
    assert len(pipe("fox face", seeds=[1], num_inference_steps=2, guidance_scale=1.0,
                    upscale=False).images) == 1


def test_guidance_in_an_interval_of_noise_levels(pipe: EaselPipeline) -> None:
    """An interval holding every step is plain guidance; one holding none is no guidance (the
    single-pass path); one in between differs from both and is recorded with the image."""
    def run(**kw: object) -> np.ndarray:
        return _arr(pipe("fox face, twemoji style", seeds=[4], num_inference_steps=6, upscale=False,
                         guidance_scale=7.5, **kw).images[0])

    full, everywhere = run(), run(guidance_interval=(0.0, 1.0))
    assert np.array_equal(full, everywhere)
    unguided = _arr(pipe("fox face, twemoji style", seeds=[4], num_inference_steps=6, upscale=False,
                         guidance_scale=1.0).images[0])
    assert np.array_equal(run(guidance_interval=(0.0, 1e-6)), unguided)
    middle = pipe("fox face, twemoji style", seeds=[4], num_inference_steps=6, upscale=False,
                  guidance_scale=7.5, guidance_interval=(0.2, 0.85))
    assert not np.array_equal(_arr(middle.images[0]), full)
    assert not np.array_equal(_arr(middle.images[0]), unguided)
    assert middle.parameters["guidance_interval"] == [0.2, 0.85]


def test_style_guidance_moves_styled_prompts_only(pipe: EaselPipeline) -> None:
    """Style guidance adds (full prompt − caption alone): it changes a prompt with a style tag,
    leaves one without a tag exactly as it was, and is recorded with the image."""
    def run(prompt: str, scale: float) -> tuple[np.ndarray, dict]:
        out = pipe(prompt, seeds=[5], num_inference_steps=4, upscale=False, guidance_scale=3.0,
                   style_guidance_scale=scale)
        return _arr(out.images[0]), out.parameters

    plain, params = run("fox face, twemoji style", 0.0)
    styled, styled_params = run("fox face, twemoji style", 4.0)
    assert not np.array_equal(plain, styled)
    assert "style_guidance_scale" not in params and styled_params["style_guidance_scale"] == 4.0
    assert np.array_equal(run("fox face", 0.0)[0], run("fox face", 4.0)[0])


def test_split_style_inverts_prompt_for() -> None:
    from easel.corpus.captions import prompt_for, split_style

    assert split_style(prompt_for("fox face", "twemoji style")) == ("fox face", "twemoji style")
    assert split_style("red heart, sparkling, noto style") == ("red heart, sparkling", "noto style")
    for prompt in ("fox face", "fox face, big", ", noto style", "fox face, style", "in the style"):
        assert split_style(prompt) == (prompt, None)


def test_img2img_and_inpaint_keep_what_they_should(pipe: EaselPipeline) -> None:
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    light = pipe("red square", seeds=[5], image=init, strength=0.1, num_inference_steps=10,
                 upscale=False)
    heavy = pipe("red square", seeds=[5], image=init, strength=1.0, num_inference_steps=10,
                 upscale=False)
    assert light.parameters["mode"] == "img2img"
    plain = pipe("red square", seeds=[5], num_inference_steps=10, upscale=False)
    # Strength 1.0 starts from pure noise: the init image no longer matters.
    assert np.abs(_arr(heavy.images[0]) - _arr(plain.images[0])).mean() < 1.0
    # Low strength stays closer to the init image's decoding than full strength does.
    ref = pipe.vae.decode(pipe._image_to_latents(init, 1) / pipe.vae.config.scaling_factor).sample
    ref_img = _arr(__import__("easel.diffusion.data", fromlist=["to_pil"]).to_pil(ref)[0])
    assert np.abs(_arr(light.images[0]) - ref_img).mean() < np.abs(_arr(heavy.images[0]) - ref_img).mean()

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # repaint the left half only
    painted = pipe("blue circle", seeds=[7], image=init, mask_image=mask, strength=1.0,
                   num_inference_steps=4, upscale=False)
    assert painted.parameters["mode"] == "inpaint"
    left = np.abs(_arr(painted.images[0])[:, :24] - ref_img[:, :24]).mean()
    right = np.abs(_arr(painted.images[0])[:, 40:] - ref_img[:, 40:]).mean()
    assert right < left


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prompt": ""}, "prompt: must be non-empty"),
    ({"prompt": "x" * 10_000}, "too long"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": 10_000}, "num_inference_steps"),
    ({"guidance_scale": -1.0}, "guidance_scale must be between 0 and 30, got -1.0"),
    ({"guidance_scale": 31.0}, "guidance_scale"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"image": Image.new("RGB", (64, 64)), "strength": -0.5}, "strength"),
    ({"image": Image.new("RGB", (64, 64)), "mask_image": Image.new("L", (32, 32))}, "mask_image: size"),
    ({"mask_image": Image.new("L", (64, 64))}, "needs an init image"),
    ({"seeds": [1, 2]}, "seeds"),
    ({"guidance_interval": (0.8, 0.2)}, "guidance_interval"),
    ({"guidance_interval": (0.0, 1.5)}, "guidance_interval"),
    ({"style_guidance_scale": -1.0}, "style_guidance_scale"),
])
def test_bad_inputs_are_refused(pipe: EaselPipeline, kwargs: dict, message: str) -> None:
    args = {"prompt": "fox face", "num_inference_steps": 2, "upscale": False, **kwargs}
    prompt = args.pop("prompt")
    with pytest.raises(BadInput, match=message):
        pipe(prompt, **args)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="not an Easel model directory"):
        load_pipeline(tmp_path)


def test_pipeline_with_upscaler_saves_loads_and_outputs_256(tmp_path: Path) -> None:
    from easel.diffusion.tiny import tiny_pipeline
    from easel.diffusion.upscaler import EaselUpscaler

    path = tmp_path / "with-upscaler"
    tiny_pipeline(upscaler=EaselUpscaler(channels=4, num_blocks=1)).save_pretrained(str(path))
    pipe = load_pipeline(path, device="cpu")
    out = pipe("fox face", seeds=[0], num_inference_steps=2)
    assert out.upscaled and out.images[0].size == (256, 256)


def test_every_entry_point_samples_with_one_table_of_defaults() -> None:
    """The CLI, the evaluation, the server's job and request schema and the pipeline itself all
    read ``easel.diffusion.defaults.SAMPLING``: a default changed there changes everywhere."""
    import inspect

    from easel.cli import evaluate as eval_cli
    from easel.cli import generate as generate_cli
    from easel.diffusion.defaults import SAMPLING
    from easel.diffusion.pipeline import EaselPipeline
    from easel.evaluation.reference import PipelineGenerator
    from easel.server.jobs import GenerationRequest
    from easel.server.schemas import JobCreate

    def option_default(function: object, name: str) -> object:
        return inspect.signature(function).parameters[name].default.default  # typer.Option

    guidance = SAMPLING.guidance_scale
    assert option_default(generate_cli.generate, "guidance") == guidance
    assert option_default(generate_cli.generate, "steps") == SAMPLING.steps
    assert option_default(generate_cli.generate, "strength") == SAMPLING.strength
    assert option_default(eval_cli.model, "guidance") == guidance
    assert inspect.signature(PipelineGenerator).parameters["guidance"].default == guidance
    assert inspect.signature(EaselPipeline.__call__).parameters["guidance_scale"].default == guidance
    assert GenerationRequest(prompt="x").guidance == guidance
    assert JobCreate(prompt="x").guidance == guidance and JobCreate(prompt="x").steps == SAMPLING.steps
    style = SAMPLING.style_guidance_scale
    assert option_default(eval_cli.model, "style_guidance") == style
    assert inspect.signature(PipelineGenerator).parameters["style_guidance"].default == style
    assert inspect.signature(EaselPipeline.__call__).parameters["style_guidance_scale"].default == style


def test_a_high_noise_expert_takes_only_the_steps_above_its_noise_level() -> None:
    """Two expert denoisers: an expert with the base UNet's own weights changes nothing; another
    changes a txt2img picture (whose first steps are above the boundary) but not an img2img
    picture of strength 0.3 (every step below it); the pair saves, loads and is recorded."""
    import tempfile

    from diffusers import UNet2DConditionModel

    from easel.diffusion.tiny import tiny_pipeline, tiny_unet

    base = tiny_pipeline()
    torch_seed_other = tiny_unet()
    for p in torch_seed_other.parameters():  # a different expert: same shape, other weights
        p.data.mul_(-1.5)
    same = tiny_pipeline()
    same.register_modules(unet_high_noise=tiny_unet())
    same.register_to_config(high_noise_sigma=0.6)
    other = tiny_pipeline()
    other.register_modules(unet_high_noise=torch_seed_other)
    other.register_to_config(high_noise_sigma=0.6)
    assert other.denoiser_at(0.9) is torch_seed_other and other.denoiser_at(0.6) is other.unet
    assert base.denoiser_at(1.0) is base.unet

    def txt(p: EaselPipeline) -> tuple[np.ndarray, dict]:
        out = p("fox face, twemoji style", seeds=[7], num_inference_steps=6, upscale=False)
        return _arr(out.images[0]), out.parameters

    plain, params = txt(base)
    assert np.array_equal(txt(same)[0], plain)
    routed, routed_params = txt(other)
    assert not np.array_equal(routed, plain)
    assert "high_noise_sigma" not in params and routed_params["high_noise_sigma"] == 0.6
    init = Image.new("RGB", (64, 64), (200, 40, 40))

    def img2img(p: EaselPipeline) -> np.ndarray:
        return _arr(p("fox face", image=init, strength=0.3, seeds=[7], num_inference_steps=10,
                      upscale=False).images[0])

    assert np.array_equal(img2img(other), img2img(base))

    with tempfile.TemporaryDirectory() as tmp:
        other.save_pretrained(tmp, safe_serialization=True)
        loaded = load_pipeline(Path(tmp), device="cpu")
        assert isinstance(loaded.unet_high_noise, UNet2DConditionModel)
        assert loaded.config.high_noise_sigma == 0.6
        assert np.array_equal(txt(loaded)[0], routed)


@pytest.mark.parametrize("sigma, change, message", [
    (0.0, {}, "between 0 and 1"), (1.0, {}, "between 0 and 1"), (float("nan"), {}, "between 0 and 1"),
    (0.6, {"cross_attention_dim": 32}, "cross_attention_dim"),
])
def test_an_expert_that_cannot_stand_in_is_refused(sigma: float, change: dict, message: str) -> None:
    from diffusers import UNet2DConditionModel

    from easel.diffusion.tiny import tiny_unet, tiny_vae
    from easel.diffusion.training import new_scheduler

    expert = tiny_unet()
    if change:
        expert = UNet2DConditionModel.from_config({**expert.config, **change})
    with pytest.raises(BadInput, match=message):
        EaselPipeline(unet=tiny_unet(), vae=tiny_vae(), scheduler=new_scheduler(),
                      unet_high_noise=expert, high_noise_sigma=sigma)


def test_every_shipped_weights_file_is_under_50_mb() -> None:
    """The house rule for models inside the package: each weights file under 50 MB."""
    from easel.diffusion.pipeline import SHIPPED_MODEL_DIR

    files = list(SHIPPED_MODEL_DIR.parent.rglob("*.safetensors"))
    assert any(f.parent.name == "unet" for f in files)  # the rule is checked on the real folder
    for f in files:
        assert f.stat().st_size < 50 * 1024 * 1024, f


def test_a_self_conditioned_unet_reads_the_last_steps_estimate() -> None:
    """Self-conditioning: a UNet grown to read a clean-latent estimate starts as the same
    function (same pictures); once its estimate weights move, the pictures change (the sampler
    feeds it the last step's estimate), seeds still reproduce, and img2img and saving work."""
    import tempfile

    import torch

    from easel.diffusion.configs import has_self_condition
    from easel.diffusion.growth import add_self_condition
    from easel.diffusion.tiny import tiny_pipeline

    base = tiny_pipeline()
    grown = tiny_pipeline()
    grown.register_modules(unet=add_self_condition(base.unet))
    assert has_self_condition(grown.unet.config) and not has_self_condition(base.unet.config)

    def txt(p: EaselPipeline) -> np.ndarray:
        return _arr(p("fox face, twemoji style", seeds=[7], num_inference_steps=6, upscale=False).images[0])

    plain = txt(base)
    assert np.array_equal(txt(grown), plain)
    with torch.no_grad():
        grown.unet.conv_in.weight[:, 4:].normal_(0.0, 0.5, generator=torch.Generator().manual_seed(3))
    reading = txt(grown)
    assert not np.array_equal(reading, plain) and np.array_equal(txt(grown), reading)
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    assert grown("fox face", image=init, strength=0.5, seeds=[1], num_inference_steps=4,
                 upscale=False).images[0].size == (64, 64)
    with tempfile.TemporaryDirectory() as tmp:
        grown.save_pretrained(tmp, safe_serialization=True)
        loaded = load_pipeline(Path(tmp), device="cpu")
        assert has_self_condition(loaded.unet.config) and np.array_equal(txt(loaded), reading)
    with pytest.raises(ValueError, match="already"):
        add_self_condition(grown.unet)


def test_a_unet_with_style_input_hears_the_style_tag_apart() -> None:
    """--style-input: a UNet grown to read each prompt's style vector starts as the same
    function; once the new weights move, a prompt with a style tag draws differently while a
    prompt without one (style vector zero) draws exactly as before, and saving keeps it."""
    import tempfile

    import torch

    from easel.diffusion.configs import has_style_input
    from easel.diffusion.growth import add_style_input
    from easel.diffusion.tiny import tiny_pipeline

    base = tiny_pipeline()
    grown = tiny_pipeline()
    grown.register_modules(unet=add_style_input(base.unet))
    assert has_style_input(grown.unet.config) and not has_style_input(base.unet.config)

    def txt(p: EaselPipeline, prompt: str) -> np.ndarray:
        return _arr(p(prompt, seeds=[7], num_inference_steps=6, upscale=False).images[0])

    styled, plain = "fox face, twemoji style", "fox face"
    before = {prompt: txt(base, prompt) for prompt in (styled, plain)}
    assert all(np.array_equal(txt(grown, prompt), before[prompt]) for prompt in before)
    with torch.no_grad():
        weight = grown.unet.class_embedding.linear_1.weight
        weight[:, weight.shape[1] // 2:].normal_(0.0, 0.5, generator=torch.Generator().manual_seed(3))
    hearing = txt(grown, styled)
    assert not np.array_equal(hearing, before[styled])
    assert np.array_equal(txt(grown, plain), before[plain])
    with tempfile.TemporaryDirectory() as tmp:
        grown.save_pretrained(tmp, safe_serialization=True)
        loaded = load_pipeline(Path(tmp), device="cpu")
        assert has_style_input(loaded.unet.config) and np.array_equal(txt(loaded, styled), hearing)
    with pytest.raises(ValueError, match="already"):
        add_style_input(grown.unet)
