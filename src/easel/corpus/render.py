"""Render Iconify SVG bodies to RGB PNG on white with resvg."""

from __future__ import annotations

import io

import resvg_py
from PIL import Image

from easel.errors import BadInput
from easel.images import rgb_on_white

SVG_NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def icon_svg(icon: dict, default_width: float, default_height: float) -> str:
    """A standalone square SVG document for one Iconify icon entry.

    Non-square view boxes are padded (centred) to a square so icons are never stretched.
    """
    width = float(icon.get("width", default_width))
    height = float(icon.get("height", default_height))
    left = float(icon.get("left", 0))
    top = float(icon.get("top", 0))
    side = max(width, height)
    left -= (side - width) / 2
    top -= (side - height) / 2
    body = icon["body"]
    transforms = []
    if icon.get("hFlip"):
        transforms.append(f"translate({2 * left + side} 0) scale(-1 1)")
    if icon.get("vFlip"):
        transforms.append(f"translate(0 {2 * top + side}) scale(1 -1)")
    if icon.get("rotate"):
        cx, cy = left + side / 2, top + side / 2
        transforms.append(f"rotate({90 * int(icon['rotate'])} {cx} {cy})")
    if transforms:
        body = f'<g transform="{" ".join(transforms)}">{body}</g>'
    return (f'<svg {SVG_NS} viewBox="{left:g} {top:g} {side:g} {side:g}" '
            f'width="{side:g}" height="{side:g}">{body}</svg>')


def render_svg(svg: str, size: int) -> Image.Image:
    """Render an SVG document to a ``size``×``size`` RGB image on white.

    Raises ``BadInput`` naming resvg's complaint when the SVG does not parse.
    """
    try:
        png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size,
                                    background="#ffffff", skip_system_fonts=True)
    except (ValueError, RuntimeError) as exc:
        raise BadInput(f"SVG does not render: {exc}") from exc
    image: Image.Image = Image.open(io.BytesIO(bytes(png)))
    image.load()
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return rgb_on_white(image)


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG encoding (no metadata, fixed compression)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
