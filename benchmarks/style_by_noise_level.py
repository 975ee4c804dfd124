"""Where does the embedded model lose a picture's style? (BENCHMARKS.md, session 16.)

Each evaluation prompt's own real icon is encoded, noised to level σ = ``--strength`` and
denoised by the model with its default sampler from there (img2img), and the results are scored
by ``easel.evaluation.evaluate_generator`` with the shipped judges, as ``easel eval model``
scores generated pictures. Strength 1 is plain generation; a style that survives strength S was
lost, if at all, above σ = S.

    EASEL_HOME=<plain 64 px build> OMP_NUM_THREADS=1 python -m benchmarks.style_by_noise_level \\
        --strength 0.6 [--model DIR] [--split train,val] [--json out.json]

Slow (2–4 minutes per strength on one core): not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, required=True, help="noise level to start from, (0, 1]")
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: shipped)")
    parser.add_argument("--split", default="train,val")
    parser.add_argument("-n", type=int, default=140)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not 0.0 < args.strength <= 1.0:
        parser.error(f"--strength must be in (0, 1], got {args.strength}")

    from easel.config import get_settings
    from easel.diffusion.pipeline import load_pipeline
    from easel.evaluation.data import load_eval_corpus, select_prompts
    from easel.evaluation.judges import ensure_judges
    from easel.evaluation.reference import RealIconGenerator
    from easel.evaluation.report import evaluate_generator, format_report

    settings = get_settings()
    corpus = load_eval_corpus(settings.corpus_dir / "64px")
    rows = select_prompts(corpus, split=args.split, n=args.n, seed=args.seed)
    real = RealIconGenerator(corpus)
    pipe = load_pipeline(args.model)

    def generate(prompts: list[str], seeds: list[int]) -> list[Any]:
        icons = real(prompts, seeds)
        return [pipe([p], seeds=[s], image=icon, strength=args.strength, upscale=False).images[0]
                for p, s, icon in zip(prompts, seeds, icons, strict=True)]

    judges = ensure_judges(corpus, settings.home)
    report = evaluate_generator(generate, rows, corpus=corpus, judges=judges,
                                name=f"real icons denoised from σ {args.strength:g}", batch_size=16,
                                settings={"strength": args.strength, "model": str(args.model or "shipped")})
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
