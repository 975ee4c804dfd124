"""Audit latency with 10 k / 100 k / 1 M indexed works, and descriptor throughput.

Synthetic L2-normalised vectors stand in for works (the copy descriptor's size, 128-d), each
work with ``--views`` rows as the registry keeps them (``REFERENCE_VIEWS``: whole picture, crops,
rotations; ``--views 1`` for the whole picture alone); each query is one exact FAISS
inner-product search for the 10 best works (``easel.audit.index.FloatIndex``, one thread, as the
audit runs). Throughput is the encoder on 64 px pictures in batches of 64.

    nice -n 10 .venv/bin/python -m benchmarks.audit_latency --json /tmp/audit-latency.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def latency(sizes: list[int], dim: int, queries: int, k: int, views: int) -> dict[str, dict[str, float]]:
    """p50/p99 milliseconds of one top-``k`` search at each index size (works × ``views`` rows)."""
    from easel.audit.index import FloatIndex

    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        index = FloatIndex(dim)
        rows = n * views
        for start in range(0, rows, 120_000):
            block = rng.standard_normal((min(120_000, rows - start), dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            index.add(np.arange(start, start + len(block)) // views, block)
        q = rng.standard_normal((queries, dim), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        times = []
        for i in range(queries):
            t0 = time.perf_counter()
            index.search(q[i:i + 1], k)
            times.append((time.perf_counter() - t0) * 1000)
        out[str(n)] = {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
                       "rows": rows, "memory_mb": rows * dim * 4 / 2**20}
        print(f"{n:>9,} works ({rows:,} rows): p50 {out[str(n)]['p50_ms']:.2f} ms, "
              f"p99 {out[str(n)]['p99_ms']:.2f} ms, {out[str(n)]['memory_mb']:.0f} MB")
        del index
    return out


def throughput(threads: int, images: int = 512) -> float:
    """Descriptor images/s of the shipped encoder (or a random one of the same shape)."""
    from easel.audit.encoder import DescriptorEncoder, has_shipped, load_encoder

    torch.set_num_threads(threads)
    model = load_encoder() if has_shipped() else DescriptorEncoder().eval()
    x = torch.rand(64, 3, int(model.config.image_size), int(model.config.image_size))
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(images // 64):
            model(x)
    rate = images / (time.perf_counter() - t0)
    print(f"descriptors with {threads} thread(s): {rate:.0f} images/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--views", type=int, default=None,
                        help="rows per work (default: the registry's REFERENCE_VIEWS)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from easel.audit.encoder import REFERENCE_VIEWS

    views = args.views or REFERENCE_VIEWS
    result = {"views": views, "latency": latency(args.sizes, args.dim, args.queries, args.k, views),
              "images_per_s": {str(t): throughput(t) for t in (1, 2)}}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
