"""Evaluation of text-to-image generators by judges trained on real corpus images.

``easel eval classifiers`` trains (or shows) the judges; ``easel eval model`` scores a model:
style accuracy, concept top-1/top-5, Fréchet distance, memorisation, with the judges' own
held-out real-image accuracy beside every figure.

Python API::

    corpus = load_eval_corpus(Path(".../64px"))
    judges = ensure_judges(corpus, settings.home)
    rows = select_prompts(corpus, split="val", n=140)
    report = evaluate_generator(generate, rows, corpus=corpus, judges=judges)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> submodule; imported on first use so that `easel.evaluation.data` (and the CLI's
# argument checks) do not pay for torch.
_EXPORTS = {
    "contact_sheet": "sheet",
    "CONTACT_SHEET_PROMPTS": "data", "CONTACT_SHEET_SEEDS": "data", "EvalCorpus": "data",
    "PromptRow": "data", "load_eval_corpus": "data", "select_prompts": "data",
    "Judges": "judges", "ensure_judges": "judges", "train_judge": "judges",
    "AutoencodedIconGenerator": "reference", "NoiseGenerator": "reference",
    "PipelineGenerator": "reference", "RealIconGenerator": "reference",
    "evaluate_generator": "report", "format_report": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"easel.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'easel.evaluation' has no attribute {name!r}")
