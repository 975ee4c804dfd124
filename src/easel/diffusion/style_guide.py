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

The same network can be a *discriminator* instead (``kind="discriminator"``; discriminator
guidance, Kim et al. 2023): for each style s it tells the real icons' latents drawn in s from the
model's own latents drawn for prompts that ask for s, both noised to the same σ. What the sampler
climbs is then ``log p(real s | x_σ) − log p(fake s | x_σ)``, an estimate of
``log p_data(x_σ | s) / p_model(x_σ | s)``: its gradient added to the model's score moves each
step towards the real icons of the asked style and away from what the model draws instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
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


KINDS = ("style", "discriminator")


class LatentStyleClassifier(ModelMixin, ConfigMixin):
    """Logits over ``style_tags`` for a noised latent ``[N x C x H x W]`` at noise levels ``[N]``.

    ``kind="discriminator"``: twice as many logits, "real <tag>" for each tag and then
    "fake <tag>" for each (see :func:`guide_score`)."""

    @register_to_config
    def __init__(self, style_tags: list[str] | tuple[str, ...] = (), in_channels: int = 4,
                 width: int = 64, emb_dim: int = 128, kind: str = "style") -> None:
        super().__init__()
        if len(style_tags) < 2:
            raise BadInput(f"a style classifier needs at least two style tags, got {list(style_tags)}")
        if kind not in KINDS:
            raise BadInput(f"a style classifier's kind is one of {', '.join(KINDS)}, got {kind!r}")
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.emb = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.blocks = nn.ModuleList([
            _Block(width, width, emb_dim), _Block(width, 2 * width, emb_dim),
            _Block(2 * width, 2 * width, emb_dim),
        ])
        self.norm_out = nn.GroupNorm(8, 2 * width)
        self.head = nn.Linear(2 * width, len(style_tags) * (2 if kind == "discriminator" else 1))

    @property
    def tags(self) -> list[str]:
        return list(self.config.style_tags)

    @property
    def is_discriminator(self) -> bool:
        return self.config.get("kind", "style") == "discriminator"

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


