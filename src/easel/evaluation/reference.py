"""Generators to evaluate: the two reference generators and the diffusion model's pipeline.

The references prove that the metrics behave: ``RealIconGenerator`` returns the corpus's own
icon for each prompt (it should score near the judges' real-image accuracy) and
``NoiseGenerator`` returns seeded pixel noise (it should score near chance).
``AutoencodedIconGenerator`` returns the real icon after a round trip through a model's
autoencoder: the best a denoiser working in that latent space could score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from easel.corpus.captions import prompt_for
from easel.diffusion.defaults import SAMPLING
from easel.errors import BadInput, EaselError
from easel.evaluation.data import EvalCorpus

REFERENCES = ("real", "real32", "autoencoder", "noise")


class RealIconGenerator:
    """Returns the real corpus icon named by each prompt ("fox face, twemoji style"), at
    ``size`` px (``32`` shows what a 32 px model could at best score)."""

    def __init__(self, corpus: EvalCorpus, size: int | None = None) -> None:
        self.corpus = corpus
        self.size = size
        self.index: dict[str, int] = {}
        for i, row in enumerate(corpus.rows):  # rows are in item-id order: first one wins
            self.index.setdefault(prompt_for(row["caption"], row["style_tag"]), i)

    def __call__(self, prompts: list[str], seeds: list[int]) -> list[Any]:
        from PIL import Image

        images = self.corpus.images()
        out = []
        for prompt in prompts:
            if prompt not in self.index:
                raise BadInput(f"no corpus icon for prompt {prompt!r}",
                               hint="the real reference only knows the corpus's captions and styles")
            image = Image.fromarray(images[self.index[prompt]])
            if self.size is not None and self.size != image.width:
                image = image.resize((self.size, self.size), Image.Resampling.BOX)
            out.append(image)
        return out


class AutoencodedIconGenerator(RealIconGenerator):
    """The real icon of each prompt, encoded to the latent mode and decoded by ``vae`` (a
    diffusers ``AutoencoderKL``): what a perfect denoiser in that latent space would give."""

    def __init__(self, corpus: EvalCorpus, vae: Any) -> None:
        super().__init__(corpus)
        self.vae = vae.eval()

    def __call__(self, prompts: list[str], seeds: list[int]) -> list[Any]:
        import torch

        from easel.diffusion.data import to_pil, to_unit

        real = super().__call__(prompts, seeds)
        x = to_unit(torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in real]))
                    .permute(0, 3, 1, 2))
        with torch.no_grad():
            out = self.vae.decode(self.vae.encode(x).latent_dist.mode()).sample
        return to_pil(out)


class NoiseGenerator:
    """Returns uniform RGB pixel noise, ``size`` x ``size``, seeded by each prompt's seed."""

    def __init__(self, size: int = 64) -> None:
        self.size = size

    def __call__(self, prompts: list[str], seeds: list[int]) -> list[Any]:
        from PIL import Image

        if len(prompts) != len(seeds):
            raise BadInput(f"{len(prompts)} prompts but {len(seeds)} seeds")
        return [Image.fromarray(np.random.default_rng(seed).integers(0, 256, (self.size, self.size, 3),
                                                                      dtype=np.uint8))
                for seed in seeds]


class PipelineGenerator:
    """The diffusion model through its pipeline (``easel.diffusion.pipeline.load_pipeline``),
    at base resolution (``upscale=False``)."""

    def __init__(self, model_dir: Path | None, steps: int = SAMPLING.steps,
                 guidance: float = SAMPLING.guidance_scale,
                 guidance_interval: tuple[float, float] | None = None,
                 style_guidance: float = SAMPLING.style_guidance_scale,
                 classifier_guidance: float | None = None,
                 palette_strength: float | None = None) -> None:
        try:
            from easel.diffusion.pipeline import load_pipeline
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("easel.diffusion"):
                raise EaselError("the diffusion pipeline is not available in this build",
                                 hint="evaluate a reference instead: --reference real|real32|noise") from exc
            raise
        if steps < 1:
            raise BadInput(f"--steps must be at least 1, got {steps}")
        self.pipe = load_pipeline(model_dir)
        self.steps, self.guidance, self.guidance_interval = steps, guidance, guidance_interval
        self.style_guidance = style_guidance
        self.classifier_guidance = classifier_guidance  # None: the model's own default
        self.palette_strength = palette_strength  # None: the model's own default

    def __call__(self, prompts: list[str], seeds: list[int]) -> Sequence[Any]:
        out = self.pipe(prompts, seeds=seeds, num_inference_steps=self.steps,
                        guidance_scale=self.guidance, guidance_interval=self.guidance_interval,
                        style_guidance_scale=self.style_guidance,
                        classifier_guidance_scale=self.classifier_guidance,
                        palette_strength=self.palette_strength, upscale=False)
        return list(out.images)


def reference_generator(kind: str, corpus: EvalCorpus,
                        model_dir: Path | None = None) -> RealIconGenerator | NoiseGenerator:
    """``"real"``, ``"real32"`` (the real icons shrunk to 32 px), ``"autoencoder"`` (the real
    icons through ``model_dir``'s autoencoder; default the shipped model's) or ``"noise"``."""
    if model_dir is not None and kind != "autoencoder":
        raise BadInput(f"the {kind!r} reference takes no model",
                       hint="give --model only with --reference autoencoder, or drop --reference")
    if kind == "autoencoder":
        return AutoencodedIconGenerator(corpus, load_autoencoder(model_dir))
    if kind == "real":
        return RealIconGenerator(corpus)
    if kind == "real32":
        return RealIconGenerator(corpus, size=32)
    if kind == "noise":
        return NoiseGenerator()
    raise BadInput(f"unknown reference {kind!r}", hint=f"use one of {', '.join(REFERENCES)}")


def load_autoencoder(model_dir: Path | None = None) -> Any:
    """The ``AutoencoderKL`` of an Easel model directory (default: the shipped model)."""
    from diffusers import AutoencoderKL

    from easel.diffusion.pipeline import resolve_model_dir

    path = resolve_model_dir(model_dir) / "vae"
    if not (path / "config.json").exists():
        raise BadInput(f"{path.parent} has no autoencoder (no vae/config.json)",
                       hint="give a model directory written by `easel train base`")
    return AutoencoderKL.from_pretrained(str(path))
