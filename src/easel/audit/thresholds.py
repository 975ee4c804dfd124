"""The audit's calibrated thresholds (cosine scores of the shipped encoder, PDQ bits).

Calibrated with ``easel audit eval --split val`` (the validation split; figures reported on
the test split in BENCHMARKS.md, "Descriptors and audit"): for every icon of the split, each
attack of ``augment.ATTACKS`` is applied and its copy descriptor scored against every icon of
the split; the false-positive rate of a threshold is the share of (attacked query, other icon)
pairs at or above it. Pairs whose two originals are themselves PDQ matches (skin-tone and
colour variants of one drawing) are left out of the negatives.
"""

from __future__ import annotations

from easel.registry.fingerprint import PDQ_MATCH_DISTANCE

COPY_THRESHOLD = 0.979
"""Copy score at or above which an image is a *copy* of a registered work: false-positive rate
1e-5 per pair (0.9792) measured by ``easel audit eval --split val --limit 300`` (300 val icons ×
10 attacks, 893,120 negative pairs) with the shipped encoder."""
NEAR_COPY_THRESHOLD = 0.945
"""Copy score at or above which an image is a *near-copy*: false-positive rate 1e-4 per pair
(0.9452) in the same run (at 1e-3 it would be 0.885). The generator's output guard refuses at
this score."""
REGISTRY_COPY_THRESHOLD = COPY_THRESHOLD
"""Copy score at or above which the registry refuses an upload as another owner's work. Measured
with ``benchmarks/audit_refusals.py`` (all 19,396 corpus icons registered, each of the 1,226 test
icons uploaded by its own artist): at 0.979, 11 false refusals (0.9 %; emoji of one concept drawn
alike by two sets) and 298 of 1,226 cropped+rotated+bordered copies caught; at 0.945, 135 false
refusals (11 %) — too many to refuse on — for 1,020 caught. PDQ still refuses plain copies."""
STYLE_THRESHOLD = 0.992
"""Style score at or above which two images are a *strong style match*: false-positive rate
1e-2 per pair of icons from different sets (0.9918) in the same run. The style head is weak
(mAP@10 0.45), so this verdict is rare and only indicative."""
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