def guide_score(classifier: LatentStyleClassifier, latents: torch.Tensor, sigma: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
    """What guidance climbs, per latent, for its style index ``labels`` (≥ 0): the log-probability
    of the style, or for a discriminator ``log p(real s | x) − log p(fake s | x)``."""
    logits = classifier(latents, sigma).float()
    labels = labels.to(logits.device)[:, None]
    if classifier.is_discriminator:
        n = len(classifier.tags)
        return (logits.gather(1, labels) - logits.gather(1, labels + n)).squeeze(1)
    return logits.log_softmax(dim=1).gather(1, labels).squeeze(1)


def guided_velocity(classifier: LatentStyleClassifier, latents: torch.Tensor, sigma: float,
                    v: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """``v`` moved towards each latent's style label (rows with label −1 are left as they are)."""
    keep = labels >= 0
    if scale == 0.0 or not bool(keep.any()) or sigma <= 0.0:
        return v
    with torch.enable_grad():
        x = latents.detach().float().requires_grad_(True)
        s = torch.full((x.shape[0],), float(sigma), device=x.device)
        picked = guide_score(classifier, x, s, labels.clamp(min=0))
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


def _fit(model: LatentStyleClassifier, draw: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]],
         steps: int, learning_rate: float, gen: torch.Generator, desc: str, progress: bool) -> None:
    """Train ``model`` for ``steps`` steps on the clean latents and class indices ``draw(gen)``
    gives each step, noised at σ ~ U(0, 1) per sample, with cross-entropy; the rate decays on a
    cosine."""
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-2)
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * step / steps))
        x0, y = draw(gen)
        sigma = torch.rand(x0.shape[0], generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1)
        loss = F.cross_entropy(model((1.0 - s) * x0 + s * noise, sigma), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


def _check_training(n: int, batch_size: int, steps: int, what: str = "training latents") -> None:
    if n < batch_size:
        raise BadInput(f"{n} {what} is fewer than one batch of {batch_size}")
    if steps < 1:
        raise BadInput(f"steps must be at least 1, got {steps}")


def train_style_classifier(latents: torch.Tensor, set_tags: list[str], *, steps: int = 3000,
                           batch_size: int = 128, learning_rate: float = 1e-3, width: int = 64,
                           seed: int = 0, val_latents: torch.Tensor | None = None,
                           val_tags: list[str] | None = None, progress: bool = True) -> ClassifierResult:
    """Train a :class:`LatentStyleClassifier` on clean latents ``[N x C x H x W]`` and their style
    tags, noised at σ ~ U(0, 1) per sample, with cross-entropy; the rate decays on a cosine."""
    tags = sorted(set(set_tags))
    if len(tags) < 2:
        raise BadInput(f"the training set has {len(tags)} style tag(s); a style classifier needs two or more")
    _check_training(latents.shape[0], batch_size, steps)
    torch.manual_seed(seed)
    model = LatentStyleClassifier(style_tags=tags, in_channels=latents.shape[1], width=width)
    labels = model.labels_for(list(set_tags))
    gen = torch.Generator().manual_seed(seed)
    batches = _batches(latents.shape[0], batch_size, gen)  # the same generator as the noise

    def draw(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = next(batches)
        return latents[idx], labels[idx]

    started = time.monotonic()
    _fit(model, draw, steps, learning_rate, gen, "style classifier", progress)
    accuracy: dict[str, float] = {}
    if val_latents is not None and val_tags is not None:
        val_labels = model.labels_for(list(val_tags))
        known = val_labels >= 0
        if bool(known.any()):
            accuracy = held_out_accuracy(model, val_latents[known], val_labels[known])
    return ClassifierResult(model, steps, time.monotonic() - started, accuracy, latents.shape[0])


@torch.no_grad()
def held_out_discrimination(disc: LatentStyleClassifier, real: torch.Tensor, real_labels: torch.Tensor,
                            fake: torch.Tensor, fake_labels: torch.Tensor,
                            sigmas: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.85, 0.95),
                            seed: int = 0) -> dict[str, float]:
    """Balanced accuracy at each noise level of reading held-out real latents as real and
    held-out fakes as fake, each given its own style (fixed noise, so a rerun gives the same)."""
    disc.eval()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for s in sigmas:
        rates = []
        for lat, lab, real_side in ((real, real_labels, True), (fake, fake_labels, False)):
            x = (1.0 - s) * lat + s * torch.randn(lat.shape, generator=gen)
            score = torch.cat([guide_score(disc, x[i:i + 512], torch.full((x[i:i + 512].shape[0],), s),
                                           lab[i:i + 512]) for i in range(0, x.shape[0], 512)])
            rates.append(float(((score > 0) == real_side).float().mean()))
        out[f"sigma={s:g}"] = sum(rates) / 2
    return out


def train_discriminator(real: torch.Tensor, real_tags: list[str], fake: torch.Tensor, fake_tags: list[str],
                        *, steps: int = 3000, batch_size: int = 128, learning_rate: float = 1e-3,
                        width: int = 64, seed: int = 0, val_real: torch.Tensor | None = None,
                        val_real_tags: list[str] | None = None, val_share: float = 0.1,
                        progress: bool = True) -> ClassifierResult:
    """Train a discriminator (:class:`LatentStyleClassifier`, ``kind="discriminator"``) on real
    latents and the model's own latents (``fake``), each with the style tag it was drawn in or
    asked for. Each batch is half real, half fake. The last ``val_share`` of the fakes is held
    out and, with ``val_real``, gives :func:`held_out_discrimination`'s figures."""
    tags = sorted(set(real_tags))
    if len(tags) < 2:
        raise BadInput(f"the real latents have {len(tags)} style tag(s); a discriminator needs two or more")
    unknown = sorted(set(fake_tags) - set(tags))
    if unknown:
        raise BadInput(f"the fakes ask for style tags the real latents lack: {', '.join(map(str, unknown))}",
                       hint="draw the fakes from prompts of the training set's own styles")
    n_val = int(len(fake_tags) * val_share) if val_real is not None else 0
    half = batch_size // 2
    _check_training(real.shape[0], half, steps, "real latents")
    _check_training(fake.shape[0] - n_val, half, steps, "fake latents left for training")
    torch.manual_seed(seed)
    model = LatentStyleClassifier(style_tags=tags, in_channels=real.shape[1], width=width,
                                  kind="discriminator")
    r_lab, f_lab = model.labels_for(list(real_tags)), model.labels_for(list(fake_tags))
    n_fit = fake.shape[0] - n_val

    def draw(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ri = torch.randint(0, real.shape[0], (half,), generator=gen)
        fi = torch.randint(0, n_fit, (half,), generator=gen)
        return torch.cat([real[ri], fake[fi]]), torch.cat([r_lab[ri], f_lab[fi] + len(tags)])

    started = time.monotonic()
    _fit(model, draw, steps, learning_rate, torch.Generator().manual_seed(seed), "discriminator", progress)
    accuracy: dict[str, float] = {}
    if val_real is not None and val_real_tags is not None and n_val:
        v_lab = model.labels_for(list(val_real_tags))
        known = v_lab >= 0
        if bool(known.any()):
            accuracy = held_out_discrimination(model, val_real[known], v_lab[known], fake[n_fit:],
                                               f_lab[n_fit:])
    return ClassifierResult(model, steps, time.monotonic() - started, accuracy, real.shape[0] + n_fit)


FAKE_SEED_BASE = 700_000
"""The first noise seed of a discriminator's fakes: far from the seeds ``easel eval model`` draws."""


def fake_prompts(prompts: list[str], n: int, seed: int = 0) -> list[str]:
    """``n`` prompts chosen from ``prompts`` in a seeded order, cycling when ``n`` is more: the
    prompts a discriminator's fakes are drawn for."""
    if not prompts:
        raise BadInput("no prompts to draw the model's pictures for")
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed)).tolist()
    return [prompts[order[k % len(prompts)]] for k in range(n)]


