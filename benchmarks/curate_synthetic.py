"""Curation benchmark at scale: a synthetic corpus of ≥ 200,000 augmented renders, both engines.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.curate_synthetic \
        [--items 200000] [--distinct 200000] [--dir /tmp/curate-synth] [--engines local ray] \
        [--skip-stage safety] [--json out.json]

1. Corpus: item k is the real 64 px render of corpus row ``k mod N`` (``/tmp/eh/corpus/64px``),
   augmented with seed k — a random crop of 80–100 %, a flip or quarter turn, a channel
   permutation (hue change) and brightness — and written as PNG. Every 50th item repeats the
   previous file under another id (an exact duplicate). With ``--distinct D < --items`` only D
   files are made and row k ≥ D reuses file k mod D (so those rows are exact duplicates; every row
   is still read, decoded, hashed and fingerprinted on its own, so the per-item cost is real).
2. Registry: a fresh SQLite registry in ``--dir`` with one artist, ``synthetic``, registered with a
   single artist-wide ``register`` event under CC-BY-4.0, and one ``works`` row per item inserted
   in bulk (the benchmark measures curation, not ingest: ``benchmarks/registry_index.py`` does).
   Consent is decided by ``easel.registry.policy`` as for any work.
3. Each engine curates the manifest afresh; figures as in ``benchmarks/curate_corpus.py``.
Building the corpus is done once (skipped when ``manifest.parquet`` exists).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.curate_common import compare_engines

ARTIST = "synthetic"


def augment(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random edit of an RGB uint8 ``[H x W x 3]`` picture (same size out)."""
    from PIL import Image

    h, w, _ = picture.shape
    side = int(h * rng.uniform(0.8, 1.0))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(picture[y : y + side, x : x + side]).resize((w, h), Image.Resampling.BILINEAR)
    out = np.asarray(crop)
    out = np.rot90(out, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out[:, :, rng.permutation(3)]
    out = np.clip(out.astype(np.float32) * rng.uniform(0.8, 1.1), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def build(corpus: Path, target: Path, items: int, distinct: int) -> Path:
    """Write the synthetic corpus and its registry; returns the manifest path."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    from sqlalchemy import insert

    from easel.corpus.manifest import MANIFEST_SCHEMA, dataset_id_of
    from easel.registry.ledger import append_event
    from easel.registry.models import Work
    from easel.registry.service import add_artist
    from easel.registry.store import registry_session

    manifest = target / "manifest.parquet"
    if manifest.exists():
        return manifest
    source = pq.read_table(corpus / "manifest.parquet").to_pylist()
    started = time.perf_counter()
    rows, works = [], []
    files: list[tuple[str, str, dict]] = []  # (relative path, sha256, source row) per distinct file
    for k in range(items):
        if k >= distinct:  # the rows past the distinct files reuse them (exact duplicates)
            rel, digest, src = files[k % distinct]
        elif k % 50 == 49:  # an exact duplicate of the previous file, under another id
            rel, digest, src = files[-1]
            files.append(files[-1])
        else:
            src = source[k % len(source)]
            rel = f"images/{k // 1000:04d}/{k:07d}.png"
            path = target / rel
            if path.exists():  # an earlier, interrupted build wrote it
                data = path.read_bytes()
            else:
                rng = np.random.default_rng(k)
                pixels = augment(np.asarray(Image.open(corpus / src["png_path"]).convert("RGB")), rng)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, "PNG")
                data = buffer.getvalue()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            files.append((rel, digest, src))
        item_id = f"synth:{k:07d}"
        rows.append(
            {
                **src,
                "item_id": item_id,
                "icon_name": f"{k:07d}",
                "png_sha256": digest,
                "png_path": rel,
                "consent_event_id": None,
            }
        )
        works.append(
            {
                "id": f"s{k:07d}",
                "owner_id": ARTIST,
                "title": src["caption"],
                "license_spdx": "CC-BY-4.0",
                "attribution": src["attribution"],
                "source": item_id,
                "sha256": digest,
                "media_type": "image/png",
                "width": 64,
                "height": 64,
                "pdq": "",
                "pdq_quality": 0,
                "pdq_dihedral": "",
            }
        )
        if k % 10000 == 0:
            print(f"  {k} items, {time.perf_counter() - started:.0f} s", flush=True)
    url = f"sqlite:///{target / 'easel.db'}"
    with registry_session(url) as session:
        add_artist(session, ARTIST, "Synthetic augmented renders")
        append_event(
            session,
            "register",
            artist_id=ARTIST,
            actor_id=ARTIST,
            basis="benchmark",
            detail={"note": "artist-wide registration of the synthetic corpus"},
        )
        session.flush()
        for start in range(0, len(works), 20000):
            session.execute(insert(Work), works[start : start + 20000])
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    meta = {"dataset_id": dataset_id_of(table), "size": "64", "seed": "0"}
    pq.write_table(table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()}), manifest)
    print(f"built {items} items in {time.perf_counter() - started:.0f} s", flush=True)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/eh/corpus/64px"))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/curate-synth"))
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument(
        "--distinct",
        type=int,
        default=200_000,
        help="distinct augmented files; rows beyond them reuse the files in turn",
    )
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    parser.add_argument("--skip-stage", action="append", default=[])
    parser.add_argument("--no-descriptors", action="store_true")
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    os.environ["EASEL_HOME"] = str(args.dir / "home")
    args.dir.mkdir(parents=True, exist_ok=True)
    manifest = build(args.corpus, args.dir, args.items, min(args.distinct, args.items))
    if args.build_only:
        return
    from easel.curation.stages import STAGES, CurateConfig

    config = CurateConfig(
        db_url=f"sqlite:///{args.dir / 'easel.db'}",
        base_dir="",
        batch_size=args.batch_size,
        stages=tuple(s for s in STAGES if s not in args.skip_stage),
        encoder=None if args.no_descriptors else "",
        consent_at="2100-01-01T00:00:00+00:00",
    )
    report: dict[str, object] = {
        "items": args.items,
        "distinct_files": min(args.distinct, args.items),
        "stages_skipped": args.skip_stage,
        "descriptors": not args.no_descriptors,
        "cpu_count": os.cpu_count(),
    }
    compare_engines(manifest, args.dir, config, args.engines, args.ray_cpus, report, args.json)


if __name__ == "__main__":
    main()
