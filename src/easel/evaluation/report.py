"""Score a text-to-image generator with the judges: style accuracy, concept top-1/top-5,
Fréchet distance, memorisation — overall, per set, and for seen / unseen concepts apart.

A *generator* is any callable ``(prompts: list[str], seeds: list[int]) -> list[PIL.Image]``.
The prompts' own real icons are scored the same way beside it (the ``real icons`` column), so
every figure has its ceiling next to it.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from easel.errors import BadInput, EaselError
from easel.evaluation.compare import concept_in_top, style_right
from easel.evaluation.data import DRAW_SEED_STRIDE, EvalCorpus, PromptRow, to_rgb_array
from easel.evaluation.judges import Judges, topk_hits
from easel.evaluation.metrics import (
    NEAR_COPY_RMSE,
    PDQ_MATCH_DISTANCE,
    FeatureSpace,
    MemorisationIndex,
    frechet_distance,
)

Generator = Callable[[list[str], list[int]], Sequence[Any]]
# Real images per set that a Fréchet distance compares against (a fixed subsample when more).
REAL_POOL_MAX = 1000


def generate_images(generate: Generator, rows: Sequence[PromptRow], batch_size: int = 16,
                    progress: bool = True) -> np.ndarray:
    """Call ``generate`` on the rows' prompts and seeds in batches → ``uint8 [N x 64 x 64 x 3]``."""
    from tqdm import tqdm

    out: list[np.ndarray] = []
    bar = tqdm(total=len(rows), desc="generate", unit="image", disable=not progress)
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        images = generate([r.prompt for r in batch], [r.seed for r in batch])
        if images is None or len(images) != len(batch):
            got = "None" if images is None else str(len(images))
            raise EaselError(f"the generator returned {got} images for {len(batch)} prompts",
                             hint="a generator must return one PIL image per prompt")
        out.extend(to_rgb_array(im) for im in images)
        bar.update(len(batch))
    bar.close()
    return np.stack(out)


def _summary(sel: np.ndarray, style_ok: np.ndarray, top1: np.ndarray, top5: np.ndarray,
             near: np.ndarray, gen_feats: np.ndarray, real_feats: np.ndarray) -> dict:
    n = int(sel.sum())
    if n == 0:
        return {"n": 0}

    def mean(v: np.ndarray) -> float:
        return round(float(v[sel].mean()), 4)

    fd = frechet_distance(gen_feats[sel], real_feats)
    return {"n": n, "style_accuracy": mean(style_ok), "concept_top1": mean(top1),
            "concept_top5": mean(top5), "frechet": None if math.isnan(fd) else round(fd, 3),
            "near_copy_share": mean(near)}


def _real_pool(corpus: EvalCorpus, rows: Sequence[PromptRow]) -> np.ndarray:
    splits = tuple(sorted({r.split for r in rows}))
    pool: list[int] = []
    for set_id in sorted({r.set_id for r in rows}):
        idx = corpus.index_where(splits=splits, sets=[set_id])
        if len(idx) > REAL_POOL_MAX:
            idx = np.sort(np.random.default_rng(0).choice(idx, REAL_POOL_MAX, replace=False))
        pool.extend(idx.tolist())
    return np.asarray(pool, dtype=np.int64)


