"""Discriminator guidance (Kim et al. 2023): a noise-aware discriminator of the model's own pictures
against the real icons, per style, whose log-ratio moves the sampler (BENCHMARKS.md, session 29).

Session 28 found the denoiser reads its own pictures as in the asked style 0.985 of the time
while the judge reads 0.80: classifier-free guidance climbs the model's own idea of each style,
and a fifth of its pictures miss what the real icons carry. Discriminator guidance aims at that
gap directly. A classifier ``d(x_σ, σ)`` learns, for each trained style s, to tell the real
icons' latents drawn in s from the model's latents drawn for prompts that ask for s, both noised
to the same level σ. Its log-ratio ``log p(real s | x) − log p(fake s | x)`` estimates
``log p_data(x_σ | s) / p_model(x_σ | s)``, and adding its gradient to the model's score moves
each step towards the real icons of the asked style; the velocity changes by
``−w·σ/(1−σ)·∇ log-ratio`` (the factor capped as for style classifier guidance). The
discriminator is :class:`easel.diffusion.style_guide.LatentStyleClassifier` with
``kind="discriminator"``, trained by ``train_discriminator`` and applied by ``guided_velocity``:
the code `easel train style-guide --discriminator` ships. No judge is read to train it.

Three steps, each a sub-command::

    # 1. the model's pictures for training prompts (seeds far from the evaluation's); resumable
    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=1 python -m benchmarks.discriminator_guidance \\
        fakes --n 3000 --out fakes.pt
    # 2. the discriminator: real train latents against the fakes; held-out accuracy by noise level
    ... discriminator_guidance train --fakes fakes.pt --out disc/ [--reals reals.pt]
    # 3. sample the evaluation prompts at each weight (0 = the pipeline's sampler) and judge them
    ... discriminator_guidance score --disc disc/ --weights 0,1,2,4 [--seed 1000] [--json F]

Slow (the fakes take about 25 min on one core, the discriminator 15, each scored weight 2):
not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.judged import add_prompt_options, eval_corpus, sample_guided, score


def _manifest(given: Path | None) -> Path:
    from easel.config import get_settings

    return given or get_settings().corpus_dir / "64px"


def _training_rows(manifest: Path) -> Any:
    from easel.diffusion.configs import TrainConfig
    from easel.diffusion.data import load_training_set

    return load_training_set(manifest, ("train", "val"), tuple(TrainConfig().held_out_sets))


def make_fakes(args: argparse.Namespace) -> None:
    import torch

    from easel.diffusion.pipeline import load_pipeline
    from easel.diffusion.style_guide import fake_prompts

    data = _training_rows(_manifest(args.manifest))
    prompts = fake_prompts([p for p, r in zip(data.prompts, data.rows, strict=True) if r["split"] == "train"],
                           args.n, args.pick_seed)
    seeds = [args.seed_base + k for k in range(args.n)]
    done: dict[str, Any] = {"latents": [], "prompts": [], "seeds": []}
    if args.out.exists():
        done = torch.load(args.out)
        done["latents"] = list(done["latents"].unbind(0))
        print(f"resuming: {len(done['prompts'])} of {args.n} pictures already in {args.out}")
    pipe = load_pipeline(args.model)
    started = time.monotonic()
    for start in range(len(done["prompts"]), args.n, args.batch):
        ps, ss = prompts[start:start + args.batch], seeds[start:start + args.batch]
        lat = sample_guided(pipe, ps, ss, args.steps, args.guidance)
        done["latents"].extend(lat.unbind(0))
        done["prompts"].extend(ps)
        done["seeds"].extend(ss)
        tmp = args.out.with_suffix(".part")
        torch.save({"latents": torch.stack(done["latents"]), "prompts": done["prompts"],
                    "seeds": done["seeds"], "model": str(args.model or "shipped"),
                    "steps": args.steps, "guidance": args.guidance}, tmp)
        tmp.replace(args.out)
        print(f"{len(done['prompts'])}/{args.n} pictures, {time.monotonic() - started:.0f} s", flush=True)


def _style_tags(prompts: list[str]) -> list[str | None]:
    from easel.corpus.captions import split_style

    return [split_style(p)[1] for p in prompts]


def train_disc(args: argparse.Namespace) -> None:
    import torch

    from easel.diffusion.pipeline import load_pipeline
    from easel.diffusion.style_guide import encode_latents, train_discriminator

    fakes = torch.load(args.fakes)
    if args.reals and args.reals.exists():
        reals = torch.load(args.reals)
    else:
        data = _training_rows(_manifest(args.manifest))
        pipe = load_pipeline(args.model)
        reals = {}
        for split in ("train", "val"):
            idx = [i for i, r in enumerate(data.rows) if r["split"] == split]
            reals[split] = {"latents": encode_latents(data.images[idx], pipe.vae),
                            "tags": [data.rows[i]["style_tag"] for i in idx]}
        if args.reals:
            torch.save(reals, args.reals)
    result = train_discriminator(
        reals["train"]["latents"], reals["train"]["tags"], fakes["latents"].float(),
        [t or "" for t in _style_tags(fakes["prompts"])], steps=args.steps, batch_size=args.batch,
        learning_rate=args.lr, width=args.width, seed=args.seed, val_real=reals["val"]["latents"],
        val_real_tags=reals["val"]["tags"])
    result.classifier.save_pretrained(str(args.out))
    record = {"steps": args.steps, "batch": args.batch, "width": args.width, "lr": args.lr,
              "seconds": round(result.seconds, 1), "fakes": str(args.fakes),
              "train_items": result.train_items,
              "held_out_balanced_accuracy": {k: round(v, 4) for k, v in result.accuracy.items()}}
    (args.out / "record.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


def score_weights(args: argparse.Namespace) -> None:
    import torch

    from easel.diffusion.data import to_pil
    from easel.diffusion.pipeline import load_pipeline
    from easel.diffusion.style_guide import LatentStyleClassifier, guided_velocity
    from easel.evaluation.compare import concept_in_top, style_right

    pipe = load_pipeline(args.model)
    disc = LatentStyleClassifier.from_pretrained(str(args.disc)).eval()
    lo, hi = (float(x) for x in args.sigma_range.split(","))
    corpus = eval_corpus()
    json_path, args.json = args.json, None
    reports = {}
    for w in [float(x) for x in args.weights.split(",")]:
        def generate(prompts: list[str], seeds: list[int], w: float = w) -> list[Any]:
            labels = disc.labels_for(_style_tags(prompts))

            def adjust(sigma: float, lat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                if not lo <= sigma <= hi:
                    return v
                return guided_velocity(disc, lat, sigma, v, labels, w)

            lat = sample_guided(pipe, prompts, seeds, args.steps, args.guidance, adjust=adjust)
            with torch.no_grad():
                return to_pil(pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample.float())

        reports[w] = score(generate, args, f"discriminator guidance {w:g}",
                           {"discriminator_weight": w, "sigma_range": [lo, hi]}, corpus=corpus)
    base_w = min(reports)
    base = {(it["prompt"], it["seed"]): it for it in reports[base_w]["items"]}
    summary = {"disc": str(args.disc), "sigma_range": [lo, hi], "weights": {}}
    for w, rep in reports.items():
        items = [it for it in rep["items"] if it["seen"]]
        pairs = [(it, base[(it["prompt"], it["seed"])]) for it in items]

        def count(ok: Any, pairs: list = pairs) -> list[int]:
            return [sum(ok(a) and not ok(b) for a, b in pairs), sum(ok(b) and not ok(a) for a, b in pairs)]

        row = {"seen_style": round(sum(style_right(it) for it in items) / len(items), 4),
               "seen_top5": round(sum(concept_in_top(it, 5) for it in items) / len(items), 4),
               "paired_style_vs_base": count(style_right),
               "paired_top5_vs_base": count(lambda it: concept_in_top(it, 5)),
               "seen_near_copies": rep["generated"]["seen"]["near_copy_share"],
               "unseen_style": rep["generated"]["unseen"]["style_accuracy"]}
        summary["weights"][f"{w:g}"] = row
        print(f"weight {w:g}: seen style {row['seen_style']:.3f} top-5 {row['seen_top5']:.3f}; "
              f"against weight {base_w:g}: style {row['paired_style_vs_base']}, "
              f"top-5 {row['paired_top5_vs_base']}")
    if json_path:
        summary["reports"] = {f"{w:g}": rep for w, rep in reports.items()}
        json_path.write_text(json.dumps(summary, indent=1, default=str))


def main() -> None:
    from easel.diffusion.style_guide import FAKE_SEED_BASE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fakes", help="sample the model's pictures for training prompts")
    f.add_argument("--n", type=int, default=3000)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--batch", type=int, default=64)
    f.add_argument("--seed-base", type=int, default=FAKE_SEED_BASE,
                   help="first noise seed (far from the evaluation's)")
    f.add_argument("--pick-seed", type=int, default=0, help="seed of the choice of training prompts")
    t = sub.add_parser("train", help="train the discriminator")
    t.add_argument("--fakes", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--reals", type=Path, default=None, help="a .pt cache of the real latents")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--width", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score", help="judge the evaluation prompts sampled at each weight")
    s.add_argument("--disc", type=Path, required=True)
    s.add_argument("--weights", default="0,1,2,4")
    s.add_argument("--sigma-range", default="0,1", help="guide only steps with σ in LO,HI")
    add_prompt_options(s, model=False)
    for p in (f, t, s):
        p.add_argument("--model", type=Path, default=None, help="model directory (default: shipped)")
        p.add_argument("--manifest", type=Path, default=None, help="64 px build (default: EASEL_HOME's)")
    for p in (f, s):
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--guidance", type=float, default=6.0)
    args = parser.parse_args()
    {"fakes": make_fakes, "train": train_disc, "score": score_weights}[args.what](args)


if __name__ == "__main__":
    main()
