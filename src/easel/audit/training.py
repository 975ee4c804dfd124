"""Training the descriptor encoder on a corpus manifest: copy, style and content objectives.

Each step takes a batch of icons, makes two strongly augmented views (``augment.train_view``)
and optimises, summed:

- copy: NT-Xent between the two views of each icon against every other view in the batch
  (instance discrimination, SSCD's contrastive term), temperature ``COPY_TEMPERATURE``;
- style: supervised contrastive loss over all views with the icon set as label (CSD-like);
- content: symmetric CLIP loss between each view and the frozen MiniLM embedding of its caption.

Checkpoints (model, optimiser, step, RNG) go to a folder outside the work tree every
``checkpoint_every`` steps and on exit; ``train`` resumes from the latest one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from easel.audit.augment import text_bank, train_view
from easel.audit.encoder import DescriptorEncoder

log = logging.getLogger(__name__)

COPY_TEMPERATURE = 0.05
STYLE_TEMPERATURE = 0.1
CONTENT_TEMPERATURE = 0.05


@dataclass
class TrainConfig:
    """Settings of one training run (saved with the checkpoint and the model card)."""

    manifest: str
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_steps: int = 3000
    minutes: float = 25.0
    style_weight: float = 0.5
    content_weight: float = 0.5
    checkpoint_every: int = 100
    seed: int = 0
    image_size: int = 64


@dataclass
class SplitData:
    """One split of a manifest in memory: pictures uint8 ``[N x S x S x 3]``, set labels ``[N]``,
    set names, captions, item ids."""

    pixels: np.ndarray
    labels: np.ndarray
    sets: list[str]
    captions: list[str]
    item_ids: list[str]


def load_split(manifest: Path, split: str, size: int, cache_dir: Path | None = None) -> SplitData:
    """Read one split's pictures (composited on white, ``size``² px) and labels; cached as .npz."""
    from PIL import Image

    from easel.audit.encoder import to_square_rgb
    from easel.corpus.manifest import load_manifest

    table = load_manifest(manifest)
    root = manifest.parent if manifest.suffix == ".parquet" else manifest
    rows = [r for r in table.to_pylist() if r["split"] == split]
    sets = sorted({r["set_id"] for r in table.to_pylist()})
    cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = f"{table.schema.metadata.get(b'dataset_id', b'x').decode()[:16]}-{split}-{size}.npz"
        cache = cache_dir / key
        if cache.exists():
            data = np.load(cache)
            return SplitData(data["pixels"], data["labels"], sets,
                             [r["caption"] for r in rows], [r["item_id"] for r in rows])
    pixels = np.stack([to_square_rgb(Image.open(root / r["png_path"]), size) for r in rows])
    labels = np.array([sets.index(r["set_id"]) for r in rows], dtype=np.int64)
    if cache is not None:
        np.savez(cache, pixels=pixels, labels=labels)
    return SplitData(pixels, labels, sets, [r["caption"] for r in rows], [r["item_id"] for r in rows])


def caption_embeddings(captions: list[str], cache: Path | None = None) -> torch.Tensor:
    """Frozen MiniLM pooled embeddings ``[N x 384]`` of ``captions`` (cached as .npy)."""
    if cache is not None and cache.exists():
        array = np.load(cache)
        if len(array) == len(captions):
            return torch.from_numpy(array)
    from easel.diffusion.text_encoder import get_text_encoder

    pooled = get_text_encoder().encode(captions).pooled.float()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, pooled.numpy())
    return pooled


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR loss for paired L2-normalised views ``a``, ``b`` ``[B x D]``."""
    z = torch.cat([a, b])
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def sup_con(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al.) of L2-normalised ``z`` ``[N x D]``."""
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    count = positive.sum(1).clamp(min=1)
    return -(log_prob.masked_fill(~positive, 0).sum(1) / count).mean()


def clip_loss(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between image and text embeddings ``[B x D]`` (pairs on the diagonal)."""
    logits = image @ text.T / temperature
    target = torch.arange(len(image))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train(config: TrainConfig, checkpoint_dir: Path, out_dir: Path | None = None,
          progress: bool = True) -> DescriptorEncoder:
    """Train (resuming from ``checkpoint_dir``) and optionally ``save_pretrained`` to ``out_dir``.

    Stops after ``max_steps`` steps or ``minutes`` of wall time in this call, whichever first.
    """
    from tqdm import tqdm

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    data = load_split(Path(config.manifest), "train", config.image_size, checkpoint_dir / "cache")
    text = caption_embeddings(data.captions, checkpoint_dir / "cache" / "train-captions.npy")
    model = DescriptorEncoder(image_size=config.image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    step = 0
    ckpt = checkpoint_dir / "latest.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = int(state["step"])
        log.info("resumed from %s at step %d", ckpt, step)
    texts = text_bank(config.image_size)
    pixels = torch.from_numpy(data.pixels)
    labels = torch.from_numpy(data.labels)
    history: list[dict[str, float]] = []

    def save() -> None:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "step": step, "config": asdict(config)},
                   checkpoint_dir / "latest.tmp")
        (checkpoint_dir / "latest.tmp").replace(ckpt)

    def lr_at(s: int) -> float:
        warm = min(1.0, (s + 1) / max(1, config.max_steps // 20))
        cosine = 0.5 * (1 + np.cos(np.pi * min(s, config.max_steps) / config.max_steps))
        return float(config.lr * warm * cosine)

    start = time.monotonic()
    bar = tqdm(total=config.max_steps, initial=step, desc="descriptors", unit="step", disable=not progress)
    model.train()
    while step < config.max_steps and (time.monotonic() - start) < config.minutes * 60:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(0, len(pixels), (config.batch_size,), generator=generator)
        x = pixels[idx].permute(0, 3, 1, 2).float().div_(255.0)
        views = torch.cat([train_view(x, texts, generator), train_view(x, texts, generator)])
        out = model(views)
        n = config.batch_size
        loss_copy = nt_xent(out.copy[:n], out.copy[n:], COPY_TEMPERATURE)
        loss_style = sup_con(out.style, labels[idx].repeat(2), STYLE_TEMPERATURE)
        t = text[idx]
        loss_content = 0.5 * (clip_loss(out.content[:n], t, CONTENT_TEMPERATURE)
                              + clip_loss(out.content[n:], t, CONTENT_TEMPERATURE))
        loss = loss_copy + config.style_weight * loss_style + config.content_weight * loss_content
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        record = {"step": step, "loss": loss.item(), "copy": loss_copy.item(),
                  "style": loss_style.item(), "content": loss_content.item()}
        history.append(record)
        bar.update(1)
        bar.set_postfix(copy=f"{record['copy']:.3f}", style=f"{record['style']:.3f}",
                        content=f"{record['content']:.3f}")
        if step % config.checkpoint_every == 0:
            save()
            with (checkpoint_dir / "history.jsonl").open("a") as fh:
                for r in history:
                    fh.write(json.dumps(r) + "\n")
            history.clear()
    bar.close()
    save()
    with (checkpoint_dir / "history.jsonl").open("a") as fh:
        for r in history:
            fh.write(json.dumps(r) + "\n")
    model.eval()
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
        (out_dir / "training.json").write_text(json.dumps(
            {"config": asdict(config), "steps": step, "sets": data.sets,
             "train_items": len(data.item_ids)}, indent=2))
    return model
