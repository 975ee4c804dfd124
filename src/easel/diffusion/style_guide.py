"""Style classifier guidance: a small noise-aware classifier of the latents' style, and its
gradient as a guide for the sampler (classifier guidance, Dhariwal & Nichol 2021).

The classifier reads a noised latent ``x_σ = (1−σ)·x0 + σ·ε`` and its noise level σ and names
the style tag of the set the picture came from ("twemoji style", …). During sampling the
gradient ``g = ∇_x log p(style | x_σ)`` of the prompt's own style tag moves the velocity the
denoiser predicts. For rectified flow (``v = ε − x0``) the score is ``−E[ε | x] / σ``, and
adding ``w·g`` to it changes the velocity by ``−w·σ·g / (1−σ)``; the factor is capped where σ
is near 1, where the latents hold almost no picture yet.

It trains on the consented training set's latents only, as the denoiser does, and it is a
component of the model directory (``style_classifier/``), saved and loaded with the pipeline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from tqdm import tqdm

from easel.errors import BadInput

MAX_GUIDE_FACTOR = 10.0  # the cap on σ/(1−σ): reached at σ ≈ 0.91


def sigma_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the noise level σ ∈ [0, 1], ``[N x dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=sigma.device) / half)
    angles = sigma.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Block(nn.Module):
    """Residual block with a noise-level scale and shift (FiLM)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class LatentStyleClassifier(ModelMixin, ConfigMixin):
    """Logits over ``style_tags`` for a noised latent ``[N x C x H x W]`` at noise levels ``[N]``."""

    @register_to_config
    def __init__(self, style_tags: list[str] | tuple[str, ...] = (), in_channels: int = 4,
                 width: int = 64, emb_dim: int = 128) -> None:
        super().__init__()
        if len(style_tags) < 2:
            raise BadInput(f"a style classifier needs at least two style tags, got {list(style_tags)}")
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.emb = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.blocks = nn.ModuleList([
            _Block(width, width, emb_dim), _Block(width, 2 * width, emb_dim),
            _Block(2 * width, 2 * width, emb_dim),
        ])
        self.norm_out = nn.GroupNorm(8, 2 * width)
        self.head = nn.Linear(2 * width, len(style_tags))

    @property
    def tags(self) -> list[str]:
        return list(self.config.style_tags)

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        emb = self.emb(sigma_embedding(sigma, int(self.config.emb_dim)).to(latents.dtype))
        h = self.conv_in(latents)
        for i, block in enumerate(self.blocks):
            h = block(h, emb)
            if i < len(self.blocks) - 1:
                h = F.avg_pool2d(h, 2)  # 16 → 8 → 4
        h = F.silu(self.norm_out(h)).mean(dim=(2, 3))
        return self.head(h)

    def labels_for(self, style_tags: list[str | None]) -> torch.Tensor:
        """The class index of each tag, −1 where a prompt has no tag this classifier knows."""
        where = {t: i for i, t in enumerate(self.tags)}
        return torch.tensor([where.get(t, -1) if t else -1 for t in style_tags], dtype=torch.long)


