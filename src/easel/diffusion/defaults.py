"""What generation uses when not told otherwise: one table, read by the pipeline, the CLI,
the server's jobs and schemas and the model evaluation.

Kept free of heavy imports (no torch, no diffusers) so that the CLI's option defaults and the
server's request schemas can read it without loading the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from easel.errors import BadInput

SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "embedded"
"""The embedded model shipped in the package (its upscaler is the ``upscaler`` folder in it)."""


@dataclass(frozen=True)
class SamplingDefaults:
    """Sampler settings for the embedded model and for loaded Stable Diffusion checkpoints."""

    steps: int = 20
    guidance_scale: float = 6.0
    """Classifier-free guidance. Chosen on the embedded model by the 3-7 sweep in BENCHMARKS.md
    ("Session 12" and "Session 13: guidance 6 is the new default"): seen-concept style 0.806 at 6
    against 0.776 at 3 and 7. Stable Diffusion checkpoints are usually run at 5-8."""
    style_guidance_scale: float = 0.0
    """Extra guidance towards the prompt's style tag: the prediction for "caption, style"
    minus that for the caption alone (0 = off). BENCHMARKS.md ("style guidance")."""
    classifier_guidance_scale: float = 0.0
    """Style classifier guidance, for a model that has a ``style_classifier`` (0 = off)."""
    strength: float = 0.6  # img2img
    max_steps: int = 200
    max_guidance: float = 30.0


SAMPLING = SamplingDefaults()


def check_guidance(scale: float, name: str = "guidance_scale") -> float:
    """``scale`` as a float if ``0 ≤ scale ≤ max_guidance``, else a ``BadInput`` naming ``name``
    (the pipeline's argument, the API field or the CLI option that gave it)."""
    value = float(scale)
    if not 0.0 <= value <= SAMPLING.max_guidance:
        raise BadInput(f"{name} must be between 0 and {SAMPLING.max_guidance:g}, got {scale}")
    return value


def check_guidance_interval(interval: tuple[float, float],
                            name: str = "guidance_interval") -> tuple[float, float]:
    """``(lo, hi)`` as floats if ``0 ≤ lo < hi ≤ 1`` (noise levels, 1 = pure noise), else a
    ``BadInput`` naming ``name`` (the pipeline's argument, or the CLI option that gave it)."""
    lo, hi = (float(x) for x in interval)
    if not 0.0 <= lo < hi <= 1.0:
        raise BadInput(f"{name}: need 0 ≤ LO < HI ≤ 1, got {lo},{hi}")
    return lo, hi
