"""Start the sampler from a style's signal leak instead of pure noise (Everaert et al. 2024,
"Exploiting the signal-leak bias in diffusion models"), against the shipped start.

A model trained on ``x_σ = (1−σ)·x0 + σ·ε`` has seen, at high σ, latents that still hold a little
of the picture: its low frequencies. Sampling from pure noise gives it none, so the first steps
pick an average layout. Here each style's training latents are summarised by a Gaussian over
their low frequencies (each latent average-pooled to ``--grid``×``--grid``, a full covariance
fitted per style) plus the style's mean high-frequency residual. A seed draws a leak from the
prompt's style, and the sampler starts at step ``--start-step`` of its 20 from ``(1−σ0)·leak +
σ0·ε``, with the seed's own noise ``ε``. No single training icon is used: only each style's
mean and covariance. Prompts without a known style tag draw from all styles' latents together.

    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=1 python -m benchmarks.signal_leak \\
        --start-step 1 [--grid 4] [--model DIR] [--split train,val] [--json out.json]

``--start-step 0`` is the shipped sampler (the control). Slow (about 5 minutes a setting on one
core): not a test.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.judged import add_prompt_options, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start-step", type=int, required=True,
                        help="sampler step to start at (0: pure noise, the shipped sampler)")
    parser.add_argument("--grid", type=int, default=4, help="low-frequency grid of the leak (divides 16)")
    parser.add_argument("--leak-scale", type=float, default=1.0,
                        help="multiply the leak's spread around its style mean (0: the mean only)")
    add_prompt_options(parser)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from easel.config import get_settings
    from easel.corpus.captions import split_style
    from easel.corpus.sources import HELD_OUT_SET
    from easel.diffusion.data import load_training_set, to_pil, to_unit
    from easel.diffusion.defaults import SAMPLING
    from easel.diffusion.pipeline import load_pipeline
    from easel.diffusion.text_encoder import PromptEmbeddings

    pipe = load_pipeline(args.model)
    unet, vae = pipe.unet, pipe.vae
    scale = vae.config.scaling_factor
    data = load_training_set(get_settings().corpus_dir / "64px", ("train",), (HELD_OUT_SET,), progress=False)
    with torch.no_grad():
        lat = torch.cat([vae.encode(to_unit(data.images[i:i + 256])).latent_dist.mode()
                         for i in range(0, len(data.images), 256)]) * scale
    r = lat.shape[-1]
    k = args.grid
    leaks: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    tags = [split_style(p)[1] for p in data.prompts]
    for tag in ["", *sorted({t for t in tags if t})]:  # "": every style, for untagged prompts
        z = lat[torch.tensor([t == tag or not tag for t in tags])]
        low = F.avg_pool2d(z, r // k)  # [n x C x k x k]
        high_mean = (z - F.interpolate(low, size=r, mode="nearest")).mean(0)
        flat = low.flatten(1).double()
        mean = flat.mean(0)
        cov = torch.cov(flat.T) + 1e-4 * torch.eye(flat.shape[1], dtype=torch.float64)
        leaks[tag] = (mean, torch.linalg.cholesky(cov), high_mean)
    print(f"style leaks from {lat.shape[0]} train latents: {', '.join(t or 'all' for t in leaks)}")

    steps, guidance = SAMPLING.steps, SAMPLING.guidance_scale

    @torch.no_grad()
    def generate(prompts: list[str], seeds: list[int]) -> list[Any]:
        n = len(prompts)
        both = PromptEmbeddings.cat([pipe.encode_prompts([""]).index([0] * n), pipe.encode_prompts(prompts)])
        c = unet.config.in_channels
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        noise = torch.stack([torch.randn((c, r, r), generator=g) for g in gens])
        sch = pipe.scheduler
        sch.set_timesteps(steps)
        sigmas = [float(s) for s in sch.sigmas]
        start = args.start_step
        x = noise.clone()
        if start > 0:
            s0 = sigmas[start]
            for i, (prompt, g) in enumerate(zip(prompts, gens, strict=True)):
                tag = split_style(prompt)[1]
                mean, chol, high = leaks[tag if tag in leaks else ""]
                u = torch.randn(mean.shape[0], generator=g, dtype=torch.float64)
                low = (mean + args.leak_scale * chol @ u).float().view(1, c, k, k)
                leak = F.interpolate(low, size=r, mode="nearest")[0] + high
                x[i] = (1.0 - s0) * leak + s0 * noise[i]
        for sigma, nxt in zip(sigmas[start:-1], sigmas[start + 1:], strict=True):
            t = torch.tensor(sigma * sch.config.num_train_timesteps)
            vu, vc = unet(torch.cat([x] * 2), t.expand(2 * n), encoder_hidden_states=both.tokens,
                          encoder_attention_mask=both.mask, class_labels=both.pooled).sample.chunk(2)
            x = x + (nxt - sigma) * (vu + guidance * (vc - vu))
        return to_pil(vae.decode(x / scale).sample.float())

    score(generate, args, f"signal leak from step {args.start_step}, grid {args.grid}",
          {k_: str(v) for k_, v in vars(args).items()})


if __name__ == "__main__":
    main()
