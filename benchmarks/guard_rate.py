"""How often would the output guard refuse the embedded model's pictures, and how often real
drawings nobody copied? Calibrates ``NEAR_COPY_THRESHOLD`` against what the guard really sees.

Every icon of the 256 px corpus (all splits and sets) stands for a registered work. Measured,
for each query, the highest copy score against all registered works:

- *generated*: the shipped model's pictures for ``--n`` evaluation prompts of ``--split`` (fixed
  seeds, default settings; the train split's concepts by default, those a model could copy) —
  the guard's real traffic;
- *unseen real*: real icons of the val split scored against every *other* registered work,
  leaving out the icon itself and its PDQ twins (skin-tone variants of one drawing) — drawings
  nobody copied, so a score above a threshold is a false alarm;
- *attacked copies*: the same val icons blurred, JPEG-compressed, recoloured, or 20 %-cropped,
  rotated 10° and bordered, each scored with its original — copies the guard must stop.

Registered works are described as the registry describes them (every reference view; a score is
the best over a work's views). The unseen real drawings' best scores against the *whole*
pictures alone are printed too: they calibrate ``DUPLICATE_COPY_THRESHOLD`` (curation).

    EASEL_HOME=<home with 64 and 256 px builds> .venv/bin/python -m benchmarks.guard_rate \\
        [--encoder DIR] [--model DIR] [--n 140] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

GUARD_ATTACKS = ("blur", "jpeg30", "recolour", "crop80+rot10+border")
"""Copies the guard must stop: a regurgitated training icon comes out soft, re-coded or
recoloured more often than cropped and rotated; the registry test's attack is kept beside."""


def print_sweep(sweep: dict[str, dict]) -> None:
    """One line per threshold: refused and caught shares (the header is printed once, above)."""
    for t, r in sweep.items():
        print(f"{t:>9} {r['generated_refused'] or 0.0:>18.3f} {r['unseen_real_refused']:>20.3f} "
              + " ".join(f"{r['caught_' + a]:>26.3f}" for a in GUARD_ATTACKS))


