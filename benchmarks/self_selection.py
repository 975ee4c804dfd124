"""Choosing among several starts by the denoiser itself, read as a style classifier (BENCHMARKS.md,
session 28).

Each prompt is sampled from ``--candidates`` N noise seeds (candidate j from seed + j·1,000,003,
the seeds of ``easel eval model --draws N``; candidate 0 is the picture the pipeline draws) with
the pipeline's sampler (Euler, classifier-free guidance ``--guidance``, ``--steps`` steps). Each
finished latent is then noised again at the levels ``--levels`` (``--noise-draws`` noises per
level, the same noises for every condition) and denoised once under each trained style's prompt
("fox face, noto style", "fox face, twemoji style", …) and under the caption alone. A style whose
prompt predicts the noise better explains the picture better: that is the diffusion classifier
of Li et al. 2023 ("Your Diffusion Model is Secretly a Zero-Shot Classifier"), with the model's
own training loss as the score. No judge is read to choose.

Every candidate is finished and scored by the shipped judges, as ``easel eval model`` scores
pictures. The report says, for each selection rule, how often the judges read the asked style
(and the concept in the top 5, and how many pictures are near-copies) when the candidate the rule
likes best is kept, against the mean candidate (the fair baseline: a random one of the N) and the
best of the N by the judge (an oracle). The rule fixed before any figure was seen is ``margin``:
the mean error of the best other style minus the asked style's, over all levels.

    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=1 python -m benchmarks.self_selection \\
        --candidates 4 [--model DIR] [--seed 1000] [--cache F.pt] [--json F]

``--real`` reads the real icons of the seen prompts instead, through the model's autoencoder,
and prints how often the denoiser names their style (overall and at each level): how well it
tells the styles apart where no sampling is involved. No judge runs then.

Slow (N times an evaluation plus the classifier's passes): not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.judged import (
    add_candidate_options,
    add_prompt_options,
    check_candidate_options,
    eval_corpus,
    sample_guided,
    score,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_candidate_options(parser)
    parser.add_argument("--levels", default="0.2,0.35,0.5,0.65,0.8",
                        help="noise levels σ at which each candidate is denoised under every style")
    parser.add_argument("--noise-draws", type=int, default=2, help="noises per level")
    parser.add_argument("--real", action="store_true",
                        help="read the seen prompts' real icons instead of sampling candidates")
    parser.add_argument("--batch", type=int, default=96, help="UNet batch for the classifier's passes")
    parser.add_argument("--cache", type=Path, default=None,
                        help="a .pt of the candidates' pictures and errors: read if it exists, else "
                             "written (so selection rules can be scored without resampling)")
    add_prompt_options(parser)
    args = parser.parse_args()
    check_candidate_options(parser, args)
    levels = [float(x) for x in args.levels.split(",")]
    if not levels or not all(0.0 < x < 1.0 for x in levels):
        parser.error("--levels must be noise levels strictly between 0 and 1, e.g. 0.2,0.5,0.8")

    import torch

    from easel.corpus.captions import prompt_for, split_style
    from easel.corpus.sources import HELD_OUT_SET, SETS_BY_ID
    from easel.diffusion.data import to_pil
    from easel.diffusion.pipeline import load_pipeline
    from easel.evaluation.compare import concept_in_top, style_right
    from easel.evaluation.data import DRAW_SEED_STRIDE

    pipe = load_pipeline(args.model)
    unet = pipe.unet
    tags = sorted(s.style_tag for k, s in SETS_BY_ID.items() if k != HELD_OUT_SET)
    n_cand = args.candidates
    images: dict[tuple[str, int], list[Any]] = {}
    # errors[(prompt, seed)]: [candidates x (styles + caption alone) x levels x noise draws]
    errors: dict[tuple[str, int], torch.Tensor] = {}

    @torch.no_grad()
    def style_errors(lat: torch.Tensor, captions: list[str], seeds: list[int],
                     caption_alone: bool = True) -> torch.Tensor:
        """Mean squared velocity error of each latent under each style's prompt (and the caption
        alone, last), at each level and noise draw: [n x (styles [+ 1]) x levels x draws]."""
        n = lat.shape[0]
        conds = [prompt_for(c, t) for c in captions for t in tags] + (list(captions) if caption_alone else [])
        emb = pipe.encode_prompts(conds)
        per_item = len(tags) + int(caption_alone)
        # item i's conditions: its styles, then its caption alone
        rows = [[i * len(tags) + j for j in range(len(tags))] + [n * len(tags) + i] for i in range(n)]
        flat = [(i, c) for i in range(n) for c in range(per_item)]
        out = torch.zeros(n, per_item, len(levels), args.noise_draws)
        for li, sigma in enumerate(levels):
            for d in range(args.noise_draws):
                eps = torch.stack([torch.randn(lat.shape[1:], generator=torch.Generator("cpu").manual_seed(
                    s * 7919 + 104_729 * li + d)) for s in seeds])
                noisy = (1.0 - sigma) * lat + sigma * eps
                target = eps - lat
                for b in range(0, len(flat), args.batch):
                    chunk = flat[b:b + args.batch]
                    idx = torch.tensor([i for i, _ in chunk])
                    sub = emb.index([rows[i][c] for i, c in chunk])
                    v = unet(noisy[idx], torch.full((len(chunk),), sigma * 1000.0),
                             encoder_hidden_states=sub.tokens, encoder_attention_mask=sub.mask,
                             class_labels=sub.pooled).sample
                    err = (v.float() - target[idx]).pow(2).mean(dim=(1, 2, 3))
                    for (i, c), e in zip(chunk, err.tolist(), strict=True):
                        out[i, c, li, d] = e
        return out

    @torch.no_grad()
    def sample(prompts: list[str], seeds: list[int]) -> None:
        todo = [(p, s) for p, s in zip(prompts, seeds, strict=True) if (p, s) not in images]
        if not todo:
            return
        ps = [p for p, _ in todo for _ in range(n_cand)]
        ss = [s + j * DRAW_SEED_STRIDE for _, s in todo for j in range(n_cand)]
        lat = sample_guided(pipe, ps, ss, args.steps, args.guidance)
        pics = to_pil(pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample.float())
        errs = style_errors(lat, [split_style(p)[0] for p in ps], ss)
        for k, key in enumerate(todo):
            images[key] = pics[k * n_cand:(k + 1) * n_cand]
            errors[key] = errs[k * n_cand:(k + 1) * n_cand]

    def candidate(j: int) -> Any:
        def generate(prompts: list[str], seeds: list[int]) -> list[Any]:
            sample(prompts, seeds)
            return [images[(p, s)][j] for p, s in zip(prompts, seeds, strict=True)]
        return generate

    if args.real:
        real_icons(args, pipe, style_errors, tags, levels)
        return

    if args.cache and args.cache.exists():
        import numpy as np
        from PIL import Image

        saved = torch.load(args.cache, weights_only=False)
        if saved["levels"] != levels or saved["tags"] != tags:
            parser.error(f"{args.cache} was made with other levels or styles; give another --cache")
        for key, pics, err in zip(saved["keys"], saved["pictures"], saved["errors"], strict=True):
            images[key] = [Image.fromarray(np.asarray(a)) for a in pics]
            errors[key] = err

    corpus = eval_corpus()
    json_path, args.json = args.json, None
    reports = [score(candidate(j), args, f"candidate {j}", {"candidate": j}, corpus=corpus)
               for j in range(n_cand)]

    if args.cache and not args.cache.exists():
        import numpy as np

        pictures = [np.stack([np.asarray(im.convert("RGB")) for im in images[k]]) for k in images]
        torch.save({"levels": levels, "tags": tags, "keys": list(images), "pictures": pictures,
                    "errors": [errors[k] for k in images]}, args.cache)

    by_key = [{(it["prompt"], it["seed"]): it for it in rep["items"]} for rep in reports]
    keys = [(it["prompt"], it["seed"]) for it in reports[0]["items"]]
    seen = {k: by_key[0][k]["seen"] for k in keys}
    asked = {k: tags.index(split_style(k[0])[1] or "") for k in keys}

    def rate(pick: dict[tuple[str, int], int], ok: Any, only_seen: bool = True) -> float:
        ks = [k for k in keys if seen[k] or not only_seen]
        return round(sum(bool(ok(by_key[pick[k]][k])) for k in ks) / len(ks), 4)

    def near_copy(item: dict[str, Any]) -> bool:
        return bool(item.get("near_copy"))

    def margin(err: torch.Tensor, a: int, lv: list[int]) -> torch.Tensor:
        """Per candidate: the best other style's mean error minus the asked style's."""
        e = err[:, :len(tags), lv].mean(dim=(2, 3))
        others = e.clone()
        others[:, a] = float("inf")
        return others.min(dim=1).values - e[:, a]

    def posterior(err: torch.Tensor, a: int, lv: list[int], temp: float) -> torch.Tensor:
        """Per candidate: log-probability of the asked style, errors summed over levels and draws
        and read as negative log-likelihoods at temperature ``temp``."""
        e = err[:, :len(tags), lv].sum(dim=(2, 3))
        return (-e / temp).log_softmax(dim=1)[:, a]

    def over_caption(err: torch.Tensor, a: int, lv: list[int]) -> torch.Tensor:
        """Per candidate: how much the asked style's prompt lowers the error against the caption alone."""
        e = err[:, :, lv].mean(dim=(2, 3))
        return e[:, len(tags)] - e[:, a]

    everything = list(range(len(levels)))
    high = [i for i, s in enumerate(levels) if s >= 0.5]
    low = [i for i, s in enumerate(levels) if s < 0.5]
    rules: dict[str, Any] = {
        "margin (fixed in advance; all levels)": lambda err, a: margin(err, a, everything),
        "margin, levels >= 0.5": lambda err, a: margin(err, a, high),
        "margin, levels < 0.5": lambda err, a: margin(err, a, low),
        "posterior, T 0.01": lambda err, a: posterior(err, a, everything, 0.01),
        "posterior, T 0.1": lambda err, a: posterior(err, a, everything, 0.1),
        "asked style's error alone (lower)": lambda err, a: -err[:, a].mean(dim=(1, 2)),
        "gain over the caption alone": lambda err, a: over_caption(err, a, everything),
    }
    per_level = {f"margin at {levels[i]}": (lambda err, a, i=i: margin(err, a, [i])) for i in everything}
    rules.update(per_level)
    rows = []
    for name, rule in rules.items():
        pick = {k: int(rule(errors[k], asked[k]).argmax()) for k in keys}
        rows.append({"rule": name, "style": rate(pick, style_right),
                     "top5": rate(pick, lambda it: concept_in_top(it, 5)),
                     "near_copies": rate(pick, near_copy, only_seen=False),
                     "style_all": rate(pick, style_right, only_seen=False)})
    # the diffusion classifier's own reading of each seen candidate: does it name the asked style?
    reads = [int(errors[k][j, :len(tags)].mean(dim=(1, 2)).argmin()) == asked[k]
             for k in keys if seen[k] for j in range(n_cand)]
    judge_right = [style_right(by_key[j][k]) for k in keys if seen[k] for j in range(n_cand)]
    agreement = {"pictures": len(reads), "classifier_reads_asked": round(sum(reads) / len(reads), 4),
                 "judge_reads_asked": round(sum(judge_right) / len(reads), 4),
                 "both": round(sum(a and b for a, b in zip(reads, judge_right, strict=True)) / len(reads), 4)}
    per_candidate = [rate({k: j for k in keys}, style_right) for j in range(n_cand)]
    mean = round(sum(per_candidate) / n_cand, 4)
    oracle = {k: next((j for j in range(n_cand) if style_right(by_key[j][k])), 0) for k in keys}
    summary = {"candidates": n_cand, "model": str(args.model or "shipped"), "levels": levels,
               "noise_draws": args.noise_draws, "tags": tags, "per_candidate_style": per_candidate,
               "mean_candidate_style": mean,
               "mean_candidate_top5": round(sum(rate({k: j for k in keys}, lambda it: concept_in_top(it, 5))
                                                for j in range(n_cand)) / n_cand, 4),
               "oracle_style": rate(oracle, style_right), "selected": rows, "agreement": agreement,
               "items": [[by_key[j][k] for j in range(n_cand)] for k in keys],
               "errors": {f"{p}|{s}": errors[(p, s)].tolist() for p, s in keys}}
    print(f"each candidate's style: {per_candidate} (mean {mean}, top-5 {summary['mean_candidate_top5']}); "
          f"oracle style {summary['oracle_style']}")
    print(f"seen candidates read by the diffusion classifier and the judge: {agreement}")
    for row in rows:
        print(f"  {row['rule']:40s} style {row['style']:.3f}  top-5 {row['top5']:.3f}  "
              f"near-copies {row['near_copies']:.3f}")
    if json_path:
        json_path.write_text(json.dumps(summary, indent=1, default=str))


