"""Distances behind the report: Fréchet distance in a judge's feature space, and the
memorisation check (nearest training icon by pixels at 32 px and by PDQ hash)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Fréchet distances are computed after projecting the judge's features on the top FD_DIMS
# principal axes of the real images' features: per-set evaluations have only ~20-25
# generated images, and a covariance in the full 256-d space from so few samples is mostly
# noise. The report's feature_space.explained_variance gives the share of variance kept.
FD_DIMS = 32
# Near-copy: the nearest training icon is within this root-mean-square pixel difference (RGB in
# [0, 1], both images shrunk to 32x32 by area averaging). Measured with
# benchmarks/eval_near_copy.py on the 64 px corpus: training icons with Gaussian pixel noise of
# sigma 0.05 added sit at RMSE <= 0.026 from themselves (500 of 500 caught), while 6.5 % of the
# real val/test-split icons (concepts never trained on) sit within 0.03 of some training icon —
# nearly all genuine duplicates in the sets: aliases (flag-jordan / flag-for-flag-jordan),
# man/woman/person variants, skin tones that fluent-emoji-flat names without "-skin-tone". That
# share is the floor real images score; the report prints it beside the model's.
NEAR_COPY_RMSE = 0.03
# PDQ's own documented match threshold (Hamming distance out of 256 bits). Reported for
# reference only: on 64 px emoji, 26 % of real val-split icons are within 31 bits of some
# training icon (measured on 300 icons), so PDQ alone cannot call copies of flat icons.
PDQ_MATCH_DISTANCE = 31
MEMO_SIZE = 32


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to ``a`` ``[N x D]`` and ``b`` ``[M x D]``:
    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)``; NaN when either
    side has fewer than two rows. Stable for the rank-deficient covariances of small samples."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root1 = _psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0.0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)
    return max(value, 0.0)


@dataclass
class FeatureSpace:
    """A PCA projection fitted on real features: ``project([N x F]) -> [N x FD_DIMS]``."""

    mean: np.ndarray
    components: np.ndarray  # [F x k]
    explained: float

    @classmethod
    def fit(cls, feats: np.ndarray, dims: int = FD_DIMS) -> FeatureSpace:
        mean = feats.mean(0)
        centred = feats - mean
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        k = min(dims, vt.shape[0])
        var = s**2
        return cls(mean, vt[:k].T.copy(), float(var[:k].sum() / max(var.sum(), 1e-12)))

    def project(self, feats: np.ndarray) -> np.ndarray:
        return (feats - self.mean) @ self.components


def small_pixels(images: np.ndarray, size: int = MEMO_SIZE) -> torch.Tensor:
    """``uint8 [N x H x W x 3]`` → float ``[N x size*size*3]`` in [0, 1] (area-shrunk)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="area")
    return x.reshape(len(x), -1)


def pdq_hashes(images: np.ndarray) -> np.ndarray:
    """PDQ hashes of ``uint8 [N x H x W x 3]`` images → bool ``[N x 256]``."""
    import pdqhash

    out = np.zeros((len(images), 256), dtype=bool)
    for i, img in enumerate(images):
        out[i] = pdqhash.compute(np.ascontiguousarray(img))[0].astype(bool)
    return out


@dataclass
class MemorisationIndex:
    """The generator's training icons, searchable by pixels (32 px) and by PDQ hash."""

    item_ids: list[str]
    pixels: torch.Tensor  # [T x 3072]
    sq_norms: torch.Tensor  # [T]
    hashes: np.ndarray  # [T x 256] bool

    @classmethod
    def build(cls, item_ids: list[str], images: np.ndarray) -> MemorisationIndex:
        pixels = small_pixels(images)
        return cls(item_ids, pixels, (pixels * pixels).sum(1), pdq_hashes(images))

    def nearest(self, images: np.ndarray) -> list[dict]:
        """For each image: the nearest training icon by pixel RMSE and by PDQ distance."""
        if len(self.item_ids) == 0:
            return [{"nearest_item": None, "nearest_rmse": float("nan"), "pdq_item": None,
                     "pdq_distance": 256, "near_copy": False} for _ in range(len(images))]
        q = small_pixels(images)
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ self.pixels.T + self.sq_norms[None]
        best = d2.clamp_min(0).min(1)
        rmse = (best.values / q.shape[1]).sqrt()
        hashes = pdq_hashes(images)
        out = []
        for i in range(len(images)):
            ham = (hashes[i][None, :] != self.hashes).sum(1)
            j = int(ham.argmin())
            out.append({
                "nearest_item": self.item_ids[int(best.indices[i])],
                "nearest_rmse": round(float(rmse[i]), 4),
                "pdq_item": self.item_ids[j],
                "pdq_distance": int(ham[j]),
                "near_copy": bool(rmse[i] <= NEAR_COPY_RMSE),
            })
        return out
