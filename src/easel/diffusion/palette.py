"""Each base style's own colours, and the pass that paints a picture with them.

An emoji set's style is largely its colours: session 6 found that the colours of a drawing,
finely binned, name its set nearly as well as everything else the audit encoder reads
(BENCHMARKS.md, "a colour-aware style head"). The denoiser draws colours near its set's, not
at them: a twemoji face comes out between twemoji's yellow and the other sets'. This module
keeps, for each style tag of the training set, the ``colours`` most frequent exact colours of
its training icons, and moves each pixel of a picture drawn in that style onto its nearest
colour in the palette, by ``strength`` (1: all the way), when it lies within ``radius`` (RGB
distance, 0–255 units) of it. Pixels further from every palette colour (an edge between two
fills, a colour the set never uses) are left as drawn, and so are the pixels nearest the most
frequent colour, the canvas the icons are drawn on (white): the canvas is not paint, and
snapping off-white pixels to pure white would thin light drawings into the background.

The palette is a pipeline component (``style_palette``), saved with the model like its
weights, so the weights digest in every picture's credentials covers it. ``easel train
palette`` builds it from the consented training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from easel.errors import BadInput

DEFAULT_COLOURS = 16
"""Colours kept per style (BENCHMARKS.md, session 30: 16 to 128 measured; 32 and more made
more near-copies of training icons)."""

DEFAULT_RADIUS = 60.0
"""How near (RGB distance, 0–255 units) a pixel must be to a palette colour to move onto it."""

PALETTE_SUFFIX = "-p"
"""Part of a model id whose pipeline paints with a style palette: ``…-s41032-w…-p16w0a1b2c3d-d4429``
keeps 16 colours per style (palette weights 0a1b2c3d)."""


def check_strength(value: float, name: str = "palette_strength") -> float:
    """``value`` as a float if it is a strength in [0, 1]; ``BadInput`` naming ``name`` otherwise."""
    try:
        strength = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= strength <= 1.0:  # also refuses nan
        raise BadInput(f"{name} must be between 0 and 1, got {value}",
                       hint="0 leaves the model's colours as drawn, 1 moves them onto the style's own")
    return strength


class StylePalette(ModelMixin, ConfigMixin):
    """The ``colours`` most frequent colours of each style tag's training icons (``palette``:
    float ``[tags x colours x 3]``, 0–255), with the default ``strength`` and the ``radius``
    of :meth:`paint`."""

    @register_to_config
    def __init__(self, style_tags: list[str] | tuple[str, ...] = (), colours: int = DEFAULT_COLOURS,
                 strength: float = 1.0, radius: float = DEFAULT_RADIUS) -> None:
        super().__init__()
        if not style_tags:
            raise BadInput("a style palette needs at least one style tag")
        if int(colours) < 1:
            raise BadInput(f"a style palette keeps at least one colour per style, got {colours}")
        check_strength(strength, "strength")
        if not float(radius) > 0.0:
            raise BadInput(f"a style palette's radius must be above 0, got {radius}")
        self.register_buffer("palette", torch.zeros(len(style_tags), int(colours), 3))

    @property
    def tags(self) -> list[str]:
        return list(self.config.style_tags)

    def colours_of(self, tag: str) -> np.ndarray:
        """``uint8 [colours x 3]``: the palette of ``tag`` (``ValueError`` if it has none)."""
        return self.palette[self.tags.index(tag)].round().to(torch.uint8).numpy()

    def paint(self, images: np.ndarray, tags: Sequence[str | None], strength: float | None = None,
              masks: np.ndarray | None = None) -> np.ndarray:
        """``images`` (``uint8 [N x H x W x 3]``) with each pixel of image ``i`` moved by
        ``strength`` (default: the configured one) onto its nearest colour in ``tags[i]``'s
        palette, if within ``radius`` of it and that colour is not the palette's first (the
        canvas). Images whose tag is None or unknown are returned as they are; ``masks`` (bool
        ``[N x H x W]``) limits the change to its True pixels."""
        strength = check_strength(self.config.strength if strength is None else strength)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise BadInput(f"images must be uint8 [N x H x W x 3], got {images.dtype} {images.shape}")
        if len(tags) != len(images):
            raise BadInput(f"{len(tags)} style tags for {len(images)} images")
        out = images.copy()
        if strength == 0.0:
            return out
        index = {t: i for i, t in enumerate(self.tags)}
        radius2 = float(self.config.radius) ** 2
        for i, tag in enumerate(tags):
            if tag not in index:
                continue
            pixels = torch.from_numpy(images[i].reshape(-1, 3)).float()
            colours = self.palette[index[tag]].float()
            dist2 = ((pixels[:, None, :] - colours[None]) ** 2).sum(-1)
            nearest, j = dist2.min(dim=1)
            move = ((nearest < radius2) & (j != 0)).float() * strength  # colour 0: the canvas
            if masks is not None:
                move = move * torch.from_numpy(np.array(masks[i], dtype=bool).reshape(-1)).float()
            painted = pixels + move[:, None] * (colours[j] - pixels)
            out[i] = painted.round().clamp(0, 255).to(torch.uint8).numpy().reshape(images[i].shape)
        return out


def most_frequent_colours(images: np.ndarray, colours: int) -> np.ndarray:
    """``uint8 [colours x 3]``: the ``colours`` exact colours most pixels of ``images``
    (``uint8 [N x H x W x 3]``) have, most frequent first (ties: the smaller RGB value first).
    Fewer distinct colours than ``colours`` repeat the most frequent one, which moves no pixel
    (the nearest of equal colours is the first, which :meth:`StylePalette.paint` leaves)."""
    pixels = images.reshape(-1, 3).astype(np.int64)
    keys = pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2]
    unique, counts = np.unique(keys, return_counts=True)
    order = np.lexsort((unique, -counts))[:colours]
    picked = unique[order]
    if len(picked) < colours:
        picked = np.concatenate([picked, np.full(colours - len(picked), picked[0])])
    return np.stack([(picked >> 16) & 255, (picked >> 8) & 255, picked & 255], axis=1).astype(np.uint8)


def build_palette(images: np.ndarray, tags: Sequence[str], colours: int = DEFAULT_COLOURS,
                  strength: float = 1.0, radius: float = DEFAULT_RADIUS) -> StylePalette:
    """A :class:`StylePalette` of the style tags in ``tags``, each from the pixels of the
    ``images`` (``uint8 [N x H x W x 3]``) that carry it."""
    if len(tags) != len(images) or not len(images):
        raise BadInput(f"a palette needs one style tag per image and at least one image, got "
                       f"{len(tags)} tags for {len(images)} images")
    names = sorted({t for t in tags if t})
    if not names:
        raise BadInput("none of the images has a style tag",
                       hint="build the palette from a base training set")
    palette = StylePalette(style_tags=names, colours=colours, strength=strength, radius=radius)
    tag_array = np.asarray(tags, dtype=object)
    with torch.no_grad():
        for i, name in enumerate(names):
            palette.palette[i] = torch.from_numpy(
                most_frequent_colours(images[tag_array == name], colours).astype(np.float32))
    return palette


def palette_record(palette: StylePalette, dataset_id: str, items: int, from_model: str,
                   consent: str) -> dict[str, Any]:
    """The model card's ``style_palette`` record."""
    return {"style_tags": palette.tags, "colours": int(palette.config.colours),
            "strength": float(palette.config.strength), "radius": float(palette.config.radius),
            "dataset_id": dataset_id, "items": int(items), "from_model": from_model, "consent": consent}


def export_palette(out: Any, base_dir: Any, palette: StylePalette, dataset_id: str, items: int,
                   consent_events: int = 0) -> Any:
    """Write ``base_dir``'s model with ``palette`` as its ``style_palette``.

    Everything else stays; the card gains a ``style_palette`` record, the model id gains
    ``-p<colours>w<weights tag>`` and the base model's evaluation is cleared (its figures do not
    describe the painted pictures). ``out`` may be ``base_dir`` itself: replaced atomically."""
    from pathlib import Path

    from easel.diffusion.training import base_for_part, consent_text, write_with_part

    base_dir, out = Path(base_dir), Path(out)
    pipe, card = base_for_part(base_dir)
    pipe.register_modules(style_palette=palette)
    record = palette_record(palette, dataset_id, items, str(card["model_id"]), consent_text(consent_events))
    return write_with_part(out, base_dir, pipe, card, "style_palette", record, PALETTE_SUFFIX,
                           int(palette.config.colours), palette)
