"""Captions and concept keys from Iconify icon names.

``fox-face`` → "fox face"; ``waving-hand-medium-dark-skin-tone`` → "waving hand, medium-dark
skin tone". The *concept* of an icon is its name with skin-tone qualifiers removed, so that all
variants of one emoji fall in the same train/validation/test split.

Fluent Emoji names its tone variants with a bare suffix (``artist-dark``, ``artist-medium-light``);
such a suffix counts as a skin tone when the set also holds the base name (``artist``), which
keeps ``vertical-traffic-light`` a traffic light.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection

_TONE = r"(?:medium-light|medium-dark|light|medium|dark)-skin-tone"
_TONE_RE = re.compile(rf"-({_TONE})")
_BARE_TONE_RE = re.compile(r"-(medium-light|medium-dark|light|medium|dark)$")


def _split_tones(name: str, siblings: Collection[str] | None) -> tuple[str, list[str]]:
    tones = [m.group(1) for m in _TONE_RE.finditer(name)]
    base = _TONE_RE.sub("", name)
    bare = _BARE_TONE_RE.search(base)
    if bare and siblings is not None and _BARE_TONE_RE.sub("", base) in siblings:
        tones.append(bare.group(1) + "-skin-tone")
        base = _BARE_TONE_RE.sub("", base)
    return base, tones


def caption_for(name: str, siblings: Collection[str] | None = None) -> str:
    """Human caption for an icon name (lower-case words, tone qualifiers after a comma).

    ``siblings``: the other names in the icon's set (to recognise bare tone suffixes).
    """
    base, tones = _split_tones(name, siblings)
    words = base.replace("_", " ").replace("-", " ").strip()
    words = re.sub(r"\s+", " ", words)
    if not tones:
        return words
    tone_text = " and ".join(t.replace("-skin-tone", "").replace("-", "-") + " skin tone"
                             for t in tones)
    return f"{words}, {tone_text}"


def concept_for(name: str, siblings: Collection[str] | None = None) -> str:
    """The concept key an icon belongs to (its name without skin-tone qualifiers)."""
    return _split_tones(name, siblings)[0]


def split_for(concept: str, seed: int, val_fraction: float = 0.05,
              test_fraction: float = 0.05) -> str:
    """Deterministic split of a concept: "train", "val" or "test" (by a seeded hash)."""
    digest = hashlib.sha256(f"{seed}:{concept}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def prompt_for(caption: str, style_tag: str | None) -> str:
    """The prompt text used in training and evaluation: "fox face, twemoji style"."""
    return f"{caption}, {style_tag}" if style_tag else caption


def split_style(prompt: str) -> tuple[str, str | None]:
    """The inverse of :func:`prompt_for`: "fox face, twemoji style" → ("fox face", "twemoji
    style"); a prompt whose last comma-separated part does not end in " style" has no style tag."""
    head, sep, tail = prompt.rpartition(",")
    tail = tail.strip()
    if sep and head.strip() and tail.endswith(" style") and len(tail) > len(" style"):
        return head.strip(), tail
    return prompt, None