@torch.no_grad()
def draw_fakes(pipe: Any, prompts: list[str], n: int, batch_size: int = 64, seed: int = 0,
               progress: bool = True) -> tuple[torch.Tensor, list[str]]:
    """``n`` finished latents of ``pipe``'s own sampler (its default steps and guidance, no style
    guidance) for the prompts :func:`fake_prompts` chooses, one noise seed each from
    :data:`FAKE_SEED_BASE`; and the prompts they were drawn for."""
    chosen = fake_prompts(prompts, n, seed)
    parts = []
    for start in tqdm(range(0, n, batch_size), desc="model's pictures", unit="batch", disable=not progress):
        ps = chosen[start:start + batch_size]
        out = pipe(ps, seeds=[FAKE_SEED_BASE + start + k for k in range(len(ps))], upscale=False,
                   classifier_guidance_scale=0.0)
        parts.append(out.latents.float().cpu())
    return torch.cat(parts), chosen


def classifier_record(result: ClassifierResult, dataset_id: str, **extra: Any) -> dict[str, Any]:
    """What the model card says about the style classifier."""
    return {"kind": result.classifier.config.get("kind", "style"), "steps": result.steps,
            "train_items": result.train_items, "dataset_id": dataset_id,
            "seconds": round(result.seconds, 1), "style_tags": result.classifier.tags,
            "held_out_accuracy": {k: round(v, 4) for k, v in result.accuracy.items()},
            "parameters": sum(p.numel() for p in result.classifier.parameters()), **extra}


STYLE_GUIDE_SUFFIX = "-c"
"""Part of a model id whose pipeline has a style classifier: ``…-s32174-c3000w0a1b2c3d-d4429``
(steps and ``weights_tag`` of the classifier)."""


def export_style_guide(out: Any, base_dir: Any, result: ClassifierResult, dataset_id: str,
                       consent_events: int = 0, guidance_scale: float | None = None, **record: Any) -> Any:
    """Write ``base_dir``'s model with ``result``'s classifier as its ``style_classifier``.

    Everything else in the model stays as it is; the card gains a ``style_classifier`` record,
    ``guidance_scale`` becomes the pipeline's default scale (None: the base model's stays, 0 = off
    when it has none), and the model id gains
    ``-c<classifier steps>w<its weights tag>``; ``record``'s items join the card's record.
    ``out`` may be ``base_dir`` itself: the directory is replaced atomically."""
    from pathlib import Path

    from easel.diffusion.training import base_for_part, consent_text, write_with_part

    base_dir, out = Path(base_dir), Path(out)
    pipe, card = base_for_part(base_dir)
    if result.classifier.config.in_channels != pipe.unet.config.out_channels:
        raise BadInput(f"the classifier reads {result.classifier.config.in_channels} latent channels, "
                       f"{base_dir}'s UNet {pipe.unet.config.out_channels}")
    pipe.register_modules(style_classifier=result.classifier)
    if guidance_scale is None:  # keep the base model's default, and say which it is
        guidance_scale = float(pipe.config.get("classifier_guidance_scale", 0.0))
    pipe.register_to_config(classifier_guidance_scale=float(guidance_scale))
    made = classifier_record(result, dataset_id, from_model=str(card["model_id"]),
                             consent=consent_text(consent_events), guidance_scale=guidance_scale, **record)
    return write_with_part(out, base_dir, pipe, card, "style_classifier", made, STYLE_GUIDE_SUFFIX,
                           result.steps, result.classifier)
