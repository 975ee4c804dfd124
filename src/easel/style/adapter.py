"""Personal style adapters: LoRA (peft) on the base UNet's attention projections.

Training adds a ``LoraConfig`` adapter through diffusers' PEFT integration
(``unet.add_adapter``), freezes everything else, and fits the adapter with the base model's
own rectified-flow loss (``easel.diffusion.pipeline.latent_velocity_loss``) on the artist's
works, captioned "<title>, <style tag>". The adapter directory holds:

- ``adapter_model.safetensors``: ``get_peft_model_state_dict`` of the UNet (metadata: the base
  model's id and UNet hash, the rank);
- ``style_manifest.json``: items (work id, title, registered sha256, sha256 of the pixels
  trained on, the consent event that allowed it), the base model id and UNet sha256, the
  artist's attribution line, the training config, time and loss, and the adapter's sha256.

``apply_style`` loads it with ``unet.load_lora_adapter`` and refuses a base model other than
the one it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from easel.diffusion.pipeline import EaselPipeline

from easel.corpus.sources import sha256_file
from easel.errors import BadInput, EaselError

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "style_manifest.json"
ADAPTER_NAME = "easel_style"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The UNet's attention projections (self- and cross-attention) that the adapter changes."""


@dataclass
class StyleTrainConfig:
    """How a style adapter is trained (saved in its manifest)."""

    rank: int = 8  # lora_alpha = rank, so the adapter's scale is 1
    steps: int = 600
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    cond_dropout: float = 0.1  # prompt replaced by "" so guidance keeps working
    flip: bool = True  # train on mirrored copies too (style, not layout)
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    seed: int = 0
    threads: int = 1


def base_identity(model_dir: Path) -> dict[str, str]:
    """The base model an adapter belongs to: its card's model id and its UNet weights' sha256."""
    from easel.diffusion.model_card import read_model_card

    weights = model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    if not weights.exists():
        raise BadInput(f"{model_dir} has no UNet weights ({weights.name}): personal styles need an "
                       "Easel model directory")
    card = read_model_card(model_dir)
    return {"model_id": str(card.get("model_id", model_dir.name)), "unet_sha256": sha256_file(weights),
            "path": str(model_dir)}


def pixels_of(picture: Image.Image, size: int) -> torch.Tensor:
    """A work's picture as uint8 ``[3 x size x size]`` RGB, composited on white."""
    import numpy as np
    import torch
    from PIL import Image

    from easel.images import rgb_on_white

    image = rgb_on_white(picture)
    rgb = image.resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


@dataclass
class TrainedAdapter:
    """The adapter's weights and what the training measured."""

    state: dict[str, Any]
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss per 20 steps


