"""PDQ fingerprints of a picture and of its eight rotations and mirrors.

PDQ (Meta's perceptual hash, ``pdqhash``) gives 256 bits and a quality score 0–100. Its
``compute_dihedral`` is *not* the hash of the mirrored picture (DESIGN.md: a truly mirrored
copy sits 18–54 bits from it), so the eight variants here are the hashes of the eight
rotated/mirrored pictures themselves. A work stores its own hash; a query is searched with
all eight of its variants, so a flipped or rotated copy finds the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

PDQ_BITS = 256
PDQ_BYTES = PDQ_BITS // 8
PDQ_MATCH_DISTANCE = 31
"""Hamming distance at or below which two PDQ hashes are the same picture (ThreatExchange's
recommended threshold). Measured with ``benchmarks/registry_pdq_robustness.py`` on 1,400 real
emoji (200 per set): it catches 99.9 % of JPEG q50, half-size, flipped and 90°-rotated copies,
none of 10 % crops, borders or 10° rotations, and no icon of another set lies within it (nearest
other-set icon: 1st percentile 66 bits). In the full import 8 of 19,124 icons met a look-alike
of another set (simple shapes). See BENCHMARKS.md, "Registry"."""
PDQ_MIN_QUALITY = 50
"""PDQ's own guidance: hashes of quality below 50 (flat, featureless pictures) are unreliable;
such works are stored but neither indexed nor used as queries (exact sha256 still matches)."""
FINGERPRINT_SIDE = 128
"""Pictures are fitted inside this many pixels before hashing (PDQ works on a 64×64 reduction;
hashing at 128 px is 5× faster than at 256 px, see BENCHMARKS.md)."""

DIHEDRAL_NAMES = ("identity", "rot90", "rot180", "rot270",
                  "flip", "flip+rot90", "flip+rot180", "flip+rot270")


@dataclass(frozen=True)
class Fingerprint:
    """A picture's PDQ hash (32 bytes), its quality, and the 8 variants' hashes (identity first)."""

    pdq: bytes
    quality: int
    dihedral: tuple[bytes, ...]

    @property
    def pdq_hex(self) -> str:
        return self.pdq.hex()

    @property
    def dihedral_hex(self) -> str:
        return ",".join(h.hex() for h in self.dihedral)

    @property
    def usable(self) -> bool:
        """Whether the hash is reliable enough to match on (quality ≥ ``PDQ_MIN_QUALITY``)."""
        return self.quality >= PDQ_MIN_QUALITY


def prepare(image: Image.Image, side: int = FINGERPRINT_SIDE) -> np.ndarray:
    """The picture as the hasher sees it: RGB uint8 ``[H x W x 3]``, fitted inside ``side`` px."""
    picture = image.convert("RGB")
    if max(picture.size) > side:
        picture = picture.copy()
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(picture, dtype=np.uint8))


def pdq_of_array(pixels: np.ndarray) -> tuple[bytes, int]:
    """PDQ of an RGB uint8 ``[H x W x 3]`` array: (32 packed bytes, quality 0–100)."""
    import pdqhash

    bits, quality = pdqhash.compute(np.ascontiguousarray(pixels))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality)


def dihedral_arrays(pixels: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations/mirrors of ``[H x W x 3]`` pixels, in ``DIHEDRAL_NAMES`` order."""
    flipped = pixels[:, ::-1]
    return [np.rot90(pixels, k) for k in range(4)] + [np.rot90(flipped, k) for k in range(4)]


def fingerprint(image: Image.Image) -> Fingerprint:
    """Hash ``image`` and its 8 rotated/mirrored pictures."""
    pixels = prepare(image)
    hashes: list[bytes] = []
    quality = 0
    for i, variant in enumerate(dihedral_arrays(pixels)):
        digest, q = pdq_of_array(variant)
        hashes.append(digest)
        if i == 0:
            quality = q
    return Fingerprint(hashes[0], quality, tuple(hashes))


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length hashes."""
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def parse_hex(values: str | Sequence[str]) -> list[bytes]:
    """Hex hash(es), comma-separated or a list, to bytes; raises ``ValueError`` on bad input."""
    items = values.split(",") if isinstance(values, str) else list(values)
    out = [bytes.fromhex(v.strip()) for v in items if v.strip()]
    if any(len(h) != PDQ_BYTES for h in out):
        raise ValueError("a PDQ hash is 64 hex digits")
    return out
