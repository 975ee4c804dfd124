"""The registry's copy-descriptor refusal on the whole corpus: false refusals and caught copies.

Every icon of the corpus (all splits, all sets) is a registered work of its set's artist. For
each icon of the split (``--split``: test to report, val to choose the threshold):

- *false refusal*: the icon itself, uploaded by its own artist, has a copy score at or above
  ``REGISTRY_COPY_THRESHOLD`` with a work of *another* set (the registry would refuse it; works
  are described as the registry describes them, and a score is the best over a work's views);
- *caught copy*: the registry test's attack (20 % cropped away, rotated 10°, a 5 % border) of
  the icon, uploaded by another artist, scores at or above the threshold with its original.

    .venv/bin/python -m benchmarks.audit_refusals --json /tmp/audit-refusals.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    from benchmarks.registered_views import (
        backgrounds,
        registered_descriptors,
        scores_with_originals,
        scores_with_registry,
    )
    from easel.audit.augment import ATTACKS
    from easel.audit.encoder import describe, load_encoder
    from easel.audit.evaluate import BACKGROUND_K, BACKGROUND_WEIGHT
    from easel.audit.thresholds import REGISTRY_COPY_THRESHOLD
    from easel.corpus.manifest import load_manifest

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, default=None,
                        help="256 px corpus manifest (default: EASEL_HOME's)")
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--split", default="test", help="icons uploaded: test (report) or val (choose)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--views-cache", type=Path, default=None,
                        help=".npz file keeping the registered works' descriptors between runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.manifest is None:
        from easel.config import get_settings
        from easel.corpus.manifest import manifest_dir

        args.manifest = manifest_dir(get_settings().corpus_dir, 256) / "manifest.parquet"
    encoder = load_encoder(args.encoder)
    rows = load_manifest(args.manifest).to_pylist()
    root = args.manifest.parent
    sets = np.array([r["set_id"] for r in rows])
    test = np.array([r["split"] == args.split for r in rows])
    views, ref = registered_descriptors(encoder, args.encoder, rows, root, args.views_cache)
    idx = np.flatnonzero(test)
    scores = scores_with_registry(ref[idx], views)
    other = sets[None, :] != sets[idx][:, None]
    false_refusals = int(((scores >= REGISTRY_COPY_THRESHOLD) & other).any(axis=1).sum())
    rng = random.Random(0)
    attacked = [ATTACKS["crop80+rot10+border"](Image.open(root / rows[i]["png_path"]).convert("RGB"), rng)
                for i in idx]
    q = describe(encoder, attacked).copy.numpy()
    own = scores_with_originals(q, views[idx])
    caught = int((own >= REGISTRY_COPY_THRESHOLD).sum())
    sweep = {f"{t:.3f}": {"false_refusals": int(((scores >= t) & other).any(axis=1).sum()),
                          "caught": int((own >= t).sum())}
             for t in sorted({*np.round(np.arange(0.70, 0.99, 0.02), 2).tolist(), REGISTRY_COPY_THRESHOLD})}

    # normalised (s − β × the query's background): an upload is checked before it is registered,
    # so its own row is left out of its background; an attacked copy's includes its original
    itself = np.zeros_like(scores, dtype=bool)
    itself[np.arange(len(idx)), idx] = True
    upload_background = backgrounds(np.where(itself, -1.0, scores), BACKGROUND_K)
    upload_norm = scores - BACKGROUND_WEIGHT * upload_background[:, None]
    own_norm = own - BACKGROUND_WEIGHT * backgrounds(scores_with_registry(q, views), BACKGROUND_K)
    normalised = {f"{t:.3f}": {"false_refusals": int(((upload_norm >= t) & other).any(axis=1).sum()),
                               "caught": int((own_norm >= t).sum())}
                  for t in np.round(np.arange(0.20, 0.56, 0.02), 2).tolist()}
    result = {"registered": len(rows), "split": args.split, "uploaded_icons": len(idx),
              "threshold": REGISTRY_COPY_THRESHOLD,
              "false_refusals": false_refusals, "false_refusal_rate": false_refusals / len(idx),
              "attacked_copies_caught": caught, "caught_rate": caught / len(idx), "sweep": sweep,
              "normalised": {"background": {"k": BACKGROUND_K, "weight": BACKGROUND_WEIGHT},
                             "sweep": normalised}}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