def _score(images: np.ndarray, rows: Sequence[PromptRow], judges: Judges, corpus: EvalCorpus,
           space: FeatureSpace, pool: np.ndarray, pool_feats: np.ndarray,
           memo: MemorisationIndex) -> tuple[dict, list[dict]]:
    style_index = {c: i for i, c in enumerate(judges.style.classes)}
    concept_index = {c: i for i, c in enumerate(judges.concept.classes)}
    missing = sorted({r.concept for r in rows if r.concept not in concept_index}
                     | {r.set_id for r in rows if r.set_id not in style_index})
    if missing:
        raise EaselError(f"the judges do not know {', '.join(missing[:5])}",
                         hint="retrain them on this manifest with `easel eval classifiers --retrain`")
    s_logits, _ = judges.style.predict(images)
    c_logits, c_feats = judges.concept.predict(images)
    s_true = torch.tensor([style_index[r.set_id] for r in rows])
    c_true = torch.tensor([concept_index[r.concept] for r in rows])
    style_ok = (s_logits.argmax(1) == s_true).numpy()
    top1 = topk_hits(c_logits, c_true, 1).numpy()
    top5 = topk_hits(c_logits, c_true, 5).numpy()
    ranks = (c_logits > c_logits.gather(1, c_true[:, None])).sum(1) + 1
    near_list = memo.nearest(images)
    near = np.asarray([m["near_copy"] for m in near_list])
    pdq_match = np.asarray([m["pdq_distance"] <= PDQ_MATCH_DISTANCE for m in near_list])
    gen = space.project(c_feats.numpy())
    real = space.project(pool_feats)
    pool_sets = np.asarray([corpus.rows[i]["set_id"] for i in pool])
    pool_seen = np.asarray([corpus.rows[i]["split"] == "train" for i in pool])
    row_sets = np.asarray([r.set_id for r in rows])
    row_seen = np.asarray([r.seen for r in rows])
    args = (style_ok, top1, top5, near, gen)
    result: dict = {"overall": _summary(np.ones(len(rows), bool), *args, real)}
    for name, flag in (("seen", True), ("unseen", False)):
        sel = row_seen == flag
        if sel.any():
            result[name] = _summary(sel, *args, real[pool_seen == flag])
    result["per_set"] = {s: _summary(row_sets == s, *args, real[pool_sets == s])
                         for s in sorted(set(row_sets))}
    result["pdq_match_share"] = round(float(pdq_match.mean()), 4)
    result["median_nearest_rmse"] = round(float(np.median([m["nearest_rmse"] for m in near_list])), 4)
    items = []
    for i, r in enumerate(rows):
        items.append({
            "prompt": r.prompt, "seed": r.seed, "item_id": r.item_id, "set_id": r.set_id,
            "concept": r.concept, "split": r.split, "seen": bool(r.seen), "draw": r.draw,
            "style_predicted": judges.style.classes[int(s_logits[i].argmax())],
            "concept_predicted": judges.concept.classes[int(c_logits[i].argmax())],
            "concept_rank": int(ranks[i]), **near_list[i],
        })
    return result, items


def judge_summary(judges: Judges) -> dict:
    """The judges' own accuracy on held-out real images, and how they were held out."""
    sm, cm = judges.style.config.get("metrics", {}), judges.concept.config.get("metrics", {})
    return {
        "style": {"holdout": judges.style.config.get("holdout"), "classes": len(judges.style.classes),
                  "real_top1": sm.get("top1"), "real_top1_via_32px": sm.get("top1_via_32px"),
                  "chance": sm.get("chance_top1"), "n_heldout": sm.get("n"), "per_set": sm.get("per_set"),
                  "train_config": judges.style.config.get("train_config")},
        "concept": {"holdout": judges.concept.config.get("holdout"),
                    "classes": len(judges.concept.classes),
                    "real_top1": cm.get("top1"), "real_top5": cm.get("top5"),
                    "real_top1_via_32px": cm.get("top1_via_32px"),
                    "real_top5_via_32px": cm.get("top5_via_32px"), "n_heldout": cm.get("n"),
                    "train_concepts": cm.get("train_concepts"),
                    "val_test_concepts": cm.get("val_test_concepts"),
                    "train_config": judges.concept.config.get("train_config")},
    }


def _draw_figures(rows: Sequence[PromptRow], items: list[dict]) -> tuple[list[dict], dict]:
    """Per draw, style accuracy and top-5 of the seen and the unseen concepts' prompts; and the
    standard errors of the pooled figures with each prompt's pictures taken together (a prompt
    is one sample: its draws share a concept and a style, so they are not independent)."""
    by_draw: dict[int, list[dict]] = defaultdict(list)
    by_prompt: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r, it in zip(rows, items, strict=True):
        by_draw[r.draw].append(it)
        by_prompt[(r.item_id, r.prompt)].append(it)

    def style_ok(it: dict) -> float:
        return float(style_right(it))

    def top5(it: dict) -> float:
        return float(concept_in_top(it, 5))

    groups = [g for g in ("seen", "unseen") if any(it["seen"] == (g == "seen") for it in items)]

    def figures(its: list[dict]) -> dict:
        out = {}
        for g in groups:
            part = [it for it in its if it["seen"] == (g == "seen")]
            out[g] = {"style_accuracy": round(sum(map(style_ok, part)) / len(part), 4),
                      "concept_top5": round(sum(map(top5, part)) / len(part), 4)}
        return out

    per_draw = [{"draw": d, "seeds": [its[0]["seed"], its[-1]["seed"]], **figures(its)}
                for d, its in sorted(by_draw.items())]

    def clustered_se(prompts: list[list[dict]], hit: Callable[[dict], float]) -> float | None:
        means = np.asarray([np.mean([hit(it) for it in its]) for its in prompts])
        if len(means) < 2:
            return None
        return round(float(means.std(ddof=1) / math.sqrt(len(means))), 4)

    spread = {}
    for g in groups:
        prompts = [its for its in by_prompt.values() if its[0]["seen"] == (g == "seen")]
        spread[g] = {"prompts": len(prompts), "style_accuracy_se": clustered_se(prompts, style_ok),
                     "concept_top5_se": clustered_se(prompts, top5)}
    return per_draw, spread


