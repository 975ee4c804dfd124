"""``easel generate``: text-to-image, image-to-image and inpainting, with provenance."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from PIL import Image

from easel.config import get_settings
from easel.diffusion.defaults import SAMPLING, check_guidance


def _open_image(path: Path | None, what: str) -> Image.Image | None:
    if path is None:
        return None
    from easel.errors import BadInput, NotFound
    from easel.registry.validate import load_image

    if not path.is_file():
        raise NotFound(f"{what} {path} does not exist or is not a file")
    try:
        return load_image(path.read_bytes(), str(path)).image
    except BadInput as exc:
        raise BadInput(f"{what} {path}: {exc.message}", hint=exc.hint) from exc


def style_prompt(prompt: str, style: str | None) -> tuple[str, str | None]:
    """Append the style tag for a base-model style ("twemoji" → "…, twemoji style")."""
    from easel.corpus.sources import HELD_OUT_SET, SETS_BY_ID
    from easel.errors import BadInput, NotFound

    if not style:
        return prompt, None
    if style.startswith("artist:"):
        raise NotFound(f"personal style {style!r} is not available",
                       hint="personal styles are trained with `easel style train`; "
                            "base-model styles need no prefix")
    known = {k: v for k, v in SETS_BY_ID.items() if k != HELD_OUT_SET}
    aliases = {v.style_tag.removesuffix(" style"): k for k, v in known.items()}
    key = aliases.get(style, style)
    if key not in known:
        raise BadInput(f"unknown style {style!r}",
                       hint=f"choose one of: {', '.join(sorted(aliases))}")
    tag = known[key].style_tag
    return f"{prompt}, {tag}", tag


def generate(
    prompt: str = typer.Argument(..., help="What to draw, e.g. \"fox face\"."),
    style: str = typer.Option(None, "--style", "-s", help="A base-model style: twemoji, noto, "
                              "openmoji, fluent, emojione, fxemoji; or a personal style "
                              "artist:ARTIST[/NAME] (see `easel style list`)."),
    as_user: str = typer.Option(None, "--as", help="Who is generating (an artist id or account "
                                "name); personal styles check it at every call."),
    key: str = typer.Option(None, "--key", help="The --as user's API key (default: EASEL_API_KEY, "
                            "then EASEL_HOME/keys/artists/ID.key)."),
    n: int = typer.Option(4, "-n", help="Number of images."),
    seed: int = typer.Option(None, help="Seed of the first image (image i uses seed+i); "
                             "default: random, recorded with each image."),
    steps: int = typer.Option(SAMPLING.steps, help=f"Sampler steps (1–{SAMPLING.max_steps})."),
    guidance: float = typer.Option(SAMPLING.guidance_scale,
                                   help=f"Classifier-free guidance scale (0–{SAMPLING.max_guidance:g})."),
    classifier_guidance: float | None = typer.Option(
        None, "--classifier-guidance",
        help="Style classifier guidance scale, for an Easel model with a style classifier "
             "(`easel train style-guide`); 0 = off. Default: the model's own."),
    palette_strength: float | None = typer.Option(
        None, "--palette-strength",
        help="How far to move the colours onto the asked style's own palette, 0-1, for an Easel "
             "model with a style palette (`easel train palette`); 0 = the colours as drawn. "
             "Default: the model's own."),
    init_image: Path = typer.Option(None, "--init-image", help="Image-to-image: start from this image."),
    strength: float = typer.Option(SAMPLING.strength,
                                   help="Image-to-image strength in (0, 1]: how much to change."),
    mask: Path = typer.Option(None, help="Inpainting mask (white = repaint), same size as --init-image."),
    out: Path = typer.Option(None, "-o", "--out", help="Output directory (default: EASEL_HOME/outputs)."),
    model_dir: Path = typer.Option(None, "--model-dir", help="An Easel model directory "
                                   "(default: EASEL_MODEL_DIR or the shipped model)."),
    model: str = typer.Option(None, "--model", help="Any diffusers Stable Diffusion checkpoint "
                              "(local folder or cached id) instead of the Easel model."),
    no_upscale: bool = typer.Option(False, help="Keep the base resolution (64 px)."),
    include_prompt: bool = typer.Option(False, help="Put the prompt into the content credentials "
                                        "(off by default, for privacy)."),
    visible_mark: bool = typer.Option(False, help="Add a small visible \"AI generated\" badge."),
) -> None:
    """Generate images; every file carries content credentials, a watermark and a log entry."""
    import time

    from easel.errors import BadInput

    settings = get_settings()
    if not 1 <= n <= 64:
        raise BadInput(f"-n must be between 1 and 64, got {n}")
    if not 1 <= steps <= SAMPLING.max_steps:
        raise BadInput(f"--steps must be between 1 and {SAMPLING.max_steps}, got {steps}")
    if model and model_dir:
        raise BadInput("give either --model (a diffusers checkpoint) or --model-dir (an Easel model)")
    if not prompt.strip():
        raise BadInput("the prompt is empty: say what to draw, e.g. \"fox face\"")
    from easel.diffusion.text_encoder import MAX_PROMPT_CHARS

    if len(prompt) > MAX_PROMPT_CHARS:
        raise BadInput(f"the prompt is {len(prompt)} characters long; at most {MAX_PROMPT_CHARS}")
    check_guidance(guidance, "--guidance")
    if classifier_guidance is not None:
        check_guidance(classifier_guidance, "--classifier-guidance")
        if model:
            raise BadInput("--classifier-guidance needs an Easel model with a style classifier; "
                           "drop --model")
    if palette_strength is not None:
        from easel.diffusion.palette import check_strength

        check_strength(palette_strength, "--palette-strength")
        if model:
            raise BadInput("--palette-strength needs an Easel model with a style palette; drop --model")
    if init_image is not None and not 0.0 < strength <= 1.0:
        raise BadInput(f"--strength must be in (0, 1], got {strength}")
    personal = None
    if style and style.startswith("artist:"):
        from easel.cli.style import acting_key
        from easel.style.generation import begin

        if model:
            raise BadInput("personal styles are adapters on the Easel model; drop --model")
        personal = begin(style, as_user, acting_key(as_user, key) if as_user else None)
    full_prompt, style_tag = style_prompt(prompt, None if personal else style)
    init = _open_image(init_image, "--init-image")
    mask_img = _open_image(mask, "--mask")
    if mask_img is not None and init is None:
        raise BadInput("--mask needs --init-image (inpainting repaints part of an image)")
    if mask_img is not None and init is not None and mask_img.size != init.size:
        raise BadInput(f"--mask is {mask_img.size} but --init-image is {init.size}; "
                       "give a mask of the same size")
    mode = "inpaint" if mask_img is not None else "img2img" if init is not None else "txt2img"
    base_seed = seed if seed is not None else __import__("secrets").randbits(30)
    seeds = [base_seed + i for i in range(n)]
    settings.ensure_home()
    out_dir = out or settings.outputs_dir

    from easel.provenance.publish import GenerationInfo, publish_image

    started = time.perf_counter()
    if model:
        from easel.diffusion.external import load_external, run_external

        pipe = load_external(model, mode)
        loaded = time.perf_counter()

        def render(batch: list[int]) -> tuple[list, dict]:
            result = run_external(pipe, [full_prompt] * len(batch), batch, steps, guidance, init,
                                  strength, mask_img)
            return result.images, result.parameters

        images, params = render(seeds)
        model_id, dataset_id = model, None
        from easel.diffusion.identity import checkpoint_folder

        weights_dir = checkpoint_folder(model)
    else:
        from easel.diffusion.model_card import read_model_card
        from easel.diffusion.pipeline import load_pipeline, resolve_model_dir

        path = resolve_model_dir(model_dir)
        pipe = load_pipeline(path)
        card = read_model_card(path)
        if personal is not None:
            from easel.style import generation

            generation.apply(pipe, personal, path)
            full_prompt = generation.styled_prompt(full_prompt, personal)
        from easel.diffusion.text_encoder import get_text_encoder

        get_text_encoder("cpu")  # loaded here, so that the time below is the drawing alone
        loaded = time.perf_counter()
        def render(batch: list[int]) -> tuple[list, dict]:
            output = pipe([full_prompt] * len(batch), seeds=batch, num_inference_steps=steps,
                          guidance_scale=guidance, image=init, strength=strength,
                          mask_image=mask_img, upscale=not no_upscale,
                          classifier_guidance_scale=classifier_guidance,
                          palette_strength=palette_strength)
            return output.images, output.parameters

        images, params = render(seeds)
        model_id = card.get("model_id", str(path))
        dataset_id = card.get("dataset_id")
        weights_dir = path
    load_seconds, gen_seconds = loaded - started, time.perf_counter() - loaded
    from easel.diffusion.identity import weights_digest

    model_sha256 = weights_digest(weights_dir, settings.home / "cache") if weights_dir else None
    params = dict(params, mode=mode)
    styled: dict = {"style": style_tag}
    if personal is not None:
        from easel.style import generation

        params.update(generation.parameters(personal))
        styled = generation.publish_fields(personal)
    def publish(image: Image.Image, s: int) -> None:
        info = GenerationInfo(prompt=full_prompt, mode=mode, model_id=model_id, model_sha256=model_sha256,
                              dataset_id=dataset_id, seed=s,
                              parameters=dict(params, width=image.width, height=image.height),
                              include_prompt=include_prompt, visible_mark=visible_mark, **styled)
        published = publish_image(image, info, out_dir)
        typer.echo(f"{published.path}  id={published.generation_id}  seed={s}")

    from easel.audit.guard import publish_or_redraw_once

    for image, s in zip(images, seeds, strict=True):
        # A near-copy is drawn once more from the next seed after this batch's.
        publish_or_redraw_once(image, s, s + n, publish, lambda seed: render([seed])[0][0],
                               lambda message: typer.echo(message, err=True))
    typer.echo(f"{n} image(s) in {gen_seconds:.1f} s with {model_id} (loaded in {load_seconds:.1f} s)")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
