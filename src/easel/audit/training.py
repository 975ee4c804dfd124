"""Training the descriptor encoder on a corpus manifest: copy, style and content objectives.

Each step takes a batch of icons — half drawn evenly over the sets, half their partners: the
same caption drawn by another set (the hardest negatives for copy, and content-matched
negatives for style) — and makes two views of each: a strong one (``augment.train_view``, the
query side of a copy search) and a mild one (``augment.mild_view``, the registered original).
It optimises, summed:

- copy: InfoNCE of each view against its partner view, with every other view of the batch and a
  memory of the last ``memory`` mild views' descriptors as negatives (instance discrimination,
  SSCD's contrastive term with a cross-batch memory), temperature ``COPY_TEMPERATURE``, plus
  ``koleo_weight`` × SSCD's KoLeo entropy term on the mild views (spreads unrelated icons
  apart, which is what a threshold at a false-positive rate of 1e-4 needs);
- style: supervised contrastive loss on the mild views (their colours kept) with the icon set as
  label, against the batch and a labelled memory (CSD-like);
- content: symmetric CLIP loss between each view and the frozen MiniLM embedding of its caption.

The learning rate follows a warm-up and cosine schedule over ``max_steps`` or ``minutes`` of
training, whichever ends first, so a run cut short by its time budget still anneals.

Checkpoints (model, optimiser, step, RNG) go to a folder outside the work tree every
``checkpoint_every`` steps and on exit; ``train`` resumes from the latest one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from easel.audit.augment import mild_view, text_bank, train_view
from easel.audit.encoder import DescriptorEncoder
from easel.errors import Interrupted
from easel.runs import RunSignals, atomic_save, stop_on_signal

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
    memory: int = 4096
    """Past mild-view descriptors kept as extra negatives (copy) and labelled candidates (style)."""
    koleo_weight: float = 10.0
    """SSCD weighs KoLeo 30 against InfoNCE at temperature 0.05; 10 here (not tuned)."""
    partner_fraction: float = 0.5
    """Share of the batch drawn as same-caption partners from another set."""
    init_from: str | None = None
    """An encoder folder to start from (weights only; a fresh optimiser and schedule)."""
    style_head_steps: int = 0
    """After training, re-fit the style head on the frozen trunk for this many steps (0: no)."""
    style_input: str = "mid"
    """The style head's trunk statistics: ``mid`` (encoder v3) or ``all`` (see ``DescriptorEncoder``)."""
    style_colour_levels: int = 0
    """Levels per RGB channel of the style head's colour histogram (0: none)."""
    style_hidden: int = 0
    """Hidden width of the style head (0: the trunk's last width)."""


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


