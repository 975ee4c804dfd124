"""Calibrate the memorisation check's near-copy threshold (``NEAR_COPY_RMSE``).

Measures, on a corpus manifest, the nearest-training-icon RMSE (32 px, RGB in [0, 1]) of
(a) real val/test-split icons of the base sets — concepts a model never trained on, so any
match is a corpus duplicate or a false alarm — and (b) training icons with Gaussian pixel noise
(sigma 0.05 at 64 px) added — copies that must be caught. Prints shares under some thresholds
and the closest pairs.

    EASEL_HOME=/tmp/eh nice -n 10 .venv/bin/python benchmarks/eval_near_copy.py [--manifest DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from easel.config import get_settings
    from easel.evaluation.data import load_eval_corpus
    from easel.evaluation.metrics import NEAR_COPY_RMSE, small_pixels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = load_eval_corpus(args.manifest or get_settings().corpus_dir / "64px")
    images = corpus.images()
    train = corpus.index_where(splits=("train",), sets=corpus.base_sets)
    unseen = corpus.index_where(splits=("val", "test"), sets=corpus.base_sets)
    gallery = small_pixels(images[train])
    norms = (gallery * gallery).sum(1)

    def nearest(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = small_pixels(x)
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ gallery.T + norms[None]
        best = d2.clamp_min(0).min(1)
        return (best.values / q.shape[1]).sqrt().numpy(), best.indices.numpy()

    rmse, idx = nearest(images[unseen])
    pick = np.random.default_rng(0).choice(len(train), min(500, len(train)), replace=False)
    clean = torch.from_numpy(images[train[pick]]).float() / 255
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    copies, _ = nearest((noisy * 255).round().byte().numpy())
    print(f"{len(unseen)} real val/test icons against {len(train)} training icons")
    for t in (0.01, 0.02, 0.03, 0.045, 0.06):
        mark = "  <- NEAR_COPY_RMSE" if abs(t - NEAR_COPY_RMSE) < 1e-9 else ""
        print(f"  RMSE <= {t:.3f}: unseen real icons {np.mean(rmse <= t):.4f}, "
              f"noised training copies {np.mean(copies <= t):.4f}{mark}")
    print(f"noised copies: median {np.median(copies):.4f}, max {copies.max():.4f}")
    print("closest unseen/training pairs:")
    for k in np.argsort(rmse)[:200:20]:
        a, b = corpus.rows[unseen[k]]["item_id"], corpus.rows[train[idx[k]]]["item_id"]
        print(f"  {rmse[k]:.3f}  {a}  ~  {b}")


if __name__ == "__main__":
    main()
