"""The descriptor encoder's model card: ``card.json`` (machine-readable) and ``README.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from easel import __version__


def train_command(config: dict[str, Any]) -> str:
    """The ``easel audit train`` command line that a training config came from."""
    parts = ["easel audit train", f"--manifest {config.get('manifest')}",
             f"--steps {config.get('max_steps')}", f"--minutes {config.get('minutes')}",
             f"--batch-size {config.get('batch_size')}", f"--lr {config.get('lr')}"]
    if config.get("init_from"):
        parts.append(f"--init-from {config['init_from']}")
    if config.get("style_head_steps"):
        parts.append(f"--style-head-steps {config['style_head_steps']}")
    if "style_input" in config:
        parts += [f"--style-input {config['style_input']}",
                  f"--style-colour-levels {config.get('style_colour_levels', 0)}",
                  f"--style-hidden {config.get('style_hidden', 0)}"]
    return " ".join(parts)


def write_card(folder: Path, training: dict[str, Any], report: dict[str, Any] | None,
               notes: str = "") -> None:
    """Write ``card.json`` and ``README.md`` into the model ``folder``."""
    from easel.audit.encoder import DescriptorEncoder

    model = DescriptorEncoder.from_pretrained(str(folder))
    params = sum(p.numel() for p in model.parameters())
    card = {"name": "easel-descriptors", "easel_version": __version__, "parameters": params,
            "config": dict(model.config), "training": training, "evaluation": report, "notes": notes}
    (folder / "card.json").write_text(json.dumps(card, indent=2, default=str))
    lines = [
        "# Easel descriptor encoder",
        "",
        f"A compact CNN ({params:,} parameters, {model.config.image_size} px input) with three "
        "L2-normalised heads: **copy** (instance discrimination under strong augmentation, SSCD-like), "
        "**style** (supervised contrastive on the icon set, CSD-like) and **content** (aligned with "
        "the frozen all-MiniLM-L6-v2 caption embeddings, CLIP-like). Used by `easel audit`, the "
        "registry's ingest check and the generator's output guard.",
        "",
        "## Training",
        "",
        f"- data: train split of `{training.get('config', {}).get('manifest')}` "
        f"({training.get('train_items')} icons of sets {', '.join(training.get('sets', []))}); "
        "the val split calibrates thresholds, the test split is reported",
        f"- steps: {training.get('steps')} of batch {training.get('config', {}).get('batch_size')} "
        "(two augmented views each), AdamW, cosine schedule, one CPU thread",
        f"- command: `{train_command(training.get('config', {}))}`",
        "",
    ]
    earlier = training.get("init_from_training")
    while earlier:  # the runs these weights started from, newest first
        lines.insert(-1, f"- started from: {earlier.get('steps')} steps, "
                         f"`{train_command(earlier.get('config', {}))}`")
        earlier = earlier.get("init_from_training")
    if notes:
        lines += ["## Notes", "", notes, ""]
    if report:
        lines += ["## Evaluation", "", f"`easel audit eval --split {report['split']}` on "
                  f"{report['icons']} icons ({report['copy_negatives']:,} negative pairs):", "",
                  "Copy scores are the best over each registered work's reference views (the whole "
                  "picture, nine half-area crops, ±12° rotations); *whole only* scores the whole "
                  "picture alone; *normalised* subtracts half the query's "
                  "mean score with its five best works in the registry (per-query score normalisation, "
                  "reported; the verdicts use the plain score).", ""]
        norm = "copy_normalised_recall_at_fpr_1e-4" in report
        lines += ["| attack | " + ("normalised recall@FPR1e-4 | normalised µAP | " if norm else "")
                  + "copy recall@FPR1e-4 | copy µAP | whole only: recall@FPR1e-4 "
                  "| PDQ recall@FPR1e-4 | PDQ µAP |",
                  "| --- | " + ("--- | --- | " if norm else "") + "--- | --- | --- | --- | --- |"]
        for name, r in report["attacks"].items():
            n = r.get("copy_normalised", {})
            first = f"{n['recall_at_fpr_1e-4']:.3f} | {n['uAP']:.3f} | " if norm else ""
            lines.append(f"| {name} | {first}{r['copy']['recall_at_fpr_1e-4']:.3f} | "
                         f"{r['copy']['uAP']:.3f} | "
                         f"{r['copy_whole']['recall_at_fpr_1e-4']:.3f} | "
                         f"{r['pdq']['recall_at_fpr_1e-4']:.3f} | {r['pdq']['uAP']:.3f} |")
        first = (f"**{report['copy_normalised_recall_at_fpr_1e-4']:.3f}** | "
                 f"{report['copy_normalised_uAP']:.3f} | " if norm else "")
        lines += [f"| **mean** | {first}{report['copy_recall_at_fpr_1e-4']:.3f} | {report['copy_uAP']:.3f} | "
                  f"{report['copy_whole_recall_at_fpr_1e-4']:.3f} | "
                  f"{report['pdq_recall_at_fpr_1e-4']:.3f} | {report['pdq_uAP']:.3f} |", ""]
        if "pixel_twin_pairs" in report:
            chained = report.get("chained_pairs", {})
            examples = ", ".join(f"{k} {v}" for k, v in list(chained.items())[:3])
            lines += [f"Negatives leave out a query's PDQ twins, skin-tone variants, "
                      f"{len(report['pixel_twin_pairs'])} pixel-twin pairs (pictures within RMSE 0.03 "
                      f"at 32 px: one picture under two names) and {sum(chained.values())} pairs "
                      "joined by a chain of those (a variant of a variant"
                      + (f": {examples}" if examples else "")
                      + "). Pairwise, without chains, copy recall at FPR 1e-4 is "
                      f"{report['copy_recall_at_fpr_1e-4_pairwise_rule']:.3f} (threshold "
                      f"{report['copy_threshold_fpr_1e-4_pairwise_rule']:.3f}); with PDQ twins and "
                      f"skin tones only, {report['copy_recall_at_fpr_1e-4_pdq_tone_rule']:.3f}.", ""]
        by_set = ", ".join(f"{s} {r['mAP@10']:.2f}" for s, r in report.get("style_by_set", {}).items())
        lines += [f"- style: mAP@10 {report['style_mAP@10']:.3f}, recall@1 {report['style_recall@1']:.3f}"
                  + (f" (by set: {by_set})" if by_set else ""),
                  f"- text→image recall@5: {report['text_to_image_recall@5']:.3f} "
                  f"({report['text_queries']} captions)",
                  f"- descriptor throughput: {report['descriptor_images_per_s']:.0f} images/s "
                  "(one thread, shared machine)", ""]
    (folder / "README.md").write_text("\n".join(lines))