def info_nce(a: torch.Tensor, b: torch.Tensor, ids: torch.Tensor, bank: torch.Tensor,
             bank_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE for paired L2-normalised views ``a``, ``b`` ``[B x D]`` of icons ``ids``: each view's
    positive is its partner; negatives are every other view and the ``bank`` rows ``[M x D]``,
    except views of the same icon (``ids``/``bank_ids`` equal), which are masked out."""
    z = torch.cat([a, b])
    zid = torch.cat([ids, ids])
    candidates = torch.cat([z, bank])
    cid = torch.cat([zid, bank_ids])
    sim = z @ candidates.T / temperature
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    same = zid[:, None] == cid[None, :]
    same[torch.arange(2 * n), target] = False
    return F.cross_entropy(sim.masked_fill(same, float("-inf")), target)


def koleo(z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """SSCD's KoLeo entropy term: minus the mean log distance of each row of ``z`` to its nearest
    other icon (rows of the same icon ignored)."""
    distance = torch.cdist(z, z)
    distance = distance.masked_fill(ids[:, None] == ids[None, :], float("inf"))
    return -torch.log(distance.min(dim=1).values + 1e-8).mean()


def sup_con_bank(z: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Supervised contrastive loss of ``z`` ``[N x D]`` against ``z`` and a labelled ``bank``."""
    candidates = torch.cat([z, bank])
    cl = torch.cat([labels, bank_labels])
    sim = z @ candidates.T / temperature
    eye = torch.zeros_like(sim, dtype=torch.bool)
    eye[torch.arange(len(z)), torch.arange(len(z))] = True
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (labels[:, None] == cl[None, :]) & ~eye
    count = positive.sum(1).clamp(min=1)
    return -(log_prob.masked_fill(~positive, 0).sum(1) / count).mean()


class BatchSampler:
    """Half of each batch evenly over the sets, the other half partners with the same caption
    from another set (a random icon where the caption is drawn by one set only)."""

    def __init__(self, labels: np.ndarray, captions: list[str], partner_fraction: float) -> None:
        self.by_set = [np.flatnonzero(labels == k) for k in range(int(labels.max()) + 1)]
        groups: dict[str, list[int]] = {}
        for i, caption in enumerate(captions):
            groups.setdefault(caption, []).append(i)
        self.labels = labels
        self.groups = [np.array(groups[c]) for c in captions]
        self.partner_fraction = partner_fraction

    def __call__(self, size: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of one batch of ``size`` icons."""
        partners = int(size * self.partner_fraction)
        base = size - partners
        r = torch.rand(base, 2, generator=generator).numpy()
        sets = (r[:, 0] * len(self.by_set)).astype(int)
        first = np.array([self.by_set[k][int(u * len(self.by_set[k]))] for k, u in zip(sets, r[:, 1],
                                                                                       strict=True)])
        extra = torch.rand(partners, 2, generator=generator).numpy()
        second = []
        for i, (u, v) in zip(first[:partners], extra, strict=True):
            group = self.groups[i]
            other = group[self.labels[group] != self.labels[i]]
            pool = other if len(other) else self.by_set[int(v * len(self.by_set))]
            second.append(pool[int(u * len(pool))])
        return torch.from_numpy(np.concatenate([first, np.array(second, dtype=np.int64)]).astype(np.int64))


def train(config: TrainConfig, checkpoint_dir: Path, out_dir: Path | None = None,
          progress: bool = True) -> DescriptorEncoder:
    """Train (resuming from ``checkpoint_dir``) and optionally ``save_pretrained`` to ``out_dir``.

    Stops after ``max_steps`` steps or ``minutes`` of training wall time (summed over resumed
    calls), whichever first; the learning-rate schedule ends with whichever comes first.
    """
    from tqdm import tqdm

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    data = load_split(Path(config.manifest), "train", config.image_size, checkpoint_dir / "cache")
    text = caption_embeddings(data.captions, checkpoint_dir / "cache" / "train-captions.npy")
    if config.init_from:
        model = with_style_head(DescriptorEncoder.from_pretrained(config.init_from), config.style_input,
                                config.style_colour_levels, config.style_hidden)
    else:
        model = DescriptorEncoder(image_size=config.image_size, style_input=config.style_input,
                                  style_colour_levels=config.style_colour_levels,
                                  style_hidden=config.style_hidden)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    cfg = model.config
    copy_bank = torch.zeros(0, int(cfg.copy_dim))
    copy_ids = torch.zeros(0, dtype=torch.long)
    style_bank = torch.zeros(0, int(cfg.style_dim))
    style_labels = torch.zeros(0, dtype=torch.long)
    step, elapsed_before = 0, 0.0
    ckpt = checkpoint_dir / "latest.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = int(state["step"])
        elapsed_before = float(state.get("elapsed", 0.0))
        log.info("resumed from %s at step %d", ckpt, step)
    texts = text_bank(config.image_size)
    pixels = torch.from_numpy(data.pixels)
    labels = torch.from_numpy(data.labels)
    sampler = BatchSampler(data.labels, data.captions, config.partner_fraction)
    history: list[dict[str, float]] = []
    start = time.monotonic()
    signals = RunSignals()

    def elapsed() -> float:
        return elapsed_before + signals.clock() - start

    def save() -> None:
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "generator": generator.get_state(), "step": step, "elapsed": elapsed(),
                     "config": asdict(config)}, ckpt)

    def flush() -> None:
        with (checkpoint_dir / "history.jsonl").open("a") as fh:
            for r in history:
                fh.write(json.dumps(r) + "\n")
        history.clear()

    def lr_at(s: int) -> float:
        done = max(s / config.max_steps, elapsed() / (config.minutes * 60))
        warm = min(1.0, (s + 1) / max(1, config.max_steps // 20))
        cosine = 0.5 * (1 + np.cos(np.pi * min(done, 1.0)))
        return float(config.lr * warm * cosine)

    bar = tqdm(total=config.max_steps, initial=step, desc="descriptors", unit="step", disable=not progress)
    n = config.batch_size
    with stop_on_signal(signals):
        while step < config.max_steps and elapsed() < config.minutes * 60 and not signals.stop:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            idx = sampler(n, generator)
            x = pixels[idx].permute(0, 3, 1, 2).float().div_(255.0)
            views = torch.cat([train_view(x, texts, generator), mild_view(x, generator)])
            out = model(views)
            strong, mild = out.copy[:n], out.copy[n:]
            loss_copy = info_nce(strong, mild, idx, copy_bank, copy_ids, COPY_TEMPERATURE)
            loss_koleo = koleo(mild, idx)
            set_labels = labels[idx]
            loss_style = sup_con_bank(out.style[n:], set_labels, style_bank, style_labels, STYLE_TEMPERATURE)
            t = text[idx]
            loss_content = 0.5 * (clip_loss(out.content[:n], t, CONTENT_TEMPERATURE)
                                  + clip_loss(out.content[n:], t, CONTENT_TEMPERATURE))
            loss = (loss_copy + config.koleo_weight * loss_koleo + config.style_weight * loss_style
                    + config.content_weight * loss_content)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if config.memory:
                copy_bank = torch.cat([mild.detach(), copy_bank])[:config.memory]
                copy_ids = torch.cat([idx, copy_ids])[:config.memory]
                style_bank = torch.cat([out.style[n:].detach(), style_bank])[:config.memory]
                style_labels = torch.cat([set_labels, style_labels])[:config.memory]
            step += 1
            record = {"step": step, "loss": loss.item(), "copy": loss_copy.item(), "koleo": loss_koleo.item(),
                      "style": loss_style.item(), "content": loss_content.item(), "lr": lr_at(step - 1)}
            history.append(record)
            bar.update(1)
            bar.set_postfix(copy=f"{record['copy']:.3f}", style=f"{record['style']:.3f}",
                            content=f"{record['content']:.3f}")
            if step % config.checkpoint_every == 0:
                save()
                flush()
    bar.close()
    save()
    flush()
    if signals.stop:
        raise Interrupted(f"stopped at step {step} of {config.max_steps}; the checkpoint {ckpt} is saved",
                          hint="run the same command again to go on from it")
    model.eval()
    style_losses: list[float] = []
    if config.style_head_steps:
        style_losses = train_style_head(model, data, config.style_head_steps, seed=config.seed)
        log.info("style head re-fitted: loss %.3f → %.3f", style_losses[0], style_losses[-1])
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
        summary: dict[str, Any] = {"config": asdict(config), "steps": step, "sets": data.sets,
                                   "train_items": len(data.item_ids), "minutes": round(elapsed() / 60, 1),
                                   "style_head_loss": style_losses[::max(1, len(style_losses) // 10)]}
        earlier = Path(config.init_from) / "training.json" if config.init_from else None
        if earlier is not None and earlier.exists():  # the weights' history goes with them
            summary["init_from_training"] = json.loads(earlier.read_text())
        (out_dir / "training.json").write_text(json.dumps(summary, indent=2))
    return model


def with_style_head(model: DescriptorEncoder, style_input: str, style_colour_levels: int,
                    style_hidden: int) -> DescriptorEncoder:
    """``model`` itself when its style head already reads these inputs; otherwise a copy with
    every other weight kept and a new, untrained style head of that configuration (for
    ``train_style_head``: the copy and content descriptors stay exactly the same)."""
    cfg = model.config
    wanted = {"style_input": style_input, "style_colour_levels": style_colour_levels,
              "style_hidden": style_hidden}
    if all(cfg.get(k) == v for k, v in wanted.items()):
        return model
    fresh = DescriptorEncoder(image_size=cfg.image_size, channels=tuple(cfg.channels), copy_dim=cfg.copy_dim,
                              style_dim=cfg.style_dim, content_dim=cfg.content_dim, **wanted)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("style_head.")}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    assert all(k.startswith("style_head.") for k in missing) and not unexpected
    return fresh


STYLE_FEATURE_FLOOR = 1e-2
"""Smallest standard deviation a style-head input is divided by when standardised: a colour cell
that no training picture uses would otherwise blow up on the first picture that does."""


def train_style_head(model: DescriptorEncoder, data: SplitData, steps: int = 1500, batch_size: int = 1024,
                     lr: float = 1e-3, seed: int = 0) -> list[float]:
    """Fit the style head alone, from a fresh start, on the frozen trunk (a probe stage after
    ``train``).

    The trunk's style-head inputs of every training icon, as drawn and mirrored, are computed
    once and standardised (each input to zero mean and unit spread over the training icons:
    trunk statistics and colour shares differ in scale by orders of magnitude); the head is then
    trained with the supervised contrastive loss on the set label over large batches (half
    evenly over the sets, half same-caption partners from other sets, so the head must ignore
    what is drawn), and the standardisation is folded into its first layer, so the saved head
    reads the raw inputs. Costs seconds per hundred steps instead of a full forward and backward
    pass per batch. Returns the loss per step.
    """
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    parts = []
    with torch.no_grad():
        for flip in (False, True):
            rows = []
            for start in range(0, len(data.pixels), 512):
                x = torch.from_numpy(data.pixels[start:start + 512]).permute(0, 3, 1, 2).float().div_(255.0)
                rows.append(model.trunk(x.flip(-1) if flip else x)[1])
            parts.append(torch.cat(rows))
    features = torch.stack(parts)  # [2 x N x F]
    mean = features[0].mean(0)
    spread = features[0].std(0).clamp(min=STYLE_FEATURE_FLOOR)
    features = (features - mean) / spread
    labels = torch.from_numpy(data.labels)
    sampler = BatchSampler(data.labels, data.captions, 0.5)
    head = model.style_head
    with torch.random.fork_rng():  # a seeded fresh start that leaves the global generator alone
        torch.manual_seed(seed)
        for layer in head:
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
    head.train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + float(np.cos(np.pi * step / steps)))
        idx = sampler(batch_size, generator)
        variant = torch.randint(0, 2, (batch_size,), generator=generator)
        z = F.normalize(head(features[variant, idx]), dim=-1)
        loss = sup_con(z, labels[idx], STYLE_TEMPERATURE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():  # fold the standardisation into the first layer: W (x - m) / s + b
        first = head[0]
        assert isinstance(first, torch.nn.Linear)
        first.bias.copy_(first.bias - first.weight @ (mean / spread))
        first.weight.copy_(first.weight / spread[None, :])
    model.eval()
    return losses
