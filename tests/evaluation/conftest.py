"""A tiny synthetic corpus the evaluation tests write: three 'artists' with blatant styles
drawing the same 24 concepts (8 shapes x 3 colours), as a real manifest + PNG files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from easel.corpus.manifest import MANIFEST_SCHEMA, dataset_id_of
from easel.evaluation.judges import JudgeTrainConfig

SHAPES = ("circle", "square", "triangle", "diamond", "bar", "cross", "ring", "dot")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220)}
STYLES = ("alpha", "beta", "gamma")
SIZE = 64
# Small, fast judge training for the tiny corpus (a few seconds on one thread).
TINY_TRAIN = {
    "style": JudgeTrainConfig(epochs=12, batch_size=24, lr=3e-3, width=8),
    "concept": JudgeTrainConfig(epochs=50, batch_size=16, lr=3e-3, width=8, label_smoothing=0.0),
}


def _draw(shape: str, colour: tuple[int, int, int], style: str, rng: np.random.Generator) -> Image.Image:
    bg = (255, 255, 255) if style != "gamma" else (250, 220, 120)
    im = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    d = ImageDraw.Draw(im)
    if style == "gamma":
        d.rounded_rectangle((2, 2, SIZE - 3, SIZE - 3), radius=12, fill=bg)
    off = rng.integers(-3, 4, 2)
    c = SIZE // 2
    r = 18 + int(rng.integers(-2, 3))
    x0, y0, x1, y1 = c - r + off[0], c - r + off[1], c + r + off[0], c + r + off[1]
    kw: dict = {"fill": colour, "outline": (0, 0, 0), "width": 4} if style == "alpha" else (
        {"fill": None, "outline": colour, "width": 5} if style == "beta" else {"fill": colour})
    box = (int(x0), int(y0), int(x1), int(y1))
    if shape == "circle":
        d.ellipse(box, **kw)
    elif shape == "square":
        d.rectangle(box, **kw)
    elif shape == "triangle":
        d.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], **kw)
    elif shape == "diamond":
        mx, my = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        d.polygon([(mx, box[1]), (box[2], my), (mx, box[3]), (box[0], my)], **kw)
    elif shape == "bar":
        d.rectangle((box[0], box[1] + r // 2, box[2], box[3] - r // 2), **kw)
    elif shape == "cross":
        d.rectangle((box[0] + r * 2 // 3, box[1], box[2] - r * 2 // 3, box[3]), **kw)
        d.rectangle((box[0], box[1] + r * 2 // 3, box[2], box[3] - r * 2 // 3), **kw)
    elif shape == "ring":
        d.ellipse(box, outline=colour if style != "alpha" else (0, 0, 0), width=9)
    else:
        d.ellipse((c - 7 + off[0], c - 7 + off[1], c + 7 + off[0], c + 7 + off[1]), **kw)
    return im


def write_synthetic_corpus(root: Path) -> Path:
    """Write PNGs and ``manifest.parquet`` under ``root``; every 4th concept is in 'val'."""
    rows = []
    concepts = [f"{col}-{shape}" for shape in SHAPES for col in COLOURS]
    for k, concept in enumerate(concepts):
        col, shape = concept.split("-")
        split = "val" if k % 4 == 3 else "train"
        for style in STYLES:
            seed = int(hashlib.sha256(f"{style}:{concept}".encode()).hexdigest()[:8], 16)
            img = _draw(shape, COLOURS[col], style, np.random.default_rng(seed))
            rel = f"images/{style}/{concept}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            img.save(root / rel)
            rows.append({
                "item_id": f"{style}:{concept}", "set_id": style, "icon_name": concept,
                "concept": concept, "caption": concept.replace("-", " "),
                "style_tag": f"{style} style", "rights_holder": "Test Artist",
                "license_spdx": "CC-BY-4.0", "license_url": "https://example.org",
                "attribution": "test", "source": "synthetic", "svg_sha256": "", "png_sha256": "",
                "width": SIZE, "height": SIZE, "split": split, "consent_event_id": None,
                "png_path": rel,
            })
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["item_id"]), schema=MANIFEST_SCHEMA)
    meta = {"dataset_id": dataset_id_of(table), "size": str(SIZE), "sets": json.dumps(list(STYLES))}
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    pq.write_table(table, root / "manifest.parquet")
    return root / "manifest.parquet"


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_corpus(tmp_path_factory.mktemp("synthetic-corpus"))


@pytest.fixture(scope="session")
def tiny_judges(synthetic_manifest: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(corpus, judges) trained once per session on the synthetic corpus."""
    from easel.evaluation import ensure_judges, load_eval_corpus

    corpus = load_eval_corpus(synthetic_manifest)
    home = tmp_path_factory.mktemp("judge-home")
    return corpus, ensure_judges(corpus, home, train=TINY_TRAIN, progress=False)
