"""What splitting a trained denoiser's attention into wider heads costs and saves, before training.

diffusers reads ``attention_head_dim=32`` as 32 heads per attention block, so the shipped UNet's
heads are 4 channels wide (128 channels, 32 heads). ``easel train base --head-dim N`` splits the
same weights into heads N channels wide; the shapes are unchanged, the function is not. For each
head width this reports, from the same start:

- the rectified-flow loss of the weights as they are, on ``--samples`` pictures of the
  manifest's ``--split`` without the held-out set, as training reads it (the same pictures,
  noise and logit-normal noise levels for every row);
- seconds per UNet forward pass at the sampler's batch (8: four pictures, two guidance halves);
- seconds per training step (batch 32: forward, loss, backward, AdamW, EMA; random inputs of the
  training shapes, as ``benchmarks.train_step_speed``).

Run with nothing else on the cores:

    EASEL_HOME=<home with a 64 px build> python -m benchmarks.head_split --head-dims 0,32,64 --threads 2

0 is the model's own split. The loss says how far training has to go back; the times say what
each step of that training, and each generated picture, costs.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch


def resplit(unet: torch.nn.Module, head_dim: int | None) -> torch.nn.Module:
    """``unet``'s weights in a UNet whose attention heads are ``head_dim`` channels wide."""
    from diffusers import UNet2DConditionModel

    from easel.diffusion.configs import heads_setting

    config = dict(unet.config)
    config["attention_head_dim"] = heads_setting(list(config["block_out_channels"]), head_dim)
    out = UNet2DConditionModel.from_config(config)
    out.load_state_dict(unet.state_dict())
    return out


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped one)")
    ap.add_argument("--manifest", type=Path, default=None, help="64 px build (default: EASEL_HOME's)")
    ap.add_argument("--split", default="val", help="manifest split the pictures come from")
    ap.add_argument("--head-dims", default="0,32", help="head widths to compare; 0: the model's own")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=6, help="timed forward passes and training steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import AutoencoderKL, UNet2DConditionModel

    from easel.config import get_settings
    from easel.corpus.manifest import manifest_dir
    from easel.corpus.sources import HELD_OUT_SET
    from easel.diffusion.configs import TrainConfig, head_dim_of
    from easel.diffusion.data import load_training_set, to_unit
    from easel.diffusion.pipeline import SHIPPED_MODEL_DIR, latent_velocity_loss
    from easel.diffusion.text_encoder import PromptEmbeddings, get_text_encoder
    from easel.diffusion.training import optimizer_step, train_sigmas

    model = args.model or SHIPPED_MODEL_DIR
    manifest = args.manifest or manifest_dir(get_settings().corpus_dir, 64)
    data = load_training_set(manifest, (args.split,), (HELD_OUT_SET,), progress=False)  # as trained
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(data.prompts), generator=g)[:args.samples]
    vae = AutoencoderKL.from_pretrained(str(model / "vae")).eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(to_unit(data.images[pick[i:i + 64]])).latent_dist.mode()
                             for i in range(0, len(pick), 64)]) * vae.config.scaling_factor
    emb = get_text_encoder().encode([data.prompts[i] for i in pick.tolist()])
    noise = torch.randn(latents.shape, generator=g)
    sigmas = torch.cat([train_sigmas(TrainConfig(batch_size=64), g) for _ in range(0, len(pick), 64)])
    sigmas = sigmas[:len(pick)]
    shipped = UNet2DConditionModel.from_pretrained(str(model / "unet"))
    own = head_dim_of(shipped.config)

    rows = []
    for asked in [int(x) for x in args.head_dims.split(",")]:
        head_dim = own if asked == 0 else asked
        unet = resplit(shipped, head_dim).eval()
        with torch.no_grad():
            total = sum(latent_velocity_loss(unet, latents[i:i + 64], noise[i:i + 64], sigmas[i:i + 64],
                                             emb.index(slice(i, i + 64))).item() * len(latents[i:i + 64])
                        for i in range(0, len(latents), 64))
            sample_in = dict(sample=latents[:8], timestep=torch.full((8,), 500.0),
                             encoder_hidden_states=emb.tokens[:8], encoder_attention_mask=emb.mask[:8],
                             class_labels=emb.pooled[:8])
            forward = median_seconds(lambda u=unet, x=sample_in: u(**x), args.repeats)
        train = unet.train()
        ema = copy.deepcopy(train).requires_grad_(False)
        opt = torch.optim.AdamW(train.parameters(), lr=1e-5)
        batch = PromptEmbeddings(emb.tokens[:32], emb.mask[:32], emb.pooled[:32])

        def step(u=train, e=ema, o=opt, b=batch) -> None:
            loss = latent_velocity_loss(u, latents[:32], noise[:32], sigmas[:32], b)
            optimizer_step(u, e, o, loss, 0.999)

        rows.append({"head_dim": head_dim or f"legacy ({shipped.config.attention_head_dim} heads)",
                     "loss": total / len(latents), "forward_s": forward,
                     "train_step_s": median_seconds(step, args.repeats)})
    print(f"model {model}, {len(latents)} pictures of split {args.split}, threads {torch.get_num_threads()}")
    print("| head width (channels) | loss of the weights as they are | forward s (batch 8) | "
          "train step s (batch 32) |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['head_dim']} | {r['loss']:.4f} | {r['forward_s']:.4f} | {r['train_step_s']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
