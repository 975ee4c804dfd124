"""Audit latency with 10 k / 100 k / 1 M indexed works, and descriptor throughput.

Synthetic L2-normalised vectors stand in for works (the copy descriptor's size, 128-d), each
work with ``--views`` rows as the registry keeps them (``REFERENCE_VIEWS``: whole picture, crops,
rotations; ``--views 1`` for the whole picture alone); each query is one FAISS inner-product
search for the 10 best works (``easel.audit.index.FloatIndex``, one thread, as the audit runs):
exact up to ``EXACT_MAX_ROWS`` rows, and above that the approximate IVF-SQ8 index the registry
builds, trained as it trains it (on about 20,000 works' rows). The exact re-scoring of the
works found (from the database; the audit has always done it) is not in these times. Each
query is a registered view plus noise (cosine about 0.8 with it, as an attacked copy's with its
original); "found" is the share of queries whose source work comes back in the top 10 — for
the exact index 1.0, for the IVF index the cost of probing only some lists. ``--exact-too``
also times the exact index at the sizes that get an approximate one.
Throughput is the encoder on 64 px pictures in batches of 64.

    nice -n 10 .venv/bin/python -m benchmarks.audit_latency --json /tmp/audit-latency.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def latency(sizes: list[int], dim: int, queries: int, k: int, views: int,
            exact_too: bool = False) -> dict[str, dict[str, float]]:
    """p50/p99 milliseconds of one top-``k`` search at each index size (works × ``views`` rows)."""
    from easel.audit.index import EXACT_MAX_ROWS, FloatIndex

    out = {}
    for n in sizes:
        rows = n * views
        kinds = ["exact"] if rows <= EXACT_MAX_ROWS else (["ivf-sq8", "exact"] if exact_too else ["ivf-sq8"])
        for kind in kinds:
            rng = np.random.default_rng(0)  # the same vectors for either kind
            t0 = time.perf_counter()
            if kind == "exact":
                index = FloatIndex(dim)
            else:
                sample_rows = min(rows, 20_000 * views)
                sample = rng.standard_normal((sample_rows, dim), dtype=np.float32)
                sample /= np.linalg.norm(sample, axis=1, keepdims=True)
                index = FloatIndex.approximate(dim, sample)
                rng = np.random.default_rng(0)
            picked = np.random.default_rng(1).choice(rows, size=queries, replace=False)
            kept: dict[int, np.ndarray] = {}
            for start in range(0, rows, 120_000):
                block = rng.standard_normal((min(120_000, rows - start), dim), dtype=np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                for r in picked[(picked >= start) & (picked < start + len(block))]:
                    kept[int(r)] = block[r - start].copy()
                index.add(np.arange(start, start + len(block)) // views, block)
            built = time.perf_counter() - t0
            noise = np.random.default_rng(2).standard_normal((queries, dim), dtype=np.float32)
            noise /= np.linalg.norm(noise, axis=1, keepdims=True)
            q = np.stack([kept[int(r)] for r in picked]) * 0.8 + noise * 0.6
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            times, found = [], 0
            for i in range(queries):
                t1 = time.perf_counter()
                hits = index.search(q[i:i + 1], k)
                times.append((time.perf_counter() - t1) * 1000)
                found += int(int(picked[i]) // views in {h.key for h in hits})
            memory = index.index.sa_code_size() if index.is_approximate else dim * 4
            result = {"index": kind, "p50_ms": float(np.percentile(times, 50)),
                      "p99_ms": float(np.percentile(times, 99)), "rows": rows,
                      "memory_mb": rows * memory / 2**20, "found": found / queries, "build_s": built}
            out[f"{n}-{kind}"] = result
            print(f"{n:>9,} works ({rows:,} rows, {kind}): p50 {result['p50_ms']:.2f} ms, "
                  f"p99 {result['p99_ms']:.2f} ms, {result['memory_mb']:.0f} MB, found "
                  f"{result['found']:.3f}, built in {built:.0f} s", flush=True)
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
    parser.add_argument("--exact-too", action="store_true",
                        help="also time the exact index where the registry would build an IVF one")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from easel.audit.encoder import REFERENCE_VIEWS

    views = args.views or REFERENCE_VIEWS
    result = {"views": views,
              "latency": latency(args.sizes, args.dim, args.queries, args.k, views, args.exact_too),
              "images_per_s": {str(t): throughput(t) for t in (1, 2)}}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
