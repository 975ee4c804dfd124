"""Shared by the benchmarks that score a sampler with the shipped judges, as ``easel eval model``
does: the prompt options (``--split``, ``-n``, ``--seed``, ``--draws``, ``--json``, and ``--model``) and the
scoring, printing and writing of the report."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def add_prompt_options(parser: argparse.ArgumentParser, model: bool = True) -> None:
    """The options every judged benchmark takes (``model``: also ``--model DIR``)."""
    if model:
        parser.add_argument("--model", type=Path, default=None, help="model directory (default: shipped)")
    parser.add_argument("--split", default="train,val")
    parser.add_argument("-n", type=int, default=140)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=1,
                        help="pictures per prompt, as `easel eval model --draws`")
    parser.add_argument("--json", type=Path, default=None)


def add_candidate_options(parser: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that sample several candidates per prompt and choose one:
    ``--candidates``, ``--steps``, ``--guidance`` (checked by :func:`check_candidate_options`)."""
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=6.0)


def check_candidate_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.candidates < 2:
        parser.error("--candidates must be at least 2")
    if args.draws != 1:
        parser.error("--draws does not apply: the candidates are the draws (--candidates)")


def eval_corpus() -> Any:
    """The 64 px evaluation corpus of ``EASEL_HOME``."""
    from easel.config import get_settings
    from easel.evaluation.data import load_eval_corpus

    return load_eval_corpus(get_settings().corpus_dir / "64px")


def score(generate: Callable[[list[str], list[int]], Sequence[Any]], args: argparse.Namespace, name: str,
          settings: dict[str, Any], corpus: Any = None) -> dict[str, Any]:
    """Score ``generate`` on ``args``' prompts with the shipped judges; print the report and write
    it to ``args.json`` when given."""
    from easel.config import get_settings
    from easel.evaluation.data import select_prompts, with_draws
    from easel.evaluation.judges import ensure_judges
    from easel.evaluation.report import evaluate_generator, format_report

    corpus = corpus if corpus is not None else eval_corpus()
    rows = with_draws(select_prompts(corpus, split=args.split, n=args.n, seed=args.seed),
                      getattr(args, "draws", 1))
    judges = ensure_judges(corpus, get_settings().home)
    report = evaluate_generator(generate, rows, corpus=corpus, judges=judges, name=name, batch_size=16,
                                settings=settings)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return report


def sample_guided(pipe: Any, prompts: list[str], seeds: list[int], steps: int, guidance: float,
                  after_step: Callable[[int, float, Any], None] | None = None,
                  adjust: Callable[[float, Any, Any], Any] | None = None) -> Any:
    """The finished latents of the pipeline's text-to-image sampler (Euler, classifier-free
    guidance ``guidance``, ``steps`` steps) on ``prompts``, one start noise per seed, as
    ``EaselPipeline`` draws it; ``after_step(i, sigma, latents)`` sees the latents after step
    ``i``, at noise level ``sigma``; ``adjust(sigma, latents, v)`` may replace each step's guided
    velocity ``v`` (``latents`` at noise level ``sigma``, before the step)."""
    import torch

    from easel.diffusion.text_encoder import PromptEmbeddings

    unet, n = pipe.unet, len(prompts)
    both = PromptEmbeddings.cat([pipe.encode_prompts([""]).index([0] * n), pipe.encode_prompts(prompts)])
    c, r = unet.config.out_channels, unet.config.sample_size
    lat = torch.stack([torch.randn((c, r, r), generator=torch.Generator("cpu").manual_seed(s))
                       for s in seeds])
    sch = pipe.scheduler
    sch.set_timesteps(steps)
    sch.set_begin_index(0)
    with torch.no_grad():
        for i, t in enumerate(sch.timesteps):
            vu, vc = unet(torch.cat([lat] * 2), t.expand(2 * n), encoder_hidden_states=both.tokens,
                          encoder_attention_mask=both.mask, class_labels=both.pooled).sample.chunk(2)
            v = vu + guidance * (vc - vu)
            if adjust is not None:
                v = adjust(float(sch.sigmas[i]), lat, v)
            lat = sch.step(v, t, lat).prev_sample
            if after_step is not None:
                after_step(i, float(sch.sigmas[i + 1]), lat)
    return lat
