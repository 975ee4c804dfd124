"""A stochastic (ancestral) sampler for the embedded model's rectified flow, against the
deterministic Euler sampler the pipeline ships (BENCHMARKS.md, session 17).

At a step from noise level σ to σ' the model's velocity ``v`` (classifier-free guidance as in the
pipeline) gives the clean estimate ``x̂0 = x − σ·v`` and the noise estimate ``ε̂ = x + (1−σ)·v``.
Euler is ``x' = (1−σ')·x̂0 + σ'·ε̂``; the ancestral step replaces a share of ``ε̂`` by fresh noise,
``x' = (1−σ')·x̂0 + σ'·(√(1−η²)·ε̂ + η·z)``, on the steps that start inside ``[--lo, --hi]``
(``η`` = ``--eta``; 0 is Euler). ``--restart S`` (Xu et al. 2023, "Restart sampling") then
noises the finished latent back to level S with fresh noise and integrates down again, on a
uniform grid of the same step size. The fresh noise comes from each image's own seeded
generator, so a seed still reproduces its picture. Scored by
``easel.evaluation.evaluate_generator`` with the shipped judges, as ``easel eval model`` does.

    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=1 python -m benchmarks.stochastic_sampler \\
        --eta 0.5 [--lo 0 --hi 1] [--model DIR] [--split train,val] [--json out.json]

Slow (3–6 minutes a setting on one core): not a test.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from benchmarks.judged import add_prompt_options, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eta", type=float, required=True, help="share of fresh noise, [0, 1]")
    parser.add_argument("--lo", type=float, default=0.0, help="lowest noise level of a stochastic step")
    parser.add_argument("--hi", type=float, default=1.0, help="highest noise level of a stochastic step")
    parser.add_argument("--restart", type=float, default=0.0,
                        help="noise the result back to this level and denoise it again (0: no restart)")
    parser.add_argument("--guidance", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--steps", type=int, default=None, help="default: the pipeline's")
    add_prompt_options(parser)
    args = parser.parse_args()
    if not 0.0 <= args.eta <= 1.0:
        parser.error(f"--eta must be in [0, 1], got {args.eta}")
    if not 0.0 <= args.restart < 1.0:
        parser.error(f"--restart must be in [0, 1), got {args.restart}")

    import torch

    from easel.diffusion.data import to_pil
    from easel.diffusion.defaults import SAMPLING
    from easel.diffusion.pipeline import load_pipeline
    from easel.diffusion.text_encoder import PromptEmbeddings

    guidance = SAMPLING.guidance_scale if args.guidance is None else args.guidance
    steps = SAMPLING.steps if args.steps is None else args.steps
    pipe = load_pipeline(args.model)
    unet = pipe.unet

    @torch.no_grad()
    def generate(prompts: list[str], seeds: list[int]) -> list[Any]:
        n = len(prompts)
        both = PromptEmbeddings.cat([pipe.encode_prompts([""]).index([0] * n), pipe.encode_prompts(prompts)])
        c, r = unet.config.in_channels, unet.config.sample_size
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        lat = torch.stack([torch.randn((c, r, r), generator=g) for g in gens])
        sch = pipe.scheduler
        sch.set_timesteps(steps)

        def integrate(lat: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
            for sigma, nxt in zip(sigmas[:-1], sigmas[1:], strict=True):
                t = torch.tensor(sigma * sch.config.num_train_timesteps)
                vu, vc = unet(torch.cat([lat] * 2), t.expand(2 * n), encoder_hidden_states=both.tokens,
                              encoder_attention_mask=both.mask, class_labels=both.pooled).sample.chunk(2)
                v = vu + guidance * (vc - vu)
                x0, eps = lat - sigma * v, lat + (1.0 - sigma) * v
                if args.eta > 0.0 and args.lo <= sigma <= args.hi and nxt > 0.0:
                    fresh = torch.stack([torch.randn((c, r, r), generator=g) for g in gens])
                    eps = math.sqrt(1.0 - args.eta ** 2) * eps + args.eta * fresh
                lat = (1.0 - nxt) * x0 + nxt * eps
            return lat

        lat = integrate(lat, [float(s) for s in sch.sigmas])
        if args.restart > 0.0:
            fresh = torch.stack([torch.randn((c, r, r), generator=g) for g in gens])
            lat = (1.0 - args.restart) * lat + args.restart * fresh
            m = max(1, round(steps * args.restart))
            lat = integrate(lat, [args.restart * (1 - k / m) for k in range(m + 1)])
        return to_pil(pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample.float())

    score(generate, args, (f"ancestral η {args.eta:g} on σ in [{args.lo:g}, {args.hi:g}], "
                           f"restart {args.restart:g}"), {k: str(v) for k, v in vars(args).items()})


if __name__ == "__main__":
    main()
