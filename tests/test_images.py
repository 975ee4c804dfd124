"""Every loader brings odd pictures to 8-bit RGB on white the same way."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from easel.images import rgb_on_white
from easel.registry.validate import load_image


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_sixteen_bit_grey_is_rescaled_not_clipped() -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    opened = Image.open(io.BytesIO(_png(Image.fromarray(ramp))))
    assert opened.mode.startswith("I")
    for picture in (rgb_on_white(opened), load_image(_png(Image.fromarray(ramp)), "deep.png").image):
        grey = np.asarray(picture)[..., 0]
        assert picture.mode == "RGB" and grey[0, 0] == 0 and grey[-1, -1] == 255
        assert (grey == 255).mean() < 0.01  # clipping at 255 would make ~94 % of the ramp white
        assert abs(int(grey[32, 0]) - 128) <= 1  # mid-ramp stays mid-grey


def test_float_and_alpha_pictures() -> None:
    half = Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32))
    assert abs(int(np.asarray(rgb_on_white(half))[0, 0, 0]) - 128) <= 1
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert (np.asarray(rgb_on_white(clear)) == 255).all()
    solid = Image.new("LA", (8, 8), (0, 255))
    assert (np.asarray(rgb_on_white(solid)) == 0).all()
    rgb = Image.new("RGB", (4, 4), (1, 2, 3))
    assert rgb_on_white(rgb) is rgb