def evaluate_generator(generate: Generator, rows: Sequence[PromptRow], *, corpus: EvalCorpus,
                       judges: Judges, name: str = "generator", batch_size: int = 16,
                       real_baseline: bool = True, progress: bool = True,
                       settings: dict | None = None) -> dict:
    """Generate one image per prompt row and score it (a JSON-ready report).

    1. check inputs; 2. generate in batches; 3. score with the judges (style accuracy,
    concept top-1/top-5, Fréchet distance in the concept judge's feature space) overall,
    per set, seen/unseen; 4. memorisation against the generator's training icons (the
    manifest's train split of the base sets); 5. the same for the prompts' real icons.
    """
    # 1. check inputs
    if not rows:
        raise BadInput("no prompts to evaluate", hint="choose a split and -n that give prompts")
    if batch_size < 1:
        raise BadInput(f"batch size must be at least 1, got {batch_size}")
    # 2. generate (with the caller's threads; the judges switch to JUDGE_THREADS themselves)
    t0 = time.perf_counter()
    images = generate_images(generate, rows, batch_size, progress)
    gen_seconds = time.perf_counter() - t0
    # 3-4. references: real image pool for Fréchet distances, training icons for memorisation
    t1 = time.perf_counter()
    all_real = corpus.images(progress=progress)
    pool = _real_pool(corpus, rows)
    _, pool_feats_t = judges.concept.predict(all_real[pool])
    pool_feats = pool_feats_t.numpy()
    space = FeatureSpace.fit(pool_feats)
    train_idx = corpus.index_where(splits=("train",), sets=corpus.base_sets)
    memo = MemorisationIndex.build([corpus.rows[i]["item_id"] for i in train_idx], all_real[train_idx])
    generated, items = _score(images, rows, judges, corpus, space, pool, pool_feats, memo)
    report: dict = {
        "generator": name, "dataset_id": corpus.dataset_id, "manifest": str(corpus.manifest_path),
        "splits": sorted({r.split for r in rows}), "n_prompts": sum(r.draw == 0 for r in rows),
        "n_pictures": len(rows),
        "seeds": [rows[0].seed, next(r for r in reversed(rows) if r.draw == 0).seed],  # draw 0's
        "settings": settings or {},
        "judges": judge_summary(judges),
        "feature_space": {"judge": "concept", "pca_dims": len(space.components.T),
                          "explained_variance": round(space.explained, 4), "real_pool": int(len(pool))},
        "memorisation": {"near_copy_rmse": NEAR_COPY_RMSE, "pdq_match_distance": PDQ_MATCH_DISTANCE,
                         "training_icons": int(len(train_idx))},
        "generated": generated,
    }
    draws = max(r.draw for r in rows) + 1
    if draws > 1:
        report["draws"] = draws
        report["by_draw"], report["spread"] = _draw_figures(rows, items)
    # 5. the prompts' own real icons (once per prompt), scored the same way
    if real_baseline:
        first = [r for r in rows if r.draw == 0]
        index = {r["item_id"]: i for i, r in enumerate(corpus.rows)}
        real_imgs = all_real[[index[r.item_id] for r in first]]
        report["real_icons"], _ = _score(real_imgs, first, judges, corpus, space, pool, pool_feats, memo)
    report["seconds"] = {"generate": round(gen_seconds, 1),
                         "score": round(time.perf_counter() - t1, 1),
                         "per_image": round(gen_seconds / len(rows), 3)}
    report["items"] = items
    return report


