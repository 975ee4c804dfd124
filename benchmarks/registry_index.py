"""Registry benchmark: ingest throughput, PDQ look-up latency at 10 k / 100 k / 1 M works,
and memory per registered work.

    nice -n 10 .venv/bin/python -m benchmarks.registry_index [--ingest 300] [--sizes 10000 100000 1000000]
    # PostgreSQL ingest too: --url postgresql+psycopg://user@127.0.0.1:5432/db

* Ingest: N distinct drawn pictures (PNG, 256 px) through ``Ingestor.ingest`` — validation,
  PDQ of the 8 rotations/mirrors, the index check, the work row and its ledger event — in one
  transaction, committed, index saved. Reported as works/s, and bytes of database per work.
* Look-up: an index of synthetic random PDQ hashes (the index cannot tell them from real ones)
  searched with the 8 dihedral hashes of one query, as an upload check does; half the queries
  are near-copies (≤ 20 flipped bits) of a stored hash and must be found. p50/p99 over 200.
* Memory: process RSS growth while building each index, per stored hash, and the saved files.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _drawn_png(seed: int) -> bytes:
    import io
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x, y = rng.randint(0, 216), rng.randint(0, 216)
        w, h = rng.randint(20, 85), rng.randint(20, 85)
        draw.ellipse([x, y, x + w, y + h], fill=tuple(rng.randint(0, 255) for _ in range(3)))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _bench_ingest(count: int, url: str | None) -> dict[str, float]:
    from easel.registry.service import Ingestor, add_artist
    from easel.registry.store import index_dir, registry_session, upgrade

    tmp = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    os.environ["EASEL_HOME"] = str(tmp)
    url = url or f"sqlite:///{tmp / 'easel.db'}"
    upgrade(url)
    images = [_drawn_png(seed) for seed in range(count)]
    with registry_session(url) as session:
        add_artist(session, "bench", "Bench")
    started = time.perf_counter()
    with registry_session(url) as session:
        ingestor = Ingestor(session, index_dir(url))
        from easel.registry.service import get_artist

        owner = get_artist(session, "bench")
        refused = 0
        for i, data in enumerate(images):
            try:
                ingestor.ingest(data, owner, f"drawing {i}", "CC-BY-4.0", name=f"drawing-{i}")
            except Exception:  # a random drawing may resemble an earlier one; count, go on
                refused += 1
    ingestor.finish()
    seconds = time.perf_counter() - started
    out = {"works": count - refused, "refused": refused, "seconds": round(seconds, 2),
           "works_per_s": round((count - refused) / seconds, 1)}
    if url.startswith("sqlite"):
        db = tmp / "easel.db"
        with registry_session(url) as session:
            from sqlalchemy import text

            session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        out["db_bytes_per_work"] = round(db.stat().st_size / max(1, count - refused))
    return out


def bench_lookup(size: int, queries: int = 200, seed: int = 0) -> dict[str, float]:
    from easel.registry.fingerprint import PDQ_MATCH_DISTANCE
    from easel.registry.index import BinaryIndex

    rng = np.random.default_rng(seed)
    rss0 = _rss_bytes()
    codes = rng.integers(0, 256, size=(size, 32), dtype=np.uint8)
    build0 = time.perf_counter()
    index = BinaryIndex()
    index.add(range(1, size + 1), codes)
    build_s = time.perf_counter() - build0
    rss1 = _rss_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp), "pdq", {"count": size, "newest": size})
        disk = sum(p.stat().st_size for p in Path(tmp).iterdir())
    latencies: list[float] = []
    found = 0
    for q in range(queries):
        batch = rng.integers(0, 256, size=(8, 32), dtype=np.uint8)
        target = None
        if q % 2 == 0:  # a near-copy of a stored work among the 8 variants
            target = int(rng.integers(0, size))
            bits = np.unpackbits(codes[target].copy())
            flip = rng.choice(256, size=int(rng.integers(0, 21)), replace=False)
            bits[flip] ^= 1
            batch[int(rng.integers(0, 8))] = np.packbits(bits)
        t0 = time.perf_counter()
        hits = index.search(batch, PDQ_MATCH_DISTANCE)
        latencies.append(time.perf_counter() - t0)
        if target is not None and any(h.key == target + 1 for h in hits):
            found += 1
    del codes
    ms = np.array(latencies) * 1e3
    return {"size": size, "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "near_copies_found": f"{found}/{(queries + 1) // 2}",
            "build_s": round(build_s, 2),
            "rss_bytes_per_work": round((rss1 - rss0) / size, 1),
            "disk_bytes_per_work": round(disk / size, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingest", type=int, default=300, help="pictures to ingest (0: skip)")
    parser.add_argument("--url", default=None, help="database URL for the ingest (default SQLite)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    results: dict[str, object] = {}
    if args.ingest:
        results["ingest"] = _bench_ingest(args.ingest, args.url)
        print(json.dumps({"ingest": results["ingest"]}), flush=True)
    results["lookup"] = []
    for size in args.sizes:
        row = bench_lookup(size)
        results["lookup"].append(row)  # type: ignore[attr-defined]
        print(json.dumps({"lookup": row}), flush=True)


if __name__ == "__main__":
    main()
