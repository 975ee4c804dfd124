"""Does the approximate (IVF-SQ8) copy index find what the exact one finds, on real descriptors?

The registry's own copy descriptors of every registered work (12 reference views each, as
ingest stored them) are indexed; each test icon of the manifest that is a registered work,
under each attack of the evaluation suite, is a query. Both
indexes are built over the same rows — the exact ``IndexFlatIP`` and the ``IVF<n>,SQ8`` index
the registry builds past ``EXACT_MAX_ROWS``, trained the same way — and for each query we ask:

- *original found*: is the attacked icon's original among the 10 works the index returns?
- *same verdict*: after the exact re-scoring of the works it returned (as the audit, the guard
  and the ingest check do), is the best score the exact index's (to 1e-5)? The verdict follows
  from it (which of two works tied on it is named first is not counted).

Reported per attack, with the search times; ``--probe-shares`` tries other ``nprobe`` settings.

    EASEL_HOME=<registry home with its 256 px build> OMP_NUM_THREADS=1 \\
        python -m benchmarks.audit_ivf --json /tmp/audit-ivf.json
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


def main() -> None:
    from sqlalchemy import select

    from easel.audit.augment import ATTACKS
    from easel.audit.encoder import COPY_KIND, describe, load_encoder
    from easel.audit.index import FloatIndex
    from easel.corpus.manifest import load_manifest

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, default=None, help="256 px manifest (default: EASEL_HOME's)")
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="query icons (default: the whole split)")
    parser.add_argument("--probe-shares", type=float, nargs="+", default=None,
                        help="nprobe as shares of the lists (default: the registry's IVF_PROBE_SHARE)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.manifest is None:
        from easel.config import get_settings
        from easel.corpus.manifest import manifest_dir

        args.manifest = manifest_dir(get_settings().corpus_dir, 256) / "manifest.parquet"
    from easel.audit.index import IVF_PROBE_SHARE

    shares = args.probe_shares or [IVF_PROBE_SHARE]
    encoder = load_encoder(args.encoder)
    rows = load_manifest(args.manifest).to_pylist()
    root = args.manifest.parent
    from easel.registry.descriptors import row_vectors
    from easel.registry.models import Work, WorkDescriptor
    from easel.registry.store import registry_session, registry_url

    with registry_session(registry_url()) as session:
        stored = session.execute(select(Work.source, WorkDescriptor.dim, WorkDescriptor.vector)
                                 .join(WorkDescriptor, WorkDescriptor.work_pk == Work.pk)
                                 .where(WorkDescriptor.kind == COPY_KIND).order_by(Work.pk)).all()
    sources = [src for src, _, _ in stored]
    views = np.stack([row_vectors(int(dim), blob) for _, dim, blob in stored])
    position = {src: i for i, src in enumerate(sources)}
    n, v, d = views.shape
    flat = views.reshape(-1, d)
    keys = np.repeat(np.arange(n), v)
    exact = FloatIndex(d)
    exact.add(keys, flat)
    t0 = time.perf_counter()
    stride = max(1, n // 20_000)  # the registry's sample: every n-th work, about 20,000
    ivf = FloatIndex.approximate(d, views[::stride].reshape(-1, d))
    ivf.add(keys, flat)
    built = time.perf_counter() - t0
    picked = [r for r in rows if r["split"] == args.split and r["item_id"] in position][:args.limit]
    queried = [position[r["item_id"]] for r in picked]
    rng = random.Random(0)
    result: dict = {"works": n, "views": v, "rows": len(flat), "nlist": int(ivf.index.nlist),
                    "build_s": built, "queries_per_attack": len(queried), "attacks": {}}
    print(f"{n:,} works × {v} views; IVF{ivf.index.nlist},SQ8 built in {built:.0f} s; "
          f"{len(queried)} {args.split} icons per attack", flush=True)
    for name, attack in ATTACKS.items():
        pictures = [attack(Image.open(root / r["png_path"]).convert("RGB"), rng) for r in picked]
        q = describe(encoder, pictures).copy.numpy()
        exact_times, exact_best, exact_found = [], [], 0
        for j, i in enumerate(queried):
            t1 = time.perf_counter()
            hits = exact.search(q[j:j + 1], 10)
            exact_times.append(time.perf_counter() - t1)
            exact_best.append(hits[0].score)
            exact_found += int(i in {h.key for h in hits})
        per: dict = {"exact_p50_ms": 1000 * float(np.median(exact_times)),
                     "exact_original_found": exact_found / len(q)}
        for share in shares:
            ivf.index.nprobe = max(8, round(ivf.index.nlist * share))
            times, found, same = [], 0, 0
            for j, i in enumerate(queried):
                t1 = time.perf_counter()
                hits = ivf.search(q[j:j + 1], 10)
                times.append(time.perf_counter() - t1)
                found += int(i in {h.key for h in hits})
                # exact re-scoring of the found works, from their stored views: the best score
                # decides the verdict
                rescored = max((float((views[h.key] @ q[j]).max()) for h in hits), default=0.0)
                same += int(abs(rescored - exact_best[j]) < 1e-5)
            per[f"nprobe {ivf.index.nprobe}"] = {"p50_ms": 1000 * float(np.median(times)),
                                                 "original_found": found / len(q),
                                                 "same_verdict": same / len(q)}
        result["attacks"][name] = per
        print(name, json.dumps(per), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