def guided_velocity(classifier: LatentStyleClassifier, latents: torch.Tensor, sigma: float,
                    v: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """``v`` moved towards each latent's style label (rows with label −1 are left as they are)."""
    keep = labels >= 0
    if scale == 0.0 or not bool(keep.any()) or sigma <= 0.0:
        return v
    with torch.enable_grad():
        x = latents.detach().float().requires_grad_(True)
        s = torch.full((x.shape[0],), float(sigma), device=x.device)
        logp = classifier(x, s).float().log_softmax(dim=1)
        picked = logp.gather(1, labels.clamp(min=0).to(x.device)[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad((picked * keep.to(x.device)).sum(), x)
    factor = min(sigma / max(1.0 - sigma, 1e-6), MAX_GUIDE_FACTOR)
    return v - (scale * factor * grad).to(v.dtype)


@dataclass
class ClassifierResult:
    classifier: LatentStyleClassifier
    steps: int
    seconds: float
    accuracy: dict[str, float]  # held-out accuracy at a few noise levels, "σ=0.5": 0.83, …
    train_items: int


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]


@torch.no_grad()
def held_out_accuracy(classifier: LatentStyleClassifier, latents: torch.Tensor, labels: torch.Tensor,
                      sigmas: tuple[float, ...] = (0.0, 0.3, 0.6, 0.8, 0.95),
                      seed: int = 0) -> dict[str, float]:
    """Accuracy on ``latents`` noised to each level (fixed noise, so a rerun gives the same figures)."""
    classifier.eval()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=gen)
    out = {}
    for s in sigmas:
        x = (1.0 - s) * latents + s * noise
        pred = torch.cat([classifier(x[i:i + 512], torch.full((x[i:i + 512].shape[0],), s)).argmax(1)
                          for i in range(0, x.shape[0], 512)])
        out[f"sigma={s:g}"] = float((pred == labels).float().mean())
    return out


@torch.no_grad()
def encode_latents(images: torch.Tensor, vae: Any, progress: bool = True) -> torch.Tensor:
    """uint8 images ``[N x 3 x H x W]`` → the autoencoder's scaled latents (its mode)."""
    from easel.diffusion.data import to_unit

    vae.eval()
    parts = [vae.encode(to_unit(images[i:i + 256])).latent_dist.mode() * vae.config.scaling_factor
             for i in tqdm(range(0, images.shape[0], 256), desc="encode latents", disable=not progress)]
    return torch.cat(parts)


def train_style_classifier(latents: torch.Tensor, set_tags: list[str], *, steps: int = 3000,
                           batch_size: int = 128, learning_rate: float = 1e-3, width: int = 64,
                           seed: int = 0, val_latents: torch.Tensor | None = None,
                           val_tags: list[str] | None = None, progress: bool = True) -> ClassifierResult:
    """Train a :class:`LatentStyleClassifier` on clean latents ``[N x C x H x W]`` and their style
    tags, noised at σ ~ U(0, 1) per sample, with cross-entropy; the rate decays on a cosine."""
    tags = sorted(set(set_tags))
    if len(tags) < 2:
        raise BadInput(f"the training set has {len(tags)} style tag(s); a style classifier needs two or more")
    if latents.shape[0] < batch_size:
        raise BadInput(f"{latents.shape[0]} training latents is fewer than one batch of {batch_size}")
    if steps < 1:
        raise BadInput(f"steps must be at least 1, got {steps}")
    torch.manual_seed(seed)
    model = LatentStyleClassifier(style_tags=tags, in_channels=latents.shape[1], width=width)
    labels = model.labels_for(list(set_tags))
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed)
    batches = _batches(latents.shape[0], batch_size, gen)
    started = time.monotonic()
    model.train()
    bar = tqdm(range(steps), desc="style classifier", unit="step", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = next(batches)
        x0 = latents[idx]
        sigma = torch.rand(batch_size, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1)
        x = (1.0 - s) * x0 + s * noise
        loss = F.cross_entropy(model(x, sigma), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    accuracy: dict[str, float] = {}
    if val_latents is not None and val_tags is not None:
        val_labels = model.labels_for(list(val_tags))
        known = val_labels >= 0
        if bool(known.any()):
            accuracy = held_out_accuracy(model, val_latents[known], val_labels[known])
    return ClassifierResult(model, steps, time.monotonic() - started, accuracy, latents.shape[0])


def classifier_record(result: ClassifierResult, dataset_id: str, **extra: Any) -> dict[str, Any]:
    """What the model card says about the style classifier."""
    return {"steps": result.steps, "train_items": result.train_items, "dataset_id": dataset_id,
            "seconds": round(result.seconds, 1), "style_tags": result.classifier.tags,
            "held_out_accuracy": {k: round(v, 4) for k, v in result.accuracy.items()},
            "parameters": sum(p.numel() for p in result.classifier.parameters()), **extra}


STYLE_GUIDE_SUFFIX = "-c"
"""Part of a model id whose pipeline has a style classifier: ``…-s32174-c3000w0a1b2c3d-d4429``
(steps and ``weights_tag`` of the classifier)."""


def export_style_guide(out: Any, base_dir: Any, result: ClassifierResult, dataset_id: str,
                       consent_events: int = 0, guidance_scale: float | None = None) -> Any:
    """Write ``base_dir``'s model with ``result``'s classifier as its ``style_classifier``.

    Everything else in the model stays as it is; the card gains a ``style_classifier`` record,
    ``guidance_scale`` becomes the pipeline's default scale (None: the base model's stays, 0 = off
    when it has none), and the model id gains
    ``-c<classifier steps>w<its weights tag>``.
    ``out`` may be ``base_dir`` itself: the directory is replaced atomically."""
    from pathlib import Path

    from easel.diffusion.model_card import read_model_card
    from easel.diffusion.pipeline import load_pipeline
    from easel.diffusion.training import (
        carry_records,
        consent_text,
        weights_tag,
        with_id_part,
        write_pipeline_dir,
    )

    base_dir, out = Path(base_dir), Path(out)
    card = read_model_card(base_dir)
    if not card:
        raise BadInput(f"{base_dir} has no model card", hint="give a directory written by `easel train base`")
    pipe = load_pipeline(base_dir, device="cpu")
    if result.classifier.config.in_channels != pipe.unet.config.out_channels:
        raise BadInput(f"the classifier reads {result.classifier.config.in_channels} latent channels, "
                       f"{base_dir}'s UNet {pipe.unet.config.out_channels}")
    pipe.register_modules(style_classifier=result.classifier)
    if guidance_scale is None:  # keep the base model's default, and say which it is
        guidance_scale = float(pipe.config.get("classifier_guidance_scale", 0.0))
    pipe.register_to_config(classifier_guidance_scale=float(guidance_scale))
    base_id = str(card["model_id"])
    card["model_id"] = with_id_part(base_id, STYLE_GUIDE_SUFFIX, result.steps,
                                    weights_tag(result.classifier))
    card["style_classifier"] = classifier_record(result, dataset_id, from_model=base_id,
                                                 consent=consent_text(consent_events),
                                                 guidance_scale=guidance_scale)
    card["evaluation"] = {}  # the base model's figures do not describe the guided model

    return write_pipeline_dir(out, pipe, card, carry_records(base_dir))
