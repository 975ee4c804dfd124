"""Guidance rules other than classifier-free guidance, on the embedded model (BENCHMARKS.md,
session 16). None is in the pipeline: each is a sampler loop here, on the pipeline's own parts
(UNet, scheduler, prompt encoder, autoencoder), scored by ``easel.evaluation.evaluate_generator``
with the shipped judges, as ``easel eval model`` scores the pipeline.

Rules (``v``: the UNet's velocity; ``c``: the prompt, ``∅``: the empty prompt; ``w``: ``--w``):

- ``cfg``: ``v(∅) + w·(v(c) − v(∅))`` — what the pipeline does;
- ``ag``: autoguidance (Karras et al. 2024), ``g(c) + w·(v(c) − g(c))`` with ``g`` the weaker
  ``--guide`` UNet (e.g. an earlier shipped denoiser in the same latent space);
- ``cfg_ag``: ``cfg`` plus ``a·(v(c) − g(c))``; ``cfg_badu``: ``cfg`` with ``g(∅)`` for ``v(∅)``;
- ``apg``: adaptive projected guidance (Sadat et al. 2024) on the x̂0 predictions, the part of the
  guidance parallel to x̂0(c) scaled by ``--eta``;
- ``rescale``: ``cfg`` rescaled to the conditional prediction's spread (Lin et al. 2024), ``--phi``;
- ``sched``: ``cfg`` with ``--whi`` above noise level ``--thr`` and ``w`` below;
- ``ensemble``: ``cfg`` averaged over the shipped UNet and each ``--member`` UNet (a prediction
  ensemble of checkpoints; each member costs one more pair of passes a step);
- ``style``: guidance split in two (as InstructPix2Pix splits it), ``v(∅) + w·(v(k) − v(∅)) +
  ws·(v(c) − v(k))`` with ``k`` the prompt's caption without its style tag ("fox face" for "fox
  face, twemoji style"; the trainer's style dropout teaches the model that condition). ``ws`` =
  ``w`` is ``cfg``; a larger ``--ws`` pushes along the style alone. Three passes a step;
- ``contrast``: ``cfg`` plus ``a·(v(c) − mean_j v(k, s_j))``, ``s_j`` the model's other trained
  styles ("fox face, noto style", … for "fox face, twemoji style"): away from the same concept
  drawn in the styles the judge confuses it with. Two passes a step plus one per other style.

    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=1 python -m benchmarks.guidance_rules \\
        --rule rescale --w 8 --phi 0.7 [--guide DIR/unet] [--split train,val] [--json out.json]

Slow (2–4 minutes a rule on one core): not a test.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.judged import add_prompt_options, score

RULES = ("cfg", "ag", "cfg_ag", "cfg_badu", "apg", "rescale", "sched", "ensemble", "style", "contrast")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", choices=RULES, default="cfg")
    parser.add_argument("--guide", type=Path, default=None, help="the weaker UNet (ag, cfg_ag, cfg_badu)")
    parser.add_argument("--member", type=Path, action="append", default=[],
                        help="a UNet directory averaged with the shipped one (ensemble; repeatable)")
    parser.add_argument("--w", type=float, default=6.0)
    parser.add_argument("--ws", type=float, default=None, help="style guidance (style; default: --w)")
    parser.add_argument("--a", type=float, default=1.0)
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--phi", type=float, default=0.7)
    parser.add_argument("--whi", type=float, default=9.0)
    parser.add_argument("--thr", type=float, default=0.6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scheduler", choices=("euler", "heun"), default="euler",
                        help="the sampler: the pipeline's Euler, or Heun's second-order method "
                             "(two UNet evaluations a step but the last, so 10 Heun steps cost "
                             "about what 20 Euler steps do)")
    add_prompt_options(parser, model=False)
    args = parser.parse_args()
    if args.rule in ("ag", "cfg_ag", "cfg_badu") and args.guide is None:
        parser.error(f"--rule {args.rule} needs --guide (a UNet directory)")
    if args.rule == "ensemble" and not args.member:
        parser.error("--rule ensemble needs at least one --member (a UNet directory)")

    import torch
    from diffusers import UNet2DConditionModel

    from easel.corpus.captions import prompt_for, split_style
    from easel.corpus.sources import ICON_SETS
    from easel.diffusion.data import to_pil
    from easel.diffusion.model_card import read_model_card
    from easel.diffusion.pipeline import SHIPPED_MODEL_DIR, load_pipeline
    from easel.diffusion.text_encoder import PromptEmbeddings

    pipe = load_pipeline(None)
    good = pipe.unet
    bad = UNet2DConditionModel.from_pretrained(str(args.guide)).eval() if args.guide else None
    members = [good] + [UNet2DConditionModel.from_pretrained(str(m)).eval() for m in args.member]

    def run(model: Any, x: torch.Tensor, t: torch.Tensor, e: PromptEmbeddings) -> torch.Tensor:
        return model(x, t.expand(x.shape[0]), encoder_hidden_states=e.tokens,
                     encoder_attention_mask=e.mask, class_labels=e.pooled).sample

    @torch.no_grad()
    def generate(prompts: list[str], seeds: list[int]) -> list[Any]:
        n = len(prompts)
        cond = pipe.encode_prompts(prompts)
        uncond = pipe.encode_prompts([""]).index([0] * n)
        both = PromptEmbeddings.cat([uncond, cond])
        if args.rule == "style":
            captions, tags = zip(*(split_style(p) for p in prompts), strict=True)
            if not any(tags):
                raise SystemExit("--rule style needs prompts that end in a style tag (\", twemoji style\")")
            three = PromptEmbeddings.cat([uncond, pipe.encode_prompts(list(captions)), cond])
        if args.rule == "contrast":
            held_out = read_model_card(SHIPPED_MODEL_DIR)["training"]["held_out_sets"]
            styles = [s.style_tag for s in ICON_SETS if s.set_id not in held_out]
            split = [split_style(p) for p in prompts]
            if not all(tag in styles for _, tag in split):
                raise SystemExit(f"--rule contrast needs prompts in one of the model's styles: {styles}")
            others = [prompt_for(k, o) for k, tag in split for o in styles if o != tag]
            n_other = len(styles) - 1
            many = PromptEmbeddings.cat([uncond, cond, pipe.encode_prompts(others)])
        c, r = good.config.in_channels, good.config.sample_size
        lat = torch.stack([torch.randn((c, r, r), generator=torch.Generator("cpu").manual_seed(s))
                           for s in seeds])
        sch = pipe.scheduler
        if args.scheduler == "heun":
            from diffusers import FlowMatchHeunDiscreteScheduler

            sch = FlowMatchHeunDiscreteScheduler(num_train_timesteps=sch.config.num_train_timesteps,
                                                 shift=sch.config.shift)
        sch.set_timesteps(args.steps)
        sch.set_begin_index(0)
        for t in sch.timesteps:
            sigma = float(t) / sch.config.num_train_timesteps
            if args.rule == "ag":
                vc, bc = run(good, lat, t, cond), run(bad, lat, t, cond)
                v = bc + args.w * (vc - bc)
            elif args.rule == "cfg_badu":
                vc, bu = run(good, lat, t, cond), run(bad, lat, t, uncond)
                v = bu + args.w * (vc - bu)
            elif args.rule == "ensemble":
                v = torch.zeros_like(lat)
                for member in members:
                    vu, vc = run(member, torch.cat([lat] * 2), t, both).chunk(2)
                    v += (vu + args.w * (vc - vu)) / len(members)
            elif args.rule == "style":
                vu, vk, vc = run(good, torch.cat([lat] * 3), t, three).chunk(3)
                ws = args.w if args.ws is None else args.ws
                v = vu + args.w * (vk - vu) + ws * (vc - vk)
            elif args.rule == "contrast":
                out = run(good, torch.cat([lat] * 2 + [lat.repeat_interleave(n_other, 0)]), t, many)
                vu, vc, vo = out[:n], out[n:2 * n], out[2 * n:]
                v = vu + args.w * (vc - vu) + args.a * (vc - vo.view(n, n_other, *lat.shape[1:]).mean(1))
            else:
                vu, vc = run(good, torch.cat([lat] * 2), t, both).chunk(2)
                w = args.whi if args.rule == "sched" and sigma > args.thr else args.w
                v = vu + w * (vc - vu)
                if args.rule == "cfg_ag":
                    v = v + args.a * (vc - run(bad, lat, t, cond))
                elif args.rule == "rescale":
                    spread = vc.std(dim=(1, 2, 3), keepdim=True) / v.std(dim=(1, 2, 3), keepdim=True)
                    v = args.phi * v * spread + (1 - args.phi) * v
                elif args.rule == "apg":
                    dc, du = lat - sigma * vc, lat - sigma * vu
                    d = (dc - du).flatten(1)
                    unit = dc.flatten(1) / dc.flatten(1).norm(dim=1, keepdim=True)
                    par = (d * unit).sum(1, keepdim=True) * unit
                    guided = dc + (args.w - 1) * ((d - par) + args.eta * par).view_as(dc)
                    v = (lat - guided) / max(sigma, 1e-4)
            lat = sch.step(v, t, lat).prev_sample
        return to_pil(pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample.float())

    score(generate, args, f"rule {args.rule}", {k: str(v) for k, v in vars(args).items()})


if __name__ == "__main__":
    main()