def train_adapter(pipe: EaselPipeline, images: torch.Tensor, prompts: list[str],
                  config: StyleTrainConfig, progress: bool = True) -> TrainedAdapter:
    """Fit a LoRA adapter on ``pipe.unet`` to ``images`` (uint8 ``[N x 3 x H x W]``, H = the
    autoencoder's size) captioned by ``prompts``. The UNet keeps the adapter afterwards."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from tqdm import tqdm

    from easel.diffusion.configs import has_style_input
    from easel.diffusion.data import to_unit
    from easel.diffusion.pipeline import latent_velocity_loss
    from easel.diffusion.text_encoder import (
        PromptEmbeddings,
        get_text_encoder,
        style_vectors,
        with_style_vectors,
    )

    if images.shape[0] != len(prompts) or not prompts:
        raise BadInput(f"{images.shape[0]} images for {len(prompts)} prompts")
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    dev = pipe.device
    unet, vae = pipe.unet, pipe.vae
    with torch.no_grad():
        x = to_unit(images).to(dev, vae.dtype)
        if config.flip:
            x = torch.cat([x, x.flip(-1)])
        latents = torch.cat([vae.encode(x[i:i + 64]).latent_dist.mode() for i in range(0, len(x), 64)])
        latents = (latents * vae.config.scaling_factor).float()
    encoder = get_text_encoder("cpu")
    texts = prompts * (2 if config.flip else 1)
    full = encoder.encode(texts)
    empty = encoder.encode([""])
    if has_style_input(unet.config):  # the base model reads each prompt's style tag apart too
        full = with_style_vectors(full, style_vectors(texts))
        empty = with_style_vectors(empty, style_vectors([""]))
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.rank, init_lora_weights="gaussian",
                                target_modules=list(LORA_TARGETS)), adapter_name=ADAPTER_NAME)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    gen = torch.Generator().manual_seed(config.seed)
    n = latents.shape[0]
    losses: list[float] = []
    window: list[float] = []
    started = time.monotonic()
    unet.train()
    bar = tqdm(range(config.steps), desc="style adapter", unit="step", disable=not progress)
    for step in bar:
        idx = torch.randint(0, n, (config.batch_size,), generator=gen)
        batch = latents[idx].to(dev)
        noise = torch.randn(batch.shape, generator=gen).to(dev)
        sigmas = torch.sigmoid(config.logit_normal_mean + config.logit_normal_std
                               * torch.randn(config.batch_size, generator=gen)).to(dev)
        drop = torch.rand(config.batch_size, generator=gen) < config.cond_dropout
        cond = full.index(idx)
        uncond = empty.index([0] * config.batch_size)
        emb = PromptEmbeddings(*(torch.where(drop.view((-1,) + (1,) * (a.dim() - 1)), b, a)
                                 for a, b in ((cond.tokens, uncond.tokens), (cond.mask, uncond.mask),
                                              (cond.pooled, uncond.pooled)))).to(dev)
        for group in opt.param_groups:
            group["lr"] = config.learning_rate * min(1.0, (step + 1) / config.warmup_steps)
        loss = latent_velocity_loss(unet, batch, noise, sigmas, emb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        value = float(loss.item())
        if not math.isfinite(value):
            raise EaselError(f"style training diverged at step {step} (loss {value})",
                             hint="lower the learning rate")
        window.append(value)
        if len(window) == 20:
            losses.append(round(sum(window) / 20, 5))
            window.clear()
        bar.set_postfix(loss=f"{value:.4f}")
    unet.eval()
    state = {k: v.detach().to("cpu", torch.float32).contiguous()
             for k, v in get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME).items()}
    return TrainedAdapter(state, config.steps, time.monotonic() - started, losses)


def write_adapter(directory: Path, trained: TrainedAdapter, manifest: dict[str, Any]) -> str:
    """Write the adapter weights and its manifest into ``directory`` (made fresh); returns the
    manifest's sha256. ``manifest`` gets the adapter's sha256 and training figures added."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=False)
    base = manifest["base_model"]
    save_file(trained.state, str(directory / ADAPTER_FILE),
              metadata={"base_model_id": base["model_id"], "base_unet_sha256": base["unet_sha256"],
                        "rank": str(manifest["config"]["rank"]), "style_tag": manifest["style_tag"]})
    manifest = dict(manifest, adapter_sha256=sha256_file(directory / ADAPTER_FILE),
                    training={"steps": trained.steps, "seconds": round(trained.seconds, 1),
                              "loss_curve_mean_per_20_steps": trained.losses})
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (directory / MANIFEST_FILE).write_bytes(body)
    return hashlib.sha256(body).hexdigest()


def read_manifest(directory: Path) -> dict[str, Any]:
    """The adapter directory's manifest (``NotFound``-like ``BadInput`` when missing)."""
    path = directory / MANIFEST_FILE
    if not path.exists():
        raise BadInput(f"{directory} is not a style adapter directory (no {MANIFEST_FILE})")
    return dict(json.loads(path.read_text()))


def apply_style(pipe: EaselPipeline, adapter_dir: Path, model_dir: Path) -> dict[str, Any]:
    """Load the adapter in ``adapter_dir`` onto ``pipe`` (loaded from ``model_dir``).

    Refuses (``BadInput``) when the adapter was trained on another base model, or when its
    weights do not match the sha256 its manifest recorded. Returns the manifest."""
    from safetensors.torch import load_file

    manifest = read_manifest(adapter_dir)
    want = manifest["base_model"]
    have = base_identity(model_dir)
    if have["unet_sha256"] != want["unet_sha256"]:
        raise BadInput(f"the style was trained on base model {want['model_id']} (UNet "
                       f"{want['unet_sha256'][:12]}…) but this model is {have['model_id']} (UNet "
                       f"{have['unet_sha256'][:12]}…)",
                       hint="generate with the base model the style was trained on, or retrain the style")
    weights = adapter_dir / ADAPTER_FILE
    if sha256_file(weights) != manifest.get("adapter_sha256"):
        raise BadInput(f"{weights} does not match the sha256 in its manifest (changed after training)")
    pipe.unet.load_lora_adapter(load_file(str(weights)), adapter_name=ADAPTER_NAME, prefix=None)
    return manifest


def config_dict(config: StyleTrainConfig) -> dict[str, Any]:
    return asdict(config)
