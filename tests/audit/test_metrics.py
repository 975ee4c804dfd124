"""The evaluation's threshold and µAP arithmetic on cases worked by hand."""

from __future__ import annotations

import numpy as np

from easel.audit.evaluate import micro_ap, threshold_at
from easel.audit.thresholds import NEAR_COPY_THRESHOLD, STYLE_THRESHOLD, verdict


def test_threshold_at_lets_through_at_most_the_rate() -> None:
    negatives = np.arange(10_000, dtype=np.float32)
    t = threshold_at(negatives, 1e-3)
    assert (negatives > t).sum() <= 10 and (negatives >= t).sum() == 11


def test_micro_ap_is_one_when_every_original_ranks_first_and_lower_otherwise() -> None:
    eye = np.eye(3, dtype=bool)
    valid = np.ones((3, 3), dtype=bool)
    perfect = np.eye(3) + 0.1
    assert micro_ap(perfect, eye, valid) == 1.0
    wrong = perfect.copy()
    wrong[0] = [0.0, 0.9, 0.1]  # query 0's original is last; its distractor outranks everything
    assert micro_ap(wrong, eye, valid) < 0.9


def test_verdicts_follow_the_thresholds() -> None:
    assert verdict(0.0, 0.0, 0) == "copy"
    assert verdict(NEAR_COPY_THRESHOLD, 0.0, 200) == "near-copy"
    assert verdict(0.0, STYLE_THRESHOLD, None) == "strong style match"
    assert verdict(0.0, 0.0, None) == "none"


def test_skin_tone_variants_share_a_variant_key_only_within_a_set() -> None:
    from easel.audit.evaluate import variant_key

    a = variant_key("openmoji", "people holding hands, medium skin tone and dark skin tone")
    assert a == variant_key("openmoji", "people holding hands")
    assert a != variant_key("noto", "people holding hands")
    assert variant_key("noto", "man guard") != variant_key("noto", "woman guard")
