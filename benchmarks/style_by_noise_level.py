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
from typing import Any

from benchmarks.judged import add_prompt_options, eval_corpus, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, required=True, help="noise level to start from, (0, 1]")
    add_prompt_options(parser)
    args = parser.parse_args()
    if not 0.0 < args.strength <= 1.0:
        parser.error(f"--strength must be in (0, 1], got {args.strength}")

    from easel.diffusion.pipeline import load_pipeline
    from easel.evaluation.reference import RealIconGenerator

    corpus = eval_corpus()
    real = RealIconGenerator(corpus)
    pipe = load_pipeline(args.model)

    def generate(prompts: list[str], seeds: list[int]) -> list[Any]:
        icons = real(prompts, seeds)
        return [pipe([p], seeds=[s], image=icon, strength=args.strength, upscale=False).images[0]
                for p, s, icon in zip(prompts, seeds, icons, strict=True)]

    score(generate, args, f"real icons denoised from σ {args.strength:g}",
          {"strength": args.strength, "model": str(args.model or "shipped")}, corpus=corpus)


if __name__ == "__main__":
    main()
