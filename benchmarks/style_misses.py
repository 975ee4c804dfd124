"""Which prompts' styles several models miss (BENCHMARKS.md, session 20).

Reads the JSON reports of ``easel eval model --json`` or of the judged benchmarks, all on the same
prompts and seeds. For each prompt it counts the models whose image the style judge gives the
wrong set. For the prompts that at least ``--hard`` models miss, it runs the style judge on the
prompts' real icons, to tell prompts whose styles look alike from prompts the models get wrong.

    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=1 python -m benchmarks.style_misses \\
        --hard 7 [--reseed 6 [--model DIR]] A.json B.json ...

``--reseed K`` draws each hard prompt K more times with other seeds (100, 101, …) with the shipped
model (or ``--model``) and counts how often the judge reads the style right: are the misses the
model's picture of the prompt, or the eval seed's? Related checkpoints share their seeds' layouts,
so agreement between them alone cannot tell.

Fast (seconds) without ``--reseed``; with it, about a second a picture on one thread.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="report JSON files, one per model")
    parser.add_argument("--hard", type=int, default=None,
                        help="a prompt is hard when at least this many models miss it (default: all but one)")
    parser.add_argument("--reseed", type=int, default=0, help="draw each hard prompt this many more times")
    parser.add_argument("--model", type=Path, default=None, help="model for --reseed (default: shipped)")
    args = parser.parse_args()
    hard_at = args.hard if args.hard is not None else max(1, len(args.reports) - 1)

    from easel.evaluation.compare import load_report

    reports = [load_report(path) for path in args.reports]
    verdicts = [{k: i["style_predicted"] == i["set_id"] for k, i in r.items()} for r in reports]
    keys = sorted(set.intersection(*(set(v) for v in verdicts)))
    if not keys:
        parser.error("the reports share no (prompt, seed): they must be on the same prompts")
    set_of = {k: i["set_id"] for k, i in reports[0].items()}
    misses = {k: sum(not v[k] for v in verdicts) for k in keys}
    counts = Counter(misses.values())
    print(f"{len(keys)} prompts, {len(reports)} models")
    columns = range(len(reports) + 1)
    print("models that miss the style | " + " | ".join(str(m) for m in columns))
    print("prompts                    | " + " | ".join(str(counts.get(m, 0)) for m in columns))
    for path, v in zip(args.reports, verdicts, strict=True):
        print(f"  {path.name}: misses {sum(not v[k] for k in keys)}")

    hard = [k for k in keys if misses[k] >= hard_at]
    print(f"missed by at least {hard_at} models: {len(hard)} "
          f"({', '.join(f'{s} {n}' for s, n in Counter(set_of[k] for k in hard).most_common())})")
    if not hard:
        return
    import numpy as np

    from benchmarks.judged import eval_corpus
    from easel.config import get_settings
    from easel.evaluation.data import to_rgb_array
    from easel.evaluation.judges import ensure_judges
    from easel.evaluation.reference import RealIconGenerator

    corpus = eval_corpus()
    judges = ensure_judges(corpus, get_settings().home)
    real = RealIconGenerator(corpus)([p for p, _ in hard], [s for _, s in hard])
    logits, _ = judges.style.predict(np.stack([to_rgb_array(image) for image in real]))
    read = [judges.style.classes[j] for j in logits.argmax(1).tolist()]
    right = sum(r == set_of[k] for r, k in zip(read, hard, strict=True))
    print(f"the style judge reads the real icons of {right} of these {len(hard)} prompts right")
    for (prompt, _), r in zip(hard, read, strict=True):
        print(f"  {prompt}: real icon read as {r}")
    if args.reseed > 0:
        from easel.diffusion.pipeline import load_pipeline

        pipe = load_pipeline(args.model)
        seeds = [100 + i for i in range(args.reseed)]
        right_total = 0
        print(f"each hard prompt drawn with seeds {seeds[0]}..{seeds[-1]}:")
        for key in hard:
            images = pipe([key[0]] * len(seeds), seeds=seeds, upscale=False).images
            logits, _ = judges.style.predict(np.stack([to_rgb_array(image) for image in images]))
            right = sum(judges.style.classes[j] == set_of[key] for j in logits.argmax(1).tolist())
            right_total += right
            print(f"  {key[0]}: style right {right} of {len(seeds)}")
        print(f"style right {right_total} of {len(seeds) * len(hard)} on the other seeds")


if __name__ == "__main__":
    main()
