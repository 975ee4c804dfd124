"""Curation benchmark on the real seven-set corpus: both engines, counts by reason, skin tones.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.curate_corpus \
        [--manifest /tmp/eh/corpus/64px] [--registry /work/ckpt/home] [--home /tmp/curate-home] \
        [--engines local ray] [--skip-stage safety] [--safety-sample 300] [--stage-costs 64] [--json out.json]

The registry is copied (SQLite backup API) from ``--registry`` into ``--home`` once and never
written back. Each engine curates the whole manifest afresh into ``<home>/curated/<engine>``; the
figures are items/s over the whole run (both passes, the global duplicate step, output and
datasheet), CPU seconds of the driver, and peak memory of the process tree. ``--safety-sample N``
scores N random icons with NudeNet alone and reports the per-item cost and the score spread, so
the safety stage's cost can be added when it is skipped on the full run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import time
from pathlib import Path

from benchmarks.curate_common import compare_engines


def copy_registry(source: Path, home: Path) -> str:
    """Copy ``source``/easel.db into ``home`` (once) with SQLite's backup API; returns the URL."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "easel.db"
    if not target.exists():
        src = sqlite3.connect(f"file:{source / 'easel.db'}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        src.backup(dst)
        dst.close()
        src.close()
    return f"sqlite:///{target}"


def safety_sample(manifest: Path, n: int) -> dict[str, object]:
    """NudeNet on ``n`` random icons: ms per item and how many reach each threshold."""
    import pyarrow.parquet as pq
    from PIL import Image

    from easel.curation.stages import safety_scores

    rows = pq.read_table(manifest / "manifest.parquet", columns=["item_id", "png_path"]).to_pylist()
    random.Random(0).shuffle(rows)
    rows = rows[:n]
    pictures = [Image.open(manifest / r["png_path"]).convert("RGB") for r in rows]
    safety_scores(pictures[:2])  # load the model outside the timing
    started = time.perf_counter()
    scores = safety_scores(pictures)
    seconds = time.perf_counter() - started
    top = sorted(zip(scores, (r["item_id"] for r in rows), strict=True), reverse=True)[:5]
    return {
        "items": n,
        "ms_per_item": round(seconds / n * 1000, 1),
        "at_or_above": {str(t): sum(s >= t for s in scores) for t in (0.2, 0.3, 0.4, 0.5, 0.6)},
        "highest": [(round(s, 3), i) for s, i in top],
    }


def stage_costs(manifest: Path, n: int) -> dict[str, float]:
    """CPU milliseconds per item of each per-item step, on ``n`` icons, in this process."""
    import pyarrow.parquet as pq
    from PIL import Image

    from easel.curation.stages import copy_descriptors, load_picture, safety_scores
    from easel.registry.fingerprint import pdq_of_array, prepare

    rows = pq.read_table(manifest / "manifest.parquet").slice(8000, n).to_pylist()
    pictures = [Image.open(manifest / r["png_path"]).convert("RGB") for r in rows]
    safety_scores(pictures[:2])
    copy_descriptors("", pictures[:2])
    out = {}
    steps = {
        "read_decode_sha256_blank": lambda: [
            load_picture(manifest / r["png_path"], r["png_sha256"]) for r in rows
        ],
        "pdq": lambda: [pdq_of_array(prepare(p)) for p in pictures],
        "copy_descriptor": lambda: copy_descriptors("", pictures),
        "nudenet": lambda: safety_scores(pictures),
    }
    for name, step in steps.items():
        started = time.process_time()
        step()
        out[name] = round((time.process_time() - started) / n * 1000, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, default=Path("/tmp/eh/corpus/64px"))
    parser.add_argument("--registry", type=Path, default=Path("/work/ckpt/home"))
    parser.add_argument("--home", type=Path, default=Path("/tmp/curate-home"))
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    parser.add_argument("--skip-stage", action="append", default=[])
    parser.add_argument("--no-descriptors", action="store_true")
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--safety-sample", type=int, default=0)
    parser.add_argument("--stage-costs", type=int, default=0, help="time each step on this many icons")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    os.environ["EASEL_HOME"] = str(args.home)
    from easel.config import get_settings
    from easel.curation.stages import STAGES, CurateConfig

    url = copy_registry(args.registry, args.home)
    report: dict[str, object] = {
        "manifest": str(args.manifest),
        "stages_skipped": args.skip_stage,
        "descriptors": not args.no_descriptors,
        "cpu_count": os.cpu_count(),
    }
    if args.stage_costs:
        report["stage_cpu_ms_per_item"] = stage_costs(args.manifest, args.stage_costs)
        print(json.dumps(report["stage_cpu_ms_per_item"]), flush=True)
    if args.safety_sample:
        report["safety_sample"] = safety_sample(args.manifest, args.safety_sample)
        print(json.dumps(report["safety_sample"]), flush=True)
    config = CurateConfig(
        db_url=url,
        base_dir="",
        batch_size=args.batch_size,
        safety_threshold=get_settings().curation_safety_threshold,
        stages=tuple(s for s in STAGES if s not in args.skip_stage),
        encoder=None if args.no_descriptors else "",
        consent_at="2026-11-23T21:00:00+00:00",
    )
    compare_engines(args.manifest, args.home, config, args.engines, args.ray_cpus, report, args.json,
                    extra=("skin_tones",))


if __name__ == "__main__":
    main()
