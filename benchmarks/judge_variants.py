"""Train one judge variant and measure it (BENCHMARKS.md, "Stronger judges").

Prints the judge's accuracy on its held-out real images (the only figure a variant is chosen
by), and for the style judge also its accuracy on its own training images and on the real
icons of the evaluation prompts (diagnostics: is it underfitting? can it certify a target?).
The judge is saved under ``--out`` (not into ``EASEL_HOME``), so it replaces nothing.

    OMP_NUM_THREADS=1 python benchmarks/judge_variants.py --manifest <plain 64 px manifest> \\
        --kind style --epochs 32 --width 32 --class-balance 1 --out <scratch dir>

Slow (10–40 minutes on one core): not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--kind", choices=("style", "concept"), required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--class-balance", type=float, default=0.0)
    parser.add_argument("--split", default="train,val", help="prompts whose real icons are scored")
    parser.add_argument("--out", type=Path, required=True, help="where the judge is saved")
    args = parser.parse_args()

    import numpy as np
    import torch

    from easel.evaluation.data import load_eval_corpus, select_prompts
    from easel.evaluation.judges import JudgeTrainConfig, _labels, judge_split, save_judge, train_judge

    torch.set_num_threads(1)
    corpus = load_eval_corpus(args.manifest)
    cfg = JudgeTrainConfig(epochs=args.epochs, width=args.width, class_balance=args.class_balance)
    started = time.perf_counter()
    judge = train_judge(corpus, args.kind, cfg)
    save_judge(judge, args.out)
    result: dict = {"config": judge.config["train_config"], "seconds": round(time.perf_counter() - started),
                    "held_out": judge.config["metrics"]}
    if args.kind == "style":
        images = corpus.images()
        _, labels = _labels(corpus, "style")

        def accuracy(idx: np.ndarray) -> float:
            logits, _ = judge.predict(images[idx])
            return round(float((logits.argmax(1).numpy() == labels[idx]).mean()), 4)

        train_idx, _, _ = judge_split(corpus, "style")
        result["own_training_images"] = accuracy(train_idx)
        index = {r["item_id"]: i for i, r in enumerate(corpus.rows)}
        rows = np.asarray([index[r.item_id] for r in select_prompts(corpus, args.split)])
        result[f"prompts_real_icons_{args.split}"] = accuracy(rows)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
