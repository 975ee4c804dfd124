"""Does a LoRA adapter per *base* style lift that style? (BENCHMARKS.md, session 17.)

Trains one personal-style adapter (``easel.style.adapter.train_adapter``: LoRA on the UNet's
attention projections, the base model's rectified-flow loss) on one base set's train-split icons
with their ordinary prompts ("acorn, fxemoji style"), then scores the shipped model with and
without it on that set's ``easel eval model`` prompts, with the shipped judges.

    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=1 python -m benchmarks.base_style_adapter \\
        --set fxemoji --manifest <64 px build> [--steps 300 --batch 16 --lr 1e-3 --rank 8]

Slow (5 minutes of training and 3 of scoring on one core): not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="base set id, e.g. fxemoji")
    parser.add_argument("--manifest", type=Path, required=True, help="64 px build to train on")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--split", default="train,val")
    parser.add_argument("-n", type=int, default=46, help="prompts (the set has fewer in train,val)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from easel.config import get_settings
    from easel.diffusion.data import load_training_set
    from easel.diffusion.pipeline import load_pipeline
    from easel.evaluation.data import load_eval_corpus, select_prompts
    from easel.evaluation.judges import ensure_judges
    from easel.evaluation.report import evaluate_generator, format_report
    from easel.style.adapter import StyleTrainConfig, train_adapter

    torch.set_num_threads(1)
    data = load_training_set(args.manifest, progress=False)
    keep = [i for i, s in enumerate(data.set_ids) if s == args.set]
    if not keep:
        parser.error(f"no train-split items of set {args.set!r} in {args.manifest}")
    pipe = load_pipeline(None)
    config = StyleTrainConfig(rank=args.rank, steps=args.steps, batch_size=args.batch,
                              learning_rate=args.lr, flip=False, threads=1)
    started = time.monotonic()
    trained = train_adapter(pipe, data.images[keep], [data.prompts[i] for i in keep], config, progress=False)
    print(f"{args.set}: {len(keep)} icons, {trained.steps} steps in {time.monotonic() - started:.0f} s, "
          f"loss per 20 steps {trained.losses[0]} → {trained.losses[-1]}")

    settings = get_settings()
    corpus = load_eval_corpus(settings.corpus_dir / "64px")
    rows = select_prompts(corpus, split=args.split, n=args.n, seed=0, sets=[args.set])
    judges = ensure_judges(corpus, settings.home)
    reports = {}
    for name, adapted in (("with adapter", True), ("base model", False)):
        if adapted:
            pipe.unet.enable_adapters()
        else:
            pipe.unet.disable_adapters()
        reports[name] = evaluate_generator(
            lambda prompts, seeds: pipe(prompts, seeds=seeds, upscale=False).images, rows,
            corpus=corpus, judges=judges, name=name, batch_size=16,
            settings={**vars(args), "adapter": adapted})
        print(format_report(reports[name]))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1, default=str))


if __name__ == "__main__":
    main()
