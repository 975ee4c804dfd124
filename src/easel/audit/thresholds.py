"""The audit's calibrated thresholds (cosine scores of the shipped encoder — copy head v3, style
head v4 — and PDQ bits).

Calibrated on the validation split of the consented 256 px corpus (19,050 registered works);
figures reported on the test split in BENCHMARKS.md, "Descriptors and audit". Scores only mean
something for the encoder that made them: a new encoder gets new thresholds. A copy score with a
registered work is the best over the work's reference views (``encoder.reference_views``: whole
picture, nine half-area crops, ±12° rotations), as the registry stores them.

A verdict is about one image against a whole registry, so the copy and near-copy thresholds are
set *per query* (``benchmarks/guard_rate.py``): every val icon is scored against every other
registered work — leaving out itself, its skin-tone variants and its PDQ twins — and the
threshold is the score that only 1 % (copy) or 5 % (near-copy) of these drawings, which copied
nobody, reach with some work. Most of those look-alikes are drawings of the same set sharing a
template (one artist's faces). A per-pair rate would not do: at 1e-4 per pair, a registry of
19 k works gives ~2 false matches per query (encoder v1's near-copy threshold would have made the
output guard refuse 21 % of the s7712 model's pictures).
"""

from __future__ import annotations

from easel.registry.fingerprint import PDQ_MATCH_DISTANCE

COPY_THRESHOLD = 0.977
"""Copy score at or above which an image is a *copy* of a registered work: 1 % of unseen val
drawings reach it with some other work (0.9771). 95 % of blurred and all JPEG-compressed copies
of val icons reach it (``benchmarks/guard_rate.py``)."""
NEAR_COPY_THRESHOLD = 0.945
"""Copy score at or above which an image is a *near-copy*: 5 % of unseen val drawings reach it
(0.9446); 99 % of blurred and all JPEG copies reach it, 66 % of recoloured ones. The generator's
output guard refuses from here: 7 of 140 pictures of the s23674-d4429 model (shipped in sessions
8–10) reach it (5.0 %, as many as of unseen real drawings; highest 0.978; with its old decoder 5 of
140, highest 0.982) — closer to a registered icon than 95 % of real drawings are."""
REGISTRY_COPY_THRESHOLD = 0.88
"""Copy score with *another owner's* work at or above which the registry refuses an upload
(``benchmarks/audit_refusals.py --split val``: every val icon uploaded by its own artist against
all 19,050 registered works): 1 of 814 false refusals (0.1 %) and 709 of 814 cropped + rotated +
bordered copies caught (87 %). 0.86 would catch 754 at the limit of 0.5 % false refusals (4 of
814); the stricter value is kept, since refusing an artist their own work is the worse error.
Lower than the near-copy threshold because other owners' drawings are far less alike than one
artist's own. PDQ still refuses plain copies."""
STYLE_THRESHOLD = 0.671
"""Style score at or above which two images are a *strong style match*: false-positive rate 1e-2
per pair of val icons from different sets (0.6711) in ``easel audit eval --split val`` with the
v4 style head (v3's was 0.959: the new head spreads the sets further apart; test split 0.6870)."""
DUPLICATE_COPY_THRESHOLD = 0.972
"""Copy score of two *whole* pictures (no reference views) at or above which curation calls
two items duplicates and ``easel dataset lookup`` finds a picture in a model's data: 1 % of
unseen val drawings reach it with some other work's whole picture (0.9719,
``benchmarks/guard_rate.py``)."""
PDQ_COPY_DISTANCE = PDQ_MATCH_DISTANCE
"""A PDQ distance at or below this (the registry's own match distance) is a copy outright."""

VERDICTS = ("copy", "near-copy", "strong style match", "none")


def verdict(copy_score: float, style_score: float, pdq_distance: int | None) -> str:
    """The verdict for one (image, registered work) pair, strongest first in ``VERDICTS``."""
    if (pdq_distance is not None and pdq_distance <= PDQ_COPY_DISTANCE) or copy_score >= COPY_THRESHOLD:
        return "copy"
    if copy_score >= NEAR_COPY_THRESHOLD:
        return "near-copy"
    if style_score >= STYLE_THRESHOLD:
        return "strong style match"
    return "none"
