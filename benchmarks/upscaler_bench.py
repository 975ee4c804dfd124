"""Upscaler benchmark: PSNR (ours vs bicubic vs Lanczos) on val icons, and speed.

    nice -n 10 .venv/bin/python -m benchmarks.upscaler_bench \\
        --corpus-64 /tmp/eh/corpus/64px --corpus-256 /tmp/eh/corpus/256px

PSNR is the mean over images of the per-image PSNR (peak 255) of the 256 px result against
the 256 px render of the same SVG, for the clean 64 px render as input and for the same render
degraded with a fixed seed (blur, noise, JPEG, 64→32→64 — a stand-in for softer generated
images). Bicubic and Lanczos are PIL's, on the same inputs. Speed is the network alone, on the
CPU, at 1 and 2 threads, for one image and for batches of 16.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from easel.diffusion.upscaler import (
    BASE_EXCLUDED_SETS,
    default_upscaler_dir,
    evaluate_upscaler,
    load_pairs,
    load_upscaler,
)


def ms_per_image(model: torch.nn.Module, batch: int, threads: int, repeats: int = 5,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Median milliseconds per 64→256 image over ``repeats`` timed batches.

    ``clock=time.process_time`` gives CPU time instead of wall time: on a shared, loaded
    machine that is the steadier figure (for one thread it equals the wall time of an idle core).
    """
    torch.set_num_threads(threads)
    x = torch.rand(batch, 3, 64, 64) * 2 - 1
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            start = clock()
            model(x)
            times.append((clock() - start) / batch)
    return 1000.0 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_upscaler_dir())
    parser.add_argument("--corpus-64", type=Path, required=True)
    parser.add_argument("--corpus-256", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--set", dest="sets", action="append",
                        help="only this set (repeatable); default: the six base-model sets")
    parser.add_argument("--limit", type=int, default=0, help="icons to use; 0 = all")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    model = load_upscaler(args.model)
    exclude: tuple[str, ...] = BASE_EXCLUDED_SETS
    if args.sets:
        from easel.corpus.manifest import load_manifest

        present = set(load_manifest(args.corpus_64).column("set_id").to_pylist())
        exclude = tuple(sorted(present - set(args.sets)))
    pairs = load_pairs(args.corpus_64, args.corpus_256, args.split, exclude, limit=args.limit or None)
    scores = evaluate_upscaler(model, pairs, seed=0)
    scores.split = args.split
    speed = {f"{threads}t_batch{batch}": round(ms_per_image(model, batch, threads), 2)
             for threads in (1, 2) for batch in (1, 16)}
    speed["1t_batch1_cpu_time"] = round(ms_per_image(model, 1, 1, clock=time.process_time), 2)
    speed["1t_batch16_cpu_time"] = round(ms_per_image(model, 16, 1, clock=time.process_time), 2)
    params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model} ({params:,} parameters)")
    print(f"{args.split} icons: {scores.images} (sets other than {', '.join(exclude)})")
    print("| input | ours | bicubic | Lanczos |")
    print("| --- | --- | --- | --- |")
    for kind, row in (("clean 64 px render", scores.clean), ("degraded 64 px render", scores.degraded)):
        print(f"| {kind} | {row['ours']:.2f} dB | {row['bicubic']:.2f} dB | {row['lanczos']:.2f} dB |")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("ms per 256 px image (CPU): " + ", ".join(f"{k} {v:.1f}" for k, v in speed.items()))
    if args.json:
        args.json.write_text(json.dumps({"scores": scores.as_dict(), "ms_per_image": speed,
                                         "parameters": params}, indent=2) + "\n")


if __name__ == "__main__":
    main()
