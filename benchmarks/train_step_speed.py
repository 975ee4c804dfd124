"""Seconds per training step of the embedded denoiser under CPU execution options.

Issue 11 asks for quality per CPU-minute; the cheapest gain is more steps per CPU-minute. This
times one full step of ``easel train base`` (forward, rectified-flow loss, backward, gradient
clipping, AdamW, EMA update) on the shipped UNet, or a model directory's, with random latents
and prompt embeddings of the training shapes (batch 32, 4×16×16 latents, 28 tokens of 384), for:

- ``fp32``: what training does now;
- ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` around the forward pass and loss (the
  weights, gradients, optimiser and EMA stay float32);
- ``channels_last``: the UNet and its input in channels-last memory format;
- ``compile``: ``torch.compile`` of the UNet (the first steps, which compile, are not timed).
- their pairs: ``bf16_channels_last``, ``bf16_compile``, ``channels_last_compile``.

Run with nothing else on the cores:

    OMP_NUM_THREADS=2 python -m benchmarks.train_step_speed --steps 20 --variants fp32,bf16

It also reports, for each variant against fp32 from the same start, the largest difference in
loss over the timed steps, so a faster variant that learns something else shows it.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from easel.diffusion.pipeline import SHIPPED_MODEL_DIR, latent_velocity_loss
from easel.diffusion.text_encoder import PromptEmbeddings
from easel.diffusion.training import optimizer_step

VARIANTS = ("fp32", "bf16", "channels_last", "bf16_channels_last", "compile", "bf16_compile",
            "channels_last_compile")


def batches(n: int, batch: int, tokens: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """``n`` random training batches: latents, noise, σ, token embeddings, mask, pooled."""
    g = torch.Generator().manual_seed(seed)
    out: list[tuple[torch.Tensor, ...]] = []
    for _ in range(n):
        lengths = torch.randint(6, tokens + 1, (batch,), generator=g)
        mask = (torch.arange(tokens)[None, :] < lengths[:, None]).long()
        out.append((torch.randn(batch, 4, 16, 16, generator=g), torch.randn(batch, 4, 16, 16, generator=g),
                    torch.sigmoid(torch.randn(batch, generator=g)),
                    torch.randn(batch, tokens, 384, generator=g), mask, torch.randn(batch, 384, generator=g)))
    return out


@dataclass
class Timing:
    variant: str
    median_s: float
    mean_s: float
    losses: list[float]


def run(variant: str, unet0: UNet2DConditionModel, data: list[tuple[torch.Tensor, ...]],
        warmup: int) -> Timing:
    unet = copy.deepcopy(unet0).train()
    ema = copy.deepcopy(unet0).requires_grad_(False)
    channels_last = "channels_last" in variant
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    model = torch.compile(unet) if "compile" in variant else unet
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01, betas=(0.9, 0.99))
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in variant else nullcontext()
    losses, times = [], []
    for i, (lat, noise, sig, tok, mask, pooled) in enumerate(data):
        if channels_last:
            lat, noise = lat.contiguous(memory_format=torch.channels_last), noise.contiguous(
                memory_format=torch.channels_last)
        t0 = time.perf_counter()
        with amp:
            loss = latent_velocity_loss(model, lat, noise, sig, PromptEmbeddings(tok, mask, pooled))
        optimizer_step(unet, ema, opt, loss, 0.999)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
            losses.append(loss.item())
    times.sort()
    return Timing(variant, times[len(times) // 2], sum(times) / len(times), losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=SHIPPED_MODEL_DIR, help="Easel model directory")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", default="fp32,bf16,channels_last,compile",
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    torch.manual_seed(0)
    unet0 = UNet2DConditionModel.from_pretrained(str(args.model / "unet"))
    data = batches(args.warmup + args.steps, args.batch, 28, seed=0)
    rows = [run(v, unet0, data, args.warmup) for v in variants]
    base = next((r for r in rows if r.variant == "fp32"), None)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} timed steps "
          f"after {args.warmup}, model {args.model}")
    print("| variant | median s/step | mean s/step | samples/s | speed-up vs fp32 | max |Δ loss| vs fp32 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        speed = f"{base.median_s / r.median_s:.2f}×" if base else "—"
        dl = (max(abs(a - b) for a, b in zip(r.losses, base.losses, strict=True))
              if base else float("nan"))
        print(f"| {r.variant} | {r.median_s:.3f} | {r.mean_s:.3f} | "
              f"{args.batch / r.median_s:.1f} | {speed} | {dl:.4f} |")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
