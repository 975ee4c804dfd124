"""A contact sheet: images in a grid with their captions underneath (PIL only)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from easel.errors import BadInput


def contact_sheet(images: Sequence[Any], captions: Sequence[str], columns: int = 4,
                  tile: int = 128) -> Any:
    """Lay ``images`` (PIL, any size) out ``columns`` wide, each ``tile`` px square (nearest-
    neighbour enlargement, so the model's pixels are shown as they are), caption below."""
    from PIL import Image, ImageDraw, ImageFont

    if len(images) != len(captions):
        raise BadInput(f"{len(images)} images but {len(captions)} captions")
    if not images:
        raise BadInput("no images for the contact sheet")
    font = ImageFont.load_default(size=12)
    text_h = 46
    rows = -(-len(images) // columns)
    pad = 6
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x = pad + (i % columns) * (tile + pad)
        y = pad + (i // columns) * (tile + text_h + pad)
        im = image.convert("RGB")
        im = im.resize((tile, tile), Image.Resampling.NEAREST if im.width <= tile else Image.Resampling.BOX)
        sheet.paste(im, (x, y))
        lines = textwrap.wrap(caption, width=max(8, tile // 7))[:3]
        for j, line in enumerate(lines):
            draw.text((x, y + tile + 2 + 14 * j), line, fill=(30, 30, 30), font=font)
    return sheet