def real_icons(args: argparse.Namespace, pipe: Any, style_errors: Any, tags: list[str],
               levels: list[float]) -> None:
    """How often the denoiser names the style of the real icons of ``args``' seen prompts."""
    import torch

    from easel.diffusion.data import to_unit
    from easel.evaluation.data import select_prompts

    corpus = eval_corpus()
    rows = [r for r in select_prompts(corpus, split=args.split, n=args.n, seed=args.seed) if r.seen]
    where = {r["item_id"]: i for i, r in enumerate(corpus.rows)}
    pixels = torch.from_numpy(corpus.images()[[where[r.item_id] for r in rows]])
    with torch.no_grad():
        lat = pipe.vae.encode(to_unit(pixels.permute(0, 3, 1, 2))).latent_dist.mode()
    lat = lat * pipe.vae.config.scaling_factor
    err = style_errors(lat, [r.caption for r in rows], [r.seed for r in rows], caption_alone=False)
    asked = torch.tensor([tags.index(r.style_tag) for r in rows])

    def accuracy(lv: list[int]) -> float:
        return round(float((err[:, :, lv].mean(dim=(2, 3)).argmin(dim=1) == asked).float().mean()), 4)

    out = {"prompts": len(rows), "all_levels": accuracy(list(range(len(levels)))),
           "by_level": {str(s): accuracy([i]) for i, s in enumerate(levels)}}
    print(f"the denoiser names the style of {len(rows)} seen prompts' real icons: {out}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
