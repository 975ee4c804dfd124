"""``easel eval …``: the judges (classifiers trained on real icons) and model evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from easel.diffusion.defaults import SAMPLING, check_guidance
from easel.errors import BadInput

if TYPE_CHECKING:
    from easel.config import Settings
    from easel.evaluation.data import EvalCorpus

eval_app = typer.Typer(
    help="Evaluate text-to-image models with judges trained on real corpus images only.",
    no_args_is_help=True,
)

_MANIFEST_HELP = ("Corpus manifest (file or directory) the judges learn from "
                  "(default: EASEL_HOME/corpus/64px).")


def _corpus(manifest: Path | None) -> tuple[EvalCorpus, Settings]:
    from easel.config import get_settings
    from easel.evaluation.data import load_eval_corpus

    settings = get_settings()
    return load_eval_corpus(manifest or settings.corpus_dir / "64px"), settings


def _interval(text: str | None) -> tuple[float, float] | None:
    """``"LO,HI"`` → ``(lo, hi)`` with 0 ≤ lo < hi ≤ 1, or a ``BadInput`` saying what is wrong."""
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise BadInput(f"--guidance-interval: expected two numbers LO,HI, got {text!r}",
                       hint="e.g. --guidance-interval 0.5,1.0 (guide the noisier half)") from None
    from easel.diffusion.defaults import check_guidance_interval

    return check_guidance_interval((lo, hi), "--guidance-interval")


def _write_json(path: Path, payload: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str))
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from exc


@eval_app.command("classifiers")
def classifiers(
    manifest: Path | None = typer.Option(None, "--manifest", help=_MANIFEST_HELP),
    retrain: bool = typer.Option(False, "--retrain", help="Train again even if saved judges match."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the judges' configs and accuracy here."),
) -> None:
    """Train (or load and show) the style and concept judges.

    Prints each judge's accuracy on held-out real images and how they were held out.
    """
    from easel.evaluation.judges import ensure_judges

    corpus, settings = _corpus(manifest)
    settings.ensure_home()
    judges = ensure_judges(corpus, settings.home, retrain=retrain)
    typer.echo(f"corpus {corpus.manifest_path} (dataset {corpus.dataset_id[:16]}, {len(corpus.rows)} icons)")
    for judge in (judges.style, judges.concept):
        c, m = judge.config, judge.config["metrics"]
        where = (f"loaded from {judge.source}" if judge.source is not None
                 else f"trained now, saved in {judges.directory}")
        typer.echo(f"\n{judge.kind} judge: {len(judge.classes)} classes, {c['n_train']} training images, "
                   f"{c['n_heldout']} held out, trained in {c['train_seconds']} s "
                   f"({c['train_config']['epochs']} epochs) ({where})")
        typer.echo(f"  held out: {c['holdout']}")
        typer.echo(f"  top-1 {m['top1']:.3f}  top-5 {m['top5']:.3f}   via 32 px: top-1 "
                   f"{m['top1_via_32px']:.3f}  top-5 {m['top5_via_32px']:.3f}   (chance top-1 "
                   f"{m['chance_top1']:.4f})")
        for name, acc in (m.get("per_set") or {}).items():
            typer.echo(f"    {name:<20} {acc:.3f}")
        for group in ("train_concepts", "val_test_concepts"):
            if group in m:
                g = m[group]
                typer.echo(f"    {group.replace('_', ' '):<20} n={g['n']:<5} top-1 {g['top1']:.3f}  "
                           f"top-5 {g['top5']:.3f}")
    if json_out:
        _write_json(json_out, {"style": judges.style.config, "concept": judges.concept.config})
        typer.echo(f"\nwrote {json_out}")


@eval_app.command("model")
def model(
    model_dir: Path | None = typer.Option(None, "--model",
                                          help="Model directory (default: the shipped model)."),
    reference: str | None = typer.Option(None, "--reference",
                                         help="Evaluate a reference instead: real | real32 | noise | "
                                              "autoencoder (the real icons through --model's "
                                              "autoencoder)."),
    split: str = typer.Option("val", "--split", help="Prompt split: val, test, train or a comma list."),
    n: int = typer.Option(140, "-n", help="Number of prompts (spread over the six base sets)."),
    steps: int = typer.Option(SAMPLING.steps, "--steps", help="Sampler steps."),
    guidance: float = typer.Option(SAMPLING.guidance_scale, "--guidance",
                                   help="Classifier-free guidance scale."),
    guidance_interval: str | None = typer.Option(
        None, "--guidance-interval", metavar="LO,HI",
        help="Guide only the steps whose noise level (1 = noise, 0 = picture) is in [LO, HI]; "
             "default: every step. Measured, not the default (BENCHMARKS.md, \"guidance limited "
             "to an interval\")."),
    style_guidance: float = typer.Option(SAMPLING.style_guidance_scale, "--style-guidance",
                                         help="Extra guidance towards the prompt's style tag "
                                              "(full prompt minus caption alone; 0 = off)."),
    classifier_guidance: float | None = typer.Option(
        None, "--classifier-guidance",
        help="Style classifier guidance scale, for a model with a style classifier (`easel train "
             "style-guide`); 0 = off. Default: the model's own."),
    palette_strength: float | None = typer.Option(
        None, "--palette-strength",
        help="Style palette strength, for a model with a style palette (`easel train palette`); "
             "0 = off, which scores the denoiser's own colours. Default: the model's own."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first prompt (prompt i uses seed + i)."),
    draws: int = typer.Option(1, "--draws", help="Pictures per prompt, each from its own seed (draw r "
                              "adds r x 1,000,003); the figures pool them, and the report adds each "
                              "draw's figures and the standard errors. One draw's style accuracy "
                              "moved by 0.02-0.05 (standard deviation) with the seeds alone on "
                              "the embedded model's 134 seen prompts; 4 draws halve that."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per generator call."),
    manifest: Path | None = typer.Option(None, "--manifest", help=_MANIFEST_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write every figure to this JSON file."),
    sheet: Path | None = typer.Option(None, "--contact-sheet",
                                      help="Also generate the 16 fixed prompts; save their contact sheet."),
    record: bool = typer.Option(False, "--record", help="Also write the figures into the model "
                                "directory's model card (evaluation per split + a learning-curve point)."),
) -> None:
    """Score a model (or a reference generator) on a split's prompts.

    Style, concept top-1/top-5, Fréchet distance, near-copies; beside: real icons, judges' accuracy.
    """
    from easel.evaluation.data import (
        CONTACT_SHEET_PROMPTS,
        CONTACT_SHEET_SEEDS,
        check_draws,
        select_prompts,
        with_draws,
    )
    from easel.evaluation.judges import ensure_judges
    from easel.evaluation.reference import PipelineGenerator, reference_generator
    from easel.evaluation.report import evaluate_generator, format_report

    if reference is not None and model_dir is not None and reference != "autoencoder":
        raise BadInput("give --model or --reference, not both (except --reference autoencoder)")
    if steps < 1 or steps > 1000:
        raise BadInput(f"--steps must be between 1 and 1000, got {steps}")
    check_draws(draws)
    interval = _interval(guidance_interval)
    if interval is not None and reference is not None:
        raise BadInput("--guidance-interval is a sampler setting; a --reference has no sampler")
    check_guidance(style_guidance, "--style-guidance")
    if classifier_guidance is not None:
        check_guidance(classifier_guidance, "--classifier-guidance")
        if reference is not None:
            raise BadInput("--classifier-guidance is a sampler setting; a --reference has no sampler")
    if palette_strength is not None:
        from easel.diffusion.palette import check_strength

        check_strength(palette_strength, "--palette-strength")
        if reference is not None:
            raise BadInput("--palette-strength is a pipeline setting; a --reference has no pipeline")
    model_id, target = None, None
    if record:
        from easel.diffusion.model_card import read_model_card
        from easel.diffusion.pipeline import SHIPPED_MODEL_DIR

        if reference is not None:
            raise BadInput("--record writes into a model's card; a --reference has none")
        target = model_dir or SHIPPED_MODEL_DIR
        model_id = read_model_card(target).get("model_id")
        if model_id is None:
            raise BadInput(f"{target} has no model card to record into",
                           hint="record only into model directories written by `easel train base`")
    corpus, settings = _corpus(manifest)
    rows = with_draws(select_prompts(corpus, split=split, n=n, seed=seed), draws)
    generator: object
    run_settings: dict[str, object]
    if reference is not None:
        generator = reference_generator(reference, corpus, model_dir)
        name, run_settings = f"reference:{reference}", {}
        if model_dir is not None:
            run_settings["model"] = str(model_dir)
    else:
        generator = PipelineGenerator(model_dir, steps=steps, guidance=guidance, guidance_interval=interval,
                                      style_guidance=style_guidance,
                                      classifier_guidance=classifier_guidance,
                                      palette_strength=palette_strength)
        name = f"model:{model_dir or 'shipped'}"
        run_settings = {"steps": steps, "guidance": guidance, "model": str(model_dir or "shipped")}
        if style_guidance:
            run_settings["style_guidance"] = style_guidance
        if interval is not None:
            run_settings["guidance_interval"] = list(interval)
        in_force = generator.pipe.classifier_guidance_in_force(classifier_guidance)
        if in_force:
            run_settings["classifier_guidance"] = in_force
        painting = generator.pipe.palette_strength_in_force(palette_strength)
        if painting:
            run_settings["palette_strength"] = painting
    if draws > 1:
        run_settings["draws"] = draws
    settings.ensure_home()
    judges = ensure_judges(corpus, settings.home)
    report = evaluate_generator(generator, rows, corpus=corpus, judges=judges, name=name,  # type: ignore[arg-type]
                                batch_size=batch_size, settings=run_settings)
    typer.echo(format_report(report))
    if sheet is not None:
        from easel.corpus.captions import prompt_for
        from easel.evaluation.sheet import contact_sheet

        prompts = [prompt_for(c, s) for c, s in CONTACT_SHEET_PROMPTS]
        images = generator(prompts, list(CONTACT_SHEET_SEEDS))  # type: ignore[operator]
        sheet.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(images, prompts).save(sheet)
        report["contact_sheet"] = {"path": str(sheet), "prompts": prompts, "seeds": list(CONTACT_SHEET_SEEDS)}
        typer.echo(f"\nwrote contact sheet {sheet}")
    if json_out:
        _write_json(json_out, report)
        typer.echo(f"wrote {json_out}")
    if target is not None and model_id is not None:
        from easel.diffusion.model_card import record_evaluation

        record_evaluation(target, json.loads(json.dumps(report, default=str)), model_id)
        typer.echo(f"recorded the figures in {target / 'model_card.json'}")


@eval_app.command("compare")
def compare_reports(
    base: Path = typer.Argument(..., help="The report to compare against (`easel eval model --json`)."),
    others: list[Path] = typer.Argument(..., help="One or more reports on the same prompts and seeds."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the counts to this JSON file."),
) -> None:
    """Compare reports prompt by prompt: how often only one model gets the style (or concept) right.

    The reports must come from the same --split, -n and --seed, so that each prompt was drawn with
    the same seed by both models. Prints, for style and concept top-1 and top-5, the prompts
    only the new model gets right, those only the base gets right, and the exact two-sided sign
    test's p on those two counts, over all shared prompts, over seen concepts (reports that say
    which are seen) and per set."""
    from easel.evaluation.compare import compare, format_comparison, load_report

    base_items = load_report(base)
    results = {}
    for other in others:
        result = compare(base_items, load_report(other))
        typer.echo(format_comparison(base.name, other.name, result))
        results[str(other)] = result
    if json_out:
        _write_json(json_out, {"base": str(base), "comparisons": results})
        typer.echo(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    """Add the ``eval`` verbs to the ``easel`` app."""
    app.add_typer(eval_app, name="eval")
