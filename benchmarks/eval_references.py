"""Reference generators through ``easel eval model``'s scoring: the real icons (a ceiling) and
pixel noise (a floor), on val, test and train prompts; prints Markdown rows for BENCHMARKS.md.

    EASEL_HOME=/tmp/eh nice -n 10 .venv/bin/python benchmarks/eval_references.py \
        [--manifest /tmp/eh/corpus/64px] [-n 140] [--json out.json]

Trains the judges first if ``easel eval classifiers`` has not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    from easel.config import get_settings
    from easel.evaluation import (
        NoiseGenerator,
        RealIconGenerator,
        ensure_judges,
        evaluate_generator,
        load_eval_corpus,
        select_prompts,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("-n", type=int, default=140)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = get_settings()
    corpus = load_eval_corpus(args.manifest or settings.corpus_dir / "64px")
    judges = ensure_judges(corpus, settings.home)
    out: dict = {}
    print("| split | generator | n | style acc. | concept top-1 | concept top-5 | Fréchet | near-copies "
          "| PDQ ≤ 31 | s/image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for split in ("val", "test", "train"):
        rows = select_prompts(corpus, split, n=args.n)
        for name, gen in (("real icons", RealIconGenerator(corpus)),
                          ("real icons at 32 px", RealIconGenerator(corpus, size=32)),
                          ("noise", NoiseGenerator())):
            rep = evaluate_generator(gen, rows, corpus=corpus, judges=judges, name=name,
                                     real_baseline=False, progress=False)
            o = rep["generated"]["overall"]
            out[f"{split}/{name}"] = {k: v for k, v in rep.items() if k != "items"}
            print(f"| {split} | {name} | {o['n']} | {o['style_accuracy']:.3f} | {o['concept_top1']:.3f} | "
                  f"{o['concept_top5']:.3f} | {o['frechet']:.2f} | {o['near_copy_share']:.3f} | "
                  f"{rep['generated']['pdq_match_share']:.3f} | {rep['seconds']['per_image']:.3f} |",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