def main() -> None:
    from benchmarks.registered_views import (
        backgrounds,
        registered_descriptors,
        scores_with_originals,
        scores_with_registry,
    )
    from easel.audit.augment import ATTACKS
    from easel.audit.encoder import describe, load_encoder
    from easel.audit.evaluate import BACKGROUND_K, BACKGROUND_WEIGHT, _bits, same_drawing, variant_key
    from easel.audit.thresholds import NEAR_COPY_THRESHOLD
    from easel.config import get_settings
    from easel.corpus.manifest import load_manifest, manifest_dir
    from easel.diffusion.pipeline import load_pipeline
    from easel.evaluation.data import load_eval_corpus, select_prompts
    from easel.registry.fingerprint import pdq_of_array, prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default=None, help="descriptor encoder folder (default: shipped)")
    parser.add_argument("--model", type=Path, default=None, help="Easel model (default: shipped)")
    parser.add_argument("--split", default="train", help="evaluation prompts' split(s), as in "
                        "`easel eval model --split` (default: concepts the model trained on)")
    parser.add_argument("--n", type=int, default=140, help="generated pictures")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance of the generated pictures (default: the sampler's)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--views-cache", type=Path, default=None,
                        help=".npz file keeping the registered works' descriptors between runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = get_settings()
    encoder = load_encoder(args.encoder)
    m256 = manifest_dir(settings.corpus_dir, 256) / "manifest.parquet"
    rows = load_manifest(m256).to_pylist()
    root = m256.parent
    pictures = [Image.open(root / r["png_path"]).convert("RGB") for r in rows]
    views, registered = registered_descriptors(encoder, args.encoder, rows, root, args.views_cache)

    corpus = load_eval_corpus(settings.corpus_dir / "64px")
    prompts = select_prompts(corpus, args.split, n=args.n) if args.n > 0 else []
    started = time.perf_counter()
    generated = []
    if prompts:  # --n 0: real drawings only
        pipe = load_pipeline(args.model, device="cpu")
        for s in range(0, len(prompts), 8):
            batch = prompts[s:s + 8]
            sampling = {} if args.guidance is None else {"guidance_scale": args.guidance}
            generated += pipe([p.prompt for p in batch], seeds=[p.seed for p in batch], **sampling).images
    gen_seconds = time.perf_counter() - started
    gen_scores = scores_with_registry(describe(encoder, generated).copy.numpy(), views) \
        if generated else np.zeros((0, len(views)), dtype=np.float32)
    gen_best = gen_scores.max(axis=1)
    # normalised score: s − β × the query's background
    gen_norm = gen_best - BACKGROUND_WEIGHT * backgrounds(gen_scores, BACKGROUND_K)

    val = [i for i, r in enumerate(rows) if r["split"] == "val"]
    bits = _bits([pdq_of_array(prepare(p))[0] for p in pictures])
    keys = np.array([variant_key(r["set_id"], r["caption"]) for r in rows])
    q = registered[val]
    # itself, its skin-tone variants and its PDQ twins are not someone else's work
    twins = same_drawing(bits[val], keys[val], bits, keys)
    real_scores = np.where(twins, -1.0, scores_with_registry(q, views))  # as if not registered
    real_best = real_scores.max(axis=1)
    real_best_whole = np.where(twins, -1.0, q @ registered.T).max(axis=1)
    real_norm = real_best - BACKGROUND_WEIGHT * backgrounds(real_scores, BACKGROUND_K)
    own, own_norm = {}, {}
    for attack in GUARD_ATTACKS:
        rng = random.Random(0)
        attacked = describe(encoder, [ATTACKS[attack](pictures[i], rng) for i in val]).copy.numpy()
        own[attack] = scores_with_originals(attacked, views[val])
        background = backgrounds(scores_with_registry(attacked, views), BACKGROUND_K)
        own_norm[attack] = own[attack] - BACKGROUND_WEIGHT * background

    grid = sorted({*np.round(np.arange(0.60, 0.99, 0.02), 2).tolist(), round(NEAR_COPY_THRESHOLD, 3)})
    table = {f"{t:.3f}": {"generated_refused": float((gen_best >= t).mean()) if len(gen_best) else None,
                          "unseen_real_refused": float((real_best >= t).mean()),
                          **{f"caught_{a}": float((own[a] >= t).mean()) for a in GUARD_ATTACKS}}
             for t in grid}
    result = {"encoder": args.encoder or "shipped", "registered": len(rows), "generated": len(generated),
              "guidance": args.guidance,
              "generation_seconds": round(gen_seconds, 1), "val_icons": len(val),
              "near_copy_threshold": NEAR_COPY_THRESHOLD,
              "generated_best_score_quantiles":
                  np.quantile(gen_best, [0.5, 0.9, 0.99, 1.0]).round(4).tolist() if len(gen_best) else None,
              # per-query false-alarm calibration: the score that only 10 / 5 / 1 % of unseen
              # real drawings reach with some other registered work
              "unseen_real_best_quantiles": {level: round(float(np.quantile(real_best, level)), 4)
                                             for level in (0.5, 0.9, 0.95, 0.99)},
              "unseen_real_best_quantiles_whole_pictures": {
                  level: round(float(np.quantile(real_best_whole, level)), 4)
                  for level in (0.5, 0.9, 0.95, 0.99)},
              "sweep": table,
              # the same on the normalised score (s − β × the query's background)
              "normalised": {
                  "background": {"k": BACKGROUND_K, "weight": BACKGROUND_WEIGHT},
                  "generated_best_quantiles": np.quantile(gen_norm, [0.5, 0.9, 0.99, 1.0]).round(4).tolist()
                  if len(gen_norm) else None,
                  "unseen_real_best_quantiles": {level: round(float(np.quantile(real_norm, level)), 4)
                                                 for level in (0.5, 0.9, 0.95, 0.99)},
                  "sweep": {f"{t:.3f}": {
                      "generated_refused": float((gen_norm >= t).mean()) if len(gen_norm) else None,
                      "unseen_real_refused": float((real_norm >= t).mean()),
                      **{f"caught_{a}": float((own_norm[a] >= t).mean()) for a in GUARD_ATTACKS}}
                      for t in np.round(np.arange(0.30, 0.62, 0.02), 2).tolist()}}}
    print(f"{'threshold':>9} {'generated refused':>18} {'unseen real refused':>20} "
          + " ".join(f"{'caught ' + a:>26}" for a in GUARD_ATTACKS))
    print_sweep(table)
    print("unseen real drawings' best score, quantiles:", result["unseen_real_best_quantiles"])
    print("... against whole pictures only (curation's duplicate threshold):",
          result["unseen_real_best_quantiles_whole_pictures"])
    norm = result["normalised"]
    print("normalised score (s − β × background):")
    print_sweep(norm["sweep"])
    print("unseen real drawings' best normalised score, quantiles:", norm["unseen_real_best_quantiles"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
