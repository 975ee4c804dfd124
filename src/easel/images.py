"""Bringing any decoded picture to 8-bit RGB the way the corpus renders icons: on white."""

from __future__ import annotations

import numpy as np
from PIL import Image


def grey_to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit grey picture (modes ``I;16*``, ``I``, ``F``) → 8-bit ``L``,
    scaled to the sample depth rather than clipped at 255."""
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max(initial=0.0))
    if image.mode == "F":
        top = 1.0 if peak <= 1.0 else 255.0
    else:  # I;16 is 0-65535; "I" is too when a decoder widened 16-bit samples
        top = 65535.0 if image.mode.startswith("I;16") or peak > 255 else 255.0
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8))


def rgb_on_white(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white and deep grey rescaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        image = grey_to_8bit(image)
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def square_on_white(image: Image.Image, size: int) -> Image.Image:
    """``rgb_on_white``, centred on a white square if it is not one (never stretched), then
    resized to ``size``² with Lanczos if it is another size."""
    image = rgb_on_white(image)
    width, height = image.size
    if width != height:
        side = max(width, height)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image
