"""Pictures tests draw themselves: busy, asymmetric artworks and their encoded bytes."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw


def artwork(seed: int, size: int = 256) -> Image.Image:
    """A busy, asymmetric drawing (PDQ quality 100) unique to ``seed``."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x, y = rng.randint(0, size - 40), rng.randint(0, size - 40)
        w, h = rng.randint(size // 12, size // 3), rng.randint(size // 12, size // 3)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x, y, x + w, y + h], fill=colour)
        else:
            draw.rectangle([x, y, x + w, y + h], fill=colour)
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()
