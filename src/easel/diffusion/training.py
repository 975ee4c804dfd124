"""Training the embedded model: the autoencoder, then the latent denoiser.

Both loops run on CUDA when present and on the CPU otherwise, show a progress bar, save a
checkpoint every few minutes *outside* the output directory (atomically: write, then
rename), resume from it, stop cleanly on Ctrl-C / SIGTERM after saving, and leave a Ctrl-Z
pause out of their training time (``easel.runs``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, UNet2DConditionModel
from tqdm import tqdm

from easel import __version__
from easel.diffusion.configs import (
    AutoencoderTrainConfig,
    TrainConfig,
    has_attention_16,
    has_self_condition,
    has_style_input,
    head_dim_of,
    transformer_layers_of,
    unet_config,
    vae_config,
)
from easel.diffusion.data import TrainingSet, to_unit
from easel.diffusion.growth import add_self_condition, add_style_input, attend_at_16, deepen_unet
from easel.diffusion.pipeline import EaselPipeline, latent_velocity_loss
from easel.diffusion.text_encoder import (
    EMBED_DIM,
    PromptEmbeddings,
    get_text_encoder,
    style_vectors,
    with_style_vectors,
)
from easel.diffusion.upscaler import EaselUpscaler
from easel.runs import atomic_save, stop_on_signal

log = logging.getLogger(__name__)


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------
# Autoencoder
# ---------------------------------------------------------------------------------------

@dataclass
class AutoencoderResult:
    vae: AutoencoderKL
    steps: int
    seconds: float
    val_psnr: float


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1]."""
    mse = F.mse_loss((a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2).item()
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def autoencoder_psnr(vae: AutoencoderKL, val_images: torch.Tensor, dev: torch.device) -> float:
    """Validation PSNR (dB) of the latent-mode round trip on the first 256 images."""
    vae.eval()
    with torch.no_grad():
        val = to_unit(val_images[:256]).to(dev)
        rec = vae.decode(vae.encode(val).latent_dist.mode()).sample
        return psnr(rec, val)


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The autoencoder's picture loss: L1 plus half the L1 of the horizontal and vertical
    differences (edges count, so flat fills stay flat and outlines sharp)."""
    grad = (F.l1_loss(rec[..., 1:, :] - rec[..., :-1, :], x[..., 1:, :] - x[..., :-1, :])
            + F.l1_loss(rec[..., 1:] - rec[..., :-1], x[..., 1:] - x[..., :-1]))
    return F.l1_loss(rec, x) + 0.5 * grad


def train_autoencoder(data: TrainingSet, val_images: torch.Tensor, ckpt: Path,
                      config: AutoencoderTrainConfig, device: str | None = None,
                      progress: bool = True, max_steps: int | None = None,
                      init: AutoencoderKL | None = None, decoder_only: bool = False) -> AutoencoderResult:
    """Train the 64→16 ``AutoencoderKL`` (L1 + gradient L1 + tiny KL) for ``config.minutes``.

    ``init`` starts from a trained autoencoder instead of random weights. ``decoder_only``
    freezes its encoder (and so the latent space and its scaling factor): a denoiser trained
    on its latents stays valid, and only the pictures it decodes to change. With
    ``config.decay`` the learning rate falls linearly to 0 over the time budget.
    """
    if decoder_only and init is None:
        raise ValueError("decoder_only fine-tunes a trained autoencoder: give init")
    dev = pick_device(device)
    torch.manual_seed(config.seed)
    vae = copy.deepcopy(init) if init is not None else AutoencoderKL(**vae_config())
    vae = vae.to(dev)
    if decoder_only:
        for module in (vae.encoder, vae.quant_conv):
            module.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    step, seconds = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=False)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        step, seconds = state["step"], state["seconds"]
        log.info("resumed autoencoder at step %d (%.0f s)", step, seconds)
    gen = torch.Generator().manual_seed(config.seed + step)
    budget = config.minutes * 60
    bar = tqdm(desc="decoder" if decoder_only else "autoencoder", unit="step", initial=step,
               disable=not progress, total=max_steps)
    last_save = time.monotonic()
    vae.train()
    if decoder_only:
        vae.encoder.eval()
    with stop_on_signal() as signals:
        while seconds < budget and not signals.stop and (max_steps is None or step < max_steps):
            t0 = signals.clock()
            if config.decay:
                lr = config.learning_rate * min(1.0, (step + 1) / 50) * max(0.0, 1.0 - seconds / budget)
                for group in opt.param_groups:
                    group["lr"] = lr
            idx = torch.randint(0, data.images.shape[0], (config.batch_size,), generator=gen)
            x = to_unit(data.images[idx]).to(dev)
            with torch.set_grad_enabled(not decoder_only):  # a frozen encoder needs no graph
                post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            kl = torch.zeros((), device=dev) if decoder_only else post.kl().mean()
            loss = reconstruction_loss(rec, x) + config.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seconds += signals.clock() - t0
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if time.monotonic() - last_save > 120:
                atomic_save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                             "seconds": seconds}, ckpt)
                last_save = time.monotonic()
    bar.close()
    atomic_save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                 "seconds": seconds}, ckpt)
    vae.eval()
    if not decoder_only:  # a new latent space: scale it to unit variance for the denoiser
        with torch.no_grad():
            latents = vae.encode(to_unit(val_images[:256]).to(dev)).latent_dist.mode()
        vae.register_to_config(scaling_factor=1.0 / latents.std().item())
    return AutoencoderResult(vae.cpu(), step, seconds, autoencoder_psnr(vae, val_images, dev))


AUTOENCODER_RECORD = "training.json"


def write_autoencoder_record(vae_dir: Path, data: TrainingSet, steps: int, seconds: float,
                             val_psnr: float, config: AutoencoderTrainConfig,
                             fine_tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``<vae_dir>/training.json``: which data the autoencoder learned from, and how well.

    ``easel train base`` copies this record into the model card, so that the card names the
    autoencoder's training data as well as the denoiser's.
    """
    record = {"dataset_id": data.dataset_id, "manifest": str(data.manifest_path),
              "items": len(data.item_ids), "sets": sorted({r["set_id"] for r in data.rows}),
              "consented_items": sum(1 for r in data.rows if r.get("consent_event_id")),
              "steps": steps, "seconds": round(seconds, 1), "val_psnr": round(val_psnr, 3),
              "config": config.to_dict()}
    if fine_tuned is not None:
        record["fine_tuned"] = fine_tuned
    (vae_dir / AUTOENCODER_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_autoencoder_record(vae_dir: Path) -> dict[str, Any] | None:
    """The record ``write_autoencoder_record`` left, or None for an autoencoder without one."""
    path = vae_dir / AUTOENCODER_RECORD
    return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------------------------------
# Latent denoiser
# ---------------------------------------------------------------------------------------

@dataclass
class EncodedSet:
    """Everything the denoiser trains on, precomputed once: latents and prompt embeddings."""

    latents: torch.Tensor  # [N x 4 x 16 x 16], scaled by the VAE's scaling factor
    full: PromptEmbeddings  # "caption, style tag" per item
    caption_only: PromptEmbeddings  # per unique caption
    caption_index: torch.Tensor  # [N] index into caption_only
    empty: PromptEmbeddings  # [1] the unconditional prompt
    set_ids: list[str] = field(default_factory=list)  # per item, for --set-balance
    # For --mirror: the latents of the pictures mirrored left to right, and which items may be.
    mirrored: torch.Tensor | None = None
    mirrorable: torch.Tensor | None = None  # [N] bool


# A caption that names a side or a turning direction: its picture mirrored would contradict it.
_SIDED = re.compile(r"\b(left|right|clockwise|counterclockwise|anticlockwise)")


def mirrorable(captions: list[str]) -> torch.Tensor:
    """``[N]`` bool: may the picture of each caption be mirrored left to right for training?
    Not where the caption names a side or a turning direction ("left arrow", "clockwise
    vertical arrows"), which the mirrored picture would contradict."""
    return torch.tensor([_SIDED.search(c.lower()) is None for c in captions], dtype=torch.bool)


def _cache_key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _dataset_part(dataset_id: str) -> str:
    """The start of a cache file's name that says its dataset (``prune_caches`` reads it)."""
    return dataset_id[:12]


def encode_prompt_sets(data: TrainingSet, cache_dir: Path) -> tuple[PromptEmbeddings, PromptEmbeddings,
                                                                    torch.Tensor, PromptEmbeddings]:
    """MiniLM embeddings of the full prompts, the unique captions and "" (cached by content)."""
    unique = sorted(set(data.captions))
    key = _cache_key(*data.prompts, "\x00", *unique)
    path = cache_dir / f"prompts-{_dataset_part(data.dataset_id)}-{key}.pt"
    if path.exists():
        state = torch.load(path, weights_only=False)
        return state["full"], state["caption_only"], state["caption_index"], state["empty"]
    where = {c: i for i, c in enumerate(unique)}
    encoder = get_text_encoder("cpu")
    full = encoder.encode(data.prompts)
    caption_only = encoder.encode(unique)
    empty = encoder.encode([""])
    index = torch.tensor([where[c] for c in data.captions])
    atomic_save({"full": full, "caption_only": caption_only, "caption_index": index, "empty": empty}, path)
    return full, caption_only, index, empty


def _latents_key(data: TrainingSet, vae: AutoencoderKL) -> str:
    """A digest of the pictures (in order) and of the autoencoder's weights and scaling."""
    digest = hashlib.sha256()
    digest.update(data.images.contiguous().numpy().tobytes())
    digest.update(state_digest(vae).encode())
    digest.update(repr(float(vae.config.scaling_factor)).encode())
    return digest.hexdigest()[:16]


def _encode_latents(data: TrainingSet, vae: AutoencoderKL, path: Path, mirror: bool,
                    progress: bool) -> torch.Tensor:
    """The latents of ``data``'s pictures (mirrored left to right with ``mirror``), read from
    ``path`` when it holds them, else encoded and saved there."""
    if path.exists():
        return torch.load(path, weights_only=True)
    vae.eval()
    latents = []
    with torch.no_grad():
        for start in tqdm(range(0, data.images.shape[0], 256),
                          desc="encode mirrored latents" if mirror else "encode latents",
                          disable=not progress):
            x = to_unit(data.images[start:start + 256])
            if mirror:
                x = x.flip(-1)
            latents.append(vae.encode(x).latent_dist.mode() * vae.config.scaling_factor)
    encoded = torch.cat(latents)
    atomic_save(encoded, path)
    return encoded


def encode_training_set(data: TrainingSet, vae: AutoencoderKL, cache_dir: Path,
                        progress: bool = True, mirror: bool = False,
                        style_input: bool = False) -> EncodedSet:
    """Encode images to latents and prompts to MiniLM embeddings, both cached in ``cache_dir``
    by content (the latents take a minute or more for the corpus on one core, so a resumed run
    reads them back; another autoencoder or other pictures make another file). The caches of
    other datasets in ``cache_dir`` are removed (``prune_caches``).

    ``mirror``: the mirrored pictures' latents too (``TrainConfig.mirror``). ``style_input``:
    each prompt's style vector beside its pooled embedding (``TrainConfig.style_input``;
    zeros for the captions alone and the empty prompt)."""
    full, caption_only, caption_index, empty = encode_prompt_sets(data, cache_dir)
    if style_input:
        full = with_style_vectors(full, style_vectors(data.prompts))
        caption_only = with_style_vectors(caption_only, torch.zeros_like(caption_only.pooled))
        empty = with_style_vectors(empty, torch.zeros_like(empty.pooled))
    key = f"{_dataset_part(data.dataset_id)}-{_latents_key(data, vae)}"
    encoded = _encode_latents(data, vae, cache_dir / f"latents-{key}.pt", False, progress)
    mirrored = mirrorable_items = None
    if mirror:
        mirrored = _encode_latents(data, vae, cache_dir / f"latents-{key}-mirrored.pt", True, progress)
        mirrorable_items = mirrorable(data.captions)
    for path in prune_caches(cache_dir, data.dataset_id):
        log.warning("removed %s: the encodings of another dataset", path)
    return EncodedSet(encoded, full, caption_only, caption_index, empty, list(data.set_ids),
                      mirrored, mirrorable_items)


_CACHE_NAME = re.compile(r"(?:prompts|latents)-(?:([0-9a-f]{12})-)?[0-9a-f]{16}(?:-mirrored)?\.pt")


def prune_caches(cache_dir: Path, dataset_id: str) -> list[Path]:
    """Remove the prompt and latent caches in ``cache_dir`` of datasets other than
    ``dataset_id`` (and those of older versions, whose names do not say their dataset); return
    them.

    A dataset built after a withdrawal leaves the withdrawn works out, and training on it should
    not leave their encodings behind either. Only files named as the trainer names its caches
    are touched. A folder shared by runs on two datasets re-encodes when it switches back
    (a minute or two)."""
    removed = []
    for path in sorted(cache_dir.iterdir()) if cache_dir.is_dir() else []:
        match = _CACHE_NAME.fullmatch(path.name)
        if match and match.group(1) != _dataset_part(dataset_id):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def set_balance_weights(set_ids: list[str], balance: float) -> torch.Tensor:
    """Per-item sampling weights under which a set of n items is drawn in proportion to
    n^(1 - balance): each item weighs n^(-balance), normalised to sum to 1."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"set balance must be between 0 and 1, got {balance}")
    sizes = Counter(set_ids)
    weights = torch.tensor([sizes[s] ** -balance for s in set_ids], dtype=torch.float64)
    return weights / weights.sum()


def _batch_embeddings(enc: EncodedSet, idx: torch.Tensor, config: TrainConfig,
                      gen: torch.Generator) -> PromptEmbeddings:
    """Prompt embeddings for a batch with condition and style dropout applied."""
    n = idx.shape[0]
    full = enc.full.index(idx)
    caption = enc.caption_only.index(enc.caption_index[idx])
    empty = enc.empty.index([0] * n)
    u = torch.rand(n, generator=gen)
    use_empty = u < config.cond_dropout
    use_caption = (u >= config.cond_dropout) & (u < config.cond_dropout + config.style_dropout)

    def pick(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shape = (n,) + (1,) * (a.dim() - 1)
        out = torch.where(use_caption.view(shape), b, a)
        return torch.where(use_empty.view(shape), c, out)

    return PromptEmbeddings(pick(full.tokens, caption.tokens, empty.tokens),
                            pick(full.mask, caption.mask, empty.mask),
                            pick(full.pooled, caption.pooled, empty.pooled))


@dataclass
class BaseTrainState:
    unet: UNet2DConditionModel
    ema: UNet2DConditionModel
    step: int
    samples: int
    seconds: float
    cpu_seconds: float
    losses: list[float]
    config: TrainConfig | None = None  # as trained (a cool-down knows where it started)


LOSS_WINDOW = 20  # the loss curve records the mean of every 20 consecutive steps


def train_sigmas(config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Noise levels for one batch, ``[batch_size]`` in ``config.sigma_range``: logit-normal,
    mapped linearly onto the range (the whole path (0, 1) leaves the draw as it is)."""
    lo, hi = config.sigma_range
    u = torch.sigmoid(config.logit_normal_mean
                      + config.logit_normal_std * torch.randn(config.batch_size, generator=gen))
    return u if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * u


def optimizer_step(unet: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
                   loss: torch.Tensor, ema_decay: float) -> None:
    """One denoiser update from ``loss``: backward, gradient norm clipped to 1, the optimiser's
    step, then the EMA weights moved towards the new ones by ``1 - ema_decay``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), unet.parameters(), strict=True):
            p_ema.lerp_(p, 1.0 - ema_decay)


def train_denoiser(enc: EncodedSet, ckpt: Path, config: TrainConfig, minutes: float | None = None,
                   max_steps: int | None = None, device: str | None = None,
                   progress: bool = True, init_from: Path | None = None) -> BaseTrainState:
    """Train the latent UNet with the rectified-flow objective; resumable from ``ckpt``.

    Without a checkpoint, ``init_from`` (a model directory) starts from its UNet weights and
    continues its step, sample and CPU-time counters from its model card, so a run on a new
    machine extends the shipped model's learning curve (the optimizer state starts afresh).
    When ``config.unet_transformer_layers`` asks for more transformer blocks than that UNet
    has, it is grown first (:func:`easel.diffusion.growth.deepen_unet`: the added blocks start
    as the identity, so training starts from exactly the model it was given).
    """
    dev = pick_device(device)
    torch.manual_seed(config.seed)
    unet = UNet2DConditionModel(**unet_config(config.unet_width, config.unet_layers_per_block,
                                              config.cross_attention, config.unet_transformer_layers,
                                              config.unet_attention_16, config.self_condition,
                                              config.style_input, config.unet_head_dim)).to(dev)
    if enc.full.pooled.shape[-1] != (2 if config.style_input else 1) * EMBED_DIM:
        raise ValueError(f"style_input {config.style_input} needs encode_training_set(..., "
                         f"style_input={config.style_input}) (pooled width {enc.full.pooled.shape[-1]})")
    if config.mirror and enc.mirrored is None:
        raise ValueError("mirror needs the mirrored latents: encode_training_set(..., mirror=True)")
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate,
                            weight_decay=config.weight_decay, betas=(0.9, 0.99))
    step, samples, seconds, cpu_seconds, losses = 0, 0, 0.0, 0.0, []
    if ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=False)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, samples = state["step"], state["samples"]
        seconds, cpu_seconds = state["seconds"], state["cpu_seconds"]
        losses = state.get("losses", [])
        saved = state.get("config", {})
        if config.cooldown_steps and saved.get("cooldown_start") is not None:
            config = replace(config, cooldown_start=saved["cooldown_start"])  # resuming a cool-down
        config = replace(config, warmup_start=int(saved.get("warmup_start", 0)))
        log.info("resumed denoiser at step %d (%d samples, %.0f s)", step, samples, seconds)
    elif init_from is not None:
        from easel.diffusion.model_card import read_model_card

        start = UNet2DConditionModel.from_pretrained(str(init_from / "unet"))
        if config.unet_attention_16 and not has_attention_16(start.config):
            start = attend_at_16(start)  # the same function, with attention at 16×16
        if transformer_layers_of(start.config) != transformer_layers_of(unet.config):
            start = deepen_unet(start, transformer_layers_of(unet.config))  # the same function, deeper
        if config.self_condition and not has_self_condition(start.config):
            start = add_self_condition(start)  # the same function, reading its own estimate too
        if config.style_input and not has_style_input(start.config):
            start = add_style_input(start)  # the same function, hearing the style tag apart too
        start_head_dim = head_dim_of(start.config)
        if start_head_dim != config.unet_head_dim:
            # The same weights split into other heads: not the same function (the shipped model's
            # loss on its training pictures rises from 0.19 to 0.42 with heads 32 wide;
            # benchmarks/head_split.py), so training must win it back.
            log.warning("the attention heads of %s are split anew (%s → %s channels a head): training "
                        "starts from its weights, not from what it computed", init_from,
                        start_head_dim or "legacy", config.unet_head_dim or "legacy")
        unet.load_state_dict(start.state_dict())
        ema.load_state_dict(start.state_dict())
        trained = read_model_card(init_from).get("training", {})
        step, samples = int(trained.get("steps", 0)), int(trained.get("samples", 0))
        seconds, cpu_seconds = float(trained.get("seconds", 0.0)), float(trained.get("cpu_seconds", 0.0))
        losses = list(trained.get("loss_curve_mean_per_20_steps", []))
        config = replace(config, warmup_start=step)  # a fresh optimiser warms up again
        log.info("starting from %s at step %d", init_from, step)

    if config.cooldown_steps:
        decay_from = step if config.cooldown_start is None else config.cooldown_start
        config = replace(config, cooldown_start=decay_from)
        end = decay_from + config.cooldown_steps
        max_steps = end if max_steps is None else min(max_steps, end)

    def save() -> None:
        atomic_save({"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                     "step": step, "samples": samples, "seconds": seconds,
                     "cpu_seconds": cpu_seconds, "losses": losses,
                     "config": config.to_dict(), "easel_version": __version__}, ckpt)

    gen = torch.Generator().manual_seed(config.seed * 7919 + step)
    # Mirroring draws from a stream of its own, so that a run with --mirror sees the same items,
    # noise and noise levels as one without.
    mirror_gen = torch.Generator().manual_seed(config.seed * 7919 + step + 1)
    n_items = enc.latents.shape[0]
    weights = None
    if config.set_balance:
        if len(enc.set_ids) != n_items:
            raise ValueError("set balance needs the set of every training item")
        weights = set_balance_weights(enc.set_ids, config.set_balance)
        shares: Counter[str] = Counter()
        for s, w in zip(enc.set_ids, weights.tolist(), strict=True):
            shares[s] += w
        said = f"set balance {config.set_balance:g}, shares of the draws: " + ", ".join(
            f"{s} {v:.1%}" for s, v in sorted(shares.items()))
        if progress:
            tqdm.write(said)
        else:
            log.info(said)
    budget = (minutes * 60) if minutes is not None else math.inf
    started = time.monotonic()
    last_save = time.monotonic()
    bar = tqdm(desc="denoiser", unit="step", initial=step, disable=not progress, total=max_steps)
    window: list[float] = []
    unet.train()
    with stop_on_signal() as signals:
        while (signals.clock() - started < budget and not signals.stop
               and (max_steps is None or step < max_steps)):
            t0, c0 = signals.clock(), time.process_time()
            if weights is None:
                idx = torch.randint(0, n_items, (config.batch_size,), generator=gen)
            else:
                idx = torch.multinomial(weights, config.batch_size, replacement=True, generator=gen)
            latents = enc.latents[idx]
            if config.mirror:
                assert enc.mirrored is not None and enc.mirrorable is not None
                flip = (torch.rand(idx.shape[0], generator=mirror_gen) < config.mirror) & enc.mirrorable[idx]
                latents = torch.where(flip.view(-1, 1, 1, 1), enc.mirrored[idx], latents)
            latents = latents.to(dev)
            noise = torch.randn(latents.shape, generator=gen).to(dev)
            sigmas = train_sigmas(config, gen).to(dev)
            emb = _batch_embeddings(enc, idx, config, gen).to(dev)
            lr = config.lr_at(step)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = latent_velocity_loss(unet, latents, noise, sigmas, emb, gen)
            optimizer_step(unet, ema, opt, loss, min(config.ema_decay, (1 + step) / (10 + step)))
            step += 1
            samples += config.batch_size
            seconds += signals.clock() - t0
            cpu_seconds += time.process_time() - c0
            window.append(loss.item())
            if len(window) == LOSS_WINDOW:
                losses.append(round(sum(window) / LOSS_WINDOW, 5))
                window.clear()
            bar.update()
            if losses:
                bar.set_postfix(loss=f"{losses[-1]:.4f}", sps=f"{samples / max(seconds, 1e-6):.1f}")
            if time.monotonic() - last_save > config.checkpoint_minutes * 60:
                save()
                last_save = time.monotonic()
    bar.close()
    save()
    unet.eval()
    return BaseTrainState(unet.cpu(), ema.cpu(), step, samples, seconds, cpu_seconds, losses, config)


def new_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The sampler the embedded model ships with (Euler on the rectified-flow ODE)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def save_model_dir(out_dir: Path, unet: UNet2DConditionModel, vae: AutoencoderKL,
                   upscaler_dir: Path | None, card: dict[str, Any]) -> Path:
    """Write a complete model directory (pipeline + model card) atomically into ``out_dir``.

    The upscaler is copied from ``upscaler_dir`` (a saved ``EaselUpscaler``) when given.
    """
    import shutil

    # EaselPipeline and EaselUpscaler are imported with this module, not here: a run of hours
    # must not meet, at its last step, code changed on disk since it started (session 26 lost a
    # finished run's export so; its checkpoint let the same command write it again).
    upscaler = None
    if upscaler_dir is not None and (upscaler_dir / "config.json").exists():
        upscaler = EaselUpscaler.from_pretrained(str(upscaler_dir))
    pipe = EaselPipeline(unet=unet, vae=vae, scheduler=new_scheduler(), upscaler=upscaler)

    def fill(staging: Path) -> None:
        for extra in ("README.md", "training.json"):
            if upscaler_dir is not None and (upscaler_dir / extra).exists():
                shutil.copy2(upscaler_dir / extra, staging / "upscaler" / extra)
        if card.get("autoencoder"):  # so that `--init-from` this directory finds it again
            record = json.dumps(card["autoencoder"], indent=2) + "\n"
            (staging / "vae" / AUTOENCODER_RECORD).write_text(record)

    return write_pipeline_dir(out_dir, pipe, card, fill)


def write_pipeline_dir(out_dir: Path, pipe: Any, card: dict[str, Any],
                       fill: Callable[[Path], None]) -> Path:
    """Save ``pipe`` and its ``card`` as ``out_dir`` atomically: into a staging folder beside
    it (``fill(staging)`` adds the records diffusers does not save), then renamed into place,
    so a crash leaves the old directory or the new one, never half of one."""
    import tempfile

    from easel.diffusion.model_card import write_model_card

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as tmp:
        staging = Path(tmp) / "model"
        pipe.save_pretrained(str(staging), safe_serialization=True)
        fill(staging)
        write_model_card(staging, card)
        old = Path(tmp) / "old"
        if out_dir.exists():
            out_dir.rename(old)
        staging.rename(out_dir)
    return out_dir


def export_base_model(out: Path, state: BaseTrainState, vae: AutoencoderKL, data: TrainingSet,
                      config: TrainConfig, upscaler_dir: Path | None = None,
                      consent_events: int = 0, device: str | None = None,
                      vae_val_psnr: float | None = None,
                      evaluation: dict[str, Any] | None = None,
                      extra: dict[str, Any] | None = None,
                      autoencoder: dict[str, Any] | None = None) -> Path:
    """Write the EMA weights as a model directory with its model card.

    ``autoencoder``: the autoencoder's training record (``read_autoencoder_record``), which the
    card repeats so that it names the data of every trained part.
    """
    from easel.diffusion.model_card import OBJECTIVE_TEXT, sources_from_rows
    from easel.diffusion.pipeline import SHIPPED_MODEL_DIR

    if autoencoder is not None and vae_val_psnr is None:
        vae_val_psnr = autoencoder.get("val_psnr")
    if upscaler_dir is None and (SHIPPED_MODEL_DIR / "upscaler" / "config.json").exists():
        upscaler_dir = SHIPPED_MODEL_DIR / "upscaler"
    model_id = f"easel-embedded-{__version__}-s{state.step}-w{weights_tag(state.ema)}"
    if autoencoder and decoder_steps(autoencoder):  # e.g. trained on from a model whose decoder
        model_id += f"-d{decoder_steps(autoencoder)}"  # was fine-tuned: ids name the decoder too
    card: dict[str, Any] = {
        "model_id": model_id,
        "summary": "Easel's embedded text-to-image model: trained only on consented, openly "
                   "licensed emoji sets, small enough to run on a laptop CPU.",
        "easel_version": __version__,
        "dataset_id": data.dataset_id,
        "manifest": str(data.manifest_path),
        "consent": consent_text(consent_events),
        "sources": sources_from_rows(data.rows),
        "objective": OBJECTIVE_TEXT,
        "training": {
            "items": len(data.item_ids),
            "held_out_sets": list(config.held_out_sets),
            "steps": state.step, "samples": state.samples,
            "seconds": round(state.seconds, 1), "cpu_seconds": round(state.cpu_seconds, 1),
            "device": str(pick_device(device)),
            "final_loss": state.losses[-1] if state.losses else None,
            "loss_curve_mean_per_20_steps": state.losses[-300:],
            "unet_parameters": sum(p.numel() for p in state.ema.parameters()),
            "vae_parameters": sum(p.numel() for p in vae.parameters()),
            "vae_val_psnr": vae_val_psnr,
            "config": config.to_dict(),
        },
        "autoencoder": autoencoder,
        "evaluation": evaluation or {},
        "limits": "Trained for minutes to hours on 2 CPU cores; outputs are small emoji-like "
                  "pictures. The Streamline set is held out for style personalisation.",
    }
    card.update(extra or {})
    return save_model_dir(out, state.ema, vae, upscaler_dir, card)


TAG_LENGTH = 8
"""Hex digits of a weights tag (``weights_tag``); ``with_id_part`` recognises tags of this length."""


def weights_tag(module: torch.nn.Module) -> str:
    """``TAG_LENGTH`` hex digits naming ``module``'s weights: the start of the sha256 of its state dict
    (names, shapes, dtypes and bytes, in order).

    Exports put it in the model id (``…-s<steps>-w<tag>``), so two exports at the same step count
    (arms with other options, a run retrained on a rebuilt dataset after a withdrawal) have two
    ids, and the registry records each, with its own dataset and path.
    """
    return state_digest(module)[:TAG_LENGTH]


def state_digest(module: torch.nn.Module) -> str:
    """The sha256 (hex) of ``module``'s state dict: names, shapes, dtypes and bytes, in order
    (bfloat16 too). ``weights_tag`` is its start; the training latents' cache key hashes the
    autoencoder by it."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{t.dtype}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def decoder_steps(record: dict[str, Any]) -> int:
    """Steps of decoder-only fine-tuning behind an autoencoder record, over every round (each
    round's record keeps the one it started from under ``fine_tuned.previous``)."""
    total = 0
    while record and (record.get("fine_tuned") or {}).get("decoder_only"):
        total += int(record["steps"])
        record = record["fine_tuned"].get("previous") or {}
    return total


def check_same_latent_space(current: AutoencoderKL, new: AutoencoderKL, new_name: str,
                            model_name: str) -> None:
    """Refuse (``BadInput``) unless ``new`` encodes exactly as ``current``: the same config
    (scaling factor included) and the same encoder weights."""
    from easel.errors import BadInput

    def shape(config: Any) -> dict[str, Any]:  # without bookkeeping such as _name_or_path
        return {k: v for k, v in dict(config).items() if not k.startswith("_")}

    if shape(current.config) != shape(new.config):
        raise BadInput(f"the autoencoder in {new_name} is not configured like {model_name}'s",
                       hint="fine-tune the model's own: --init-from MODEL --decoder-only")
    old_state, new_state = current.state_dict(), new.state_dict()
    changed = [k for k in old_state if k.startswith(("encoder.", "quant_conv."))
               and not torch.equal(old_state[k], new_state[k])]
    if changed:
        raise BadInput(f"the autoencoder in {new_name} has another encoder ({len(changed)} tensors "
                       "differ): the model's denoiser was trained on its own encoder's latents",
                       hint="train with --init-from MODEL --decoder-only")


def install_decoder(model_dir: Path, vae_dir: Path) -> str:
    """Put the autoencoder in ``vae_dir`` into the model directory ``model_dir`` in place of
    its own, when only its decoder differs (``easel train autoencoder --decoder-only``).

    The encoder must be the model's, weight for weight: the denoiser was trained on its
    latents. The card's autoencoder record and PSNR are replaced and the model id gains
    ``-d<decoder steps>`` (all rounds, ``decoder_steps``; so generation logs tell the two
    apart); returns the new id.
    """
    import shutil
    import tempfile

    from easel.diffusion.model_card import plain_model_id, read_model_card, write_model_card
    from easel.errors import BadInput

    current = AutoencoderKL.from_pretrained(str(model_dir / "vae"))
    new = AutoencoderKL.from_pretrained(str(vae_dir))
    check_same_latent_space(current, new, str(vae_dir), str(model_dir))
    record = read_autoencoder_record(vae_dir)
    card = read_model_card(model_dir)
    if record is None or not card:
        raise BadInput("both the model and the autoencoder need their training records",
                       hint="use directories written by `easel train base` and `easel train autoencoder`")
    card["autoencoder"] = record
    card["training"]["vae_val_psnr"] = record.get("val_psnr")
    card["model_id"] = f"{plain_model_id(str(card['model_id']))}-d{decoder_steps(record)}"
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".vae-") as tmp:
        staging = Path(tmp) / "vae"
        shutil.copytree(vae_dir, staging)
        old = Path(tmp) / "old"
        (model_dir / "vae").rename(old)
        staging.rename(model_dir / "vae")
    write_model_card(model_dir, card)
    return str(card["model_id"])


def consent_text(consent_events: int) -> str:
    """What a model card says about the consent check behind a trained part."""
    if not consent_events:
        return "not checked against a registry"
    return (f"every item checked with the registry policy for train_base before training "
            f"({consent_events} items with consent-event ids)")


def with_id_part(model_id: str, suffix: str, steps: int, tag: str) -> str:
    """``model_id`` naming one more part: ``…-s32174-d4429`` with suffix ``-h``, 2000 steps and
    the part's ``weights_tag`` 0a1b2c3d is ``…-s32174-h2000w0a1b2c3d-d4429``. The tag tells apart
    two parts trained for as many steps (another seed, another dataset), which would otherwise
    share one id. A part of that kind already in the id is replaced (a new expert or guide
    replaces one), and the decoder's ``-d<steps>`` stays last."""
    from easel.diffusion.model_card import DECODER_SUFFIX, plain_model_id

    decoder = DECODER_SUFFIX.search(model_id)
    stem = re.sub(rf"{re.escape(suffix)}\d+(?:w[0-9a-f]{{{TAG_LENGTH}}})?$", "", plain_model_id(model_id))
    return f"{stem}{suffix}{steps}w{tag}" + (decoder.group(0) if decoder else "")


CARRIED_RECORDS = (("upscaler", "README.md"), ("upscaler", "training.json"), ("vae", AUTOENCODER_RECORD))
"""Files of a model directory that ``save_pretrained`` does not write, kept by exports built on it."""


def carry_records(base_dir: Path) -> Callable[[Path], None]:
    """A ``fill`` for ``write_pipeline_dir`` that puts ``base_dir``'s ``CARRIED_RECORDS`` into the
    staging folder. They are read now, so the export may replace ``base_dir`` itself."""
    saved = {(part, name): (base_dir / part / name).read_bytes() for part, name in CARRIED_RECORDS
             if (base_dir / part / name).exists()}

    def fill(staging: Path) -> None:
        for (part, name), data in saved.items():
            (staging / part / name).write_bytes(data)

    return fill


def base_for_part(base_dir: Path) -> tuple[Any, dict[str, Any]]:
    """``base_dir``'s pipeline (on the CPU) and model card, for an export that adds one part to
    that model (an expert, a style guide, a palette); ``BadInput`` when it has no card."""
    from easel.diffusion.model_card import read_model_card
    from easel.diffusion.pipeline import load_pipeline
    from easel.errors import BadInput

    card = read_model_card(base_dir)
    if not card:
        raise BadInput(f"{base_dir} has no model card", hint="give a directory written by `easel train base`")
    return load_pipeline(base_dir, device="cpu"), card


def write_with_part(out: Path, base_dir: Path, pipe: Any, card: dict[str, Any], key: str,
                    record: dict[str, Any], suffix: str, count: int, part: torch.nn.Module) -> Path:
    """Write ``pipe`` (``base_dir``'s model with ``part`` added) as ``out``: the card gains
    ``record`` under ``key``, the model id gains ``<suffix><count>w<part's weights tag>``
    (``with_id_part``), and the base model's evaluation is cleared (its figures do not describe
    the new model). ``out`` may be ``base_dir`` itself: the directory is replaced atomically."""
    card["model_id"] = with_id_part(str(card["model_id"]), suffix, count, weights_tag(part))
    card[key] = record
    card["evaluation"] = {}
    return write_pipeline_dir(out, pipe, card, carry_records(base_dir))


EXPERT_SUFFIX = "-h"
"""Part of a model id whose pipeline has a high-noise expert: ``…-s32174-h2700w0a1b2c3d-d4429`` is
the denoiser of step 32,174, an expert trained 2,700 steps beside it (weights 0a1b2c3d), and
decoder d4429."""


def export_expert_model(out: Path, base_dir: Path, state: BaseTrainState, config: TrainConfig,
                        dataset_id: str, consent_events: int = 0, device: str | None = None) -> Path:
    """Write ``base_dir``'s model with ``state``'s EMA weights as its high-noise expert.

    The base model's UNet, autoencoder, upscaler and card stay as they are; the expert
    (``unet_high_noise``) predicts above ``config.sigma_range[0]``, the range it was trained on
    (``easel train base --init-from BASE --sigma-range LO,1``). The card gains a
    ``high_noise_expert`` record with the expert's own steps, samples and CPU time (its counters
    less the base model's, which it started from), and the model id gains
    ``-h<expert steps>w<its weights tag>``.
    """
    from easel.diffusion.pipeline import check_expert
    from easel.errors import BadInput

    lo, hi = config.sigma_range
    if hi != 1.0:  # check_expert below refuses a LO outside (0, 1)
        raise BadInput(f"a high-noise expert is trained on LO,1, not {lo:g},{hi:g}")
    pipe, card = base_for_part(base_dir)
    base = card["training"]
    own = {"steps": state.step - int(base["steps"]), "samples": state.samples - int(base["samples"]),
           "seconds": round(state.seconds - float(base["seconds"]), 1),
           "cpu_seconds": round(state.cpu_seconds - float(base["cpu_seconds"]), 1)}
    expert = state.ema
    check_expert(pipe.unet, expert, lo)
    pipe.register_modules(unet_high_noise=expert)
    pipe.register_to_config(high_noise_sigma=float(lo))
    record = {
        "sigma": float(lo), "from_model": str(card["model_id"]), "dataset_id": dataset_id,
        "consent": consent_text(consent_events),
        **own, "device": str(pick_device(device)),
        "final_loss": state.losses[-1] if state.losses else None,
        "unet_parameters": sum(p.numel() for p in expert.parameters()),
        "config": config.to_dict(),
    }
    return write_with_part(out, base_dir, pipe, card, "high_noise_expert", record, EXPERT_SUFFIX,
                           int(own["steps"]), expert)