def _fmt(v: object) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _draw_lines(report: dict) -> list[str]:
    if report.get("draws", 1) <= 1:
        return []
    lines = [f"{report['draws']} pictures per prompt (draw r adds r x {DRAW_SEED_STRIDE:,} to the seed); "
             f"figures pool them all"]
    for group, spread in report["spread"].items():
        styles = " ".join(_fmt(d[group]["style_accuracy"]) for d in report["by_draw"])
        tops = " ".join(_fmt(d[group]["concept_top5"]) for d in report["by_draw"])
        lines += [f"{group} concepts by draw: style {styles}; top-5 {tops}; standard error over "
                  f"the {spread['prompts']} prompts: style {_fmt(spread['style_accuracy_se'])}, "
                  f"top-5 {_fmt(spread['concept_top5_se'])}"]
    return lines


def format_report(report: dict) -> str:
    """A plain-text table of a report: metric, value, the real icons' value, the judge's own
    accuracy on held-out real images."""
    g = report["generated"]
    r = report.get("real_icons", {})
    js, jc = report["judges"]["style"], report["judges"]["concept"]
    unseen = report["splits"] != ["train"]
    group = jc.get("val_test_concepts" if unseen else "train_concepts") or {}
    lines = [
        f"generator: {report['generator']}   prompts: {report['n_prompts']} from split(s) "
        f"{', '.join(report['splits'])}   seeds {report['seeds'][0]}..{report['seeds'][1]}",
        *_draw_lines(report),
        "",
        f"{'metric':<22}{'generated':>10}{'real icons':>12}   judge on held-out real images",
        f"{'style accuracy':<22}{_fmt(g['overall'].get('style_accuracy')):>10}"
        f"{_fmt(r.get('overall', {}).get('style_accuracy')):>12}   "
        f"{_fmt(js['real_top1'])} ({_fmt(js['real_top1_via_32px'])} via 32 px; chance {_fmt(js['chance'])})",
        f"{'concept top-1':<22}{_fmt(g['overall'].get('concept_top1')):>10}"
        f"{_fmt(r.get('overall', {}).get('concept_top1')):>12}   "
        f"{_fmt(group.get('top1'))} on {'val/test' if unseen else 'train'}-split concepts "
        f"(all: {_fmt(jc['real_top1'])}; {jc['classes']} classes)",
        f"{'concept top-5':<22}{_fmt(g['overall'].get('concept_top5')):>10}"
        f"{_fmt(r.get('overall', {}).get('concept_top5')):>12}   "
        f"{_fmt(group.get('top5'))} on {'val/test' if unseen else 'train'}-split concepts "
        f"(all: {_fmt(jc['real_top5'])})",
        f"{'Fréchet distance':<22}{_fmt(g['overall'].get('frechet')):>10}"
        f"{_fmt(r.get('overall', {}).get('frechet')):>12}   "
        f"concept-judge features, {report['feature_space']['pca_dims']} PCA dims",
        f"{'near-copy share':<22}{_fmt(g['overall'].get('near_copy_share')):>10}"
        f"{_fmt(r.get('overall', {}).get('near_copy_share')):>12}   "
        f"nearest training icon RMSE <= {report['memorisation']['near_copy_rmse']} at 32 px",
        f"{'PDQ match share':<22}{_fmt(g.get('pdq_match_share')):>10}"
        f"{_fmt(r.get('pdq_match_share')):>12}   "
        f"PDQ distance <= {report['memorisation']['pdq_match_distance']} (reference only)",
        "",
        f"{'group':<22}{'n':>5}{'style':>8}{'top-1':>8}{'top-5':>8}{'FD':>9}{'copies':>8}"
        f"   real icons: style / top-5 / FD",
    ]
    groups = [(k, g[k], r.get(k, {})) for k in ("seen", "unseen") if k in g]
    groups += [(s, v, r.get("per_set", {}).get(s, {})) for s, v in g["per_set"].items()]
    for label, v, rv in groups:
        lines.append(f"{label:<22}{v['n']:>5}{_fmt(v.get('style_accuracy')):>8}"
                     f"{_fmt(v.get('concept_top1')):>8}{_fmt(v.get('concept_top5')):>8}"
                     f"{_fmt(v.get('frechet')):>9}{_fmt(v.get('near_copy_share')):>8}   "
                     f"{_fmt(rv.get('style_accuracy'))} / {_fmt(rv.get('concept_top5'))} / "
                     f"{_fmt(rv.get('frechet'))}")
    lines += ["", f"style judge: {js['holdout']}.", f"concept judge: {jc['holdout']}."]
    return "\n".join(lines)
