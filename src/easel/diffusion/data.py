"""Training data for the embedded model: manifest rows → image tensors and prompts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from tqdm import tqdm

from easel.corpus.captions import prompt_for
from easel.corpus.manifest import load_manifest, manifest_metadata
from easel.errors import BadInput


@dataclass
class TrainingSet:
    """Images ``[N x 3 x H x W]`` uint8, their prompts, and where they came from."""

    images: torch.Tensor
    prompts: list[str]  # "caption, style tag"
    captions: list[str]  # caption alone (style dropout)
    item_ids: list[str]
    set_ids: list[str]
    dataset_id: str
    manifest_path: Path
    rows: list[dict]


def select_rows(table: pa.Table, splits: tuple[str, ...] = ("train",),
                exclude_sets: tuple[str, ...] = ()) -> list[dict]:
    """Rows of the given splits, without the excluded sets, in item-id order."""
    rows = [r for r in table.to_pylist()
            if r["split"] in splits and r["set_id"] not in exclude_sets]
    rows.sort(key=lambda r: r["item_id"])
    return rows


def load_training_set(manifest: Path, splits: tuple[str, ...] = ("train",),
                      exclude_sets: tuple[str, ...] = (), progress: bool = True) -> TrainingSet:
    """Read a manifest and its PNGs into memory (uint8; 64 px × 16.5 k icons ≈ 200 MB)."""
    table = load_manifest(manifest)
    path = manifest / "manifest.parquet" if manifest.is_dir() else manifest
    rows = select_rows(table, splits, exclude_sets)
    if not rows:
        raise BadInput(f"manifest {path} has no rows in split(s) {', '.join(splits)}")
    size = int(rows[0]["width"])
    images = torch.empty((len(rows), 3, size, size), dtype=torch.uint8)
    for i, row in enumerate(tqdm(rows, desc="load images", unit="img", disable=not progress)):
        with Image.open(path.parent / row["png_path"]) as im:
            arr = np.array(im.convert("RGB"), dtype=np.uint8)
        images[i] = torch.from_numpy(arr).permute(2, 0, 1)
    meta = manifest_metadata(table)
    return TrainingSet(
        images=images,
        prompts=[prompt_for(r["caption"], r["style_tag"]) for r in rows],
        captions=[r["caption"] for r in rows],
        item_ids=[r["item_id"] for r in rows],
        set_ids=[r["set_id"] for r in rows],
        dataset_id=meta.get("dataset_id", ""),
        manifest_path=path,
        rows=rows,
    )


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N x 3 x H x W]`` → float in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def to_pil(batch: torch.Tensor) -> list[Image.Image]:
    """float ``[N x 3 x H x W]`` in [-1, 1] → PIL RGB images."""
    arr = ((batch.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
